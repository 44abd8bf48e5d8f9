"""A daemon module is a jail for the sender too: ``netsync --daemon`` serving stock
rsync clients that pull through symlinks, compared with ``rsync --daemon``.

In-module symlinks are followed (-L, --copy-unsafe-links, --copy-dirlinks, a
symlinked dir on the way to an argument), but nothing outside the module is
listed, read or sent: rsync 3.5's secure_opendir() / confined change_dir() /
sender_open_copylinks_confined() / readlink at the held scan dir.  Both daemons
serve identical trees; every case runs the same rsync client against each and
compares the exit code and what arrived, then checks that nothing from outside
the module did.

The last tests drive :class:`netsync.sender.Sender` in-process, as the daemon runs
it, to swap a parent directory for an escaping symlink between the listing and the
use of an entry (the race the rsync suite's flippers hunt for), deterministically.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

IN_FILE = "IN-MODULE-FILE\n"
IN_DIRFILE = "IN-MODULE-DIRFILE\n"
SECRET = "OUT-OF-MODULE-SECRET\n"
DIRSECRET = "OUT-OF-MODULE-DIRSECRET\n"
MARKER = "XFIL-OUTSIDE-MODULE-SYMLINK-TARGET"
OUT_LINK = "OUTSIDE-LINK-TARGET"
OUT_NAMES = {"secret.txt", "s.txt", "xfil_link", "xfil_dir", "xfil_file", "inner"}


Daemon = peers.RunningDaemon


def _make_trees(root: Path) -> None:
    """root/m is the module; root/outside its sibling, reachable only by leaving it."""
    m, out = root / "m", root / "outside"
    for d in (m / "sub", m / "targetdir", m / "real", out / "outdir",
              out / "xfil_dir"):
        d.mkdir(parents=True)
    (m / "target.txt").write_text(IN_FILE)
    (m / "targetdir" / "f.txt").write_text(IN_DIRFILE)
    (m / "real" / "file").write_text(IN_FILE)
    os.symlink("inside-target", m / "real" / "link")
    (out / "secret.txt").write_text(SECRET)
    (out / "outdir" / "s.txt").write_text(DIRSECRET)
    (out / "file").write_text(SECRET)
    os.symlink(OUT_LINK, out / "link")
    os.symlink(MARKER, out / "xfil_link")
    (out / "xfil_dir" / "inner").write_text(DIRSECRET)
    (out / "xfil_file").write_text(SECRET)
    # File and dir symlinks that stay inside the module, and ones that climb out.
    os.symlink("../target.txt", m / "sub" / "in_file")
    os.symlink("../targetdir", m / "sub" / "in_dir")
    os.symlink("../real", m / "sub" / "alias")
    os.symlink("../../outside/secret.txt", m / "sub" / "esc_file")
    os.symlink("../../outside/outdir", m / "sub" / "esc_dir")
    # A dir symlink at the module's top: "../outside" leaves it at once.
    os.symlink("../outside", m / "escape")
    os.symlink("real", m / "inlink")
    # An absolute symlink to the outside dir: a parent of a pulled argument.
    os.symlink(out, m / "evil")


def _start(kind: str, root: Path) -> Daemon:
    _make_trees(root)
    ids = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    config = root / "rsyncd.conf"
    config.write_text("\n".join([
        "use chroot = no", *ids, f"log file = {root / 'log'}",
        f"lock file = {root / 'lock'}",
        "[m]", f"path = {root / 'm'}", "read only = yes", "",
    ]))
    cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
    proc, port = peers.start_daemon(cmd, config, env=tc.sync_env())
    return Daemon(kind, port, root, proc)


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    base = tmp_path_factory.mktemp("confine")
    ref = _start("rsync", base / "rsync")
    try:
        ours = _start("netsync", base / "netsync")
    except BaseException:
        peers.stop(ref.proc)
        raise
    try:
        yield ref, ours
    finally:
        peers.stop(ref.proc)
        peers.stop(ours.proc)


def _shape(top: Path) -> dict[str, tuple[str, str]]:
    """What arrived: each name with its type and its content or link target."""
    out: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(top))
            if p.is_symlink():
                out[rel] = ("symlink", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", "")
            else:
                out[rel] = ("file", p.read_text(errors="replace"))
    return out


def _pull(daemons: tuple[Daemon, Daemon], tmp_path: Path, opts: list[str],
          src: str) -> tuple[tc.Run, dict[str, tuple[str, str]]]:
    """The same pull from both daemons: (netsync's run, what it delivered), after
    checking that it matches rsync's exit code and delivered tree."""
    runs, shapes = [], []
    for d in daemons:
        dest = tmp_path / d.name
        dest.mkdir()
        argv = [tc.RSYNC, *opts, d.url(src), f"{dest}/"]
        p = subprocess.run(argv, env=tc.sync_env(), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        runs.append(tc.Run(argv, p.returncode, p.stdout, p.stderr))
        shapes.append(_shape(dest))
    (want, got), (want_shape, got_shape) = runs, shapes
    assert got.returncode == want.returncode, (want.describe(), got.describe())
    assert got_shape == want_shape, got.describe()
    return got, got_shape


def _assert_nothing_from_outside(shape: dict[str, tuple[str, str]], run: tc.Run) -> None:
    for rel, (kind, body) in shape.items():
        assert body not in (SECRET, DIRSECRET, MARKER, OUT_LINK), (rel, kind, run.describe())
        assert Path(rel).name not in OUT_NAMES, (rel, run.describe())


@pytest.mark.parametrize("follow", [["-rL"], ["-rl", "--copy-unsafe-links"]],
                         ids=["copy-links", "copy-unsafe-links"])
def test_following_pull_stays_in_module(daemons: tuple[Daemon, Daemon], tmp_path: Path,
                                        follow: list[str]) -> None:
    """-L / --copy-unsafe-links follow "../" targets inside the module (file and dir)
    and refuse ones that climb out: the file is listed but never read, the dir is
    listed but never enumerated (rsync exits 23 for the refusals)."""
    run, shape = _pull(daemons, tmp_path, follow, "m/sub/")
    assert run.returncode == 23, run.describe()
    _assert_nothing_from_outside(shape, run)
    assert shape["in_file"] == ("file", IN_FILE)
    assert shape["in_dir/f.txt"] == ("file", IN_DIRFILE)
    assert shape["alias/file"] == ("file", IN_FILE)
    assert shape["esc_dir"] == ("dir", "")
    assert "esc_file" not in shape
    assert b"Too many levels of symbolic links (40)" in run.stderr


def test_copy_dirlinks_enumeration_stays_in_module(daemons: tuple[Daemon, Daemon],
                                                   tmp_path: Path) -> None:
    """--copy-dirlinks descends an in-module dir symlink, but one leading out of the
    module is not enumerated: none of the outside names (nor the target of an
    outside symlink, which the listing would send as it is) reach the client."""
    run, shape = _pull(daemons, tmp_path, ["-a", "--copy-dirlinks"], "m/")
    assert run.returncode == 23, run.describe()
    _assert_nothing_from_outside(shape, run)
    assert shape["inlink/file"] == ("file", IN_FILE)
    assert shape["inlink/link"] == ("symlink", "inside-target")
    assert shape["escape"] == ("dir", "")
    assert shape["sub/esc_file"] == ("symlink", "../../outside/secret.txt")


@pytest.mark.parametrize("opts,src", [
    (["-a"], "m/evil/link"), (["-a"], "m/evil/file"),
    (["-aR"], "m/evil/link"), (["-aR"], "m/evil/file"),
    (["-aL"], "m/evil/link"),
])
def test_argument_through_escaping_parent(daemons: tuple[Daemon, Daemon], tmp_path: Path,
                                          opts: list[str], src: str) -> None:
    """An argument whose parent dir is a symlink out of the module: its symlink
    target is not read (the readlink goes through the module-confined parent) and
    its content not sent. rsync: change_dir (or, with -R, link_stat) fails, 23."""
    run, shape = _pull(daemons, tmp_path, opts, src)
    assert run.returncode == 23, run.describe()
    _assert_nothing_from_outside(shape, run)
    assert shape == {}
    assert b"Too many levels of symbolic links (40)" in run.stderr


@pytest.mark.parametrize("opts,src,want", [
    (["-a"], "m/sub/alias/link", {"link": ("symlink", "inside-target")}),
    (["-a"], "m/inlink/file", {"file": ("file", IN_FILE)}),
    (["-aR"], "m/sub/alias/link", {"sub": ("dir", ""), "sub/alias": ("dir", ""),
                                   "sub/alias/link": ("symlink", "inside-target")}),
])
def test_argument_through_in_module_parent(daemons: tuple[Daemon, Daemon], tmp_path: Path,
                                           opts: list[str], src: str,
                                           want: dict[str, tuple[str, str]]) -> None:
    """A symlinked parent that stays inside the module is still followed."""
    run, shape = _pull(daemons, tmp_path, opts, src)
    assert run.returncode == 0, run.describe()
    assert shape == want


# ------------------------------------------------- the races, made deterministic

@pytest.fixture
def jail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module dir as the daemon's sender sees it: the cwd, and safepath's
    confinement root."""
    from netsync import safepath

    _make_trees(tmp_path)
    mod = tmp_path / "m"
    monkeypatch.chdir(mod)
    monkeypatch.setattr(safepath, "confine_root", os.fsencode(mod))
    return tmp_path


def _sender(**walk):
    import io

    from netsync.flist import WalkOptions
    from netsync.report import Reporter
    from netsync.sender import Sender

    rep = Reporter(out=io.StringIO(), err=io.StringIO())
    return Sender(WalkOptions(**walk), rep), rep


def _flip(mod: Path, outside: Path) -> None:
    """Swap the module's dir "real" for an absolute symlink to the outside dir."""
    os.rename(mod / "real", mod / "real.gone")
    os.symlink(outside, mod / "real")


@pytest.mark.parametrize("walk", [{}, {"copy_links": True}, {"relative": True}],
                         ids=["default", "copy-links", "relative"])
def test_open_after_parent_flip_is_refused(jail: Path, walk: dict) -> None:
    """A file listed in "real/" is not read once "real" became a symlink out."""
    s, rep = _sender(recursive=True, **walk)
    flist = s.build_file_list([b"real"])
    e = next(e for e in flist.entries if e.name.endswith(b"real/file") or e.name == b"file")
    _flip(jail / "m", jail / "outside")
    try:
        assert s.open_entry(e) is None
    finally:
        s.close_dirs()
    assert "Too many levels of symbolic links" in rep.err.getvalue()


def test_readlink_after_parent_flip_is_refused(jail: Path) -> None:
    """The top-level argument "real/link" is read in "real" reached inside the
    module, so a "real" swapped for an escaping symlink lists nothing from outside."""
    _flip(jail / "m", jail / "outside")
    s, rep = _sender(links=True)
    flist = s.build_file_list([b"real/link"])
    assert [e.link for e in flist.entries] == []
    assert 'change_dir "' in rep.err.getvalue()


def test_remove_source_after_parent_flip_spares_outside(jail: Path) -> None:
    """--remove-source-files removes in the module-confined parent only."""
    s, rep = _sender(recursive=True)
    flist = s.build_file_list([b"real"])
    ndx = next(i for i, e in enumerate(flist.entries) if e.name == b"real/file")
    outside_file = jail / "outside" / "file"
    outside_file.write_text(IN_FILE)  # same size as the listed file
    os.utime(outside_file, ns=(0, flist.entries[ndx].mtime_ns))
    _flip(jail / "m", jail / "outside")
    s.remove_source(ndx)
    assert outside_file.read_text() == IN_FILE
    assert "Too many levels of symbolic links" in rep.err.getvalue()


@pytest.mark.parametrize("name", ["secret.txt", "nosuch"])
def test_delete_missing_args_cannot_probe_outside(daemons: tuple[Daemon, Daemon],
                                                  tmp_path: Path, name: str) -> None:
    """--delete-missing-args through a link leading out of the module: an existing and
    a missing name outside give the same refusal (netsync's lstat() of the argument
    used to follow the link, so a missing name deleted the client's copy, exit 0)."""
    for d in daemons:
        dest = tmp_path / d.name
        dest.mkdir()
        (dest / name).write_text("client's own\n")
        p = subprocess.run([tc.RSYNC, "-r", "--delete-missing-args", d.url(f"m/escape/{name}"),
                            f"{dest}/"], env=tc.sync_env(), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        assert p.returncode == 23, (d.name, p.stderr)
        assert b'change_dir "escape" (in m) failed: Too many levels of symbolic links' \
            in p.stderr, (d.name, p.stderr)
        assert (dest / name).read_text() == "client's own\n", d.name


def test_missing_arguments_are_named_as_rsyncd_names_them(daemons: tuple[Daemon, Daemon],
                                                          tmp_path: Path) -> None:
    """util1.c full_fname(): a missing file in a subdir is named from the dir the sender
    entered ("/real/nope" (in m)); a missing dir fails its change_dir()."""
    lines = {}
    for d in daemons:
        dest = tmp_path / d.name
        argv = [tc.RSYNC, "-a", d.url("m/real/nope"), d.url("m/gone/x"), d.url("m/nope2"),
                f"{dest}/"]
        p = subprocess.run(argv, env=tc.sync_env(), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60)
        assert p.returncode == 23, p.stderr
        lines[d.name] = sorted(ln.replace("netsync:", "rsync:")
                               for ln in p.stderr.decode().splitlines()
                               if "[sender]" in ln)
    assert lines["netsync"] == lines["rsync"] == [
        'rsync: [sender] change_dir "gone" (in m) failed: No such file or directory (2)',
        'rsync: [sender] link_stat "/real/nope" (in m) failed: No such file or directory (2)',
        'rsync: [sender] link_stat "nope2" (in m) failed: No such file or directory (2)',
    ]
