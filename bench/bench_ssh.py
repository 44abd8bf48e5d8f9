#!/usr/bin/env python3
"""netsync -> stock rsync vs rsync -> rsync over ssh on loopback, in the same run.

Starts a throwaway sshd (as the tests do), then for each scenario runs both clients
against the same stock `rsync --server` and prints medians and netsync/rsync ratios of
wall time and bytes on the wire (what `--stats` reports as sent + received):

  full     push of a generated tree into an empty destination
  noop     the same push again (nothing to do)
  delta    a big file with scattered 1-byte edits and inserted runs, pushed with --no-W

Usage: bench/bench_ssh.py [--files N] [--big-mib M] [--rounds R] [--workdir DIR]
Issue targets: full <= 1.0x rsync's time, no-op <= 1.3x, delta <= 1.5x time and
<= 1.02x bytes on the wire.  Needs root (sshd) and Debian's rsync/openssh-server.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from interop.peers import start_sshd, stop  # noqa: E402

STATS = re.compile(rb"Total bytes sent: ([\d,]+).*?Total bytes received: ([\d,]+)", re.S)


def make_tree(root: Path, files: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    for i in range(files):
        d = root / f"d{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        # Long-tailed sizes: mostly small, a few large.
        size = int(min(rnd.paretovariate(1.2) * 2000, 8 << 20))
        (d / f"f{i:05d}").write_bytes(os.urandom(size))


def make_delta_pair(src: Path, dst: Path, mib: int, seed: int = 9) -> None:
    rnd = random.Random(seed)
    data = bytearray(b"".join(rnd.randbytes(1 << 20) for _ in range(mib)))
    (dst / "big").write_bytes(data)
    for _ in range(64):  # 64 scattered 1-byte edits
        pos = rnd.randrange(len(data))
        data[pos] ^= 0xFF
    for _ in range(3):  # 3 inserted 100-byte runs
        pos = rnd.randrange(len(data))
        data[pos:pos] = rnd.randbytes(100)
    (src / "big").write_bytes(bytes(data))


def run(cmd: list[str]) -> tuple[float, int]:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    m = STATS.search(p.stdout)
    wire = int(m.group(1).replace(b",", b"")) + int(m.group(2).replace(b",", b"")) if m else -1
    return elapsed, wire


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/netsync-bench-ssh")
    a = ap.parse_args()
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sshd = start_sshd(work / "sshd")
    try:
        src = work / "src"
        make_tree(src, a.files)
        dsrc, ddst0 = work / "dsrc", work / "ddst0"
        dsrc.mkdir()
        ddst0.mkdir()
        make_delta_pair(dsrc, ddst0, a.big_mib)
        clients = {"rsync": ["rsync"], "netsync": [sys.executable, "-m", "netsync"]}
        rows = []
        for scenario in ("full", "noop", "delta"):
            res: dict[str, list[tuple[float, int]]] = {k: [] for k in clients}
            for rnd in range(a.rounds):
                for who, cmd in clients.items():
                    dst = work / f"dst-{who}"
                    if scenario == "full":
                        # A fresh name each round; the old copies go at the end.  Right
                        # after a big delete ext4 spends ~200 us per create scanning the
                        # freed inodes (recently_deleted()), which made the remote
                        # receiver's time, not the client's, swing by seconds per round.
                        if dst.exists():
                            dst.rename(work / f"old-{who}-{rnd}")
                    if scenario == "delta":
                        shutil.rmtree(dst, ignore_errors=True)
                        shutil.copytree(ddst0, dst)
                        args = ["-a", "--no-W", "--stats", f"{dsrc}/"]
                    else:
                        args = ["-a", "--stats", f"{src}/"]
                    res[who].append(run([*cmd, "-e", sshd.rsh, *args, f"{sshd.login}:{dst}/"]))
            med = {w: (statistics.median(t for t, _ in r), statistics.median(b for _, b in r))
                   for w, r in res.items()}
            rows.append((scenario, med))
            if scenario == "full":
                for old in work.glob("old-*"):
                    shutil.rmtree(old)
        print(f"{'scenario':8} {'rsync s':>9} {'netsync s':>10} {'time x':>7} "
              f"{'rsync bytes':>13} {'netsync bytes':>14} {'bytes x':>8}")
        for scenario, med in rows:
            (rt, rb), (nt, nb) = med["rsync"], med["netsync"]
            print(f"{scenario:8} {rt:9.2f} {nt:10.2f} {nt / rt:7.2f} {rb:13,} {nb:14,} "
                  f"{(nb / rb if rb > 0 else float('nan')):8.3f}")
    finally:
        stop(sshd.proc)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
