"""RSYNC_CONNECT_PROG: the daemon protocol over a program's stdin/stdout (socket.c sock_exec)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_connect_prog_lists_and_pulls_like_rsync(tmp_path: Path) -> None:
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "hello.txt").write_bytes(b"hello over a pipe\n")
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\n[pub]\n  path = {mod}\n  comment = a pipe module\n"
                    "  read only = yes\n")
    # %H is replaced by the host name; inetd-style rsync --daemon serves on stdin/stdout.
    env = {**os.environ, "RSYNC_CONNECT_PROG": f"rsync --daemon --config={conf} # %H"}
    outs = {}
    for who, cmd in (("rsync", ["rsync"]), ("netsync", [sys.executable, "-m", "netsync"])):
        listing = subprocess.run([*cmd, "rsync://somehost/"], env=env, capture_output=True,
                                 timeout=60)
        assert listing.returncode == 0, listing.stderr
        dst = tmp_path / f"dst-{who}"
        pull = subprocess.run([*cmd, "-a", "rsync://somehost/pub/", f"{dst}/"], env=env,
                              capture_output=True, timeout=60)
        assert pull.returncode == 0, pull.stderr
        assert (dst / "hello.txt").read_bytes() == b"hello over a pipe\n"
        outs[who] = listing.stdout
    assert outs["netsync"] == outs["rsync"]
    assert b"pub" in outs["rsync"] and b"a pipe module" in outs["rsync"]
