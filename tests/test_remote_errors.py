"""Failure modes of the wire client: rsync's messages and exit codes, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers
from interop.peers import SshServer

sshd_server = peers.sshd_server  # the session fixture

SRC = str(Path(__file__).resolve().parent.parent / "src")

# A fake remote shell: ignores its arguments and plays a hostile "rsync --server".
FAKE_SERVER = """\
import os, struct, sys, time
sys.path.insert(0, {src!r})
from netsync.flist import FileEntry
from netsync.flist_codec import FlistEncoder
from netsync.wire import encode_frame
mode = os.environ["FAKE_MODE"]
out = sys.stdout.buffer
def frame(data):
    return encode_frame(0, data)
if mode == "badsum":
    # Protocol 30: a one-file list, then that file twice (first try and redo), each time
    # with a wrong whole-file checksum, the phase ends and the stats.
    from netsync.wire import NdxEncoder, encode_varlong
    ndx = NdxEncoder(30)
    enc = FlistEncoder(30)
    body = enc.encode_entry(FileEntry(b"f", 0o100644, size=5, mtime_ns=10**18)) + enc.end()
    def answer():
        return (ndx.encode(0) + struct.pack("<H", 0xA000) + bytes(16)
                + struct.pack("<i", 5) + b"hello" + struct.pack("<i", 0) + b"W" * 16)
    body += answer() + ndx.encode(-1) + answer() + ndx.encode(-1) * 2
    body += encode_varlong(0, 3) * 5
    out.write(struct.pack("<i", 30) + b"\\x00" + struct.pack("<i", 1234) + frame(body))
elif mode == "garbage":
    out.write(b"Welcome to my login shell!\\n" * 4)
else:
    out.write(struct.pack("<i", 30) + b"\\x00" + struct.pack("<i", 1234))
    if mode == "truncated":
        out.write(struct.pack("<I", (9 << 24) | 1000) + b"short")
    else:
        name = {{"dotdot": b"../evil", "absolute": b"/tmp/evil-abs"}}[mode]
        enc = FlistEncoder(30)
        body = enc.encode_entry(FileEntry(name, 0o100644, size=5, mtime_ns=10**18)) + enc.end()
        out.write(frame(body))
out.flush()
time.sleep(0.5)
"""


def _fake(tmp_path: Path, mode: str, extra: list[str]) -> tc.Run:
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER.format(src=SRC))
    env = tc.sync_env()
    env["FAKE_MODE"] = mode
    argv = [*tc.program_under_test(), "-r" if mode == "badsum" else "-a", "-e",
            f"{sys.executable} {script}", *extra]
    p = subprocess.run(argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    return tc.Run(argv, p.returncode, p.stdout, p.stderr)


@pytest.mark.parametrize(("mode", "codes", "direction"), [
    ("garbage", {2}, "pull"), ("garbage", {2}, "push"), ("truncated", {12}, "pull"),
    ("truncated", {12}, "push"), ("dotdot", {2, 4, 12}, "pull"),
    ("absolute", {2, 4, 12}, "pull")])
def test_hostile_server(tmp_path: Path, mode: str, codes: set[int], direction: str) -> None:
    (tmp_path / "dst").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "file").write_text("data\n")
    if direction == "pull":
        run = _fake(tmp_path, mode, ["h:/x/", "dst/"])
    else:  # a push receives no file list: only the stream-level modes apply
        run = _fake(tmp_path, mode, ["src/", "h:/x/"])
    assert run.returncode in codes, run.describe()
    assert b"Traceback" not in run.stderr, run.describe()
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/evil-abs").exists()
    if direction == "pull":
        assert list((tmp_path / "dst").iterdir()) == []
    if mode == "garbage":
        assert b"protocol version mismatch -- is your shell clean?" in run.stderr


def test_remote_rsync_missing(sshd_server: SshServer, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    args = ["-a", "--rsync-path=/no/such/rsync", "-e", sshd_server.rsh, "f",
            f"{sshd_server.login}:{tmp_path}/out/"]
    want = tc.run([tc.RSYNC], args, cwd=tmp_path)
    got = tc.run(tc.program_under_test(), args, cwd=tmp_path)
    # rsync polls the ssh child with WNOHANG: 12, or 127 once ssh has exited; netsync
    # waits for the child's status, so it reports the 127 "command not found".
    assert want.returncode in (12, 127), want.describe()
    assert got.returncode == 127, got.describe()
    assert b"/no/such/rsync" in got.stderr
    assert b"connection unexpectedly closed" in got.stderr
    assert b"Traceback" not in got.stderr


def test_checksum_mismatch_redo_then_exit_23(tmp_path: Path) -> None:
    """A file failing verification is re-requested once, then discarded with exit 23."""
    (tmp_path / "dst").mkdir()
    run = _fake(tmp_path, "badsum", ["-v", "--protocol=30", "h:/x/", "dst/"])
    assert run.returncode == 23, run.describe()
    assert b"Traceback" not in run.stderr, run.describe()
    err = run.stderr.decode()
    assert "WARNING: f failed verification -- update discarded (will try again)." in err
    assert "ERROR: f failed verification -- update discarded." in err
    assert list((tmp_path / "dst").iterdir()) == []


# Control bytes, an invalid UTF-8 byte, valid UTF-8 and a literal "\#001".
ODD = b"a\x01b\x1bc\xffd\\#001e\xc3\xa9"


@pytest.mark.parametrize("eight", [[], ["-8"]])
@pytest.mark.parametrize("case", ["error", "info32", "info28"])
def test_server_messages_are_escaped_as_rsync_prints_them(
        sshd_server: SshServer, tmp_path: Path, case: str, eight: list[str]) -> None:
    # log.c rwrite(): rsync's server sends names raw in its MSG_* frames and the client
    # escapes every message it prints (\#ooo; high-bit bytes too, unless -8), so an odd
    # name from the server cannot put control bytes on the user's terminal.
    outs = {}
    for side, prog in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        work = tmp_path / side
        (work / "src").mkdir(parents=True)
        (work / "src" / os.fsdecode(ODD)).write_bytes(b"same\n")
        rsh = ["-e", sshd_server.rsh, "--rsync-path=rsync", *eight]
        if case == "error":  # the server's sender: link_stat fails (a MSG_ERROR_XFER)
            args = [*rsh, "-a", "--no-msgs2stderr",
                    f"{sshd_server.login}:{os.fsdecode(bytes(work) + b'/src/' + ODD)}x",
                    "dst/"]
            rc = 23
        else:  # the server's generator: "NAME is uptodate" and (protocol 28) "deleting"
            tc.run([tc.RSYNC], ["-a", "src/", "dst/"], cwd=work)
            (work / "dst" / os.fsdecode(ODD + b".old")).write_bytes(b"old\n")
            args = [*rsh, "-a", "-vv", "--delete", f"--protocol={case[4:]}", "src/",
                    f"{sshd_server.login}:{work}/dst/"]
            rc = 0
        r = tc.run(prog, args, cwd=work)
        assert r.returncode == rc, r.describe()
        assert b"\x01" not in r.stdout + r.stderr, r.describe()
        assert b"\x1b" not in r.stdout + r.stderr, r.describe()
        out = (r.stdout + r.stderr).replace(str(work).encode(), b"WORK")
        outs[side] = sorted(ln for ln in out.split(b"\n") if b"a\\#001b" in ln)
    assert outs["netsync"] == outs["rsync"]
    # -8 shows the invalid UTF-8 byte raw; valid UTF-8 (c3 a9) is shown either way.
    name = b"a\\#001b\\#033c" + (b"\xff" if eight else b"\\#377") + b"d\\#134#001e\xc3\xa9"
    if case == "error":
        want = [b'rsync: [sender] link_stat "WORK/src/' + name + b'x" failed: '
                b"No such file or directory (2)"]
    else:  # (from protocol 29 the client formats "deleting" itself, from MSG_DELETED)
        want = [name + b" is uptodate", b"deleting " + name + b".old"]
    assert outs["rsync"] == want


@pytest.mark.parametrize("eight", [[], ["-8"]])
def test_daemon_motd_listing_and_error_are_escaped(sshd_server: SshServer, tmp_path: Path,
                                                   eight: list[str]) -> None:
    # clientserver.c start_inband_exchange(): the daemon's motd and listing lines and its
    # "@ERROR" line are rprintf()ed by the client, so escaped like any message.
    (tmp_path / "mod").mkdir()
    (tmp_path / "motd").write_bytes(b"motd " + ODD + b"\x1b[31m\n")
    conf = tmp_path / "d.conf"
    conf.write_bytes(b"use chroot = no\nmotd file = %s/motd\n[mod]\npath = %s/mod\n"
                     b"comment = c%s\n" % (bytes(tmp_path), bytes(tmp_path), ODD))
    rsh = [*eight, "-e", sshd_server.rsh, f"--rsync-path=rsync --config={conf}"]
    outs = {}
    for side, prog in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        listing = tc.run(prog, [*rsh, f"{sshd_server.login}::"], cwd=tmp_path)
        assert listing.returncode == 0, listing.describe()
        refused = tc.run(prog, [*rsh, f"{sshd_server.login}::no{os.fsdecode(ODD)}/", "d/"],
                         cwd=tmp_path)
        # (rsync exits 5; netsync over a remote shell currently says 255: the exit code
        # is not what this test is about)
        assert refused.returncode != 0, refused.describe()
        for r in (listing, refused):
            assert b"\x01" not in r.stdout + r.stderr, r.describe()
            assert b"\x1b" not in r.stdout + r.stderr, r.describe()
        outs[side] = (listing.stdout, [ln for ln in refused.stderr.split(b"\n")
                                       if ln.startswith(b"@ERROR")])
    assert outs["netsync"] == outs["rsync"]
    name = b"a\\#001b\\#033c" + (b"\xff" if eight else b"\\#377") + b"d\\#134#001e\xc3\xa9"
    assert outs["rsync"][1] == [b"@ERROR: Unknown module 'no" + name + b"'"]
    assert b"motd " + name + b"\\#033[31m\n" in outs["rsync"][0]
