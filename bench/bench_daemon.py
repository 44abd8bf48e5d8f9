#!/usr/bin/env python3
"""Many stock rsync clients pulling one module: netsync --daemon vs rsync --daemon.

Both daemons serve the same generated tree from the same rsyncd.conf on loopback; N
clients (default 64) pull it at once from each, in the same run. Prints wall time,
aggregate throughput (bytes of file data per second) and the ratio netsync/rsync, and the
peak memory of one connection's process on each daemon (sampled from /proc), and the
connection processes' CPU time and minor page faults per connection (from the listener's
reaped-children counters), and the stock clients' CPU per client (the two compete for
the same cores).

Usage: bench/bench_daemon.py [--clients N] [--files F] [--rounds R] [--workdir DIR]
Issue target: aggregate throughput >= 1.0x rsyncd's.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from interop.peers import free_port, stop, wait_for_port  # noqa: E402


def make_tree(root: Path, files: int) -> int:
    rnd = random.Random(5)
    total = 0
    for i in range(files):
        d = root / f"d{i // 200:03d}"
        d.mkdir(parents=True, exist_ok=True)
        size = int(min(rnd.paretovariate(1.2) * 2000, 4 << 20))
        (d / f"f{i:05d}").write_bytes(os.urandom(size))
        total += size
    return total


def children_rss(pid: int, stop_evt: threading.Event, out: list[int]) -> None:
    """Peak RSS and peak PSS (KiB) of any single child process of ``pid`` while the
    run lasts.  PSS splits pages shared with the listener (a forked child shares the
    preloaded interpreter) between their users, so it is the memory a connection adds."""
    peak = peak_pss = 0
    while not stop_evt.is_set():
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        for k in kids:
            try:
                for line in Path(f"/proc/{k}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        peak = max(peak, int(line.split()[1]))
                    elif line.startswith("Pss:"):
                        peak_pss = max(peak_pss, int(line.split()[1]))
            except OSError:
                pass
        time.sleep(0.02)
    out.extend((peak, peak_pss))


def run_clients(port: int, n: int, work: Path, tag: str) -> tuple[float, float]:
    """(wall s, the clients' user+sys CPU s per client)."""
    dsts = [work / f"{tag}-c{i}" for i in range(n)]
    ru = os.times()
    t = time.perf_counter()
    procs = [subprocess.Popen(["rsync", "-a", f"rsync://127.0.0.1:{port}/data/", f"{d}/"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for d in dsts]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"client against {tag} failed ({p.returncode}): {err.decode()}")
    elapsed = time.perf_counter() - t
    ru2 = os.times()
    ccpu = (ru2.children_user + ru2.children_system - ru.children_user - ru.children_system) / n
    for d in dsts:
        shutil.rmtree(d, ignore_errors=True)
    return elapsed, ccpu


def run_daemon(cmd: list[str], who: str, conf: Path, clients: int,
               work: Path) -> tuple[float, int, int, float, float, float]:
    """One run of ``clients`` pulls against a fresh daemon: (wall s, peak RSS, peak PSS,
    CPU s per connection: user+sys of the reaped connection processes, and their
    minor page faults per connection, the stock clients' CPU s per client)."""
    port = free_port()
    proc = subprocess.Popen([*cmd, f"--port={port}", f"--config={conf}",
                             "--address=127.0.0.1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        if not wait_for_port(port, proc):
            raise SystemExit(f"{who} daemon did not start")
        evt, peak = threading.Event(), []
        th = threading.Thread(target=children_rss, args=(proc.pid, evt, peak), daemon=True)
        th.start()
        try:
            elapsed, ccpu = run_clients(port, clients, work, who)
        finally:
            evt.set()
            th.join()
        time.sleep(0.5)  # let the listener reap its children: their CPU counts once reaped
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK") / clients
        return (elapsed, *(peak or (0, 0)), cpu, int(fields[8]) / clients, ccpu)
    finally:
        stop(proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs per daemon, alternating which goes first; medians printed")
    ap.add_argument("--workdir", default="/tmp/netsync-bench-daemon")
    a = ap.parse_args()
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data_bytes = make_tree(work / "data", a.files)
    conf = work / "rsyncd.conf"
    conf.write_text(f"use chroot = no\nmax connections = 0\n[data]\n  path = {work / 'data'}\n"
                    "  read only = yes\n  munge symlinks = no\n")
    daemons = {
        "rsync": ["rsync", "--daemon", "--no-detach"],
        "netsync": [sys.executable, "-m", "netsync", "--daemon", "--no-detach"],
    }
    runs: dict[str, list[tuple[float, int, int, float, float, float]]] = {who: [] for who in daemons}
    for rnd in range(a.rounds):
        order = list(daemons) if rnd % 2 == 0 else list(daemons)[::-1]
        for who in order:
            runs[who].append(run_daemon(daemons[who], who, conf, a.clients, work))
    results = {who: (statistics.median(r[0] for r in rs), max(r[1] for r in rs),
                     max(r[2] for r in rs), statistics.median(r[3] for r in rs),
                     statistics.median(r[4] for r in rs),
                     statistics.median(r[5] for r in rs))
               for who, rs in runs.items()}
    total = data_bytes * a.clients
    print(f"{a.clients} clients x {a.files} files ({data_bytes:,} bytes each), "
          f"median of {a.rounds} round(s)")
    print(f"{'daemon':8} {'wall s':>8} {'MB/s':>9} {'peak RSS/conn KiB':>18} "
          f"{'peak PSS/conn KiB':>18} {'CPU ms/conn':>12} {'faults/conn':>12} "
          f"{'client CPU ms':>14}")
    for who, (elapsed, rss, pss, cpu, faults, ccpu) in results.items():
        print(f"{who:8} {elapsed:8.2f} {total / elapsed / 1e6:9.1f} {rss:18,} {pss:18,} "
              f"{cpu * 1000:12.1f} {faults:12,.0f} {ccpu * 1000:14.1f}")
    r, n = results["rsync"][0], results["netsync"][0]
    print(f"throughput ratio netsync/rsync: {r / n:.2f}")
    print(f"server CPU per connection netsync/rsync: "
          f"{results['netsync'][3] / max(results['rsync'][3], 1e-9):.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
