"""Snapshot a directory tree as a user would inspect it, and diff two snapshots.

A snapshot maps each relative name (bytes, b"." for the root) to an `Entry` holding
type, permission bits, owner, size, content hash, sparseness, symlink target, device
number and mtime.  Hardlink groups are reported under the key `HARDLINKS`.

mtimes at or after `now_ns` are replaced by the marker NOW: they were stamped by the
program under test ("set to the current time"), so only the fact matters, not the value.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shlex
import stat
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOW = -1
HARDLINKS = b"\0hardlink-groups"


@dataclass(frozen=True)
class Entry:
    kind: str  # file, dir, symlink, fifo, chr, blk, sock
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    mtime_ns: int  # or NOW
    size: int | None = None
    sha256: str | None = None
    sparse: bool | None = None
    target: bytes | None = None
    rdev: tuple[int, int] | None = None


_KINDS = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
          (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"),
          (stat.S_ISSOCK, "sock"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "unknown"


def _hash(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def entry(path: bytes | str, now_ns: int | None = None) -> Entry:
    p = os.fsencode(path)
    st = os.lstat(p)
    kind = _kind(st.st_mode)
    mtime = st.st_mtime_ns
    if now_ns is not None and mtime >= now_ns:
        mtime = NOW
    extra: dict[str, Any] = {}
    if kind == "file":
        extra = {"size": st.st_size, "sha256": _hash(p),
                 "sparse": st.st_blocks * 512 < st.st_size}
    elif kind == "symlink":
        extra = {"target": os.readlink(p)}
    elif kind in ("chr", "blk"):
        extra = {"rdev": (os.major(st.st_rdev), os.minor(st.st_rdev))}
    return Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime, **extra)


def snapshot(root: str | os.PathLike[str] | bytes, now_ns: int | None = None,
             sparse: bool = True) -> dict[bytes, Any]:
    """Everything below (and including) root; missing root gives {}.

    sparse=False drops the sparseness flag (only meaningful when -S is under test).
    """
    r = os.fsencode(root)
    if not os.path.lexists(r):
        return {}
    snap: dict[bytes, Any] = {}
    inodes: dict[tuple[int, int], list[bytes]] = defaultdict(list)
    stack = [b""]
    snap[b"."] = entry(r, now_ns)
    while stack:
        rel = stack.pop()
        for name in os.listdir(os.path.join(r, rel) if rel else r):
            sub = os.path.join(rel, name) if rel else name
            full = os.path.join(r, sub)
            e = entry(full, now_ns)
            if not sparse and e.sparse is not None:
                e = Entry(**{**e.__dict__, "sparse": None})
            snap[sub] = e
            st = os.lstat(full)
            if e.kind == "dir":
                stack.append(sub)
            elif e.kind != "symlink" and st.st_nlink > 1:
                inodes[(st.st_dev, st.st_ino)].append(sub)
    snap[HARDLINKS] = frozenset(frozenset(v) for v in inodes.values() if len(v) > 1)
    return snap


def _fmt(e: Any) -> str:
    if isinstance(e, Entry):
        fields = {k: v for k, v in e.__dict__.items() if v is not None}
        if fields.get("mtime_ns") == NOW:
            fields["mtime_ns"] = "NOW"
        fields["mode"] = oct(e.mode)
        return " ".join(f"{k}={v!r}" if k != "kind" else str(v) for k, v in fields.items())
    if isinstance(e, frozenset):
        return repr(sorted(sorted(g) for g in e))
    return repr(e)


def diff(expected: dict[bytes, Any], actual: dict[bytes, Any],
         names: tuple[str, str] = ("rsync", "test")) -> list[str]:
    """Readable differences, one line per problem; [] when equal."""
    out: list[str] = []
    a, b = names
    for key in sorted(set(expected) | set(actual)):
        e, f = expected.get(key), actual.get(key)
        if e == f:
            continue
        label = "hardlink groups" if key == HARDLINKS else repr(key)
        if e is None:
            out.append(f"only in {b}: {label}: {_fmt(f)}")
        elif f is None:
            out.append(f"only in {a}: {label}: {_fmt(e)}")
        elif isinstance(e, Entry) and isinstance(f, Entry):
            parts = [f"{k}: {a}={getattr(e, k)!r} {b}={getattr(f, k)!r}"
                     for k in e.__dataclass_fields__ if getattr(e, k) != getattr(f, k)]
            out.append(f"{label}: " + "; ".join(parts))
        else:
            out.append(f"{label}: {a}={_fmt(e)} {b}={_fmt(f)}")
    return out


def assert_same(expected: dict[bytes, Any], actual: dict[bytes, Any],
                names: tuple[str, str] = ("rsync", "test"), what: str = "trees") -> None:
    lines = diff(expected, actual, names)
    if lines:
        shown = "\n  ".join(lines[:60])
        more = f"\n  ... and {len(lines) - 60} more" if len(lines) > 60 else ""
        raise AssertionError(f"{what} differ ({len(lines)} differences):\n  {shown}{more}")


# --- running the reference rsync and the program under test ---------------------------

RSYNC = "/usr/bin/rsync"
_SRC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
_SUMMARY = re.compile(rb"^(sent [\d,.]+ bytes\s+received [\d,.]+ bytes|total size is [\d,.]+)")
_STATS_KEEP = (b"Number of files:", b"Number of created files:", b"Number of deleted files:",
               b"Number of regular files transferred:")


def program_under_test() -> list[str]:
    """The command being tested: $NETSYNC_TEST_CMD (shell-split) or `python -m netsync`."""
    cmd = os.environ.get("NETSYNC_TEST_CMD")
    return shlex.split(cmd) if cmd else [sys.executable, "-m", "netsync"]


def local_rsh(where: Path) -> str:
    """A remote shell that runs the command here (``SHELL host cmd...``) as the shell's
    own process ("exec"), so a client's SIGUSR1 on a fatal error of its own stops the
    server as it stops ssh.  Written into ``where``; returns its path."""
    rsh = where / "rsh"
    rsh.write_text('#!/bin/sh\nshift\nexec sh -c "exec $*"\n')
    rsh.chmod(0o755)
    return str(rsh)


def sync_env() -> dict[str, str]:
    """Same environment for both programs; fixed TZ/locale so listings compare."""
    env = dict(os.environ, TZ="UTC", LC_ALL="C.UTF-8")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_DIR, env.get("PYTHONPATH")) if p)
    env.pop("RSYNC_RSH", None)
    return env


@dataclass
class Run:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    def describe(self) -> str:
        return (f"$ {shlex.join(self.argv)}\n  exit {self.returncode}\n"
                f"  stderr: {self.stderr.decode(errors='backslashreplace')[-3000:]}")


def run(cmd: list[str], args: list[str], cwd: str | os.PathLike[str],
        user: int | None = None, timeout: float = 120) -> Run:
    """Run cmd+args in cwd (optionally as uid/gid `user` via setpriv)."""
    argv = [*cmd, *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--", *argv]
    p = subprocess.run(argv, cwd=cwd, env=sync_env(), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return Run(argv, p.returncode, p.stdout, p.stderr)


def output_lines(out: bytes, mode: str = "lines") -> list[bytes]:
    """stdout lines worth comparing.  mode: lines (all but the byte-count summary),
    stats (only the --stats counters that do not depend on the wire), none."""
    if mode == "none":
        return []
    lines = out.split(b"\n")
    if mode == "stats":
        return [ln for ln in lines if ln.startswith(_STATS_KEEP)]
    return [ln for ln in lines if not _SUMMARY.match(ln)]


# Lines rsync's generator sends as messages.  They travel apart from the per-file
# lines (which the sender prints from the file index), so their interleaving with
# those varies from run to run even with real rsync; their own order does not.
_MESSAGE = re.compile(rb"^(\*deleting   |deleting |skipping |cannot delete |could not make way "
                      rb"|ignoring unsafe symlink "
                      rb"|IO error encountered -- skipping file deletion$)")


def assert_same_output(expected: list[bytes], actual: list[bytes]) -> None:
    """Equal lines; generator messages may interleave differently with per-file lines."""
    if expected == actual:
        return

    def split(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        return ([ln for ln in lines if not _MESSAGE.match(ln)],
                [ln for ln in lines if _MESSAGE.match(ln)])

    if split(expected) == split(actual):
        return
    d = difflib.unified_diff([repr(x) for x in expected], [repr(x) for x in actual],
                             "rsync", "test", lineterm="", n=2)
    raise AssertionError("stdout differs:\n" + "\n".join(d))
