"""--iconv: file names in UTF-8 on the wire, each side's own charset on disk (rsync.c
setup_iconv(), iconvbufs()).

``--iconv=LOCAL,REMOTE``: the client converts with LOCAL and passes ``--iconv=REMOTE``
to the server, which converts with that; ``.`` (or nothing) is the locale's charset.
Each side's sender turns its names (and, with CF_SYMLINK_ICONV, its symlink targets)
into UTF-8 before they go into the file list, and each receiver turns them back; a name
that does not convert is an error for that file alone.  Messages a server sends are
converted into UTF-8 too (invalid bytes pass as they are), and a client prints them in
its own charset, escaping as ``\\#ooo`` each byte it cannot show.

Charsets are Python's codecs: the names iconv knows for the common ones (UTF-8,
ISO-8859-*, CP1252, EUC-JP, SHIFT_JIS, ...) work; iconv's ``//TRANSLIT`` and
``//IGNORE`` suffixes do not.
"""

from __future__ import annotations

import codecs
import locale

from netsync.errors import RERR_UNSUPPORTED, RsyncError

UTF8 = "UTF-8"
# iconv()'s errno in rsync's "cannot convert" messages, as glibc's strerror() says it:
# EILSEQ for an invalid sequence (or a character the target lacks), EINVAL for one cut
# short by the end of the name.
EILSEQ_TEXT = "Invalid or incomplete multibyte or wide character"
EINVAL_TEXT = "Invalid argument"


def _why(err: UnicodeError) -> str:
    reason = getattr(err, "reason", "")
    if isinstance(err, UnicodeDecodeError) and err.end >= len(err.object) and (
            "end of data" in reason or "incomplete" in reason):
        return EINVAL_TEXT
    return EILSEQ_TEXT


def default_charset() -> str:
    """rsync.c default_charset(): the locale's codeset (nl_langinfo(CODESET))."""
    try:
        locale.setlocale(locale.LC_CTYPE, "")
    except locale.Error:
        pass
    return locale.nl_langinfo(locale.CODESET) or "ANSI_X3.4-1968"


def side_charset(spec: str, am_server: bool) -> str:
    """The charset this side converts with: before the comma on a client, after it on
    a server (a server normally gets only its own part); "" or "." is the locale's."""
    local, comma, remote = spec.partition(",")
    name = remote if comma and am_server else local
    return default_charset() if name in ("", ".") else name


class Iconv:
    """One side's pair of converters (rsync's ic_send: charset -> UTF-8, ic_recv:
    UTF-8 -> charset)."""

    __slots__ = ("charset", "_codec", "identity", "error")

    def __init__(self, charset: str) -> None:
        self.charset = charset
        try:
            info = codecs.lookup(charset)
        except (LookupError, ValueError):
            raise RsyncError(RERR_UNSUPPORTED, f'iconv_open("{UTF8}", "{charset}") failed',
                             bare=True) from None
        # A multi-byte codec that can produce NUL or '/' bytes inside a character
        # (UTF-16, UTF-32) cannot be a file-name charset.
        if info.name.startswith(("utf-16", "utf-32", "utf_16", "utf_32")):
            raise RsyncError(RERR_UNSUPPORTED, f'iconv_open("{UTF8}", "{charset}") failed',
                             bare=True)
        self._codec = info.name
        self.identity = info.name == "utf-8"
        self.error = EILSEQ_TEXT  # why the last conversion that failed did

    # -- names: strict, None when a name does not convert (EILSEQ)
    def to_wire(self, name: bytes) -> bytes | None:
        try:
            text = name.decode(self._codec)
        except UnicodeDecodeError as e:
            self.error = _why(e)
            return None
        return name if self.identity else text.encode("utf-8")

    def from_wire(self, name: bytes) -> bytes | None:
        try:
            text = name.decode("utf-8")
            out = name if self.identity else text.encode(self._codec)
        except UnicodeError as e:
            self.error = _why(e)
            return None
        if not self.identity and not _same_shape(name, out):
            self.error = EILSEQ_TEXT
            return None
        return out

    # -- messages: ICB_INCLUDE_BAD, what does not convert passes as it is
    def text_to_wire(self, raw: bytes) -> bytes:
        if self.identity:
            return raw
        return raw.decode(self._codec, "surrogateescape").encode("utf-8", "surrogateescape")

    def name_from_wire_raw(self, raw: bytes) -> bytes:
        """A UTF-8 name in this charset where it converts, else as it is (for show)."""
        try:
            return raw.decode("utf-8", "surrogateescape").encode(self._codec, "surrogateescape")
        except UnicodeError:
            return raw

    def text_from_wire(self, raw: bytes) -> bytes:
        """log.c rwrite() with ic_recv: a peer's UTF-8 text in this charset, ready to
        print (log.iconv_escaped(): ``\\#ooo`` for each byte that does not convert)."""
        from netsync.log import iconv_escaped

        return iconv_escaped(raw, "utf-8", self._codec)


def _same_shape(wire: bytes, local: bytes) -> bool:
    """A converted name keeps the wire name's components: no NUL, no '/' the sender did
    not send, no "." or ".." made out of other characters (a charset such as UTF-7
    can spell '/' with letters)."""
    if b"\0" in local or local.count(b"/") != wire.count(b"/"):
        return False
    return all(c == w or c not in (b"", b".", b"..")
               for w, c in zip(wire.split(b"/"), local.split(b"/"), strict=True))
