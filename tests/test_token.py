"""Token streams (token.c): every codec against itself and against real rsync traffic.

The compressed fixtures were recorded with ``python3
tests/fixtures/record_compressed.py``, which drives tools/record_rsync_traffic.py:
Debian's rsync 3.5.0 client pushed ``rsync -a --protocol=P
--checksum-seed=12345 -z --compress-choice=CODEC [--block-size=70000]`` to a
stock ``rsync --server`` and the wrapper teed both directions.  ``pushP-CODEC``
use the standard small tree; ``*-big-*`` and ``*-bigblock-*`` a larger tree
(see that script) whose deltas contain long literal runs, TOKEN_LONG jumps,
long TOKENRUNs, multi-record data and blocks over 64 KiB.
"""

from __future__ import annotations

import json
import random
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import netsync.token as token_mod
from netsync.checksum import FileSum, NegotiationError, sum_sizes_sqroot
from netsync.token import (
    CHUNK_SIZE,
    DEFLATED_DATA,
    INFLATE_OUT,
    MAX_DATA_COUNT,
    TOKEN_LONG,
    TOKEN_REL,
    TOKENRUN_LONG,
    TOKENRUN_REL,
    Block,
    End,
    Literal,
    TokenDecoder,
    TokenEncoder,
    ZstdEncoder,
    compression_level,
    make_decoder,
    make_encoder,
    negotiate_compression,
    parse_skip_compress,
    skip_compress_match,
)
from netsync.wire import (
    DataEvent,
    FrameDecoder,
    Reader,
    TruncatedError,
    WireError,
    encode_int32,
    encode_token,
)

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]
CODECS = ["none", "zlib", "zlibx", "zstd", "lz4"]


# --- helpers -----------------------------------------------------------------


@dataclass
class Delta:
    """One file's delta: tokens (bytes literal / int block) against a basis."""

    tokens: list[bytes | int]
    basis: bytes
    blength: int

    def block(self, i: int) -> bytes:
        return self.basis[i * self.blength : (i + 1) * self.blength]

    def result(self) -> bytes:
        return b"".join(t if isinstance(t, bytes) else self.block(t) for t in self.tokens)


def encode_session(enc: TokenEncoder, deltas: list[Delta]) -> list[bytes]:
    out = []
    for d in deltas:
        n = len(d.basis)
        enc.begin_file(
            block_length=d.blength if n else 0,
            last_block_length=(n % d.blength or d.blength) if n else 0,
            file_size=len(d.result()),
        )
        parts = [enc.literal(t) if isinstance(t, bytes) else enc.block(t, d.block(t))
                 for t in d.tokens]
        out.append(b"".join(parts) + enc.end_file())
    return out


def decode_file(dec: TokenDecoder, basis: bytes, blength: int) -> tuple[bytes, list[int]]:
    """Run the decoder to the next End, feeding blocks back like rsync's receiver."""
    out = bytearray()
    blocks = []
    for ev in dec:
        if isinstance(ev, Literal):
            out += ev.data
        elif isinstance(ev, Block):
            data = basis[ev.index * blength : (ev.index + 1) * blength]
            dec.see_block(data)
            out += data
            blocks.append(ev.index)
        else:
            assert isinstance(ev, End)
            return bytes(out), blocks
    raise AssertionError("stream ended before End")


def roundtrip(
    codec: str,
    deltas: list[Delta],
    protocol: int = 31,
    step: int = 0,
    enc: TokenEncoder | None = None,
) -> list[bytes]:
    """Encode a session, decode it back (optionally fed ``step`` bytes at a time)."""
    streams = encode_session(enc or make_encoder(codec, protocol=protocol), deltas)
    dec = make_decoder(codec, protocol)
    data = b"".join(streams)
    if step:
        got: list[bytes] = []
        pos = 0
        out = bytearray()
        while len(got) < len(deltas):
            d = deltas[len(got)]
            ended = False
            for ev in dec:
                if isinstance(ev, Literal):
                    out += ev.data
                elif isinstance(ev, Block):
                    dec.see_block(d.block(ev.index))
                    out += d.block(ev.index)
                else:
                    got.append(bytes(out))
                    out.clear()
                    ended = True
                    break
            if not ended:
                assert pos < len(data), "decoder stalled"
                dec.feed(data[pos : pos + step])
                pos += step
        assert [d.result() for d in deltas] == got
    else:
        dec.feed(data)
        for d in deltas:
            assert decode_file(dec, d.basis, d.blength)[0] == d.result()
    dec.close()
    return streams


def noise(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def text(n: int) -> bytes:
    words = b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu\n"
    return (words * (n // len(words) + 1))[:n]


def walk_flags(stream: bytes) -> list[tuple[int, int]]:
    """(flag byte, record length or run count) of one compressed file's stream."""
    out = []
    i = 0
    while True:
        flag = stream[i]
        if flag & 0xC0 == DEFLATED_DATA:
            n = ((flag & 0x3F) << 8) | stream[i + 1]
            out.append((DEFLATED_DATA, n))
            i += 2 + n
            continue
        if flag == 0:
            out.append((0, 0))
            assert i + 1 == len(stream)
            return out
        i += 1 if flag & TOKEN_REL else 5
        run = 0
        if (flag >> 6 if flag & TOKEN_REL else flag) & 1:
            run = stream[i] | stream[i + 1] << 8
            i += 2
        out.append((flag & 0xC0 if flag & TOKEN_REL else flag, run))


# --- known encodings -------------------------------------------------------------


def test_simple_codec_is_the_plain_int_stream() -> None:
    enc = make_encoder("none")
    enc.begin_file()
    big = noise(70_000, 1)
    got = enc.literal(b"abc") + enc.block(3) + enc.literal(big) + enc.end_file()
    # The literal before a token is one send_token() call, cut into 32 KiB pieces.
    assert got == (encode_token(b"abc") + encode_token(3) + encode_token(big)
                   + encode_token(None))
    dec = make_decoder("none")
    dec.feed(got)
    events = list(dec)
    assert events[:2] == [Literal(b"abc"), Block(3)]
    assert [len(e.data) for e in events[2:-1]] == [32768, 32768, 70_000 - 65536]
    assert events[-1] == End()


@pytest.mark.parametrize("codec", ["zlib", "zlibx", "zstd", "lz4"])
def test_block_run_flags(codec: str) -> None:
    enc = make_encoder(codec)
    enc.begin_file(block_length=10, file_size=10_000)
    out = b"".join(enc.block(i, bytes(10)) for i in (0, 1, 2, 5, 100, 101, 40))
    out += enc.end_file()
    assert out == bytes(
        [TOKENRUN_REL + 0, 2, 0,  # blocks 0-2: a run of 2 more after block 0
         TOKEN_REL + 3,  # block 5 is 3 after the end of the previous run (2)
         TOKENRUN_LONG, *encode_int32(100), 1, 0,  # 100 - 5 > 63: absolute
         TOKEN_LONG, *encode_int32(40),  # backwards: absolute
         0]
    )
    dec = make_decoder(codec)
    dec.feed(out)
    assert [e.index for e in dec if isinstance(e, Block)] == [0, 1, 2, 5, 100, 101, 40]


def test_runs_split_at_65536() -> None:
    enc = make_encoder("zstd")
    enc.begin_file(block_length=1, file_size=70_000)
    out = b"".join(enc.block(i, b"x") for i in range(70_000)) + enc.end_file()
    flags = walk_flags(out)
    # A run never reaches run_start + 65536: 0..65535 then 65536..69999.
    assert flags == [(TOKENRUN_REL, 65535), (TOKENRUN_REL, 70_000 - 65536 - 1), (0, 0)]
    dec = make_decoder("zstd")
    dec.feed(out)
    assert [e.index for e in dec if isinstance(e, Block)] == list(range(70_000))


# --- round trips ---------------------------------------------------------------


def sample_session() -> list[Delta]:
    basis = noise(9000, 2) + text(9000)
    bl = 700
    return [
        Delta([], b"", 700),  # empty file
        Delta([b"hello, world\n"], b"", 700),
        Delta([0, 1, 2, b"changed", 4, 5, 6, 7, 8, 12, 13, 20, 25], basis, bl),  # blocks only-ish
        Delta([noise(100_000, 3)], b"", 700),  # literal only, several 32 KiB pieces
        Delta([text(50_000), 3, noise(80_000, 4), 9, text(1000), 25], basis, bl),
        Delta(list(range(26)), basis, bl),  # one long run, no literal at all
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip_session(codec: str) -> None:
    roundtrip(codec, sample_session())


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip_fed_in_small_pieces(codec: str) -> None:
    roundtrip(codec, sample_session()[:5], step=997)


@pytest.mark.parametrize("codec", ["zlib", "zlibx", "zstd"])
def test_compressible_literal_really_compresses(codec: str) -> None:
    [stream] = roundtrip(codec, [Delta([text(200_000)], b"", 700)])
    assert len(stream) < 20_000


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_roundtrip_random(codec: str, data: st.DataObject) -> None:
    bl = data.draw(st.sampled_from([1, 16, 700, 70_000]))
    count = data.draw(st.integers(1, 40))
    basis = noise(bl * count, data.draw(st.integers(0, 1 << 30)))
    items = st.one_of(
        st.binary(min_size=1, max_size=3000),
        st.builds(noise, st.integers(1, 40_000), st.integers(0, 9)),
        st.integers(0, count - 1),
    )
    deltas = [Delta(data.draw(st.lists(items, max_size=12)), basis, bl) for _ in range(3)]
    roundtrip(codec, deltas, protocol=data.draw(st.sampled_from([30, 31])))


@pytest.mark.parametrize("native", [False, True])
def test_zstd_with_and_without_system_libzstd(native: bool) -> None:
    if native and not ZstdEncoder(native=None).native:
        pytest.skip("no system libzstd")
    # Over 128 KiB of literal: zstd blocks fill up inside 32 KiB pieces.
    deltas = [*sample_session(), Delta([noise(300_000, 9) + text(100_000)], b"", 700)]
    streams = roundtrip("zstd", deltas, enc=ZstdEncoder(native=native))
    sizes = [n for k, n in walk_flags(streams[-1]) if k == DEFLATED_DATA]
    assert max(sizes) == MAX_DATA_COUNT and len(sizes) > 18


def test_lz4_without_system_liblz4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_mod, "_liblz4", lambda: None)  # python-lz4's own compressor
    roundtrip("lz4", sample_session())


def test_legacy_zlib_history_matters() -> None:
    """In "zlib" mode blocks seed the history, so data repeating a block compresses."""
    basis = noise(70_000, 5)
    d = Delta([0, basis[40_000:70_000]], basis, 70_000)  # within the 32 KiB window
    legacy = roundtrip("zlib", [d])[0]
    plain = roundtrip("zlibx", [d])[0]
    assert len(legacy) < 1000 < 30_000 < len(plain)
    # Without see_block() the receiver cannot follow.
    dec = make_decoder("zlib")
    dec.feed(legacy)
    it = iter(dec)
    assert next(it) == Block(0)
    with pytest.raises(RuntimeError):
        next(it)


def test_zlib_protocol_30_refeeds_long_blocks() -> None:
    """Before 31 a block over 65535 bytes feeds its first 65535 bytes twice."""
    basis = noise(70_000, 6)
    d = Delta([0, basis[65_535:70_000]], basis, 70_000)
    s30 = roundtrip("zlib", [d], protocol=30)[0]
    s31 = roundtrip("zlib", [d], protocol=31)[0]
    assert s30 != s31
    # Block tail 65535.. is only in protocol 31's history: 30 must send it literally.
    assert len(s31) < 200 < 4000 < len(s30)


def test_level_changes_zlib_output() -> None:
    data = text(100_000)
    a = make_encoder("zlibx", level=1)
    b = make_encoder("zlibx", level=9)
    for e in (a, b):
        e.begin_file()
    assert a.literal(data) + a.end_file() != b.literal(data) + b.end_file()


# --- hostile input ---------------------------------------------------------------


def one_file(codec: str, tokens: list[bytes | int], basis: bytes = b"", bl: int = 700) -> bytes:
    return encode_session(make_encoder(codec), [Delta(tokens, basis, bl)])[0]


@pytest.mark.parametrize("codec", CODECS)
def test_truncation_waits_then_close_raises(codec: str) -> None:
    stream = one_file(codec, [noise(5000, 7), text(3000)])
    for cut in (1, 2, len(stream) // 2, len(stream) - 1):
        dec = make_decoder(codec)
        dec.feed(stream[:cut])
        assert not any(isinstance(e, End) for e in dec)
        with pytest.raises(TruncatedError):
            dec.close()


@pytest.mark.parametrize(
    ("codec", "bad"),
    [
        ("zlibx", bytes([0x01])),  # not a flag
        ("zlibx", bytes([0x3F])),
        ("zstd", bytes([TOKEN_LONG]) + encode_int32(-5)),
        ("lz4", bytes([TOKEN_LONG]) + encode_int32(0x7FFFFFFF)),
        ("zstd", bytes([TOKENRUN_REL + 1, 0, 0])),  # empty run
        ("lz4", bytes([TOKENRUN_LONG]) + encode_int32(0x7FFFFFF0) + b"\xff\x00"),  # overflow
        ("zlibx", bytes([DEFLATED_DATA, 4]) + b"\xff\xff\xff\xff"),  # invalid deflate
        ("zlib", bytes([DEFLATED_DATA, 5]) + b"\x03\x00garbage"[:5]),  # final block
        ("zstd", bytes([DEFLATED_DATA, 8]) + b"notazstd"),
        ("lz4", bytes([DEFLATED_DATA, 4]) + b"\xf0\xff\xff\xff"),
    ],
)
def test_garbage_raises_wire_error(codec: str, bad: bytes) -> None:
    dec = make_decoder(codec)
    dec.feed(bad + bytes(64))
    with pytest.raises(WireError):
        list(dec)


def test_lost_sync_detected() -> None:
    # Deflate data that is not cut at a sync point, followed by a token.
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = c.compress(noise(500, 8)) + c.flush(zlib.Z_FULL_FLUSH)[:-6]
    dec = make_decoder("zlibx")
    dec.feed(bytes([DEFLATED_DATA | len(raw) >> 8, len(raw) & 0xFF]) + raw + b"\x00")
    with pytest.raises(WireError, match="lost sync"):
        list(dec)


def test_deflate_bomb_is_streamed_and_capped() -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = c.compress(bytes(10_000_000)) + c.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < MAX_DATA_COUNT
    stream = bytes([DEFLATED_DATA | len(bomb[:-4]) >> 8, len(bomb[:-4]) & 0xFF])
    stream += bomb[:-4] + b"\x00"
    dec = make_decoder("zlibx")
    dec.feed(stream)
    sizes = [len(e.data) for e in dec if isinstance(e, Literal)]
    assert sum(sizes) == 10_000_000 and max(sizes) <= INFLATE_OUT
    dec = make_decoder("zlibx", max_literal=1_000_000)
    dec.feed(stream)
    with pytest.raises(WireError):
        list(dec)


def test_zstd_bomb_output_is_bounded() -> None:
    cobj = zstandard.ZstdCompressor(level=19).compressobj()
    bomb = cobj.compress(bytes(50_000_000)) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    assert len(bomb) < MAX_DATA_COUNT
    dec = make_decoder("zstd", max_literal=10_000_000)
    dec.feed(bytes([DEFLATED_DATA | len(bomb) >> 8, len(bomb) & 0xFF]) + bomb + b"\x00")
    seen = 0
    with pytest.raises(WireError):
        for ev in dec:
            seen = max(seen, len(ev.data)) if isinstance(ev, Literal) else seen
    assert 0 < seen <= 8 << 20


# --- negotiation, levels, skip-compress -------------------------------------------------


def test_negotiate_compression() -> None:
    client = ["zstd", "lz4", "zlibx", "zlib"]
    server = ["zstd", "lz4", "zlibx", "zlib", "none"]
    assert negotiate_compression(client, server) == "zstd"
    assert negotiate_compression(server, ["zlib", "lz4"]) == "lz4"  # our preference wins
    assert negotiate_compression(["zlib", "zlibx"], ["ZLIBX"]) == "zlibx"
    with pytest.raises(NegotiationError):
        negotiate_compression(client, ["none"])


def test_compression_levels() -> None:
    assert compression_level("zlib") == 6 and compression_level("zlibx", -1) == 6
    assert compression_level("zlib", 0) is None  # zlib level 0 turns -z off
    assert compression_level("zlibx", 42) == 9
    assert compression_level("zstd") == 3 and compression_level("zstd", 0) == 3
    assert compression_level("zstd", 99) == 22 and compression_level("zstd", -5) == -5
    assert compression_level("lz4", 7) == 0
    assert compression_level("none", 5) is None


def test_skip_compress() -> None:
    assert skip_compress_match(b"photo.JPG")
    assert skip_compress_match(b"dir.d/archive.tar.gz")
    assert skip_compress_match(b"x.7z") and skip_compress_match(b"a.zst")
    assert not skip_compress_match(b"notes.txt")
    assert not skip_compress_match(b".gz")  # a dot-file has no suffix
    assert not skip_compress_match(b"gz") and not skip_compress_match(b"file.")
    assert not skip_compress_match(b"dir.gz/readme")
    custom = parse_skip_compress("foo/[rR][aA]r/")
    assert custom == [b"foo", b"rar"]  # lower-cased before classes expand
    assert parse_skip_compress("[ab]c/x") == [b"ac", b"bc", b"x"]
    assert skip_compress_match(b"x.RAR", custom) and not skip_compress_match(b"x.gz", custom)
    assert parse_skip_compress(b"[]x/[ab") == [b"[]x", b"[ab"]
    assert skip_compress_match(b"\xff\xfe.mp3")  # non-UTF-8 names


# --- recorded rsync traffic ---------------------------------------------------------


def load_recorder():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT / "tools"))
    sys.path.insert(0, str(FIXTURES))
    try:
        import record_compressed as rc
        import record_rsync_traffic as rec
    finally:
        del sys.path[:2]
    return rc, rec


RC, REC = load_recorder()
COMPRESSED = sorted(RC.SMALL | RC.BIG | RC.HUGE)


def test_compressed_fixtures_present() -> None:
    names = {p.name[: -len(".json")] for p in FIXTURES.glob("*.json")}
    for c in ("zstd", "lz4", "zlibx", "zlib"):
        assert f"push31-{c}" in names and f"push31-big-{c}" in names
    assert {"push30-zlib", "push30-big-zlib", "push30-bigblock-zlib"} <= names


@dataclass
class Recorded:
    codec: str
    protocol: int
    files: list[tuple[bytes, bytes, bytes | None, tuple[int, int, int, int] | None]]
    # (raw token bytes as rsync sent them, new content, basis, sum head), in stream order


def c2s_data(name: str) -> bytes:
    """The client->server in-band bytes: version, checksum list, then MSG_DATA frames."""
    r = Reader((FIXTURES / f"{name}.c2s.bin").read_bytes())
    r.int32()
    r.vstring()  # checksum names (the compress choice was explicit: no list)
    dec = FrameDecoder()
    dec.feed(r.bytes(r.remaining))
    out = b"".join(e.data for e in dec if isinstance(e, DataEvent))
    dec.close()
    return out


def load_recording(name: str) -> Recorded:
    """Find each transferred file's token stream by its echoed sum head, and decode it.

    The sender echoes ndx, iflags and the generator's sum head before the
    tokens: all zeros for a file without basis (iflags 0xa000 here), the
    head rsync computes from the basis size otherwise.
    """
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    proto = meta["protocol"]
    opts = dict(o.split("=", 1) for o in meta["client_options"] if "=" in o)
    codec = opts["--compress-choice"]
    block_size = int(opts.get("--block-size", 0))
    big = "big" in name or "huge" in name
    whole = RC.whole_data("huge" in name)
    files: list[tuple[bytes, bytes | None]] = (
        [(RC.big_new(), RC.big_basis()), (b"hello, world\n", None), (whole, None)]
        if big else [(REC.new_data(), REC.basis_data()), (b"hello, world\n", None)]
    )
    files.append((REC.content(100, 2), None))
    s = c2s_data(name)
    located = []
    z = 0
    for new, basis in files:
        if basis is None:
            z = s.index(b"\x00\xa0" + bytes(16), z) + 18
            located.append((z, new, basis, None))
        else:
            head = sum_sizes_sqroot(len(basis), proto, block_size_opt=block_size)
            pos = s.index(b"".join(encode_int32(x) for x in head))
            located.append((pos + 16, new, basis, head))
    located.sort(key=lambda t: t[0])
    # One decoder for the session (zstd's stream spans files).
    dec = make_decoder(codec, proto)
    out = []
    for pos, new, basis, head in located:
        dec.feed(s[pos:])
        got, _ = decode_file(dec, basis or b"", head[1] if head else 1)
        assert got == new, f"{name}: reconstructed file differs"
        rest = dec.take_unconsumed()  # the file checksum and everything after
        fsum = FileSum("xxh128", 12345, proto)  # negotiated: both list xxh128 first
        fsum.update(new)
        assert rest.startswith(fsum.digest())
        used = len(s) - pos - len(rest)
        out.append((s[pos : pos + used], new, basis, head))
    return Recorded(codec, proto, out)


@pytest.mark.parametrize("name", COMPRESSED)
def test_decode_rsync_stream(name: str) -> None:
    rec = load_recording(name)
    assert len(rec.files) in (3, 4)


def reencode(rec: Recorded, protocol: int | None = None, sized: bool = True) -> list[bytes]:
    enc = make_encoder(rec.codec, protocol=protocol or rec.protocol)
    dec = make_decoder(rec.codec, rec.protocol)
    out = []
    for raw, new, basis, head in rec.files:
        dec.feed(raw)
        parts = []
        if head:
            count, bl, _s2, rem = head
            enc.begin_file(block_length=bl, last_block_length=rem or bl,
                           file_size=len(new) if sized else None)
        else:
            enc.begin_file()
        for ev in dec:
            if isinstance(ev, Literal):
                parts.append(enc.literal(ev.data))
            elif isinstance(ev, Block):
                assert basis is not None and head is not None
                data = basis[ev.index * head[1] : (ev.index + 1) * head[1]]
                dec.see_block(data)
                parts.append(enc.block(ev.index, data))
            else:
                break
        out.append(b"".join(parts) + enc.end_file())
    return out


@pytest.mark.parametrize("name", COMPRESSED)
def test_encoder_matches_rsync_bytes(name: str) -> None:
    rec = load_recording(name)
    assert reencode(rec) == [raw for raw, *_ in rec.files]


def test_encoder_without_file_size() -> None:
    # The size only matters for a long literal run within 32 KiB of the end.
    rec = load_recording("push31-big-zstd")
    assert reencode(rec, sized=False) == [raw for raw, *_ in rec.files]


def test_big_fixture_exercises_every_token_form() -> None:
    rec = load_recording("push31-big-zlibx")
    delta = walk_flags(rec.files[0][0])
    assert {k for k, _ in delta} == {DEFLATED_DATA, TOKENRUN_REL, TOKENRUN_LONG, 0}
    assert (TOKENRUN_LONG, 113) in delta  # blocks 214.. after the 71-block hole
    sizes = [n for k, n in delta if k == DEFLATED_DATA]
    # Full records are 16383 bytes, or 16379 while flushing (the last 4 bytes
    # are held back so the final 00 00 ff ff can be dropped).
    assert MAX_DATA_COUNT in sizes and MAX_DATA_COUNT - 4 in sizes
    whole = walk_flags(rec.files[2][0])
    assert [k for k, _ in whole] == [DEFLATED_DATA] * (len(whole) - 1) + [0]
    assert [n for _, n in whole][:-1] == [16383, 16383, 1659, 16379, 12976]
    # The 70,000-byte literal run was handed over in 32 KiB pieces without a
    # flush, which only shows in how records were cut: grouping it in one
    # call would make different records.
    enc = make_encoder("zlibx")
    enc.begin_file()
    assert enc.send(-1, RC.whole_data()) != rec.files[2][0]


def test_protocol_30_zlib_quirk_is_on_the_wire() -> None:
    rec = load_recording("push30-bigblock-zlib")
    assert reencode(rec)[0] == rec.files[0][0]
    assert reencode(rec, protocol=31)[0] != rec.files[0][0]


def test_chunk_size() -> None:
    assert CHUNK_SIZE == 32768 and MAX_DATA_COUNT == 16383
