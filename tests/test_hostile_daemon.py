"""``netsync --daemon`` against hostile clients on raw sockets.

The daemon answers each attack with an error, bounds what a connection can make it
hold, times out stalled handshakes, writes nothing outside its modules, and keeps
serving: a stock rsync client connecting meanwhile still gets its files.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hostile_peer as hp
import treecompare as tc
from interop import peers
from netsync.transport import SocketConnection
from netsync.wire import encode_int32


@dataclass
class Daemon:
    port: int
    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    root = tmp_path_factory.mktemp("hostile-daemon")
    for name in ("pub", "up", "slow", "outside"):
        (root / name).mkdir()
    (root / "pub" / "f").write_bytes(b"hello world\n" * 1000)
    (root / "pub" / "sub").mkdir()
    (root / "pub" / "sub" / "g").write_text("g\n")
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    (root / "rsyncd.conf").write_text("\n".join([
        "use chroot = no", *uid, f"log file = {root / 'log'}",
        f"lock file = {root / 'lock'}",
        "[pub]", f"path = {root / 'pub'}", "read only = yes",
        "[up]", f"path = {root / 'up'}", "read only = no",
        "[slow]", f"path = {root / 'slow'}", "read only = no", "timeout = 2", "",
    ]))
    proc, port = peers.start_daemon(hp.netsync_cmd(), root / "rsyncd.conf",
                                    env=hp.child_env())
    try:
        yield Daemon(port, root, proc)
    finally:
        peers.stop(proc)


def _connect(d: Daemon) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
    _line(s)  # the greeting
    return s


_line = peers.recv_line


def _open_module(d: Daemon, module: str) -> socket.socket:
    s = _connect(d)
    s.sendall(b"@RSYNCD: 31.0\n" + module.encode() + b"\n")
    assert _line(s) == b"@RSYNCD: OK\n"
    return s


def _closed_within(s: socket.socket, seconds: float) -> bytes | None:
    """Read until EOF (what was read) or until ``seconds`` pass without it (None)."""
    deadline = time.monotonic() + seconds
    got = bytearray()
    while time.monotonic() < deadline:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = s.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return bytes(got)
        if not data:
            return bytes(got)
        got += data
    return None


def _honest_pull(d: Daemon, dest: Path) -> None:
    """A stock rsync client gets the module while the attack is going on."""
    run = subprocess.run([tc.RSYNC, "-a", f"rsync://127.0.0.1:{d.port}/pub/", f"{dest}/"],
                         capture_output=True, timeout=60, env=tc.sync_env())
    assert run.returncode == 0, run.stderr
    assert (dest / "f").read_bytes() == b"hello world\n" * 1000
    assert (dest / "sub" / "g").read_text() == "g\n"


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _vmhwm_kb(pid: int) -> int:
    """The process's peak RSS so far (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def test_argv_flood_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    before = set(_children(daemon.proc.pid))
    s = _open_module(daemon, "pub")
    try:
        # 15,998 long arguments (the most a client may send) are held ...
        s.settimeout(120)  # the daemon reads arguments a byte at a time
        s.sendall(b"".join(b"a%05d" % i + b"x" * 100 + b"\0" for i in range(15_998)))
        mine: list[int] = []
        deadline = time.monotonic() + 30
        while not mine and time.monotonic() < deadline:
            time.sleep(0.2)
            mine = [p for p in _children(daemon.proc.pid) if p not in before]
        assert mine, "no connection process"
        peak = max(_vmhwm_kb(p) for p in mine)
        assert 0 < peak < hp.MAX_RSS_KB, f"peak RSS {peak} kB"
        _honest_pull(daemon, tmp_path / "meanwhile")
        # ... one more is one too many.
        s.sendall(b"b\0c\0\0")
        assert _closed_within(s, 90) is not None
    finally:
        s.close()
    assert _log_says(daemon, "too many daemon arguments")


def test_stalled_greeting_does_not_block_others(daemon: Daemon, tmp_path: Path) -> None:
    s = _connect(daemon)
    try:
        s.sendall(b"@RSYNCD: 31.0")  # no newline, ever
        _honest_pull(daemon, tmp_path / "meanwhile")
    finally:
        s.close()


def test_stalled_transfer_handshake_times_out(daemon: Daemon, tmp_path: Path) -> None:
    """After the arguments, the module's "timeout = 2" bounds the binary handshake."""
    s = _open_module(daemon, "slow")
    try:
        s.sendall(b"--server\0--sender\0-r\0.\0slow/\0\0")
        _honest_pull(daemon, tmp_path / "meanwhile")
        got = _closed_within(s, 45)  # far less than the 60 s handshake deadline
    finally:
        s.close()
    assert got is not None
    assert b"netsync: [sender] io timeout after 2 seconds -- exiting\n" in got
    assert b"(code 30)" in got


def _log_says(d: Daemon, text: str) -> bool:
    """The connection's process writes its last words as it exits: give it a moment."""
    deadline = time.monotonic() + 60
    while text not in d.log and time.monotonic() < deadline:
        time.sleep(0.1)
    return text in d.log


def _evil(d: Daemon, module: str, args: list[bytes]) -> hp.EvilClient:
    s = _open_module(d, module)
    s.settimeout(None)
    s.sendall(b"".join(a + b"\0" for a in args) + b"\0")
    client = hp.EvilClient(SocketConnection(s, who="evil"), am_sender=b"--sender" not in args)
    client.handshake(daemon_protocol=31)
    return client


def _finish(client: hp.EvilClient) -> bytes:
    client.flush()
    text = client.drain()
    client.conn.close()
    return text


def test_sender_refuses_checksum_length_over_digest(daemon: Daemon, tmp_path: Path) -> None:
    """CVE-2024-12084 through the daemon: the session ends with rsync's error, and the
    daemon keeps serving."""
    c = _evil(daemon, "pub", [b"--server", b"--sender", b"-r", b"-e.LsfxCIvu", b".", b"pub/"])
    assert c.io is not None
    c.send(hp.empty_filter_list())
    c.flush()
    c.io.read_some()  # the file list starts
    c.io.write_ndx(1)
    c.io.write_shortint(1 << 15)
    c.send(b"".join(encode_int32(v) for v in (1, 700, 4096, 3)) + b"\0" * 4100)
    text = _finish(c)
    assert b"Invalid checksum length 4096 [sender]" in text, text
    assert b"(code 2)" in text and b"Traceback" not in text
    _honest_pull(daemon, tmp_path / "after")


@pytest.mark.parametrize(("entries", "message"), [
    ([hp.entry(b"../../outside/evil", size=3)],
     b"ABORTING due to unsafe pathname from sender: ../../outside/evil"),
    ([hp.entry(b"d", stat.S_IFLNK | 0o777, link=b"../outside"), hp.entry(b"d/evil", size=3)],
     b"ABORTING due to invalid path from sender: d/evil"),
])
def test_receiver_writes_nothing_outside_the_module(daemon: Daemon, tmp_path: Path,
                                                    entries, message: bytes) -> None:
    c = _evil(daemon, "up", [b"--server", b"-rl", b"-e.LsfxCIvu", b".", b"up/"])
    dot = hp.entry(b".", stat.S_IFDIR | 0o755)
    c.send(hp.flist_bytes(c.encoder(preserve_links=True), [dot, *entries]))
    text = _finish(c)
    assert message in text, text
    assert b"Traceback" not in text
    assert list((daemon.root / "outside").iterdir()) == []
    assert [p.name for p in (daemon.root / "up").iterdir()] in ([], ["d"])
    _honest_pull(daemon, tmp_path / "after")


def test_file_list_flood_is_bounded(daemon: Daemon, tmp_path: Path) -> None:
    c = _evil(daemon, "up", [b"--server", b"-r", b"--max-alloc=16M", b"-e.LsfxCIvu", b".",
                             b"up/"])
    c.send(hp.flood_records(c.encoder(), 300_000))
    text = _finish(c)
    assert b"ERROR: out of memory in flist_expand" in text, text
    assert b"(code 22)" in text
    _honest_pull(daemon, tmp_path / "after")


def _connection_lines(log: str, marker: str) -> list[str]:
    """The log lines of the connection that logged ``marker``, without the time stamp
    and pid, and with rsync's "at file.c(N)" and versions dropped."""
    rows = [line.split(" ", 3) for line in log.splitlines()]
    pids = {r[2] for r in rows if len(r) == 4 and marker in r[3]}
    assert len(pids) == 1, log
    out = []
    for r in rows:
        if len(r) == 4 and r[2] in pids:
            text = re.sub(r" at \w+\.c\(\d+\)", "", r[3])
            out.append(re.sub(r"=[^\]=]+\]$", "=VERSION]", text).replace("netsync error", "rsync error"))
    return out


def test_handshake_timeout_is_logged_like_rsync(daemon: Daemon, tmp_path: Path) -> None:
    """A client that opens a module and never sends its arguments: the module's
    "timeout = 2" ends the connection, and the log says so in rsync's words."""
    conf = tmp_path / "rsyncd.conf"
    conf.write_text((daemon.root / "rsyncd.conf").read_text().replace(
        str(daemon.root / "log"), str(tmp_path / "log")).replace(
        str(daemon.root / "lock"), str(tmp_path / "lock")))
    port = peers.free_port()
    proc = subprocess.Popen([tc.RSYNC, "--daemon", "--no-detach", f"--port={port}",
                             "--address=127.0.0.1", f"--config={conf}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert peers.wait_for_port(port, proc), "rsync --daemon did not start"
        logs = []
        for d in (Daemon(port, tmp_path, proc), daemon):
            s = _open_module(d, "slow")
            try:
                assert _closed_within(s, 45) == b""  # far less than the 60 s default
            finally:
                s.close()
            assert _log_says(d, "daemon handshake timeout -- exiting\n"), d.log
            assert _log_says(d, "[Receiver="), d.log
            logs.append(_connection_lines(d.log, "daemon handshake timeout"))
    finally:
        peers.stop(proc)
    assert logs[0] == [
        "connect from localhost (127.0.0.1)",
        "rsync allowed access on module slow from localhost (127.0.0.1)",
        "[Receiver] daemon handshake timeout -- exiting",
        "rsync error: timeout in data send/receive (code 30) [Receiver=VERSION]",
    ]
    assert logs[1] == logs[0]
