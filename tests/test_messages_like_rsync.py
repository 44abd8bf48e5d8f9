"""Error lines a user sees, compared with Debian's rsync on the same local copy: the
role in brackets (rsyserr() names the process), the path as full_fname() quotes it,
and the lines rsync prints bare."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import treecompare as tc


def _stderr(who: str, args: list[str], cwd: Path) -> tuple[int, list[str]]:
    prog = [tc.RSYNC] if who == "rsync" else [sys.executable, "-m", "netsync"]
    p = subprocess.run([*prog, *args], cwd=cwd, env=tc.sync_env(), capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    lines = []
    for line in p.stderr.decode().splitlines():
        if " error: " in line and "(code " in line:
            continue  # the exit line: its source location and version differ
        lines.append(line.replace("netsync:", "rsync:").replace(f"/{who}/", "/W/"))
    return p.returncode, lines


@pytest.fixture
def need_rsync() -> None:
    if not Path(tc.RSYNC).exists():
        pytest.fail("Debian's rsync is needed (apt-get install rsync)")


def test_unreadable_link_names_the_sender_and_quotes_the_path(need_rsync, tmp_path: Path) -> None:
    got = {}
    for who in ("rsync", "netsync"):
        src = tmp_path / who / "src"
        src.mkdir(parents=True)
        (src / "f").write_text("f\n")
        os.symlink("loop", src / "loop")
        got[who] = _stderr(who, ["-aL", "src/", "dst/"], tmp_path / who)
    assert got["netsync"] == got["rsync"]
    assert got["netsync"][0] == 23
    assert got["netsync"][1] == [
        f'rsync: [sender] readlink_stat("{tmp_path}/W/src/loop") failed: '
        "Too many levels of symbolic links (40)"]


def test_no_room_for_a_file_is_a_bare_line(need_rsync, tmp_path: Path) -> None:
    got = {}
    for who in ("rsync", "netsync"):
        work = tmp_path / who
        (work / "src").mkdir(parents=True)
        (work / "src" / "d").write_text("a file where the destination has a dir\n")
        (work / "dst" / "d" / "x").mkdir(parents=True)
        (work / "dst" / "d" / "x" / "y").write_text("y\n")
        got[who] = _stderr(who, ["-a", "src/", "dst/"], work)
    assert got["netsync"] == got["rsync"]
    assert got["netsync"] == (23, ["could not make way for new regular file: d"])


def test_argument_in_a_missing_dir_fails_its_change_dir(need_rsync, tmp_path: Path) -> None:
    """flist.c change_pathname(): an argument's dir is entered first; a missing one, or
    a file in its place, is a change_dir error (and an I/O error), not a link_stat."""
    got = {}
    for who in ("rsync", "netsync"):
        work = tmp_path / who
        (work / "src").mkdir(parents=True)
        (work / "src" / "f").write_text("f\n")
        got[who] = _stderr(who, ["-a", "src/nope", "gone/x", "src/f/x", "src/f", "dst/"],
                           work)
    assert got["netsync"] == got["rsync"]
    assert got["netsync"] == (23, [
        f'rsync: [sender] link_stat "{tmp_path}/W/src/nope" failed: '
        "No such file or directory (2)",
        f'rsync: [sender] change_dir "{tmp_path}/W/gone" failed: '
        "No such file or directory (2)",
        f'rsync: [sender] change_dir "{tmp_path}/W/src/f" failed: Not a directory (20)',
    ])
    assert (tmp_path / "netsync" / "dst" / "f").read_text() == "f\n"
