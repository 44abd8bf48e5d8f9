"""The matcher's in-order fast path: exact weak sums and the same tokens as a full search."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from netsync import match
from netsync.checksum import block_checksum1, rolling_checksum1


@pytest.mark.parametrize("bl", [8, 700, 744, 1400, 8192, 65544, 131072])
@pytest.mark.parametrize("fill", [None, 0x80, 0x7F, 0xFF, 0x00])
def test_block_sums_are_exact(bl: int, fill: int | None) -> None:
    m = 5
    data = os.urandom(bl * m) if fill is None else bytes([fill]) * (bl * m)
    assert np.array_equal(match._full_block_sums(data, bl, m), block_checksum1(data, bl))


def _reference_tokens(data: bytes, sums: match.BlockSums) -> list[bytes | int]:
    """rsync's search with no prediction: at each offset take the first weak+strong match
    (preferring the next block in order), else move one byte."""
    from netsync.checksum import strong_block_sum

    head = sums.head
    bl = head.blength
    weak = rolling_checksum1(data, bl) if len(data) >= bl else np.zeros(0, np.uint32)
    out: list[bytes | int] = []
    lit = bytearray()
    pos, want = 0, 0
    while pos + bl <= len(data):
        w = int(weak[pos])
        hits = [i for i in range(head.count - (1 if head.remainder else 0))
                if int(sums.sum1[i]) == w
                and strong_block_sum("xxh128", data[pos:pos + bl], 0, 32)[:head.s2length]
                == sums.strong_at(i)]
        if hits:
            i = want if want in hits else max(hits)
            if lit:
                out.append(bytes(lit))
                lit.clear()
            out.append(i)
            want = i + 1
            pos += bl
        else:
            lit.append(data[pos])
            pos += 1
    lit += data[pos:]
    if lit:
        out.append(bytes(lit))
    return out


def _joined(tokens: list[bytes | int]) -> list[bytes | int]:
    out: list[bytes | int] = []
    for t in tokens:
        if isinstance(t, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += t
        else:
            out.append(t if isinstance(t, int) else bytes(t))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_tokens_equal_a_full_search(seed: int) -> None:
    rnd = random.Random(seed)
    old = bytearray(rnd.randbytes(70_000))  # exactly 100 blocks of 700: no short block
    old[7000:9100] = old[0:2100]  # repeated blocks: ties between block indexes
    new = bytearray(old)
    for _ in range(5):
        new[rnd.randrange(len(new))] ^= 0xFF
    p = rnd.randrange(len(new))
    new[p:p] = rnd.randbytes(333)
    del new[100:250]
    sums = match.generate_sums(bytes(old), len(old), "xxh128", 0, 32)
    assert sums.head.remainder == 0
    tokens, _ = match.delta(bytes(new), sums, "xxh128", 0, 32)
    assert _joined(tokens) == _joined(_reference_tokens(bytes(new), sums))
