#!/usr/bin/env python3
"""Run netsync's CLI in-process, optionally under cProfile or with GC instrumentation.

    python bench/profile_shim.py [--cprofile OUT] -- -a src/ dst/
    python bench/bench_local.py --cmd "python bench/profile_shim.py --"

(It once also carried a stop-gap for a source-fd leak in local copies; the engine has
closed the fd itself since FileData.close(), so the shim no longer patches anything.)
Set NETSYNC_BENCH_NOGC=1 to run with the cyclic garbage collector off (to measure what
collections over many tracked FileEntry objects cost); NETSYNC_BENCH_GCSTATS=1 prints
the time spent in collections, per generation, to stderr at exit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def _gc_stats() -> None:
    import atexit
    import gc
    import time

    spent = [0.0, 0.0, 0.0]
    count = [0, 0, 0]
    t0 = [0.0]

    def cb(phase: str, info: dict) -> None:
        if phase == "start":
            t0[0] = time.perf_counter()
        else:
            spent[info["generation"]] += time.perf_counter() - t0[0]
            count[info["generation"]] += 1

    gc.callbacks.append(cb)
    atexit.register(lambda: sys.stderr.write(
        "gc: " + ", ".join(f"gen{g} {count[g]}x {spent[g]:.3f}s" for g in range(3))
        + f", total {sum(spent):.3f}s\n"))


def main() -> int:
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--cprofile"]:
        out, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if os.environ.get("NETSYNC_BENCH_NOGC"):
        import gc

        gc.disable()
    if os.environ.get("NETSYNC_BENCH_GCSTATS"):
        _gc_stats()
    from netsync.cli import main as cli_main

    if out is None:
        return cli_main(args)
    import cProfile

    prof = cProfile.Profile()
    try:
        return prof.runcall(cli_main, args)
    finally:
        prof.dump_stats(out)


if __name__ == "__main__":
    raise SystemExit(main())
