"""The rsync delta algorithm, pure: block sums, matching, and applying a delta.

* Generator side: :func:`generate_sums` describes a basis file (weak + strong
  sum per block, sized by rsync's sum_sizes_sqroot).
* Sender side: :func:`match_tokens` walks the new data and yields literal
  chunks and matched block indexes, choosing the same blocks rsync's
  hash_search() would (highest-numbered block in the weak-sum chain that
  passes the strong check, except that the block after the previous match
  wins when it also matches; at most MAX_CHAIN_LEN weak-equal candidates per
  offset).  The rolling weak sums of a whole window are computed at once with
  numpy and looked up vectorised; only real weak-sum hits get a strong sum.
* Receiver side: :func:`apply_tokens` rebuilds the new file from the basis.

Inputs may be ``bytes`` or an ``mmap``; large data is processed in windows so
a multi-GiB file is never copied whole.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
from collections.abc import Callable, Generator, Iterable

import numpy as np
import numpy.typing as npt

from netsync.record import Record, factory

from .checksum import (
    CHUNK_SIZE,
    SHORT_SUM_LENGTH,
    FileSum,
    SumHead,
    block_checksum1,
    digest_len,
    get_checksum1,
    resolve_checksum,
    rolling_checksum1,
    strong_block_sum,
    sum_sizes_sqroot,
)
from .errors import RERR_FILEIO, RERR_PROTOCOL, RsyncError

__all__ = [
    "ApplyStats",
    "BlockSums",
    "SumHead",
    "apply_tokens",
    "generate_sums",
    "match_tokens",
]

Data = bytes | bytearray | memoryview | mmap.mmap
Token = bytes | int

MAX_CHAIN_LEN = 1024  # match.c: weak-equal candidates examined per offset
# Sizes that keep a pass's data in the CPU's caches: with 8 MiB windows and 1024-block
# batches a 256 MiB delta took 0.70 s, with these 0.50 s (read, weak sums and hashing all
# touch the same bytes while they are still cached).
WINDOW = 2 << 20  # bytes of rolling sums computed per numpy pass, at most
FAST_WINDOW = 64 << 10  # the first rolling window after a match
FAST_BATCH = 64  # most predicted in-order blocks checked per numpy pass


class BlockSums(Record):
    """What the generator sends for one basis file."""

    head: SumHead
    sum1: npt.NDArray[np.uint32]  # weak sum per block
    strong: bytes  # count * s2length bytes
    # rsync's updating_basis_file (--inplace onto the basis itself): the receiver
    # overwrites the basis as it goes, so no block may be used once the write
    # position has passed it, unless it was matched at its own offset.
    updating_basis: bool = False
    # Filled in by match_tokens(): matches, hash_hits, false_alarms, matched bytes
    # (what rsync's --debug=deltasum totals and --stats "Matched data" count).
    stats: list[int] = factory(lambda: [0, 0, 0, 0])

    def strong_at(self, i: int) -> bytes:
        s = self.head.s2length
        return self.strong[i * s : (i + 1) * s]

    @classmethod
    def from_lists(cls, head: SumHead, sum1: Iterable[int], strong: bytes) -> BlockSums:
        """Build from values decoded off the wire (see wire.decode_block_sums)."""
        arr = np.fromiter((int(s) & 0xFFFFFFFF for s in sum1), dtype=np.uint32)
        if arr.shape[0] != head.count or len(strong) != head.count * head.s2length:
            raise ValueError("block sums do not match the sum head")
        return cls(head, arr, strong)


class FileWindow:
    """The first ``size`` bytes of an open file, read on demand a window at a time
    (fileio.c map_ptr()): unlike an mmap, a file that shrinks meanwhile cannot kill
    the process with SIGBUS; what is missing reads as zeros and ``status`` records
    why (ENODATA for a short read), as rsync reports "read errors mapping"."""

    FILL = 2 << 20  # bytes read at a time, at least (cache-sized: see WINDOW)

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.status = 0
        self._start = 0
        self._mv = memoryview(b"")
        # Two buffers, filled in turn: a view of the previous window stays valid while
        # the next is read, and the pages are faulted in once, not on every window.
        self._bufs: list[bytearray] = [bytearray(), bytearray()]
        self._turn = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: slice) -> memoryview:
        start, stop, _ = key.indices(self.size)
        if stop <= start:
            return memoryview(b"")
        off = start - self._start
        if off < 0 or stop - self._start > len(self._mv):
            self._fill(start, max(stop - start, min(self.FILL, self.size - start)))
            off = 0
        return self._mv[off : off + stop - start]

    def _fill(self, start: int, length: int) -> None:
        buf = self._bufs[self._turn]
        if len(buf) < length:
            buf = self._bufs[self._turn] = bytearray(length)
        self._turn ^= 1
        mv = memoryview(buf)[:length]
        got = 0
        try:
            while got < length:
                n = os.preadv(self.fd, [mv[got:]], start + got)
                if not n:
                    break
                got += n
        except OSError as ex:
            self.status = self.status or ex.errno or _errno.EIO
        if got < length:  # "the best we can do is zero the buffer - the file has changed"
            self.status = self.status or _errno.ENODATA
            mv[got:] = bytes(length - got)
        self._start = start
        self._mv = mv


def _view(data: Data | FileWindow) -> memoryview:
    if isinstance(data, FileWindow):
        return data  # type: ignore[return-value]  # sliced like a memoryview
    return memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")


def generate_sums(
    basis: Data,
    file_len: int,
    checksum_name: str | None,
    seed: int,
    protocol: int,
    s2length: int | None = None,
    *,
    proper_seed_order: bool = True,
    csum_length: int = SHORT_SUM_LENGTH,
    block_size: int = 0,
) -> BlockSums:
    """Sums of ``basis[:file_len]`` as rsync's generate_and_send_sums() computes them.

    ``s2length`` overrides the computed strong-sum length (rsync's redo phase
    passes csum_length=16 instead, which also works).
    """
    name = resolve_checksum(checksum_name, protocol)
    count, blength, s2len, remainder = sum_sizes_sqroot(
        file_len, protocol, csum_length, block_size, xfer_sum_len=digest_len(name)
    )
    if s2length is not None:
        s2len = s2length
    head = SumHead(count, blength, s2len, remainder)
    view = _view(basis)
    view = view if isinstance(view, FileWindow) else view[:file_len]
    if len(view) < file_len:
        raise RsyncError(RERR_FILEIO, "basis file is shorter than its stated length")
    step = max(1, WINDOW // blength) * blength
    weak_parts = []
    strong = bytearray()
    for w0 in range(0, file_len, step):
        chunk = view[w0 : w0 + step]
        full = len(chunk) // blength
        if full:
            weak_parts.append(_full_block_sums(chunk, blength, full))
        if len(chunk) % blength:
            weak_parts.append(block_checksum1(chunk[full * blength :], blength))
        for b0 in range(0, len(chunk), blength):
            strong += strong_block_sum(
                name, chunk[b0 : b0 + blength], seed, protocol, proper_seed_order
            )[:s2len]
    sum1 = np.concatenate(weak_parts) if weak_parts else np.zeros(0, dtype=np.uint32)
    return BlockSums(head, sum1.astype(np.uint32, copy=False), bytes(strong))


_SUMS_CHUNK = 1 << 18  # bytes per BLAS call: cache-sized, and below OpenBLAS's threading


def _full_block_sums(data: Data, bl: int, m: int) -> npt.NDArray[np.uint32]:
    """Weak sums of ``m`` whole blocks, as BLAS products instead of two cumsums.

    Each block is cut into sub-blocks of ``sub`` <= 256 bytes: within one, s1 and
    s2 = sum((sub - u) * x[u]) stay below 2**24, so float32 holds them exactly;
    one (rows, sub) @ (sub, 2) product gives both, and they are combined per
    block in int64.  Working through a cache-sized float buffer keeps the int8 ->
    float32 conversion out of main memory (several times faster on big files).
    """
    sub = next(d for d in range(min(256, bl), 0, -1) if bl % d == 0)
    k = bl // sub
    weights = np.empty((sub, 2), dtype=np.float32)
    weights[:, 0] = 1
    weights[:, 1] = np.arange(sub, 0, -1)
    # A block's s2 adds each sub-block's own s2 and its s1 times the bytes after it.
    after = bl - sub * np.arange(1, k + 1, dtype=np.int64)
    x = np.frombuffer(data, dtype=np.int8, count=m * bl)
    per = max(1, _SUMS_CHUNK // bl)  # blocks per product
    buf = np.empty(min(per, m) * bl, dtype=np.float32)
    out = np.empty(m, dtype=np.uint32)
    for b0 in range(0, m, per):
        nb = min(per, m - b0)
        f = buf[: nb * bl]
        np.copyto(f, x[b0 * bl : (b0 + nb) * bl], casting="unsafe")
        r = (f.reshape(-1, sub) @ weights).astype(np.int64).reshape(nb, k, 2)
        s1s = r[:, :, 0]
        s1 = s1s.sum(axis=1)
        s2 = r[:, :, 1].sum(axis=1) + s1s @ after
        out[b0 : b0 + nb] = (s1 & 0xFFFF) | ((s2 & 0xFFFF) << 16)
    return out


class _Index:
    """Weak-sum lookup emulating rsync's hash chains (highest block index first)."""

    def __init__(self, sums: BlockSums) -> None:
        count = sums.head.count
        idx = np.arange(count, dtype=np.int64)
        order = np.lexsort((-idx, sums.sum1))
        self.sorted_sums = sums.sum1[order]
        self.sorted_idx = idx[order]
        # A small bitmap filters most offsets before the exact searchsorted.
        bits = min(24, max(16, int(count).bit_length() + 6))
        self.mask = np.uint32((1 << bits) - 1)
        self.table = np.zeros(1 << bits, dtype=bool)
        self.table[sums.sum1 & self.mask] = True

    def candidates(
        self, weak: npt.NDArray[np.uint32]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Offsets (into ``weak``) whose sum equals some block's, with chain bounds."""
        pre = np.flatnonzero(self.table[weak & self.mask])
        vals = weak[pre]
        lo = np.searchsorted(self.sorted_sums, vals, "left")
        hi = np.searchsorted(self.sorted_sums, vals, "right")
        keep = hi > lo
        return pre[keep], lo[keep], hi[keep]

    def chain(self, weak: int) -> tuple[int, int]:
        v = np.uint32(weak)
        return (
            int(np.searchsorted(self.sorted_sums, v, "left")),
            int(np.searchsorted(self.sorted_sums, v, "right")),
        )


def match_tokens(
    data: Data,
    sums: BlockSums,
    checksum_name: str | None,
    seed: int,
    protocol: int,
    *,
    proper_seed_order: bool = True,
) -> Generator[Token, None, bytes]:
    """Yield the delta of ``data`` against the basis described by ``sums``.

    Yields literal chunks (``bytes``, each <= CHUNK_SIZE) and matched block
    indexes (``int``); the generator's return value is the whole-file checksum
    of ``data`` (rsync's sender_file_sum), e.g. ``file_sum = yield from ...``.
    """
    name = resolve_checksum(checksum_name, protocol)
    view = _view(data)
    n = len(view)
    fsum = FileSum(name, seed, protocol)
    head = sums.head

    def literal(a: int, b: int) -> Generator[bytes, None, None]:
        for i in range(a, b, CHUNK_SIZE):
            chunk = bytes(view[i : min(b, i + CHUNK_SIZE)])
            fsum.update(chunk)
            yield chunk

    if n == 0 or head.count == 0:
        yield from literal(0, n)
        return fsum.digest()

    bl = head.blength
    s2 = head.s2length
    index = _Index(sums)
    sorted_idx = index.sorted_idx
    sum1 = sums.sum1
    last_i = head.count - 1

    def block_len(i: int) -> int:
        return head.remainder if (i == last_i and head.remainder) else bl

    updating = sums.updating_basis
    same: set[int] = set()  # blocks matched at their own offset (SUMFLG_SAME_OFFSET)
    counts = sums.stats

    def usable(i: int, offset: int) -> bool:
        return not updating or i * bl >= offset or i in same

    def pick(offset: int, weak: int, lo: int, hi: int, length: int, want_i: int
             ) -> tuple[int, int]:
        """rsync's hash_search() decision at one offset: the block (-1 for no match)
        and where it goes (further on only when a run of zeros is realigned)."""
        strong: bytes | None = None
        counts[1] += 1
        for i in sorted_idx[lo : min(hi, lo + MAX_CHAIN_LEN)].tolist():
            if block_len(i) != length or not usable(i, offset):
                continue
            if strong is None:
                strong = strong_block_sum(
                    name, view[offset : offset + length], seed, protocol, proper_seed_order
                )[:s2]
            if strong != sums.strong_at(i):
                counts[2] += 1
                continue
            if updating:
                # In place, the block already at its own offset is best: nothing is
                # written there.  Zeros matched off the block grid, with zeros at the
                # next grid offset on both sides, go as literal data up to it, so that
                # the receiver can go back to seeking over what it has (a sparse
                # image keeps its holes).
                aligned = -(-offset // bl) * bl
                a = aligned // bl
                if a < head.count and (
                    offset == aligned or (weak == 0 and length == bl and aligned + bl <= n)
                ) and (
                    a == i
                    or (int(sum1[a]) == weak and block_len(a) == length
                        and strong == sums.strong_at(a))
                ):
                    i = a
                    if offset == aligned:
                        same.add(a)
                        return a, offset
                    there = view[aligned : aligned + bl]
                    if get_checksum1(there) == weak and strong_block_sum(
                            name, there, seed, protocol, proper_seed_order)[:s2] == strong:
                        same.add(a)
                        return a, aligned
            if (
                i != want_i
                and want_i < head.count
                and usable(want_i, offset)
                and int(sum1[want_i]) == weak
                and block_len(want_i) == length
                and strong == sums.strong_at(want_i)
            ):
                i = want_i
            return i, offset
        return -1, offset

    last = 0  # start of literal data not yet sent
    pos = 0  # next offset to examine
    want_i = 0
    n_full = n - bl + 1  # offsets with a full window
    n_blocks = head.count - (1 if head.remainder else 0)  # full-length blocks
    # Rolling search window: small right after a match (an edit usually resyncs within a
    # block or two), doubling while nothing matches.
    min_step = max(FAST_WINDOW, 4 * bl)
    step = min_step
    while pos < n_full:
        # Fast path: the data continues with the next basis blocks in order. At ``pos``
        # rsync would find block want_i first (it prefers want_i among equal sums), so
        # checking the predicted blocks directly gives the same tokens without rolling.
        batch = 16  # grows while the prediction holds, so an edit wastes little work
        while want_i < n_blocks and pos + bl <= n and (not updating or want_i * bl >= pos):
            m = min((n - pos) // bl, n_blocks - want_i, batch)
            batch = min(batch * 4, FAST_BATCH)
            ws = _full_block_sums(view[pos : pos + m * bl], bl, m)
            ne = np.flatnonzero(ws != sum1[want_i : want_i + m])
            run = int(ne[0]) if len(ne) else m
            matched = 0
            while matched < run:
                b0 = pos + matched * bl
                counts[1] += 1
                if strong_block_sum(name, view[b0 : b0 + bl], seed, protocol,
                                    proper_seed_order)[:s2] != sums.strong_at(want_i + matched):
                    counts[2] += 1
                    break
                matched += 1
            if not matched:
                break
            yield from literal(last, pos)
            counts[0] += matched
            counts[3] += matched * bl
            for k in range(matched):
                fsum.update(view[pos + k * bl : pos + (k + 1) * bl])
                if updating and (want_i + k) * bl == pos + k * bl:
                    same.add(want_i + k)
                yield want_i + k
            want_i += matched
            last = pos = pos + matched * bl
            step = min_step
            if matched < m:
                break
        if pos >= n_full:
            break
        w0 = pos
        w1 = min(n_full, w0 + step)
        weak = rolling_checksum1(view[w0 : w1 + bl - 1], bl)
        offs, los, his = index.candidates(weak)
        found = False
        for o, lo, hi in zip((offs + w0).tolist(), los.tolist(), his.tolist(), strict=True):
            i, o = pick(o, int(weak[o - w0]), lo, hi, bl, want_i)
            if i < 0:
                continue
            yield from literal(last, o)
            fsum.update(view[o : o + bl])
            counts[0] += 1
            counts[3] += bl
            yield i
            want_i = i + 1
            last = pos = o + bl
            found = True
            break  # back to the fast path from the block after this match
        if not found:
            pos = w1
            step = min(step * 2, WINDOW)
        # Everything before pos is settled: stream it rather than hold it.
        if pos - last >= CHUNK_SIZE:
            cut = last + (pos - last) // CHUNK_SIZE * CHUNK_SIZE
            yield from literal(last, cut)
            last = cut

    # A short final block can only match the very end of the data.
    if head.remainder:
        o = n - head.remainder
        if o >= pos:
            weak_o = get_checksum1(view[o:n])
            lo, hi = index.chain(weak_o)
            if hi > lo:
                i, _ = pick(o, weak_o, lo, hi, head.remainder, want_i)
                if i >= 0:
                    yield from literal(last, o)
                    fsum.update(view[o:n])
                    counts[0] += 1
                    counts[3] += n - o
                    yield i
                    last = n
    yield from literal(last, n)
    return fsum.digest()


def delta(
    data: Data,
    sums: BlockSums,
    checksum_name: str | None,
    seed: int,
    protocol: int,
    *,
    proper_seed_order: bool = True,
) -> tuple[list[Token], bytes]:
    """match_tokens() collected into a list, plus the whole-file checksum."""
    tokens: list[Token] = []
    gen = match_tokens(
        data, sums, checksum_name, seed, protocol, proper_seed_order=proper_seed_order
    )
    while True:
        try:
            tokens.append(next(gen))
        except StopIteration as stop:
            return tokens, stop.value


class ApplyStats(Record):
    size: int = 0  # bytes written
    literal: int = 0  # rsync's literal_data
    matched: int = 0  # rsync's matched_data


def apply_tokens(
    basis: Data | None,
    tokens: Iterable[Token | None],
    out_write: Callable[[bytes], object],
    blength: int,
    remainder: int,
    count: int,
    file_sum: FileSum | None = None,
) -> ApplyStats:
    """Rebuild the new file from tokens (rsync's receive_data).

    A token ``None`` (the wire's end marker) stops early.  Each written byte is
    also fed to ``file_sum`` so the caller can compare it with the sender's.
    Invalid block indexes raise RsyncError with RERR_PROTOCOL.
    """
    view = _view(basis) if basis is not None else None
    st = ApplyStats()
    for tok in tokens:
        if tok is None:
            break
        if isinstance(tok, int):
            if tok < 0 or tok >= count:
                raise RsyncError(RERR_PROTOCOL, f"Invalid block index {tok} (count={count})")
            length = remainder if (tok == count - 1 and remainder) else blength
            start = tok * blength
            if view is None:
                raise RsyncError(RERR_PROTOCOL, "got a block match with no basis file")
            chunk = bytes(view[start : start + length])
            if len(chunk) != length:
                raise RsyncError(RERR_FILEIO, "basis file changed during the transfer")
            st.matched += length
        else:
            chunk = bytes(tok)
            st.literal += len(chunk)
        if file_sum is not None:
            file_sum.update(chunk)
        out_write(chunk)
        st.size += len(chunk)
    return st
