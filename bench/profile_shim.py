#!/usr/bin/env python3
"""Run netsync's CLI with a stop-gap for the source-fd leak, optionally under cProfile.

    python bench/profile_shim.py [--cprofile OUT] -- -a src/ dst/

Why: in a local copy, ``Sender.send_file`` opens the source and hands the fd to the
receiver twice: as ``FileData.source_fd`` and inside the ``_tokens`` generator, whose
``finally`` closes it. When the receiver copies with copy_file_range it never iterates
the generator, and closing a generator that never started does not run its ``finally``:
every copied file leaks one fd, so a tree with more files than ``ulimit -n`` fails with
EMFILE (code 23). Until the engine fixes that, this shim wraps the token stream so that
closing it unstarted closes the fd too, which lets bench_local.py measure the tiny tree:

    python bench/bench_local.py --cmd "python bench/profile_shim.py --"

Set NETSYNC_BENCH_NOFIX=1 to run netsync unpatched (e.g. to show the leak), and
NETSYNC_BENCH_NOGC=1 to run with the cyclic garbage collector off (to measure what
collections over a million tracked FileEntry objects cost); NETSYNC_BENCH_GCSTATS=1
prints the time spent in collections, per generation, to stderr at exit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


class _OwnedTokens:
    """A token stream that owns the source fd whether or not it is ever iterated."""

    __slots__ = ("gen", "fd", "started")

    def __init__(self, gen, fd: int) -> None:
        self.gen, self.fd, self.started = gen, fd, False

    def __iter__(self):
        self.started = True
        return iter(self.gen)

    def close(self) -> None:
        if not self.started and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
        self.gen.close()


def _patch() -> None:
    from netsync.sender import Sender

    orig = Sender.send_file

    def send_file(self, req):
        data = orig(self, req)
        if data.source_fd is not None:
            data.tokens = _OwnedTokens(data.tokens, data.source_fd)
        return data

    Sender.send_file = send_file  # type: ignore[method-assign]


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
    if not os.environ.get("NETSYNC_BENCH_NOFIX"):
        _patch()
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
