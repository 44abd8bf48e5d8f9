#!/usr/bin/env python3
"""Where the per-file time and memory of netsync's file-list build go.

    python bench/profile_flist.py SRC_DIR [DST_DIR]

Times, on an existing tree (warm caches, best of --rounds):
  scandir    listing every directory (names only), the floor for any walk
  +lstat     the same plus one os.lstat per entry (what Sender._walk_dir does)
  build      Sender.build_file_list(), the real thing, split into walk and _finish
  sortkey    building flist.entry_key for every entry (part of _finish)
  generator  with DST_DIR (an up-to-date copy): Generator.run(), i.e. the no-op pass
and memory:
  bytes/entry  tracemalloc: what the finished file list holds, per entry
  peak/entry   tracemalloc peak during the build (the _finish sort's keys included)
  VmHWM        the process's peak RSS after the build and after the generator
Nothing is written to SRC_DIR; the generator pass runs with the same options as `-a`.
"""

from __future__ import annotations

import argparse
import gc
import os
import stat
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from netsync import flist as F  # noqa: E402
from netsync.flist import WalkOptions  # noqa: E402
from netsync.report import Reporter  # noqa: E402
from netsync.sender import Sender  # noqa: E402


def vm(field: str) -> int:
    with open("/proc/self/status") as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    return 0


def walk_names(top: bytes, do_lstat: bool) -> int:
    n = 0
    stack = [top]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            items = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]  # d_type: no stat
        items.sort()
        for nm, is_dir in items:
            p = d + b"/" + nm
            n += 1
            if do_lstat:
                is_dir = stat.S_ISDIR(os.lstat(p).st_mode)
            if is_dir:
                stack.append(p)
    return n


def wopts() -> WalkOptions:
    return WalkOptions(recursive=True, links=True, devices=True, specials=True)


def reporter() -> Reporter:
    return Reporter(prog="netsync", info={}, quiet=False, itemize=False, out_format=None,
                    log_file=None, log_file_format=None, dry_run=False, eight_bit=False,
                    human=0, progress=False, preserve_mtimes=True)


def build(src: bytes, split: bool = False) -> tuple[F.FileList, float, float]:
    s = Sender(wopts(), reporter())
    t_fin = 0.0
    if split:
        orig = s._finish

        def timed_finish() -> None:
            nonlocal t_fin
            t = time.perf_counter()
            orig()
            t_fin = time.perf_counter() - t

        s._finish = timed_finish  # type: ignore[method-assign]
    t = time.perf_counter()
    fl = s.build_file_list([src + b"/"])
    return fl, time.perf_counter() - t, t_fin


def best(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run_generator(fl: F.FileList, dst: bytes) -> float:
    from netsync.generator import Generator, GenOptions
    from netsync.metadata import AttrOptions
    from netsync.receiver import ReceiveOptions, Receiver

    umask = os.umask(0)
    os.umask(umask)
    am_root = os.geteuid() == 0
    a = AttrOptions(perms=True, owner=True, group=True, times=True, am_root=am_root, umask=umask)
    rep = reporter()
    g = GenOptions(recursive=True, links=True, devices=True, specials=True, whole_file=True,
                   implied_dirs=True, am_root=am_root, inc_recurse=True)
    recv = Receiver(ReceiveOptions(), a, rep)
    s = Sender(wopts(), rep)
    s.flist = fl
    gen = Generator(g, a, fl, dst, recv, s.send_file, rep)
    t = time.perf_counter()
    gen.run()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst", nargs="?")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    src = os.fsencode(os.path.abspath(args.src))
    hwm0 = vm("VmHWM")

    n = walk_names(src, False)
    t_scan = best(lambda: walk_names(src, False), args.rounds)
    t_lstat = best(lambda: walk_names(src, True), args.rounds)
    t_build = t_fin = float("inf")
    for _ in range(args.rounds):
        gc.collect()
        fl, tb, tf = build(src, split=True)
        if tb < t_build:
            t_build, t_fin = tb, tf
        del fl
    gc.collect()

    # Memory: RSS around a plain build, then a build under tracemalloc (not timed).
    rss0 = vm("VmRSS")
    fl, _, _ = build(src)
    rss1 = vm("VmRSS")
    hwm_build = vm("VmHWM")
    del fl
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fl, _, _ = build(src)
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    entries = len(fl.entries)
    t_key = best(lambda: [F.entry_key(e) for e in fl.entries], args.rounds)
    e0 = next(e for e in fl.entries if stat.S_ISREG(e.mode))
    def own(v: object) -> int:  # ints -5..256 are shared, they cost the entry nothing
        return 0 if isinstance(v, int) and -5 <= v <= 256 else sys.getsizeof(v)

    parts = {k: own(getattr(e0, k)) for k in ("name", "mtime_ns", "atime_ns", "mode", "size",
                                               "uid", "gid")}
    one = sys.getsizeof(e0) + sum(parts.values()) + 8
    us = 1e6 / entries
    print(f"entries            {entries} (walk saw {n})")
    print(f"scandir only       {t_scan:7.3f}s  {t_scan * us:6.2f} us/entry")
    print(f"scandir+lstat      {t_lstat:7.3f}s  {t_lstat * us:6.2f} us/entry")
    print(f"build_file_list    {t_build:7.3f}s  {t_build * us:6.2f} us/entry "
          f"(walk {t_build - t_fin:.3f}s, _finish {t_fin:.3f}s)")
    print(f"entry_key (all)    {t_key:7.3f}s  {t_key * us:6.2f} us/entry")
    print(f"flist held         {(cur - base) / entries:7.1f} bytes/entry (tracemalloc)")
    print(f"build peak         {(peak - base) / entries:7.1f} bytes/entry (tracemalloc)")
    print(f"RSS growth         {(rss1 - rss0) * 1024 / entries:7.1f} bytes/entry (untraced build)")
    print(f"one regular entry  {one} bytes: FileEntry {sys.getsizeof(e0)}, "
          + ", ".join(f"{k} {v}" for k, v in parts.items() if v) + ", list slot 8")
    print(f"VmHWM after build  {hwm_build / 1024:7.1f} MiB (start {hwm0 / 1024:.1f})")
    if args.dst:
        t_gen = run_generator(fl, os.fsencode(os.path.abspath(args.dst)))
        print(f"generator no-op    {t_gen:7.3f}s  {t_gen * us:6.2f} us/entry")
        print(f"VmHWM after gen    {vm('VmHWM') / 1024:7.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
