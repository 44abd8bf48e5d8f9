"""Filter rules read from stdin (--exclude-from=-, merge -) serve every list a run
builds from them: the sender's and the receiver's (--delete spares what they exclude),
and what a client sends to its server.  netsync built a second list from an already
drained stdin, and --delete removed the excluded files on the receiving side."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers


@pytest.mark.parametrize("mode", ["local", "pull", "push"])
@pytest.mark.parametrize("opt", ["--exclude-from=-", "--filter=merge -"])
def test_rules_from_stdin_protect_the_receiver(tmp_path: Path, mode: str, opt: str) -> None:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    rsh = tc.local_rsh(tmp_path)
    got = {}
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        work = tmp_path / who
        (work / "src").mkdir(parents=True)
        (work / "dst").mkdir()
        for rel in ("src/a", "src/b.log", "dst/old.log", "dst/old.txt"):
            (work / rel).write_text(rel)
        ends = {"local": ["src/", "dst/"], "pull": ["-e", str(rsh), "h:src/", "dst/"],
                "push": ["-e", str(rsh), "src/", "h:dst/"]}[mode]
        rules = "- *.log\n" if opt.startswith("--filter") else "*.log\n"
        p = subprocess.run([*cmd, "-a", "--delete", opt, *ends], cwd=work, input=rules.encode(),
                           env=tc.sync_env(), capture_output=True, timeout=120)
        assert p.returncode == 0, (who, p.stderr)
        got[who] = sorted(q.name for q in (work / "dst").iterdir())
    assert got["netsync"] == got["rsync"] == ["a", "old.log"]
