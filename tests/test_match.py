"""The delta algorithm: generate sums, match, apply — round trips and efficiency."""

from __future__ import annotations

import importlib.util
import mmap
import random
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsync.checksum import FileSum, SumHead, get_checksum1, strong_block_sum
from netsync.errors import RsyncError
from netsync.match import BlockSums, apply_tokens, delta, generate_sums
from netsync.wire import DataEvent, FrameDecoder, decode_token

SEED = 4242


def roundtrip(
    basis: bytes, new: bytes, name: str | None = "xxh128", protocol: int = 31
) -> tuple[list[bytes | int], int]:
    sums = generate_sums(basis, len(basis), name, SEED, protocol)
    tokens, file_sum = delta(new, sums, name, SEED, protocol)
    for t in tokens:
        if isinstance(t, bytes):
            assert 0 < len(t) <= 32 * 1024
    out = bytearray()
    fs = FileSum(name, SEED, protocol)  # type: ignore[arg-type]
    h = sums.head
    st_ = apply_tokens(basis, tokens, out.extend, h.blength, h.remainder, h.count, fs)
    assert bytes(out) == new
    assert fs.digest() == file_sum
    assert st_.size == len(new) == st_.literal + st_.matched
    return tokens, st_.literal


def edits(base: bytes, rnd: random.Random) -> dict[str, bytes]:
    n = len(base)
    mid = n // 2
    return {
        "same": base,
        "middle": base[:mid] + b"X" + base[mid + 1 :] if n else b"X",
        "start": b"Y" + base[1:],
        "end": base[:-1] + b"Z" if n else b"Z",
        "truncated": base[: n * 2 // 3],
        "grown": base + rnd.randbytes(1000),
        "inserted": base[:mid] + rnd.randbytes(77) + base[mid:],
        "deleted": base[: mid // 2] + base[mid:],
        "prepended": rnd.randbytes(5) + base,
        "unrelated": rnd.randbytes(n),
        "empty": b"",
    }


@pytest.mark.parametrize("size", [0, 1, 699, 700, 701, 1399, 1400, 1401, 2100, 50_000])
def test_roundtrip_sizes(size: int) -> None:
    rnd = random.Random(size)
    base = rnd.randbytes(size)
    for label, new in edits(base, rnd).items():
        tokens, literal = roundtrip(base, new)
        if label == "same":
            assert literal == 0 or size == 0
            assert tokens == list(range(len(tokens)))


@pytest.mark.parametrize(
    ("name", "protocol"),
    [("md5", 30), (None, 29), (None, 27), (None, 26), ("md4", 31), ("sha1", 31), ("xxh3", 32),
     ("xxh64", 31)],
)
def test_roundtrip_algorithms(name: str | None, protocol: int) -> None:
    rnd = random.Random(7)
    base = rnd.randbytes(20_000)
    for new in edits(base, rnd).values():
        roundtrip(base, new, name, protocol)


@given(st.binary(max_size=4000), st.binary(max_size=4000), st.integers(0, 4000))
@settings(max_examples=80, deadline=None)
def test_roundtrip_hypothesis(basis: bytes, patch: bytes, at: int) -> None:
    new = basis[:at] + patch + basis[at + len(patch) // 2 :]
    roundtrip(basis, new)


def test_repetitive_data() -> None:
    # Every offset is a weak-sum candidate; matching must stay correct and quick.
    base = bytes(200_000)
    tokens, literal = roundtrip(base, bytes(150_001))
    assert literal <= 700
    tokens, literal = roundtrip(b"ab" * 50_000, b"b" + b"ab" * 60_000)
    assert literal < 3000


def test_one_byte_edit_in_10mb_sends_about_one_block() -> None:
    rnd = random.Random(10)
    base = rnd.randbytes(10_000_000)
    new = bytearray(base)
    new[6_543_210] ^= 0x55
    sums = generate_sums(base, len(base), "xxh128", SEED, 31)
    tokens, literal = roundtrip(base, bytes(new))
    assert literal == sums.head.blength  # exactly the damaged block
    assert len(tokens) == sums.head.count


def test_prefers_next_sequential_block() -> None:
    # rsync's hash chain yields the highest block index first, but the block
    # after the previous match ("want_i") wins when it matches too.
    rnd = random.Random(1)
    a, b = rnd.randbytes(700), rnd.randbytes(700)
    basis = a + b + b
    sums = generate_sums(basis, len(basis), "md5", SEED, 31)
    assert delta(b, sums, "md5", SEED, 31)[0] == [2]
    assert delta(a + b, sums, "md5", SEED, 31)[0] == [0, 1]
    assert delta(b"q" + b + b, sums, "md5", SEED, 31)[0] == [b"q", 2, 2]
    triple = generate_sums(b * 3, 2100, "md5", SEED, 31)
    assert delta(b * 3, triple, "md5", SEED, 31)[0] == [0, 1, 2]
    assert delta(b"q" + b * 2, triple, "md5", SEED, 31)[0] == [b"q", 0, 1]


def test_short_last_block_matches_only_at_end() -> None:
    rnd = random.Random(2)
    basis = rnd.randbytes(1000)  # blocks: 700 + 300
    tail = basis[700:]
    tokens, _ = delta(b"zz" + tail, generate_sums(basis, 1000, "md5", SEED, 31), "md5", SEED, 31)
    assert tokens == [b"zz", 1]
    tokens, _ = delta(tail + b"zz", generate_sums(basis, 1000, "md5", SEED, 31), "md5", SEED, 31)
    assert 1 not in tokens


def test_generate_sums_values() -> None:
    rnd = random.Random(3)
    basis = rnd.randbytes(5000)
    sums = generate_sums(basis, len(basis), "md4", SEED, 31)
    assert sums.head == SumHead(8, 700, 2, 100)
    for i in range(8):
        blk = basis[i * 700 : (i + 1) * 700]
        assert int(sums.sum1[i]) == get_checksum1(blk)
        assert sums.strong_at(i) == strong_block_sum("md4", blk, SEED, 31)[:2]
    redo = generate_sums(basis, len(basis), "md4", SEED, 31, csum_length=16)
    assert redo.head.s2length == 16
    again = BlockSums.from_lists(sums.head, sums.sum1.tolist(), sums.strong)
    assert delta(basis, again, "md4", SEED, 31)[0] == list(range(8))


def test_mmap_input(tmp_path: Path) -> None:
    rnd = random.Random(4)
    base = rnd.randbytes(300_000)
    new = base[:1000] + b"hello" + base[1000:]
    (tmp_path / "b").write_bytes(base)
    (tmp_path / "n").write_bytes(new)
    with open(tmp_path / "b", "rb") as fb, open(tmp_path / "n", "rb") as fn:
        mb = mmap.mmap(fb.fileno(), 0, access=mmap.ACCESS_READ)
        mn = mmap.mmap(fn.fileno(), 0, access=mmap.ACCESS_READ)
        sums = generate_sums(mb, len(mb), "xxh128", SEED, 31)
        tokens, fsum = delta(mn, sums, "xxh128", SEED, 31)
        out = bytearray()
        apply_tokens(mb, tokens, out.extend, sums.head.blength, sums.head.remainder,
                     sums.head.count)
        assert bytes(out) == new
        del sums


def test_apply_rejects_bad_index() -> None:
    with pytest.raises(RsyncError) as ei:
        apply_tokens(b"x" * 700, [5], bytearray().extend, 700, 0, 1)
    assert ei.value.code == 2
    with pytest.raises(RsyncError):
        apply_tokens(None, [0], bytearray().extend, 700, 0, 1)


def _recorder():  # type: ignore[no-untyped-def]
    path = Path(__file__).parent.parent / "tools" / "record_rsync_traffic.py"
    spec = importlib.util.spec_from_file_location("record_rsync_traffic", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("record_rsync_traffic", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("fixture", ["push31", "push30", "push31-md5"])
def test_same_tokens_as_rsync(fixture: str) -> None:
    """rsync's own sender produced exactly the tokens we produce for data.bin."""
    rec = _recorder()
    name = {"push31-md5": "md5"}.get(fixture, "xxh128")
    protocol = 30 if fixture == "push30" else 31
    basis, new = rec.basis_data(), rec.new_data()
    sums = generate_sums(basis, len(basis), name, rec.SEED, protocol)
    tokens, fsum = delta(new, sums, name, rec.SEED, protocol)
    raw = (Path(__file__).parent / "fixtures" / f"{fixture}.c2s.bin").read_bytes()
    # The client->server stream is multiplexed after the 4-byte version and
    # the checksum-name vstring (absent with --checksum-choice); demultiplex
    # it and find the token run.
    pos = 4 if fixture == "push31-md5" else 4 + 1 + raw[4]
    dec = FrameDecoder()
    dec.feed(raw[pos:])
    stream = b"".join(e.data for e in dec if isinstance(e, DataEvent))
    from netsync.wire import encode_token

    expect = b"".join(encode_token(t) for t in tokens) + encode_token(None) + fsum
    at = stream.find(expect)
    assert at > 0
    # And our decoder reads it back.
    got: list[bytes | int] = []
    p = at
    while True:
        tok, p = decode_token(stream, p)
        if not isinstance(tok, (bytes, int)):
            break
        got.append(tok)
    assert got == tokens


def test_timing_64mib() -> None:
    """Not an assertion on speed: prints how long a 64 MiB delta takes."""
    rnd = random.Random(64)
    base = rnd.randbytes(64 << 20)
    new = bytearray(base)
    for off in range(0, len(new), 7 << 20):
        new[off : off + 10] = b"0123456789"
    t0 = time.perf_counter()
    sums = generate_sums(base, len(base), "xxh128", SEED, 31)
    t1 = time.perf_counter()
    tokens, _ = delta(bytes(new), sums, "xxh128", SEED, 31)
    t2 = time.perf_counter()
    print(f"\n64 MiB: generate_sums {t1 - t0:.2f}s, match {t2 - t1:.2f}s, {len(tokens)} tokens")
    assert sum(1 for t in tokens if isinstance(t, int)) >= sums.head.count - 10
