"""How ``netsync --daemon`` listens, as rsync's open_socket_in(): ``-4``/``-6`` pick
the address family, ``--sockopts`` (else the global ``socket options``) is set on the
listening socket, and ``listen backlog`` is the backlog.  What ``ss`` shows of the
listening sockets, and which loopback address a stock client reaches, are compared
with ``rsync --daemon`` started the same way."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers


def _need() -> None:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    if not shutil.which("ss"):
        peers.missing("ss is not installed (iproute2)")


@contextmanager
def _daemon(kind: str, conf: Path, *extra: str) -> Iterator[int]:
    cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
    # (no --address: both families, unless -4/-6 says otherwise)
    proc, port = peers.start_daemon(cmd, conf, env=tc.sync_env(), extra=extra, address=None,
                                    ready=_wait_listening)
    try:
        yield port
    finally:
        peers.stop(proc)


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        if _listening(port):
            return True
        time.sleep(0.05)
    return False


def _listening(port: int) -> list[tuple[str, int, int]]:
    """(local address, backlog, receive buffer) of each socket listening on ``port``."""
    out = subprocess.run(["ss", "-ltnmH", f"sport = :{port}"], capture_output=True,
                         text=True, check=True).stdout
    socks = []
    for m in re.finditer(r"LISTEN\s+\d+\s+(\d+)\s+(\S+):\d+\s.*?\n\s*skmem:\(r\d+,rb(\d+)",
                         out):
        socks.append((m.group(2), int(m.group(1)), int(m.group(3))))
    return sorted(socks)


def _reaches(port: int) -> dict[str, int]:
    """The exit code of a module listing through each loopback address."""
    got = {}
    for host in ("127.0.0.1", "[::1]"):
        p = subprocess.run([tc.RSYNC, f"rsync://{host}:{port}/"], capture_output=True,
                           env=tc.sync_env(), stdin=subprocess.DEVNULL, timeout=30)
        got[host] = p.returncode
    return got


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    _need()
    (tmp_path / "m").mkdir()
    path = tmp_path / "rsyncd.conf"
    path.write_text(f"use chroot = no\nlisten backlog = 17\n[m]\npath = {tmp_path / 'm'}\n")
    return path


@pytest.mark.parametrize("extra", [(), ("-4",), ("--ipv6",), ("--sockopts=SO_RCVBUF=40000",)])
def test_listening_sockets_like_rsyncd(conf: Path, extra: tuple[str, ...]) -> None:
    seen = {}
    for kind in ("rsync", "netsync"):
        with _daemon(kind, conf, *extra) as port:
            seen[kind] = (_listening(port), _reaches(port))
    assert seen["netsync"] == seen["rsync"]
    socks, reaches = seen["netsync"]
    assert {backlog for _, backlog, _ in socks} == {17}  # "listen backlog"
    if extra == ("-4",):
        assert [a for a, _, _ in socks] == ["0.0.0.0"]
        assert reaches["127.0.0.1"] == 0 and reaches["[::1]"] != 0
    elif extra == ("--ipv6",):
        assert [a for a, _, _ in socks] == ["*"] or [a for a, _, _ in socks] == ["[::]"]
        assert reaches["[::1]"] == 0 and reaches["127.0.0.1"] != 0
    elif extra:
        assert {rb for _, _, rb in socks} == {80000}  # the kernel doubles SO_RCVBUF


@pytest.mark.parametrize("kind", ["rsync", "netsync"])
def test_listens_after_the_starting_line(tmp_path: Path, kind: str) -> None:
    """clientserver.c/socket.c: rsyncd writes its pid file, then logs "rsyncd version
    ... starting, listening on port N", and only then do its sockets listen: a client
    that gets in finds both (rsync's daemon-standalone-detach reads the log as soon as
    the port answers).  netsync listened first, before even the pid file.  Here the
    log is a FIFO whose buffer the test has filled, so the daemon blocks on that line:
    with the pid file written, nothing may listen until the test reads the log."""
    _need()
    port = peers.free_port()
    fifo, pid = tmp_path / "log", tmp_path / "pid"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        while True:
            os.write(wfd, b"\n" * 4096)
    except BlockingIOError:
        pass
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\npid file = {pid}\nlog file = {fifo}\n"
                    f"[m]\n    path = {tmp_path}\n")
    cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
    proc = subprocess.Popen([*cmd, "--daemon", "--no-detach", f"--port={port}",
                             "--address=127.0.0.1", f"--config={conf}"], env=tc.sync_env())
    try:
        deadline = time.monotonic() + 30
        while not pid.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pid.exists(), f"{kind}: no pid file"
        assert not _listening(port), f"{kind} listens before its starting line is logged"
        got = b""
        while b"starting, listening on port" not in got and time.monotonic() < deadline:
            try:
                got += os.read(rfd, 1 << 16)
            except BlockingIOError:
                time.sleep(0.02)
        assert f"starting, listening on port {port}".encode() in got, got[-300:]
        assert _wait_listening(port, proc)
    finally:
        peers.stop(proc)
        os.close(rfd)
        os.close(wfd)
