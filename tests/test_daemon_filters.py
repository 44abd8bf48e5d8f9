"""rsyncd.conf ``filter``/``include``/``exclude``(``from``) and ``munge symlinks``:
``netsync --daemon`` against ``rsync --daemon``, both from the same config.

Each case runs the same stock rsync client command against both daemons and
compares exit codes, the client's stdout and stderr, and the trees (pulled, or
left in the module by a push).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

FILTER_MODULES = """
[filt]
path = {root}/src
exclude = *.secret /excl/
filter = - /secret/***
[push]
path = {root}/push
read only = no
exclude = *.secret /excl/
[ef]
path = {root}/src
exclude from = {root}/etc/excludes
[efmiss]
path = {root}/src
exclude from = {root}/etc/no-such-file
[hide]
path = {root}/src
filter = hide a.txt
[inc]
path = {root}/src
include = d1/ d1/d2/ f2
exclude = *
[bare]
path = {root}/nb/bare
read only = no
exclude = /excluded
[dirform]
path = {root}/nb/dirform
read only = no
exclude = /excluded/
[munge]
path = {root}/munge
read only = no
munge symlinks = yes
[mdefault]
path = {root}/mdefault
read only = no
[nomunge]
path = {root}/nomunge
read only = no
munge symlinks = no
[incm]
path = {root}/incm
read only = no
incoming chmod = F600
"""


class Daemon(peers.RunningDaemon):

    def log(self) -> str:
        p = self.root / "log"
        return p.read_text(errors="replace") if p.exists() else ""


def start_daemon(kind: str, root: Path, modules: str, prepare: Callable[[Path], None]) -> Daemon:
    """One daemon (``rsync`` or ``netsync``) for ``modules`` ({root} filled in)."""
    root.mkdir(parents=True)
    prepare(root)
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    conf = "\n".join(["use chroot = no", *uid, f"log file = {root / 'log'}",
                      f"lock file = {root / 'lock'}", modules.format(root=root), ""])
    (root / "rsyncd.conf").write_text(conf)
    cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
    proc, port = peers.start_daemon(cmd, root / "rsyncd.conf", env=tc.sync_env())
    return Daemon(kind, port, root, proc)


def daemon_pair(base: Path, modules: str,
                prepare: Callable[[Path], None]) -> Iterator[tuple[Daemon, Daemon]]:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    ref = start_daemon("rsync", base / "rsync", modules, prepare)
    try:
        ours = start_daemon("netsync", base / "netsync", modules, prepare)
    except BaseException:
        peers.stop(ref.proc)
        raise
    try:
        yield ref, ours
    finally:
        peers.stop(ref.proc)
        peers.stop(ours.proc)


def client(args: list[str], cwd: Path) -> tc.Run:
    argv = [tc.RSYNC, *args]
    p = subprocess.run(argv, cwd=cwd, env=tc.sync_env(), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    return tc.Run(argv, p.returncode, p.stdout, p.stderr)


_TRAILER = re.compile(rb" at [\w.]+\(\d+\)| \[\w+=[\d.]+\w*\]")


def errors(run: tc.Run, root: Path) -> list[bytes]:
    """stderr without program name, source location, version and daemon root; the
    connection-reset line some rsync errors race with is left out."""
    out = []
    for line in run.stderr.splitlines():
        if b"Connection reset by peer" in line:
            continue
        line = _TRAILER.sub(b"", line).replace(os.fsencode(root), b"ROOT")
        out.append(re.sub(rb"^(rsync|netsync)( error)?:", rb"PROG\2:", line))
    return out


def both(pair: tuple[Daemon, Daemon], tmp_path: Path,
         make_args: Callable[[Daemon, Path], list[str]]) -> tuple[tc.Run, tc.Run]:
    runs = []
    for d in pair:
        work = tmp_path / d.name
        work.mkdir(exist_ok=True)
        runs.append(client(make_args(d, work), work))
    return runs[0], runs[1]


def _prepare(root: Path) -> None:
    src = root / "src"
    for d in ("d1/d2", "secret", "excl"):
        (src / d).mkdir(parents=True)
    for name, text in (("a.txt", "a\n"), ("a.secret", "s\n"), ("d1/d2/b.secret", "s\n"),
                       ("d1/d2/f2", "f\n"), ("secret/rules", "- *\n"), ("excl/e", "e\n")):
        (src / name).write_text(text)
    (root / "etc").mkdir()
    (root / "etc" / "excludes").write_text("a.txt\n")
    (root / "push" / "keep").mkdir(parents=True)
    (root / "push" / "old.secret").write_text("old\n")
    (root / "push" / "gone").write_text("gone\n")
    (root / "push" / "excl").mkdir()
    (root / "push" / "excl" / "stays").write_text("x\n")
    for name in ("bare", "dirform"):
        (root / "nb" / name / "excluded").mkdir(parents=True)
    for name in ("munge", "mdefault", "nomunge", "incm"):
        (root / name).mkdir()
    # The two daemons' trees are made a moment apart: one fixed mtime for all.
    for p in [root, *root.rglob("*")]:
        os.utime(p, ns=(1_600_000_000_000_000_000,) * 2, follow_symlinks=False)


def same_trees(a: Path, b: Path) -> None:
    """Same names, kinds, modes, contents and link targets (a push's mtimes differ)."""
    def strip(snap: dict) -> dict:
        return {k: (tc.Entry(**{**v.__dict__, "mtime_ns": 0}) if isinstance(v, tc.Entry)
                    else v) for k, v in snap.items()}

    tc.assert_same(strip(tc.snapshot(a)), strip(tc.snapshot(b)))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    yield from daemon_pair(tmp_path_factory.mktemp("dfilt"), FILTER_MODULES, _prepare)


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    src = tmp_path / "tree"
    (src / "excl").mkdir(parents=True)
    (src / "sub").mkdir()
    (src / "x.secret").write_text("1\n")
    (src / "ok").write_text("2\n")
    (src / "excl" / "in").write_text("3\n")
    (src / "sub" / "y.secret").write_text("4\n")
    (src / "d").mkdir()
    os.symlink("../ok", src / "d" / "rel")
    os.symlink("/etc/hostname", src / "abs")
    return src


def _same_pull(pair, tmp_path: Path, args: list[str]) -> tuple[tc.Run, tc.Run]:
    want, got = both(pair, tmp_path, lambda d, w: [*args[:-1], d.url(args[-1]), "dst/"])
    assert got.returncode == want.returncode, got.describe()
    assert got.stdout == want.stdout, got.describe()
    assert errors(got, pair[1].root) == errors(want, pair[0].root), got.describe()
    dst = [tmp_path / d.name / "dst" for d in pair]
    if dst[0].exists():
        same_trees(dst[0], dst[1])
    return want, got


def test_pull_hides_excluded_files(pair, tmp_path: Path) -> None:
    _, got = _same_pull(pair, tmp_path, ["-ai", "filt/"])
    assert got.returncode == 0
    pulled = sorted(p.relative_to(tmp_path / "netsync" / "dst").as_posix()
                    for p in (tmp_path / "netsync" / "dst").rglob("*"))
    assert pulled == ["a.txt", "d1", "d1/d2", "d1/d2/f2"]


def test_list_only_hides_excluded_files(pair, tmp_path: Path) -> None:
    want, got = both(pair, tmp_path, lambda d, w: ["-r", "--list-only", d.url("filt/")])
    assert got.returncode == want.returncode == 0, got.describe()
    names = [line.split()[-1] for line in got.stdout.splitlines()]
    assert names == [b".", b"a.txt", b"d1", b"d1/d2", b"d1/d2/f2"]
    assert got.stdout == want.stdout


@pytest.mark.parametrize("path", ["filt/a.secret", "filt/excl", "filt/secret/", "filt/secret/rules"])
def test_pull_of_excluded_path_is_refused(pair, tmp_path: Path, path: str) -> None:
    want, got = both(pair, tmp_path, lambda d, w: ["-ai", d.url(path), "dst/"])
    assert got.returncode == want.returncode == 23, got.describe()
    assert got.stdout == want.stdout
    # rsync names the file relative to the module; netsync by its full path (as for
    # any missing source file): the rest of the line, and what arrives, is the same.
    assert re.search(rb'\] (link_stat|change_dir) "[^"]*" .*failed: No such file or '
                     rb"directory \(2\)", got.stderr), got.describe()
    assert b"secret" not in b"".join(tc.output_lines(got.stdout))
    assert not (tmp_path / "netsync" / "dst" / "rules").exists()
    assert not (tmp_path / "netsync" / "dst" / "a.secret").exists()


def test_relative_pull_below_excluded_dir_is_refused(pair, tmp_path: Path) -> None:
    want, got = both(pair, tmp_path, lambda d, w: ["-aiR", d.url("filt/excl/e"), "dst/"])
    assert got.returncode == want.returncode == 23, got.describe()
    assert not (tmp_path / "netsync" / "dst" / "excl").exists()


def test_exclude_from_outside_module(pair, tmp_path: Path) -> None:
    _, got = _same_pull(pair, tmp_path, ["-ai", "ef/"])
    assert got.returncode == 0
    assert not (tmp_path / "netsync" / "dst" / "a.txt").exists()
    assert (tmp_path / "netsync" / "dst" / "d1" / "d2" / "b.secret").exists()


def test_missing_exclude_from_refuses_connection(pair, tmp_path: Path) -> None:
    _, got = _same_pull(pair, tmp_path, ["-ai", "efmiss/"])
    assert got.returncode == 5
    assert errors(got, pair[1].root)[0] == b"PROG: didn't get server startup line"
    assert "failed to open exclude file" in pair[1].log()


def test_hide_rule_is_dropped_as_rsync_does(pair, tmp_path: Path) -> None:
    # rsync parses the module's rules before it knows it is the sender: a sender-only
    # rule (hide/show) is dropped.
    _, got = _same_pull(pair, tmp_path, ["-ai", "hide/"])
    assert got.returncode == 0
    assert (tmp_path / "netsync" / "dst" / "a.txt").exists()


def test_include_then_exclude_all(pair, tmp_path: Path) -> None:
    _, got = _same_pull(pair, tmp_path, ["-ai", "inc/"])
    assert got.returncode == 0
    files = sorted(p.name for p in (tmp_path / "netsync" / "dst").rglob("*"))
    assert files == ["d1", "d2", "f2"]


@pytest.mark.parametrize("client_filter", [["-M--filter=._/secret/rules"],
                                           ["--filter=:_/secret/rules"],
                                           ["--filter=:_rules", "-r"]])
def test_client_merge_file_cannot_read_hidden_rules(pair, tmp_path: Path,
                                                    client_filter: list[str]) -> None:
    """daemon-filter-merge-bypass: a merge file the module hides is read as absent."""
    _, got = _same_pull(pair, tmp_path, ["-ai", *client_filter, "filt/"])
    assert got.returncode == 0
    assert (tmp_path / "netsync" / "dst" / "a.txt").read_text() == "a\n"


def test_client_filter_cannot_reinclude(pair, tmp_path: Path) -> None:
    _, got = _same_pull(pair, tmp_path, ["-ai", "--include=*.secret", "--include=excl/***",
                                         "filt/"])
    assert got.returncode == 0
    assert not list((tmp_path / "netsync" / "dst").rglob("*secret*"))


def _push(pair, tmp_path: Path, args: list[str], dest: str) -> tuple[tc.Run, tc.Run]:
    for d in pair:  # each push starts from the same module contents
        shutil.rmtree(d.root / "push")
        (d.root / "push" / "keep").mkdir(parents=True)
        (d.root / "push" / "old.secret").write_text("old\n")
        (d.root / "push" / "gone").write_text("gone\n")
        (d.root / "push" / "excl").mkdir()
        (d.root / "push" / "excl" / "stays").write_text("x\n")
    want, got = both(pair, tmp_path, lambda d, w: [*args, d.url(dest)])
    assert got.returncode == want.returncode, got.describe()
    assert got.stdout == want.stdout, got.describe()
    assert errors(got, pair[1].root) == errors(want, pair[0].root), got.describe()
    same_trees(pair[0].root / "push", pair[1].root / "push")
    return want, got


def test_push_skips_excluded_names(pair, tmp_path: Path, source: Path) -> None:
    _, got = _push(pair, tmp_path, ["-ai", "--no-inc-recursive", f"{source}/"], "push/")
    assert got.returncode == 23
    assert errors(got, pair[1].root)[:4] == [
        b'ERROR: daemon refused to receive file "x.secret"',
        b'ERROR: daemon refused to receive directory "excl"',
        b"*** Skipping any contents from this failed directory ***",
        b'ERROR: daemon refused to receive file "sub/y.secret"']
    push = pair[1].root / "push"
    assert (push / "ok").exists() and not (push / "x.secret").exists()
    assert not (push / "sub" / "y.secret").exists()
    assert not (push / "excl" / "in").exists()


def test_push_delete_spares_excluded_names(pair, tmp_path: Path, source: Path) -> None:
    _, got = _push(pair, tmp_path, ["-ai", "--delete", "--no-inc-recursive", f"{source}/"],
                   "push/")
    assert got.returncode == 23
    push = pair[1].root / "push"
    assert not (push / "gone").exists()  # deleted
    assert (push / "old.secret").read_text() == "old\n"  # daemon-excluded: kept
    assert (push / "excl" / "stays").exists()
    assert b"*deleting   gone\n" in got.stdout


@pytest.mark.parametrize("dest", ["push/excl/x2", "push/excl/", "push/a.secret"])
def test_push_to_excluded_destination(pair, tmp_path: Path, source: Path, dest: str) -> None:
    _, got = _push(pair, tmp_path, ["-ai", f"{source}/ok"], dest)
    assert got.returncode == 3
    assert errors(got, pair[1].root)[0] == \
        f'ERROR: daemon has excluded destination "{dest[5:]}"'.encode()


@pytest.mark.parametrize("module, lands", [("bare", True), ("dirform", False)])
def test_exclude_is_name_based(pair, tmp_path: Path, source: Path, module: str,
                               lands: bool) -> None:
    """daemon-exclude-namebased: "/excluded" protects only that name, "/excluded/" its tree."""
    want, got = both(pair, tmp_path,
                     lambda d, w: ["-a", f"{source}/ok", d.url(f"{module}/excluded/x2.tx")])
    assert got.returncode == want.returncode, got.describe()
    for d in pair:
        assert (d.root / "nb" / module / "excluded" / "x2.tx").exists() == lands, d.name


@pytest.mark.parametrize("module, munged", [("munge", True), ("mdefault", True),
                                            ("nomunge", False)])
def test_munge_symlinks_both_directions(pair, tmp_path: Path, source: Path, module: str,
                                        munged: bool) -> None:
    want, got = both(pair, tmp_path, lambda d, w: ["-ai", f"{source}/", d.url(f"{module}/")])
    assert got.returncode == want.returncode == 0, got.describe()
    assert got.stdout == want.stdout
    stored = pair[1].root / module
    same_trees(pair[0].root / module, stored)
    if munged:
        assert os.readlink(stored / "d" / "rel") == "/rsyncd-munged/../ok"
        assert os.readlink(stored / "abs") == "/rsyncd-munged//etc/hostname"
    else:
        assert os.readlink(stored / "d" / "rel") == "../ok"
        assert os.readlink(stored / "abs") == "etc/hostname"  # sanitized instead
    # Pulling strips the prefix again: the client gets the links as they were sent.
    _same_pull(pair, tmp_path, ["-ai", f"{module}/"])
    dst = tmp_path / "netsync" / "dst"
    assert os.readlink(dst / "d" / "rel") == "../ok"
    assert os.readlink(dst / "abs") == ("/etc/hostname" if munged else "etc/hostname")


def test_safe_links_into_a_munging_module(pair, tmp_path: Path, source: Path) -> None:
    """A munging daemon munges a symlink as it receives it, so --safe-links judges the
    munged (absolute) target: every symlink is ignored, the files still land."""
    want, got = both(pair, tmp_path,
                     lambda d, w: ["-avi", "--safe-links", f"{source}/", d.url("munge/safe/")])
    assert got.returncode == want.returncode == 0, got.describe()
    assert sorted(got.stdout.splitlines()[1:-3]) == sorted(want.stdout.splitlines()[1:-3])
    assert b'ignoring unsafe symlink "d/rel" -> "/rsyncd-munged/../ok"' in got.stdout
    stored = pair[1].root / "munge" / "safe"
    same_trees(pair[0].root / "munge" / "safe", stored)
    assert (stored / "ok").read_text() == "2\n"
    assert not os.path.lexists(stored / "d" / "rel") and not os.path.lexists(stored / "abs")


def test_incoming_chmod_applies_at_depth(pair, tmp_path: Path, source: Path) -> None:
    """rsync's daemon-filter test also checks "incoming chmod" on a push."""
    want, got = both(pair, tmp_path, lambda d, w: ["-a", f"{source}/", d.url("incm/")])
    assert got.returncode == want.returncode == 0, got.describe()
    same_trees(pair[0].root / "incm", pair[1].root / "incm")
    assert (pair[1].root / "incm" / "sub" / "y.secret").stat().st_mode & 0o7777 == 0o600
    assert (pair[1].root / "incm" / "sub").stat().st_mode & 0o777 == 0o755
