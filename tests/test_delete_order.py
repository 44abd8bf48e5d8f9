"""Where ``*deleting`` lines fall among the itemized lines of ``--delete`` (during).

rsync's generator prints a deletion at once, but a dir's own line only comes back
later, echoed by the sender, so rsync shows a dir's deletions before the dir:

    *deleting   old
    .d..t...... ./
    *deleting   sub/old2
    .d..t...... sub/

(Which of a later dir's deletions come before an earlier dir's line depends on when
rsync's generator flushes its output; a dir's own deletions always come first.)
The order is checked locally, in a pull from Debian's rsync over ssh, and with
netsync as the ssh server of a push from Debian's rsync.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import treecompare as tc
from interop import peers
from interop.peers import SshServer

sshd_server = peers.sshd_server  # the session fixture

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"

WANT = [b"*deleting   old", b".d..t...... ./", b"*deleting   sub/old2", b".d..t...... sub/"]


def _pair(tmp: Path) -> tuple[Path, Path]:
    src, dst = tmp / "src", tmp / "dst"
    for d in (src / "sub", dst / "sub"):
        d.mkdir(parents=True)
    for root in (src, dst):
        (root / "a").write_bytes(b"a\n")
        (root / "sub" / "b").write_bytes(b"b\n")
        for p in (root / "a", root / "sub" / "b"):
            os.utime(p, (1_600_000_000, 1_600_000_000))
    (dst / "old").write_bytes(b"old\n")
    (dst / "sub" / "old2").write_bytes(b"old\n")
    os.utime(src / "sub", (1_500_000_000, 1_500_000_000))
    os.utime(src, (1_500_000_000, 1_500_000_000))
    return src, dst


def _check(run: tc.Run, dst: Path) -> None:
    assert run.returncode == 0, run.describe()
    assert run.stdout.splitlines() == WANT, run.describe()
    assert sorted(os.listdir(dst)) == ["a", "sub"]
    assert sorted(os.listdir(dst / "sub")) == ["b"]


def test_local(tmp_path: Path) -> None:
    src, dst = _pair(tmp_path)
    _check(tc.run(tc.program_under_test(), ["-ai", "--delete", f"{src}/", f"{dst}/"],
                  cwd=tmp_path), dst)


def test_pull_from_rsync(sshd_server: SshServer, tmp_path: Path) -> None:
    src, dst = _pair(tmp_path)
    _check(tc.run(tc.program_under_test(), ["-ai", "--delete", "-e", sshd_server.rsh,
                                            f"{sshd_server.login}:{src}/", f"{dst}/"],
                  cwd=tmp_path), dst)


def test_netsync_server_of_a_push(sshd_server: SshServer, tmp_path: Path) -> None:
    src, dst = _pair(tmp_path)
    _check(tc.run([tc.RSYNC], ["-ai", "--delete", "-e", sshd_server.rsh,
                               f"--rsync-path={NETSYNC_PATH}", f"{src}/",
                               f"{sshd_server.login}:{dst}/"], cwd=tmp_path), dst)
