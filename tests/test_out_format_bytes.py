"""--out-format's %b and %c over the wire (log.c): the data bytes a file moved,
written and read, counted from its request (sender.c) or its reply (receiver.c)
to its end, sum heads, token headers and checksums included.  netsync as the client
must print what Debian's rsync prints for the same transfer, pushing and pulling,
plain and compressed, into a new and into a stale destination."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

FMT = "--out-format=%o %f %b %c %l"


def _work(root: Path, stale: bool) -> None:
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a").write_bytes(b"hello world, " * 700)
    (root / "src" / "sub" / "b").write_bytes(os.urandom(70_000))
    (root / "src" / "empty").write_bytes(b"")
    if stale:  # a basis to match blocks against (a delta, with sums both ways)
        (root / "dst").mkdir()
        (root / "dst" / "a").write_bytes(b"hello world, " * 650 + b"changed")
        os.utime(root / "dst" / "a", (1_000_000_000, 1_000_000_000))


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("extra", [[], ["-z"], ["--no-W", "--stale"]],
                         ids=["plain", "compressed", "delta"])
def test_bytes_per_file_as_rsync(tmp_path: Path, direction: str, extra: list[str]) -> None:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    stale = "--stale" in extra
    opts = [o for o in extra if o != "--stale"]
    rsh = tc.local_rsh(tmp_path)
    out = {}
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        work = tmp_path / who
        _work(work, stale)
        ends = ["src/", "h:dst/"] if direction == "push" else ["h:src/", "dst/"]
        p = subprocess.run([*cmd, "-a", *opts, "-e", str(rsh), FMT, *ends], cwd=work,
                           env=tc.sync_env(), capture_output=True, timeout=120)
        assert p.returncode == 0, (who, p.stderr)
        out[who] = p.stdout.decode().splitlines()
    assert out["netsync"] == out["rsync"]
    sizes = {ln.split()[1]: [int(x) for x in ln.split()[2:4]] for ln in out["netsync"]}
    assert sizes["src/a" if direction == "push" else "a"][0] > 0  # %b: bytes did move
