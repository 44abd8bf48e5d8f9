"""Per-dir merge files (-F, dir-merge) with --files-from and -R (flist.c
send_file_list(), exclude.c change_local_filter_dir()): rsync reads a dir's merge file
as it passes the dir, into a stack indexed by depth, and the first dir it reads also
reads the merge files above the transfer, which go again when that dir is left.  So
which rules hide a named path depends on the names before it and on incremental
recursion (with it, a name below a dir is checked with that dir's list; without it,
against the dirs the previous names passed).  A name ending in "/" is checked like
any other name; only "." never is.

Each list is run by Debian's rsync and by netsync, locally, pushed by netsync to an
rsync server, and pulled by rsync from netsync as the server reading the list on its
side; the transferred names must be the same.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_SERVER = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"

LISTS = [
    ["sub/f01.txt", "sub/inner/"],      # the first name's dir hides the second (no i-r)
    ["sub/inner/"],                     # "dir/" is checked: sub's "- inner/"
    ["a.txt", "sub/f01.txt"],           # a top-level name: no merge file read yet
    ["deep/y.txt", "sub/f01.txt"],      # the root's rules leave with the first dir
    ["zzz", "sub/f01.txt"],             # a named dir's list comes in the lists' order
    [".", "sub/f01.txt"],               # "." read first: its rules stay
    ["sub/inner/deeper/", "sub/h.dat"],
    ["sub/./inner/i.txt", "deep/./d00/x.txt"],
]
MODES = ["-r", "-r --no-i-r", "-d"]


def _tree(root: Path) -> None:
    files = {
        ".rsync-filter": "- *.txt\n", "sub/.rsync-filter": "- inner/\n",
        "sub/inner/.rsync-filter": "- *.dat\n", "a.txt": "", "app.conf": "",
        "sub/f01.txt": "", "sub/h.dat": "", "sub/inner/i.txt": "", "sub/inner/db.conf": "",
        "sub/inner/deeper/m.dat": "", "sub/inner/deeper/n.conf": "", "deep/d00/x.txt": "",
        "deep/y.txt": "", "deep/k.dat": "", "zzz/q.txt": "", "zzz/r.dat": "",
    }
    for rel, text in files.items():
        p = root / "src" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _names(p: subprocess.CompletedProcess) -> list[str]:
    assert p.returncode == 0, p.stderr
    return sorted(ln for ln in p.stdout.decode().splitlines() if ln[:2] in (">f", "<f"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    root = tmp_path_factory.mktemp("ffm")
    _tree(root)
    tc.local_rsh(root)  # (work / "rsh", used by the tests)
    return root


def _run(work: Path, argv: list[str]) -> subprocess.CompletedProcess:
    dst = work / "dst"
    subprocess.run(["rm", "-rf", str(dst)], check=True)
    return subprocess.run(argv, cwd=work, env=tc.sync_env(), capture_output=True, timeout=120)


@pytest.mark.parametrize("how", ["local", "push", "srvpull"])
@pytest.mark.parametrize("opts", MODES)
def test_merge_files_apply_as_rsync_reads_them(work: Path, how: str, opts: str) -> None:
    rsh = str(work / "rsh")
    ns = tc.program_under_test()
    for names in LISTS:
        (work / "ff.txt").write_text("\n".join(names) + "\n")
        base = ["-F", "-ai", *opts.split()]
        if how == "local":
            argv = ["--files-from=ff.txt", "src/", "dst/"]
            want = _run(work, [tc.RSYNC, *base, *argv])
            got = _run(work, [*ns, *base, *argv])
        elif how == "push":
            argv = ["-e", rsh, "--files-from=ff.txt", "src/", f"h:{work}/dst/"]
            want = _run(work, [tc.RSYNC, *base, *argv])
            got = _run(work, [*ns, *base, *argv])
        else:  # the list read on the server's side
            argv = ["-e", rsh, f"--files-from=:{work}/ff.txt", f"h:{work}/src/", "dst/"]
            want = _run(work, [tc.RSYNC, *base, *argv])
            got = _run(work, [tc.RSYNC, *base, f"--rsync-path={NETSYNC_SERVER}", *argv])
        assert _names(got) == _names(want), names


@pytest.mark.parametrize("opts", MODES)
def test_relative_args_apply_merge_files_as_rsync(work: Path, opts: str) -> None:
    for args in (["src/./sub/f01.txt", "src/./sub/inner/"], ["src/./zzz", "src/./sub/f01.txt"],
                 ["src/./deep/y.txt", "src/./sub/f01.txt"]):
        base = ["-F", "-aiR", *opts.split(), *args, "dst/"]
        want = _run(work, [tc.RSYNC, *base])
        got = _run(work, [*tc.program_under_test(), *base])
        assert _names(got) == _names(want), args


def test_a_name_ending_in_slash_is_excluded_like_any(work: Path) -> None:
    (work / "ff.txt").write_text("sub/inner/\napp.conf\n")
    for cmd in ([tc.RSYNC], tc.program_under_test()):
        p = _run(work, [*cmd, "-ai", "-r", "--exclude=inner", "--files-from=ff.txt",
                        "src/", "dst/"])
        assert _names(p) == [">f+++++++++ app.conf"]
