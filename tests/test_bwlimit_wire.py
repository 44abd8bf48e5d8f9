"""--bwlimit on the wire: whoever sends paces its writes (io.c sleep_for_bwlimit()).

A netsync server or daemon sending to a stock rsync client, and a netsync client
pushing to a stock rsync server, must hold the rate the client asked for, and a
``netsync --daemon --bwlimit`` caps what its clients ask for.  Each case moves
1 MiB at 1000 KiB/s: paced, that cannot take much under a second, however fast
the machine (unpaced it takes a few tens of ms here).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

SIZE = 1 << 20
# rsync sleeps once a tenth of a second is owed: the last ~0.1 s of data goes unpaced.
MIN_SECONDS = 0.6
_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "big").write_bytes(os.urandom(SIZE))
    (tmp_path / "mod" / "small").write_text("small\n")
    rsh = tmp_path / "lsh.sh"  # a remote shell that runs the command here
    rsh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    rsh.chmod(0o755)
    (tmp_path / "rsyncd.conf").write_text(
        "use chroot = no\n" + ("uid = root\ngid = root\n" if os.geteuid() == 0 else "")
        + f"[mod]\npath = {tmp_path / 'mod'}\n")
    return tmp_path


def _timed(argv: list[str], cwd: Path) -> float:
    t0 = time.monotonic()
    p = subprocess.run(argv, cwd=cwd, env=tc.sync_env(), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 0, p.stderr.decode()
    return took


def _same(a: Path, b: Path) -> None:
    for name in ("big", "small"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def _daemon(work: Path, *extra: str) -> Iterator[int]:
    proc, port = peers.start_daemon(tc.program_under_test(), work / "rsyncd.conf",
                                    env=tc.sync_env(), extra=extra)
    try:
        yield port
    finally:
        peers.stop(proc)


def test_daemon_paces_a_pull_as_the_client_asks(work: Path) -> None:
    for port in _daemon(work):
        url = f"rsync://127.0.0.1:{port}/mod/"
        assert _timed([tc.RSYNC, "-a", "--bwlimit=1000", url, "paced/"], work) >= MIN_SECONDS
        _same(work / "mod", work / "paced")


def test_daemon_bwlimit_caps_every_client(work: Path) -> None:
    for port in _daemon(work, "--bwlimit=1000"):
        url = f"rsync://127.0.0.1:{port}/mod/"
        assert _timed([tc.RSYNC, "-a", url, "capped/"], work) >= MIN_SECONDS
        _same(work / "mod", work / "capped")


def test_server_sender_paces_a_pull_over_a_remote_shell(work: Path) -> None:
    argv = [tc.RSYNC, "-a", "--bwlimit=1000", "-e", str(work / "lsh.sh"),
            f"--rsync-path={NETSYNC_PATH}", f"h:{work / 'mod'}/", "got/"]
    assert _timed(argv, work) >= MIN_SECONDS
    _same(work / "mod", work / "got")


def test_client_paces_a_push_to_stock_rsync(work: Path) -> None:
    argv = [*tc.program_under_test(), "-a", "--bwlimit=1000", "-e", str(work / "lsh.sh"),
            f"--rsync-path={tc.RSYNC}", f"{work / 'mod'}/", f"h:{work / 'pushed'}/"]
    assert _timed(argv, work) >= MIN_SECONDS
    _same(work / "mod", work / "pushed")
