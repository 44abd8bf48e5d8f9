"""The file-list codec against recorded rsync 3.5.0 traffic, in round trips, and
against hostile input."""

from __future__ import annotations

import json
import os
import random
import stat
from pathlib import Path

import pytest

from netsync import wire
from netsync.checksum import FileSum, digest_len, negotiate
from netsync.errors import RERR_MALLOC, RERR_PROTOCOL, RERR_UNSUPPORTED
from netsync.flist import (
    FLAG_CONTENT_DIR,
    FLAG_DUPLICATE,
    FLAG_HLINK_FIRST,
    FLAG_HLINK_FOLLOWER,
    FLAG_IMPLIED_DIR,
    FLAG_TOP_DIR,
    FileEntry,
)
from netsync.flist_codec import (
    CF_ID0_NAMES,
    CF_INC_RECURSE,
    CF_SAFE_FLIST,
    CF_VARINT_FLIST_FLAGS,
    XMIT_HLINKED,
    XMIT_LONG_NAME,
    XMIT_SAME_NAME,
    XMIT_TOP_DIR,
    EndOfList,
    FlistDecoder,
    FlistEncoder,
    clean_fname,
    sort_and_clean,
)

FIXTURES = Path(__file__).parent / "fixtures"
NS = 10**9

# ---------------------------------------------------------------------------
# Recorded traffic


class Recording:
    """A fixture's sender stream (demultiplexed) plus what the decoder needs."""

    def __init__(self, name: str) -> None:
        base = FIXTURES / "flist" if name.startswith("flist") else FIXTURES
        self.meta = json.loads((base / f"{name}.json").read_text())
        c2s = wire.Reader((base / f"{name}.c2s.bin").read_bytes())
        s2c = wire.Reader((base / f"{name}.s2c.bin").read_bytes())
        self.protocol = proto = self.meta["protocol"]
        assert c2s.int32() >= proto and s2c.int32() >= proto
        self.compat = 0
        self.checksum = "md4" if proto < 30 else "md5"
        if proto >= 30:
            self.compat = s2c.varint()
            choice = [o.split("=", 1)[1] for o in self.meta["client_options"]
                      if o.startswith("--checksum-choice=")]
            if choice:  # no negotiation then
                self.checksum = choice[0]
            elif self.compat & CF_VARINT_FLIST_FLAGS:
                client = c2s.vstring().decode().split()
                server = s2c.vstring().decode().split()
                self.checksum = negotiate(client, server)
        s2c.int32()  # checksum seed
        push = self.meta["direction"] == "push"
        src = c2s if push else s2c
        rest = bytes(src.buf[src.pos :])
        if (proto >= 30) if push else True:
            frames = wire.FrameDecoder()
            frames.feed(rest)
            rest = b"".join(ev.data for ev in frames if isinstance(ev, wire.DataEvent))
        self.data = rest
        flags = next(a for a in self.meta["server_command"].split()[2:]
                     if a.startswith("-") and not a.startswith("--"))
        letters = flags.split("e.")[0]
        opts = self.meta["client_options"]
        self.options = dict(
            preserve_uid="o" in letters,
            preserve_gid="g" in letters,
            preserve_links="l" in letters,
            preserve_devices="D" in letters,
            preserve_specials="D" in letters,
            preserve_hard_links="H" in letters,
            always_checksum="-c" in opts,
            checksum_len=digest_len(self.checksum),
        )

    def decoder(self) -> FlistDecoder:
        return FlistDecoder(self.protocol, compat_flags=self.compat, **self.options)

    def encoder(self) -> FlistEncoder:
        users = {int(k): v.encode() for k, v in self.meta.get("user_names", {"0": "root"}).items()}
        groups = {int(k): v.encode() for k, v in self.meta.get("group_names", {"0": "root"}).items()}
        return FlistEncoder(
            self.protocol, compat_flags=self.compat, user_names=users, group_names=groups,
            **self.options,
        )


def decode_recording(rec: Recording) -> tuple[FlistDecoder, list[tuple[int, list[FileEntry]]], int]:
    """Decode the first list and, with incremental recursion, the sub-lists the
    sender sends right after it (each announced by NDX_FLIST_OFFSET - dir_ndx).

    Returns the decoder, [(ndx announcing the list or 0, entries)] and the
    offset just past the last list (past NDX_FLIST_EOF with inc-recursion).
    """
    dec = rec.decoder()
    dec.feed(rec.data)
    got = dec.entries_until_end()
    assert got is not None, "first file list is incomplete"
    lists = [(0, list(got[0]))]
    assert got[1] == EndOfList(0)
    if dec.inc_recurse:
        ndxs = wire.NdxDecoder(rec.protocol)
        while True:
            ndx = dec.reader.ndx(ndxs)
            if ndx == wire.NDX_FLIST_EOF:
                break
            dec.begin_sublist(ndx)
            got = dec.entries_until_end()
            assert got is not None
            lists.append((ndx, list(got[0])))
    return dec, lists, dec.reader.pos


def encode_recording(rec: Recording, lists: list[tuple[int, list[FileEntry]]],
                     dev_ino: dict[bytes, tuple[int, int]]) -> bytes:
    enc = rec.encoder()
    ndxs = wire.NdxEncoder(rec.protocol)
    out = bytearray()
    start = enc.ndx_start
    for i, (ndx, entries) in enumerate(lists):
        if i:
            out += ndxs.encode(ndx)
            start += len(lists[i - 1][1]) + 1
            enc.start_list(start)
        for j, e in enumerate(entries):
            out += enc.encode_entry(e, start + j, dev_ino.get(e.name))
        out += enc.end(0)
    if enc.inc_recurse:
        out += ndxs.encode(wire.NDX_FLIST_EOF)
    return bytes(out)


BASIC = ["push27", "push29", "push30", "pull30", "push31", "pull31", "push31-md5",
         "push31-xxh64"]
RICH = ["flist27", "flist27-c", "flist28", "flist29", "flist30", "flist31", "flist29-c", "flist30-c", "flist31-c",
        "flist31-noinc"]


@pytest.mark.parametrize("name", BASIC)
def test_basic_fixtures_decode_to_the_recorded_tree(name: str) -> None:
    rec = Recording(name)
    _, lists, _ = decode_recording(rec)
    got = {e.name: e for _, entries in lists for e in entries}
    assert sorted(got) == [b".", b"data.bin", b"hello.txt", b"sub", b"sub/small.txt"]
    assert got[b"data.bin"].size == 3000
    assert got[b"hello.txt"].size == len(b"hello, world\n")
    assert got[b"sub/small.txt"].size == 100
    for n in (b".", b"sub"):
        assert stat.S_ISDIR(got[n].mode)
    for e in got.values():
        assert e.mtime_ns == 1_700_000_000 * NS
    assert got[b"."].flags & FLAG_TOP_DIR
    assert stat.S_IMODE(got[b"data.bin"].mode) == 0o644


@pytest.mark.parametrize("name", BASIC + RICH)
def test_encoder_reproduces_rsyncs_bytes(name: str) -> None:
    rec = Recording(name)
    _, lists, end = decode_recording(rec)
    dev_ino = {
        bytes.fromhex(t["name"]): (t["dev"], t["ino"])
        for t in rec.meta.get("tree_entries", [])
    }
    assert encode_recording(rec, lists, dev_ino) == rec.data[:end]


def _expected_mtime(t: dict[str, int], protocol: int) -> int:
    sec, nsec = divmod(t["mtime_ns"], NS)
    if protocol < 30:
        sec &= 0xFFFFFFFF  # written as int32, read back with read_uint()
    return sec * NS + (nsec if protocol >= 31 else 0)


@pytest.mark.parametrize("name", RICH)
def test_rich_fixtures_decode_to_the_recorded_tree(name: str) -> None:
    rec = Recording(name)
    proto = rec.protocol
    dec, lists, _ = decode_recording(rec)
    entries = [e for _, es in lists for e in es]
    got = {e.name: e for e in entries}
    tree = {bytes.fromhex(t["name"]): t for t in rec.meta["tree_entries"]}
    assert sorted(got) == sorted(tree)
    assert any(len(n) > 255 for n in got) and b"caf\xe9-latin1.txt" in got
    for n, t in tree.items():
        e = got[n]
        assert e.mode == t["mode"], n
        assert e.mtime_ns == _expected_mtime(t, proto), n
        assert (e.uid, e.gid) == (t["uid"], t["gid"]), n
        mode = t["mode"]
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            assert e.rdev == t["rdev"] and e.size == 0
        else:
            assert e.size == t["size"], n
        if stat.S_ISLNK(mode):
            assert e.link == bytes.fromhex(t["link"])
        if rec.options["always_checksum"] and stat.S_ISREG(mode):
            fs = FileSum(rec.checksum, 0, proto)
            fs.update(bytes.fromhex(t["content"]))
            assert e.checksum == fs.digest(), n
        else:
            assert e.checksum is None
    assert got[b"."].flags & FLAG_TOP_DIR and got[b"."].flags & FLAG_CONTENT_DIR
    assert all(got[n].flags & FLAG_CONTENT_DIR for n in (b"dir", b"dir/deep", b"empty_dir"))
    if b"big.sparse" in got:
        assert got[b"big.sparse"].size > 4 << 30
    # Hard links: the three names of a.dat form one group with one first member.
    group = [got[n] for n in (b"hardlink1", b"dir/a.dat", b"dir/deep/hardlink2")]
    assert len({e.hlink for e in group}) == 1
    assert sum(bool(e.flags & FLAG_HLINK_FIRST) for e in group) == 1
    assert sum(bool(e.flags & FLAG_HLINK_FOLLOWER) for e in group) == 2
    assert got[b"lonely_link"].flags & FLAG_HLINK_FIRST  # nlink 2, alone in the transfer
    if proto >= 28:
        assert not got[b"file.txt"].flags & (FLAG_HLINK_FIRST | FLAG_HLINK_FOLLOWER)
    # Owner names: rsync sends names for every id it knows (uid 0 too from 30).
    assert dec.uid_names.get(1) == b"daemon" and dec.uid_names.get(2) == b"bin"
    assert dec.gid_names.get(1) == b"daemon" and dec.gid_names.get(2) == b"bin"
    assert 4242 not in dec.uid_names and 4343 not in dec.gid_names
    assert (0 in dec.uid_names) == (proto >= 30)


def test_hlink_is_the_wire_index_of_the_groups_first_member() -> None:
    rec = Recording("flist31")
    _, lists, _ = decode_recording(rec)
    assert rec.compat & CF_INC_RECURSE and len(lists) > 1
    first = {e.name: e for e in lists[0][1]}[b"hardlink1"]
    # inc-recursion numbers the first list from 1.
    assert first.flags & FLAG_HLINK_FIRST and first.hlink == 1 + lists[0][1].index(first)
    followers = [e for _, es in lists[1:] for e in es if e.flags & FLAG_HLINK_FOLLOWER]
    assert {e.name for e in followers} == {b"dir/a.dat", b"dir/deep/hardlink2"}
    assert all(e.hlink == first.hlink and e.size == first.size for e in followers)


# ---------------------------------------------------------------------------
# Round trips


def sample_entries() -> list[FileEntry]:
    def fe(name: bytes, mode: int, size: int = 0, mtime_ns: int = 1_700_000_000 * NS,
           uid: int = 1000, gid: int = 1000, **kw: object) -> FileEntry:
        e = FileEntry(name, mode, size, mtime_ns, uid, gid)
        for k, v in kw.items():
            setattr(e, k, v)
        return e

    long_name = b"x" * 300 + b"/" + b"y" * 250
    out = [
        fe(b".", stat.S_IFDIR | 0o755, 4096, flags=FLAG_TOP_DIR | FLAG_CONTENT_DIR),
        fe(b"a.txt", stat.S_IFREG | 0o644, 12, checksum=b"A" * 16),
        fe(b"empty", stat.S_IFREG | 0o600, 0, uid=0, gid=0, checksum=b"E" * 16),
        fe(b"big", stat.S_IFREG | 0o644, (5 << 30) + 7, checksum=b"B" * 16),
        fe(b"nsec", stat.S_IFREG | 0o644, 1, mtime_ns=1_700_000_000 * NS + 999_999_999,
           checksum=b"N" * 16),
        fe(b"old", stat.S_IFREG | 0o644, 1, mtime_ns=-86400 * NS + 250_000_000,
           checksum=b"O" * 16),
        fe(b"zero-time", stat.S_IFREG | 0o644, 1, mtime_ns=0, checksum=b"Z" * 16),
        fe(b"caf\xe9\xff", stat.S_IFREG | 0o644, 3, uid=4242, gid=4343, checksum=b"C" * 16),
        fe(b"link", stat.S_IFLNK | 0o777, 5, link=b"a.txt"),
        fe(b"longlink", stat.S_IFLNK | 0o777, 4000, link=b"t" * 4000),
        fe(b"fifo", stat.S_IFIFO | 0o644),
        fe(b"sock", stat.S_IFSOCK | 0o755),
        fe(b"null", stat.S_IFCHR | 0o666, rdev=os.makedev(1, 3)),
        fe(b"sda300", stat.S_IFBLK | 0o660, rdev=os.makedev(8, 300)),
        fe(b"bigdev", stat.S_IFCHR | 0o600, rdev=os.makedev(4000, 1 << 19)),
        fe(b"h1", stat.S_IFREG | 0o644, 9, flags=FLAG_HLINK_FIRST, checksum=b"H" * 16),
        fe(b"h2", stat.S_IFREG | 0o644, 9, flags=FLAG_HLINK_FOLLOWER, checksum=b"H" * 16),
        fe(b"lonely", stat.S_IFREG | 0o644, 2, flags=FLAG_HLINK_FIRST, checksum=b"L" * 16),
        fe(b"dir", stat.S_IFDIR | 0o755, 4096, flags=FLAG_CONTENT_DIR),
        fe(b"dir/h3", stat.S_IFREG | 0o644, 9, flags=FLAG_HLINK_FOLLOWER, checksum=b"H" * 16),
        fe(b"dir/sub", stat.S_IFDIR | 0o700, 4096, uid=1, gid=2, flags=FLAG_CONTENT_DIR),
        fe(b"nocontent", stat.S_IFDIR | 0o755, 4096),
        fe(b"x" * 300, stat.S_IFDIR | 0o755, 4096, flags=FLAG_CONTENT_DIR),
        fe(long_name, stat.S_IFREG | 0o644, 1, checksum=b"X" * 16),
        fe(b"z" * 400, stat.S_IFREG | 0o644, 1, checksum=b"Y" * 16),
    ]
    first = next(i for i, e in enumerate(out) if e.name == b"h1")
    for i, e in enumerate(out):
        if e.flags & FLAG_HLINK_FIRST:
            e.hlink = i
        elif e.flags & FLAG_HLINK_FOLLOWER:
            e.hlink = first
    return out


CONFIGS = [
    (27, 0), (28, 0), (29, 0),
    (30, 0), (30, CF_SAFE_FLIST), (30, 0x1FF),
    (31, 0), (31, CF_VARINT_FLIST_FLAGS), (31, 0x1FF),
    (32, 0x1FF), (32, CF_VARINT_FLIST_FLAGS | CF_ID0_NAMES),
]
USERS = {0: b"root", 1000: b"alice", 1: b"daemon"}
GROUPS = {0: b"wheel", 1000: b"staff", 2: b"bin"}
OPTS = dict(
    preserve_uid=True, preserve_gid=True, preserve_links=True, preserve_devices=True,
    preserve_specials=True, preserve_hard_links=True, always_checksum=True, checksum_len=16,
)


def make_decoder(protocol: int, compat: int, **kw: object) -> FlistDecoder:
    """A decoder for one list holding a whole tree, numbered from 0 (a real
    incremental-recursion list holds one directory's entries)."""
    opts = {**OPTS, **kw}
    dec = FlistDecoder(protocol, compat_flags=compat, **opts)  # type: ignore[arg-type]
    dec.start_list(0)
    return dec


def roundtrip(protocol: int, compat: int, entries: list[FileEntry], io_error: int = 0,
              **kw: object) -> tuple[bytes, FlistDecoder, list[FileEntry], EndOfList]:
    opts = {**OPTS, **kw}
    enc = FlistEncoder(protocol, compat_flags=compat, user_names=USERS, group_names=GROUPS,
                       ndx_start=0, **opts)  # type: ignore[arg-type]
    data = b"".join(enc.encode_entry(e, i) for i, e in enumerate(entries)) + enc.end(io_error)
    dec = make_decoder(protocol, compat, **opts)
    dec.feed(data)
    got = dec.entries_until_end()
    assert got is not None
    assert dec.reader.remaining == 0
    return data, dec, got[0], got[1]


@pytest.mark.parametrize(("protocol", "compat"), CONFIGS)
def test_roundtrip_every_entry_type(protocol: int, compat: int) -> None:
    entries = sample_entries()
    _, dec, got, end = roundtrip(protocol, compat, entries)
    assert end == EndOfList(0)
    assert len(got) == len(entries)
    for want, e in zip(entries, got, strict=True):
        assert e.name == want.name
        assert e.mode == want.mode
        is_dev = stat.S_ISCHR(want.mode) or stat.S_ISBLK(want.mode)
        assert e.size == (0 if is_dev else want.size)
        sec, nsec = divmod(want.mtime_ns, NS)
        if protocol < 30:
            sec &= 0xFFFFFFFF
        assert e.mtime_ns == sec * NS + (nsec if protocol >= 31 else 0), e.name
        assert (e.uid, e.gid) == (want.uid, want.gid)
        assert e.rdev == (want.rdev if is_dev else 0)
        assert e.link == (want.link if stat.S_ISLNK(want.mode) else None)
        assert e.checksum == (want.checksum if stat.S_ISREG(want.mode) else None)
        if stat.S_ISDIR(want.mode):
            if protocol >= 30:
                assert e.flags == want.flags
            else:  # below 30 every directory of a recursive transfer has content
                assert e.flags == want.flags | FLAG_CONTENT_DIR
        elif want.flags & (FLAG_HLINK_FIRST | FLAG_HLINK_FOLLOWER):
            assert (e.flags, e.hlink) == (want.flags, want.hlink), e.name
        elif protocol < 28 and stat.S_ISREG(want.mode):
            # 27 sends dev/ino for every regular file: each is its own group.
            assert e.flags == FLAG_HLINK_FIRST
        else:
            assert e.flags == 0 and e.hlink is None
    named = {k: v for k, v in USERS.items() if k in {e.uid for e in entries}}
    gnamed = {k: v for k, v in GROUPS.items() if k in {e.gid for e in entries}}
    inline = protocol >= 30 and compat & CF_INC_RECURSE
    if not inline and not compat & CF_ID0_NAMES:
        named.pop(0)
        gnamed.pop(0)
    assert dec.uid_names == named
    assert dec.gid_names == gnamed


@pytest.mark.parametrize(("protocol", "compat"), CONFIGS)
def test_reencoding_decoded_entries_is_byte_identical(protocol: int, compat: int) -> None:
    data, _, got, _ = roundtrip(protocol, compat, sample_entries())
    if protocol < 28:
        return  # decoded groups differ from the synthetic dev/ino of the first encode
    again = roundtrip(protocol, compat, got)[0]
    assert again == data


@pytest.mark.parametrize(("protocol", "compat"), CONFIGS)
def test_byte_at_a_time_feeding(protocol: int, compat: int) -> None:
    data = roundtrip(protocol, compat, sample_entries(), io_error=1)[0]
    dec = make_decoder(protocol, compat)
    items: list[object] = []
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
        while (item := dec.next_entry()) is not None:
            items.append(item)
    assert len(items) == len(sample_entries()) + 1
    io_error_sent = protocol < 30 or compat & CF_SAFE_FLIST or protocol >= 31
    assert items[-1] == EndOfList(1 if io_error_sent else 0)
    dec.close()


def test_io_error_needs_a_message_without_safe_flists() -> None:
    enc = FlistEncoder(30, compat_flags=CF_VARINT_FLIST_FLAGS)
    assert enc.needs_io_error_msg(1) and enc.end_marker(1) == b"\0\0"
    enc = FlistEncoder(31, compat_flags=0)
    assert not enc.needs_io_error_msg(1)
    assert enc.end_marker(1) == b"\x04\x10\x01"  # XMIT_EXTENDED_FLAGS|IO_ERROR_ENDLIST, 1
    assert FlistEncoder(29).end(3) == b"\0" + (3).to_bytes(4, "little")


def test_atimes_roundtrip() -> None:
    entries = sample_entries()[:8]
    for i, e in enumerate(entries):
        e.atime_ns = (1_600_000_000 + i // 2) * NS
    _, _, got, _ = roundtrip(31, 0x1FF, entries, preserve_atimes=True)
    for want, e in zip(entries, got, strict=True):
        assert e.atime_ns == (0 if stat.S_ISDIR(want.mode) else want.atime_ns)


def test_implied_dir_and_numeric_ids() -> None:
    entries = [
        FileEntry(b"a", stat.S_IFDIR | 0o755, flags=FLAG_IMPLIED_DIR, uid=5, gid=6),
        FileEntry(b"a/b", stat.S_IFDIR | 0o755, flags=FLAG_TOP_DIR | FLAG_CONTENT_DIR, uid=5),
    ]
    data, dec, got, _ = roundtrip(31, 0x1FF, entries, numeric_ids=True)
    assert [e.flags for e in got] == [FLAG_IMPLIED_DIR, FLAG_TOP_DIR | FLAG_CONTENT_DIR]
    assert dec.uid_names == {} and b"alice" not in data


def test_id_lists_order_and_id0() -> None:
    enc = FlistEncoder(29, preserve_uid=True, preserve_gid=False, user_names=USERS)
    for i, uid in enumerate((1000, 0, 1, 1000, 77)):
        enc.encode_entry(FileEntry(b"f%d" % i, stat.S_IFREG | 0o644, uid=uid), i)
    # Newest first, id 0 not named below ID0_NAMES, unknown ids left out.
    assert enc.id_lists() == (
        (1).to_bytes(4, "little") + b"\x06daemon"
        + (1000).to_bytes(4, "little") + b"\x05alice" + bytes(4)
    )
    enc = FlistEncoder(30, compat_flags=CF_ID0_NAMES, preserve_uid=True, user_names=USERS)
    assert enc.id_lists({1000: b"alice"}) == wire.encode_varint(1000) + b"\x05alice\x00\x04root"


def _inc_lists(second: list[bytes]) -> tuple[bytes, bytes]:
    """Protocol 31 incremental recursion: [".", "d", "e"] then a list of ``second``."""
    enc = FlistEncoder(31, compat_flags=0x1FF)
    d = stat.S_IFDIR | 0o755
    first = [FileEntry(b".", d, flags=FLAG_TOP_DIR | FLAG_CONTENT_DIR),
             FileEntry(b"d", d, flags=FLAG_CONTENT_DIR), FileEntry(b"e", d)]
    one = b"".join(enc.encode_entry(e) for e in first) + enc.end()
    enc.start_list(1 + len(first) + 1)
    two = b"".join(enc.encode_entry(FileEntry(n, stat.S_IFREG | 0o644)) for n in second)
    return one, two + enc.end()


def test_sub_lists_follow_rsyncs_dir_list() -> None:
    one, two = _inc_lists([b"d/x", b"d/y"])
    dec = FlistDecoder(31, compat_flags=0x1FF)
    dec.feed(one)
    assert dec.entries_until_end() is not None
    assert dec.dir_names == [b".", b"d", b"e"]
    with pytest.raises(wire.WireError) as ei:
        dec.begin_sublist(wire.NDX_FLIST_OFFSET - 3)
    assert ei.value.code == RERR_PROTOCOL
    assert dec.begin_sublist(wire.NDX_FLIST_OFFSET - 1) == 1
    assert dec.ndx_start == 5
    dec.feed(two)
    got = dec.entries_until_end()
    assert got is not None and [e.name for e in got[0]] == [b"d/x", b"d/y"]
    with pytest.raises(wire.WireError) as ei:
        dec.begin_sublist(wire.NDX_FLIST_OFFSET - 1)
    assert "duplicate" in str(ei.value) and ei.value.code == RERR_PROTOCOL


@pytest.mark.parametrize("names", [[b"e/x"], [b"d/x", b"d/sub/y"], [b"x"]])
def test_sub_list_entries_outside_their_directory_abort(names: list[bytes]) -> None:
    one, two = _inc_lists(names)
    dec = FlistDecoder(31, compat_flags=0x1FF)
    dec.feed(one + two)
    assert dec.entries_until_end() is not None
    dec.begin_sublist(wire.NDX_FLIST_OFFSET - 1)
    with pytest.raises(wire.WireError) as ei:
        dec.entries_until_end()
    assert "invalid path from sender" in str(ei.value) and ei.value.code == RERR_UNSUPPORTED


def test_first_inc_recurse_list_holds_top_level_names_only() -> None:
    enc = FlistEncoder(31, compat_flags=0x1FF)
    dec = FlistDecoder(31, compat_flags=0x1FF)
    dec.feed(enc.encode_entry(FileEntry(b"a/b", stat.S_IFREG | 0o644)))
    with pytest.raises(wire.WireError) as ei:
        dec.next_entry()
    assert ei.value.code == RERR_UNSUPPORTED


# ---------------------------------------------------------------------------
# sort_and_clean


def _names(entries: list[FileEntry]) -> list[bytes]:
    return [e.name for e in entries]


def test_sort_order_dirs_after_files_from_29() -> None:
    d, f = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644
    entries = [FileEntry(n, m) for n, m in [
        (b"b", d), (b"b/x", f), (b"a.txt", f), (b".", d), (b"c", f), (b"a", d), (b"a/z", f),
        (b"-x", f),
    ]]
    assert _names(sort_and_clean(entries, protocol=31)) == [
        b".", b"-x", b"a.txt", b"c", b"a", b"a/z", b"b", b"b/x"]
    assert _names(sort_and_clean(entries, protocol=28)) == [
        b"-x", b".", b"a", b"a.txt", b"a/z", b"b", b"b/x", b"c"]


RSYNC = "/usr/bin/rsync"


@pytest.mark.skipif(not os.path.exists(RSYNC), reason="needs rsync")
@pytest.mark.parametrize("protocol", [28, 29, 31])
def test_sort_order_matches_rsync_list_only(tmp_path: Path, protocol: int) -> None:
    import subprocess

    src = tmp_path / "src"
    for d in ("a", "b.d", "a.b", "a/x.d"):
        (src / d).mkdir(parents=True)
    for f in ("a.txt", "a-b", "-x", ".hidden", "a/x", "a/.y", "a/x y", "b", "b.d/z", "a.b/q",
              "A", "\u00e9", "a/x.d/k", "a/x.d0"):
        (src / f).write_bytes(b"")
    out = subprocess.run(
        [RSYNC, "-r", "--no-inc-recursive", f"--protocol={protocol}", "--list-only", f"{src}/"],
        check=True, capture_output=True,
    ).stdout
    listed = [line.split(maxsplit=4)[4] for line in out.splitlines()]
    entries = []
    for name in listed:
        p = src / os.fsdecode(name)
        entries.append(FileEntry(name, os.lstat(p).st_mode))
    shuffled = entries[::-1]
    assert _names(sort_and_clean(shuffled, protocol=protocol)) == listed


def test_duplicates_are_flagged_not_removed() -> None:
    d, f = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644
    f1, f2 = FileEntry(b"x", f, size=1), FileEntry(b"x", f, size=2)
    dx = FileEntry(b"x", d, flags=FLAG_CONTENT_DIR)
    d1 = FileEntry(b"y", d, flags=FLAG_IMPLIED_DIR)
    d2 = FileEntry(b"y", d, flags=FLAG_TOP_DIR | FLAG_CONTENT_DIR)
    out = sort_and_clean([f1, f2, dx, d1, d2, FileEntry(b"w", f)], protocol=31)
    assert len(out) == 6
    # The directory beats the file of the same name; of equal files the first stays.
    assert f1.flags & FLAG_DUPLICATE and f2.flags & FLAG_DUPLICATE
    assert not dx.flags & FLAG_DUPLICATE
    # Two directories: the first is kept and takes over the vital flags.
    assert d2.flags & FLAG_DUPLICATE and not d1.flags & FLAG_DUPLICATE
    assert d1.flags == FLAG_TOP_DIR | FLAG_CONTENT_DIR
    # A sender leaves everything alone (without incremental recursion).
    g1, g2 = FileEntry(b"x", f), FileEntry(b"x", f)
    sort_and_clean([g1, g2], am_sender=True)
    assert not (g1.flags | g2.flags) & FLAG_DUPLICATE


def test_strip_root() -> None:
    d = stat.S_IFDIR | 0o755
    out = sort_and_clean([FileEntry(b"/a/b", d), FileEntry(b"/a", d)], strip_root=True)
    assert _names(out) == [b"a", b"a/b"]


# ---------------------------------------------------------------------------
# Hostile input


def decode_all(data: bytes, protocol: int = 31, compat: int = 0x1FF, **kw: object) -> list[object]:
    opts = {**OPTS, **kw}
    dec = make_decoder(protocol, compat, **opts)
    dec.feed(data)
    out: list[object] = []
    while (item := dec.next_entry()) is not None:
        out.append(item)
        if isinstance(item, EndOfList):
            break
    return out


def raw_entry(name: bytes, *, xflags: int = 0, l1: int = 0, mode: int = 0o100644,
              tail: bytes | None = None) -> bytes:
    """A protocol-31 varint-flags record with everything else sent explicitly."""
    out = wire.encode_varint(xflags | (XMIT_SAME_NAME if l1 else 0)
                             | (XMIT_LONG_NAME if len(name) > 255 else 0) or XMIT_TOP_DIR)
    if l1:
        out += bytes((l1,))
    out += wire.encode_varint(len(name)) if len(name) > 255 else bytes((len(name),))
    out += name
    if tail is None:
        tail = (wire.encode_varlong(1, 3) + wire.encode_varlong(5, 4) + wire.encode_int32(mode)
                + wire.encode_varint(0) + wire.encode_varint(0) + bytes(16))
    return out + tail


def expect_error(data: bytes, code: int, **kw: object) -> str:
    with pytest.raises(wire.WireError) as ei:
        decode_all(data, **kw)
    assert ei.value.code == code
    return str(ei.value)


def test_a_valid_raw_entry_decodes() -> None:
    items = decode_all(raw_entry(b"ok") + b"\0\0")
    assert isinstance(items[0], FileEntry) and items[0].name == b"ok"
    assert items[1] == EndOfList(0)


@pytest.mark.parametrize("name", [
    b"..", b"../etc/passwd", b"a/../../b", b"a/..", b"/etc/passwd", b"//x", b"a\0b", b"\0",
])
def test_unsafe_names_abort(name: bytes) -> None:
    msg = expect_error(raw_entry(name), RERR_UNSUPPORTED)
    assert "unsafe pathname" in msg


def test_absolute_names_allowed_with_relative_paths() -> None:
    items = decode_all(raw_entry(b"/srv/x") + b"\0\0", relative_paths=True)
    assert isinstance(items[0], FileEntry) and items[0].name == b"/srv/x"


def test_names_are_cleaned() -> None:
    assert clean_fname(b"a//b/./c/") == b"a/b/c"
    assert clean_fname(b"./") == b"."
    assert clean_fname(b"a/.") == b"a/."
    assert clean_fname(b"...") == b"..."
    assert clean_fname(b"a/../b") is None
    items = decode_all(raw_entry(b"./x//y") + b"\0\0")
    assert isinstance(items[0], FileEntry) and items[0].name == b"x/y"


def test_huge_name_length_is_an_overflow_not_an_allocation() -> None:
    data = wire.encode_varint(XMIT_LONG_NAME) + wire.encode_varint(0x7FFFFFFF)
    expect_error(data, RERR_MALLOC)
    data = wire.encode_varint(XMIT_LONG_NAME) + wire.encode_varint(-5)
    expect_error(data, RERR_MALLOC)
    expect_error(raw_entry(b"x" * 4096), RERR_MALLOC)
    # Below 30 the long length is an int32.
    expect_error(b"\x40" + wire.encode_int32(1 << 30), RERR_MALLOC, protocol=29, compat=0)


def test_prefix_longer_than_previous_name() -> None:
    expect_error(raw_entry(b"a") + raw_entry(b"b", l1=5), RERR_PROTOCOL)


def test_invalid_mode_and_transfer_root() -> None:
    assert "invalid file mode" in expect_error(raw_entry(b"x", mode=0o170644), RERR_PROTOCOL)
    expect_error(raw_entry(b"x", mode=0o644), RERR_PROTOCOL)
    expect_error(raw_entry(b".", mode=0o100644), RERR_PROTOCOL)


def test_hard_link_reference_out_of_range() -> None:
    data = raw_entry(b"a") + wire.encode_varint(XMIT_HLINKED) + b"\x01b" + wire.encode_varint(1)
    assert "out of range" in expect_error(data, RERR_PROTOCOL)
    data = wire.encode_varint(XMIT_HLINKED) + b"\x01b" + wire.encode_varint(-1)
    expect_error(data, RERR_PROTOCOL)


def test_nsec_out_of_range() -> None:
    from netsync.flist_codec import XMIT_MOD_NSEC

    tail = wire.encode_varlong(1, 3) + wire.encode_varlong(5, 4) + wire.encode_varint(10**9)
    expect_error(raw_entry(b"x", xflags=XMIT_MOD_NSEC, tail=tail), RERR_PROTOCOL)


def test_negative_size() -> None:
    tail = (wire.encode_varlong(-1, 3) + wire.encode_varlong(5, 4) + wire.encode_int32(0o100644)
            + b"\0\0" + bytes(16))
    expect_error(raw_entry(b"x", tail=tail), RERR_UNSUPPORTED)


def test_symlink_target_overflow() -> None:
    tail = (wire.encode_varlong(1, 3) + wire.encode_varlong(5, 4)
            + wire.encode_int32(0o120777) + wire.encode_varint(0) + wire.encode_varint(0)
            + wire.encode_varint(1 << 20))
    expect_error(raw_entry(b"l", tail=tail), RERR_MALLOC)


def test_io_error_end_marker_needs_safe_flists() -> None:
    data = b"\x04\x10\x01"
    expect_error(data, RERR_PROTOCOL, protocol=30, compat=0)
    # The uid and gid lists follow (no incremental recursion), each ended by 0.
    assert decode_all(data + b"\0\0", protocol=30, compat=CF_SAFE_FLIST) == [EndOfList(1)]


def test_entry_count_is_bounded() -> None:
    data = raw_entry(b"a") + raw_entry(b"b") + raw_entry(b"c")
    expect_error(data, RERR_MALLOC, max_entries=2)


def test_truncation_anywhere_just_waits() -> None:
    data = roundtrip(31, 0x1FF, sample_entries())[0]
    for cut in range(1, len(data), 7):
        dec = make_decoder(31, 0x1FF)
        dec.feed(data[:cut])
        while dec.next_entry() is not None:
            pass
        if cut < len(data):
            with pytest.raises(wire.TruncatedError):
                dec.close()


@pytest.mark.parametrize(("protocol", "compat"), [(27, 0), (29, 0), (30, 0), (31, 0x1FF)])
def test_mutated_streams_only_raise_wire_errors(protocol: int, compat: int) -> None:
    data = roundtrip(protocol, compat, sample_entries())[0]
    rng = random.Random(protocol * 1000 + compat)
    for _ in range(400):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] = rng.choice((0, 0xFF, 0x80, 0x7F, rng.randrange(256)))
        if rng.random() < 0.3:
            del buf[rng.randrange(len(buf)) :]
        try:
            decode_all(bytes(buf), protocol=protocol, compat=compat)
        except wire.WireError:
            pass


def test_id_list_length_is_bounded() -> None:
    entry = FlistEncoder(29, preserve_uid=True).encode_entry(FileEntry(b"f", 0o100644, uid=1))
    names = b"".join(wire.encode_int32(i) + b"\x01u" for i in range(1, 5)) + bytes(4)
    data = entry + b"\0" + names + bytes(4)  # end, uid list, io_error
    only_uid = dict(preserve_gid=False, preserve_hard_links=False, always_checksum=False)
    items = decode_all(data, protocol=29, compat=0, max_ids=10, **only_uid)
    assert items[-1] == EndOfList(0)
    expect_error(data, RERR_PROTOCOL, protocol=29, compat=0, max_ids=3, **only_uid)


@pytest.mark.parametrize("name", [b"", b"a\0b", b"x" * 4096])
def test_encoder_refuses_names_no_receiver_accepts(name: bytes) -> None:
    with pytest.raises(ValueError):
        FlistEncoder(31).encode_entry(FileEntry(name, 0o100644))
