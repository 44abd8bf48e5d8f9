#!/usr/bin/env python3
"""Local-sync benchmark: netsync vs rsync on the same trees, in the same run.

Trees (built once under --work, reused while their parameters match):
  many:  20,000 files with long-tailed sizes in ~100-file dirs, plus two 256 MiB files
  tiny:  1,000,000 files of 0-100 bytes in 1,000-file dirs
(--scale multiplies the file counts and the big-file size.)

Per tree, each round runs both programs (alternating who goes first):
  full  `-a src/ dst.<prog>/` into an empty destination
  noop  the same command again (nothing to do), once with the memory sampler and
        --noop-repeats more times without it (the time is those runs' median)
and records wall time and peak memory: "mem" is the sum over all processes of the run
of each one's peak RSS (VmHWM, read from /proc every 20 ms while they live), "rss" the
largest sampled sum of their current RSS.
Prints medians and netsync/rsync ratios, and checks the targets in bench/README.md.
Page caches are not dropped (that needs a privileged, machine-wide action); a warm-up
round runs first so both programs see warm caches.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
RSYNC = "/usr/bin/rsync"
TARGETS = {  # (tree, measure) -> max ratio netsync/rsync
    ("many", "full"): 0.8,
    ("many", "noop"): 1.2,
    ("tiny", "full"): 0.8,
    ("tiny", "noop"): 1.2,
    ("tiny", "noop-mem"): 2.0,
}


# --- tree generation ------------------------------------------------------------------

def _write_files(root: Path, sizes: list[int], per_dir: int, rng: random.Random) -> None:
    t0 = 1_500_000_000
    for i, size in enumerate(sizes):
        d = root / f"d{i // per_dir:05d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        p = d / f"f{i:07d}.dat"
        with open(p, "wb") as f:
            if size:
                f.write(rng.randbytes(size))
        t = (t0 + i) * 10**9 + rng.randrange(10**9)
        os.utime(p, ns=(t, t))


def make_many(root: Path, scale: float, seed: int = 1) -> None:
    rng = random.Random(seed)
    n = max(1, round(20_000 * scale))
    # Long tail: most files a few KiB, some MiBs (lognormal, capped at 64 MiB).
    sizes = [min(int(rng.lognormvariate(8.5, 2.0)), 64 * MiB) for _ in range(n)]
    _write_files(root, sizes, 100, rng)
    big = max(1, int(256 * MiB * scale))
    chunk = rng.randbytes(MiB)
    for name in ("big1.img", "big2.img"):
        with open(root / name, "wb") as f:
            left = big
            while left > 0:  # vary each MiB a little so nothing compresses/dedups trivially
                piece = chunk[: min(left, MiB)]
                f.write(rng.randbytes(16) + piece[16:])
                left -= len(piece)
        os.utime(root / name, ns=(1_400_000_000 * 10**9,) * 2)


def make_tiny(root: Path, scale: float, seed: int = 2) -> None:
    rng = random.Random(seed)
    n = max(1, round(1_000_000 * scale))
    _write_files(root, [rng.randrange(0, 101) for _ in range(n)], 1000, rng)


GENERATORS = {"many": make_many, "tiny": make_tiny}


def ensure_tree(work: Path, name: str, scale: float) -> Path:
    src = work / name / "src"
    stamp = work / name / "params.json"
    params = {"scale": scale, "version": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == params and src.is_dir():
        return src
    shutil.rmtree(work / name, ignore_errors=True)
    print(f"generating {name} tree (scale {scale}) ...", flush=True)
    t = time.perf_counter()
    GENERATORS[name](src, scale)
    stamp.write_text(json.dumps(params))
    print(f"  done in {time.perf_counter() - t:.1f}s", flush=True)
    return src


# --- measuring ------------------------------------------------------------------------

@dataclass
class Sample:
    seconds: float
    tree_rss_kib: int  # peak of the summed RSS of the run's processes (sampled)
    hwm_kib: int  # sum over the run's processes of each one's own peak RSS (VmHWM)


def _group_memory_kib(pgid: int, hwm: dict[int, int]) -> int:
    """Current summed RSS of process group `pgid`; updates pid -> VmHWM in `hwm`."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid:  # pgrp, the 5th field counting "pid (comm)"
                continue
            with open(f"/proc/{pid}/status", "rb") as f:
                status = dict(ln.split(b":", 1) for ln in f.read().splitlines() if b":" in ln)
            rss = int(status.get(b"VmRSS", b"0 kB").split()[0])
            peak = int(status.get(b"VmHWM", b"0 kB").split()[0])
        except (OSError, IndexError, ValueError):
            continue
        total += rss
        hwm[int(pid)] = max(hwm.get(int(pid), 0), peak)
    return total


def measure(argv: list[str], cwd: Path, repeats: int = 0) -> Sample:
    """Wall time and memory of one run.  ru_maxrss from wait4 is useless here: a child
    forked from this Python process starts with the parent's high-water mark.

    With ``repeats``, the command is also run that many more times without the memory
    sampler (which walks /proc every 20 ms: on two cores that is felt in a 0.15 s run)
    and the time reported is the median of those runs."""
    if repeats:
        first = measure(argv, cwd)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL).returncode
            times.append(time.perf_counter() - t0)
            if rc != 0:
                sys.exit(f"{shlex.join(argv)} failed with exit {rc}")
        return Sample(statistics.median(times), first.tree_rss_kib, first.hwm_kib)
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         start_new_session=True)
    peak = 0
    hwm: dict[int, int] = {}
    done = threading.Event()

    def sampler() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _group_memory_kib(p.pid, hwm))
            done.wait(0.02)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    p.wait()
    elapsed = time.perf_counter() - t0
    done.set()
    th.join()
    if p.returncode != 0:
        sys.exit(f"{shlex.join(argv)} failed with exit {p.returncode}")
    return Sample(elapsed, peak, sum(hwm.values()))


@dataclass
class Results:
    samples: dict[tuple[str, str, str], list[Sample]] = field(default_factory=dict)

    def add(self, tree: str, measure_: str, prog: str, s: Sample) -> None:
        self.samples.setdefault((tree, measure_, prog), []).append(s)

    def median(self, tree: str, measure_: str, prog: str, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples[(tree, measure_, prog)])


def _remove(path: Path) -> None:
    # Untimed, but on 200,000-file trees shutil.rmtree (pure Python) drags the bench out.
    subprocess.run(["rm", "-rf", "--", str(path)], check=True)


def run_tree(tree: str, src: Path, progs: dict[str, list[str]], rounds: int,
             res: Results, settle: float = 0.0, noop_repeats: int = 5) -> None:
    base = src.parent
    order = list(progs)
    for rnd in range(rounds + 1):  # round 0 is the warm-up and is not recorded
        for prog in order if rnd % 2 == 0 else order[::-1]:
            dst = base / f"dst.{prog}"
            _remove(dst)
            for measure_ in ("full", "noop"):
                # Flush the previous run's dirty pages and deletions first, or their
                # writeback lands on whoever runs next (seen: 8 s vs 30 s for one copy).
                os.sync()
                if measure_ == "full" and settle:
                    # ext4 will not reuse an inode freed in the last 60 s: right after
                    # deleting a big tree, every file create scans past the freed ones
                    # (perf: 36% of a full copy in ext4 recently_deleted()).
                    time.sleep(settle)
                s = measure([*progs[prog], "-a", "src/", f"dst.{prog}/"], base,
                            noop_repeats if measure_ == "noop" else 0)
                if rnd:
                    res.add(tree, measure_, prog, s)
                    print(f"  {tree:5} {measure_:5} round {rnd} {prog:7} {s.seconds:8.2f}s "
                          f"tree-rss {s.tree_rss_kib / 1024:8.1f} MiB "
                          f"sum-of-peaks {s.hwm_kib / 1024:8.1f} MiB", flush=True)
            # Only one destination at a time: disk use stays at twice the source.
            _remove(dst)


def report(res: Results, trees: list[str]) -> bool:
    print("\nmedians (netsync / rsync):")
    ok = True
    rows = []
    for tree in trees:
        for measure_ in ("full", "noop"):
            r = res.median(tree, measure_, "rsync", "seconds")
            n = res.median(tree, measure_, "netsync", "seconds")
            rows.append((tree, measure_, f"{n:.2f}s", f"{r:.2f}s", n / r))
        for label, attr in (("noop-mem", "hwm_kib"), ("noop-rss", "tree_rss_kib")):
            rm = res.median(tree, "noop", "rsync", attr)
            nm = res.median(tree, "noop", "netsync", attr)
            rows.append((tree, label, f"{nm / 1024:.1f}MiB", f"{rm / 1024:.1f}MiB", nm / rm))
    print(f"  {'tree':5} {'measure':12} {'netsync':>10} {'rsync':>10} {'ratio':>6}  target")
    for tree, measure_, n, r, ratio in rows:
        target = TARGETS.get((tree, measure_))
        verdict = ""
        if target is not None:
            good = ratio <= target
            ok &= good
            verdict = f"<= {target}  {'ok' if good else 'MISSED'}"
        print(f"  {tree:5} {measure_:12} {n:>10} {r:>10} {ratio:6.2f}  {verdict}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/netsync-bench"))
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply file counts and big-file sizes (e.g. 0.1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trees", default="many,tiny", help="comma list of: many, tiny")
    ap.add_argument("--cmd", default=os.environ.get("NETSYNC_TEST_CMD"),
                    help="netsync command (default $NETSYNC_TEST_CMD or python -m netsync); "
                    "name the interpreter by its full path: a pyenv shim adds ~80 ms a run")
    ap.add_argument("--rsync", default=RSYNC)
    ap.add_argument("--noop-repeats", type=int, default=5,
                    help="no-op runs timed without the memory sampler, per round (median)")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds to wait after deleting a destination before a full "
                    "copy (65 lets ext4 reuse the freed inodes; see README)")
    args = ap.parse_args()

    netsync = shlex.split(args.cmd) if args.cmd else [sys.executable, "-m", "netsync"]
    if not args.cmd:  # make `python -m netsync` work from a source checkout
        src_dir = Path(__file__).resolve().parent.parent / "src"
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(src_dir), os.environ.get("PYTHONPATH")) if p)
    # An installed netsync has compiled .pyc files; with PYTHONDONTWRITEBYTECODE set (as on
    # the dev machines) every run would recompile the sources. Cache them outside the tree.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(args.work / "pycache"))
    progs = {"rsync": [args.rsync], "netsync": netsync}
    print(f"netsync: {shlex.join(netsync)}\nrsync:   {args.rsync}\nwork:    {args.work}\n"
          f"scale {args.scale}, {args.rounds} rounds (+1 warm-up); page caches stay warm")
    trees = [t.strip() for t in args.trees.split(",") if t.strip()]
    res = Results()
    for tree in trees:
        src = ensure_tree(args.work, tree, args.scale)
        run_tree(tree, src, progs, args.rounds, res, args.settle, args.noop_repeats)
    return 0 if report(res, trees) else 1


if __name__ == "__main__":
    raise SystemExit(main())
