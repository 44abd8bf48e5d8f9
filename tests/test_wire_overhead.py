"""Bytes on the wire: a delta push costs what rsync's costs (output is framed in full
buffers, not a frame per token)."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

SENT = re.compile(rb"Total bytes sent: ([\d,]+)")


def test_delta_push_bytes_match_rsync(tmp_path: Path) -> None:
    rsh = tmp_path / "localrsh"
    rsh.write_text('#!/bin/sh\nshift\nexec "$@"\n')  # "ssh host cmd" -> run cmd here
    rsh.chmod(0o755)
    rnd = random.Random(3)
    old = bytearray(rnd.randbytes(8 << 20))
    new = bytearray(old)
    for _ in range(16):
        new[rnd.randrange(len(new))] ^= 0xFF
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big").write_bytes(new)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "big").write_bytes(old)
    os.utime(tmp_path / "base" / "big", (1_000_000_000, 1_000_000_000))  # older: it differs
    sent = {}
    for who, cmd in (("rsync", ["rsync"]), ("netsync", [sys.executable, "-m", "netsync"])):
        dst = tmp_path / f"dst-{who}"
        shutil.copytree(tmp_path / "base", dst)
        r = subprocess.run([*cmd, "-a", "--no-W", "--stats", "-e", str(rsh),
                            f"{tmp_path}/src/", f"localhost:{dst}/"], capture_output=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert (dst / "big").read_bytes() == bytes(new)
        m = SENT.search(r.stdout)
        assert m, r.stdout
        sent[who] = int(m.group(1).replace(b",", b""))
    assert abs(sent["netsync"] - sent["rsync"]) <= sent["rsync"] * 0.005, sent
