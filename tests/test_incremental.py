"""Incremental recursion in local runs: the file list is listed and generated a
directory at a time, so a no-op's memory does not grow with the number of files, and
trees bigger than the sender's lookahead (1,000 entries) still come out exactly as
real rsync's (-i lines, deletions, the resulting tree).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import treecompare as tc
from memtrees import PER_DIR, empty_tree, peak_kib


@pytest.fixture(scope="module")
def noop_trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    small = tmp_path_factory.mktemp("inc-small")
    large = tmp_path_factory.mktemp("inc-large")
    empty_tree(small, 2)      # 1,000 files
    empty_tree(large, 100)    # 50,000 files
    return small, large


def _growth_per_file(sync_cmd: list[str], trees: tuple[Path, Path], extra: list[str]) -> float:
    small, large = trees
    args = ["-ai", *extra, "src/", "dst/"]
    # Best of three: a sample can only under-read the peak.
    lo = max(peak_kib([*sync_cmd, *args], small) for _ in range(3))
    hi = max(peak_kib([*sync_cmd, *args], large) for _ in range(3))
    return (hi - lo) * 1024 / ((100 - 2) * PER_DIR)


def test_noop_memory_does_not_grow_with_file_count(sync_cmd, noop_trees) -> None:
    # The whole list costs ~300 bytes a file (rsync's ~100); a streamed one keeps only
    # directories (here 1 per 500 files) and one directory's entries at a time.
    per_file = _growth_per_file(sync_cmd, noop_trees, [])
    assert per_file < 25, f"peak memory grows {per_file:.0f} bytes per file"


def test_whole_list_options_do_grow(sync_cmd, noop_trees) -> None:
    # --delete-after needs the whole list (rsync turns incremental recursion off for
    # it too): the same measure must see that, or the test above proves nothing.
    per_file = _growth_per_file(sync_cmd, noop_trees, ["--delete-after"])
    assert per_file > 40, f"peak memory grows only {per_file:.0f} bytes per file"


# --- bigger than the lookahead: same output and tree as rsync ------------------------

def _big_tree(work: Path) -> None:
    """~3,000 entries three levels deep, and a dst that differs in every way the
    generator handles per directory (new/changed/missing files, extra files and dirs
    to delete, a file where a dir belongs and the reverse, changed modes)."""
    src, dst = work / "src", work / "dst"
    t = 1_600_000_000
    for a in range(6):
        for b in range(5):
            d = src / f"a{a}" / f"b{b}"
            d.mkdir(parents=True)
            for i in range(90):
                p = d / f"f{i:03d}"
                p.write_bytes(b"x" * ((a * 7 + b * 3 + i) % 50))
                os.utime(p, (t + i, t + i))
            (d / "c").mkdir()
            (d / "c" / "leaf").write_bytes(b"leaf")
    (src / "top.txt").write_bytes(b"top")
    subprocess.run(["cp", "-a", "--", os.fspath(src), os.fspath(dst)], check=True)
    for a in range(6):
        for b in range(5):
            d = dst / f"a{a}" / f"b{b}"
            if (a + b) % 4 == 0:
                (d / f"f{b:03d}").write_bytes(b"changed!")
            if (a + b) % 5 == 1:
                (d / "f010").unlink()
                (d / "extra").mkdir()
                (d / "extra" / "x").write_bytes(b"x")
            if (a + b) % 6 == 2:
                os.chmod(d / "f020", 0o600)
                (d / "zz-extra.txt").write_bytes(b"gone")
            if a == 3 and b == 1:
                shutil.rmtree(d / "c")
                (d / "c").write_bytes(b"a file where a dir belongs")
                (d / "f030").unlink()
                (d / "f030").mkdir()
    shutil.rmtree(dst / "a5" / "b4")
    for a in range(6):  # dir times as in src where the dir itself is unchanged
        for b in range(5):
            for rel in (f"a{a}/b{b}", f"a{a}"):
                if (dst / rel).is_dir():
                    st = (src / rel).stat()
                    os.utime(dst / rel, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("args", [
    ("-ai", "--delete"),
    ("-ain", "--delete"),
    ("-rlti", "--existing"),
    ("-av", "--delete", "--chmod=go-w"),
    ("-ai", "--delete", "--exclude=f01*", "--filter=P zz-*"),
    ("-ai", "--delete", "--max-delete=3"),
    ("-ai", "--remove-source-files"),
    ("-ai", "--delete", "--backup", "--backup-dir=../bak"),
], ids=lambda a: "_".join(a))
def test_big_tree_like_rsync(sync_cmd, tmp_path: Path, args: tuple[str, ...]) -> None:
    base = tmp_path / "base"
    _big_tree(base)
    runs = {}
    snaps = {}
    for who in ("rsync", "test"):
        subprocess.run(["cp", "-a", "--", os.fspath(base), os.fspath(tmp_path / who)],
                       check=True)
    time.sleep(1.1)
    now_ns = time.time_ns() - 10**9  # anything stamped from here on compares as NOW
    for who, cmd in (("rsync", [tc.RSYNC]), ("test", sync_cmd)):
        work = tmp_path / who
        runs[who] = tc.run(cmd, [*args, "src/", "dst/"], work)
        snaps[who] = tc.snapshot(work, now_ns)
    assert runs["test"].returncode == runs["rsync"].returncode, runs["test"].describe()
    lines = tc.output_lines(runs["rsync"].stdout)
    assert len(lines) > 5, lines  # the case does change things
    tc.assert_same_output(lines, tc.output_lines(runs["test"].stdout))
    tc.assert_same(snaps["rsync"], snaps["test"])


def test_progress_counts_like_an_incremental_list(sync_cmd, tmp_path: Path) -> None:
    """--progress says ir-chk while the list is still growing and to-chk=0/N at the end
    (N = every listed entry), as rsync does with incremental recursion."""
    src = tmp_path / "src"
    for d in range(30):
        (src / f"d{d:02d}").mkdir(parents=True)
        for f in range(60):
            (src / f"d{d:02d}" / f"f{f:02d}").write_bytes(b"%d" % (d * f))
    total = 1 + 30 + 30 * 60
    for who, cmd in (("rsync", [tc.RSYNC]), ("test", sync_cmd)):
        r = tc.run(cmd, ["-a", "--progress", "src/", f"dst-{who}/"], tmp_path)
        assert r.returncode == 0, r.describe()
        chk = [ln.rsplit(b"(", 1)[1] for ln in r.stdout.replace(b"\r", b"\n").split(b"\n")
               if b"-chk=" in ln]
        assert len(chk) == 30 * 60, (who, chk[:3])
        assert b"ir-chk=" in chk[0], (who, chk[0])
        assert chk[-1] == b"xfr#%d, to-chk=0/%d)" % (30 * 60, total), (who, chk[-1])
