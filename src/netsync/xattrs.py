"""-X/--xattrs: extended attributes, as rsync's xattrs.c keeps and moves them.

An entry's xattrs are an :class:`XaList` (``FileEntry.xattr``): its items sorted
by name, each (name without the NUL, value length, value or None, checksum of a
value longer than MAX_FULL_DATUM or None, the sender's 1-based number).  Lists
are shared: a :class:`XaTable` holds each distinct list once, as rsync's
rsync_xal_l does, and the file list carries the index of one already sent.

The wire form is sans-I/O here (bytes in, typed values out): :func:`encode_xattr`
(send_xattr), :meth:`XaTable.parse` / :meth:`XaTable.commit` (receive_xattr), the
abbreviated-value requests (send_xattr_request / recv_xattr_request).  The
filesystem side reads a list (rsync_xal_get), compares it (xattr_diff), and sets
one (rsync_xal_set) through an fd or a path that follows no symlink.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable

from netsync.errors import RERR_FILEIO, RERR_PROTOCOL, RERR_STREAMIO
from netsync.wire import TruncatedError, WireError, decode_varint, encode_varint

MAX_FULL_DATUM = 32
SUM_LEN = 16  # xattr_sum_len: MD5 (parse_csum_name(NULL) from protocol 30)
MAX_WIRE_XATTR_COUNT = 65536
MAX_WIRE_XATTR_NAMELEN = 4096
MAX_WIRE_XATTR_DATALEN = 0x7FFFFFFF
MAX_XATTR_VALUE_BYTES = 128 * 1024 * 1024
MAX_XATTR_LIST_BYTES = 512 * 1024 * 1024

USER_PREFIX = b"user."
SYSTEM_PREFIX = b"system."
RSYNC_PREFIX = b"user.rsync."
RPRE_LEN = len(RSYNC_PREFIX)
_INTERNAL = (b"stat", b"aacl", b"dacl")  # rsync.%stat, %aacl, %dacl

ABBREV, DONE, TODO = 1, 2, 3


def xsum(value: bytes) -> bytes:
    """The checksum an abbreviated value travels as (MD5, unseeded)."""
    return hashlib.md5(value).digest()


class XaCtx:
    """One side's xattr settings: -X count, rsync's am_root (1 root or --super,
    0 a plain user, -1 --fake-super), and the xattr-name filter (saw_xattr_filter:
    ``excluded`` is not None)."""

    __slots__ = ("level", "am_root", "excluded", "links", "devices", "specials")

    def __init__(self, level: int, am_root: int, excluded: Callable[[bytes], bool] | None = None,
                 links: bool = False, devices: bool = False, specials: bool = False) -> None:
        self.level = level
        self.am_root = am_root
        self.excluded = excluded
        self.links = links
        self.devices = devices
        self.specials = specials


def name_filter(filters, side: str) -> Callable[[bytes], bool] | None:
    """rsync's name_is_excluded(name, NAME_IS_XATTR): None when no rule has the
    ``x`` modifier (saw_xattr_filter off)."""
    if filters is None:
        return None
    try:
        if not any(filters._flatten(s, False, True)[0] for s in ("sender", "receiver")):
            return None
    except Exception:  # pragma: no cover - a filter object without rules
        return None

    def excluded(name: bytes) -> bool:
        return filters.check(name, False, side, xattr=True) < 0
    return excluded


class XaList:
    """One distinct xattr list.  ``items``: tuples (name, dlen, value, sum, num).
    ``gstate``: the generator's XSTATE_* per item; ``rvals``: the values the
    receiver has (None: still abbreviated) -- separate, as rsync's generator and
    receiver each have their own copy."""

    __slots__ = ("items", "ndx", "gstate", "rvals", "sdone")

    def __init__(self, items: tuple, ndx: int = -1) -> None:
        self.items = items
        self.ndx = ndx
        self.gstate: bytearray | None = None
        self.rvals: list | None = None
        self.sdone: set | None = None

    def gen_states(self) -> bytearray:
        if self.gstate is None:
            self.gstate = bytearray(ABBREV if it[1] > MAX_FULL_DATUM and it[2] is None else DONE
                                    for it in self.items)
        return self.gstate

    def recv_vals(self) -> list:
        if self.rvals is None:
            self.rvals = [it[2] for it in self.items]
        return self.rvals


EMPTY = XaList(())


def _key(items) -> tuple:
    return tuple((it[0], it[1], it[2] if it[1] <= MAX_FULL_DATUM else it[3]) for it in items)


class XaTable:
    """rsync_xal_l with its lookup: lists by index, and by content."""

    def __init__(self) -> None:
        self.lists: list[XaList] = []
        self._by_key: dict[tuple, int] = {}

    def find(self, items) -> int:
        return self._by_key.get(_key(items), -1)

    def store(self, items) -> XaList:
        xl = XaList(tuple(items), len(self.lists))
        self.lists.append(xl)
        self._by_key.setdefault(_key(items), xl.ndx)
        return xl

    def intern(self, items) -> XaList:
        """A list equal to ``items`` from the table (stored if new): local runs."""
        if not items:
            return EMPTY
        i = self.find(items)
        return self.lists[i] if i >= 0 else self.store(items)

    # -- receive_xattr ----------------------------------------------------
    def parse(self, buf, pos: int, ctx: XaCtx, shown: Callable[[], str]) -> tuple[object, int]:
        """Read one entry's xattr field at ``pos``: (an index or the items to store,
        the new pos).  Raises TruncatedError/IndexError when ``buf`` ends early,
        WireError on hostile data.  Nothing is stored until :meth:`commit`."""
        ndx, pos = decode_varint(buf, pos)
        if ndx < 0 or ndx > len(self.lists):
            raise WireError(f"receive_xattr: xa index {ndx} out of range for {shown()}",
                            RERR_STREAMIO)
        if ndx:
            return ndx - 1, pos
        count, pos = decode_varint(buf, pos)
        if not 0 <= count <= MAX_WIRE_XATTR_COUNT:
            raise WireError(f"wire value xattr count out of range: {count} not in "
                            f"[0,{MAX_WIRE_XATTR_COUNT}] [{_who()}]", RERR_PROTOCOL)
        total = 0
        items = []
        need_sort = False
        for num in range(1, count + 1):
            name_len, pos = _varint_size(buf, pos, MAX_WIRE_XATTR_NAMELEN, "xattr name_len")
            dlen, pos = _varint_size(buf, pos, MAX_WIRE_XATTR_DATALEN, "xattr datum_len")
            if dlen > MAX_XATTR_VALUE_BYTES:
                raise WireError(f"xattr datum_len exceeds per-value limit [{_who()}]",
                                RERR_PROTOCOL)
            total += name_len + dlen
            if total > MAX_XATTR_LIST_BYTES:
                raise WireError(f"xattr list exceeds per-file limit [{_who()}]", RERR_PROTOCOL)
            name = _take(buf, pos, name_len)
            pos += name_len
            if not name or name[-1] != 0:
                raise WireError("Invalid xattr name received (missing trailing \\0).",
                                RERR_FILEIO)
            name = name[:name.index(0)]  # (a C string: what follows a NUL is not named)
            if dlen > MAX_FULL_DATUM:
                value, xs = None, _take(buf, pos, SUM_LEN)
                pos += SUM_LEN
            else:
                value, xs = _take(buf, pos, dlen), None
                pos += dlen
            name = recv_name(ctx, name)
            if name is None:
                continue
            if name[:RPRE_LEN] == RSYNC_PREFIX and ctx.am_root <= 0:
                need_sort = True
            items.append((name, dlen, value, xs, num))
        if need_sort:
            items.sort(key=lambda it: it[0])
        return items, pos

    def commit(self, parsed) -> XaList:
        if isinstance(parsed, int):
            return self.lists[parsed]
        return self.store(parsed)


def _who() -> str:
    return who


who = "receiver"  # who_am_i() in the bound messages (the role reading the list)


def _take(buf, pos: int, n: int) -> bytes:
    if pos + n > len(buf):
        raise TruncatedError("xattr data truncated")
    return bytes(buf[pos:pos + n])


def _varint_size(buf, pos: int, limit: int, what: str) -> tuple[int, int]:
    v, pos = decode_varint(buf, pos)
    if v < 0 or v > limit:
        raise WireError(f"wire size {what} out of range: {v} > {limit} [{_who()}]",
                        RERR_PROTOCOL)
    return v, pos


def recv_name(ctx: XaCtx, name: bytes) -> bytes | None:
    """receive_xattr()'s name rules: the filter, the namespaces a non-root receiver
    keeps (others under user.rsync. with --fake-super or an xattr filter), and no
    rsync.%FOO without -XX.  None: dropped."""
    if ctx.excluded is not None and ctx.excluded(name):
        return None
    if ctx.am_root <= 0 and name[:5] != USER_PREFIX:
        if not ctx.am_root and ctx.excluded is None:
            return None
        name = RSYNC_PREFIX + name
    if ctx.level < 2 and len(name) > RPRE_LEN and name[RPRE_LEN] == 0x25 \
            and name[:RPRE_LEN] == RSYNC_PREFIX:
        return None
    return name


def wire_name(name: bytes, am_root: int) -> bytes:
    """send_xattr(): a fake-super sender strips user.rsync. from a disguised namespace."""
    if am_root < 0 and len(name) > RPRE_LEN and name[RPRE_LEN] != 0x25 \
            and name[:RPRE_LEN] == RSYNC_PREFIX:
        return name[RPRE_LEN:]
    return name


def encode_xattr(table: XaTable, xl: XaList, am_root: int) -> tuple[bytes, XaList]:
    """send_xattr(): the index + 1 of an equal list already sent, or 0, the count and
    each item (name_len, datum_len, name, the value or its checksum); and the table's
    list the entry now shares (whose request state is the list's, as in rsync)."""
    items = xl.items
    i = table.find(items)
    if i >= 0:
        return encode_varint(i + 1), table.lists[i]
    out = bytearray(b"\0")
    out += encode_varint(len(items))
    for name, dlen, value, xs, _num in items:
        wn = wire_name(name, am_root) + b"\0"
        out += encode_varint(len(wn))
        out += encode_varint(dlen)
        out += wn
        out += xs if dlen > MAX_FULL_DATUM else value
    return bytes(out), table.store(items)


# -- reading a file's list (rsync_xal_get) --------------------------------

def has_xattrs(ctx: XaCtx, mode: int) -> bool:
    """get_xattr(): which file types carry a list."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return True
    if stat.S_ISLNK(mode):
        return ctx.links
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return ctx.specials
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return ctx.devices
    return False


def _names(target) -> list[bytes]:
    try:
        if isinstance(target, int):
            names = os.listxattr(target)
        else:
            names = os.listxattr(target, follow_symlinks=False)
    except OSError as ex:
        if ex.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    return [os.fsencode(n) for n in names]


def _get(target, name: bytes) -> bytes:
    if isinstance(target, int):
        return os.getxattr(target, name)
    return os.getxattr(target, name, follow_symlinks=False)


def read_list(ctx: XaCtx, target, am_sender: bool, keep_long: bool = True) -> list:
    """rsync_xal_get(): ``target``'s xattrs (an fd, or a path not followed), sorted.
    ``keep_long``: keep values over MAX_FULL_DATUM too (else only their sum)."""
    user_only = False if am_sender else not ctx.am_root
    out = []
    for name in _names(target):
        if ctx.excluded is not None:
            if ctx.excluded(name):
                continue
        elif (name[:5] != USER_PREFIX) if user_only else (name[:7] == SYSTEM_PREFIX):
            continue
        if len(name) > RPRE_LEN and name[RPRE_LEN] == 0x25 and name[:RPRE_LEN] == RSYNC_PREFIX:
            if (am_sender and ctx.level < 2) or (ctx.am_root < 0
                                                 and name[RPRE_LEN + 1:] in _INTERNAL):
                continue
        try:
            value = _get(target, name)
        except OSError as ex:
            if ex.errno == errno.ENODATA:
                continue  # gone since the listing
            raise _GetError(name, ex) from None
        dlen = len(value)
        if dlen > MAX_FULL_DATUM:
            out.append((name, dlen, value if keep_long else None, xsum(value), 0))
        else:
            out.append((name, dlen, value, None, 0))
    out.sort(key=lambda it: it[0])
    return [(n, d, v, s, i) for i, (n, d, v, s, _) in enumerate(out, 1)]


class _GetError(OSError):
    def __init__(self, name: bytes, ex: OSError) -> None:
        super().__init__(ex.errno, ex.strerror)
        self.xname = name


def read_error_text(ex: OSError, shown: str) -> str:
    """The message rsync prints when a file's xattrs cannot be read."""
    if isinstance(ex, _GetError):
        return (f'get_xattr_data: lgetxattr({shown},"{ex.xname.decode(errors="replace")}",0) '
                f"failed: {os.strerror(ex.errno or 0)} ({ex.errno})")
    return (f"get_xattr_names: llistxattr({shown},1024) failed: "
            f"{os.strerror(ex.errno or 0)} ({ex.errno})")


def local_list(send: XaCtx, recv: XaCtx, items: list) -> list:
    """A local run's list as the receiving side has it: the sender's read list
    through send_xattr()'s and receive_xattr()'s name rules (no bytes between)."""
    out = []
    need_sort = False
    for name, dlen, value, xs, num in items:
        n = recv_name(recv, wire_name(name, send.am_root))
        if n is None:
            continue
        if n != name:
            need_sort = True
        out.append((n, dlen, value, xs, num))
    if need_sort:
        out.sort(key=lambda it: it[0])
    return out


# -- comparing (xattr_diff) -------------------------------------------------

def diff(xl: XaList | None, cur: list | None, find_all: bool) -> bool:
    """xattr_diff(): does the file's current list ``cur`` (None: no file) differ
    from the wanted one?  With ``find_all`` the differing abbreviated items still
    ABBREV in the generator's state become TODO (to be requested)."""
    snd = xl.items if xl is not None else ()
    rec = cur or ()
    if len(snd) != len(rec) and not find_all:
        return True
    equal = len(snd) == len(rec)
    gs = xl.gen_states() if xl is not None and find_all and snd else None
    i = j = 0
    ns, nr = len(snd), len(rec)
    while i < ns:
        s = snd[i]
        if j < nr:
            r = rec[j]
            cmp = (s[0] > r[0]) - (s[0] < r[0])
        else:
            r = None
            cmp = -1
        if cmp > 0:
            same = False
        elif s[1] > MAX_FULL_DATUM:
            same = cmp == 0 and s[1] == r[1] and s[3] == r[3]
            if not same and gs is not None and gs[i] == ABBREV:
                gs[i] = TODO
        else:
            same = cmp == 0 and s[1] == r[1] and s[2] == r[2]
        if not same:
            if not find_all:
                return True
            equal = False
        if cmp <= 0:
            i += 1
        if cmp >= 0:
            j += 1
    if j < nr:
        equal = False
    return not equal


# -- the abbreviated-value exchange -----------------------------------------

def gen_request(xl: XaList | None, write: bool) -> bytes:
    """send_xattr_request(NULL, ...) by the generator: the numbers of the TODO items
    (relative), then 0; ABBREV items become DONE.  ``write`` False: only the states."""
    out = bytearray()
    if xl is not None and xl.items:
        gs = xl.gen_states()
        prior = 0
        for i, it in enumerate(xl.items):
            if it[1] <= MAX_FULL_DATUM:
                continue
            st = gs[i]
            if st == ABBREV:
                gs[i] = DONE
                continue
            if st != TODO:
                continue
            gs[i] = DONE
            if not write:  # (rsync asserts a channel here; nothing is asked)
                continue
            out += encode_varint(it[4] - prior)
            prior = it[4]
    if write:
        out += b"\0"
    return bytes(out)


def _rel_nums(read_varint: Callable[[], int]):
    num = 0
    while True:
        rel = read_varint()
        if rel == 0:
            return
        num += rel
        if not -(1 << 31) <= num < (1 << 31):
            raise WireError(f"xattr rel_pos accumulation overflow [{_who()}]", RERR_PROTOCOL)
        yield num


def sender_read_request(xl: XaList | None, read_varint: Callable[[], int],
                        shown: Callable[[], str]) -> list[int]:
    """recv_xattr_request() on the sender: the item positions asked for."""
    if xl is None:
        raise WireError("recv_xattr_request: internal data error!", RERR_PROTOCOL)
    items = xl.items
    done = xl.sdone
    if done is None:
        done = xl.sdone = set()
    want = []
    for num in _rel_nums(read_varint):
        if not 1 <= num <= len(items) or items[num - 1][4] != num:
            raise WireError(f"[sender] could not find xattr #{num} for {shown()}",
                            RERR_PROTOCOL)
        it = items[num - 1]
        if it[1] <= MAX_FULL_DATUM or num in done:
            raise WireError(f"[sender] internal abbrev error on {shown()} "
                            f"({it[0].decode(errors='replace')}, len={it[1]})!", RERR_PROTOCOL)
        want.append(num - 1)
    return want


def sender_values(xl: XaList, want: list[int], target, errors: list[str], shown: str) -> bytes:
    """send_xattr_request() by the sender: each asked-for value re-read (its length
    may have changed), then 0."""
    out = bytearray()
    prior = 0
    done = xl.sdone
    if done is None:
        done = xl.sdone = set()
    for i in want:
        name, _dlen, value, _xs, num = xl.items[i]
        done.add(num)
        out += encode_varint(num - prior)
        prior = num
        if value is None:
            try:
                value = _get(target, name) if target is not None else None
            except OSError:
                value = None
            if value is None:
                errors.append(f"failed to re-read xattr {name.decode(errors='replace')} "
                              f"for {shown}")
                out += encode_varint(0)
                continue
        out += encode_varint(len(value))
        out += value
    out += b"\0"
    return bytes(out)


def skip_values(read_varint: Callable[[], int], read_bytes: Callable[[int], bytes]) -> None:
    """Read past a values reply whose list is gone (bounded as receiver_read_values)."""
    for _num in _rel_nums(read_varint):
        n = read_varint()
        if n < 0 or n > MAX_XATTR_VALUE_BYTES:
            raise WireError(f"xattr datum_len exceeds per-value limit [{_who()}]", RERR_PROTOCOL)
        read_bytes(n)


def receiver_read_values(xl: XaList | None, read_varint: Callable[[], int],
                         read_bytes: Callable[[int], bytes], shown: Callable[[], str]) -> bool:
    """recv_xattr_request() on the receiver: the values sent, kept in the list."""
    if xl is None:
        raise WireError("recv_xattr_request: internal data error!", RERR_PROTOCOL)
    items = xl.items
    vals = xl.recv_vals()
    pos = {it[4]: i for i, it in enumerate(items)}
    got = False
    for num in _rel_nums(read_varint):
        i = pos.get(num)
        if i is None:
            raise WireError(f"[{_who()}] could not find xattr #{num} for {shown()}",
                            RERR_PROTOCOL)
        it = items[i]
        if it[1] <= MAX_FULL_DATUM or vals[i] is not None:
            raise WireError(f"[{_who()}] internal abbrev error on {shown()} "
                            f"({it[0].decode(errors='replace')}, len={it[1]})!", RERR_PROTOCOL)
        n = read_varint()
        if n < 0 or n > MAX_WIRE_XATTR_DATALEN:
            raise WireError(f"wire size xattr datum_len out of range: {n} > "
                            f"{MAX_WIRE_XATTR_DATALEN} [{_who()}]", RERR_PROTOCOL)
        if n > MAX_XATTR_VALUE_BYTES:
            raise WireError(f"xattr datum_len exceeds per-value limit [{_who()}]", RERR_PROTOCOL)
        vals[i] = read_bytes(n)
        got = True
    return got


# -- setting (rsync_xal_set) -------------------------------------------------

def set_list(ctx: XaCtx, xl: XaList, target, basis, errors: list[str], shown: str,
             same_file: bool) -> bool:
    """Make ``target``'s xattrs ``xl`` (the receiver's values); an item still
    abbreviated is taken from ``basis`` when its checksum matches there.  Returns
    True if anything was written.  ``same_file``: ``basis`` is ``target``."""
    changed = False
    cur = _names(target)
    items = xl.items
    vals = xl.recv_vals()
    wanted = set()
    for i, (name, dlen, _value, xs, _num) in enumerate(items):
        wanted.add(name)
        value = vals[i]
        if value is None:
            got = None
            for b in basis if isinstance(basis, tuple) else (basis,):
                if b is None or b == b"":
                    continue
                try:
                    got = _get(b, name)
                except OSError:
                    got = None
                if got is not None and len(got) == dlen and xsum(got) == xs:
                    break
            if got is None or len(got) != dlen or xsum(got) != xs:
                errors.append(f"Missing abbreviated xattr value, {name.decode(errors='replace')}, "
                              f"for {shown}")
                continue
            vals[i] = got  # the receiver caches the local data
            if same_file:
                continue
            value = got
        try:
            _set(target, name, value)
            changed = True
        except OSError as ex:
            errors.append(f'rsync_xal_set: {"f" if isinstance(target, int) else "l"}setxattr'
                          f'({shown},"{name.decode(errors="replace")}") failed: '
                          f"{os.strerror(ex.errno or 0)} ({ex.errno})")
    user_only = ctx.am_root <= 0
    for name in cur:
        if ctx.excluded is not None:
            if ctx.excluded(name):
                continue
        elif (name[:5] != USER_PREFIX) if user_only else (name[:7] == SYSTEM_PREFIX):
            continue
        if ctx.am_root < 0 and name == RSYNC_PREFIX + b"%stat":
            continue
        if name in wanted:
            continue
        try:
            if isinstance(target, int):
                os.removexattr(target, name)
            else:
                os.removexattr(target, name, follow_symlinks=False)
            changed = True
        except OSError as ex:
            errors.append(f'rsync_xal_set: {"f" if isinstance(target, int) else "l"}removexattr'
                          f'({shown},"{name.decode(errors="replace")}") failed: '
                          f"{os.strerror(ex.errno or 0)} ({ex.errno})")
    return changed


def _set(target, name: bytes, value: bytes) -> None:
    if isinstance(target, int):
        os.setxattr(target, name, value)
    else:
        os.setxattr(target, name, value, follow_symlinks=False)


def copy_all(ctx: XaCtx, src, dst, errors: list[str], shown: str) -> None:
    """copy_xattrs(): every xattr of ``src`` the receiver keeps onto ``dst``
    (--copy-dest and backups)."""
    user_only = ctx.am_root <= 0
    try:
        names = _names(src)
    except OSError:
        return
    for name in names:
        if ctx.excluded is not None:
            if ctx.excluded(name):
                continue
        elif (name[:5] != USER_PREFIX) if user_only else (name[:7] == SYSTEM_PREFIX):
            continue
        try:
            _set(dst, name, _get(src, name))
        except OSError as ex:
            errors.append(f'copy_xattrs: {"f" if isinstance(dst, int) else "l"}setxattr'
                          f'({shown},"{name.decode(errors="replace")}") failed: '
                          f"{os.strerror(ex.errno or 0)} ({ex.errno})")
            return


def open_target(dir_fd: int | None, leaf: bytes, mode: int):
    """A confined handle on ``leaf`` in ``dir_fd``: an fd (regular file, directory,
    fifo; opened without following a symlink) or, for anything else, a
    /proc/self/fd path whose last step is not followed.  (handle, fd to close)."""
    if dir_fd is None:
        return leaf, -1
    fmt = stat.S_IFMT(mode)
    if fmt in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFIFO):
        try:
            fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                         | os.O_CLOEXEC, dir_fd=dir_fd)
            return fd, fd
        except OSError as ex:
            if ex.errno == errno.ELOOP:
                raise
    return b"/proc/self/fd/%d/%s" % (dir_fd, leaf), -1


def apply(ctx: XaCtx, target, xl: XaList | None, basis, mode: int, errors: list[str],
          shown: str, same_file: bool = False) -> bool:
    """set_xattr(): give ``target`` the list ``xl``; a plain user without write
    access adds u+w for the change, as rsync does."""
    if xl is None:
        return False
    added = False
    if not ctx.am_root and not stat.S_ISLNK(mode):
        try:
            ok = os.access(target, os.W_OK) if not isinstance(target, int) else \
                bool(os.fstat(target).st_mode & stat.S_IWUSR)
            if not ok:
                if isinstance(target, int):
                    os.fchmod(target, stat.S_IMODE(mode) | stat.S_IWUSR)
                else:
                    os.chmod(target, stat.S_IMODE(mode) | stat.S_IWUSR)
                added = True
        except OSError:
            pass
    try:
        return set_list(ctx, xl, target, basis, errors, shown, same_file)
    finally:
        if added:
            try:
                if isinstance(target, int):
                    os.fchmod(target, stat.S_IMODE(mode))
                else:
                    os.chmod(target, stat.S_IMODE(mode))
            except OSError:
                pass


def am_root_of(opt_am_root: int, fake: bool) -> int:
    """rsync's am_root for one side: -1 --fake-super, 2 --super, else 1 for root."""
    if fake:
        return -1
    if opt_am_root == 2:
        return 2
    return 1 if os.geteuid() == 0 else 0


def local_setup(opts, w, filters, rfilters, rep) -> XaCtx:
    """A local run's -X: both sides' settings (a -M--fake-super receiver has its
    own am_root); the walk gets the receiving side's lists.  Returns that side's."""
    from netsync import metadata as _md

    fake_r = _md.fake_super if _md.recv_fake_super is None else _md.recv_fake_super
    send = XaCtx(opts.xattrs, am_root_of(opts.am_root, _md.fake_super),
                 name_filter(filters, "sender"), bool(opts.links), bool(opts.devices),
                 bool(opts.specials))
    recv = XaCtx(opts.xattrs, am_root_of(opts.am_root, fake_r),
                 name_filter(rfilters, "receiver"), bool(opts.links), bool(opts.devices),
                 bool(opts.specials))
    w.xattrs = sender_hook(send, XaTable(), lambda msg: rep.error_xfer(msg, role="sender"),
                           recv)
    return recv


def sender_hook(ctx: XaCtx, table: XaTable, report, recv: XaCtx | None = None,
                keep_long: bool = False) -> Callable:
    """The walk's -X step (flist.c send_file_name -> get_xattr): ``recv`` given (a
    local run), the list is made the receiver's at once and interned in ``table``;
    else the sender's own list (wire), values over MAX_FULL_DATUM not kept."""
    def hook(e, path: bytes) -> bool:
        if not has_xattrs(ctx, e.mode):
            e.xattr = EMPTY
            return True
        try:
            items = read_list(ctx, path, True, keep_long or recv is not None)
        except OSError as ex:
            report(read_error_text(ex, f'"{os.fsdecode(path)}"'))
            return False
        if recv is not None:
            items = local_list(ctx, recv, items)
        e.xattr = XaList(tuple(items)) if recv is None else table.intern(items)
        return True
    return hook


# -- the generator's side (generator.c itemize / unchanged_attrs, receiver.c) ------

class GenXa:
    """-X for a Generator: the dest list an item is compared with (read once per
    stat), and the xattr-only items set (now, or when a pull's reply comes)."""

    def __init__(self, gen) -> None:
        self.gen = gen
        self.ctx: XaCtx = gen.a.xattrs
        self.seen: tuple | None = None
        self.alt: dict[int, tuple[os.stat_result, bytes]] = {}
        self.dir = None  # a new dir's entry: set once _gen_dir() made it
        self.ino: dict[tuple[int, int], list | None] = {}
        self.defer = False  # a wire receiver sets them when the sender's reply comes

    def target(self, path: bytes, mode: int):
        """A handle on a dest path: its dirs resolved without following symlinks
        (the generator's held dir fd), the leaf itself never followed."""
        g = self.gen
        pre = g._dprefix
        if g._follow_dest_links or not path.startswith(pre):
            return path, -1
        head, _, leaf = path[len(pre):].rpartition(b"/")
        return open_target(g._dest_dir_fd(head), leaf, mode)

    def note_alt(self, st: os.stat_result, at: tuple[int, bytes]) -> None:
        """An alt-dest file's stat: an item compared with it reads its list."""
        if len(self.alt) > 64:
            self.alt.clear()
        self.alt[id(st)] = (st, b"/proc/self/fd/%d/%s" % at)

    def current(self, e, st: os.stat_result) -> list | None:
        """get_xattr() of what ``e`` is compared with."""
        alt = self.alt.get(id(st))
        src = alt[1] if alt is not None and alt[0] is st else None
        path = src if src is not None else self.gen.dpath(e.name)
        key = (path, st.st_ino, st.st_dev, st.st_ctime_ns)
        seen = self.seen
        if seen is not None and seen[0] == key:
            return seen[1]
        ik = (st.st_dev, st.st_ino) if self.gen.g.hard_links and st.st_nlink > 1 else None
        if ik is not None and ik in self.ino:
            # -H: another name of an inode already compared sees the list it had then
            # (rsync's generator reads it before its receiver changes it)
            return self.ino[ik]
        cur: list | None = []
        if has_xattrs(self.ctx, st.st_mode):
            fd = -1
            try:
                tgt, fd = (path, -1) if src is not None else self.target(path, st.st_mode)
                cur = read_list(self.ctx, tgt, False)
            except OSError:
                cur = None
            finally:
                if fd >= 0:
                    os.close(fd)
        self.seen = (key, cur)
        if ik is not None and src is None:
            self.ino[ik] = cur
        return cur

    def flags(self, e, st: os.stat_result | None) -> int:
        """itemize(): ITEM_REPORT_XATTR when the lists differ (the differing
        abbreviated values are marked to be asked for)."""
        cur = None if st is None else self.current(e, st)
        return _REPORT_XATTR if diff(e.xattr, cur, True) else 0

    def differ(self, e, st: os.stat_result) -> bool:
        """unchanged_attrs(): xattrs_differ()."""
        return diff(e.xattr, self.current(e, st), False)

    def item(self, e, iflags: int) -> None:
        """receiver.c: an item whose xattrs differ gets them set (not a hard link
        made here: its inode has them)."""
        if self.gen.g.dry_run or iflags & _XNAME_LOCAL == _XNAME_LOCAL or self.defer:
            return
        if stat.S_ISDIR(e.mode) and self.dir is None:
            self.dir = e  # _gen_dir() sets them once the dir is there
            return
        self.set(e)

    def dir_made(self, e, path: bytes, alt_path: bytes | None) -> None:
        """After _gen_dir(): a new dir found in an alt dir gets its xattrs first
        (gen_entry_copy_xattrs), then a pending xattr item is set."""
        gen = self.gen
        if alt_path is not None and not gen.g.dry_run:
            errs: list[str] = []
            fd = -1
            try:
                tgt, fd = self.target(path, stat.S_IFDIR)
                copy_all(self.ctx, alt_path, tgt, errs, gen.rep.qpath(path))
            except OSError:
                pass
            finally:
                if fd >= 0:
                    os.close(fd)
            for msg in errs:
                gen.rep.error_xfer(msg, role="generator")
        if self.dir is not None:
            if self.dir is e and not gen.g.dry_run:
                self.set(e)
            self.dir = None

    def set(self, e) -> None:
        """set_file_attrs(fname, file, NULL, fname): the entry's list on its dest."""
        gen = self.gen
        path = gen.dpath(e.name)
        try:
            st = gen._confined_lstat(path)
        except OSError:
            st = None
        if st is None:
            return
        errs: list[str] = []
        if gen.a.acls and e.acl is not None and not stat.S_ISLNK(st.st_mode):
            # With -A (which implies -p) rsync's whole set_file_attrs() pass shows: the
            # ACL is set again against the mode on disk now (a new sticky dir's ACL was
            # first set with the group bits masked, change_sacl_perms()).
            from netsync.metadata import set_file_attrs

            set_file_attrs(gen.a, path, e, st, errors=errs, xattr_from=path)
            for msg in errs:
                gen.rep.error_xfer(msg, role="generator")
            return
        fd = -1
        try:
            tgt, fd = self.target(path, st.st_mode)
            apply(self.ctx, tgt, e.xattr, tgt, st.st_mode, errs, gen.rep.qpath(path),
                  same_file=True)
        except OSError as ex:
            errs.append(f"rsync_xal_set: {gen.rep.qpath(path)}: "
                        f"{os.strerror(ex.errno or 0)} ({ex.errno})")
        finally:
            if fd >= 0:
                os.close(fd)
        for msg in errs:
            gen.rep.error_xfer(msg, role="generator")


_REPORT_XATTR = 1 << 8  # log.ITEM_REPORT_XATTR
_TRANSFER = 1 << 15  # log.ITEM_TRANSFER
_XNAME_LOCAL = (1 << 12) | (1 << 14)  # ITEM_XNAME_FOLLOWS | ITEM_LOCAL_CHANGE


# -- a wire client/server's side (flist.c, sender.c, receiver.c, generator.c) ------

class WireXa:
    """-X on the wire for a client or server (netsync.client._Client): the table of
    lists sent or received, the file-list hooks, and the abbreviated-value exchange
    after an item's ndx and attrs."""

    def __init__(self, client) -> None:
        from netsync import metadata as _md
        from netsync.transport import TransportError

        opts = client.opts
        proto = client.neg.protocol
        if proto < 30:  # compat.c setup_protocol(): rprintf(FERROR), no prefix
            raise TransportError(RERR_PROTOCOL, "--xattrs requires protocol 30 or higher "
                                 f"(negotiated {proto}).", bare=True, own_code=True)
        global who
        who = client.who
        self.client = client
        self.ctx = XaCtx(opts.xattrs, am_root_of(opts.am_root, _md.fake_super), None,
                         bool(opts.links), bool(opts.devices), bool(opts.specials))
        self.table = XaTable()
        self.want: dict[int, list[int]] = {}  # the sender: items asked for, by ndx
        self.pend: dict[int, object] = {}  # the receiver: items asked about, by ndx
        self.sender = None
        self.item_e = None  # the entry a pull's generator is reporting
        self.optim = bool(client.neg.want_xattr_optim)

    def set_filter(self, filters, side: str) -> None:
        self.ctx.excluded = name_filter(filters, side)

    def do_xfers(self) -> bool:
        """rsync's do_xfers: off in a dry run (--only-write-batch still transfers)."""
        opts = self.client.opts
        return not opts.dry_run or opts.only_write_batch is not None

    def direct(self, iflags: int) -> bool:
        """The request/values travel with this item (not a hard link the receiver
        made, with want_xattr_optim)."""
        return self.do_xfers() and not (self.optim and iflags & _XNAME_LOCAL == _XNAME_LOCAL)

    def entry(self, ndx: int):
        c = self.client
        if c._lists is not None:
            return c._lists.entry(ndx)
        snd = self.sender
        if c.am_sender and snd is not None:
            entries = snd.flist.entries
            return entries[ndx] if 0 <= ndx < len(entries) else None
        return c._entry(ndx)

    def walk(self, w, filters, sender) -> None:
        """The sender's walk reads each entry's list (flist.c send_file_name)."""
        self.set_filter(filters, "sender")
        self.sender = sender
        rep = self.client.rep
        w.xattrs = sender_hook(self.ctx, self.table,
                               lambda msg: rep.error_xfer(msg, role="sender"))

    def codec(self, coder) -> None:
        """Hook a file-list encoder or decoder: each entry's list follows it."""
        ctx, table = self.ctx, self.table
        if hasattr(coder, "encode_into"):
            def enc(e) -> bytes:
                data, e.xattr = encode_xattr(table, e.xattr or EMPTY, ctx.am_root)
                return data
            coder.xattr_encode = enc
        else:
            safe = self.client.rep.safe
            coder.xattr_parse = lambda buf, pos, name: table.parse(buf, pos, ctx,
                                                                   lambda: safe(name))
            coder.xattr_commit = table.commit

    def read(self, ndx: int, iflags: int) -> None:
        """recv_xattr_request() after an item's attrs: the generator's request (on the
        sender), or the values asked for (on the receiver; an xattr-only item then
        gets them set)."""
        if not self.direct(iflags):
            return
        c = self.client
        io = c.io
        e = self.pend.pop(ndx, None) if not c.am_sender else None
        if e is None:
            e = self.entry(ndx)
        xl = e.xattr if e is not None else None
        shown = (lambda: c.rep.safe(e.name)) if e is not None else (lambda: str(ndx))
        if c.am_sender:
            self.want[ndx] = sender_read_request(xl, io.read_varint, shown)
            return
        receiver_read_values(xl, io.read_varint, io.read, shown)
        self._set_item(e, iflags)

    def _set_item(self, e, iflags: int) -> None:
        if not iflags & _TRANSFER and iflags & _XNAME_LOCAL != _XNAME_LOCAL \
                and not self.client.opts.dry_run and e is not None:
            gen = getattr(self.client, "_gen", None)
            if gen is not None and gen.xag is not None:
                gen.xag.set(e)  # receiver.c: set_file_attrs() of an xattr-only item

    def write(self, ndx: int, iflags: int) -> bytes:
        """send_xattr_request() after an item's attrs: the generator's request, or
        the sender's values."""
        c = self.client
        if not iflags & (_REPORT_XATTR | _TRANSFER):
            return b""
        if c.am_sender:
            want = self.want.pop(ndx, None)
            if not iflags & _REPORT_XATTR or not self.direct(iflags):
                return b""
            e = self.entry(ndx)
            errs: list[str] = []
            path, fd = None, -1
            if self.sender is not None and want:
                try:  # (re-read where the list was read: a daemon's within its module)
                    path, fd = self.sender.xattr_at(self.sender._entry_path(e))
                except OSError:
                    path = None
            try:
                out = sender_values(e.xattr, want or [], path, errs, c.rep.safe(e.name))
            finally:
                if fd >= 0:
                    os.close(fd)
            for msg in errs:
                c.rep.error_xfer(msg, role="sender")
            return out
        if not self.do_xfers():
            return b""
        e = self.item_e if self.item_e is not None else self.entry(ndx)
        write = bool(iflags & _REPORT_XATTR) and self.direct(iflags)
        if write:  # (its reply may come once the list it is in is gone)
            self.pend[ndx] = e
        return gen_request(e.xattr if e is not None else None, write)

    def batch_values(self, iflags: int, e) -> None:
        """A --read-batch: the values the writing run's sender sent (read past for a
        list already gone)."""
        if not self.direct(iflags):
            return
        io = self.client.io
        if e is None:
            skip_values(io.read_varint, io.read)
            return
        receiver_read_values(e.xattr, io.read_varint, io.read,
                             lambda: self.client.rep.safe(e.name))
        self._set_item(e, iflags)
