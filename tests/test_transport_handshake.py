"""The client side of the protocol start against recorded stock-rsync traffic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netsync.options import parse_args
from netsync.transport import TransportError
from netsync.transport.handshake import (
    CF_INC_RECURSE,
    CF_VARINT_FLIST_FLAGS,
    ClientHandshake,
    client_name_list,
)
from netsync.transport.rsh import server_args
from netsync.wire import encode_varint, encode_vstring

FIXTURES = Path(__file__).parent / "fixtures"
RECORDINGS = sorted(p.stem for p in FIXTURES.glob("*.json")
                    if (FIXTURES / f"{p.stem}.s2c.bin").exists())


@pytest.fixture(autouse=True)
def _all_options_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    # The transport must build the right vector for options the engine may not support yet.
    import netsync.options

    monkeypatch.setattr(netsync.options, "NOT_IMPLEMENTED", set())


def _load(name: str) -> tuple[dict, bytes, bytes]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    return (meta, (FIXTURES / f"{name}.c2s.bin").read_bytes(),
            (FIXTURES / f"{name}.s2c.bin").read_bytes())


def _client(meta: dict) -> tuple[object, bool, list[str]]:
    push = meta["direction"] == "push"
    args = ["SRC/", "localhost:DST/"] if push else ["localhost:SRC/", "DST/"]
    return parse_args(meta["client_options"] + args), push, ["DST/" if push else "SRC/"]


@pytest.mark.parametrize("name", RECORDINGS)
def test_handshake_matches_recorded_rsync(name: str) -> None:
    meta, c2s, s2c = _load(name)
    opts, push, _paths = _client(meta)
    hs = ClientHandshake.from_options(opts, am_sender=push)
    sent = hs.data_to_send()
    # Feed the server's stream a byte at a time: the state machine must never over-read.
    pos = 0
    while not hs.done:
        hs.receive_data(s2c[pos:pos + 1])
        pos += 1
        sent += hs.data_to_send()
    neg = hs.result
    assert neg is not None
    assert hs.leftover == b""
    assert neg.protocol == meta["protocol"]
    assert neg.checksum_seed == meta["checksum_seed"] == 12345
    # What we wrote is exactly what stock rsync's client wrote before the file data.
    assert c2s.startswith(sent)
    if neg.protocol < 30:
        assert sent == neg.protocol.to_bytes(4, "little")
        assert neg.compat_flags == 0 and not neg.mplex_out
    else:
        assert neg.varint_flist_flags and neg.mplex_out
    assert neg.mplex_in
    choice = next((o.split("=", 1)[1] for o in meta["client_options"]
                   if o.startswith("--checksum-choice=")), None)
    if choice:
        assert neg.checksum == choice and not neg.checksum_negotiated
    elif neg.protocol >= 30:
        assert neg.checksum == "xxh128" and neg.checksum_negotiated
    else:
        assert neg.checksum == "md4_old"
    zc = next((o.split("=", 1)[1] for o in meta["client_options"]
               if o.startswith("--compress-choice=")), None)
    assert neg.compress == zc


@pytest.mark.parametrize("name", RECORDINGS)
def test_server_args_match_recorded_rsync(name: str) -> None:
    meta, _c2s, _s2c = _load(name)
    opts, push, paths = _client(meta)
    built = server_args(opts, push, paths)
    assert ["rsync", *built.argv] == meta["server_command"].split(" ")
    assert built.secluded == []


def _server_stream(protocol: int, flags: int, checksums: bytes | None,
                   compress: bytes | None = None, seed: int = 7) -> bytes:
    out = protocol.to_bytes(4, "little")
    if protocol >= 30:
        out += encode_varint(flags)
        if checksums is not None:
            out += encode_vstring(checksums)
        if compress is not None:
            out += encode_vstring(compress)
    return out + seed.to_bytes(4, "little", signed=True)


def test_negotiates_strongest_common_names() -> None:
    hs = ClientHandshake(32, compress=True, checksum_names=["xxh128", "md5", "md4"],
                         compress_names=["zstd", "lz4", "zlibx", "zlib"])
    sent = hs.data_to_send()
    assert sent == (32).to_bytes(4, "little")
    hs.receive_data(_server_stream(31, CF_VARINT_FLIST_FLAGS | CF_INC_RECURSE,
                                   b"md4 md5 none", b"zlib zlibx none", seed=-5))
    neg = hs.result
    assert neg is not None
    assert neg.protocol == 31 and neg.remote_protocol == 31
    assert neg.checksum == "md5" and neg.compress == "zlibx"
    assert neg.checksum_seed == -5 and neg.inc_recurse
    assert hs.data_to_send() == encode_vstring(b"xxh128 md5 md4") + encode_vstring(
        b"zstd lz4 zlibx zlib")


def test_without_varint_flags_names_are_implied() -> None:
    hs = ClientHandshake(31, compress=True)
    hs.receive_data(_server_stream(30, 0, None))
    assert hs.result is not None
    assert hs.result.checksum == "md5" and hs.result.compress == "zlib"
    assert hs.data_to_send() == (31).to_bytes(4, "little")  # no name lists sent


def test_no_common_checksum_is_exit_4() -> None:
    hs = ClientHandshake(32, checksum_names=["xxh128"])
    with pytest.raises(TransportError) as err:
        hs.receive_data(_server_stream(32, CF_VARINT_FLIST_FLAGS, b"md4 none"))
    assert err.value.code == 4
    assert "Failed to negotiate a checksum choice." in str(err.value)


@pytest.mark.parametrize("garbage", [b"Welcome to host\n", b"\x00\x00\x00\x00",
                                     (41).to_bytes(4, "little")])
def test_dirty_shell_is_protocol_mismatch(garbage: bytes) -> None:
    hs = ClientHandshake(32)
    with pytest.raises(TransportError) as err:
        hs.receive_data(garbage)
    assert err.value.code == 2
    assert "protocol version mismatch -- is your shell clean?" in str(err.value)


def test_too_old_server_is_refused() -> None:
    hs = ClientHandshake(32)
    with pytest.raises(TransportError) as err:
        hs.receive_data((26).to_bytes(4, "little"))
    assert err.value.code == 2


def test_forced_protocol_out_of_range() -> None:
    with pytest.raises(TransportError) as err:
        ClientHandshake(26)
    assert err.value.code == 2
    # A higher one is sent as asked; the lower of the two is used (compat.c), and only a
    # settled protocol above ours fails.
    hs = ClientHandshake(40)
    assert bytes(hs._out[:4]) == (40).to_bytes(4, "little")
    with pytest.raises(TransportError) as err:
        hs.receive_data((33).to_bytes(4, "little"))
    assert err.value.message == "--protocol must be no more than 32 on the Client."
    with pytest.raises(TransportError):
        ClientHandshake(40, daemon_protocol=33)


def test_inc_recurse_refused_when_not_offered() -> None:
    hs = ClientHandshake(31, allow_inc_recurse=False)
    with pytest.raises(TransportError) as err:
        hs.receive_data(_server_stream(31, CF_INC_RECURSE | CF_VARINT_FLIST_FLAGS, b"md5"))
    assert err.value.code == 1


def test_daemon_mode_skips_version_exchange() -> None:
    hs = ClientHandshake(32, daemon_protocol=31, remote_protocol=32)
    assert hs.data_to_send() == b""
    hs.receive_data(encode_varint(CF_VARINT_FLIST_FLAGS) + encode_vstring(b"xxh64 md5")
                    + (9).to_bytes(4, "little"))
    assert hs.result is not None
    assert hs.result.protocol == 31 and hs.result.checksum == "xxh64"
    assert hs.data_to_send() == encode_vstring(b"xxh128 xxh3 xxh64 md5 md4 sha1")


def test_oversized_name_list_is_stream_error() -> None:
    hs = ClientHandshake(32)
    with pytest.raises(TransportError) as err:
        hs.receive_data((32).to_bytes(4, "little") + encode_varint(CF_VARINT_FLIST_FLAGS)
                        + b"\x81\x00")
    assert err.value.code == 12


def test_env_name_lists() -> None:
    known = ("xxh128", "xxh3", "xxh64", "md5", "md4", "sha1", "none")
    assert client_name_list(None, known) == ["xxh128", "xxh3", "xxh64", "md5", "md4", "sha1"]
    assert client_name_list("md5 xxhash bogus md5&md4", known) == ["md5", "xxh64"]
