"""Sans-I/O wire codecs, checked against rsync's encodings and recorded traffic.

Fixtures (tests/fixtures/NAME.{c2s,s2c}.bin) were recorded with
``python3 tools/record_rsync_traffic.py`` against Debian's rsync 3.5.0: the
stock client ran ``rsync -a --protocol=P --checksum-seed=12345 [extra] -e
"python3 tools/record_rsync_traffic.py --tee PREFIX" SRC/ localhost:DST/``
(push) or ``localhost:SRC/ DST/`` (pull), the wrapper started the stock
``rsync --server ...`` locally and teed client->server (c2s) and
server->client (s2c) bytes.  NAME.json holds each fixture's exact client
options and server command line; the tree is described in the tool.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsync.checksum import SumHead, parse_name_list
from netsync.wire import (
    END,
    NDX_DEL_STATS,
    NDX_DONE,
    NDX_FLIST_EOF,
    NDX_FLIST_OFFSET,
    DataEvent,
    FrameDecoder,
    MessageEvent,
    Msg,
    NdxDecoder,
    NdxEncoder,
    Reader,
    TruncatedError,
    WireError,
    decode_block_sums,
    decode_int32,
    decode_longint,
    decode_shortint,
    decode_sum_head,
    decode_token,
    decode_varint,
    decode_varlong,
    decode_vstring,
    encode_block_sums,
    encode_data,
    encode_frame,
    encode_int32,
    encode_longint,
    encode_msg_int,
    encode_shortint,
    encode_sum_head,
    encode_token,
    encode_varint,
    encode_varlong,
    encode_vstring,
)

FIXTURES = Path(__file__).parent / "fixtures"
INT32 = st.integers(-(2**31), 2**31 - 1)


# --- integers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (0x7F, "7f"),
        (0x80, "8080"),
        (0x1FF, "81ff"),  # the compat flags seen in every 30+ fixture
        (0x3FFF, "bfff"),
        (0x4000, "c00040"),
        (0x1FFFFF, "dfffff"),
        (0x200000, "e0000020"),
        (0x7FFFFFFF, "f0ffffff7f"),
        (-1, "f0ffffffff"),
    ],
)
def test_varint_known(value: int, encoded: str) -> None:
    assert encode_varint(value).hex() == encoded
    assert decode_varint(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


@given(INT32)
def test_varint_roundtrip(x: int) -> None:
    enc = encode_varint(x)
    assert decode_varint(enc) == (x, len(enc))
    for cut in range(len(enc)):
        with pytest.raises(TruncatedError):
            decode_varint(enc[:cut])


@given(st.integers(-(2**63), 2**63 - 1), st.integers(1, 8))
def test_varlong_roundtrip(x: int, min_bytes: int) -> None:
    try:
        enc = encode_varlong(x, min_bytes)
    except ValueError:
        # Only huge/negative values with a small min_bytes are unencodable.
        assert min_bytes < 3 and (x < 0 or x >= 1 << (8 * min_bytes + 40))
        return
    assert len(enc) >= min_bytes
    assert decode_varlong(enc, 0, min_bytes) == (x, len(enc))
    for cut in range(len(enc)):
        with pytest.raises(TruncatedError):
            decode_varlong(enc[:cut], 0, min_bytes)


def test_varlong_known() -> None:
    # File sizes use min_bytes=3, mtimes 4.
    # The first byte carries the top bits: 3000 is 00 b8 0b, as in push31.
    assert encode_varlong(3000, 3).hex() == "00b80b"
    assert encode_varlong(3000, 3) in (FIXTURES / "push31.c2s.bin").read_bytes()
    assert encode_varlong(0x800000, 3).hex() == "80000080"
    assert decode_varlong(encode_varlong(-1, 4), 0, 4)[0] == -1
    assert decode_varlong(encode_varlong(1_700_000_000, 4), 0, 4)[0] == 1_700_000_000
    assert encode_varlong(0, 3) == b"\0\0\0"


@given(st.integers(0, 2**62))
def test_longint(x: int) -> None:
    enc = encode_longint(x)
    assert len(enc) == (4 if x <= 0x7FFFFFFF else 12)
    assert decode_longint(enc) == (x, len(enc))


def test_fixed_ints() -> None:
    assert encode_int32(-1) == b"\xff\xff\xff\xff"
    assert decode_int32(b"\xfe\xff\xff\xff") == (-2, 4)
    assert encode_shortint(0x8008) == b"\x08\x80"
    assert decode_shortint(b"\x08\x80") == (0x8008, 2)
    with pytest.raises(TruncatedError):
        decode_int32(b"\0\0\0")
    assert issubclass(TruncatedError, WireError)


def test_vstring() -> None:
    assert encode_vstring(b"md5") == b"\x03md5"
    long = b"x" * 300
    assert encode_vstring(long)[:2] == bytes((0x81, 0x2C))
    assert decode_vstring(encode_vstring(long)) == (long, 302)
    with pytest.raises(WireError):
        decode_vstring(encode_vstring(long), 0, max_len=100)
    with pytest.raises(TruncatedError):
        decode_vstring(b"\x05ab")


# --- file indexes ----------------------------------------------------------


def test_ndx_known_bytes() -> None:
    enc = NdxEncoder(30)
    assert enc.encode(0) == b"\x01"
    assert enc.encode(5) == b"\x05"
    assert enc.encode(NDX_DONE) == b"\x00"
    assert enc.encode(5 + 300) == b"\xfe\x01\x2c"
    assert enc.encode(100_000) == bytes((0xFE, 0x80, 0xA0, 0x86, 0x01))
    assert enc.encode(NDX_FLIST_EOF) == b"\xff\x01"
    assert NdxEncoder(29).encode(7) == b"\x07\0\0\0"


@given(st.lists(st.one_of(st.integers(0, 2**31 - 1), st.integers(-500, -1),
                          st.sampled_from([NDX_DONE, NDX_FLIST_EOF, NDX_DEL_STATS,
                                           NDX_FLIST_OFFSET]))))
@settings(max_examples=200)
def test_ndx_roundtrip(seq: list[int]) -> None:
    for protocol in (29, 30, 31):
        enc, dec = NdxEncoder(protocol), NdxDecoder(protocol)
        stream = b"".join(enc.encode(x) for x in seq)
        r = Reader(stream, protocol)
        assert [r.ndx(dec) for _ in seq] == seq
        assert r.at_end()


def test_ndx_truncation_keeps_state() -> None:
    enc, dec = NdxEncoder(31), NdxDecoder(31)
    data = enc.encode(3) + enc.encode(100_000) + enc.encode(100_001)
    r = Reader(data[:3], 31)
    assert r.ndx(dec) == 3
    with pytest.raises(TruncatedError):
        r.ndx(dec)
    r.feed(data[3:])
    assert r.ndx(dec) == 100_000
    assert r.ndx(dec) == 100_001


def test_ndx_rejects_overflow() -> None:
    dec = NdxDecoder(30)
    dec.prev_positive = 0x7FFFFFFF
    with pytest.raises(WireError):
        dec.decode(b"\x05")


# --- frames ----------------------------------------------------------------


def test_frame_encoding() -> None:
    assert encode_frame(Msg.DATA, b"abc") == b"\x03\x00\x00\x07abc"
    assert encode_msg_int(Msg.SUCCESS, 5) == bytes((4, 0, 0, 107)) + b"\x05\0\0\0"
    assert encode_data(b"") == b""


def test_frame_decoder_incremental() -> None:
    stream = (
        encode_frame(Msg.DATA, b"hello ")
        + encode_frame(Msg.DATA, b"")  # keep-alive
        + encode_frame(Msg.INFO, b"note\n")
        + encode_frame(Msg.DATA, b"world")
        + encode_msg_int(Msg.IO_ERROR, 1)
        + encode_frame(Msg.STATS, (123).to_bytes(8, "little"))
        + encode_frame(Msg.ERROR_EXIT, b"")
    )
    dec = FrameDecoder()
    events = []
    for b in stream:  # one byte at a time
        dec.feed(bytes((b,)))
        events.extend(dec)
    dec.close()
    data = b"".join(e.data for e in events if isinstance(e, DataEvent))
    msgs = [e for e in events if isinstance(e, MessageEvent)]
    assert data == b"hello world"
    assert [(m.code, m.value) for m in msgs] == [
        (Msg.INFO, None), (Msg.IO_ERROR, 1), (Msg.STATS, 123), (Msg.ERROR_EXIT, None)
    ]
    assert msgs[0].text == b"note\n"


@pytest.mark.parametrize(
    "bad",
    [
        (50 + 7 << 24).to_bytes(4, "little"),  # unknown tag
        ((7 + 9) << 24 | 5).to_bytes(4, "little") + b"12345",  # REDO must be 4 bytes
        ((7 + 42) << 24 | 1).to_bytes(4, "little") + b"x",  # NOOP must be empty
        ((7 + 2) << 24 | 6000).to_bytes(4, "little"),  # text message too long
        (0x06000000).to_bytes(4, "little"),  # tag -1
    ],
)
def test_frame_decoder_rejects(bad: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(bad)
    with pytest.raises(WireError):
        list(dec)


def test_frame_decoder_limits() -> None:
    dec = FrameDecoder(max_data_len=1024)
    dec.feed(encode_frame(Msg.DATA, b"x" * 2000))
    with pytest.raises(WireError):
        list(dec)
    dec = FrameDecoder(allowed=frozenset({Msg.DATA}))
    dec.feed(encode_frame(Msg.INFO, b"hi"))
    with pytest.raises(WireError):
        list(dec)
    dec = FrameDecoder()
    dec.feed(encode_frame(Msg.DATA, b"abcdef")[:7])
    assert b"".join(e.data for e in dec if isinstance(e, DataEvent)) == b"abc"
    with pytest.raises(TruncatedError):
        dec.close()


# --- sum head, block sums, tokens -------------------------------------------


def test_sum_head() -> None:
    head = SumHead(5, 700, 2, 200)
    enc = encode_sum_head(head, 31)
    assert enc == bytes.fromhex("05000000bc02000002000000c8000000")
    assert decode_sum_head(enc, 0, 31) == (head, 16)
    old = encode_sum_head(head, 26)
    assert len(old) == 12
    assert decode_sum_head(old, 0, 26, csum_length=2) == (head, 12)
    for bad in (SumHead(-1, 700, 2, 0), SumHead(1, 0, 2, 0), SumHead(1, 700, 17, 0),
                SumHead(1, 700, 2, 701), SumHead(1, 1 << 18, 2, 0)):
        with pytest.raises(WireError):
            decode_sum_head(encode_sum_head(bad, 31), 0, 31)
    # Below 30 blocks may be as large as 2**29.
    assert decode_sum_head(encode_sum_head(SumHead(1, 1 << 18, 2, 0), 29), 0, 29)[0].blength


def test_block_sums_roundtrip() -> None:
    sum1 = [0, 0xFFFFFFFF, 12345]
    strong = b"aabbcc"
    enc = encode_block_sums(sum1, strong, 2)
    assert len(enc) == 18
    assert decode_block_sums(enc, 0, 3, 2) == (sum1, strong, 18)
    with pytest.raises(TruncatedError):
        decode_block_sums(enc[:-1], 0, 3, 2)


def test_tokens() -> None:
    big = bytes(70_000)
    stream = encode_token(b"abc") + encode_token(3) + encode_token(big) + encode_token(None)
    r = Reader(stream)
    got = []
    while (tok := r.token()) is not END:
        got.append(tok)
    assert got == [b"abc", 3, bytes(32768), bytes(32768), bytes(70_000 - 65536)]
    assert encode_token(0) == b"\xff\xff\xff\xff"
    with pytest.raises(WireError):
        decode_token(encode_int32(1 << 30) + b"x")


def test_reader_rolls_back_on_truncation() -> None:
    r = Reader(encode_int32(7) + encode_varint(300)[:1])
    assert r.int32() == 7
    with pytest.raises(TruncatedError):
        r.varint()
    r.feed(encode_varint(300)[1:])
    assert r.varint() == 300
    assert r.at_end()


# --- recorded rsync traffic --------------------------------------------------


def fixtures() -> list[str]:
    return sorted(p.name[: -len(".json")] for p in FIXTURES.glob("*.json"))


def test_fixtures_present() -> None:
    assert {"push30", "pull30", "push31", "pull31"} <= set(fixtures())


def parse_preamble(fix: str) -> tuple[dict, Reader, Reader]:
    """Version exchange, compat flags, name lists and seed of one fixture."""
    meta = json.loads((FIXTURES / f"{fix}.json").read_text())
    proto = meta["protocol"]
    c2s = Reader((FIXTURES / f"{fix}.c2s.bin").read_bytes(), proto)
    s2c = Reader((FIXTURES / f"{fix}.s2c.bin").read_bytes(), proto)
    assert c2s.int32() == proto  # client honours --protocol
    assert s2c.int32() == 32  # server speaks its own newest version
    explicit = any(o.startswith("--checksum-choice") for o in meta["client_options"])
    if proto >= 30:
        flags = s2c.varint()
        assert "e." in meta["server_command"]
        assert flags == 0x1FF  # every CF_* bit: the client sent e.iLsfxCIvu
        if not explicit:  # CF_VARINT_FLIST_FLAGS: both send name lists
            server_list = parse_name_list(s2c.vstring())
            client_list = parse_name_list(c2s.vstring())
            assert server_list == ["xxh128", "xxh3", "xxh64", "md5", "md4", "sha1", "none"]
            assert client_list == server_list[:-1]  # a client leaves out "none"
    assert s2c.int32() == meta["checksum_seed"]
    return meta, c2s, s2c


@pytest.mark.parametrize("fix", fixtures())
def test_fixture_streams_parse(fix: str) -> None:
    meta, c2s, s2c = parse_preamble(fix)
    proto = meta["protocol"]
    # server->client is multiplexed from here on, for every protocol >= 23.
    dec = FrameDecoder()
    dec.feed(s2c.bytes(s2c.remaining))
    events = list(dec)
    dec.close()
    assert dec.frames > 0
    assert any(isinstance(e, DataEvent) for e in events)
    # client->server is multiplexed only from protocol 30.
    if proto >= 30:
        dec = FrameDecoder()
        dec.feed(c2s.bytes(c2s.remaining))
        c_events = list(dec)
        dec.close()
        assert all(isinstance(e, DataEvent) for e in c_events)
    else:
        assert c2s.remaining > 0
