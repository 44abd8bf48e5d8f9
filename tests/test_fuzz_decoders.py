"""Fuzzing the wire decoders with hypothesis, from real rsync traffic.

Every decoder a peer's bytes reach (the file list, multiplexed frames, sum heads,
file indexes, the five token codecs, both handshakes) is fed mutated copies of
what stock rsync really sent (bit flips, overwritten bytes and varint-breaking
values, insertions, deletions, truncation) and random bytes.  Each must decode or
refuse with rsync's error: never another exception, never output beyond what the
input can describe.  ``tests/fixtures/fuzz/`` keeps inputs found this way; each is
replayed and must give the outcome recorded for it (``tools/fuzz_corpus.py`` adds
new ones).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_targets as F

TARGETS = F.targets()
_SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Values that break length fields and varints: sign bits, continuation bytes, maxima.
_EDGE = (0x00, 0x01, 0x7F, 0x80, 0xBF, 0xC0, 0xDF, 0xE0, 0xF0, 0xFE, 0xFF)
_WORDS = (b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff", b"\x00\x00\x01\x00",
          b"\xfc\xff\xff\xff\xff", b"\xff" * 9)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(("flip", "edge", "word", "insert", "delete", "truncate")))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "edge":
            data[i] = draw(st.sampled_from(_EDGE))
        elif op == "word":
            w = draw(st.sampled_from(_WORDS))
            data[i:i + len(w)] = w
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 32))]
        else:
            del data[i:]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@_SETTINGS
@given(data=st.data())
def test_mutated_real_traffic(name: str, data: st.DataObject) -> None:
    target, seed = TARGETS[name]
    out = target(data.draw(mutated(seed())))
    assert out.startswith(("ok", "error "))


@pytest.mark.parametrize("name", sorted(TARGETS))
@_SETTINGS
@given(raw=st.binary(max_size=600))
def test_random_bytes(name: str, raw: bytes) -> None:
    target, _ = TARGETS[name]
    out = target(raw)
    assert out.startswith(("ok", "error "))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_decodes(name: str) -> None:
    """The unmutated real traffic decodes completely (the seeds reach deep)."""
    target, seed = TARGETS[name]
    assert target(seed()).startswith("ok"), name


def _corpus() -> list[tuple[str, Path]]:
    out = []
    for d in sorted(F.CORPUS.glob("*")):
        if d.is_dir():
            out += [(d.name, p) for p in sorted(d.glob("*.bin"))]
    return out


@pytest.mark.parametrize("name,path", _corpus(), ids=lambda v: getattr(v, "name", v))
def test_corpus_replays(name: str, path: Path) -> None:
    target, _ = TARGETS[name]
    want = F.manifest()[f"{name}/{path.name}"]
    assert target(path.read_bytes()) == want
