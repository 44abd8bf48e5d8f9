"""The sender's walk emits rsync's file-list order without a global sort."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from netsync.flist import WalkOptions, entry_key
from netsync.report import Reporter
from netsync.sender import Sender

# Files and dirs whose names are prefixes of each other ("a/" vs "a-b/" vs "a.txt").
NAMES = ["a-c", "a.txt", "a0", "b/", "a/", "a-b/", "a/x", "a/x.y/", "a/x.y/z", "a-b/c",
         "Z", "_", "a/ x", "a/x-/", "a/x-/q", "a/x-.f", "\xe9t\xe9/", "\xe9t\xe9/f"]


def _tree(root: Path) -> None:
    root.mkdir()
    for n in NAMES:
        p = root / n.rstrip("/")
        if n.endswith("/"):
            p.mkdir(exist_ok=True)
        elif not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(n)


def test_walk_order_is_rsync_sort_order(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    rep = Reporter(out=open(os.devnull, "w"), err=open(os.devnull, "w"))
    s = Sender(WalkOptions(recursive=True, links=True), rep)
    entries = s.build_file_list([os.fsencode(src) + b"/"]).entries
    assert entries == sorted(entries, key=entry_key)
    # And the same order real rsync lists.
    out = subprocess.run(["rsync", "-r8", "--list-only", f"{src}/"], capture_output=True,
                         check=True, env={**os.environ, "LC_ALL": "C"}).stdout
    listed = [line.split(None, 4)[4] for line in out.splitlines()]
    assert [e.name for e in entries] == listed
