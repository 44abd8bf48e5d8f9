"""The netsync client against a garbled or malicious server (``-e`` runs the evil peer).

Whatever the server sends, the client must end with rsync's error and exit code, never
a traceback or a hang, within bounded memory, and write nothing outside the destination
nor leave a half-written file in it.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import threading
from pathlib import Path

import pytest

import hostile_peer as hp
import treecompare as tc

EVIL = Path(hp.__file__).resolve()


def _pull(tmp_path: Path, attack: str, *opts: str, src: str = "host:src/",
          env: dict[str, str] | None = None) -> tuple[hp.Child, Path, Path]:
    dst = tmp_path / "dst"
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    rsh = f"{shlex.quote(sys.executable)} {shlex.quote(str(EVIL))} serve {attack}"
    child = hp.spawn([*hp.netsync_cmd(), "-e", rsh, *opts, src, f"{dst}/"], tmp_path,
                     pipes=False, env=hp.child_env(HOSTILE_OUTSIDE=str(outside),
                                                   **(env or {})))
    return hp.finish(child, 90), dst, outside


def _files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _assert_clean(child: hp.Child, code: int, message: bytes) -> None:
    err = child.stderr
    assert child.returncode == code, err
    assert b"Traceback" not in err and b"internal error" not in err, err
    assert message in err, err
    assert f"(code {code})".encode() in err, err
    assert child.maxrss_kb < hp.MAX_RSS_KB, f"peak RSS {child.maxrss_kb} kB"


@pytest.mark.parametrize(("attack", "name"), [
    ("dotdot-name", b"../escaped"),
    ("inner-dotdot-name", b"sub/../../escaped"),
    ("absolute-name", b"/tmp/absolute-escape"),
])
def test_unsafe_names_are_refused(tmp_path: Path, attack: str, name: bytes) -> None:
    child, dst, outside = _pull(tmp_path, attack, "-r", "--timeout=20")
    _assert_clean(child, 4, b"ABORTING due to unsafe pathname from sender: " + name)
    assert _files(dst) == [] and _files(outside) == []
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/absolute-escape").exists()


@pytest.mark.parametrize(("attack", "code", "line"), [
    ("bad-mode", 2, b"netsync: invalid file mode 0170644 for bad\\#001\\#377name [Receiver]"),
    ("escape-seq-name", 4,
     b"netsync: ABORTING due to unsafe pathname from sender: ../\\#033[31mred\\#134#123"),
])
def test_bad_entry_name_is_shown_escaped(tmp_path: Path, attack: str, code: int,
                                         line: bytes) -> None:
    """flist.c's messages about a bad entry name it as rsync prints names (log.c
    rwrite()): a control byte, a byte not UTF-8 and a literal "\\#ddd" as \\#ooo."""
    child, dst, _ = _pull(tmp_path, attack, "-r", "--timeout=20")
    _assert_clean(child, code, line)
    assert line in child.stderr.splitlines(), child.stderr
    assert _files(dst) == []
    # rsync's own line, but for our name in front (rprintf(FERROR) has none)
    rsh = f"{shlex.quote(sys.executable)} {shlex.quote(str(EVIL))} serve {attack}"
    ref = hp.finish(hp.spawn([tc.RSYNC, "-e", rsh, "-r", "--timeout=20", "host:src/",
                              f"{tmp_path}/ref/"], tmp_path, pipes=False), 90)
    assert ref.returncode == code, ref.stderr
    assert line.removeprefix(b"netsync: ") in ref.stderr.splitlines(), ref.stderr


def test_file_through_a_sent_symlink_is_refused(tmp_path: Path) -> None:
    """CVE-2024-12087: "d" -> outside, then "d/pwned"."""
    child, dst, outside = _pull(tmp_path, "symlink-escape", "-rl", "--timeout=20")
    _assert_clean(child, 2, b"ABORTING due to invalid path from sender: d/pwned")
    assert _files(outside) == []


def test_forged_content_dot_cannot_widen_delete(tmp_path: Path) -> None:
    """A single-file pull answered with "." flagged as a content dir must not make
    --delete sweep the destination (rsync's malicious-dot-dir-delete-scope)."""
    keep = tmp_path / "dst" / "private" / "must-survive"
    keep.parent.mkdir(parents=True)
    keep.write_text("receiver-owned\n")
    child, dst, _ = _pull(tmp_path, "dot-content-dir", "-r", "--delete", "--timeout=20",
                          src="host:src/requested")
    assert child.returncode == 0, child.stderr
    assert keep.read_text() == "receiver-owned\n"
    assert _files(dst) == ["private", "private/must-survive", "requested"]


def test_more_literal_data_than_the_file_size(tmp_path: Path) -> None:
    child, dst, _ = _pull(tmp_path, "huge-literal", "-r", "--timeout=20")
    _assert_clean(child, 2, b"sender sent more data than the file size")
    assert _files(dst) == []  # neither "big" nor its temp file


def test_interrupted_pull_leaves_no_half_written_file(tmp_path: Path) -> None:
    child, dst, _ = _pull(tmp_path, "half-file", "-r", "--timeout=20")
    _assert_clean(child, 12, b"connection unexpectedly closed")
    assert _files(dst) == []


@pytest.mark.parametrize(("attack", "opts", "code", "message"), [
    ("bad-tag", (), 12, b"unexpected tag 120"),
    ("bad-ndx", (), 2, b"Invalid file index: 5000"),
    ("cleared-ndx", (), 2, b"refusing transfer of cleared file index "),
    ("sum-head-s2length", (), 2, b"Invalid checksum length 17 [receiver]"),
    ("sum-head-blength", (), 2, b"Invalid block length 1048576 [receiver]"),
    ("long-name", (), 22, b"overflow: xflags=0x40 l1=0 l2=1073741824 in recv_file_entry"),
    ("flist-flood", ("--max-alloc=16M",), 22, b"out of memory in flist_expand"),
    ("id-flood", ("-o",), 2, b"too many uid/gid names from sender"),
])
def test_garbled_stream(tmp_path: Path, attack: str, opts: tuple[str, ...], code: int,
                        message: bytes) -> None:
    child, dst, _ = _pull(tmp_path, attack, "-r", "--timeout=20", *opts)
    _assert_clean(child, code, message)
    assert [f for f in _files(dst) if f.startswith(".")] == []  # no temp file left


@pytest.mark.parametrize(("attack", "src"), [
    ("stall-handshake", "host:src/"),
    ("stall", "host:src/"),
    ("stall-handshake", "host::mod/"),  # the @RSYNCD: greeting never comes
])
def test_stalled_server_times_out(tmp_path: Path, attack: str, src: str) -> None:
    child, _, _ = _pull(tmp_path, attack, "-r", "--timeout=2", src=src)
    _assert_clean(child, 30, b"io timeout after 2 seconds -- exiting")


def test_evil_peer_is_silent_on_success(tmp_path: Path) -> None:
    """The toolkit's honest path works, so the failures above are the attacks' doing."""
    child, dst, _ = _pull(tmp_path, "dot-content-dir", "-r", "--timeout=20",
                          src="host:src/")
    assert child.returncode == 0, child.stderr
    assert child.stderr == b""
    assert _files(dst) == ["requested"]
    assert os.path.getsize(dst / "requested") == 0


def test_push_refuses_checksum_length_over_digest(tmp_path: Path) -> None:
    """CVE-2024-12084 the other way: the remote generator lies to our sender."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"data\n" * 100)
    rsh = f"{shlex.quote(sys.executable)} {shlex.quote(str(EVIL))} serve push-sum-head"
    child = hp.finish(hp.spawn([*hp.netsync_cmd(), "-e", rsh, "-r", "--timeout=20",
                                f"{tmp_path}/src/", "host:dst/"], tmp_path, pipes=False), 90)
    _assert_clean(child, 2, b"Invalid checksum length 17 [sender]")


def _flood_daemon(lines: int) -> tuple[int, threading.Thread]:
    """An evil TCP daemon: greeting, then ``lines`` short listing lines, then EXIT."""
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(60)

    def run() -> None:
        with lsock:
            conn, _ = lsock.accept()
        with conn:
            conn.sendall(b"@RSYNCD: 31.0 md5\n")
            got = b""
            while got.count(b"\n") < 2:  # its greeting and the "" module: all it sends
                got += conn.recv(4096)
            chunk = b"ab\n" * 65536  # 3-byte lines: the most lines per byte sent
            for _ in range(lines // 65536):
                conn.sendall(chunk)
            conn.sendall(b"@RSYNCD: EXIT\n")
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # until the client hangs up

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return lsock.getsockname()[1], t


def _list(tmp_path: Path, lines: int) -> tuple[hp.Child, bytes]:
    port, thread = _flood_daemon(lines)
    out = tmp_path / f"listing-{lines}"
    with out.open("wb") as f:
        child = hp.finish(hp.spawn([*hp.netsync_cmd(), f"rsync://127.0.0.1:{port}/"],
                                   tmp_path, pipes=False, stdout=f), 90)
    thread.join(10)
    return child, out.read_bytes()


def test_module_listing_flood_is_streamed(tmp_path: Path) -> None:
    """A daemon sending listing lines without end: they go to stdout as they come
    (as rsync prints them), so the client's memory does not grow with them."""
    small, listing = _list(tmp_path, 65536)
    assert small.returncode == 0 and small.stderr == b"", small.stderr
    assert listing == b"ab\n" * 65536
    big, listing = _list(tmp_path, 16 * 65536)
    assert big.returncode == 0 and big.stderr == b"", big.stderr
    assert listing == b"ab\n" * 16 * 65536
    # Kept in memory, the 1M lines would take ~60 MB (a str and a list slot each).
    assert big.maxrss_kb < small.maxrss_kb + 16 * 1024, (small.maxrss_kb, big.maxrss_kb)


@pytest.mark.parametrize(("opts", "src", "ok"), [
    ((), "host:src/other", False),
    (("-r",), "host:src/other", False),
    (("-r",), "host:src/x*", False),  # a wildcard allows only what it matches
    (("-R",), "host:src/./other/file", False),
    (("-r",), "host:src/req*", True),
    ((), "host:src/requested", True),
    # The transfer root itself, without -r or -d, adds no implied rule: rsync then
    # checks nothing (its rule list is empty), and neither do we.
    ((), "host:.", True),
    (("-R",), "host:./", True),
])
def test_unrequested_name_is_refused_like_rsync(tmp_path: Path, opts: tuple[str, ...],
                                                src: str, ok: bool) -> None:
    """The server answers any request with "requested": rsync 3.4+ refuses a name the
    client did not ask for (flist.c, exclude.c add_implied_include), and so do we."""
    results = []
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", hp.netsync_cmd())):
        dst = tmp_path / who
        rsh = f"{shlex.quote(sys.executable)} {shlex.quote(str(EVIL))} serve dot-content-dir"
        child = hp.finish(hp.spawn([*cmd, "-e", rsh, *opts, src, f"{dst}/"], tmp_path,
                                   pipes=False), 90)
        lines = [ln for ln in child.stderr.decode().splitlines()
                 if ln.startswith("ERROR:")]
        results.append((child.returncode, lines, _files(dst)))
    assert results[1] == results[0]
    if ok:
        assert results[1] == (0, [], ["requested"])
    else:
        assert results[1] == (4, ["ERROR: rejecting unrequested file-list name: requested"],
                              [])
