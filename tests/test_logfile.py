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


_COUNTS = [
    (re.compile(rb"^(sent|Total bytes sent:|Total bytes received:|File list size:) .*"), b"\\1 N"),
    (re.compile(rb"^total size is (\d+) .*"), rb"total size is \1"),
    (re.compile(rb" at [a-z0-9_]+\.c\(\d+\) \[[a-zA-Z]+=[0-9.]+\]$"), b""),
    (re.compile(rb"^netsync"), b"rsync"),
]


def _normal(lines: list[bytes], work: Path) -> list[bytes]:
    """Byte counts (they depend on the wire and, locally, on the pipes), rsync's source
    location in its exit lines and the program's name aside."""
    out = []
    for line in lines:
        for pat, rep in _COUNTS:
            line = pat.sub(rep, line)
        out.append(line.replace(bytes(work), b"W"))
    return out


def _both(tmp_path: Path, args: list[str], remote: bool = False) -> dict[str, tuple]:
    rsh = tmp_path / "localrsh"
    rsh.write_text('#!/bin/sh\nshift\nexec "$@"\n')
    rsh.chmod(0o755)
    got = {}
    for who in ("rsync", "netsync"):
        work = tmp_path / who
        (work / "src" / "d").mkdir(parents=True)
        (work / "src" / "d" / "f").write_text("f\n")
        (work / "src" / "g").write_text("g\n")
        cmd = ["/usr/bin/rsync"] if who == "rsync" else [sys.executable, "-m", "netsync"]
        argv = [a.replace("{W}", str(work)) for a in args]
        r = subprocess.run([*cmd, "--log-file=log", *(["-e", str(rsh)] if remote else []),
                            *argv], cwd=work, capture_output=True)
        log = work / "log"
        got[who] = (r.returncode, _normal(r.stderr.splitlines(), work),
                    _normal(_records(log), work) if log.exists() else [])
    return got


@pytest.mark.parametrize("opts", [["-v"], ["-q", "--stats"], ["-v", "--stats"]])
def test_summary_lines_are_logged_instead_of_the_plain_record(tmp_path: Path,
                                                              opts: list[str]) -> None:
    """log.c rwrite(): with the summary shown (-v, --stats: INFO_GTE(STATS, 1)) its lines
    go to the log as well, -q or not, and log_exit()'s plain "sent ... total size" record
    is not written; "sending incremental file list" is FCLIENT (never logged)."""
    got = _both(tmp_path, ["-a", *opts, "src/", "dst/"])
    assert got["netsync"] == got["rsync"]
    code, _, records = got["netsync"]
    assert code == 0
    assert b"sent N" in records and b"total size is 4" in records
    assert not any(r.startswith(b"sending incremental") for r in records)
    assert not any(SUMMARY.match(r) for r in records)


def test_exit_line_is_logged(tmp_path: Path) -> None:
    """A run that ends in an error logs its closing "error ... (code N)" line too."""
    got = _both(tmp_path, ["-a", "nope/x", "src/", "dst/"])
    assert got["netsync"] == got["rsync"]
    code, _, records = got["netsync"]
    assert code == 23
    assert records[-1] == (b"rsync error: some files/attrs were not transferred "
                           b"(see previous errors) (code 23)")


@pytest.mark.parametrize("opts", [[], ["-v"]])
def test_peer_error_exit_is_not_said_twice(tmp_path: Path, opts: list[str]) -> None:
    """io.c MSG_ERROR_EXIT: the server's error line has been shown, so the client adds
    none of its own (unless its log file, without the summary, wants the exit: then
    log_exit() says it on stderr too)."""
    got = _both(tmp_path, ["-a", *opts, "src/", "localhost:{W}/no/such/dir/"], remote=True)
    assert got["netsync"] == got["rsync"]
    code, err, records = got["netsync"]
    assert code == 11
    assert err == [b'rsync: [Receiver] mkdir "W/no/such/dir" failed: '
                   b"No such file or directory (2)",
                   b"rsync error: error in file IO (code 11)"] + (
        [] if opts else [b"rsync error: error in file IO (code 11)"])
    # (the server failed before the protocol started: its lines come on its stderr)
    assert records == [b"building file list"] + (
        [] if opts else [b"sent N", b"rsync error: error in file IO (code 11)"])


def test_servers_messages_are_logged(tmp_path: Path) -> None:
    got = _both(tmp_path, ["-a", "-v", "src/", "localhost:{W}/new/"], remote=True)
    assert got["netsync"] == got["rsync"]
    assert b"created directory W/new" in got["netsync"][2]
