"""--log-file: the same records as rsync's (after the timestamp and pid prefix)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import trees

PREFIX = re.compile(rb"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[\d+\] ")
SUMMARY = re.compile(rb"^sent \d+ bytes  received \d+ bytes  total size \d+$")


def _records(path: Path) -> list[bytes]:
    lines = path.read_bytes().splitlines()
    assert all(PREFIX.match(line) for line in lines), lines
    return [PREFIX.sub(b"", line) for line in lines]


def test_log_file_records_match_rsync(tmp_path: Path) -> None:
    for who in ("rsync", "netsync"):
        work = tmp_path / who
        trees.make_workdir(work, "small", "diverged")
        cmd = ["/usr/bin/rsync"] if who == "rsync" else [sys.executable, "-m", "netsync"]
        subprocess.run([*cmd, "-a", "--delete", "--log-file=log", "src/", "dst/"], cwd=work,
                       check=True, capture_output=True)
    ours, theirs = _records(tmp_path / "netsync" / "log"), _records(tmp_path / "rsync" / "log")
    # Byte counts depend on the wire; the summary line's shape and total size must agree.
    assert SUMMARY.match(ours[-1]) and SUMMARY.match(theirs[-1])
    assert ours[-1].rsplit(b" ", 1)[1] == theirs[-1].rsplit(b" ", 1)[1]
    assert sorted(ours[:-1]) == sorted(theirs[:-1])  # deletions may interleave differently
    assert ours[0] == theirs[0] == b"building file list"


@pytest.mark.parametrize("direction", ["pull", "push"])
def test_log_file_of_a_remote_run_matches_rsync(tmp_path: Path, direction: str) -> None:
    """Pulling and pushing over a remote shell, the client logs rsync's records: "receiving
    file list" / "building file list", the items (a pull's with its requests pipelined:
    each line first receives the files in flight) and the closing summary."""
    rsh = tmp_path / "localrsh"
    rsh.write_text('#!/bin/sh\nshift\nexec "$@"\n')
    rsh.chmod(0o755)
    for who in ("rsync", "netsync"):
        work = tmp_path / who
        trees.make_workdir(work, "small", "diverged")
        cmd = ["/usr/bin/rsync"] if who == "rsync" else [sys.executable, "-m", "netsync"]
        ends = [f"localhost:{work}/src/", "dst/"] if direction == "pull" \
            else ["src/", f"localhost:{work}/dst/"]
        r = subprocess.run([*cmd, "-a", "--delete", "--log-file=log",
                            "--log-file-format=%i %n%L %l", "-e", str(rsh), *ends],
                           cwd=work, capture_output=True)
        assert r.returncode == 0, r.stderr
    ours, theirs = _records(tmp_path / "netsync" / "log"), _records(tmp_path / "rsync" / "log")
    assert SUMMARY.match(ours[-1]) and SUMMARY.match(theirs[-1])
    assert sorted(ours[:-1]) == sorted(theirs[:-1])
    assert any(rec.startswith(b">f" if direction == "pull" else b"<f") for rec in ours)
    assert (b"receiving file list" if direction == "pull" else b"building file list") in ours
