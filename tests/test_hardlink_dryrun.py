"""-H itemizing compared with Debian's rsync: a dry run links a group's waiting
members as soon as its leader is "sent" (generator.c !do_xfers ->
finish_hard_link), and a leader found up to date links them at once, so the
``hf ... => leader`` lines and the --stats counts must come out as rsync's."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

RSYNC = ["/usr/bin/rsync"]
NETSYNC = [sys.executable, "-m", "netsync"]
T = 1_000_000_000


def _put(p: Path, data: bytes = b"a\n") -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    os.utime(p, (T, T))


def _group(w: Path, names: str = "abc") -> None:
    """s/a s/b s/c one inode, s/x alone."""
    _put(w / "s" / names[0])
    for n in names[1:]:
        os.link(w / "s" / names[0], w / "s" / n)
    _put(w / "s" / "x", b"x\n")


def _new(w: Path) -> None:
    _group(w)


def _leader_same(w: Path) -> None:  # the member that gets the data is up to date
    _group(w)
    (w / "d").mkdir()
    shutil.copy2(w / "s" / "a", w / "d" / "c")


def _first_differs(w: Path) -> None:  # the first member exists with other data
    _group(w)
    _put(w / "d" / "a", b"zz\n")


def _last_differs(w: Path) -> None:
    _group(w)
    _put(w / "d" / "c", b"zz\n")


def _partly_linked(w: Path) -> None:
    _group(w)
    (w / "d").mkdir()
    shutil.copy2(w / "s" / "a", w / "d" / "c")
    os.link(w / "d" / "c", w / "d" / "b")


def _middle_same(w: Path) -> None:
    _group(w)
    (w / "d").mkdir()
    shutil.copy2(w / "s" / "a", w / "d" / "b")


def _four_mixed(w: Path) -> None:  # skipped, skipped, sent, waiting
    _group(w, "abcd")
    _put(w / "d" / "c", b"zz\n")


def _groups_in_dirs(w: Path) -> None:
    _group(w)
    _put(w / "s" / "m", b"m\n")
    os.link(w / "s" / "m", w / "s" / "n")
    _put(w / "s" / "o" / "p", b"p\n")
    os.link(w / "s" / "o" / "p", w / "s" / "q")


SETUPS: dict[str, Callable[[Path], None]] = {
    "new": _new, "leader_same": _leader_same, "first_differs": _first_differs,
    "last_differs": _last_differs, "partly_linked": _partly_linked,
    "middle_same": _middle_same, "four_mixed": _four_mixed, "groups_in_dirs": _groups_in_dirs,
}


def _out(p: subprocess.CompletedProcess[bytes]) -> list[str]:
    """The output lines a user compares; the byte counts of the transfer differ."""
    text = (p.stdout + p.stderr).decode()
    text = re.sub(r"speedup is \S+", "", text)
    return [ln for ln in text.splitlines()
            if not ln.startswith(("sent ", "File list ", "Total bytes "))]


def _both(tmp_path: Path, setup: Callable[[Path], None], *args: str) -> list[str]:
    outs = []
    trees = []
    for who, cmd in (("rsync", RSYNC), ("netsync", NETSYNC)):
        w = tmp_path / who
        w.mkdir()
        setup(w)
        before = sorted(str(p.relative_to(w)) for p in w.rglob("*"))
        p = subprocess.run([*cmd, *args, "s/", "d/"], cwd=w, capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
        outs.append(_out(p))
        if any(a == "-n" or re.fullmatch(r"-\w*n\w*", a) for a in args):
            # a dry run changes nothing
            assert sorted(str(q.relative_to(w)) for q in w.rglob("*")) == before
        else:
            d = w / "d"
            trees.append(sorted((str(q.relative_to(d)), q.stat().st_ino == (d / "a").stat().st_ino)
                                for q in d.rglob("*") if q.is_file()))
    assert outs[1] == outs[0]
    if trees:
        assert trees[1] == trees[0]
    return outs[0]


@pytest.mark.parametrize("name", sorted(SETUPS))
@pytest.mark.parametrize("args", [("-aHi", "-n"), ("-aHii", "-n"), ("-aHv", "-n"),
                                  ("-aHn", "--stats"), ("-aHi",)], ids=lambda a: "".join(a))
def test_hard_link_items(tmp_path: Path, name: str, args: tuple[str, ...]) -> None:
    _both(tmp_path, SETUPS[name], *args)


def test_dry_run_links_followers_to_the_leader(tmp_path: Path) -> None:
    out = _both(tmp_path, _new, "-aHi", "-n")
    assert out == ["created directory d", "cd+++++++++ ./", ">f+++++++++ c",
                   "hf+++++++++ b => c", "hf+++++++++ a => c", ">f+++++++++ x"]


def test_dry_run_stats_count_the_leader_only(tmp_path: Path) -> None:
    out = _both(tmp_path, _new, "-aHn", "--stats")
    assert "Number of regular files transferred: 2" in out
    assert "Total transferred file size: 4 bytes" in out


def _link_ref(w: Path) -> None:
    _group(w)
    (w / "ref").mkdir()
    shutil.copy2(w / "s" / "a", w / "ref" / "c")
    os.link(w / "ref" / "c", w / "ref" / "a")


@pytest.mark.parametrize("opt", ["--link-dest", "--copy-dest"])
@pytest.mark.parametrize("args", [("-aHi", "-n"), ("-aHii", "-n"), ("-aHi",)],
                         ids=lambda a: "".join(a))
def test_hard_links_with_alt_dest(tmp_path: Path, opt: str, args: tuple[str, ...]) -> None:
    _both(tmp_path, _link_ref, *args, f"{opt}=../ref")
