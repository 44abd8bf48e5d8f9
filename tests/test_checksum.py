"""rsync's checksums: weak/rolling sums, block sizing, strong and whole-file sums."""

from __future__ import annotations

import hashlib
import importlib.util
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash
from Crypto.Hash import MD4
from hypothesis import given, settings
from hypothesis import strategies as st

from netsync.checksum import (
    CHECKSUM_NAMES,
    DIGEST_LEN,
    FileSum,
    NegotiationError,
    block_checksum1,
    digest_len,
    file_checksum,
    get_checksum1,
    md4_rsync_legacy,
    negotiate,
    negotiate_legacy,
    parse_name_list,
    resolve_checksum,
    rolling_checksum1,
    strong_block_sum,
    sum_as_hex,
    sum_sizes_sqroot,
)

RSYNC = shutil.which("rsync") or "/usr/bin/rsync"
HAVE_RSYNC = Path(RSYNC).exists()


def ref_checksum1(data: bytes) -> int:
    """Straight transcription of rsync's loop over signed chars."""
    s1 = s2 = 0
    for b in data:
        s1 = (s1 + (b - 256 if b >= 128 else b)) & 0xFFFFFFFF
        s2 = (s2 + s1) & 0xFFFFFFFF
    return (s1 & 0xFFFF) | ((s2 << 16) & 0xFFFFFFFF)


def ref_rolling(data: bytes, k: int) -> list[int]:
    """rsync hash_search()'s incremental update, one offset at a time."""
    out = []
    s = ref_checksum1(data[:k])
    s1, s2 = s & 0xFFFF, s >> 16
    for off in range(len(data) - k + 1):
        out.append((s1 & 0xFFFF) | ((s2 & 0xFFFF) << 16))
        if off + k >= len(data):
            break
        old = data[off] - 256 if data[off] >= 128 else data[off]
        new = data[off + k] - 256 if data[off + k] >= 128 else data[off + k]
        s1 = (s1 - old + new) & 0xFFFFFFFF
        s2 = (s2 - k * old + s1) & 0xFFFFFFFF
    return out


@given(st.binary(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_checksum1_matches_reference(data: bytes) -> None:
    assert get_checksum1(data) == ref_checksum1(data)


def test_checksum1_signed_chars_and_wraparound() -> None:
    # All-0xFF data is -1 per byte: s1, s2 go negative and wrap 16 bits.
    for n in (1, 4, 5, 255, 256, 700, 70_000):
        data = b"\xff" * n
        assert get_checksum1(data) == ref_checksum1(data)
    assert get_checksum1(b"\x80") == ((-128) & 0xFFFF) | (((-128) & 0xFFFF) << 16)
    assert get_checksum1(b"") == 0


@pytest.mark.parametrize("k", [1, 2, 7, 64, 700])
def test_rolling_matches_incremental_loop(k: int) -> None:
    rnd = random.Random(k)
    for data in (rnd.randbytes(3000), b"\xff" * 1500 + rnd.randbytes(500), bytes(1000)):
        assert rolling_checksum1(data, k).tolist() == ref_rolling(data, k)


def test_rolling_large_window_wraps() -> None:
    # A 128 KiB window makes s2 wrap many times over.
    rnd = random.Random(1)
    data = rnd.randbytes(140_000)
    k = 131072
    roll = rolling_checksum1(data, k)
    assert roll.shape == (len(data) - k + 1,)
    for off in (0, 1, 4000, len(data) - k):
        assert int(roll[off]) == ref_checksum1(data[off : off + k])
    assert rolling_checksum1(b"abc", 4).shape == (0,)


@given(st.binary(max_size=5000), st.integers(1, 1500))
@settings(max_examples=60, deadline=None)
def test_block_checksum1(data: bytes, blength: int) -> None:
    sums = block_checksum1(data, blength)
    assert sums.dtype == np.uint32
    expect = [ref_checksum1(data[i : i + blength]) for i in range(0, len(data), blength)]
    assert sums.tolist() == expect


# --- block sizing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "protocol", "expect"),
    [
        (0, 31, (0, 700, 2, 0)),
        (1, 31, (1, 700, 2, 1)),
        (699, 31, (1, 700, 2, 699)),
        (700, 31, (1, 700, 2, 0)),
        (701, 31, (2, 700, 2, 1)),
        (3000, 31, (5, 700, 2, 200)),  # seen on the wire in tests/fixtures
        (490_000, 31, (700, 700, 2, 0)),
        # The next three are what rsync 3.5.0 printed with --debug=deltasum2.
        (490_001, 31, (701, 700, 2, 1)),
        (10_000_000, 31, (3165, 3160, 2, 1760)),
        (123_456_789, 32, (11119, 11104, 3, 2517)),
        (10**12, 30, (7629395, 131072, 5, 69632)),  # MAX_BLOCK_SIZE from 30
        (10**12, 29, (1_000_000, 1_000_000, 5, 0)),  # no cap below 30
        (3000, 26, (5, 700, 2, 200)),  # below 27: s2length is csum_length
    ],
)
def test_sum_sizes(length: int, protocol: int, expect: tuple[int, int, int, int]) -> None:
    assert sum_sizes_sqroot(length, protocol) == expect


def test_sum_sizes_options() -> None:
    # --block-size (rsync printed count=2442 rem=1664 blength=4096 s2length=2).
    assert sum_sizes_sqroot(10_000_000, 32, 2, 4096, xfer_sum_len=8) == (2442, 4096, 2, 1664)
    # Redo phase (csum_length 16): full digest, capped by the digest length.
    assert sum_sizes_sqroot(5000, 31, 16)[2] == 16
    assert sum_sizes_sqroot(5000, 31, 16, xfer_sum_len=8)[2] == 8
    assert sum_sizes_sqroot(5000, 26, 16)[2] == 16


@pytest.mark.parametrize("length", [490_001, 10**7, 10**9, 10**11, 2**40 + 5])
def test_s2length_formula(length: int) -> None:
    # (10 + 2*floor(log2 len) - floor(log2 blength) - 24) / 8, clamped to [2, 16].
    _count, blength, s2, _rem = sum_sizes_sqroot(length, 31)
    b = 10 + 2 * (length.bit_length() - 1) - (blength.bit_length() - 1)
    assert s2 == min(16, max(2, int((b - 24) / 8)))


@pytest.mark.skipif(not HAVE_RSYNC, reason="needs rsync")
def test_sum_sizes_against_rsync(tmp_path: Path) -> None:
    size = 7_777_777
    (tmp_path / "s").mkdir()
    (tmp_path / "d").mkdir()
    for side in ("s", "d"):
        subprocess.run(["truncate", "-s", str(size), str(tmp_path / side / "f")], check=True)
    subprocess.run(["touch", "-d", "2020-01-01", str(tmp_path / "d" / "f")], check=True)
    out = subprocess.run(
        [RSYNC, "-a", "--no-whole-file", "--debug=deltasum2", f"{tmp_path}/s/", f"{tmp_path}/d/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"count=(\d+) rem=(\d+) blength=(\d+) s2length=(\d+)", out)
    assert m, out
    count, rem, blength, s2 = map(int, m.groups())
    assert sum_sizes_sqroot(size, 32) == (count, blength, s2, rem)


# --- strong sums -----------------------------------------------------------

SEED = 12345
SEED_LE = SEED.to_bytes(4, "little")


def test_digest_lengths() -> None:
    for name in CHECKSUM_NAMES:
        assert len(strong_block_sum(name, b"abc", 7, 31)) == DIGEST_LEN[name] == digest_len(name)
    assert digest_len("xxhash") == 8


def test_known_vectors() -> None:
    assert strong_block_sum("md4", b"abc", 0, 31).hex() == "a448017aaf21d8525fc10ae87aa6729d"
    assert strong_block_sum("md5", b"abc", 0, 31).hex() == "900150983cd24fb0d6963f7d28e17f72"
    assert strong_block_sum("sha1", b"abc", 0, 31) == hashlib.sha1(b"abc").digest()
    # xxh sums go on the wire little-endian (the canonical form reversed).
    assert strong_block_sum("xxh64", b"abc", 0, 31) == xxhash.xxh64(b"abc").digest()[::-1]
    assert strong_block_sum("xxh3", b"abc", 0, 31) == xxhash.xxh3_64(b"abc").digest()[::-1]
    assert strong_block_sum("xxh128", b"abc", 0, 31) == xxhash.xxh3_128(b"abc").digest()[::-1]


def test_seed_placement() -> None:
    blk = b"x" * 100
    assert strong_block_sum("md4", blk, SEED, 31) == MD4.new(blk + SEED_LE).digest()
    assert strong_block_sum("md4_old", blk, SEED, 29) == MD4.new(blk + SEED_LE).digest()
    assert strong_block_sum("md5", blk, SEED, 31, True) == hashlib.md5(SEED_LE + blk).digest()
    assert strong_block_sum("md5", blk, SEED, 30, False) == hashlib.md5(blk + SEED_LE).digest()
    assert strong_block_sum("sha1", blk, SEED, 31) == hashlib.sha1(SEED_LE + blk).digest()
    assert strong_block_sum("xxh64", blk, SEED, 31) == xxhash.xxh64(blk, seed=SEED).digest()[::-1]
    # A zero seed is never hashed.
    assert strong_block_sum("md4", blk, 0, 31) == MD4.new(blk).digest()
    # A negative int32 seed is sign-extended into xxhash's 64-bit seed.
    assert (
        strong_block_sum("xxh64", blk, -5, 31)
        == xxhash.xxh64(blk, seed=2**64 - 5).digest()[::-1]
    )
    # None means "what the protocol implies".
    assert strong_block_sum(None, blk, SEED, 30) == hashlib.md5(SEED_LE + blk).digest()
    assert strong_block_sum(None, blk, SEED, 28) == MD4.new(blk + SEED_LE).digest()


def test_md4_legacy_quirks() -> None:
    for n in (0, 1, 55, 56, 63, 64, 65, 119, 128, 1000):
        data = bytes(range(256)) * 4
        data = data[:n]
        assert md4_rsync_legacy(data, busted=False, bits32=True) == MD4.new(data).digest()
        busted = md4_rsync_legacy(data, busted=True, bits32=True)
        assert (busted == MD4.new(data).digest()) == (n % 64 != 0)
    # Protocol 21-26 block sums: a 64-byte multiple skips the padding block.
    assert strong_block_sum(None, b"a" * 60, 1, 26) != MD4.new(b"a" * 60 + b"\1\0\0\0").digest()
    assert strong_block_sum(None, b"a" * 61, 1, 26) == MD4.new(b"a" * 61 + b"\1\0\0\0").digest()
    assert resolve_checksum(None, 26) == "md4_busted"
    assert resolve_checksum(None, 20) == "md4_archaic"
    assert resolve_checksum("auto", 31) == "md5"


def test_file_sum_seed_rules() -> None:
    data = random.Random(3).randbytes(5000)

    def fsum(name: str | None, seed: int, protocol: int) -> bytes:
        f = FileSum(name, seed, protocol)  # type: ignore[arg-type]
        for i in range(0, len(data), 777):
            f.update(data[i : i + 777])
        return f.digest()

    assert fsum("md5", SEED, 31) == hashlib.md5(data).digest()
    assert fsum("md4", SEED, 31) == MD4.new(data).digest()
    assert fsum("sha1", SEED, 31) == hashlib.sha1(data).digest()
    assert fsum("xxh128", SEED, 31) == xxhash.xxh3_128(data).digest()[::-1]
    assert fsum("xxh3", SEED, 31) == xxhash.xxh3_64(data).digest()[::-1]
    assert fsum("xxh64", SEED, 31) == xxhash.xxh64(data).digest()[::-1]
    assert fsum(None, SEED, 29) == MD4.new(SEED_LE + data).digest()
    assert fsum(None, 0, 29) == MD4.new(b"\0\0\0\0" + data).digest()  # seed always hashed
    assert fsum("none", SEED, 31) == b"\0"
    # Busted MD4 (protocol < 27): 4 + 60 bytes is a multiple of 64, no padding.
    f = FileSum(None, SEED, 26)  # type: ignore[arg-type]
    f.update(b"z" * 60)
    assert f.digest() == md4_rsync_legacy(SEED_LE + b"z" * 60, busted=True, bits32=True)
    assert f.digest() != MD4.new(SEED_LE + b"z" * 60).digest()


@pytest.mark.skipif(not HAVE_RSYNC, reason="needs rsync")
@pytest.mark.parametrize("name", ["md5", "md4", "xxh128", "xxh3", "xxh64", "sha1"])
def test_file_checksum_matches_rsync_c(tmp_path: Path, name: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"hello world\n")
    (src / "b").write_bytes(random.Random(9).randbytes(70_000))
    out = subprocess.run(
        [RSYNC, "-rc", f"--checksum-choice={name}", "--out-format=%C %n", f"{src}/",
         f"{tmp_path}/dst/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    printed = dict(reversed(line.rsplit(" ", 1)) for line in out.splitlines() if line.strip(". "))
    for fname in ("a", "b"):
        digest = file_checksum(src / fname, name, 32)
        assert sum_as_hex(name, digest) == printed[fname].strip()


def test_sum_as_hex_legacy_is_blank() -> None:
    assert sum_as_hex("md4_old", b"\0" * 16) is None
    assert sum_as_hex("md5", bytes(range(16))) == bytes(range(16)).hex()
    assert sum_as_hex("xxh64", bytes(range(8))) == "0706050403020100"


# --- recorded traffic: rsync's own block sums and file sums ------------------

FIXTURES = Path(__file__).parent / "fixtures"


def _recorder():  # type: ignore[no-untyped-def]
    path = Path(__file__).parent.parent / "tools" / "record_rsync_traffic.py"
    spec = importlib.util.spec_from_file_location("record_rsync_traffic", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("record_rsync_traffic", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("fixture", "name", "protocol"),
    [
        ("push31", "xxh128", 31),
        ("push30", "xxh128", 30),
        ("push31-md4", "md4", 31),
        ("push31-md5", "md5", 31),
        ("push31-sha1", "sha1", 31),
        ("push31-xxh64", "xxh64", 31),
        ("push29", None, 29),
        ("push27", None, 27),
    ],
)
def test_sums_seen_on_the_wire(fixture: str, name: str | None, protocol: int) -> None:
    """The generator's block sums and the sender's file sum equal ours, byte for byte.

    Searching the raw streams is enough here: each expected run of bytes is
    dozens of bytes long.  Frames are small, so no frame header splits them.
    """
    from netsync.wire import encode_block_sums, encode_sum_head

    rec = _recorder()
    basis, new = rec.basis_data(), rec.new_data()
    s2c = (FIXTURES / f"{fixture}.s2c.bin").read_bytes()
    c2s = (FIXTURES / f"{fixture}.c2s.bin").read_bytes()
    from netsync.checksum import SumHead

    xlen = digest_len(resolve_checksum(name, protocol))
    count, blength, s2, rem = sum_sizes_sqroot(len(basis), protocol, xfer_sum_len=xlen)
    strong = b"".join(
        strong_block_sum(name, basis[i : i + blength], rec.SEED, protocol)[:s2]  # type: ignore[arg-type]
        for i in range(0, len(basis), blength)
    )
    expect = encode_sum_head(SumHead(count, blength, s2, rem), protocol) + encode_block_sums(
        block_checksum1(basis, blength).tolist(), strong, s2
    )
    assert expect in s2c
    fs = FileSum(name, rec.SEED, protocol)  # type: ignore[arg-type]
    fs.update(new)
    assert fs.digest() in c2s


# --- negotiation -----------------------------------------------------------


def test_negotiate_35_rule() -> None:
    client = ["xxh128", "xxh3", "xxh64", "md5", "md4", "sha1"]
    server = ["xxh128", "xxh3", "xxh64", "md5", "md4", "sha1", "none"]
    assert negotiate(client, server) == "xxh128"
    assert negotiate(server, client) == "xxh128"
    # Each side picks its own favourite that the peer listed.
    assert negotiate(["md5", "xxh64"], ["xxh64", "md5"]) == "md5"
    assert negotiate(["xxh64", "md5"], ["md5", "xxh64"]) == "xxh64"
    assert negotiate(["xxhash"], ["xxh64"]) == "xxh64"
    assert negotiate_legacy(["md5", "xxh64"], ["xxh64", "md5"]) == "md5"
    with pytest.raises(NegotiationError) as ei:
        negotiate(["md4"], ["md5"])
    assert ei.value.code == 4
    assert parse_name_list(b"xxh128 xxh3  md5") == ["xxh128", "xxh3", "md5"]


def test_import_is_cheap() -> None:
    code = "import sys, netsync.checksum; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
