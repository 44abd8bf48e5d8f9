"""--fuzzy: pick a similar destination file as the delta basis of a missing one.

The scoring is rsync's (generator.c find_fuzzy(), util1.c fuzzy_distance() and
find_filename_suffix()), including its unsigned 32-bit arithmetic, so the same
file is chosen as by rsync: an exact size+mtime match first, else the lowest
name distance (ties go to the later name), suffixes weighing ten times more.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

UNIT = 1 << 16
NO_MATCH = 0xFFFF * UNIT + 1  # what a hopeless pair scores (the length heuristic)
_DOT, _TILDE = 0x2E, 0x7E
_M32 = 0xFFFFFFFF


class Candidate:
    """One regular, non-empty file of a directory scanned for a fuzzy basis."""

    __slots__ = ("name", "size", "mtime", "sent", "_suffix")

    def __init__(self, name: bytes, size: int, mtime: int) -> None:
        self.name = name
        self.size = size
        self.mtime = mtime  # whole seconds, as rsync's file_struct keeps it
        self.sent = False  # FLAG_FILE_SENT: being rewritten, no longer a basis
        self._suffix: bytes | None = None

    @property
    def suffix(self) -> bytes:
        if self._suffix is None:
            self._suffix = filename_suffix(self.name)
        return self._suffix


def filename_suffix(name: bytes) -> bytes:
    """util1.c find_filename_suffix(): the most significant suffix (with its dot),
    passing over "~", ".bak", ".old", ".orig", ".~1~" and all-digit suffixes.

    Like rsync, ".bak"/".old"/".orig" are recognised only when nothing follows
    them in the whole name (its strcmp() runs to the end of the string)."""
    fn = name.lstrip(b".")  # one or more dots at the start are not a suffix
    n = len(fn)
    had_tilde = n > 1 and fn[n - 1] == _TILDE
    if had_tilde:
        n -= 1
    suf = b""
    s = n
    while n > 1:
        s -= 1
        while fn[s] != _DOT and s != 0:
            s -= 1
        if s == 0:
            break
        s_len = n - s
        n = s
        rest = fn[s + 1:]
        if s_len == 4:
            if rest in (b"bak", b"old"):
                continue
        elif s_len == 5:
            if rest == b"orig":
                continue
        elif s_len > 2 and had_tilde and fn[s + 1] == _TILDE and 0x30 <= fn[s + 2] <= 0x39:
            continue
        suf = fn[s:s + s_len]
        if s_len == 1:
            break
        if not all(0x30 <= c <= 0x39 for c in suf[1:]):
            return suf
        # An all-digit suffix may not be that significant: look further left.
    return suf


def fuzzy_distance(s1: bytes, s2: bytes, upper: int, exact: bool = True) -> int:
    """util1.c fuzzy_distance(): a weighted Levenshtein distance in 1/65536 units.

    Without ``exact`` a pair whose distance must exceed ``upper`` stops early and
    scores NO_MATCH; the choice is the same, only the value differs (-debug=fuzzy2
    prints it, so it asks for ``exact``)."""
    len1, len2 = len(s1), len(s2)
    if abs(len1 - len2) * UNIT > upper:
        return NO_MATCH
    if not len1 or not len2:
        s = s1 or s2
        # rsync adds the bytes as (signed) chars
        return (len(s) * UNIT + sum(c - 256 if c > 127 else c for c in s)) & _M32
    a = [(i + 1) * UNIT for i in range(len2)]
    rng = range(len2)
    for i1 in range(len1):
        c1 = s1[i1]
        diag = i1 * UNIT
        above = diag + UNIT
        left_add = UNIT + c1
        for i2 in rng:
            left = a[i2]
            c2 = s2[i2]
            diag_inc = diag if c1 == c2 else diag + UNIT + (c1 - c2 if c1 > c2 else c2 - c1)
            if left < above:
                v = left + left_add
            else:
                v = above + UNIT + c2
            above = a[i2] = v if v < diag_inc else diag_inc
            diag = left
        # Every later cell is at least the smallest of this row or the next rows'
        # left edge, so once both pass ``upper`` the pair is out of the running.
        if not exact and min(a) > upper and (i1 + 1) * UNIT > upper:
            return NO_MATCH
    return a[len2 - 1]


def scan_dir(list_fd: int | bytes, excluded: Callable[[bytes], bool] | None = None
             ) -> list[Candidate] | None:
    """flist.c get_dirlist() for the fuzzy search: the dir's regular files of
    non-zero length (symlinks not followed), in file-list order; None when
    there are none (or the dir cannot be read).  ``list_fd`` is a dir fd or path."""
    dir_fd = list_fd if isinstance(list_fd, int) else None
    try:
        names = os.listdir(list_fd)
    except OSError:
        return None
    out: list[Candidate] = []
    for name in names:
        if isinstance(name, str):  # a dir fd lists str names
            name = os.fsencode(name)
        try:
            if dir_fd is not None:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            else:
                st = os.lstat(os.path.join(list_fd, name))  # type: ignore[arg-type]
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or not st.st_size:
            continue
        if excluded is not None and excluded(name):
            continue
        out.append(Candidate(name, st.st_size, st.st_mtime_ns // 1_000_000_000))
    if not out:
        return None
    out.sort(key=lambda c: c.name)  # regular files of one dir: plain byte order
    return out


def same_time(t1: int, t2: int, modify_window: int) -> bool:
    """util1.c same_time() on whole seconds."""
    if modify_window <= 0:
        return t1 == t2
    return abs(t1 - t2) <= modify_window


def find_fuzzy(name: bytes, size: int, mtime: int, lists: list[list[Candidate] | None],
               modify_window: int = 0,
               debug: Callable[[int, Candidate, int], None] | None = None,
               exact: bool = False) -> tuple[int, Candidate] | None:
    """generator.c find_fuzzy(): (list index, candidate) or None.

    ``debug(list index, candidate, dist)`` is told of every scored candidate and
    of an exact match (dist -1), as rsync's --debug=fuzzy2 prints them; only then
    are the candidates scored one by one as rsync does, else all at once."""
    for i, c in _unsent(lists):
        if c.size == size and same_time(c.mtime, mtime, modify_window):
            if debug is not None:
                debug(i, c, -1)
            return i, c
    if debug is None and not exact and sum(len(dl) for dl in lists if dl) >= 32:
        return _closest(name, lists)
    lowest = LIMIT
    best: tuple[int, Candidate] | None = None
    suf = filename_suffix(name)
    for i, c in _unsent(lists):
        dist = fuzzy_distance(c.name, name, lowest, exact)
        if dist < 0xFFFF0000:
            dist = (dist + fuzzy_distance(c.suffix, suf, 0xFFFF0000) * 10) & _M32
        if debug is not None:
            debug(i, c, dist)
        if dist <= lowest:
            lowest = dist
            best = (i, c)
    return best


def _unsent(lists: list[list[Candidate] | None]) -> Iterator[tuple[int, Candidate]]:
    """(list index, candidate) of every candidate not yet marked sent, in order."""
    for i, dl in enumerate(lists):
        if dl is not None:
            for c in dl:
                if not c.sent:
                    yield i, c


LIMIT = 25 << 16  # a distance above 25 is ignored


def _closest(name: bytes, lists: list[list[Candidate] | None]) -> tuple[int, Candidate] | None:
    """The name-distance pass of find_fuzzy(), every candidate scored at once.

    rsync keeps the lowest distance so far and takes a candidate scoring at most
    that, so it ends with the last candidate of the lowest score (if within
    LIMIT).  A candidate it cuts short (length difference) scores above the
    lowest of its time, so never that: scoring all exactly picks the same one."""
    import numpy as np

    n2 = len(name)
    pool: list[tuple[int, Candidate]] = [
        (i, c) for i, c in _unsent(lists) if abs(len(c.name) - n2) * UNIT <= LIMIT]
    if not pool or not n2:
        return None
    dist = np.concatenate([_distances([c.name for _, c in pool[k:k + _CHUNK]], name)
                           for k in range(0, len(pool), _CHUNK)])
    suf = filename_suffix(name)
    sufd: dict[bytes, int] = {}
    best: tuple[int, Candidate] | None = None
    lowest = LIMIT
    for k in np.flatnonzero(dist <= LIMIT).tolist():
        i, c = pool[k]
        cs = c.suffix
        sd = sufd.get(cs)
        if sd is None:
            sd = sufd[cs] = fuzzy_distance(cs, suf, 0xFFFF0000)
        total = int(dist[k]) + sd * 10
        if total <= lowest:
            lowest = total
            best = (i, c)
    return best


# Candidates scored together: bounds the arrays (a name within 25 bytes of the
# target's length is at most 280 bytes long, as no file name exceeds 255).
_CHUNK = 4096


def _distances(names: list[bytes], name: bytes):
    """fuzzy_distance(each of ``names``, ``name``), exact, as one numpy array."""
    import numpy as np

    n, n2 = len(names), len(name)
    lens = np.fromiter((len(x) for x in names), dtype=np.int64, count=n)
    width = int(lens.max())
    cols = np.frombuffer(b"".join(x.ljust(width, b"\0") for x in names),
                         dtype=np.uint8).reshape(n, width).T.astype(np.int64)
    target = np.frombuffer(name, dtype=np.uint8).astype(np.int64)
    above_add = [UNIT + int(x) for x in target]
    a = [np.full(n, (i2 + 1) * UNIT, dtype=np.int64) for i2 in range(n2)]
    dist = np.full(n, LIMIT + 1, dtype=np.int64)  # left so: more than LIMIT
    minimum, where = np.minimum, np.where
    for i1 in range(width):
        c1 = cols[i1]
        # (n2, n): this row's substitution costs against each byte of ``name``
        sub = np.abs(target[:, None] - c1[None, :])
        sub = where(sub == 0, 0, sub + UNIT)
        left_add = c1 + UNIT
        diag = np.full(n, i1 * UNIT, dtype=np.int64)
        above = diag + UNIT
        for i2 in range(n2):
            left = a[i2]
            v = minimum(where(left < above, left + left_add, above + above_add[i2]),
                        diag + sub[i2])
            a[i2] = above = v
            diag = left
        done = lens == i1 + 1
        if done.any():
            dist[done] = a[n2 - 1][done]
        if i1 >= LIMIT >> 16 and not i1 & 3:
            # No later cell is below this row's minimum or the next rows' left edge
            # (> LIMIT here): once every unfinished name is past LIMIT, stop.
            alive = (lens > i1 + 1) & (minimum.reduce(a) <= LIMIT)
            if not alive.any():
                break
    return dist
