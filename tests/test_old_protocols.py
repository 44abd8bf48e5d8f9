"""What an older --protocol changes, as rsync's compat.c setup_protocol() has it: a
local copy speaks it too (rsync forks its own server), so before protocol 31 mtimes
lose their nanoseconds, before 30 there is no incremental recursion, before 29 some
options are refused (exit 2; -A and -X stay allowed locally), and before 30 --append
is --append-verify on both ends of a transfer.  Each case is checked against Debian's
rsync doing the same thing.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_SERVER = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"
NS = 123_456_789


def _need_rsync() -> None:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")


def _src(root: Path) -> Path:
    src = root / "src"
    (src / "sub").mkdir(parents=True)
    for rel, data in (("a", b"hello world\n"), ("sub/b", b"bbb\n")):
        (src / rel).write_bytes(data)
        os.utime(src / rel, ns=(1_500_000_000 * 10**9 + NS, 1_500_000_000 * 10**9 + NS))
    for d in ("sub", "."):
        os.utime(src / d, ns=(1_400_000_000 * 10**9 + NS, 1_400_000_000 * 10**9 + NS))
    return src


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=tc.sync_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=120)


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_mtime_ns for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("proto", [29, 30, 31])
def test_local_copy_keeps_nanoseconds_from_protocol_31(tmp_path: Path, proto: int) -> None:
    _need_rsync()
    got = {}
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        work = tmp_path / who
        _src(work)
        p = _run([*cmd, "-a", f"--protocol={proto}", "src/", "dst/"], work)
        assert p.returncode == 0, p.stderr
        got[who] = _mtimes(work / "dst")
    assert got["netsync"] == got["rsync"]
    frac = {n % 10**9 for n in got["netsync"].values()}
    assert frac == ({NS} if proto >= 31 else {0})


def test_local_copy_before_protocol_30_lists_everything_first(tmp_path: Path) -> None:
    _need_rsync()
    out = {}
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        work = tmp_path / who
        _src(work)
        p = _run([*cmd, "-av", "--protocol=29", "src/", "dst/"], work)
        assert p.returncode == 0, p.stderr
        out[who] = p.stdout.decode().splitlines()[:2]
    assert out["netsync"] == out["rsync"] == ["building file list ... done", "created directory dst"]


@pytest.mark.parametrize("opt, refused", [
    (["-C"], "filter rules are too modern for remote rsync."),
    (["-m"], "--prune-empty-dirs requires protocol 29 or higher (negotiated 28)."),
    (["-y"], "--fuzzy requires protocol 29 or higher (negotiated 28)."),
    (["--link-dest=x", "--link-dest=y"],
     "Using more than one --link-dest option requires protocol 29 or higher (negotiated 28)."),
    (["-X"], None),
])
def test_local_copy_refuses_what_protocol_28_cannot_carry(tmp_path: Path, opt: list[str],
                                                         refused: str | None) -> None:
    _need_rsync()
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        work = tmp_path / who
        _src(work)
        p = _run([*cmd, "-a", "--protocol=28", *opt, "src/", "dst/"], work)
        if refused is None:
            assert p.returncode == 0, (who, p.stderr)
            assert (work / "dst" / "sub" / "b").read_bytes() == b"bbb\n"
        else:
            assert p.returncode == (12 if opt == ["-C"] else 2), (who, p.stderr)
            assert p.stderr.decode().splitlines()[0] == refused
            assert not (work / "dst").exists()


@pytest.mark.parametrize("mode", ["push", "pull", "srvpush", "srvpull"])
def test_append_before_protocol_30_verifies_the_whole_file(tmp_path: Path, mode: str) -> None:
    """A destination that is a wrong prefix of the source: --append at protocol 29 is
    --append-verify, so the whole-file check fails once and the redo fixes it.  A
    prefix that is right passes the first time (no warning), which needs both ends to
    checksum the whole file."""
    _need_rsync()
    rsh = tc.local_rsh(tmp_path)
    for prefix, warned in ((b"hello", False), (b"HELLO", True)):
        work = tmp_path / f"{mode}-{prefix.decode()}"
        _src(work)
        (work / "dst").mkdir()
        (work / "dst" / "a").write_bytes(prefix)
        if mode in ("push", "pull"):
            cmd = [*tc.program_under_test(), "-e", str(rsh)]
        else:
            cmd = [tc.RSYNC, "-e", str(rsh), f"--rsync-path={NETSYNC_SERVER}"]
        ends = ["src/", "h:dst/"] if mode.endswith("push") else ["h:src/", "dst/"]
        p = _run([*cmd, "-ai", "--append", "--protocol=29", *ends], work)
        assert p.returncode == 0, p.stderr
        text = (p.stdout + p.stderr).decode()
        assert ("failed verification" in text) == warned, text
        assert (work / "dst" / "a").read_bytes() == b"hello world\n"


@pytest.mark.parametrize("mode", ["local", "push", "pull", "srvpush", "srvpull"])
@pytest.mark.parametrize("proto", [27, 29, 30])
def test_remove_source_files_before_protocol_31(tmp_path: Path, mode: str, proto: int) -> None:
    """--remove-source-files needs the generator's MSG_SUCCESS even where nothing else
    is multiplexed from the receiving side (options.c need_messages_from_generator):
    the receiving client, and a sending server, multiplex that direction too.  Locally
    the listed mtime has no nanoseconds, and the unchanged-file check does without."""
    _need_rsync()
    rsh = tc.local_rsh(tmp_path)
    work = tmp_path / "w"
    src = _src(work)
    if mode == "local":
        cmd = tc.program_under_test()
    elif mode in ("push", "pull"):
        cmd = [*tc.program_under_test(), "-e", str(rsh)]
    else:
        cmd = [tc.RSYNC, "-e", str(rsh), f"--rsync-path={NETSYNC_SERVER}"]
    ends = ["src/", "h:dst/"] if mode.endswith("push") else ["h:src/", "dst/"]
    if mode == "local":
        ends = ["src/", "dst/"]
    p = _run([*cmd, "-a", "--remove-source-files", f"--protocol={proto}", *ends], work)
    assert p.returncode == 0, p.stderr
    assert (work / "dst" / "a").read_bytes() == b"hello world\n"
    assert (work / "dst" / "sub" / "b").read_bytes() == b"bbb\n"
    assert sorted(str(q.relative_to(src)) for q in src.rglob("*")) == ["sub"]


@pytest.mark.parametrize("mode", ["local", "push"])
def test_a_perishable_rule_is_too_modern_for_protocol_29(tmp_path: Path, mode: str) -> None:
    """exclude.c send_filter_list(): a sender puts its rules in wire form even when
    the receiver does not want them (no --delete), and "-p" needs protocol 30."""
    _need_rsync()
    rsh = tc.local_rsh(tmp_path)
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        work = tmp_path / who
        _src(work)
        ends = ["src/", "dst/"] if mode == "local" else ["-e", str(rsh), "src/", "h:dst/"]
        p = _run([*cmd, "-a", "--filter=-p *.o", "--protocol=29", *ends], work)
        assert p.returncode == 2, (who, p.stderr)
        assert p.stderr.decode().splitlines()[0] == \
            "filter rules are too modern for remote rsync."
        assert not (work / "dst").exists()
        ok = _run([*cmd, "-a", "--filter=-p *.o", "--protocol=30", *ends], work)
        assert ok.returncode == 0, (who, ok.stderr)
