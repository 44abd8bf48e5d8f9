"""No-op trees for the memory tests: many empty files, an up-to-date copy made of hard
links (cheap in disk blocks), and the peak RSS of a sync over them."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import treecompare as tc

PER_DIR = 500


def empty_tree(work: Path, dirs: int) -> None:
    """src/ with dirs x PER_DIR empty files; dst/ an up-to-date copy made of hard links
    (a no-op for -a without -H), cheap in disk blocks."""
    src, dst = work / "src", work / "dst"
    for d in range(dirs):
        sub = f"d{d:04d}"
        (src / sub).mkdir(parents=True)
        (dst / sub).mkdir(parents=True)
        for i in range(PER_DIR):
            rel = f"{sub}/f{i:05d}.dat"
            os.mknod(src / rel, 0o100644)
            os.link(src / rel, dst / rel)
    for d in [*sorted(p.name for p in src.iterdir()), ""]:
        st = (src / d).stat()
        os.utime(dst / d, ns=(st.st_atime_ns, st.st_mtime_ns))


def peak_kib(cmd: list[str], cwd: Path) -> int:
    """Largest VmHWM of the process while it runs (sampled, VmHWM only grows)."""
    p = subprocess.Popen(cmd, cwd=cwd, env=tc.sync_env(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    status = f"/proc/{p.pid}/status"
    while p.poll() is None:
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.002)
    out, err = p.communicate()
    assert p.returncode == 0, err.decode(errors="replace")
    # A no-op: nothing is itemized even with -i.
    assert [ln for ln in out.split(b"\n") if ln and not ln.startswith(b".d")] == [], out
    return peak
