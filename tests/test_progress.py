"""netsync.progress: --progress / --info=progress2 lines as rsync 3.5 draws them."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from netsync.messages import Stats
from netsync.progress import Progress, progress_line

RSYNC = shutil.which("rsync")


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_progress_line_layout() -> None:
    assert progress_line(32768, 32768, 10670.0, 0.0, "  ") == (
        "\r         32,768 100%   10.42MB/s    0:00:00  ")
    assert progress_line(5, 3077011, 0.0, 0.0, "  ", human=0) == (
        "\r              5   0%    0.00kB/s    0:00:00  ")
    assert progress_line(10**9, 2 * 10**9, 2.5 * 1024 * 1024, 3725.9, "  ") == (
        "\r  1,000,000,000  50%    2.50GB/s    1:02:05  ")
    assert progress_line(1, 2, 1.0, 9999 * 3600 + 1, "  ").endswith("  ??:??:??  ")
    assert progress_line(1, 2, 1.0, -1, "  ").endswith("  ??:??:??  ")
    assert progress_line(3077011, 3077011, 1.0, 0.0, "", human=2).startswith("\r          3.08M 100%")


def test_file_sequence_like_rsync() -> None:
    """Two small files sent 1 ms apart, as a local rsync --progress prints them."""
    clock = Clock()
    out = io.StringIO()
    st = Stats(num_files=7)
    p = Progress(out, stats=st, clock=clock)
    st.xferred_files += 1
    p.start_file(1, 5)
    p.update(5)
    assert p.output_needs_newline
    p.end_file()
    assert not p.output_needs_newline
    clock.t += 0.001
    st.xferred_files += 1
    p.start_file(2, 1)
    p.update(1)  # data flowed <1.5 s ago: timing starts from then, at offset 0
    p.end_file()
    assert out.getvalue() == (
        "\r              5 100%    0.00kB/s    0:00:00  "
        "\r              5 100%    0.00kB/s    0:00:00 (xfr#1, to-chk=5/7)\n"
        "\r              1 100%    0.98kB/s    0:00:00  "
        "\r              1 100%    0.98kB/s    0:00:00 (xfr#2, to-chk=4/7)\n"
    )


def test_redraw_once_a_second_with_history_rate() -> None:
    clock = Clock()
    out = io.StringIO()
    st = Stats(num_files=2, xferred_files=1)
    p = Progress(out, stats=st, clock=clock)
    p.start_file(1, 10 * 1024 * 1024)
    p.update(0)
    clock.t += 0.5
    p.update(512 * 1024)  # under a second since the last sample: no redraw
    assert out.getvalue().count("\r") == 1
    clock.t += 0.5
    p.update(1024 * 1024)
    # Rate over the oldest history sample (t0, ofs 0): 1 MiB in 1 s; 9 MiB left.
    # Exactly 1024 KiB/s is not "> 1024", so rsync still says kB/s.
    assert out.getvalue().endswith("\r      1,048,576  10% 1024.00kB/s    0:00:09  ")
    for k in range(2, 8):
        clock.t += 1.0
        p.update(k * 1024 * 1024 * 2)
    lines = out.getvalue().split("\r")
    # At t=2 s the oldest sample is still (t0, 0): 4 MiB in 2 s, 6 MiB to go.
    assert lines[3] == "      4,194,304  40%    2.00MB/s    0:00:03  "
    # At t=5 s the oldest of the five samples is (1 s, 1 MiB): 9 MiB in 4 s.
    assert lines[6] == "     10,485,760 100%    2.25MB/s    0:00:00  "
    # Past the end the time left is negative, shown as ??:??:??.
    assert lines[8] == "     14,680,064 140%    2.00MB/s   ??:??:??  "
    clock.t += 2.0
    p.end_file()
    # The final line uses the whole-file average and the total elapsed time.
    assert out.getvalue().endswith(
        "\r     10,485,760 100%    1.11MB/s    0:00:09 (xfr#1, to-chk=0/2)\n")


def test_empty_file_and_newline_rule() -> None:
    out = io.StringIO()
    st = Stats(num_files=3, xferred_files=1)
    p = Progress(out, stats=st, clock=Clock())
    p.start_file(1, 0)
    p.end_file()  # no data, so no update: rsync prints only the final line
    assert out.getvalue() == "\r              0 100%    0.00kB/s    0:00:00 (xfr#1, to-chk=1/3)\n"
    p.start_file(2, 100)
    p.update(0)
    err = io.StringIO()
    p.newline_if_needed(err)  # other output first ends the half-drawn line
    assert err.getvalue() == "\n" and not p.output_needs_newline
    p.newline_if_needed(err)
    assert err.getvalue() == "\n"


def test_quiet_and_background() -> None:
    out = io.StringIO()
    p = Progress(out, stats=Stats(num_files=2, xferred_files=1), clock=Clock(), quiet=True)
    p.start_file(1, 10)
    p.update(5)
    p.end_file()
    assert out.getvalue() == "" and not p.output_needs_newline
    out = io.StringIO()
    p = Progress(out, stats=Stats(num_files=2, xferred_files=1), clock=Clock(),
                 is_foreground=lambda: False)
    p.start_file(1, 10)
    p.update(5)
    assert out.getvalue() == ""
    p.end_file()  # final lines are not suppressed
    assert out.getvalue().endswith("(xfr#1, to-chk=0/2)\n")


def test_progress2_whole_transfer() -> None:
    clock = Clock()
    out = io.StringIO()
    st = Stats(num_files=12, total_size=3077016)
    p = Progress(out, level=2, stats=st, clock=clock)
    p.flist_eof = False
    st.xferred_files, st.total_transferred_size = 1, 5
    p.start_file(1, 5)
    p.update(5)
    p.end_file()
    p.flist_eof = True
    st.xferred_files, st.total_transferred_size = 10, 3077016
    p.start_file(10, 3077011)
    clock.t += 1.0
    p.update(3077011)
    p.end_file()
    p.end_transfer()
    assert p.output_needs_newline  # progress2 never ends its line itself
    assert out.getvalue() == (
        "\r              5   0%    0.00kB/s    0:00:00  "
        "\r              5   0%    0.00kB/s    0:00:00 (xfr#1, ir-chk=10/12)"
        "\r      3,077,016 100%    2.93MB/s    0:00:00  "
        "\r      3,077,016 100%    2.93MB/s    0:00:01 (xfr#10, to-chk=1/12)"
        "\r      3,077,016 100%    2.93MB/s    0:00:01 (xfr#10, to-chk=0/12)"
    )


def test_progress2_pads_shorter_tail() -> None:
    out = io.StringIO()
    st = Stats(num_files=100, total_size=10, xferred_files=10, total_transferred_size=10)
    p = Progress(out, level=2, stats=st, clock=Clock())
    p.end_file()
    st.xferred_files = 11
    p.file_index = 95
    p.end_file()
    first, second = out.getvalue().split("\r")[1:]
    assert first.endswith("(xfr#10, to-chk=99/100)")
    assert second.endswith("(xfr#11, to-chk=4/100) ")
    assert len(first) == len(second)


_RATE = re.compile(r"[ \d]{4}\d\.\d\d[kMG]B/s")
_TIME = re.compile(r" +\d+:\d\d:\d\d")


def _normalise(text: str) -> list[str]:
    # Only transfer progress; "\rN files to consider" is the file-list counter.
    chunks = re.findall(r"\r +[\d,]+ +\d+%[^\r\n]*\n?", text)
    return [_TIME.sub(" TIME", _RATE.sub("RATE", c)) for c in chunks]


@pytest.mark.skipif(RSYNC is None, reason="rsync not installed")
def test_matches_real_rsync_progress(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    sizes = {"a.txt": 5, "empty": 0, "sub/big": 5000, "sub/mid": 70000}
    for name, size in sizes.items():
        (src / name).write_bytes(b"x" * size)
    os.symlink("a.txt", src / "lnk")
    env = dict(os.environ, LC_ALL="C.UTF-8")
    res = subprocess.run([RSYNC or "rsync", "-a", "--no-inc-recursive", "--progress",
                          "src/", "dst/"], cwd=tmp_path, env=env, capture_output=True,
                         check=True, timeout=60)
    real = _normalise(res.stdout.decode())
    # rsync's sorted list: ., a.txt, empty, lnk, sub, sub/big, sub/mid.
    order = [".", "a.txt", "empty", "lnk", "sub", "sub/big", "sub/mid"]
    out = io.StringIO()
    st = Stats(num_files=len(order))
    p = Progress(out, stats=st, clock=Clock())
    for ndx, name in enumerate(order):
        if name not in sizes:
            continue
        st.xferred_files += 1
        p.start_file(ndx, sizes[name])
        # A local sender reports after each literal chunk (at most 32 KiB).
        for ofs in range(32768, sizes[name] + 32768, 32768):
            p.update(min(ofs, sizes[name]))
        p.end_file()
    assert real == _normalise(out.getvalue())


@pytest.mark.skipif(RSYNC is None, reason="rsync not installed")
@pytest.mark.parametrize("how", ["local", "pull", "push"])
def test_first_progress_line_of_each_file_like_rsync(tmp_path: Path, how: str) -> None:
    """The first line of a file is where rsync draws it: a receiving client before the
    first data ("0   0%"), a sender (a push, or a local copy's) after the first 32 KiB
    piece.  A transfer this small takes well under the second between two lines."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(300_000))
    (src / "small").write_bytes(b"abc")
    got = {who: _normalise(out.decode())
           for who, out in _both_ways(tmp_path, how, ["-a", "--progress"]).items()}
    assert got["netsync"] == got["rsync"]
    first = "         32,768  10%" if how != "pull" else "              0   0%"
    assert got["netsync"][0].startswith("\r" + first)


@pytest.mark.skipif(RSYNC is None, reason="rsync not installed")
@pytest.mark.parametrize("how", ["local", "pull", "push"])
def test_list_count_while_building_like_rsync(tmp_path: Path, how: str) -> None:
    """-P without incremental recursion: " N files...\\r" every hundred entries while the
    list is built (a sender: from 0) or received (from 100), on its own line."""
    src = tmp_path / "src"
    for d in range(7):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(40):
            (src / f"d{d}" / f"f{f}").write_text(f"{f}\n")
    heads = {who: out.split(b"to consider\n")[0]
             for who, out in _both_ways(tmp_path, how, ["-aP", "--no-i-r"]).items()}
    assert heads["netsync"] == heads["rsync"]
    counts = b" 100 files...\r 200 files...\r288 files "
    assert heads["netsync"].endswith((b" 0 files...\r" if how != "pull" else b"\n") + counts)


def _both_ways(tmp_path: Path, how: str, opts: list[str]) -> dict[str, bytes]:
    """The stdout of rsync and of netsync copying tmp_path/src: locally, or pulling or
    pushing through a remote shell that runs Debian's rsync here."""
    import sys

    import treecompare as tc

    src = tmp_path / "src"
    rsh = tmp_path / "lsh.sh"
    rsh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    rsh.chmod(0o755)
    out = {}
    for who in ("rsync", "netsync"):
        prog = [RSYNC or "rsync"] if who == "rsync" else [sys.executable, "-m", "netsync"]
        dst = tmp_path / f"dst-{who}"
        ends = {"local": [f"{src}/", f"{dst}/"], "pull": [f"h:{src}/", f"{dst}/"],
                "push": [f"{src}/", f"h:{dst}/"]}[how]
        remote = [] if how == "local" else ["-e", str(rsh), f"--rsync-path={RSYNC}"]
        res = subprocess.run([*prog, *opts, *remote, *ends], cwd=tmp_path,
                             env=tc.sync_env(), capture_output=True, check=True, timeout=60)
        out[who] = res.stdout
    return out
