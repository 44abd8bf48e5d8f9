"""The netsync command as a user runs it: exit codes and messages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import trees

NETSYNC = [sys.executable, "-m", "netsync"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*NETSYNC, *args], cwd=cwd, capture_output=True, timeout=120)


def test_version_and_help() -> None:
    v = run("--version")
    assert v.returncode == 0
    assert v.stdout.splitlines()[0].startswith(b"netsync  version ")
    assert b"protocol version 32" in v.stdout.splitlines()[0]
    h = run("--help")
    assert h.returncode == 0 and b"--delete" in h.stdout


def test_capabilities_are_what_netsync_does() -> None:
    """--version and -VV name rsync's capabilities as netsync has them: batch files
    (--write-batch/--read-batch), -s (--secluded-args, off unless asked) and --iconv
    work; crtimes do not (Linux keeps no creation time to set)."""
    import json

    text = run("--version").stdout.decode()
    caps = " ".join(text.split("Capabilities:\n", 1)[1].split("Checksum list:", 1)[0].split())
    assert "atimes, batchfiles, inplace" in caps
    assert "xattrs, optional secluded-args, iconv, prealloc, stop-at, no crtimes" in caps
    got = json.loads(run("-VV").stdout)["capabilities"]
    assert got["batchfiles"] is True and got["secluded_args"] == "optional"
    assert got["iconv"] is True and got["crtimes"] is False
    if Path("/usr/bin/rsync").exists():  # the same capability names as rsync's -VV
        ref = subprocess.run(["/usr/bin/rsync", "-VV"], capture_output=True, timeout=60)
        assert set(json.loads(ref.stdout)["capabilities"]) == set(got)


def test_unknown_and_unimplemented_options_exit_1() -> None:
    r = run("--no-such-option", "a", "b")
    assert r.returncode == 1
    assert b"--no-such-option: unknown option" in r.stderr
    r = run("-aN", "a", "b")
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == b"netsync: This netsync does not support --crtimes (-N)"


def test_missing_source_is_exit_23_and_rest_is_copied(tmp_path: Path) -> None:
    (tmp_path / "ok").write_bytes(b"data")
    r = run("-a", "nope", "ok", "dst/", cwd=tmp_path)
    assert r.returncode == 23
    assert b'link_stat "' in r.stderr and b"nope\" failed: No such file or directory (2)" in r.stderr
    assert (tmp_path / "dst" / "ok").read_bytes() == b"data"


def test_many_files_to_a_file_is_exit_3(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    (tmp_path / "b").write_bytes(b"2")
    (tmp_path / "f").write_bytes(b"3")
    r = run("a", "b", "f", cwd=tmp_path)
    assert r.returncode == 3
    assert b"destination must be a directory when copying more than 1 file" in r.stderr
    assert (tmp_path / "f").read_bytes() == b"3"


@pytest.mark.parametrize("prog", ["rsync", "netsync"])
def test_lost_stdout_does_not_abort_the_sync(tmp_path: Path, prog: str) -> None:
    """The reader going away (`| head -1`) or a full disk under stdout: rsync (which
    ignores SIGPIPE, and whose stdio drops what it cannot write) finishes the copy and
    exits 0, saying nothing; so does netsync."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2500):  # ~150 KiB of -v lines: more than a pipe holds
        (src / f"a-file-with-a-name-long-enough-to-fill-the-pipe-{i:05d}").write_bytes(b"x")
    cmd = ["rsync"] if prog == "rsync" else NETSYNC
    p = subprocess.Popen([*cmd, "-av", "src/", "dst/"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline() == b"sending incremental file list\n"
    p.stdout.close()  # the reader goes away, like `| head -1`
    err = p.stderr.read()
    assert p.wait(timeout=120) == 0
    assert err == b""
    _assert_nothing_left_to_do(tmp_path)
    shutil.rmtree(tmp_path / "dst")
    with open("/dev/full", "wb") as full:
        r = subprocess.run([*cmd, "-av", "src/", "dst/"], cwd=tmp_path, stdout=full,
                           stderr=subprocess.PIPE, timeout=120)
    assert (r.returncode, r.stderr) == (0, b"")
    _assert_nothing_left_to_do(tmp_path)


def test_closed_stdout_fd(tmp_path: Path) -> None:
    """Started with fd 1 closed (`>&-`): no traceback, the copy made, exit 0 (rsync
    itself ends with 12 here, its socketpair having taken fd 1)."""
    trees.make_tree(tmp_path / "src", "small")
    r = subprocess.run([*NETSYNC, "-av", "src/", "dst/"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=120, preexec_fn=lambda: os.close(1))
    assert (r.returncode, r.stderr) == (0, b"")
    _assert_nothing_left_to_do(tmp_path)


@pytest.mark.parametrize("prog", ["rsync", "netsync"])
@pytest.mark.parametrize("how", ["full", "closed"])
def test_a_message_lost_on_stderr_is_exit_13(tmp_path: Path, prog: str, how: str) -> None:
    """log.c: an error message that cannot be written (stderr on a full disk, or
    closed) makes the exit code RERR_MESSAGEIO."""
    cmd = ["rsync"] if prog == "rsync" else NETSYNC
    with open("/dev/full", "wb") as full:
        r = subprocess.run([*cmd, "-a", "nope/", "dst/"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=full, timeout=120,
                           preexec_fn=(lambda: os.close(2)) if how == "closed" else None)
    assert r.returncode == 13


def _assert_nothing_left_to_do(tmp_path: Path) -> None:
    check = subprocess.run(["rsync", "-ani", "src/", "dst/"], cwd=tmp_path,
                           capture_output=True, check=True)
    assert check.stdout == b""  # the copy is complete


def test_many_files_under_a_low_fd_limit(tmp_path: Path) -> None:
    """Each source file is closed after its copy (a leak would hit EMFILE here)."""
    import resource

    src = tmp_path / "s"
    src.mkdir()
    for i in range(1500):
        (src / f"f{i}").write_bytes(b"x")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    r = subprocess.run([*NETSYNC, "-a", "s/", "d/"], cwd=tmp_path, capture_output=True,
                       timeout=300, preexec_fn=limit)
    assert r.returncode == 0, r.stderr[-500:]
    assert len(list((tmp_path / "d").iterdir())) == 1500
