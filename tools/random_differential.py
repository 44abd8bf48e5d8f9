#!/usr/bin/env python3
"""Random option sets, netsync against Debian's rsync, on the test suite's trees.

For each seed: a random handful of rsync options (OPTIONS below), a tree and a
destination state from tests/trees.py, the same run by rsync and by netsync on two
copies, then the exit codes, the stdout lines (tests/treecompare.py's rules) and the
resulting trees compared. Differences are printed; agreeing seeds leave nothing behind.

    python tools/random_differential.py --mode local --seeds 0 200
    python tools/random_differential.py --mode pull --seeds 1000 1100   # netsync as client
    python tools/random_differential.py --mode srvpush --seeds 0 100    # as --rsync-path server

Modes: local; pull/push (netsync the client of a C rsync server); srvpull/srvpush (a C
rsync client with netsync as the server); dpull/dpush (a C rsync client and netsync as
the daemon, a module on the work dir, daemon over the remote shell). The remote modes
run the "server" through a remote shell that executes locally (no ssh needed). A difference is a lead, not a
verdict: message interleaving, --progress rates and local byte counts differ by design,
and some races differ in rsync itself (see the tenth session's note).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import treecompare as tc  # noqa: E402
import trees  # noqa: E402

RSYNC = "/usr/bin/rsync"
OPTIONS = [
    "-a", "-r", "-rt", "-rlpt", "-aH", "-av", "-ai", "-aii", "--delete", "--delete-after",
    "--delete-before", "--delete-delay", "--delete-excluded", "-c", "--size-only", "-I", "-u",
    "--existing", "--ignore-existing", "--inplace", "--append", "--partial", "-b",
    "--backup-dir=bk", "--suffix=.old", "-O", "-J", "-m", "--exclude=*.txt", "--include=*/",
    "--exclude=d*/", "--filter=- *.bin", "-C", "--max-size=2k", "--min-size=100", "-x", "-L",
    "-k", "-K", "--safe-links", "--copy-unsafe-links", "--munge-links", "-n", "--stats", "-h",
    "--out-format=%n %i %l", "--no-i-r", "-d", "--numeric-ids", "--chmod=D755,F644", "-W",
    "--no-W", "-S", "--preallocate", "--remove-source-files", "--prune-empty-dirs", "--force",
    "--ignore-errors", "--max-delete=2", "--modify-window=1", "--omit-dir-times",
    "--no-perms", "-y", "--delay-updates", "--compare-dest=../cmp", "--link-dest=../cmp",
    "--copy-dest=../cmp", "--mkpath", "-z", "--partial-dir=.pd", "--append-verify",
    "--no-implied-dirs", "--checksum-choice=md5", "-E", "--super", "--fake-super", "-X", "-A",
    "--ignore-missing-args", "-F", "--filter=P keep/", "--filter=H *.o", "--no-t",
]
# --wide draws from these as well (kept apart so the seeds above keep their meaning).
# Not -U: the copies' atimes move as the runs read them (relatime), so its "u" is a race.
WIDE: list[str | tuple[str, ...]] = [
    "--protocol=27", "--protocol=28", "--protocol=29", "--protocol=30", "-R", "--no-R",
    "--block-size=700", "--block-size=2048", "--compress-choice=zstd",
    "--compress-choice=lz4", "--compress-choice=zlibx", "--compress-level=9",
    "--checksum-choice=xxh64", "--checksum-choice=xxh3", "--checksum-choice=md4",
    "--delete-missing-args", "--ignore-times", "--old-dirs", "--list-only", "-T",
    "--temp-dir={work}/tmpd", "--max-delete=0", "--existing", "--info=stats2",
    "--info=flist2,name2", "--out-format=%o %f %b %c %L", "--itemize-changes",
    "--copy-dirlinks", "--keep-dirlinks", "--no-implied-dirs", "--skip-compress=bin",
    "--size-only", "--update", "--backup", "--backup-dir=../bkd", "--sparse", "--inplace",
    "--whole-file", "--checksum-seed=7", "--exclude=*/", "--include=*.txt",
    "--filter=-p *.o", "--filter=R .keep", "--filter=: .rules", "--delete-excluded",
    "--chown=0:0", "--usermap=*:0", "--groupmap=*:0", "--omit-link-times", "-8",
    "--human-readable", "--partial", "--min-size=1", "--max-size=1M", "--bwlimit=100M",
    "--timeout=60", "--fuzzy", ("--fuzzy", "--fuzzy"), "--dirs", "--links", "--hard-links",
    # the sources' shape: "src" without its slash, several sources, a --files-from list
    # (ff.txt, beside src: names in it, one missing), a "/./" cut for -R
    "@noslash", "@multi", "@ff", ("@ff", "--from0"), "@dot",
]
_SHAPES = {
    "@noslash": ["src"],
    "@multi": ["src/sub", "src/app.conf", "src/deep/"],
    "@ff": ["src/"],
    "@dot": ["src/./sub", "src/./deep"],
}
_FF_NAMES = [b"sub/f01.txt", b"deep/d00", b"app.conf", b"missing", b"sub/inner/"]
_BASE = ("-a", "-r", "-d")


def _shell(work: Path) -> str:
    """A remote shell that runs the command here: `SHELL host cmd...`."""
    rsh = work / "lsh.sh"
    rsh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    rsh.chmod(rsh.stat().st_mode | stat.S_IXUSR)
    return str(rsh)


def one(seed: int, mode: str, top: Path, always: tuple[str, ...] | list[str] = (),
        wide: bool = False) -> list[str]:
    rnd = random.Random(seed)
    opts = rnd.sample(OPTIONS + WIDE if wide else OPTIONS, rnd.randint(1, 5))
    opts = [w for o in opts for w in ((o,) if isinstance(o, str) else o)]
    opts += [o for o in always if o not in opts]
    shapes = [o for o in opts if o.startswith("@")]
    opts = [o for o in opts if not o.startswith("@")]
    sources = _SHAPES[shapes[0]] if shapes else ["src/"]
    if "@ff" in shapes:
        opts.append("--files-from=ff.txt")
    if not any(o.startswith(_BASE) for o in opts):
        opts.insert(0, "-a")
    tree = rnd.choice(["mixed", "small"])
    dest = rnd.choice(["none", "diverged", "same", "empty"])
    base = top / f"s{seed}"
    pristine = base / "p"
    trees.make_tree(pristine / "src", tree, seed=seed)
    trees.make_dest(pristine / "src", pristine / "dst", dest, seed=seed)
    for d in ("cmp", "tmpd", "bkd"):
        (pristine / d).mkdir(parents=True, exist_ok=True)
    (pristine / "ff.txt").write_bytes((b"\0" if "--from0" in opts else b"\n").join(_FF_NAMES))
    netsync = [sys.executable, "-m", "netsync"]
    server = f"env PYTHONPATH={REPO / 'src'} {sys.executable} -m netsync"
    rsh = _shell(base)
    t0 = time.time_ns() - 10**9
    runs = {}
    for who in ("rsync", "netsync"):
        work = base / who
        trees.copy_tree(pristine, work)
        # ("{work}": rsync 3.5.0 refuses a temp file path with "..", see conformance.md)
        cmd, args, ends = [RSYNC], [o.replace("{work}", str(work)) for o in opts], \
            [*sources, "dst/"]
        if mode == "local":
            if who == "netsync":
                cmd = netsync
        elif mode in ("dpull", "dpush"):
            conf = base / f"{who}.conf"
            conf.write_text("use chroot = no\nread only = no\n"
                            + ("uid = root\ngid = root\n" if os.geteuid() == 0 else "")
                            + f"[w]\npath = {work}\n")
            path = RSYNC if who == "rsync" else server
            args += ["-e", rsh, f"--rsync-path={path} --config={conf}"]
            ends = ([*sources, "h::w/dst/"] if mode == "dpush"
                    else [*(f"h::w/{s}" for s in sources), "dst/"])
        else:
            path = "rsync"
            if who == "netsync":
                if mode in ("pull", "push"):
                    cmd = netsync
                else:
                    path = server
            args += ["-e", rsh, f"--rsync-path={path}"]
            # The remote shell runs in work too: -R gets the same relative path there.
            rdir = "" if "-R" in opts else f"{work}/"
            ends = ([*sources, f"h:{rdir}dst/"] if mode.endswith("push")
                    else [*(f"h:{rdir}{s}" for s in sources), "dst/"])
        p = subprocess.run([*cmd, *args, *ends], cwd=work, capture_output=True, timeout=120,
                           env=tc.sync_env())
        runs[who] = (p, tc.snapshot(work, t0))
    (r, rsnap), (n, nsnap) = runs["rsync"], runs["netsync"]
    problems = []
    if r.returncode != n.returncode:
        problems.append(f"exit code: rsync {r.returncode}, netsync {n.returncode}")
    if "--stats" not in opts and not any(o.startswith("--info=stats") for o in opts):
        try:
            tc.assert_same_output(tc.output_lines(r.stdout.replace(b"/rsync/", b"/W/")),
                                  tc.output_lines(n.stdout.replace(b"/netsync/", b"/W/")))
        except AssertionError as ex:
            problems.append(str(ex)[:2000])
    try:
        tc.assert_same(rsnap, nsnap)
    except AssertionError as ex:
        problems.append(str(ex)[:2000])
    if b"Traceback" in n.stderr:
        problems.append("netsync traceback:\n" + n.stderr.decode(errors="replace")[-1500:])
    if problems:
        problems.insert(0, f"=== seed {seed} mode {mode} opts {opts} tree {tree} dest {dest}"
                           f" (kept in {base})")
        problems.append("rsync stderr: " + r.stderr.decode(errors="replace")[:600])
        problems.append("netsync stderr: " + n.stderr.decode(errors="replace")[:600])
    else:
        shutil.rmtree(base, ignore_errors=True)
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="local",
                    choices=("local", "pull", "push", "srvpull", "srvpush", "dpull", "dpush"))
    ap.add_argument("--seeds", type=int, nargs=2, default=(0, 100), metavar=("FIRST", "END"))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--always", action="append", default=[], metavar="OPT",
                    help="add OPT to every seed's options (e.g. --always=-H)")
    ap.add_argument("--wide", action="store_true",
                    help="draw from WIDE's options too (protocols, -R, choices, ...)")
    a = ap.parse_args()
    if not os.path.exists(RSYNC):
        print(f"needs Debian's rsync at {RSYNC}", file=sys.stderr)
        return 2
    top = a.workdir or Path(tempfile.mkdtemp(prefix="netsync-rdiff-"))
    top.mkdir(parents=True, exist_ok=True)
    differing = 0
    for seed in range(*a.seeds):
        problems = one(seed, a.mode, top, a.always, a.wide)
        if problems:
            differing += 1
            print("\n".join(problems), flush=True)
    print(f"{differing} of {a.seeds[1] - a.seeds[0]} seeds differ (work dir {top})")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
