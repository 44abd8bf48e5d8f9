"""Filter patterns a hostile peer chooses must not make matching run away.

A daemon's client sends the exclude rules, and a server sends the names the
client's rules are matched against.  A backtracking regex tries every way to split
a name between the stars: ``*a*a*a*a*a*a*a*a*a*a*a*a*b`` against a 60-byte name of
``a``s never finished.  rsync's dowild() is polynomial (its ABORT_ALL and
ABORT_TO_STARSTAR exits), and so must netsync be, with the same results.

Each run here is a subprocess with a generous timeout, so the old code fails the
test instead of hanging it; nothing is timed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import treecompare as tc
from interop import peers
from netsync.wildmatch import (
    _dowild,
    _runs,
    _StarMatch,
    translate,
    wildmatch_array_reference,
)

HOSTILE = [
    b"*a*a*a*a*a*a*a*a*a*a*a*a*b",
    b"**a**a**a**a**a**a**a**a**b",
    b"*[a]*[a]*[a]*[a]*[a]*[a]*[a]*b",
    b"**a*a**a*a**a*a**a*b",
    b"a/**/a/**/a/**/a/**/a/**/a/**/b",
    b"**/x",
    b"**a",
]
TEXTS = [b"a" * 4000, b"a/" * 2000, (b"a" * 200 + b"/") * 19, b"x/" * 2000]

_SRC = str(Path(__file__).resolve().parent.parent / "src")


def test_hostile_patterns_finish_with_rsyncs_answers() -> None:
    """Every (pattern, name, where) of the table, in a child with a timeout; the
    answers are those of the literal transcription of rsync's algorithm."""
    code = (
        "import sys\n"
        "from netsync.wildmatch import compile_wild\n"
        f"pats, texts = {HOSTILE!r}, {TEXTS!r}\n"
        "out = []\n"
        "for p in pats:\n"
        "    w = compile_wild(p)\n"
        "    for t in texts:\n"
        "        for where in (0, -1, 1, 2):\n"
        "            out.append(int(w.match_where(t, where)))\n"
        "print(''.join(map(str, out)))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": _SRC},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = p.stdout.strip()
    assert len(got) == len(HOSTILE) * len(TEXTS) * 4
    want = "".join(str(int(wildmatch_array_reference(p, [t], where)))
                   for p in HOSTILE for t in TEXTS for where in (0, -1, 1, 2))
    assert got == want
    assert "1" in want  # "**a" does match the names that end in "a"


_ALPHA = [b"a", b"b", b"/", b"*", b"?", b"[", b"]", b"!", b"^", b"-", b"\\", b":", b"**",
          b"[[:alpha:]]", b"[a-c]", b"[!/]", b"a/", b"/a"]
_TALPHA = [b"a", b"b", b"/", b"*", b"[", b"-", b"\\", b"A", b"ab", b"a/"]


@settings(max_examples=4000, deadline=None)
@given(st.lists(st.sampled_from(_ALPHA), max_size=9).map(b"".join),
       st.lists(st.sampled_from(_TALPHA), max_size=10).map(b"".join),
       st.sampled_from([-1, 0, 1, 2, 3]))
def test_star_matcher_is_rsyncs_algorithm(pattern: bytes, text: bytes, where: int) -> None:
    """The run-at-a-time matcher gives dowild()'s very return codes (TRUE, FALSE,
    ABORT_ALL, ABORT_TO_STARSTAR), for every pattern, not only those it is used for."""
    if translate(pattern) is None:
        return
    sm = _StarMatch(*_runs(pattern))  # type: ignore[misc]
    assert sm.dowild(text, 0) == _dowild(pattern, 0, text, 0)
    assert sm.match_where(text, where) == wildmatch_array_reference(pattern, [text], where)


def test_two_thousand_stars() -> None:
    """A rule may be 4 KiB long (exclude.c's limit): 2,000 stars nest 2,000 deep, which
    must not be Python's recursion (RecursionError, a traceback in the daemon)."""
    from netsync.wildmatch import compile_wild

    w = compile_wild(b"*a" * 2000 + b"b")
    assert w.match_where(b"a" * 2000 + b"b", 0)
    assert not w.match_where(b"a" * 1999 + b"b", 0)
    assert not w.match_where(b"a" * 3000, -1)
    assert compile_wild(b"*a" * 2000).match(b"a" * 2000)
    assert not compile_wild(b"**a" * 2000).match_where(b"a/" * 3000, -1)


def _tree(root: Path) -> None:
    (root / "d").mkdir(parents=True)
    (root / ("a" * 200)).write_bytes(b"long\n")
    (root / "d" / ("a" * 100 + "b")).write_bytes(b"excluded\n")
    (root / "keep").write_bytes(b"keep\n")


def test_local_sync_with_a_hostile_exclude(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    r = subprocess.run([*tc.program_under_test(), "-r", f"--exclude={HOSTILE[0].decode()}",
                        f"{src}/", f"{dst}/"], capture_output=True, timeout=120,
                       env=tc.sync_env())
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(dst)) == sorted(["a" * 200, "d", "keep"])
    assert os.listdir(dst / "d") == []


@pytest.mark.parametrize("pattern", [HOSTILE[0], HOSTILE[3]])
def test_daemon_serves_a_client_with_a_hostile_exclude(tmp_path: Path, pattern: bytes) -> None:
    """Debian's rsync pulls from ``netsync --daemon`` with the exclude; the daemon
    matches it against every name it lists, and the pull ends as rsync's would."""
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    mod, dst = tmp_path / "m", tmp_path / "dst"
    _tree(mod)
    ids = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    config = tmp_path / "rsyncd.conf"
    config.write_text("\n".join(["use chroot = no", *ids, f"lock file = {tmp_path / 'lock'}",
                                 "[m]", f"path = {mod}", "read only = yes", ""]))
    proc, port = peers.start_daemon(tc.program_under_test(), config, env=tc.sync_env())
    try:
        r = subprocess.run([tc.RSYNC, "-r", f"--exclude={pattern.decode()}",
                            f"rsync://127.0.0.1:{port}/m/", f"{dst}/"],
                           capture_output=True, timeout=120)
    finally:
        peers.stop(proc)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(dst)) == sorted(["a" * 200, "d", "keep"])
    assert os.listdir(dst / "d") == []
