"""The systemd units in packaging/ start a daemon that stock rsync clients can use.

systemd itself is not available in the test environment, so each test reads the
unit as systemd would (the ExecStart line, the socket settings) and runs exactly
that command the way systemd would start it: the service in front with
--no-detach, the per-connection service with the client's socket on stdin and
stdout.  Only /usr/bin/netsync is swapped for the netsync under test, and a test
config file and port are added in place of /etc/rsyncd.conf and port 873.
"""

from __future__ import annotations

import configparser
import os
import shlex
import socket
import subprocess
from pathlib import Path

import pytest

import treecompare as tc
import trees
from interop import peers

PACKAGING = Path(__file__).resolve().parent.parent / "packaging"


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(PACKAGING / name)
    return cp


def _exec_start(unit: configparser.ConfigParser) -> list[str]:
    line = unit["Service"]["ExecStart"].lstrip("-")  # "-": failure is not a unit failure
    argv = shlex.split(line)
    assert argv[0] == "/usr/bin/netsync", line
    return [*tc.program_under_test(), *argv[1:]]


def _module(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "mod"
    trees.make_tree(src, "mixed")
    config = tmp_path / "rsyncd.conf"
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    config.write_text("\n".join(["use chroot = no", *uid, f"lock file = {tmp_path / 'lock'}",
                                 "[mod]", f"path = {src}", ""]))
    return src, config


def _pull(url: str, dest: Path) -> tc.Run:
    return tc.run([tc.RSYNC], ["-aH", url, f"{dest}/"], cwd=dest.parent)


@pytest.fixture(autouse=True)
def _need_rsync() -> None:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")


def test_service_unit_serves_stock_rsync(tmp_path: Path) -> None:
    unit = _unit("netsync-daemon.service")
    assert unit["Unit"]["ConditionPathExists"] == "/etc/rsyncd.conf"
    argv = _exec_start(unit)
    assert "--no-detach" in argv  # systemd supervises the listener itself
    src, config = _module(tmp_path)
    port = peers.free_port()
    proc = subprocess.Popen([*argv, f"--config={config}", f"--port={port}",
                             "--address=127.0.0.1"], env=tc.sync_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        assert peers.wait_for_port(port, proc), "the service's daemon did not listen"
        run = _pull(f"rsync://127.0.0.1:{port}/mod/", tmp_path / "dst")
        assert run.returncode == 0, run.describe()
        tc.assert_same(tc.snapshot(src, sparse=False), tc.snapshot(tmp_path / "dst", sparse=False),
                       names=("module", "pulled"))
        # Still in front: a Type=simple service must not fork away from systemd.
        assert proc.poll() is None
        proc.terminate()  # systemctl stop (KillMode=mixed sends SIGTERM first)
        assert proc.wait(10) == 0
    finally:
        peers.stop(proc)


def test_socket_unit_one_process_per_connection(tmp_path: Path) -> None:
    sock_unit = _unit("netsync-daemon.socket")
    assert sock_unit["Socket"]["ListenStream"] == "873"
    assert sock_unit["Socket"]["Accept"] == "yes"
    svc = _unit("netsync-daemon@.service")
    assert svc["Service"]["StandardInput"] == "socket"
    argv = _exec_start(svc)
    src, config = _module(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = subprocess.Popen(
            [tc.RSYNC, "-aH", f"rsync://127.0.0.1:{port}/mod/", f"{tmp_path / 'dst'}/"],
            env=tc.sync_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        listener.settimeout(30)
        conn, _ = listener.accept()
        with conn:  # what systemd hands the instance: stdin = stdout = the connection
            server = subprocess.Popen([*argv, f"--config={config}"], env=tc.sync_env(),
                                      stdin=conn.fileno(), stdout=conn.fileno(),
                                      stderr=subprocess.PIPE)
        out, err = client.communicate(timeout=60)
        assert client.returncode == 0, err.decode(errors="replace")
        assert server.wait(30) == 0, server.stderr.read().decode(errors="replace") \
            if server.stderr else ""
    tc.assert_same(tc.snapshot(src, sparse=False), tc.snapshot(tmp_path / "dst", sparse=False),
                   names=("module", "pulled"))
