"""Deterministic generators of source trees and pre-existing destinations.

Everything is derived from a seed so two runs (or two workers) build byte-identical
trees.  All names are bytes.  All timestamps are far in the past, so anything the
program under test stamps with "now" can be told apart by `treecompare`.

Layout of a test work dir (see `make_workdir`):
    src/      the source tree (`make_tree`)
    outside/  things that unsafe symlinks in src/ point to (`make_outside`)
    dst/      optional pre-existing destination (`make_dest`)
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB

# 2001-09-09 .. 2020-09-13: old enough to never be mistaken for "now".
_T_MIN = 1_000_000_000
_T_MAX = 1_600_000_000

IS_ROOT = os.geteuid() == 0

TREES = ("mixed", "small", "big")
DESTS = ("none", "empty", "same", "diverged")

_SPARSE_SIZE = 2 * MiB


def _b(p: Path | bytes | str) -> bytes:
    return os.fsencode(p)


def _join(*parts: bytes) -> bytes:
    return os.path.join(*parts)


class _Gen:
    """Builds entries under one root and remembers which times to set last."""

    def __init__(self, root: Path | bytes, seed: int) -> None:
        self.root = _b(root)
        self.rng = random.Random(seed)
        self.dirs: list[bytes] = []
        self.chown_later: list[tuple[bytes, int, int]] = []

    def path(self, rel: bytes) -> bytes:
        return _join(self.root, rel) if rel else self.root

    def mtime_ns(self) -> int:
        return self.rng.randrange(_T_MIN, _T_MAX) * 1_000_000_000 + self.rng.randrange(1, 10**9)

    def data(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    def dir(self, rel: bytes, mode: int = 0o755) -> bytes:
        p = self.path(rel)
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
        self.dirs.append(rel)
        return p

    def file(self, rel: bytes, size: int | None = None, data: bytes | None = None,
             mode: int = 0o644) -> bytes:
        p = self.path(rel)
        if data is None:
            data = self.data(size if size is not None else self.rng.randrange(0, 8 * KiB))
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        self.touch(rel)
        return p

    def touch(self, rel: bytes, ns: int | None = None, follow: bool = True) -> None:
        t = self.mtime_ns() if ns is None else ns
        os.utime(self.path(rel), ns=(t, t), follow_symlinks=follow)

    def symlink(self, rel: bytes, target: bytes) -> None:
        os.symlink(target, self.path(rel))
        self.touch(rel, follow=False)

    def sparse(self, rel: bytes, size: int) -> None:
        p = self.path(rel)
        with open(p, "wb") as f:
            f.write(self.data(64 * KiB))
            f.seek(size - 64 * KiB)
            f.write(self.data(64 * KiB))
        os.chmod(p, 0o644)
        self.touch(rel)

    def chown(self, rel: bytes, uid: int, gid: int) -> None:
        if IS_ROOT:
            self.chown_later.append((rel, uid, gid))

    def finish(self) -> None:
        for rel, uid, gid in self.chown_later:
            os.lchown(self.path(rel), uid, gid)
        # Deepest first: setting a child's time must not be undone by later writes.
        for rel in sorted(set(self.dirs), key=lambda r: -r.count(b"/") - (1 if r else 0)):
            if os.path.isdir(self.path(rel)) and not os.path.islink(self.path(rel)):
                self.touch(rel)


def _fill_basic(g: _Gen) -> None:
    """Plain files, dirs, deep nesting, modes, ownership: the bulk of every tree."""
    g.dir(b"")
    for i, size in enumerate((0, 1, 100, 4 * KiB, 4 * KiB + 1, 70 * KiB, MiB + 17)):
        g.file(b"file%d.dat" % i, size)
    g.dir(b"sub")
    g.dir(b"sub/inner")
    for i in range(12):
        g.file(b"sub/f%02d.txt" % i)
        g.file(b"sub/inner/g%02d.txt" % i)
    g.dir(b"emptydir")
    # 20 levels deep.
    rel = b"deep"
    g.dir(rel)
    for i in range(20):
        rel += b"/d%02d" % i
        g.dir(rel)
    g.file(rel + b"/bottom.txt", 123)
    # Modes.
    g.dir(b"modes")
    g.file(b"modes/private", 300, mode=0o600)
    g.file(b"modes/exec", 300, mode=0o755)
    g.file(b"modes/readonly", 300, mode=0o444)
    g.file(b"modes/setuid", 300, mode=0o4755)
    g.dir(b"modes/setgid_dir", mode=0o2775)
    g.file(b"modes/setgid_dir/inside", 10)
    g.dir(b"modes/private_dir", mode=0o700)
    g.file(b"modes/private_dir/secret", 10, mode=0o600)
    # Ownership by ids that have no passwd entry.
    g.dir(b"owned")
    g.file(b"owned/by1234", 50)
    g.chown(b"owned/by1234", 1234, 5678)
    g.file(b"owned/by_nobody", 50)
    g.chown(b"owned/by_nobody", 65534, 65534)
    g.dir(b"owned/dir4321")
    g.file(b"owned/dir4321/x", 5)
    g.chown(b"owned/dir4321", 4321, 8765)
    # Files for exclude/filter/cvs tests.
    g.file(b"app.conf", 40)
    g.file(b"sub/inner/db.conf", 40)
    g.file(b"main.o", 40)
    g.file(b"sub/util.o", 40)
    g.dir(b"keep")
    g.file(b"keep/precious", 40)
    g.file(b"backup~", 10)
    g.file(b"core", 10)
    g.dir(b".git")
    g.file(b".git/HEAD", 20)
    g.file(b".rsync-filter", data=b"- *.txt\n")
    g.file(b"sub/.rsync-filter", data=b"- inner/\n")
    g.dir(b"dirlink_me")
    g.file(b"dirlink_me/content", 33)


def _fill_links(g: _Gen) -> None:
    g.dir(b"links")
    g.file(b"links/target", 77)
    g.symlink(b"links/rel", b"target")
    g.symlink(b"links/rel_up", b"../file3.dat")
    g.symlink(b"links/abs", b"/nonexistent/netsync-test-abs")
    g.symlink(b"links/abs_etc", b"/etc/hostname")
    g.symlink(b"links/dangling", b"no_such_file")
    g.symlink(b"links/to_dir", b"../sub")
    g.symlink(b"links/unsafe_file", b"../../outside/ofile")
    g.symlink(b"links/unsafe_dir", b"../../outside/odir")
    g.symlink(b"links/loop", b"loop")
    g.symlink(b"links/owned_link", b"target")
    g.chown(b"links/owned_link", 1234, 5678)
    # Hardlink groups, one spanning directories.
    g.dir(b"hard")
    g.file(b"hard/a1", 1000)
    os.link(g.path(b"hard/a1"), g.path(b"hard/a2"))
    os.link(g.path(b"hard/a1"), g.path(b"sub/a3_hardlink"))
    g.file(b"hard/b1", 0)
    os.link(g.path(b"hard/b1"), g.path(b"hard/b2"))
    g.sparse(b"sparse.img", _SPARSE_SIZE)


def _fill_special(g: _Gen) -> None:
    g.dir(b"special")
    os.mkfifo(g.path(b"special/fifo"))
    g.touch(b"special/fifo")
    if IS_ROOT:
        os.mknod(g.path(b"special/chardev"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        g.touch(b"special/chardev")
        os.mknod(g.path(b"special/blockdev"), 0o640 | stat.S_IFBLK, os.makedev(7, 200))
        g.touch(b"special/blockdev")


def _fill_names(g: _Gen) -> None:
    g.dir(b"names")
    for name in (b"with space", b"new\nline", b"-leading-dash", b"--rf", b"star*q?br[x]",
                 b"back\\slash", b"tab\there", b"\xff\xfe-not-utf8", b"caf\xc3\xa9",
                 b"#hash", b"x" * 255, b"'quote\"", b"ends-with-space "):
        g.file(b"names/" + name, 20)
    g.dir(b"names/dir with space")
    g.file(b"names/dir with space/\xe9t\xe9-latin1", 20)


def _fill_big(g: _Gen) -> None:
    g.dir(b"big")
    g.file(b"big/one_mib", MiB)
    g.file(b"big/three_and_half", 3 * MiB + MiB // 2)
    g.file(b"big/six_mib", 6 * MiB + 5)


def make_tree(root: Path, kind: str = "mixed", seed: int = 1) -> None:
    """Create `root` (must not exist) holding a tree of the given kind.

    kinds: "mixed" (everything but the multi-MiB files), "small" (plain files and dirs
    only: fast, for output-format tests), "big" (mixed plus 1/3.5/6 MiB files, ~13 MB).
    """
    if kind not in TREES:
        raise ValueError(kind)
    g = _Gen(root, seed)
    _fill_basic(g)
    if kind in ("mixed", "big"):
        _fill_links(g)
        _fill_special(g)
        _fill_names(g)
    if kind == "big":
        _fill_big(g)
    g.finish()


def make_outside(root: Path, seed: int = 1) -> None:
    """Targets of the unsafe symlinks: src/links/unsafe_* -> ../../outside/*."""
    g = _Gen(root, seed + 1000)
    g.dir(b"")
    g.file(b"ofile", 99)
    g.dir(b"odir")
    g.file(b"odir/inside", 11)
    g.finish()


def walk(root: bytes) -> Iterator[tuple[bytes, os.stat_result]]:
    """(relative path, lstat) of every entry below root, sorted, not following links."""
    stack = [b""]
    while stack:
        rel = stack.pop()
        names = sorted(os.listdir(_join(root, rel) if rel else root), reverse=True)
        for n in names:
            r = _join(rel, n) if rel else n
            st = os.lstat(_join(root, r))
            yield r, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(r)


def copy_tree(src: Path, dst: Path) -> None:
    """Exact copy (hardlinks, holes, devices, owners, ns times) via GNU cp."""
    subprocess.run(["cp", "-a", "--sparse=always", "--", os.fspath(src), os.fspath(dst)],
                   check=True)


def make_dest(src: Path, dst: Path, kind: str, seed: int = 1) -> None:
    """Create a destination that relates to the source tree `src` in a controlled way.

    none: nothing is created.  empty: an empty directory.  same: an exact copy.
    diverged: a copy with, deterministically chosen by the seed: extra files and dirs
    (things to delete, incl. *.conf and *.o), files with changed content but the same
    size and mtime, older and newer mtimes, shorter prefixes (for --append), missing
    files, file<->dir<->symlink type changes, mode and owner changes, a split hardlink
    group and a dir replaced by a symlink to a dir (for -K).
    """
    if kind == "none":
        return
    if kind == "empty":
        os.mkdir(dst)
        os.utime(dst, ns=(_T_MIN * 10**9, _T_MIN * 10**9))
        return
    copy_tree(src, dst)
    if kind == "same":
        return
    if kind != "diverged":
        raise ValueError(kind)
    t_start = time.time_ns() - 10**9
    g = _Gen(dst, seed + 7)
    d = g.root
    files = [r for r, st in walk(d)
             if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size > 0
             and not r.startswith((b"hard", b"big/", b"dirlink_me", b"names/xxx"))
             and not r.endswith(b".rsync-filter")]
    g.rng.shuffle(files)
    kinds = ("same_size_same_time", "older", "newer", "prefix", "missing", "mode",
             "to_dir", "to_symlink", "untouched", "untouched")
    for i, rel in enumerate(files):
        how = kinds[i % len(kinds)]
        p = g.path(rel)
        st = os.lstat(p)
        if how == "same_size_same_time":
            with open(p, "r+b") as f:
                f.write(bytes(b ^ 0xFF for b in f.read(1)))
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif how == "older":
            g.file(rel, st.st_size + 3, mode=stat.S_IMODE(st.st_mode))
            os.utime(p, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns - 10**12))
        elif how == "newer":
            g.file(rel, st.st_size, mode=stat.S_IMODE(st.st_mode))
            os.utime(p, ns=(st.st_mtime_ns + 10**12, st.st_mtime_ns + 10**12))
        elif how == "prefix":
            with open(p, "r+b") as f:
                f.truncate(st.st_size // 2)
            os.utime(p, ns=(st.st_mtime_ns - 10**9, st.st_mtime_ns - 10**9))
        elif how == "missing":
            os.unlink(p)
        elif how == "mode":
            os.chmod(p, 0o640 if stat.S_IMODE(st.st_mode) != 0o640 else 0o600)
            if IS_ROOT:
                os.chown(p, 777, 888)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif how == "to_dir":
            os.unlink(p)
            g.dir(rel)  # empty: without --delete/--force rsync can only replace those
        elif how == "to_symlink":
            os.unlink(p)
            g.symlink(rel, b"somewhere/else")
    # Source dirs that are something else in the destination.
    if os.path.isdir(g.path(b"sub/inner")):
        shutil.rmtree(g.path(b"sub/inner"))
        g.file(b"sub/inner", 5)
    if os.path.isdir(g.path(b"emptydir")):
        os.rmdir(g.path(b"emptydir"))
        g.symlink(b"emptydir", b"sub")
    # -K: dst has a symlink to a dir where src has a dir.
    shutil.rmtree(g.path(b"dirlink_me"))
    g.dir(b"real_dir_target")
    g.file(b"real_dir_target/content", 33)
    g.file(b"real_dir_target/dst_only", 3)
    g.symlink(b"dirlink_me", b"real_dir_target")
    if os.path.lexists(g.path(b"links/rel")):
        os.unlink(g.path(b"links/rel"))
        g.file(b"links/rel", 8)
    if os.path.lexists(g.path(b"hard/a2")):
        os.unlink(g.path(b"hard/a2"))
        g.file(b"hard/a2", 1000)
    # Extras to delete (or keep, depending on the filter under test).
    g.file(b"extra_file", 100)
    g.file(b"extra.conf", 10)
    g.file(b"sub/extra.o", 10)
    g.dir(b"extra_dir")
    g.dir(b"extra_dir/nested")
    g.file(b"extra_dir/nested/x", 10)
    g.file(b"keep/extra_protected", 10)
    g.file(b"deep/d00/extra_deep", 10)
    g.symlink(b"extra_link", b"dangling")
    if os.path.isdir(g.path(b"modes")):
        os.chmod(g.path(b"modes"), 0o700)
    g.finish()
    # Mutations stamped their parent dirs with "now"; put those back in the past.
    for rel, st in [(b"", os.lstat(d)), *walk(d)]:
        if st.st_mtime_ns >= t_start:
            g.touch(rel, follow=False)


def make_workdir(work: Path, tree: str, dest: str, seed: int = 1) -> None:
    """Build src/, outside/ and (depending on `dest`) dst/ inside `work`."""
    work.mkdir(parents=True, exist_ok=True)
    make_tree(work / "src", tree, seed)
    make_outside(work / "outside", seed)
    make_dest(work / "src", work / "dst", dest, seed)
