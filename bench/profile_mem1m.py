#!/usr/bin/env python3
"""Peak memory of a no-op re-sync over many files, netsync vs rsync, at low disk cost.

    python bench/profile_mem1m.py [--files 1000000] [--work /tmp/netsync-mem] [--cmd CMD]

The tree holds N empty files (1,000 per directory), so it costs inodes and directory
blocks only (~0.3 GB at 1M, against ~4 GB for bench_local.py's tiny tree, whose 0-100
byte files take a 4 KiB block each); the destination is made of hard links to the
source, which is an up-to-date copy for `-a` (no -H), so both runs are no-ops.
Memory is measured as in bench_local.py (sum of each process's VmHWM), time as wall
and as the CPU time (user + sys) of the run's processes, which is steadier on a busy box.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_local import RSYNC, measure  # noqa: E402


def make_tree(work: Path, n: int) -> None:
    stamp = work / "params"
    if stamp.exists() and stamp.read_text() == str(n):
        return
    shutil.rmtree(work, ignore_errors=True)
    print(f"making {n} empty files + hard-linked copy under {work} ...", flush=True)
    t = time.perf_counter()
    src, dst = work / "src", work / "dst"
    mode = 0o100644
    for i in range(n):
        if i % 1000 == 0:
            sub = f"d{i // 1000:05d}"
            os.makedirs(src / sub)
            os.makedirs(dst / sub)
        rel = f"d{i // 1000:05d}/f{i:07d}.dat"
        os.mknod(src / rel, mode)  # an empty regular file in one syscall
        os.link(src / rel, dst / rel)
    for d in sorted(src.iterdir()):  # directory times and modes as in the source
        st = d.stat()
        os.utime(dst / d.name, ns=(st.st_atime_ns, st.st_mtime_ns))
    st = src.stat()
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    stamp.write_text(str(n))
    print(f"  done in {time.perf_counter() - t:.1f}s", flush=True)


def cpu_of_children() -> float:
    r = os.times()
    return r.children_user + r.children_system


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/netsync-mem"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cmd", default=os.environ.get("NETSYNC_TEST_CMD"))
    ap.add_argument("--clean", action="store_true", help="delete the tree afterwards")
    args = ap.parse_args()
    netsync = shlex.split(args.cmd) if args.cmd else [sys.executable, "-m", "netsync"]
    if not args.cmd:
        os.environ["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "src")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(args.work.parent / "netsync-pycache"))
    make_tree(args.work, args.files)
    progs = {"rsync": [RSYNC], "netsync": netsync}
    res: dict[str, list[tuple[float, float, int]]] = {p: [] for p in progs}
    for rnd in range(args.rounds + 1):  # round 0 warms caches and is not recorded
        for prog in progs if rnd % 2 == 0 else list(progs)[::-1]:
            c0 = cpu_of_children()
            s = measure([*progs[prog], "-a", "src/", "dst/"], args.work)
            cpu = cpu_of_children() - c0
            if rnd:
                res[prog].append((s.seconds, cpu, s.hwm_kib))
            print(f"  round {rnd} {prog:7} wall {s.seconds:7.2f}s cpu {cpu:7.2f}s "
                  f"sum-of-peaks {s.hwm_kib / 1024:7.1f} MiB", flush=True)
    med = {p: [statistics.median(x[i] for x in v) for i in range(3)] for p, v in res.items()}
    n, r = med["netsync"], med["rsync"]
    print(f"\n{args.files} files, medians   netsync     rsync   ratio")
    print(f"  wall (s)              {n[0]:8.2f}  {r[0]:8.2f}  {n[0] / r[0]:6.2f}")
    print(f"  cpu (s)               {n[1]:8.2f}  {r[1]:8.2f}  {n[1] / max(r[1], 1e-3):6.2f}")
    print(f"  peak mem (MiB)        {n[2] / 1024:8.1f}  {r[2] / 1024:8.1f}  {n[2] / r[2]:6.2f}")
    print(f"  netsync bytes/file    {n[2] * 1024 / args.files:8.0f}")
    if args.clean:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
