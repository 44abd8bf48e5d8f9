"""rsync's user-visible output formats, byte for byte.

Pure functions: the engine decides *when* to print, this module decides
*what* the text is.  Mirrors rsync 3.5's log.c (log_formatted, rwrite's
escaping, log_delete), lib/compat.c (do_big_num), lib/permstring.c,
util1.c (timestring, clean_fname), main.c (output_summary) and
generator.c (list_file_entry).

Formatting is done on ``bytes`` (file names are bytes; widths such as
``%-10n`` count bytes, as C's snprintf does) and only the finished line is
escaped into ``str`` by :func:`escape_output` — rsync escapes the whole line
in rwrite(), not just the name.  With ``eight_bit`` output, bytes that are
not valid UTF-8 come back as surrogate escapes: write such text with
``errors="surrogateescape"``.
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections.abc import Callable, Iterable

from netsync.messages import Stats
from netsync.record import Record

__all__ = [
    "ITEM_REPORT_ATIME", "ITEM_REPORT_CHANGE", "ITEM_REPORT_SIZE", "ITEM_REPORT_TIMEFAIL",
    "ITEM_REPORT_TIME", "ITEM_REPORT_PERMS", "ITEM_REPORT_OWNER", "ITEM_REPORT_GROUP",
    "ITEM_REPORT_ACL", "ITEM_REPORT_XATTR", "ITEM_REPORT_CRTIME", "ITEM_BASIS_TYPE_FOLLOWS",
    "ITEM_XNAME_FOLLOWS", "ITEM_IS_NEW", "ITEM_LOCAL_CHANGE", "ITEM_TRANSFER",
    "ITEM_MISSING_DATA", "ITEM_DELETED", "ITEM_MATCHED", "SIGNIFICANT_ITEM_FLAGS",
    "DEFAULT_ITEMIZE_FORMAT", "DEFAULT_NAME_FORMAT", "DEFAULT_LOGFILE_FORMAT",
    "Stats", "LogItem", "LogContext",
    "permstring", "timestring", "do_big_num", "do_big_dnum", "big_num", "comma_num",
    "human_num", "human_dnum", "comma_dnum", "clean_fname", "itemize_string",
    "log_format_has", "expand_log_format", "format_log", "delete_format", "format_delete",
    "escape_output", "escape_logfile", "safe_name", "log_file_line",
    "summary_lines", "stats_lines", "list_line", "list_missing_line",
]

# --- rsync.h ITEM_* flags (the iflags sent on the wire from protocol 29) ---
ITEM_REPORT_ATIME = 1 << 0
ITEM_REPORT_CHANGE = 1 << 1
ITEM_REPORT_SIZE = 1 << 2  # regular files only
ITEM_REPORT_TIMEFAIL = 1 << 2  # symlinks only (same bit as SIZE)
ITEM_REPORT_TIME = 1 << 3
ITEM_REPORT_PERMS = 1 << 4
ITEM_REPORT_OWNER = 1 << 5
ITEM_REPORT_GROUP = 1 << 6
ITEM_REPORT_ACL = 1 << 7
ITEM_REPORT_XATTR = 1 << 8
ITEM_REPORT_CRTIME = 1 << 10
ITEM_BASIS_TYPE_FOLLOWS = 1 << 11
ITEM_XNAME_FOLLOWS = 1 << 12
ITEM_IS_NEW = 1 << 13
ITEM_LOCAL_CHANGE = 1 << 14
ITEM_TRANSFER = 1 << 15
# These are never sent on the wire; rsync uses them locally.
ITEM_MISSING_DATA = 1 << 16  # used by log_formatted()
ITEM_DELETED = 1 << 17  # used by log_formatted()
ITEM_MATCHED = 1 << 18  # used by itemize()

SIGNIFICANT_ITEM_FLAGS = ~(ITEM_BASIS_TYPE_FOLLOWS | ITEM_XNAME_FOLLOWS | ITEM_LOCAL_CHANGE)

# options.c: -i without --out-format; -v (info=name1) without either; --log-file.
DEFAULT_ITEMIZE_FORMAT = "%i %n%L"
DEFAULT_NAME_FORMAT = "%n%L"
DEFAULT_LOGFILE_FORMAT = "%i %n%L"

# log.c LOG_FMT_SIZE: an escape's '-' and width digits are cut at 23 chars.
_LOG_FMT_SIZE = 32


TYPE_CHECKING = False  # (typing costs ~3 ms at start-up; only the type checker needs it)
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object


class StatsLike(Protocol):
    """What stats_lines() reads (netsync.messages.Stats has all of it)."""

    num_files: int
    num_dirs: int
    num_links: int
    num_devs: int
    num_specials: int
    xferred_files: int
    total_size: int
    total_transferred_size: int
    literal_data: int
    matched_data: int
    flist_size: int
    total_written: int
    total_read: int


# --------------------------------------------------------------------------
# Small formatters
# --------------------------------------------------------------------------

def permstring(mode: int) -> str:
    """ls-style 10-char mode string (lib/permstring.c)."""
    perms = ["-"] * 10
    rwx = "rwxrwxrwx"
    for i in range(9):
        if mode & (1 << i):
            perms[9 - i] = rwx[8 - i]
    if mode & stat.S_ISUID:
        perms[3] = "s" if mode & stat.S_IXUSR else "S"
    if mode & stat.S_ISGID:
        perms[6] = "s" if mode & stat.S_IXGRP else "S"
    if mode & stat.S_ISVTX:
        perms[9] = "t" if mode & stat.S_IXOTH else "T"
    if stat.S_ISDIR(mode):
        perms[0] = "d"
    elif stat.S_ISLNK(mode):
        perms[0] = "l"
    elif stat.S_ISBLK(mode):
        perms[0] = "b"
    elif stat.S_ISCHR(mode):
        perms[0] = "c"
    elif stat.S_ISSOCK(mode):
        perms[0] = "s"
    elif stat.S_ISFIFO(mode):
        perms[0] = "p"
    return "".join(perms)


def timestring(t: float) -> str:
    """Local time as ``YYYY/MM/DD HH:MM:SS`` (util1.c timestring)."""
    try:
        tm = time.localtime(int(t))
    except (OverflowError, OSError, ValueError):
        return "(time out of range)"
    s = (f"{tm.tm_year:4d}/{tm.tm_mon:02d}/{tm.tm_mday:02d} "
         f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}")
    return s[:19]  # rsync's buffer is 20 bytes; a 5-digit year is truncated


def do_big_num(num: int, human_flag: int, fract: str | None = None, sep: str = ",") -> str:
    """lib/compat.c do_big_num: 0 plain, 1 digit grouping, 2 K/M/G by 1000, 3 by 1024.

    ``sep`` is the thousands separator (',' unless the locale's decimal point is ',').
    """
    if human_flag > 1:
        mult = 1000 if human_flag == 2 else 1024
        if num >= mult or num <= -mult:
            dnum = float(num) / mult
            if num < 0:
                dnum = -dnum
            if dnum < mult:
                units = "K"
            else:
                dnum /= mult
                if dnum < mult:
                    units = "M"
                else:
                    dnum /= mult
                    if dnum < mult:
                        units = "G"
                    else:
                        dnum /= mult
                        if dnum < mult:
                            units = "T"
                        else:
                            dnum /= mult
                            units = "P"
            if num < 0:
                dnum = -dnum
            return f"{dnum:.2f}{units}"
    digits = str(abs(num))
    if human_flag:
        groups = []
        while len(digits) > 3:
            groups.append(digits[-3:])
            digits = digits[:-3]
        groups.append(digits)
        digits = sep.join(reversed(groups))
    return ("-" if num < 0 else "") + digits + (fract or "")


def do_big_dnum(dnum: float, human_flag: int, decimal_digits: int, sep: str = ",") -> str:
    """lib/compat.c do_big_dnum: like do_big_num but keeps the decimals."""
    tmp = f"{dnum:.{decimal_digits}f}"
    if sep == ".":
        tmp = tmp.replace(".", ",")  # the locale's decimal point is ','
    if not math.isfinite(dnum):
        return tmp
    if not human_flag or -1000.0 < dnum < 1000.0:
        return tmp
    # The fraction is whatever follows the leading digits (sign skipped by the +1).
    i = 1
    while i < len(tmp) and tmp[i].isdigit():
        i += 1
    fract = tmp[i:]
    return do_big_num(int(dnum), human_flag, fract, sep)


def big_num(num: int) -> str:
    return do_big_num(num, 0)


def comma_num(num: int, human: int = 1) -> str:
    """Grouped digits unless --no-human-readable (human == 0)."""
    return do_big_num(num, 1 if human else 0)


def human_num(num: int, human: int = 1) -> str:
    """rsync's human_num() at --human-readable level ``human`` (default 1; -h 2; -hh 3)."""
    return do_big_num(num, human)


def human_dnum(dnum: float, decimal_digits: int, human: int = 1) -> str:
    return do_big_dnum(dnum, human, decimal_digits)


def comma_dnum(dnum: float, decimal_digits: int, human: int = 1) -> str:
    return do_big_dnum(dnum, 1 if human else 0, decimal_digits)


def clean_fname(name: bytes) -> bytes:
    """util1.c clean_fname(name, 0): drop extra slashes, interior ``./`` and a trailing slash."""
    if not name:
        return b"."
    anchored = name.startswith(b"/")
    out = bytearray(b"/" if anchored else b"")
    f = 1 if anchored else 0
    n = len(name)
    while f < n:
        ch = name[f]
        if ch == 0x2F:  # '/'
            f += 1
            continue
        if ch == 0x2E and f + 1 < n and name[f + 1] == 0x2F:  # "./"
            f += 2
            continue
        slash = name.find(b"/", f)
        end = n if slash < 0 else slash + 1
        out += name[f:end]
        f = end
    if len(out) > (1 if anchored else 0) and out.endswith(b"/"):
        del out[-1]
    if not out:
        out += b"."
    return bytes(out)


# --------------------------------------------------------------------------
# Itemize (%i)
# --------------------------------------------------------------------------

def itemize_string(
    iflags: int,
    mode: int,
    *,
    sender_side: bool = False,
    local_server: bool = False,
    preserve_mtimes: bool = True,
    receiver_symlink_times: bool = True,
) -> str:
    """The 11-char ``YXcstpoguax`` string of ``%i`` (or ``*deleting  ``).

    ``sender_side`` is rsync's ``*op == 's'`` (this process is the sender);
    a transfer shows ``<`` only when that is so and the transfer is not local.
    ``receiver_symlink_times`` is false when the receiver cannot set symlink
    mtimes (then a symlink's time change shows ``T``).
    """
    if iflags & ITEM_DELETED:
        return "*deleting  "
    if iflags & ITEM_LOCAL_CHANGE:
        y = "h" if iflags & ITEM_XNAME_FOLLOWS else "c"
    elif not iflags & ITEM_TRANSFER:
        y = "."
    else:
        y = "<" if sender_side and not local_server else ">"
    c = [y, "", "", "", "", "", "", "", "", "", ""]
    if stat.S_ISLNK(mode):
        c[1] = "L"
        c[3] = "."
        if not iflags & ITEM_REPORT_TIME:
            c[4] = "."
        elif not preserve_mtimes or not receiver_symlink_times or iflags & ITEM_REPORT_TIMEFAIL:
            c[4] = "T"
        else:
            c[4] = "t"
    else:
        if stat.S_ISDIR(mode):
            c[1] = "d"
        elif stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
            c[1] = "S"
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            c[1] = "D"
        else:
            c[1] = "f"
        c[3] = "s" if iflags & ITEM_REPORT_SIZE else "."
        if not iflags & ITEM_REPORT_TIME:
            c[4] = "."
        else:
            c[4] = "t" if preserve_mtimes else "T"
    c[2] = "c" if iflags & ITEM_REPORT_CHANGE else "."
    c[5] = "p" if iflags & ITEM_REPORT_PERMS else "."
    c[6] = "o" if iflags & ITEM_REPORT_OWNER else "."
    c[7] = "g" if iflags & ITEM_REPORT_GROUP else "."
    both = ITEM_REPORT_ATIME | ITEM_REPORT_CRTIME
    if not iflags & both:
        c[8] = "."
    elif iflags & both == both:
        c[8] = "b"
    else:
        c[8] = "u" if iflags & ITEM_REPORT_ATIME else "n"
    c[9] = "a" if iflags & ITEM_REPORT_ACL else "."
    c[10] = "x" if iflags & ITEM_REPORT_XATTR else "."
    if iflags & (ITEM_IS_NEW | ITEM_MISSING_DATA):
        ch = "+" if iflags & ITEM_IS_NEW else "?"
        c[2:] = [ch] * 9
    elif y in ".hc" and all(x == "." for x in c[2:]):
        c[2:] = [" "] * 9  # nothing changed: blank the attribute columns
    return "".join(c)


# --------------------------------------------------------------------------
# Log items and --out-format / --log-file-format expansion
# --------------------------------------------------------------------------

class LogItem:
    """What the %-escapes of one output line need to know about a file."""

    __slots__ = (
        "name", "mode", "size", "mtime", "link", "hlink", "iflags", "pathname",
        "uid", "gid", "checksum", "written", "read",
    )

    def __init__(
        self,
        name: bytes,
        mode: int,
        size: int = 0,
        mtime: int = 0,
        *,
        link: bytes | None = None,
        hlink: bytes | None = None,
        iflags: int = 0,
        pathname: bytes | None = None,
        uid: int | None = None,
        gid: int | None = None,
        checksum: str | None = None,
        written: int = 0,
        read: int = 0,
    ) -> None:
        self.name = name  # f_name(): relative path, b"." for the top dir, no trailing slash
        self.mode = mode
        self.size = size  # F_LENGTH: a symlink's is its target length
        self.mtime = mtime  # seconds
        self.link = link  # symlink target (shown by %L as " -> target")
        self.hlink = hlink  # -H: name this one was hard-linked to (%L " => name")
        self.iflags = iflags
        self.pathname = pathname  # sender only: F_PATHNAME (source dir) used by %f
        self.uid = uid  # None when uids are not preserved (%U prints 0)
        self.gid = gid  # None when gids are not preserved/skipped (%G prints DEFAULT)
        self.checksum = checksum  # hex for %C: --checksum file sum, or the transfer's sum
        self.written = written  # bytes this process wrote while moving this file
        self.read = read  # bytes this process read while moving this file

    @classmethod
    def deletion(cls, name: bytes, mode: int) -> LogItem:
        """The zeroed file_struct log_delete() formats (only mode and name are real)."""
        return cls(name, mode, iflags=ITEM_DELETED)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"LogItem({self.name!r}, {oct(self.mode)}, iflags={self.iflags:#x})"


class LogContext(Record):
    """Run-wide facts the escapes depend on."""

    am_sender: bool = False
    local_server: bool = False  # a local (same host) transfer: never prints '<'
    am_daemon: bool = False
    preserve_mtimes: bool = True
    receiver_symlink_times: bool = True
    always_checksum: bool = False  # -c: %C shows the flist sum for every regular file
    sum_len: int = 16  # digest bytes of the %C checksum; blanks are 2*sum_len spaces
    module_name: bytes = b""  # %m (rsync prints "" outside a daemon)
    module_path: bytes | None = None  # %P (daemon only; else the escape stays literal)
    daemon_dir: bytes = b""  # daemon: cwd relative to the module root (%f)
    host: bytes | None = None  # %h (daemon only)
    addr: bytes | None = None  # %a (daemon only)
    auth_user: bytes | None = None  # %u (daemon only)
    pid: int | None = None  # %p; os.getpid() when None
    now: float | None = None  # %t; time.time() when None
    number_sep: str = ","


def log_format_has(fmt: str | bytes | None, esc: str) -> bool:
    """log.c log_format_has(): does the format use escape ``esc``?"""
    if not fmt:
        return False
    f = fmt.encode("utf-8", "surrogateescape") if isinstance(fmt, str) else fmt
    e = ord(esc)
    n = len(f)
    p = 0
    while True:
        p = f.find(b"%", p)
        if p < 0:
            return False
        p += 1
        while p < n and f[p] == 0x27:
            p += 1
        width = 1
        if p < n and f[p] == 0x2D:
            p += 1
            width += 1
        while p < n and 0x30 <= f[p] <= 0x39 and width < _LOG_FMT_SIZE - 8:
            p += 1
            width += 1
        while p < n and f[p] == 0x27:
            p += 1
        if p >= n:
            return False
        if f[p] == e:
            return True
        if f[p] == 0x25:
            p += 1


def _b(s: str) -> bytes:
    return s.encode("ascii")


def _pad(spec: bytes, conv: bytes, value: bytes | int) -> bytes:
    return (b"%" + spec + conv) % value


def expand_log_format(fmt: str | bytes, item: LogItem, ctx: LogContext | None = None) -> bytes:
    """Expand an rsync log format for ``item``; raw bytes, no newline, not escaped.

    Escapes rsync cannot fill (``%h``/``%a``/``%P``/``%u`` outside a daemon,
    unknown letters) stay in the output literally, as rsync leaves them.
    """
    ctx = ctx or LogContext()
    raw = fmt.encode("utf-8", "surrogateescape") if isinstance(fmt, str) else fmt
    buf = raw + b"\n"  # rsync expands the format with its newline appended
    n_buf = len(buf)
    out = bytearray()
    iflags = item.iflags
    i = 0
    while True:
        s = buf.find(b"%", i)
        if s < 0:
            out += buf[i:]
            break
        out += buf[i:s]
        p = s + 1
        humanize = 0
        while p < n_buf and buf[p] == 0x27:  # "'"
            humanize += 1
            p += 1
        spec = bytearray()
        if p < n_buf and buf[p] == 0x2D:  # '-'
            spec.append(0x2D)
            p += 1
        while p < n_buf and 0x30 <= buf[p] <= 0x39 and 1 + len(spec) < _LOG_FMT_SIZE - 8:
            spec.append(buf[p])
            p += 1
        while p < n_buf and buf[p] == 0x27:
            humanize += 1
            p += 1
        if p >= n_buf:
            out += buf[s:]
            break
        spec_b = bytes(spec)
        esc = chr(buf[p])
        n: bytes | None = None
        done = False  # True when n already carries the width
        if esc == "h":
            if ctx.am_daemon:
                n = ctx.host if ctx.host is not None else b"UNDETERMINED"
        elif esc == "a":
            if ctx.am_daemon:
                n = ctx.addr or b""
        elif esc == "l":
            n = _pad(spec_b, b"s", _b(do_big_num(item.size, humanize, None, ctx.number_sep)))
            done = True
        elif esc == "U":
            n = _pad(spec_b, b"u", item.uid if item.uid is not None else 0)
            done = True
        elif esc == "G":
            if item.gid is None:
                n = b"DEFAULT"
            else:
                n = _pad(spec_b, b"u", item.gid)
                done = True
        elif esc == "p":
            n = _pad(spec_b, b"d", ctx.pid if ctx.pid is not None else os.getpid())
            done = True
        elif esc == "M":
            n = _b(timestring(item.mtime).replace(" ", "-"))
        elif esc == "B":
            n = _b(permstring(item.mode)[1:])
        elif esc == "o":
            n = _op(item, ctx)
        elif esc == "f":
            n = _full_fname(item, ctx)
        elif esc == "n":
            n = item.name + (b"/" if stat.S_ISDIR(item.mode) else b"")
        elif esc == "L":
            if item.hlink:
                prefix, target = b" => ", item.hlink
            elif stat.S_ISLNK(item.mode) and not iflags & ITEM_DELETED:
                prefix, target = b" -> ", item.link or b""
            elif spec_b:
                prefix, target = b"    ", b""
            else:
                prefix = target = b""
            n = prefix + _pad(spec_b, b"s", target) if prefix else b""
            done = True
        elif esc == "m":
            n = ctx.module_name
        elif esc == "t":
            n = _b(timestring(ctx.now if ctx.now is not None else time.time()))
        elif esc == "P":
            n = ctx.module_path
        elif esc == "u":
            n = ctx.auth_user
        elif esc in "bc":
            if not iflags & ITEM_TRANSFER:
                b = 0
            elif ctx.am_sender ^ (esc == "c"):
                b = item.written
            else:
                b = item.read
            n = _pad(spec_b, b"s", _b(do_big_num(b, humanize, None, ctx.number_sep)))
            done = True
        elif esc == "C":
            hexsum = None
            if stat.S_ISREG(item.mode) and item.checksum:
                if (ctx.always_checksum and not iflags & ITEM_DELETED) or iflags & ITEM_TRANSFER:
                    hexsum = item.checksum
            if hexsum is None:
                n = b" " * (ctx.sum_len * 2)  # blanks ignore the width
                done = True
            else:
                n = _b(hexsum)
        elif esc == "i":
            n = _b(itemize_string(
                iflags, item.mode, sender_side=ctx.am_sender, local_server=ctx.local_server,
                preserve_mtimes=ctx.preserve_mtimes,
                receiver_symlink_times=ctx.receiver_symlink_times))
        elif esc == "%":
            n = b"%"
        if n is None:
            # rsync leaves the unexpanded escape and rescans from its letter.
            out += buf[s:p]
            i = p
            continue
        if spec_b and not done:
            n = _pad(spec_b, b"s", n)
        out += n
        i = p + 1
    if out.endswith(b"\n"):
        del out[-1]
    return bytes(out)


def _op(item: LogItem, ctx: LogContext) -> bytes:
    if item.iflags & ITEM_DELETED:
        return b"del."
    return b"send" if ctx.am_sender else b"recv"


def _full_fname(item: LogItem, ctx: LogContext) -> bytes:
    c = item.name
    if ctx.am_sender and item.pathname:
        path = item.pathname
        joined = path + c if path.endswith(b"/") else path + b"/" + c
        n = clean_fname(joined)
    elif ctx.am_daemon and not c.startswith(b"/"):
        d = ctx.daemon_dir
        joined = d + c if d.endswith(b"/") else d + b"/" + c
        n = clean_fname(joined)
    else:
        n = clean_fname(c)
    return n[1:] if n.startswith(b"/") else n


def format_log(
    fmt: str | bytes,
    item: LogItem,
    ctx: LogContext | None = None,
    *,
    eight_bit: bool = False,
    utf8: bool = True,
) -> str:
    """One stdout line (no newline) for ``item`` in format ``fmt``, escaped as rwrite() does."""
    return escape_output(expand_log_format(fmt, item, ctx), eight_bit=eight_bit, utf8=utf8)


def delete_format(fmt: str | None) -> str:
    """log_delete(): the stdout format for a deletion (``deleting %n`` unless it has %i/%o).

    Use with ``fmt`` = the active stdout format ("%i %n%L" under -i) or the
    log-file format.  (Deletions print on stdout only with -v/--info=del or
    an out-format; they are logged to --log-file unless --dry-run.)
    """
    if fmt and (log_format_has(fmt, "i") or log_format_has(fmt, "o")):
        return fmt
    return "deleting %n"


def format_delete(
    name: bytes,
    mode: int,
    fmt: str | None,
    ctx: LogContext | None = None,
    *,
    eight_bit: bool = False,
    utf8: bool = True,
) -> str:
    """The stdout line for deleting ``name`` (e.g. ``*deleting   dir/`` or ``deleting x``)."""
    item = LogItem.deletion(name, mode)
    return format_log(delete_format(fmt), item, ctx, eight_bit=eight_bit, utf8=utf8)


# --------------------------------------------------------------------------
# Escaping (rwrite / filtered_fwrite / logit)
# --------------------------------------------------------------------------

def _is_escape_seq(b: bytes, i: int) -> bool:
    """A literal ``\\#ddd`` must itself be escaped so it cannot be mistaken for one."""
    return (
        i < len(b) - 4 and b[i] == 0x5C and b[i + 1] == 0x23
        and 0x30 <= b[i + 2] <= 0x39 and 0x30 <= b[i + 3] <= 0x39 and 0x30 <= b[i + 4] <= 0x39
    )


def _filtered(b: bytes, escape_c1: bool) -> bytes:
    out = bytearray()
    for i, ch in enumerate(b):
        if _is_escape_seq(b, i) or (ch != 0x09 and (ch < 0x20 or (escape_c1 and 0x80 <= ch <= 0x9F))):
            out += b"\\#%03o" % ch
        else:
            out.append(ch)
    return bytes(out)


def _check_charset(b: bytes, utf8: bool) -> bytes:
    """rwrite's iconv(charset -> charset) pass: each invalid byte becomes ``\\#ooo``."""
    return iconv_escaped(b, "utf-8" if utf8 else "ascii")


def iconv_escaped(b: bytes, src: str, dst: str | None = None) -> bytes:
    """rwrite()'s iconv pass from charset ``src`` into ``dst`` (None: the same, a check
    only): a byte that does not convert becomes ``\\#ooo`` and conversion resumes after
    it.  rsync filters each run that converted separately (an invalid byte ends iconv's
    chunk), which matters only for the ``\\#ddd`` look-alike check."""
    out = bytearray()
    pos = 0
    n = len(b)
    while pos < n:
        try:
            text = b[pos:].decode(src)
            bad = n
        except UnicodeDecodeError as e:
            bad = pos + e.start
            text = b[pos:bad].decode(src) if dst is not None else ""
        if dst is None:
            run = b[pos:bad]
        else:
            try:
                run = text.encode(dst)
            except UnicodeEncodeError as e:
                run = text[:e.start].encode(dst)
                bad = pos + len(text[:e.start].encode(src))
        out += _filtered(run, False)
        if bad >= n:
            break
        out += b"\\#%03o" % b[bad]  # one byte, then resynchronise after it
        pos = bad + 1
    return bytes(out)


def escape_output(raw: bytes, *, eight_bit: bool = False, utf8: bool = True,
                  convert: Callable[[bytes], bytes] | None = None) -> str:
    """Escape a message for stdout/stderr as rsync's rwrite() does.

    Control bytes (except tab) and a literal ``\\#ddd`` become ``\\#ooo``.
    Without --8-bit-output, bytes invalid in the locale's charset (UTF-8
    when ``utf8``, else ASCII) are escaped too; with it they pass through.
    ``convert`` (--iconv, a peer's UTF-8 text: charset.Iconv.text_from_wire) does
    that pass instead, converting as it goes.
    A leading ``\\r`` and a trailing ``\\n``/``\\r`` pass raw.
    """
    lead = b""
    trail = b""
    if raw and raw[-1:] in (b"\n", b"\r"):
        trail, raw = raw[-1:], raw[:-1]
    if raw.startswith(b"\r"):
        lead, raw = b"\r", raw[1:]
    if convert is not None:
        body = convert(raw)
    else:
        body = _filtered(raw, False) if eight_bit else _check_charset(raw, utf8)
    return (lead + body + trail).decode("utf-8", "surrogateescape")


def safe_name(name: bytes, eight_bit: bool = False, utf8: bool = True) -> str:
    """A file name as rsync prints it on the terminal (see escape_output)."""
    return escape_output(name, eight_bit=eight_bit, utf8=utf8)


def escape_logfile(raw: bytes) -> bytes:
    """logit()'s escaping for --log-file: control bytes and 0x80-0x9f; other bytes raw."""
    trail = b""
    if raw and raw[-1:] in (b"\n", b"\r"):
        trail, raw = raw[-1:], raw[:-1]
    return _filtered(raw, True) + trail


def log_file_line(message: bytes | str, *, when: float | None = None, pid: int | None = None) -> bytes:
    """One --log-file record: ``YYYY/MM/DD HH:MM:SS [pid] message`` + newline, escaped.

    ``message`` is what rsync passes to logit (a formatted item or any
    FINFO/FLOG message); a missing newline is added.
    """
    msg = message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
    if not msg.endswith((b"\n", b"\r")):
        msg += b"\n"
    stamp = timestring(when if when is not None else time.time())
    head = b"%s [%d] " % (_b(stamp), pid if pid is not None else os.getpid())
    return head + escape_logfile(msg)


# --------------------------------------------------------------------------
# End-of-run summary, --stats, --list-only
# --------------------------------------------------------------------------

_HEAP_ROWS = (
    ("arena", "bytes from sbrk"), ("ordblks", "chunks not in use"),
    ("smblks", "free fastbin blocks"), ("hblks", "chunks from mmap"),
    ("hblkhd", "bytes from mmap"), ("allmem", "bytes from sbrk + mmap"),
    ("usmblks", "always 0"), ("fsmblks", "bytes in freed fastbin blocks"),
    ("uordblks", "bytes used"), ("fordblks", "bytes free"),
    ("keepcost", "bytes in releasable chunk"),
)


def heap_stats_lines(prog: str, role: str) -> list[str]:
    """main.c show_malloc_stats() (--info=stats3): glibc's mallinfo2() of this
    process under a header naming the role; nothing without it, as rsync."""
    import ctypes

    fields = [n for n, _ in _HEAP_ROWS if n != "allmem"]

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in fields]

    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return []
    fn.restype = MallInfo2
    mi = fn()
    vals = {n: getattr(mi, n) for n in fields}
    vals["allmem"] = vals["arena"] + vals["hblkhd"]
    return ["", f"{prog}[{os.getpid()}] ({role}) heap statistics:"] + [
        f"  {title + ':':<11}{vals[title]:10d}   ({descr})" for title, descr in _HEAP_ROWS]


def summary_lines(
    sent: int,
    received: int,
    elapsed: int | None,
    total_size: int,
    human: int = 1,
    dry_run: bool = False,
    *,
    batch_only: bool = False,
) -> list[str]:
    """main.c output_summary() at info=stats1 (-v): a blank line and two lines.

    ``elapsed`` is rsync's ``endtime - starttime`` in whole seconds (time()
    values), or None for ``UNKNOWN``.  The first (blank) line is client-only
    output: rsync does not copy it to --log-file.
    """
    if elapsed is None:
        rate = "UNKNOWN"
    else:
        rate = human_dnum((sent + received) / (0.5 + elapsed), 2, human)
    total = sent + received
    speedup = total_size / total if total else (math.inf if total_size else math.nan)
    suffix = " (BATCH ONLY)" if batch_only else " (DRY RUN)" if dry_run else ""
    return [
        "",
        f"sent {human_num(sent, human)} bytes  received {human_num(received, human)} bytes"
        f"  {rate} bytes/sec",
        f"total size is {human_num(total_size, human)}  speedup is "
        f"{comma_dnum(speedup, 2, human)}{suffix}",
    ]


def _itemized_counts(prefix: str, total: int, parts: Iterable[int], human: int) -> str:
    labels = ("reg", "dir", "link", "dev", "special")
    parts = list(parts)
    tail = ""
    if total:
        counts = [total - sum(parts), *parts]
        shown = [f"{lab}: {comma_num(c, human)}" for lab, c in zip(labels, counts, strict=True) if c]
        tail = " (" + ", ".join(shown) + ")"
    return f"{prefix}: {comma_num(total, human)}{tail}"


def _g(stats: object, name: str) -> int:
    return getattr(stats, name, 0) or 0


def stats_lines(stats: StatsLike, human: int = 1, protocol_version: int = 32) -> list[str]:
    """The --stats block (info=stats2), starting with its blank line.

    Reads rsync's counters: ``num_files``/``created_files``/``deleted_files``
    are totals over all kinds; the ``*_dirs``/``*_links``/``*_devs``/
    ``*_specials`` counts are subsets and "reg" is what remains.
    ``flist_buildtime``/``flist_xfertime`` are seconds (float); the two time
    lines appear only when the build time is non-zero, as in rsync.
    The summary_lines() block follows this in rsync's output.
    """
    def counts(kind: str) -> tuple[int, list[int]]:
        total = _g(stats, f"{kind}_files")
        parts = [_g(stats, f"{kind}_{s}") for s in ("dirs", "links", "devs", "specials")]
        return total, parts

    lines = [""]
    total, parts = counts("num")
    lines.append(_itemized_counts("Number of files", total, parts, human))
    if protocol_version >= 29:
        total, parts = counts("created")
        lines.append(_itemized_counts("Number of created files", total, parts, human))
    if protocol_version >= 31:
        total, parts = counts("deleted")
        lines.append(_itemized_counts("Number of deleted files", total, parts, human))
    lines += [
        f"Number of regular files transferred: {comma_num(_g(stats, 'xferred_files'), human)}",
        f"Total file size: {human_num(_g(stats, 'total_size'), human)} bytes",
        f"Total transferred file size: {human_num(_g(stats, 'total_transferred_size'), human)} bytes",
        f"Literal data: {human_num(_g(stats, 'literal_data'), human)} bytes",
        f"Matched data: {human_num(_g(stats, 'matched_data'), human)} bytes",
        f"File list size: {human_num(_g(stats, 'flist_size'), human)}",
    ]
    build_ms = int(round((getattr(stats, "flist_buildtime", 0) or 0) * 1000))
    if build_ms:
        xfer_ms = int(round((getattr(stats, "flist_xfertime", 0) or 0) * 1000))
        lines.append(f"File list generation time: {comma_dnum(build_ms / 1000, 3, human)} seconds")
        lines.append(f"File list transfer time: {comma_dnum(xfer_ms / 1000, 3, human)} seconds")
    lines.append(f"Total bytes sent: {human_num(_g(stats, 'total_written'), human)}")
    lines.append(f"Total bytes received: {human_num(_g(stats, 'total_read'), human)}")
    return lines


def list_line(
    mode: int,
    size: int,
    mtime: int,
    name: bytes,
    link_target: bytes | None = None,
    human: int = 1,
    *,
    atimes: bool = False,
    atime: int = 0,
    crtimes: bool = False,
    crtime: int = 0,
    eight_bit: bool = False,
    utf8: bool = True,
) -> str:
    """One --list-only line (generator.c list_file_entry), escaped, no newline.

    Pass ``link_target`` only when links are preserved (-l): rsync shows
    `` -> target`` just then.  ``atimes``/``crtimes`` add the
    --atimes/--crtimes columns (a directory's atime column stays blank).
    """
    raw = list_line_raw(mode, size, mtime, name, link_target, human, atimes=atimes,
                        atime=atime, crtimes=crtimes, crtime=crtime)
    return escape_output(raw, eight_bit=eight_bit, utf8=utf8)


def list_line_raw(mode: int, size: int, mtime: int, name: bytes,
                  link_target: bytes | None = None, human: int = 1, *, atimes: bool = False,
                  atime: int = 0, crtimes: bool = False, crtime: int = 0) -> bytes:
    """list_line() as its bytes, before escaping (what a server sends)."""
    size_width = 14 if human else 11
    mtime_str = timestring(mtime)
    col_w = 1 + len(mtime_str)
    atime_str = timestring(atime) if atimes and not stat.S_ISDIR(mode) else ""
    crtime_str = timestring(crtime) if crtimes else ""
    return b"%s %*s %s%*s%*s %s%s%s" % (
        _b(permstring(mode)), size_width, _b(human_num(size, human)), _b(mtime_str),
        col_w if atimes else 0, _b(atime_str), col_w if crtimes else 0, _b(crtime_str),
        name, b" -> " if link_target is not None else b"", link_target or b"",
    )


def list_missing_line(
    name: bytes,
    human: int = 1,
    *,
    atimes: bool = False,
    crtimes: bool = False,
    eight_bit: bool = False,
    utf8: bool = True,
) -> str:
    """--list-only line for a missing arg under --delete-missing-args (``*missing``)."""
    size_width = 14 if human else 11
    col_w = 20  # 1 + len("YYYY/MM/DD HH:MM:SS")
    width = 10 + 1 + size_width + col_w + (col_w if atimes else 0) + (col_w if crtimes else 0)
    raw = b"%-*s %s" % (width, b"*missing", name)
    return escape_output(raw, eight_bit=eight_bit, utf8=utf8)
