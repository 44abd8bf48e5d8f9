"""Deep trees and read-only directories: walking and deleting them.

* A path may fill MAXPATHLEN, so a tree may be 2,000 directories deep.  The
  sender's walk and the generator's recursive delete used Python's recursion and
  died with a RecursionError traceback past ~990 levels.  (rsync 3.5.0 itself
  stops at its own held-fd limit there, "opendir ... failed: Cannot allocate
  memory", so these runs are checked by what they leave, not against rsync.)
* A non-root user deleting its own read-only directories (a Go module cache, an
  unpacked archive): rsync gives each entry it owns u+w first (DEL_NO_UID_WRITE),
  and tries a directory's rmdir even when something in it stayed.  Checked
  against Debian's rsync: same lines, same exit code, same tree.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import treecompare as tc
import trees

DEPTH = 1100


def _deep(root: Path) -> Path:
    p = root
    p.mkdir(parents=True)
    fd = os.open(p, os.O_RDONLY)
    try:
        for _ in range(DEPTH):  # relative to a held fd: the path gets long
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
            f.write("deep\n")
    finally:
        os.close(fd)
    return root / "/".join(["d"] * DEPTH) / "f"


def test_deep_tree_is_copied_and_deleted(tmp_path: Path) -> None:
    src, dst, empty = tmp_path / "src", tmp_path / "dst", tmp_path / "empty"
    _deep(src)
    empty.mkdir()
    r = tc.run(tc.program_under_test(), ["-a", f"{src}/", f"{dst}/"], cwd=tmp_path)
    assert r.returncode == 0, r.describe()
    assert (dst / "/".join(["d"] * DEPTH) / "f").read_text() == "deep\n"
    r = tc.run(tc.program_under_test(), ["-ai", "--delete", f"{empty}/", f"{dst}/"],
               cwd=tmp_path)
    assert r.returncode == 0, r.describe()
    assert os.listdir(dst) == []
    subprocess.run(["rm", "-rf", str(src)], check=True)  # shutil.rmtree recurses
    deleted = [ln for ln in r.stdout.splitlines() if ln.startswith(b"*deleting")]
    assert deleted[0] == b"*deleting   " + b"d/" * DEPTH + b"f"  # deepest first
    assert deleted[-1] == b"*deleting   d/"
    assert len(deleted) == DEPTH + 1


def _readonly_tree(root: Path, uid: int) -> None:
    for d in ("x/y/z", "x/w"):
        (root / d).mkdir(parents=True)
    for f in ("x/y/z/f", "x/w/g", "x/h"):
        (root / f).write_bytes(b"data\n")
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.chown(Path(dirpath) / n, uid, uid)
    os.chown(root, uid, uid)
    for p, mode in (("x/y/z", 0o555), ("x/y", 0o555), ("x/h", 0o444), ("x/y/z/f", 0o444)):
        os.chmod(root / p, mode)


@pytest.mark.skipif(not trees.IS_ROOT, reason="needs root (runs as nobody)")
@pytest.mark.parametrize("extra", [[], ["--delete-after"], ["-n"]])
def test_owner_deletes_its_read_only_dirs(extra: list[str]) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    tmp_path = Path(tempfile.mkdtemp(prefix="netsync-test-"))  # pytest's is root's alone
    try:
        _owner_deletes(tmp_path, nobody, extra)
    finally:
        for dirpath, dirnames, _ in os.walk(tmp_path):
            for n in dirnames:
                os.chmod(Path(dirpath) / n, 0o755)
        shutil.rmtree(tmp_path)


def _owner_deletes(tmp_path: Path, nobody: int, extra: list[str]) -> None:
    os.chmod(tmp_path, 0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    runs = {}
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        dst = tmp_path / who
        _readonly_tree(dst, nobody)
        runs[who] = tc.run(cmd, ["-rv", "--delete", *extra, f"{empty}/", f"{dst}/"],
                           cwd=tmp_path, user=nobody)
    want, got = runs["rsync"], runs["netsync"]
    assert want.returncode == 0, want.describe()
    assert got.returncode == want.returncode, got.describe()
    assert tc.output_lines(got.stdout) == tc.output_lines(want.stdout)
    gone = sorted(os.listdir(tmp_path / "rsync"))
    assert sorted(os.listdir(tmp_path / "netsync")) == gone
    assert gone == ([] if not extra or extra != ["-n"] else ["x"])


def _protected_tree(root: Path) -> None:
    """An extraneous dir chain in the destination whose files the filters keep
    (*.txt), and one whose only content is a partial dir (a perishable rule)."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "keep").write_text("k")
    deep = root / "dst" / "gone" / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "x.txt").write_text("x")
    (root / "dst" / "gone" / "a" / "y.txt").write_text("y")
    (root / "dst" / "gone" / "junk").write_text("j")
    (root / "dst" / "old" / "sub" / ".pd").mkdir(parents=True)
    (root / "dst" / "old" / "sub" / ".pd" / "part").write_text("p")


def test_protected_contents_keep_their_dirs_like_rsync(tmp_path: Path) -> None:
    """delete.c: a dir whose listing the filters thinned is "non-empty" before its
    rmdir is tried (its line comes twice, as the rmdir fails too), the top one once;
    a perishable rule's files (the partial dir) do not keep a dir that goes."""
    out = {}
    now = time.time_ns() - 10**9  # (no -t: what either run made is "now")
    for who, prog in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        _protected_tree(tmp_path / who)
        r = tc.run(prog, ["-r", "--delete", "--exclude=*.txt", "--partial-dir=.pd",
                          "src/", "dst/"], cwd=tmp_path / who)
        out[who] = (r.returncode, r.stdout.splitlines(),
                    tc.snapshot(tmp_path / who / "dst", now))
    assert out["netsync"][0] == out["rsync"][0] == 0
    assert out["netsync"][1] == out["rsync"][1] == [
        b"cannot delete non-empty directory: gone/a/b",
        b"cannot delete non-empty directory: gone/a/b",
        b"cannot delete non-empty directory: gone/a",
        b"cannot delete non-empty directory: gone/a",
        b"cannot delete non-empty directory: gone"]
    tc.assert_same(out["rsync"][2], out["netsync"][2])
    assert not (tmp_path / "netsync" / "dst" / "old").exists()
