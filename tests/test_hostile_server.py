"""``netsync --server`` (what ssh starts for a stock client) against a hostile client.

Each case speaks the protocol correctly up to one stage, then sends a crafted value.
The server must answer with rsync's error (as a multiplexed message, which is what a
real client would print) and exit code, without a traceback, a hang or unbounded
memory, and without writing outside its destination.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import hostile_peer as hp
from netsync.flist_codec import FlistDecoder
from netsync.wire import Msg, encode_int32

ITEM_TRANSFER = 1 << 15
ITEM_XNAME_FOLLOWS = 1 << 12


def _tree(tmp_path: Path) -> None:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "f").write_bytes(b"hello world\n" * 100)
    (tmp_path / "dst").mkdir()
    (tmp_path / "outside").mkdir()


def _run(tmp_path: Path, args: list[str], am_sender: bool,
         attack: Callable[[hp.EvilClient], None], timeout: float = 60,
         inc_recurse: bool = False) -> tuple[hp.Child, bytes]:
    """Start the server, let ``attack`` talk to it, then read until it hangs up."""
    _tree(tmp_path)
    child = hp.start_server(tmp_path, *args)
    client = hp.EvilClient.on_child(child, am_sender=am_sender)
    try:
        client.handshake(inc_recurse=inc_recurse)
        attack(client)
        client.flush()
    except Exception:  # noqa: BLE001 - a server hanging up on a lie is the expected end
        pass
    text = client.drain() if client.io is not None else b""
    hp.finish(child, timeout)
    return child, text + child.stderr


def _assert_clean(child: hp.Child, text: bytes, code: int, message: bytes) -> None:
    assert child.returncode == code, text
    assert b"Traceback" not in text and b"internal error" not in text, text
    assert message in text, text
    if code != 12:  # a broken stream gets no exit line (rsync's log_exit over a dead link)
        assert f"(code {code})".encode() in text, text
    assert child.maxrss_kb < hp.MAX_RSS_KB, f"peak RSS {child.maxrss_kb} kB"


def _no_escape(tmp_path: Path) -> None:
    assert list((tmp_path / "outside").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()
                  if not p.name.startswith("hostile-stderr-")) == ["dst", "outside", "src"]
    assert [p.name for p in (tmp_path / "dst").rglob(".*")] == []  # no temp file left


# ---------------------------------------------------------------------------
# the server receives (the client pushes)

PUSH = ["-rl", "-e.LsfxCIvu", "--timeout=20", ".", "dst/"]
D = stat.S_IFDIR | 0o755


def _flist(*entries, **kw) -> Callable[[hp.EvilClient], None]:
    def attack(c: hp.EvilClient) -> None:
        c.send(hp.flist_bytes(c.encoder(**kw), list(entries)))
    return attack


def _raw(make: Callable[[hp.EvilClient], bytes]) -> Callable[[hp.EvilClient], None]:
    return lambda c: c.send(make(c))


def _one_file_then(tail: Callable[[hp.EvilClient], bytes]) -> Callable[[hp.EvilClient], None]:
    """A good list with one 10-byte file "f", then whatever ``tail`` sends as its data."""
    def attack(c: hp.EvilClient) -> None:
        c.send(hp.flist_bytes(c.encoder(), [hp.entry(b".", D), hp.entry(b"f", size=10)]))
        c.flush()
        c.send(tail(c))
    return attack


def _huge_literal(c: hp.EvilClient) -> bytes:
    assert c.io is not None
    c.io.write_ndx(1)
    c.io.write_shortint(ITEM_TRANSFER)
    return b"\0" * 16 + encode_int32(0x7FFFFFFF) + b"x" * (4 << 20)


def _half_file(c: hp.EvilClient) -> bytes:
    assert c.io is not None
    c.io.write_ndx(1)
    c.io.write_shortint(ITEM_TRANSFER)
    c.send(b"\0" * 16 + encode_int32(5) + b"abcde")
    c.flush()
    c.hang_up()  # the connection drops in the middle of the file
    return b""


def _bad_ndx(c: hp.EvilClient) -> bytes:
    assert c.io is not None
    c.io.write_ndx(5000)
    c.io.write_shortint(ITEM_TRANSFER)
    return b""


PUSH_CASES = {
    "dotdot-name": (_flist(hp.entry(b".", D), hp.entry(b"../x", size=3)), 4,
                    b"ABORTING due to unsafe pathname from sender: ../x"),
    "absolute-name": (_flist(hp.entry(b".", D), hp.entry(b"/etc/evil", size=3)), 4,
                      b"ABORTING due to unsafe pathname from sender: /etc/evil"),
    "symlink-parent": (_flist(hp.entry(b".", D),
                              hp.entry(b"d", stat.S_IFLNK | 0o777, link=b"../outside"),
                              hp.entry(b"d/pwn", size=3), preserve_links=True), 2,
                       b"ABORTING due to invalid path from sender: d/pwn"),
    # The name goes raw to the client, which escapes it as it prints it (log.c rwrite()).
    "bad-mode": (_flist(hp.entry(b".", D), hp.entry(b"bad\x01\xffname", 0o170644)), 2,
                 b"netsync: invalid file mode 0170644 for bad\x01\xffname [Receiver]\n"),
    "long-name": (_raw(lambda c: hp.long_name_record(c.encoder(), 1 << 30)), 22,
                  b"overflow: xflags=0x40 l1=0 l2=1073741824 in recv_file_entry"),
    "bad-ndx": (_one_file_then(_bad_ndx), 2, b"Invalid file index: 5000"),
    "huge-literal": (_one_file_then(_huge_literal), 2,
                     b"sender sent more data than the file size"),
    "half-file": (_one_file_then(_half_file), 12, b"connection unexpectedly closed"),
    "bad-tag": (_raw(lambda c: (0x7F << 24 | 4).to_bytes(4, "little") + b"abcd"), 12,
                b"unexpected tag 120"),
}


def _send_frame_raw(c: hp.EvilClient, data: bytes) -> None:
    assert c.io is not None
    c.io.flush()
    c.io._out += data  # below the framing: a header the encoder would never make


@pytest.mark.parametrize("case", sorted(PUSH_CASES))
def test_receiver_refuses(tmp_path: Path, case: str) -> None:
    attack, code, message = PUSH_CASES[case]
    if case == "bad-tag":
        def attack(c: hp.EvilClient) -> None:  # noqa: F811 - raw bytes, not a frame
            _send_frame_raw(c, (0x7F << 24 | 4).to_bytes(4, "little") + b"abcd")
    child, text = _run(tmp_path, PUSH, True, attack)
    _assert_clean(child, text, code, message)
    _no_escape(tmp_path)
    assert list((tmp_path / "dst").iterdir()) in ([], [tmp_path / "dst" / "d"])


def test_receiver_refuses_sub_list_after_the_last_list_was_freed(tmp_path: Path) -> None:
    """Incremental recursion: a forged NDX_DONE frees the only list (receiver.c
    recv_files()), so the sub-list that follows has none to join (flist.c
    recv_file_list(); rsync's proto-subflist-freed)."""
    from netsync.wire import NDX_DONE, NDX_FLIST_OFFSET

    def attack(c: hp.EvilClient) -> None:
        assert c.io is not None and c.neg.compat_flags & 1  # type: ignore[attr-defined]
        c.send(hp.flist_bytes(c.encoder(), [hp.entry(b".", D), hp.entry(b"d", D)]))
        c.io.write_ndx(NDX_DONE)
        c.io.write_ndx(NDX_FLIST_OFFSET - 1)  # "d"'s list
        c.send(hp.flist_bytes(c.encoder(), [hp.entry(b"d/x", size=3)]))

    child, text = _run(tmp_path, ["-r", "-e.iLsfxCIvu", "--timeout=20", ".", "dst/"], True,
                       attack, inc_recurse=True)
    _assert_clean(child, text, 2, b"netsync: refusing sub-flist after final flist was freed\n")
    _no_escape(tmp_path)
    assert not (tmp_path / "dst" / "d" / "x").exists()


def test_receiver_file_list_flood_is_bounded_by_max_alloc(tmp_path: Path) -> None:
    child, text = _run(tmp_path, ["-r", "-e.LsfxCIvu", "--max-alloc=16M", "--timeout=20",
                                  ".", "dst/"], True,
                       _raw(lambda c: hp.flood_records(c.encoder(), 300_000)))
    _assert_clean(child, text, 22, b"ERROR: out of memory in flist_expand")


def test_receiver_uid_name_flood(tmp_path: Path) -> None:
    def attack(c: hp.EvilClient) -> None:
        enc = c.encoder(preserve_uid=True)
        names = b"".join(hp.encode_varint(i) + b"\xff" + b"n" * 255 for i in range(1, 100_000))
        c.send(enc.encode_entry(hp.entry(b"f"), 0) + enc.end_marker() + names)
    child, text = _run(tmp_path, ["-ro", "-e.LsfxCIvu", "--timeout=20", ".", "dst/"], True,
                       attack)
    _assert_clean(child, text, 2, b"too many uid/gid names from sender")


def test_receiver_filter_rule_overflow(tmp_path: Path) -> None:
    """--delete makes the receiver read the client's rules: a 1 GiB rule is refused."""
    child, text = _run(tmp_path, ["-r", "--delete", "-e.LsfxCIvu", "--timeout=20", ".",
                                  "dst/"], True,
                       _raw(lambda c: encode_int32(1 << 30) + b"- " * 1000))
    _assert_clean(child, text, 2, b"overflow: filter rule of 1073741824 bytes")


# ---------------------------------------------------------------------------
# the server sends (the client pulls)

PULL = ["--sender", "-r", "-e.LsfxCIvu", "--timeout=20", ".", "src/"]


def _read_flist(c: hp.EvilClient) -> list[bytes]:
    io = c.io
    assert io is not None and c.neg is not None
    c.send(hp.empty_filter_list())
    c.flush()
    dec = FlistDecoder(c.neg.protocol, compat_flags=c.neg.compat_flags)  # type: ignore[attr-defined]
    return hp.read_flist(io, dec)


def _request(ndx_of: Callable[[list[bytes]], int], raw: bytes,
             iflags: int = ITEM_TRANSFER) -> Callable[[hp.EvilClient], None]:
    def attack(c: hp.EvilClient) -> None:
        names = _read_flist(c)
        assert names == [b".", b"f", b"sub"]
        assert c.io is not None
        c.io.write_ndx(ndx_of(names))
        c.io.write_shortint(iflags)
        c.send(raw)
    return attack


def _sum_head(count: int, blength: int, s2length: int, remainder: int) -> bytes:
    return b"".join(encode_int32(v) for v in (count, blength, s2length, remainder))


def _f(names: list[bytes]) -> int:
    return names.index(b"f")


PULL_CASES = {
    # CVE-2024-12084: a strong-sum length beyond the digest (xxh128: 16 bytes).
    "s2length-over-digest": (_request(_f, _sum_head(1, 700, 17, 3) + b"\0" * 21), 2,
                             b"Invalid checksum length 17 [sender]"),
    "s2length-64": (_request(_f, _sum_head(1, 700, 64, 3) + b"\0" * 68), 2,
                    b"Invalid checksum length 64 [sender]"),
    "blength-over-max": (_request(_f, _sum_head(1, (1 << 17) + 1, 16, 3)), 2,
                         b"Invalid block length 131073 [sender]"),
    "zero-blength": (_request(_f, _sum_head(5, 0, 16, 0)), 2,
                     b"Invalid zero block length [sender]"),
    "remainder-over-blength": (_request(_f, _sum_head(1, 700, 16, 701)), 2,
                               b"Invalid remainder length 701 [sender]"),
    "negative-count": (_request(_f, _sum_head(-1, 700, 16, 3)), 2,
                       b"Invalid checksum count -1 [sender]"),
    "huge-count": (_request(_f, _sum_head(0x7FFFFFFF, 700, 16, 3)), 22,
                   b"ERROR: out of memory in receive_sums [sender]"),
    "index-out-of-range": (_request(lambda n: 77, b""), 2, b"Invalid file index: 77"),
    "transfer-of-a-directory": (_request(lambda n: n.index(b"sub"), b""), 2,
                                b"refusing transfer of non-file index"),
    "over-long-xname": (_request(_f, b"\x93\x88" + b"x" * 5000,
                                 ITEM_TRANSFER | ITEM_XNAME_FOLLOWS), 2,
                        b"over-long vstring received"),
}


@pytest.mark.parametrize("case", sorted(PULL_CASES))
def test_sender_refuses(tmp_path: Path, case: str) -> None:
    attack, code, message = PULL_CASES[case]
    child, text = _run(tmp_path, PULL, False, attack)
    _assert_clean(child, text, code, message)


def test_sum_count_flood_within_max_alloc_is_refused(tmp_path: Path) -> None:
    """--max-alloc bounds the block sums the sender will hold (count * sum_buf)."""
    child, text = _run(tmp_path, [*PULL[:-2], "--max-alloc=1M", ".", "src/"], False,
                       _request(_f, _sum_head(50_000, 700, 16, 3)))
    _assert_clean(child, text, 22, b"ERROR: out of memory in receive_sums [sender]")


@pytest.mark.parametrize("ndx", [-1, 3, 1 << 30])
def test_remove_source_files_success_for_a_file_not_in_the_list(tmp_path: Path,
                                                                 ndx: int) -> None:
    """MSG_SUCCESS names the file to delete: an index outside the list removes nothing
    (a negative one would have picked a file from the end of the list)."""
    def attack(c: hp.EvilClient) -> None:
        _read_flist(c)
        assert c.io is not None
        c.io.send_msg(Msg.SUCCESS, encode_int32(ndx))
    child, text = _run(tmp_path, [*PULL[:-2], "--remove-source-files", ".", "src/"], False,
                       attack)
    _assert_clean(child, text, 2, f"File-list index {ndx} not in 0 - 2 [sender]".encode())
    assert (tmp_path / "src" / "f").read_bytes() == b"hello world\n" * 100


def test_filter_rule_flood_is_bounded_by_max_alloc(tmp_path: Path) -> None:
    child, text = _run(tmp_path, [*PULL[:-2], "--max-alloc=1M", ".", "src/"], False,
                       _raw(lambda c: (encode_int32(3) + b"- a") * 5000))
    _assert_clean(child, text, 22, b"ERROR: out of memory in recv_filter_list [sender]")


# ---------------------------------------------------------------------------
# stalls and broken handshakes


def test_stalled_handshake_times_out(tmp_path: Path) -> None:
    _tree(tmp_path)
    child = hp.start_server(tmp_path, *PUSH[:2], "--timeout=2", ".", "dst/")
    hp.finish(child, 60)  # we never send our protocol version
    assert child.returncode == 30, child.stderr
    assert b"io timeout after 2 seconds -- exiting" in child.stderr
    assert b"Traceback" not in child.stderr


def test_stall_after_the_handshake_times_out(tmp_path: Path) -> None:
    child, text = _run(tmp_path, [*PULL[:3], "--timeout=2", ".", "src/"], False,
                       lambda c: None)
    _assert_clean(child, text, 30, b"io timeout after 2 seconds -- exiting")


@pytest.mark.parametrize(("version", "message"), [
    (1000, b"protocol version mismatch"),
    (-5, b"protocol version mismatch"),
])
def test_bad_protocol_version(tmp_path: Path, version: int, message: bytes) -> None:
    _tree(tmp_path)
    child = hp.start_server(tmp_path, *PUSH)
    assert child.proc.stdin is not None
    child.proc.stdin.write(encode_int32(version))
    child.proc.stdin.flush()
    hp.finish(child, 60)
    assert child.returncode == 2, child.stderr
    assert message in child.stderr and b"Traceback" not in child.stderr


def test_over_long_negotiation_string(tmp_path: Path) -> None:
    _tree(tmp_path)
    child = hp.start_server(tmp_path, *PUSH)
    assert child.proc.stdin is not None
    child.proc.stdin.write(encode_int32(31) + b"\xff\xff" + b"x" * 40000)
    child.proc.stdin.flush()
    hp.finish(child, 60)
    assert child.returncode == 12, child.stderr
    assert b"overflow in read_vstring" in child.stderr and b"Traceback" not in child.stderr
