"""Cases found by rsync's own test suite: each runs rsync and netsync on identical setups."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import treecompare as tc

RSYNC = ["/usr/bin/rsync"]
NETSYNC = [sys.executable, "-m", "netsync"]


def both(tmp_path: Path, setup: Callable[[Path], None], *args: str, umask: int | None = None,
         extra: Callable[[Path], None] | None = None) -> tuple[subprocess.CompletedProcess[bytes], ...]:
    """Run rsync in tmp/rsync and netsync in tmp/netsync; trees must end up equal."""
    runs = []
    # mtimes from the setups or the runs compare as "now" (file times use a coarse clock)
    t0 = time.time_ns() - 100_000_000
    for who, cmd in (("rsync", RSYNC), ("netsync", NETSYNC)):
        work = tmp_path / who
        work.mkdir()
        setup(work)
        pre = (lambda: os.umask(umask)) if umask is not None else None
        runs.append(subprocess.run([*cmd, *args], cwd=work, capture_output=True, timeout=120,
                                   preexec_fn=pre))
        if extra is not None:
            extra(work)
    r, n = runs
    assert n.returncode == r.returncode, (r.stderr, n.stderr)
    tc.assert_same(tc.snapshot(tmp_path / "rsync", t0), tc.snapshot(tmp_path / "netsync", t0))
    return r, n


def test_destination_symlink_to_dir_is_followed(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "sd").mkdir()
        (w / "sd" / "f").write_bytes(b"x")
        (w / "real").mkdir()
        os.symlink("real", w / "lnk")
    both(tmp_path, setup, "-a", "sd/", "lnk/")
    assert (tmp_path / "netsync" / "real" / "f").exists()


def test_append_with_delta(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "as").mkdir()
        (w / "ad").mkdir()
        (w / "as" / "f").write_bytes(b"".join(b"%d\n" % i for i in range(5000)))
        (w / "ad" / "f").write_bytes(b"".join(b"%d\n" % i for i in range(3000)))
    both(tmp_path, setup, "-a", "--append", "--no-whole-file", "as/", "ad/")


@pytest.mark.parametrize("spec", ["g=u", "o=u", "u=g", "g-o", "g=o,o=", "D755,F644", "a+X"])
def test_chmod_clauses(tmp_path: Path, spec: str) -> None:
    def setup(w: Path) -> None:
        (w / "s" / "d").mkdir(parents=True)
        (w / "s" / "f").write_bytes(b"x")
        os.chmod(w / "s" / "f", 0o640)
        os.chmod(w / "s" / "d", 0o751)
    both(tmp_path, setup, "-r", "-p", f"--chmod={spec}", "s/", "d/")


def test_new_dirs_keep_inherited_setgid(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "src" / "dir").mkdir(parents=True)
        (w / "d").mkdir()
        os.chmod(w / "d", 0o2700)
    both(tmp_path, setup, "-r", "src/", "d/to", umask=0o077)


def test_files_from_dot_dir_split(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "from" / "dir").mkdir(parents=True)
        (w / "from" / "dir" / "x").write_bytes(b"x")
        (w / "list").write_bytes(b"from/./dir/x\n")
    both(tmp_path, setup, "-a", "--files-from=list", ".", "dst/")
    assert (tmp_path / "netsync" / "dst" / "dir" / "x").exists()


def test_safe_links_rejects_inner_dotdot(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "s").mkdir()
        os.symlink("a/a/a/../../../x", w / "s" / "l1")
        os.symlink("../s/x", w / "s" / "l2")
        os.symlink("x/..", w / "s" / "l3")
    both(tmp_path, setup, "-rl", "--safe-links", "s/", "d/")


def test_list_only_ignores_destination(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "s").mkdir()
        (w / "s" / "f").write_bytes(b"x")
    r, n = both(tmp_path, setup, "--list-only", "s/", "nod")
    assert [ln.split()[-1] for ln in r.stdout.splitlines()] == \
        [ln.split()[-1] for ln in n.stdout.splitlines()]


def test_backup_dir_on_another_filesystem(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.fail("this test needs /dev/shm on a filesystem other than the temp dir")
    bak = {}

    def setup(w: Path) -> None:
        (w / "s").mkdir()
        (w / "d").mkdir()
        (w / "s" / "reg").write_bytes(b"new")
        (w / "d" / "reg").write_bytes(b"old!")
        bak[w.name] = shm / f"netsync-test-bak-{os.getpid()}-{w.name}"

    def collect(w: Path) -> None:
        shutil.move(str(bak[w.name]), w / "bak")

    # Each run gets its own absolute backup dir on /dev/shm, moved back for comparison.
    t0 = time.time_ns() - 100_000_000
    for who, cmd in (("rsync", RSYNC), ("netsync", NETSYNC)):
        w = tmp_path / who
        w.mkdir()
        setup(w)
        p = subprocess.run([*cmd, "-a", "-b", f"--backup-dir={bak[who]}", "s/", "d/"], cwd=w,
                           capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
        collect(w)
    tc.assert_same(tc.snapshot(tmp_path / "rsync", t0), tc.snapshot(tmp_path / "netsync", t0))
    assert (tmp_path / "netsync" / "bak" / "reg").read_bytes() == b"old!"


def _missing_args_tree(w: Path) -> None:
    (w / "src" / "keep").mkdir(parents=True)
    (w / "src" / "f").write_bytes(b"a\n")
    (w / "src" / "keep" / "k").write_bytes(b"k\n")
    (w / "dst" / "gone").mkdir(parents=True)
    (w / "dst" / "keep").mkdir()
    (w / "dst" / "g").write_bytes(b"b\n")
    (w / "dst" / "gone" / "x").write_bytes(b"c\n")


@pytest.mark.parametrize("args", [
    ("-ai", "src/g", "src/gone", "src/nothere"),  # a non-empty dir needs --force
    ("-ai", "--force", "src/g", "src/gone"),
    ("-ai", "--delete", "src/gone"),
    ("-ai", "-n", "--force", "src/gone", "src/g"),
    ("-iR", "src/./g", "src/./keep"),
])
def test_delete_missing_args(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A missing source argument deletes the destination's name (itemized *deleting)."""
    r, n = both(tmp_path, _missing_args_tree, *args, "--delete-missing-args", "dst/")
    assert (n.stdout, n.stderr) == (r.stdout, r.stderr)
    assert b"*deleting" in n.stdout


def test_delete_missing_args_with_transfers(tmp_path: Path) -> None:
    """Present arguments are copied as usual.  rsync's generator runs ahead of its
    sender, so its lines may come in another order: compare them as sets."""
    r, n = both(tmp_path, _missing_args_tree, "-ai", "--force", "--delete-missing-args",
                "src/f", "src/g", "src/gone", "src/keep", "dst/")
    assert sorted(n.stdout.splitlines()) == sorted(r.stdout.splitlines())
    assert n.stderr == r.stderr == b""
    assert (tmp_path / "netsync" / "dst" / "keep" / "k").read_bytes() == b"k\n"
    assert not (tmp_path / "netsync" / "dst" / "gone").exists()
