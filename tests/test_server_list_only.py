"""--list-only pushed to netsync as the server (generator.c list_file_entry() on the
receiving side): its lines go to the client raw, as rsync's server sends them, and
the client escapes them; a daemon module that munges symlinks lists each link's target
munged, as its receiver took it in.  Compared with Debian's rsync as the server."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_SERVER = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"


def _src(work: Path) -> None:
    src = work / "src"
    src.mkdir(parents=True)
    for name in (b"plain", b"new\nline", b"\xff\xfe-not-utf8", b"back\\slash", b"caf\xc3\xa9"):
        (src / os.fsdecode(name)).write_bytes(b"x")
    os.symlink("../outside", src / "up")
    os.symlink("plain", src / "rel")
    for p in [*src.iterdir(), src]:
        os.utime(p, (1_500_000_000, 1_500_000_000), follow_symlinks=False)


def _run(work: Path, server: str, daemon: bool, opts: list[str], srcs: list[str],
         dst: str | None) -> subprocess.CompletedProcess:
    """A stock client against ``server`` over the local remote shell: pushing to
    ``dst`` in it, or pulling ``srcs`` from it (``dst`` None); as a daemon, the module
    [w] (munging symlinks) on ``work``."""
    if daemon:
        conf = work / "rsyncd.conf"
        conf.write_text("use chroot = no\nread only = no\nmunge symlinks = yes\n"
                        + ("uid = root\ngid = root\n" if os.geteuid() == 0 else "")
                        + f"[w]\npath = {work}\n")
        path, host = f"--rsync-path={server} --config={conf}", "h::w/"
    else:
        path, host = f"--rsync-path={server}", "h:"
    ends = [*srcs, host + dst] if dst is not None else [host + s for s in srcs]
    return subprocess.run([tc.RSYNC, *opts, path, *ends], cwd=work, env=tc.sync_env(),
                          capture_output=True, timeout=120)


def _servers(tmp_path: Path) -> Iterator[tuple[str, str, Path, str]]:
    """(who, server command, its work dir with src/ made, the remote shell): rsync's
    server first, then netsync's."""
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    rsh = tc.local_rsh(tmp_path)
    for who, server in (("rsync", tc.RSYNC), ("netsync", NETSYNC_SERVER)):
        work = tmp_path / who
        _src(work)
        yield who, server, work, rsh


@pytest.mark.parametrize("daemon", [False, True], ids=["rsh", "daemon"])
def test_list_only_push_lines_as_rsync(tmp_path: Path, daemon: bool) -> None:
    out = {}
    for who, server, work, rsh in _servers(tmp_path):
        (work / "dst").mkdir()
        p = _run(work, server, daemon, ["-a", "--list-only", "-e", rsh], ["src/"], "dst/")
        assert p.returncode == 0, (who, p.stderr)
        out[who] = p.stdout.splitlines()
    assert out["netsync"] == out["rsync"]
    text = b"\n".join(out["netsync"])
    assert b" new\\#012line" in text and b" \\#377\\#376-not-utf8" in text
    assert (b"up -> /rsyncd-munged/../outside" in text) == daemon


@pytest.mark.parametrize("daemon", [False, True], ids=["rsh", "daemon"])
def test_list_only_pull_is_incremental_as_rsync(tmp_path: Path, daemon: bool) -> None:
    """A sender lists incrementally with --list-only too (only a receiver's own
    listing needs the whole list): a stock client says "receiving incremental file
    list" and lists nested dirs in rsync's order."""
    out = {}
    for who, server, work, rsh in _servers(tmp_path):
        deep = work / "src" / "d" / "e"
        deep.mkdir(parents=True)
        (deep / "f").write_bytes(b"f")
        for p in (deep / "f", deep, deep.parent, work / "src"):
            os.utime(p, (1_500_000_000, 1_500_000_000))
        p = _run(work, server, daemon, ["-a", "--list-only", "--info=flist2", "-e", rsh],
                 ["src/"], None)
        assert p.returncode == 0, (who, p.stderr)
        out[who] = p.stdout.splitlines()
    assert out["netsync"] == out["rsync"]
    assert out["netsync"][0] == b"receiving incremental file list"
    assert any(ln.endswith(b" d/e/f") for ln in out["netsync"])
