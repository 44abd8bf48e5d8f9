"""rsync's token streams (token.c), plain and compressed, sans-I/O.

The sender describes a file as literal data and matched basis blocks; the
receiver rebuilds it.  Without compression (``none``) that is
wire.encode_token's int stream.  With ``-z`` the stream is a sequence of
flag bytes:

* ``DEFLATED_DATA | hi6, lo8`` + up to 16383 bytes of compressed data,
* ``TOKEN_REL + r`` / ``TOKEN_LONG`` + int32: a block, relative to the end of
  the previous run (0..63) or absolute,
* ``TOKENRUN_REL + r`` / ``TOKENRUN_LONG`` + int32, then a 16-bit count: a run
  of consecutive blocks,
* ``END_FLAG`` (0): end of file.

Codecs: ``zlib`` and ``zlibx`` are raw deflate, reset per file, sync-flushed
before every token with the trailing ``00 00 ff ff`` left off the wire; legacy
``zlib`` also feeds every matched block into both sides' history (the sender
compresses and discards it, the receiver inflates a fake stored block).
``zstd`` is one endless stream for the whole session, flushed at every token.
``lz4`` compresses each record on its own (block format, no history).

The encoders reproduce rsync's bytes exactly, including how compressed output
is cut into records, which depends on how match.c groups literal data into
send_token() calls: see :meth:`TokenEncoder.begin_file`.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from .checksum import NegotiationError
from .errors import RERR_PROTOCOL
from .wire import TruncatedError, WireError, encode_int32

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes

__all__ = [
    "CHUNK_SIZE",
    "COMPRESS_NAMES",
    "DEFAULT_DONT_COMPRESS",
    "Block",
    "DeflateDecoder",
    "DeflateEncoder",
    "End",
    "Literal",
    "Lz4Decoder",
    "Lz4Encoder",
    "TokenDecoder",
    "TokenEncoder",
    "ZlibDecoder",
    "ZlibEncoder",
    "ZstdDecoder",
    "ZstdEncoder",
    "TokenEvent",
    "compression_level",
    "make_decoder",
    "make_encoder",
    "negotiate_compression",
    "parse_skip_compress",
    "skip_compress_match",
]

CHUNK_SIZE = 32 * 1024  # rsync.h: literal data is handled in pieces of this size
MAX_DATA_COUNT = 16383  # payload of one DEFLATED_DATA record (14-bit length)

END_FLAG = 0x00
TOKEN_LONG = 0x20
TOKENRUN_LONG = 0x21
DEFLATED_DATA = 0x40
TOKEN_REL = 0x80
TOKENRUN_REL = 0xC0
MAX_TOKEN_INDEX = 0x7FFFFFFE

# Receive-side output buffer of the deflate codecs: AVAIL_OUT_SIZE(CHUNK_SIZE).
INFLATE_OUT = CHUNK_SIZE * 1001 // 1000 + 16
# lz4's receive buffer: MAX(LZ4_compressBound(CHUNK_SIZE), MAX_DATA_COUNT + 2).
LZ4_OUT = CHUNK_SIZE + CHUNK_SIZE // 255 + 16
# A zstd block (3-byte header) can expand to 128 KiB, so zstd input is inflated
# this many bytes at a time to bound the output of one step (<= 8 MiB).
ZSTD_FEED = 256
ZSTD_BLOCK = 128 * 1024  # ZSTD_BLOCKSIZE_MAX: zstd buffers input up to this
SYNC_MARKER = b"\x00\x00\xff\xff"  # end of a sync flush, never sent
# An empty non-final stored block when the bit buffer is empty.
EMPTY_STORED = b"\x00" + SYNC_MARKER

# compat.c valid_compressions, strongest first; a client leaves out "none".
COMPRESS_NAMES = ("zstd", "lz4", "zlibx", "zlib", "none")

# rsync.1.md's --skip-compress list (DEFAULT_DONT_COMPRESS, "dont compress").
DEFAULT_DONT_COMPRESS = (
    "*.3g2 *.3gp *.7z *.aac *.ace *.apk *.avi *.bz2 *.deb *.dmg *.ear *.f4v *.flac *.flv "
    "*.gpg *.gz *.iso *.jar *.jpeg *.jpg *.lrz *.lz *.lz4 *.lzma *.lzo *.m1a *.m1v *.m2a "
    "*.m2ts *.m2v *.m4a *.m4b *.m4p *.m4r *.m4v *.mka *.mkv *.mov *.mp1 *.mp2 *.mp3 *.mp4 "
    "*.mpa *.mpeg *.mpg *.mpv *.mts *.odb *.odf *.odg *.odi *.odm *.odp *.ods *.odt *.oga "
    "*.ogg *.ogm *.ogv *.ogx *.opus *.otg *.oth *.otp *.ots *.ott *.oxt *.png *.qt *.rar "
    "*.rpm *.rz *.rzip *.spx *.squashfs *.sxc *.sxd *.sxg *.sxm *.sxw *.sz *.tbz *.tbz2 "
    "*.tgz *.tlz *.ts *.txz *.tzo *.vob *.war *.webm *.webp *.xz *.z *.zip *.zst"
)

# token.c init_compression_level(): (min, max, default) per codec.
ZSTD_MIN_LEVEL = -(1 << 17)  # ZSTD_minCLevel()
_LEVELS = {
    "zlib": (1, 9, 6),
    "zlibx": (1, 9, 6),
    "zstd": (ZSTD_MIN_LEVEL, 22, 3),
    "lz4": (0, 0, 0),
}


# ---------------------------------------------------------------------------
# Events


class Literal(NamedTuple):
    data: bytes


class Block(NamedTuple):
    index: int


class End(NamedTuple):
    """The end of a file's tokens."""


TokenEvent = Literal | Block | End


# ---------------------------------------------------------------------------
# Negotiation and levels


def negotiate_compression(ours: Iterable[str], theirs: Iterable[str]) -> str:
    """compat.c's rule (as checksum.negotiate): our most preferred name the peer listed.

    Without the ``v`` capability nothing is exchanged and both sides use "zlib".
    """
    their_set = {n.lower() for n in theirs}
    for name in ours:
        if name.lower() in their_set:
            return name.lower()
    raise NegotiationError("Failed to negotiate a compress choice.")


def compression_level(codec: str, level: int | None = None) -> int | None:
    """The level rsync really uses for ``--compress-level=level`` (None = not given).

    Returns None when the level turns compression off (0 for zlib/zlibx).
    Out-of-range levels are clamped silently, as rsync does.
    """
    if codec == "none":
        return None
    lo, hi, default = _LEVELS[codec]
    if codec in ("zlib", "zlibx"):
        if level == -1:  # Z_DEFAULT_COMPRESSION
            level = default
        if level == 0:  # Z_NO_COMPRESSION is the "off" level
            return None
    elif codec == "zstd" and level == 0:
        level = default
    if level is None:
        level = default
    return max(lo, min(hi, level))


def parse_skip_compress(spec: str | bytes) -> list[bytes]:
    """Suffixes of a ``--skip-compress=gz/jpg/[rR][aA][rR]`` list, lower-cased.

    ``[abc]`` classes are expanded (token.c add_suffix); "[foo" and "[]" keep a
    literal '['.  Suffixes are cut to 32 characters like rsync does.
    """
    if isinstance(spec, str):
        spec = spec.encode()
    out: dict[bytes, None] = {}
    for word in spec.split(b"/"):
        if word:
            out.update(dict.fromkeys(_expand_classes(word.lower()[:32])))
    return list(out)


def _expand_classes(word: bytes) -> list[bytes]:
    if not word:
        return [b""]
    if word[:1] == b"[":
        end = word.find(b"]")
        if end > 1:
            rest = _expand_classes(word[end + 1 :])
            return [bytes((c,)) + r for c in word[1:end] for r in rest]
    return [word[:1] + r for r in _expand_classes(word[1:])]


def _dont_compress_suffixes(spec: str) -> list[bytes]:
    """The ``*.sfx`` items of a "dont compress" list (the only form rsync matches)."""
    out = []
    for item in spec.lower().split():
        if item.startswith("*.") and len(item) > 2 and not any(c in item[2:] for c in ".?*"):
            out.append(item[2:].encode())
    return out


_DEFAULT_SUFFIXES = frozenset(_dont_compress_suffixes(DEFAULT_DONT_COMPRESS))


def skip_compress_match(name: bytes, suffixes: Iterable[bytes] | None = None) -> bool:
    """Would rsync compress ``name`` "as little as possible"?

    ``suffixes`` are lower-case suffixes without the dot (see
    parse_skip_compress); None means rsync's default list.  Matching is on the
    text after the last '.' of the last path element, case-insensitively; a
    leading dot (".gz") is not a suffix.  Note rsync 3.5.0 computes this but no
    codec can change level mid-stream, so it never affects the bytes sent.
    """
    base = name.rsplit(b"/", 1)[-1]
    dot = base.rfind(b".")
    if dot <= 0 or dot == len(base) - 1:
        return False
    sfx = base[dot + 1 :].lower()
    pool = _DEFAULT_SUFFIXES if suffixes is None else frozenset(suffixes)
    return sfx in pool


# ---------------------------------------------------------------------------
# Encoders


class TokenEncoder:
    """Base encoder: the run-length token coding shared by all compressed codecs.

    High-level use, per file::

        enc.begin_file(block_length=bl, last_block_length=ll, file_size=n)
        out = enc.literal(data) + enc.block(i, block_data) + ... + enc.end_file()

    rsync sends the literal data before a token in the same send_token() call,
    except that match.c hands long literal runs over early in CHUNK_SIZE pieces
    without a token (token -2); that grouping decides where compressed output is
    flushed and cut into records.  begin_file()'s arguments let the encoder
    repeat match.c's grouping: ``block_length=0`` for a file sent whole (no
    block sums), else the sum head's block length, the length of the last block
    and the file size.  :meth:`send` is the raw send_token() for callers that
    drive the grouping themselves.
    """

    name = "none"

    def __init__(self, level: int | None = None, protocol: int = 31) -> None:
        self.level = level
        self.protocol = protocol
        self.last_token = -1
        self.run_start = 0
        self.last_run_end = 0
        self.flush_pending = False
        self._pend = bytearray()  # literal data not sent yet
        self._lm = 0  # file offset of _pend[0] (match.c's last_match)
        self._blength = 0
        self._last_len = 0
        self._size: int | None = None

    # -- high level --------------------------------------------------------

    def begin_file(
        self, *, block_length: int = 0, last_block_length: int = 0, file_size: int | None = None
    ) -> None:
        self._pend.clear()
        self._lm = 0
        self._blength = block_length
        self._last_len = last_block_length or block_length
        self._size = file_size

    def literal(self, data: bytes | bytearray | memoryview) -> bytes:
        view = memoryview(data)
        out = bytearray()
        # Piece by piece, so at most a few pieces are ever held back.
        for i in range(0, len(view), CHUNK_SIZE):
            self._pend += view[i : i + CHUNK_SIZE]
            out += self._release(self._lm + len(self._pend), final=False)
        return bytes(out)

    def block(self, index: int, block_data: bytes | bytearray | memoryview = b"",
              length: int | None = None) -> bytes:
        """Block ``index`` matched; ``block_data`` is its content.

        Pass the data for every codec: legacy zlib compresses it into its
        history, and all codecs use its length to track the file offset. Plain
        tokens (this class) need only the ``length``, which may be given instead.
        """
        if index < 0:
            raise ValueError("block index must be >= 0")
        p = self._lm + len(self._pend)
        out = self._release(p, final=True)
        out += self.send(index, self._take(), block_data)
        self._lm = p + (len(block_data) if length is None else length)
        return out

    def end_file(self) -> bytes:
        p = self._lm + len(self._pend)
        if self._size is None:
            self._size = p
        out = self._release(p, final=True)
        out += self.send(-1, self._take())
        return out

    def _take(self) -> bytes:
        data = bytes(self._pend)
        self._lm += len(data)
        self._pend.clear()
        return data

    def _release(self, p: int, final: bool) -> bytes:
        """Send the CHUNK_SIZE pieces match.c would send with token -2.

        ``p`` is the end of the literal data known so far; ``final`` says that
        offset p is a match or the end of the file.
        """
        out = bytearray()
        while True:
            lm = self._lm
            if self._blength == 0:  # whole file: every piece but the last
                ready = p - lm > CHUNK_SIZE
            else:
                # hash_search() sends [lm, lm+CHUNK) from the first unmatched
                # offset x = lm + blength + CHUNK with end - x > CHUNK.
                x = lm + self._blength + CHUNK_SIZE
                if x > p - 1:
                    break
                if self._size is not None:
                    ready = self._size + 1 - self._last_len - x > CHUNK_SIZE
                elif final:
                    ready = True  # size unknown: assume the file goes on
                else:  # certain whatever the file size turns out to be
                    ready = p - x >= CHUNK_SIZE + self._blength
            if not ready:
                break
            piece = bytes(self._pend[:CHUNK_SIZE])
            del self._pend[:CHUNK_SIZE]
            self._lm += CHUNK_SIZE
            out += self.send(-2, piece)
        return bytes(out)

    # -- low level ------------------------------------------------------------

    def send(
        self, token: int, data: bytes = b"", block_data: bytes | bytearray | memoryview = b""
    ) -> bytes:
        """send_token(): literal ``data``, then token (>= 0 block, -1 end, -2 none)."""
        out = bytearray()
        for i in range(0, len(data), CHUNK_SIZE):
            piece = data[i : i + CHUNK_SIZE]
            out += encode_int32(len(piece)) + piece
        if token != -2:
            out += encode_int32(-(token + 1))
        return bytes(out)

    def _run_flags(self, token: int, nb: int) -> bytes:
        """Flag bytes for the previous run of blocks, as each compressed sender does."""
        out = bytearray()
        if self.last_token == -1:
            self._start_file()
            self.last_run_end = 0
            self.run_start = token
            self.flush_pending = False
        elif self.last_token == -2:
            self.run_start = token
        elif nb != 0 or token != self.last_token + 1 or token >= self.run_start + 65536:
            r = self.run_start - self.last_run_end
            n = self.last_token - self.run_start
            if 0 <= r <= 63:
                out.append((TOKEN_REL if n == 0 else TOKENRUN_REL) + r)
            else:
                out.append(TOKEN_LONG if n == 0 else TOKENRUN_LONG)
                out += encode_int32(self.run_start)
            if n != 0:
                out += bytes((n & 0xFF, (n >> 8) & 0xFF))
            self.last_run_end = self.last_token
            self.run_start = token
        self.last_token = token
        return bytes(out)

    def _start_file(self) -> None:
        """Per-file compressor reset (deflate only)."""


def _record(payload: bytes | bytearray) -> bytes:
    n = len(payload)
    return bytes((DEFLATED_DATA + (n >> 8), n & 0xFF)) + payload


class DeflateEncoder(TokenEncoder):
    """send_deflated_token() for ``zlibx``; :class:`ZlibEncoder` adds history insertion.

    ``level`` 0 means deflate's stored blocks (rsync's level when a daemon's
    "dont compress" is ``*``); those are valid but their record cuts may differ
    from rsync's, since stored-block output depends on buffer sizes.
    """

    name = "zlibx"

    def __init__(self, level: int | None = None, protocol: int = 31) -> None:
        super().__init__(compression_level("zlibx", level) or 0, protocol)
        self._c = self._new()

    def _new(self) -> zlib._Compress:
        return zlib.compressobj(self.level or 0, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)

    def _start_file(self) -> None:
        self._c = self._new()  # deflateReset

    def send(
        self, token: int, data: bytes = b"", block_data: bytes | bytearray | memoryview = b""
    ) -> bytes:
        nb = len(data)
        out = bytearray(self._run_flags(token, nb))
        if nb or self.flush_pending:
            out += self._deflate(data, flush=token != -2)
            self.flush_pending = token == -2
        if token == -1:
            out.append(END_FLAG)
        elif token >= 0:
            self._insert(block_data)
        return bytes(out)

    def _deflate(self, data: bytes, flush: bool) -> bytes:
        """Compress like rsync's loop: 32 KiB inputs into 16383-byte output buffers.

        Full buffers become records; the last partial one is written when the
        input is used up.  While flushing, rsync holds back the last 4 bytes
        of every buffer (carrying them to the next) so the final 00 00 ff ff
        is never sent; a flush that fills a buffer exactly makes deflate emit
        one more empty stored block on the next call.
        """
        c = self._c
        chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        if flush:
            o1 = b"".join(c.compress(ch) for ch in chunks[:-1])
            o2 = (c.compress(chunks[-1]) if chunks else b"") + c.flush(zlib.Z_SYNC_FLUSH)
        else:
            o1 = b"".join(c.compress(ch) for ch in chunks)
            o2 = b""
        out = bytearray()
        buf = bytearray()
        pos = 0
        while pos < len(o1):
            take = min(MAX_DATA_COUNT - len(buf), len(o1) - pos)
            buf += o1[pos : pos + take]
            pos += take
            if len(buf) == MAX_DATA_COUNT:
                out += _record(buf)
                buf = bytearray()
        if not flush:
            if buf:
                out += _record(buf)
            return bytes(out)
        pos = 0
        while pos < len(o2):
            take = min(MAX_DATA_COUNT - len(buf), len(o2) - pos)
            buf += o2[pos : pos + take]
            pos += take
            if len(buf) == MAX_DATA_COUNT:
                out += _record(buf[:-4])
                buf = buf[-4:]
                if pos == len(o2):
                    buf += EMPTY_STORED
        if len(buf) > 4:
            out += _record(buf[:-4])
        if bytes(buf[-4:]) != SYNC_MARKER:  # pragma: no cover - zlib guarantees it
            raise AssertionError("sync flush did not end in 00 00 ff ff")
        return bytes(out)

    def _insert(self, block_data: bytes | bytearray | memoryview) -> None:
        """Legacy zlib only: add the matched block to the compressor's history."""


class ZlibEncoder(DeflateEncoder):
    """Legacy ``zlib``: matched blocks also enter the deflate history.

    rsync uses its bundled zlib's Z_INSERT_ONLY when built with it; Debian's
    rsync links the system zlib, which lacks it, so token.c falls back to
    compressing the block with Z_SYNC_FLUSH and discarding the output.  That
    is what this does (Python's zlib is the system zlib too).  Before protocol
    31 blocks over 65535 bytes re-feed their first 65535 bytes (rsync's
    "data-duplicating bug"), and so do we.
    """

    name = "zlib"

    def _insert(self, block_data: bytes | bytearray | memoryview) -> None:
        view = memoryview(block_data)
        left = len(view)
        off = 0
        while True:
            n1 = min(left, 0xFFFF)
            left -= n1
            self._c.compress(view[off : off + n1])
            self._c.flush(zlib.Z_SYNC_FLUSH)
            if self.protocol >= 31:
                off += n1
            if left <= 0:
                break


@functools.cache
def _zstd_buffer() -> type[ctypes.Structure]:
    """ZSTD_inBuffer / ZSTD_outBuffer (ctypes is imported only by the native codecs:
    ~1.5 ms of start-up that most syncs would pay for nothing)."""
    import ctypes

    class ZstdBuffer(ctypes.Structure):
        _fields_ = (("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t),
                    ("pos", ctypes.c_size_t))

    return ZstdBuffer


ZSTD_C_COMPRESSION_LEVEL = 100
ZSTD_C_NB_WORKERS = 400
ZSTD_E_CONTINUE, ZSTD_E_FLUSH = 0, 1


def _load_libzstd() -> ctypes.CDLL | None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("zstd")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.ZSTD_createCCtx.restype = ctypes.c_void_p
        lib.ZSTD_createCCtx.argtypes = ()
        lib.ZSTD_freeCCtx.argtypes = (ctypes.c_void_p,)
        lib.ZSTD_freeCCtx.restype = ctypes.c_size_t
        lib.ZSTD_CCtx_setParameter.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
        lib.ZSTD_CCtx_setParameter.restype = ctypes.c_size_t
        buf_p = ctypes.POINTER(_zstd_buffer())
        lib.ZSTD_compressStream2.argtypes = (ctypes.c_void_p, buf_p, buf_p, ctypes.c_int)
        lib.ZSTD_compressStream2.restype = ctypes.c_size_t
        lib.ZSTD_isError.argtypes = (ctypes.c_size_t,)
        lib.ZSTD_isError.restype = ctypes.c_uint
    except (OSError, AttributeError):
        return None
    return lib


# python-zstandard bundles a newer libzstd than most systems' rsync links, and
# zstd's output changes between versions (1.5.7 splits some blocks that 1.5.4
# does not), so the system library, driven exactly like token.c drives it, is
# preferred when present.
# Looked up on first use: find_library() runs ldconfig, and most syncs never compress.
_libzstd = functools.cache(_load_libzstd)


class ZstdEncoder(TokenEncoder):
    """send_zstd_token(): one zstd stream for the whole session, flushed per token.

    rsync calls ZSTD_compressStream2() with a 16383-byte output buffer, one
    record per call, and stops as soon as its input is used up even if zstd
    still holds compressed bytes (they come out with the next call).  With
    the system libzstd (``native``) we make the very same calls.  Otherwise
    python-zstandard is fed the same block-sized pieces and zstd's internal
    queue is replayed, which cuts records identically but may compress
    differently if its bundled zstd version differs from rsync's.
    """

    name = "zstd"

    def __init__(
        self, level: int | None = None, protocol: int = 31, *, native: bool | None = None
    ) -> None:
        super().__init__(compression_level("zstd", level), protocol)
        level_ = self.level if self.level is not None else 3
        self.native = _libzstd() is not None if native is None else native
        if self.native:
            import ctypes
            import weakref

            lib = _libzstd()
            if lib is None:
                raise RuntimeError("no system libzstd")
            cctx = lib.ZSTD_createCCtx()
            if not cctx:
                raise MemoryError("ZSTD_createCCtx failed")
            self._cctx = ctypes.c_void_p(cctx)
            weakref.finalize(self, lib.ZSTD_freeCCtx, self._cctx)
            lib.ZSTD_CCtx_setParameter(self._cctx, ZSTD_C_COMPRESSION_LEVEL, level_)
            lib.ZSTD_CCtx_setParameter(self._cctx, ZSTD_C_NB_WORKERS, 0)
            self._obuf = ctypes.create_string_buffer(MAX_DATA_COUNT)
        else:
            import zstandard

            self._c = zstandard.ZstdCompressor(level=level_).compressobj()
            self._flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        self._fill = 0  # input bytes buffered inside zstd (current block)
        self._queue = bytearray()  # compressed bytes zstd has not handed out yet

    def send(
        self, token: int, data: bytes = b"", block_data: bytes | bytearray | memoryview = b""
    ) -> bytes:
        nb = len(data)
        out = bytearray(self._run_flags(token, nb))
        if nb or self.flush_pending:
            flush = token != -2
            out += self._native(data, flush) if self.native else self._compress(data, flush)
            self.flush_pending = token == -2
        if token == -1:
            out.append(END_FLAG)
        return bytes(out)

    def _native(self, data: bytes, flush: bool) -> bytes:
        import ctypes

        lib = _libzstd()
        assert lib is not None
        zbuf = _zstd_buffer()
        src = ctypes.create_string_buffer(bytes(data), max(1, len(data)))
        inb = zbuf(ctypes.addressof(src), len(data), 0)
        mode = ZSTD_E_FLUSH if flush else ZSTD_E_CONTINUE
        out = bytearray()
        while True:
            outb = zbuf(ctypes.addressof(self._obuf), MAX_DATA_COUNT, 0)
            r = lib.ZSTD_compressStream2(self._cctx, ctypes.byref(outb), ctypes.byref(inb), mode)
            if lib.ZSTD_isError(r):
                raise WireError(f"ZSTD_compressStream returned {r}")
            if outb.pos:
                out += _record(self._obuf.raw[: outb.pos])
            if (r == 0) if flush else (inb.pos == inb.size):
                return bytes(out)

    def _compress(self, data: bytes, flush: bool) -> bytes:
        out = bytearray()
        pos = 0
        done = False
        while not done:  # rsync's loop: one ZSTD_compressStream2() per pass
            room = MAX_DATA_COUNT
            rec = bytearray()
            while True:  # inside ZSTD_compressStream_generic()
                if self._queue:
                    take = self._queue[:room]
                    del self._queue[:room]
                    rec += take
                    room -= len(take)
                    if self._queue:
                        break  # output buffer full
                load = min(ZSTD_BLOCK - self._fill, len(data) - pos)
                if load:
                    self._queue += self._c.compress(data[pos : pos + load])
                    pos += load
                    self._fill += load
                if self._fill == ZSTD_BLOCK:
                    self._fill = 0  # the block was compressed into the queue
                    continue
                if not flush or self._fill == 0:
                    break
                self._queue += self._c.flush(self._flush_block)
                self._fill = 0
            if rec:
                out += _record(rec)
            done = (not self._queue and self._fill == 0) if flush else pos == len(data)
        return bytes(out)


def _load_liblz4() -> ctypes.CDLL | None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("lz4")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        fn = lib.LZ4_compress_default
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int
    return lib


# python-lz4 bundles its own liblz4, whose compressor makes different (equally
# valid) choices than the system library rsync links; prefer the latter so our
# bytes match rsync's.
_liblz4 = functools.cache(_load_liblz4)  # (looked up on first use, as _libzstd)


def _lz4_compress(data: bytes) -> bytes:
    """LZ4_compress_default() into rsync's obuf (capacity LZ4_OUT - 2)."""
    lib = _liblz4()
    if lib is None:
        import lz4.block

        return lz4.block.compress(data, store_size=False)
    import ctypes

    out = ctypes.create_string_buffer(LZ4_OUT)
    n = lib.LZ4_compress_default(data, out, len(data), LZ4_OUT - 2)
    if n <= 0:  # pragma: no cover - cannot happen with a compressBound-sized buffer
        raise WireError(f"compress returned {n}")
    return out.raw[:n]


class Lz4Encoder(TokenEncoder):
    """send_compressed_token(): each record is an independent lz4 block."""

    name = "lz4"

    def __init__(self, level: int | None = None, protocol: int = 31) -> None:
        super().__init__(compression_level("lz4", level), protocol)

    def send(
        self, token: int, data: bytes = b"", block_data: bytes | bytearray | memoryview = b""
    ) -> bytes:
        nb = len(data)
        out = bytearray(self._run_flags(token, nb))
        if nb or self.flush_pending:
            pos = 0
            avail_in = 0
            retry = False
            while True:
                if not retry:
                    avail_in = min(nb - pos, MAX_DATA_COUNT)
                else:
                    avail_in //= 2
                comp = _lz4_compress(data[pos : pos + avail_in])
                if len(comp) <= MAX_DATA_COUNT:
                    out += _record(comp)
                    pos += avail_in
                    retry = False
                else:
                    retry = True
                if pos >= nb and not retry:
                    break
            self.flush_pending = token == -2
        if token == -1:
            out.append(END_FLAG)
        return bytes(out)


_ENCODERS: dict[str, type[TokenEncoder]] = {
    "none": TokenEncoder,
    "zlibx": DeflateEncoder,
    "zlib": ZlibEncoder,
    "zstd": ZstdEncoder,
    "lz4": Lz4Encoder,
}


def make_encoder(codec: str, level: int | None = None, protocol: int = 31) -> TokenEncoder:
    """A session's token encoder for a negotiated codec name."""
    try:
        cls = _ENCODERS[codec]
    except KeyError:
        raise ValueError(f"unknown compress name: {codec}") from None
    return cls(level, protocol)


# ---------------------------------------------------------------------------
# Decoders


class TokenDecoder:
    """Incremental token reader: ``feed(bytes)``, then iterate events.

    Iteration stops (without consuming a partial item) when more input is
    needed.  For legacy ``zlib`` the caller must pass each matched block's
    data to :meth:`see_block` after receiving its :class:`Block` event and
    before iterating further.  ``max_literal`` caps what one file may
    expand to (None: no cap beyond the per-event bounds).  Bad input raises
    :class:`~netsync.wire.WireError`.
    """

    name = "none"

    def __init__(self, protocol: int = 31, max_literal: int | None = None) -> None:
        self.protocol = protocol
        self.max_literal = max_literal
        self._buf = bytearray()
        self._pos = 0
        self._file_literal = 0
        self._residue = 0  # simple stream: literal bytes still to come
        self._started = False  # simple stream: inside a file

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def __iter__(self) -> Iterator[TokenEvent]:
        return self.events()

    @property
    def pending(self) -> int:
        """Bytes fed but not decoded yet."""
        return len(self._buf) - self._pos

    def take_unconsumed(self) -> bytes:
        """Hand back (and forget) the input after what was decoded.

        After an End event these are the bytes that follow the token stream
        (the file's checksum and onwards), for the caller's own reader.
        """
        rest = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return rest

    def see_block(self, data: bytes | bytearray | memoryview) -> None:
        """see_token(): only legacy zlib needs the matched data."""

    def close(self) -> None:
        """Declare end of input: raises TruncatedError inside a token or a file."""
        if self.pending or self._residue or self._mid_file():
            raise TruncatedError("token stream ended in the middle of a file")

    def _mid_file(self) -> bool:
        return False

    def _count(self, n: int) -> None:
        self._file_literal += n
        if self.max_literal is not None and self._file_literal > self.max_literal:
            raise WireError(
                f"literal data exceeds {self.max_literal} bytes for this file", RERR_PROTOCOL
            )

    def _have(self, n: int) -> bool:
        return len(self._buf) - self._pos >= n

    def events(self) -> Iterator[TokenEvent]:
        buf = self._buf
        while True:
            if self._residue:
                n = min(self._residue, len(buf) - self._pos, CHUNK_SIZE)
                if n == 0:
                    return
                chunk = bytes(buf[self._pos : self._pos + n])
                self._pos += n
                self._residue -= n
                self._count(n)
                yield Literal(chunk)
                continue
            if not self._have(4):
                return
            i = int.from_bytes(buf[self._pos : self._pos + 4], "little", signed=True)
            self._pos += 4
            self._started = i != 0
            if i == 0:
                self._file_literal = 0
                yield End()
            elif i < 0:
                yield Block(-(i + 1))
            else:
                self._residue = i

    def _mid_file(self) -> bool:
        return self._started


class _CompressedDecoder(TokenDecoder):
    """The flag-byte parser shared by zlib, zlibx, zstd and lz4."""

    def __init__(self, protocol: int = 31, max_literal: int | None = None) -> None:
        super().__init__(protocol, max_literal)
        self._in_file = False
        self.rx_token = 0
        self._run = 0

    def _file_start(self) -> None:
        """Per-file decompressor reset."""

    def _mid_file(self) -> bool:
        return self._in_file or bool(self._run)

    def _on_block(self) -> None:
        """A Block event is about to be returned."""

    def _data(self, payload: bytes) -> Iterator[bytes]:
        raise NotImplementedError

    def _before_token(self) -> Iterator[bytes]:
        """Called when a non-data flag follows data (deflate's sync point)."""
        return iter(())

    def _emit(self, chunk: bytes) -> Literal:
        self._count(len(chunk))
        return Literal(chunk)

    def _bad_token(self) -> WireError:
        return WireError("invalid token number in compressed stream", RERR_PROTOCOL)

    def events(self) -> Iterator[TokenEvent]:
        buf = self._buf
        while True:
            if self._run:
                if self.rx_token >= MAX_TOKEN_INDEX:
                    raise self._bad_token()
                self.rx_token += 1
                self._run -= 1
                self._on_block()
                yield Block(self.rx_token)
                continue
            if not self._have(1):
                return
            if not self._in_file:
                self._file_start()
                self._in_file = True
                self.rx_token = 0
                self._file_literal = 0
            flag = buf[self._pos]
            if flag & 0xC0 == DEFLATED_DATA:
                if not self._have(2):
                    return
                n = ((flag & 0x3F) << 8) | buf[self._pos + 1]
                if not self._have(2 + n):
                    return
                payload = bytes(buf[self._pos + 2 : self._pos + 2 + n])
                self._pos += 2 + n
                for chunk in self._data(payload):
                    yield self._emit(chunk)
                continue
            # Work out the token's full size before consuming anything.
            size = 1
            if flag != END_FLAG:
                if not flag & TOKEN_REL:
                    if flag & 0xE0 != TOKEN_LONG:
                        raise WireError(f"invalid flag byte {flag:#x} in compressed stream")
                    size += 4
                if (flag >> 6 if flag & TOKEN_REL else flag) & 1:
                    size += 2
            if not self._have(size):
                return
            for chunk in self._before_token():
                yield self._emit(chunk)
            p = self._pos
            self._pos += size
            if flag == END_FLAG:
                self._in_file = False
                yield End()
                continue
            if flag & TOKEN_REL:
                incr = flag & 0x3F
                if self.rx_token > MAX_TOKEN_INDEX - incr:
                    raise self._bad_token()
                self.rx_token += incr
                run_flag = (flag >> 6) & 1
                q = p + 1
            else:
                self.rx_token = int.from_bytes(buf[p + 1 : p + 5], "little", signed=True)
                if not 0 <= self.rx_token <= MAX_TOKEN_INDEX:
                    raise self._bad_token()
                run_flag = flag & 1
                q = p + 5
            if run_flag:
                run = buf[q] | (buf[q + 1] << 8)
                if run <= 0 or self.rx_token > MAX_TOKEN_INDEX - run:
                    raise self._bad_token()
                self._run = run
            self._on_block()
            yield Block(self.rx_token)


class DeflateDecoder(_CompressedDecoder):
    """recv_deflated_token() for ``zlibx``; :class:`ZlibDecoder` adds see_block()."""

    name = "zlibx"

    def __init__(self, protocol: int = 31, max_literal: int | None = None) -> None:
        super().__init__(protocol, max_literal)
        self._d = zlib.decompressobj(-15)
        self._inflated = False  # data since the last sync point

    def _file_start(self) -> None:
        self._d = zlib.decompressobj(-15)  # inflateReset
        self._inflated = False

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        d = self._d
        tail = data
        while True:
            try:
                out = d.decompress(tail, INFLATE_OUT)
            except zlib.error as e:
                raise WireError(f"inflate returned error: {e}") from None
            if d.eof:
                raise WireError("inflate saw a final block in a token stream")
            tail = d.unconsumed_tail
            if out:
                yield out
            if not tail and len(out) < INFLATE_OUT:
                return

    def _data(self, payload: bytes) -> Iterator[bytes]:
        self._inflated = True
        yield from self._inflate(payload)

    def _before_token(self) -> Iterator[bytes]:
        if not self._inflated:
            return
        yield from self._inflate(b"")  # pending output (rsync's r_inflated check)
        try:
            out = self._d.decompress(SYNC_MARKER)
            probe = self._d.copy()
            # At a sync point the marker closes an empty stored block, leaving
            # the inflater at a block boundary: a stored block must pass through.
            ok = not out and probe.decompress(b"\x00\x01\x00\xfe\xffZ") == b"Z"
        except zlib.error:
            ok = False
        if not ok:
            raise WireError("decompressor lost sync!")
        self._inflated = False


class ZlibDecoder(DeflateDecoder):
    """Legacy ``zlib``: every matched block joins the inflate history (see_deflate_token)."""

    name = "zlib"

    def __init__(self, protocol: int = 31, max_literal: int | None = None) -> None:
        super().__init__(protocol, max_literal)
        self._unseen = 0  # Block events whose data has not come back yet

    def _on_block(self) -> None:
        self._unseen += 1

    def _file_start(self) -> None:
        super()._file_start()
        self._unseen = 0

    def _data(self, payload: bytes) -> Iterator[bytes]:
        if self._unseen:
            raise RuntimeError("see_block() must be called for every Block before more data")
        yield from super()._data(payload)

    def see_block(self, data: bytes | bytearray | memoryview) -> None:
        self._unseen = max(0, self._unseen - 1)
        view = memoryview(data)
        left = len(view)
        off = 0
        while left:
            n = min(left, 0xFFFF)
            hdr = bytes((0, n & 0xFF, n >> 8, ~n & 0xFF, (~n >> 8) & 0xFF))
            try:
                self._d.decompress(hdr + bytes(view[off : off + n]))
            except zlib.error as e:  # pragma: no cover - our own stored block
                raise WireError(f"inflate (token) returned error: {e}") from None
            if self.protocol >= 31:
                off += n
            left -= n


class ZstdDecoder(_CompressedDecoder):
    """recv_zstd_token(): one zstd stream for the whole session."""

    name = "zstd"

    def __init__(self, protocol: int = 31, max_literal: int | None = None) -> None:
        super().__init__(protocol, max_literal)
        import zstandard

        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._error = zstandard.ZstdError

    def _data(self, payload: bytes) -> Iterator[bytes]:
        for i in range(0, len(payload), ZSTD_FEED):
            try:
                out = self._d.decompress(payload[i : i + ZSTD_FEED])
            except self._error as e:
                raise WireError(f"ZSTD decomp returned error: {e}") from None
            if self._d.eof:
                raise WireError("zstd frame ended inside a token stream")
            if out:
                yield out


class Lz4Decoder(_CompressedDecoder):
    """recv_compressed_token(): each record is one lz4 block of <= 32912 bytes."""

    name = "lz4"

    def _data(self, payload: bytes) -> Iterator[bytes]:
        import lz4.block

        try:
            out = lz4.block.decompress(payload, uncompressed_size=LZ4_OUT)
        except lz4.block.LZ4BlockError as e:
            raise WireError(f"uncompress failed: {e}") from None
        if out:  # rsync would take an empty record for the end of the file
            yield out


_DECODERS: dict[str, type[TokenDecoder]] = {
    "none": TokenDecoder,
    "zlibx": DeflateDecoder,
    "zlib": ZlibDecoder,
    "zstd": ZstdDecoder,
    "lz4": Lz4Decoder,
}


def make_decoder(
    codec: str, protocol: int = 31, max_literal: int | None = None
) -> TokenDecoder:
    """A session's token decoder for a negotiated codec name."""
    try:
        cls = _DECODERS[codec]
    except KeyError:
        raise ValueError(f"unknown compress name: {codec}") from None
    return cls(protocol, max_literal)
