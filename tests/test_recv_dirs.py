"""Where a receiver's relative --temp-dir, --backup-dir and --*-dest paths start
(main.c get_local_name() and do_recv()): in the destination dir, or for a single file
copied to a new name in that file's parent dir, with the local name used for the
backup and the --link-dest match; with --list-only from where the command runs.

Each case runs with Debian's rsync and with netsync in three ways: a local copy,
netsync pulling from an rsync server, and an rsync client pushing to netsync as the
server (both over a remote shell that runs the server here), and both must give the
same exit code, the same lines and the same tree.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_SERVER = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"
MODES = ("local", "pull", "srvpush")


def _tree(root: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if stat.S_ISREG(st.st_mode):
            out[rel] = ("file", p.read_bytes(), st.st_nlink)
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir",)
        else:
            out[rel] = ("other",)
    return out


def _run(tmp: Path, mode: str, who: str, setup, args: list[str], src: str, dest: str | None
         ) -> tuple[int, list[str], dict[str, tuple], Path]:
    """One run in a fresh work dir: (exit code, output lines, tree, work dir)."""
    work = tmp / f"{mode}-{who}"
    (work / "src" / "sub").mkdir(parents=True)
    (work / "src" / "a").write_bytes(b"new data\n")
    (work / "src" / "sub" / "b").write_bytes(b"bbb\n")
    for p in ("src/a", "src/sub/b", "src/sub", "src"):
        os.utime(work / p, (1_500_000_000, 1_500_000_000))
    setup(work)
    rsync, netsync = [tc.RSYNC], tc.program_under_test()
    ends = [src] + ([dest] if dest is not None else [])
    if mode == "local":
        cmd = rsync if who == "rsync" else netsync
    elif mode == "pull":
        cmd = [*(rsync if who == "rsync" else netsync), "-e", tc.local_rsh(tmp)]
        ends[0] = "h:" + ends[0]
    else:
        cmd = [*rsync, "-e", tc.local_rsh(tmp),
               f"--rsync-path={'rsync' if who == 'rsync' else NETSYNC_SERVER}"]
        ends[-1] = "h:" + ends[-1]
    p = subprocess.run([*cmd, *args, *ends], cwd=work, env=tc.sync_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    lines = []
    for ln in (p.stdout + p.stderr).decode(errors="replace").splitlines():
        if " error: " in ln or "SIGUSR1" in ln:
            continue  # exit lines: their program name and source line differ by design
        lines.append(ln.replace(str(work), "WORK"))
    return p.returncode, sorted(lines), _tree(work), work


def _both(tmp: Path, mode: str, setup, args: list[str], src: str, dest: str | None):
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    r = _run(tmp, mode, "rsync", setup, args, src, dest)
    n = _run(tmp, mode, "netsync", setup, args, src, dest)
    assert (n[0], n[1]) == (r[0], r[1]), f"netsync {n[:2]} vs rsync {r[:2]}"
    assert n[2] == r[2]
    return n


@pytest.mark.parametrize("mode", MODES)
def test_relative_temp_dir_is_under_the_destination(tmp_path: Path, mode: str) -> None:
    code, lines, tree, _ = _both(tmp_path, mode, lambda w: (w / "dst" / "t").mkdir(parents=True),
                                 ["-a", "-T", "t"], "src/", "dst/")
    assert code == 0 and lines == []
    assert tree["dst/a"][1] == b"new data\n" and tree["dst/sub/b"][1] == b"bbb\n"
    assert "dst/t" in tree and not any(k.startswith("dst/t/") for k in tree)


@pytest.mark.parametrize("mode", MODES)
def test_single_file_to_a_new_name_uses_its_parent_dir(tmp_path: Path, mode: str) -> None:
    code, lines, tree, _ = _both(tmp_path, mode, lambda w: (w / "d" / "t").mkdir(parents=True),
                                 ["-a", "-T", "t"], "src/a", "d/newname")
    assert code == 0 and lines == []
    assert tree["d/newname"][1] == b"new data\n"


@pytest.mark.parametrize("mode", MODES)
def test_missing_temp_dir_fails_before_writing(tmp_path: Path, mode: str) -> None:
    code, lines, tree, _ = _both(tmp_path, mode, lambda w: (w / "d").mkdir(),
                                 ["-a", "-T", "t"], "src/a", "d/newname")
    assert code == 1
    assert lines == ["The temp-dir does not exist: t"]
    assert "d/newname" not in tree


def _old_dest(w: Path) -> None:
    (w / "d" / "bk").mkdir(parents=True)
    (w / "d" / "newname").write_bytes(b"old\n")


@pytest.mark.parametrize("mode", MODES)
def test_single_file_backup_keeps_the_local_name(tmp_path: Path, mode: str) -> None:
    code, lines, tree, _ = _both(tmp_path, mode, _old_dest,
                                 ["-a", "-b", "--backup-dir=bk"], "src/a", "d/newname")
    assert code == 0 and lines == []
    assert tree["d/bk/newname"][1] == b"old\n" and "d/bk/a" not in tree
    assert tree["d/newname"][1] == b"new data\n"


def _linkable(w: Path) -> None:
    (w / "d" / "c").mkdir(parents=True)
    ref = w / "d" / "c" / "newname"
    ref.write_bytes(b"new data\n")
    os.utime(ref, (1_500_000_000, 1_500_000_000))


@pytest.mark.parametrize("mode", MODES)
def test_single_file_link_dest_matches_the_local_name(tmp_path: Path, mode: str) -> None:
    code, lines, tree, work = _both(tmp_path, mode, _linkable,
                                    ["-a", "-i", "--link-dest=c"], "src/a", "d/newname")
    assert code == 0 and lines == []  # a --link-dest match is not itemized at -i
    assert tree["d/newname"][2] == 2
    assert os.path.samefile(work / "d" / "newname", work / "d" / "c" / "newname")


@pytest.mark.parametrize("mode", ("local", "pull"))
def test_list_only_checks_the_receivers_dirs_from_here(tmp_path: Path, mode: str) -> None:
    code, lines, _, _ = _both(tmp_path, mode, lambda w: None,
                              ["-a", "--list-only", "-T", "nonex"], "src/", None)
    assert code == 1 and lines == ["The temp-dir does not exist: nonex"]
    code, lines, _, _ = _both(tmp_path / "2", mode, lambda w: None,
                              ["-a", "--list-only", "--link-dest=zz"], "src/", None)
    assert code == 0
    assert "--link-dest arg does not exist: WORK/zz" in lines
    assert len(lines) == 5  # the warning and the four listed names
