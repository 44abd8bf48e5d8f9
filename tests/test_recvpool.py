"""The local receiver's writer threads (recvpool): what a copy prints, and in which
order, is what the sequential receiver prints (NETSYNC_WRITERS=0) -- failures included
-- and the trees, stdout lines and exit code are rsync's."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import treecompare as tc
import trees

NOBODY = 65534


def _tree(work: Path) -> None:
    """Six dirs of 40 files; in the destination, dirs d1 and d4 are root's and
    read-only to nobody, so every file there fails to be created."""
    src, dst = work / "src", work / "dst"
    rng = random.Random(6)
    for d in range(6):
        for f in range(40):
            p = src / f"d{d}" / f"f{f:02d}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(f * 97))
            os.utime(p, ns=(1_600_000_000_000_000_000 + f, 1_600_000_000_123_456_789 + f))
    for d in (1, 4):
        (dst / f"d{d}").mkdir(parents=True)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", "--", os.fspath(work)], check=True)
    for d in (1, 4):
        os.chown(dst / f"d{d}", 0, 0)
        os.utime(dst / f"d{d}", (1_500_000_000, 1_500_000_000))
    # The top dirs' times differ in whole seconds (what is compared), so "./" is listed
    # in every run, not only in those whose two trees were made in different seconds.
    os.utime(src, (1_600_000_000, 1_600_000_000))
    os.utime(dst, (1_500_000_000, 1_500_000_000))


def _run(cmd: list[str], work: Path, writers: bool) -> tuple[int, bytes]:
    env = tc.sync_env()
    if not writers:
        env["NETSYNC_WRITERS"] = "0"
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
            *cmd, "-rtv", "--stats", "src/", "dst/"]
    # One pipe for both streams: their interleaving is part of what must not change.
    p = subprocess.run(argv, cwd=work, env=env, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    return p.returncode, p.stdout


@pytest.mark.skipif(not trees.IS_ROOT, reason="needs root (runs as nobody)")
def test_writers_print_what_the_sequential_receiver_prints(sync_cmd: list[str]) -> None:
    base = Path(tempfile.mkdtemp(prefix="netsync-test-"))
    try:
        os.chmod(base, 0o755)
        runs = {}
        now = time.time_ns() - 10**9
        for who in ("rsync", "threads", "sequential"):
            _tree(base / who)
            cmd = [tc.RSYNC] if who == "rsync" else sync_cmd
            runs[who] = _run(cmd, base / who, who != "sequential")
        rc, out = runs["threads"]
        assert rc == 23, out.decode(errors="replace")
        assert out.count(b"mkstemp") == 80, out.decode(errors="replace")
        # The same lines in the same order, errors and all (but the rate line).
        def strip(b: bytes) -> list[bytes]:
            return [re.sub(rb"/(?:rsync|threads|sequential)/", b"/W/",
                           re.sub(rb"/(?:rsync|threads|sequential)/(.*\.)[^./]{6}\"",
                                  rb"/W/\1XXXXXX\"", ln))
                    for ln in b.split(b"\n") if not ln.startswith((b"sent ", b"File list"))]
        assert strip(out) == strip(runs["sequential"][1])
        assert rc == runs["rsync"][0]
        snaps = {w: tc.snapshot(base / w, now) for w in runs}
        tc.assert_same(snaps["rsync"], snaps["threads"])
        tc.assert_same(snaps["rsync"], snaps["sequential"])
        # rsync's stdout (file names, --stats counters) is ours.
        names = {w: [ln for ln in tc.output_lines(runs[w][1])
                     if not ln.startswith((b"rsync", b"netsync", b"sent", b"Total bytes",
                                           b"File list", b"Literal", b"Matched"))
                     and b"mkstemp" not in ln] for w in ("rsync", "threads")}
        assert [ln for ln in names["threads"] if not ln.startswith(b"created")] == \
            [ln for ln in names["rsync"] if not ln.startswith(b"created")]
        # ... and so are its error lines, the temp file named by its path.
        errors = {w: sorted(ln.partition(b": ")[2] for ln in strip(runs[w][1])
                            if b"mkstemp" in ln) for w in ("rsync", "threads")}
        assert errors["threads"] == errors["rsync"]
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", "--", os.fspath(base)], check=False)
        shutil.rmtree(base)


def test_many_dirs_every_file_timed(sync_cmd: list[str], tmp_path: Path) -> None:
    """Hundreds of new dirs filled while the generator makes the next ones: each
    file gets its time (a dir's own attributes used to be set by switching the shared
    options' times off for a moment, which a writer thread could see), so a second run
    finds nothing to do, and the tree is rsync's."""
    rng = random.Random(9)
    src = tmp_path / "src"
    for d in range(150):
        for f in range(20):
            p = src / f"d{d:03d}" / f"f{f:02d}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(rng.randrange(4000)))
            os.utime(p, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000 + d * 997 + f))
    now = time.time_ns() - 10**9
    ref = tc.run([tc.RSYNC], ["-a", "src/", "ref/"], tmp_path)
    assert ref.returncode == 0, ref.describe()
    got = tc.run(sync_cmd, ["-a", "src/", "dst/"], tmp_path)
    assert got.returncode == 0, got.describe()
    again = tc.run(sync_cmd, ["-ai", "src/", "dst/"], tmp_path)
    assert (again.returncode, again.stdout) == (0, b""), again.describe()
    tc.assert_same(tc.snapshot(tmp_path / "ref", now), tc.snapshot(tmp_path / "dst", now))


def test_writers_keep_within_the_fd_limit(sync_cmd: list[str], tmp_path: Path) -> None:
    """Files waiting for a writer hold their source open: never more than a quarter
    of the fds the process may open (a low `ulimit -n` still copies everything)."""
    import resource

    src = tmp_path / "src"
    for d in range(4):
        for f in range(150):
            p = src / f"d{d}" / f"f{f:03d}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x" * f)
    for d in (*src.iterdir(), src):  # (a dir time within the copy's second is left as is)
        os.utime(d, (1_500_000_000, 1_500_000_000))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    p = subprocess.run([*sync_cmd, "-a", "src/", "dst/"], cwd=tmp_path, env=tc.sync_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                       preexec_fn=low_limit)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    tc.assert_same(tc.snapshot(src), tc.snapshot(tmp_path / "dst"))
