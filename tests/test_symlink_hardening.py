"""Symlink hardening as rsync 3.5 does it, checked against Debian's rsync.

Two rules (rsync's syscall.c):
* a path the operator gives (--backup-dir, --temp-dir, --*-dest, --log-file,
  --exclude-from, --files-from, merge files, the destination) follows a symlink
  only when root or the euid owns it; --insecure-links turns that off;
* below the destination nothing is followed: a symlink planted there is not a
  way out of the tree (implied dirs, backups below the backup dir).

Each case runs rsync and netsync on identical setups in their own directories:
same exit code, same resulting tree (the "outside" dir included), nothing
written or read outside.  Planting a symlink owned by another user needs root.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import treecompare as tc

RSYNC = ["/usr/bin/rsync"]
WARNING = b"refusing to follow a symlink owned by an untrusted user"

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="planting a symlink owned by another user needs root")


def _attacker() -> int:
    return pwd.getpwnam("nobody").pw_uid


def plant(link: Path, target: str, owner: str) -> None:
    """A symlink owned by another user ('cross') or by us ('self')."""
    os.symlink(target, link)
    if owner == "cross":
        os.lchown(link, _attacker(), _attacker())


def both(tmp_path: Path, setup: Callable[[Path], None], args: Callable[[Path], list[str]],
         ignore: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess[bytes], ...]:
    """Run rsync in tmp/rsync and netsync in tmp/netsync (cwd = that dir); the exit
    codes and the whole trees (minus ``ignore``) must be the same."""
    runs = []
    t0 = time.time_ns() - 100_000_000
    for who, cmd in (("rsync", RSYNC), ("netsync", tc.program_under_test())):
        work = tmp_path / who
        work.mkdir()
        (work / "outside").mkdir()
        setup(work)
        runs.append(subprocess.run([*cmd, *args(work)], cwd=work, capture_output=True,
                                   timeout=120, env=tc.sync_env()))
    r, n = runs
    assert n.returncode == r.returncode, (r.stderr, n.stderr)
    snaps = []
    for who in ("rsync", "netsync"):
        snap = tc.snapshot(tmp_path / who, t0)
        for name in ignore:
            snap.pop(name.encode(), None)
        snaps.append(snap)
    tc.assert_same(*snaps)
    return r, n


def _files_outside(work: Path) -> list[str]:
    return sorted(str(p.relative_to(work)) for p in (work / "outside").rglob("*") if p.is_file())


def _src_dest(w: Path) -> None:
    (w / "src").mkdir()
    (w / "dest").mkdir()
    for i in range(3):
        (w / "src" / f"f{i}").write_text("NEW-PUSHED-CONTENT\n")
        (w / "dest" / f"f{i}").write_text("OLD\n")
    (w / "outside" / "victim").write_text("keep me\n")


# --------------------------------------------------------------------------
# Operator paths: a directory option whose path (leaf or parent) is a symlink.

DIR_OPTIONS = {
    # option: (extra args, relative paths anchor at the destination?)
    "--backup-dir": (["--backup"], True),
    "--temp-dir": ([], True),
    "--link-dest": ([], True),
    "--copy-dest": ([], True),
    "--compare-dest": ([], True),
}


# Left out: a relative --temp-dir through our own symlink below the destination.
# rsync 3.5.0 makes the temp files through it but then refuses the rename into
# place (ELOOP, exit 23) and leaves them behind; netsync follows the symlink.
DIR_CASES = [
    pytest.param(option, where, owner, insecure,
                 id=f"{option}-{where}-{owner}-{'insecure' if insecure else 'safe'}")
    for option in DIR_OPTIONS for where in ("leaf", "parent", "relative")
    for owner in ("cross", "self") for insecure in (False, True)
    if not (option == "--temp-dir" and where == "relative" and owner == "self" and not insecure)
]


@pytest.mark.parametrize(("option", "where", "owner", "insecure"), DIR_CASES)
def test_operator_dir_option_symlink(tmp_path: Path, option: str, where: str, owner: str,
                                     insecure: bool) -> None:
    extra, _ = DIR_OPTIONS[option]

    def setup(w: Path) -> None:
        _src_dest(w)
        if option in ("--link-dest", "--copy-dest", "--compare-dest"):
            # An exact match for every file in the outside dir: following the
            # symlink would link/copy/skip from there.
            for i in range(3):
                for d in (w / "outside", w / "outside" / "sub"):
                    d.mkdir(exist_ok=True)
                    (d / f"f{i}").write_text("NEW-PUSHED-CONTENT\n")
                    os.utime(d / f"f{i}", (1_000_000_000, 1_000_000_000))
                os.utime(w / "src" / f"f{i}", (1_000_000_000, 1_000_000_000))
            for i in range(3):
                (w / "dest" / f"f{i}").unlink()
        else:
            (w / "outside" / "sub").mkdir()
        if where == "relative":
            plant(w / "dest" / "osl", "../outside", owner)
        else:
            (w / "plant").mkdir()
            plant(w / "plant" / ("osl" if where == "leaf" else "opd"), "../outside", owner)

    def args(w: Path) -> list[str]:
        value = {"leaf": f"{w}/plant/osl", "parent": f"{w}/plant/opd/sub",
                 "relative": "osl"}[where]
        return ["-a", *extra, f"{option}={value}", *(["--insecure-links"] if insecure else []),
                "src/", "dest/"]

    r, n = both(tmp_path, setup, args)
    followed = owner == "self" or insecure
    assert (WARNING in n.stderr) == (not followed), n.stderr
    work = tmp_path / "netsync"
    if option == "--backup-dir":
        # The backups land outside exactly when the symlink may be followed.
        assert bool(_files_outside(work)[1:]) == followed, _files_outside(work)
    if option == "--link-dest":
        linked = os.stat(work / "dest" / "f0").st_nlink > 1
        assert linked == followed, r.stderr


@pytest.mark.parametrize("insecure", [False, True], ids=["safe", "insecure"])
@pytest.mark.parametrize("owner", ["cross", "self"])
def test_delay_updates_absolute_partial_dir_through_symlink(tmp_path: Path, owner: str,
                                                            insecure: bool) -> None:
    """--delay-updates stages in an absolute --partial-dir whose parent is a symlink:
    made through ours, refused (and the files dropped, exit 0) through another's."""
    def setup(w: Path) -> None:
        _src_dest(w)
        (w / "plant").mkdir()
        plant(w / "plant" / "opd", "../outside", owner)

    r, n = both(tmp_path, setup, lambda w: [
        "-a", "--delay-updates", f"--partial-dir={w}/plant/opd/sub",
        *(["--insecure-links"] if insecure else []), "src/", "dest/"])
    followed = owner == "self" or insecure
    assert (tmp_path / "netsync" / "outside" / "sub").is_dir() == followed
    if not followed:
        assert b"Unable to create partial-dir for f0 -- discarding completed file." in n.stderr


@pytest.mark.parametrize("owner", ["cross", "self"])
@pytest.mark.parametrize("where", ["leaf", "parent"])
@pytest.mark.parametrize("option", ["--exclude-from", "--include-from", "--files-from",
                                    "--filter=merge", "--log-file"])
def test_operator_file_option_symlink(tmp_path: Path, option: str, where: str,
                                      owner: str) -> None:
    """A file option: the planted symlink leads to a file outside the tree."""
    def setup(w: Path) -> None:
        _src_dest(w)
        (w / "outside" / "victim").write_text("f1\n")  # a rule / a list / a log to append to
        (w / "plant").mkdir()
        if where == "leaf":
            plant(w / "plant" / "osl", "../outside/victim", owner)
        else:
            plant(w / "plant" / "opd", "../outside", owner)

    def args(w: Path) -> list[str]:
        value = f"{w}/plant/osl" if where == "leaf" else f"{w}/plant/opd/victim"
        opt = f"{option} {value}" if option.startswith("--filter") else f"{option}={value}"
        return ["-a", opt, "src/", "dest/"]

    # The log file's lines carry a pid and a time: compare whether it grew, not its bytes.
    ignore = ("outside/victim",) if option == "--log-file" else ()
    r, n = both(tmp_path, setup, args, ignore=ignore)
    assert (WARNING in n.stderr) == (owner == "cross")
    if option == "--log-file":
        for who in ("rsync", "netsync"):
            grew = (tmp_path / who / "outside" / "victim").read_text() != "f1\n"
            assert grew == (owner == "self"), who
        if owner == "cross":
            assert b"failed to open log-file" in n.stderr
            assert b'Ignoring "log file" setting.' in n.stdout


def test_files_from_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    r, n = both(tmp_path, _src_dest, lambda w: ["-a", f"--files-from={w}/nonexistent",
                                                 "src/", "dest/"])
    assert n.returncode == 1
    assert b"failed to open files-from file" in n.stderr and b"Traceback" not in n.stderr


@pytest.mark.parametrize("tdir", ["missing", "dest-file"])
def test_temp_dir_must_be_an_existing_dir(tmp_path: Path, tdir: str) -> None:
    """A relative --temp-dir is looked up in the destination, and must be a dir there."""
    r, n = both(tmp_path, _src_dest,
                lambda w: ["-a", f"--temp-dir={'nonexistent' if tdir == 'missing' else 'f0'}",
                           "src/", "dest/"])
    assert n.returncode == 1
    assert n.stderr.splitlines()[0] == r.stderr.splitlines()[0]


# --------------------------------------------------------------------------
# In-destination confinement: symlinks planted below the destination.

def test_relative_backup_dir_planted_in_destination(tmp_path: Path) -> None:
    """dest/bdir -> ../outside owned by another user: the backups stay out of it."""
    def setup(w: Path) -> None:
        _src_dest(w)
        plant(w / "dest" / "bdir", "../outside", "cross")

    both(tmp_path, setup, lambda w: ["-a", "--backup", "--backup-dir=bdir", "src/", "dest/"])
    assert _files_outside(tmp_path / "netsync") == ["outside/victim"]


@pytest.mark.parametrize("owner", ["cross", "self"])
def test_symlink_below_backup_dir_is_not_followed(tmp_path: Path, owner: str) -> None:
    """backup/sub is a symlink to outside: the backup of dest/sub/f* is not written there."""
    def setup(w: Path) -> None:
        for d in ("src/sub", "dest/sub", "backup"):
            (w / d).mkdir(parents=True)
        for i in range(3):
            (w / "src" / "sub" / f"f{i}").write_text("payload\n")
            (w / "dest" / "sub" / f"f{i}").write_text("different\n")
        plant(w / "backup" / "sub", "../outside", owner)

    both(tmp_path, setup, lambda w: ["-a", "-b", f"--backup-dir={w}/backup", "src/", "dest/"])
    assert _files_outside(tmp_path / "netsync") == []


@pytest.mark.parametrize("entry", ["A/B/file", "A/B/C/"])
def test_relative_implied_dirs_through_planted_symlink(tmp_path: Path, entry: str) -> None:
    """-R --no-implied-dirs: dest/A -> outside is not used to make A/B (rsync's make_path)."""
    def setup(w: Path) -> None:
        (w / "srcroot" / "A" / "B" / "C").mkdir(parents=True)
        (w / "srcroot" / "A" / "B" / "file").write_text("PAYLOAD\n")
        (w / "srcroot" / "A" / "B" / "C" / "file").write_text("PAYLOAD\n")
        (w / "dest").mkdir()
        os.symlink("../outside", w / "dest" / "A")

    r, n = both(tmp_path, setup,
                lambda w: ["-aR", "--no-implied-dirs", f"srcroot/./{entry}", "dest/"])
    assert n.returncode == 23
    assert list((tmp_path / "netsync" / "outside").iterdir()) == []


def test_copy_dest_symlink_owned_by_other_user_is_not_read(tmp_path: Path) -> None:
    """--copy-dest=cdroot/cd, cd a symlink (owned by another user) to a dir of secrets."""
    def setup(w: Path) -> None:
        (w / "src").mkdir()
        (w / "dest").mkdir()
        (w / "cdroot").mkdir()
        for i in range(3):
            (w / "src" / f"f{i}").write_text("SRC\n")
            (w / "outside" / f"f{i}").write_text("SEC\n")
            for p in (w / "src" / f"f{i}", w / "outside" / f"f{i}"):
                os.utime(p, (1_000_000_000, 1_000_000_000))
        plant(w / "cdroot" / "cd", "../outside", "cross")

    both(tmp_path, setup, lambda w: ["-rt", f"--copy-dest={w}/cdroot/cd", "src/", "dest/"])
    assert (tmp_path / "netsync" / "dest" / "f0").read_text() == "SRC\n"


@pytest.mark.parametrize("owner", ["cross", "self"])
def test_destination_given_as_symlink(tmp_path: Path, owner: str) -> None:
    """dest/sub/ is a symlink: followed when ours, refused (exit 3) when another user's."""
    def setup(w: Path) -> None:
        (w / "src" / "sub").mkdir(parents=True)
        (w / "src" / "sub" / "f0").write_text("payload\n")
        (w / "dest").mkdir()
        plant(w / "dest" / "sub", "../outside", owner)

    r, n = both(tmp_path, setup, lambda w: ["-a", "src/sub/", "dest/sub/"])
    assert n.returncode == (3 if owner == "cross" else 0)
    assert _files_outside(tmp_path / "netsync") == ([] if owner == "cross" else ["outside/f0"])


# --------------------------------------------------------------------------
# A daemon module is a jail: no path a client names reaches outside it, not
# through a symlink in the module (whoever owns it), "..", or an absolute path.

JAIL_CASES = {
    "dest-is-symlink": ["-a", "SRC/f", "URL/esc/"],
    "tree-over-symlink": ["-a", "SRC/", "URL/"],
    "backup-dir-symlink": ["-a", "-b", "--backup-dir=esc", "SRC/f", "URL/d/"],
    "backup-dir-dotdot": ["-a", "-b", "--backup-dir=/../outside", "SRC/f", "URL/d/"],
    "copy-dest-symlink": ["-a", "--copy-dest=/esc", "SRC/", "URL/new/"],
    "link-dest-dotdot": ["-a", "--link-dest=../../outside", "SRC/", "URL/new/"],
    "implied-dirs-symlink": ["-a", "-R", "--no-implied-dirs", "SRC/./esc/new", "URL/"],
}


@pytest.fixture(scope="module")
def jail_daemons(tmp_path_factory: pytest.TempPathFactory):
    from interop import peers

    base = tmp_path_factory.mktemp("jail")
    t0 = time.time_ns() - 100_000_000  # what is newer compares as "now"
    out = {}
    for kind, cmd in (("rsync", RSYNC), ("netsync", tc.program_under_test())):
        root = base / kind
        conf = ["use chroot = no", "munge symlinks = no", "uid = root", "gid = root"]
        for case in JAIL_CASES:
            mod = root / case / "mod"
            (mod / "d").mkdir(parents=True)
            (root / case / "outside").mkdir()
            (mod / "d" / "f").write_text("old\n")
            (root / case / "outside" / "f").write_text("SECRET\n")
            os.utime(root / case / "outside" / "f", (1_000_000_000, 1_000_000_000))
            os.symlink("../outside", mod / "esc")
            conf += [f"[{case}]", f"path = {mod}", "read only = no"]
        (root / "rsyncd.conf").write_text("\n".join(conf) + "\n")
        proc, port = peers.start_daemon(cmd, root / "rsyncd.conf", env=tc.sync_env())
        out[kind] = (port, root, proc)
    src = base / "src"
    (src / "esc").mkdir(parents=True)
    (src / "esc" / "new").write_text("new\n")
    (src / "f").write_text("SECRET\n")  # same as outside/f: a --*-dest match if reached
    os.utime(src / "f", (1_000_000_000, 1_000_000_000))
    try:
        yield out, src, t0
    finally:
        for _, _, proc in out.values():
            peers.stop(proc)


@pytest.mark.parametrize("case", list(JAIL_CASES))
def test_daemon_module_is_a_jail(jail_daemons, case: str) -> None:
    daemons, src, t0 = jail_daemons
    runs = {}
    for kind, (port, _root, _) in daemons.items():
        args = [a.replace("SRC", str(src)).replace("URL", f"rsync://127.0.0.1:{port}/{case}")
                for a in JAIL_CASES[case]]
        runs[kind] = subprocess.run([*RSYNC, *args], capture_output=True, timeout=60,
                                    env=tc.sync_env())
    r, n = runs["rsync"], runs["netsync"]
    assert n.returncode == r.returncode, (r.stderr, n.stderr)
    tc.assert_same(*(tc.snapshot(daemons[k][1] / case, t0) for k in ("rsync", "netsync")))
    outside = daemons["netsync"][1] / case / "outside"
    assert sorted(os.listdir(outside)) == ["f"]
    assert (outside / "f").read_text() == "SECRET\n"


def test_temp_dir_rename_does_not_follow_a_swapped_dest_dir(tmp_path: Path) -> None:
    """rsync's rename-fullpath-symlink-race, made deterministic: with an absolute
    --temp-dir, dest/sub becomes a symlink to outside while the file is written; the
    rename into place must not follow it (it went through the path before)."""
    src, dest, outside, tmpd = (tmp_path / n for n in ("src", "dest", "outside", "tmpd"))
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(os.urandom(300_000))
    (dest / "sub").mkdir(parents=True)
    outside.mkdir()
    tmpd.mkdir()
    # --bwlimit keeps the file in the temp dir for about three seconds.
    proc = subprocess.Popen([*tc.program_under_test(), "-a", "--bwlimit=100", f"--temp-dir={tmpd}",
                             f"{src}/", f"{dest}/"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not any(tmpd.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(tmpd.iterdir()), "the temp file never appeared"
    (dest / "sub").rename(dest / "sub.real")
    (dest / "sub").symlink_to(outside)
    _, err = proc.communicate(timeout=60)
    assert list(outside.iterdir()) == [], err
    assert list(tmpd.iterdir()) == [], err
    # Where the held dir went, or refused with rsync's partial-transfer code.
    got = dest / "sub.real" / "f"
    assert (got.exists() and got.read_bytes() == (src / "sub" / "f").read_bytes()) \
        or proc.returncode == 23, (proc.returncode, err)
