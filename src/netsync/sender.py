"""The sender role: builds the file list from the source arguments and sends file data.

It answers the generator's typed requests (:class:`netsync.messages.SendRequest`)
with :class:`netsync.messages.FileData`; it never learns whether the generator
is in this process or at the other end of a wire.
"""

from __future__ import annotations

import errno
import operator
import os
import stat
import time
from collections.abc import Callable, Iterator

from netsync import errors as E
from netsync import filters as F
from netsync import messages as m
from netsync import metadata as _md
from netsync import safepath
from netsync.flist import (
    FLAG_CONTENT_DIR,
    FLAG_HLINK_FIRST,
    FLAG_HLINK_FOLLOWER,
    FLAG_IMPLIED_DIR,
    FLAG_MOUNT_DIR,
    FLAG_TOP_DIR,
    Chunk,
    FileEntry,
    FileList,
    WalkOptions,
    entry_key,
    is_unsafe_symlink,
    join,
)
from netsync.report import Reporter

_S_IFMT = 0o170000
_S_IFDIR = stat.S_IFDIR
_S_IFREG = stat.S_IFREG
_S_IFLNK = stat.S_IFLNK
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_PROC_FD: bool | None = None


def _listdir_fd(fd: int) -> list[bytes]:
    """The names in the held dir ``fd``, as bytes: through /proc/self/fd where there
    is one (listdir() gives bytes for a bytes path), else decoded back from an fd
    listing (which gives str)."""
    global _PROC_FD
    if _PROC_FD is None:
        _PROC_FD = os.path.isdir(b"/proc/self/fd")
    if _PROC_FD:
        try:
            return os.listdir(b"/proc/self/fd/%d" % fd)
        except OSError:  # no /proc in a chroot; EACCES once setuid made us undumpable
            _PROC_FD = False
    return [os.fsencode(n) for n in os.listdir(fd)]
# netsync --daemon with "munge symlinks": links read here lose rsync's munge prefix
# (flist.c readlink_stat), so a munged module serves its links as they were sent.
unmunge_links = False
SYMLINK_PREFIX = b"/rsyncd-munged/"
_entry_name = operator.attrgetter("name")
# rsync's globals of the same names, set per process by options.apply_process_options():
# --open-noatime (or the module's "open noatime") opens files to read with O_NOATIME,
# --copy-devices lists a device as a regular file and sends its contents.
open_noatime = False
copy_devices = False


def read_flags() -> int:
    """Extra open() flags for reading a file (syscall.c do_open: O_NOATIME)."""
    return getattr(os, "O_NOATIME", 0) if open_noatime else 0


def device_size(fd: int) -> int:
    """flist.c get_device_size(): a device's length is where a seek to its end lands."""
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        return 0
    return end

CHUNK_SIZE = 32 * 1024  # rsync refuses literal tokens larger than this
IOERR_GENERAL = 1
IOERR_VANISHED = 2


def _clean(path: bytes) -> bytes:
    """rsync's clean_fname: collapse '//' and '/./', drop a trailing '/.'."""
    absolute = path.startswith(b"/")
    parts = [p for p in path.split(b"/") if p and p != b"."]
    out = b"/".join(parts)
    if absolute:
        out = b"/" + out
    return out or (b"/" if absolute else b".")


def _daemon_hidden(path: bytes, is_dir: bool) -> bool:
    """flist.c path_is_daemon_excluded(): a source argument or any dir above it."""
    check = F.daemon_excluded
    assert check is not None
    parts = path.split(b"/")
    for i in range(1, len(parts)):
        if parts[i - 1] not in (b"", b".") and check(b"/".join(parts[:i]), True):
            return True
    return check(path, is_dir)


class _MergeDirs:
    """flist.c with -R (and --files-from): which dirs' per-dir merge files are in force
    when a named path is checked.  rsync reads them as it passes dirs, into a stack
    indexed by depth (exclude.c change_local_filter_dir()); the first dir read also
    reads the merge files above the transfer (its parent_dirscan), and those go when
    that dir is left.  So what applies to a name depends on the names before it."""

    def __init__(self, filters) -> None:
        self.f = filters
        self.stack: list[tuple[bytes, object]] = []  # (dir, state) at depth i + 1
        self.dot: object = None  # "." at depth 0 (incremental, a "." name)
        self.last = b""  # send_implied_dirs()'s lastpath

    def change(self, name: bytes, path: bytes, depth: int) -> None:
        while len(self.stack) >= depth:
            self.f.leave_dir(self.stack.pop()[1])
        self.stack.append((name, self.f.enter_dir(name, path)))

    def goto(self, comps: list[bytes], base: bytes) -> None:
        """Every level of a dir entered, as the incremental lists come to it."""
        for i in range(1, len(comps) + 1):
            d = b"/".join(comps[:i])
            if len(self.stack) >= i and self.stack[i - 1][0] == d:
                continue
            self.change(d, join(base, d), i)
        while len(self.stack) > len(comps):
            self.f.leave_dir(self.stack.pop()[1])

    def implied(self, name: bytes, base: bytes) -> None:
        """send_implied_dirs() without incremental recursion: the dirs of ``name`` not
        shared with the last name's are entered, each at its depth."""
        head = name.rpartition(b"/")[0]
        last, tp, start, depth = self.last, 0, -1, 0
        while True:
            if tp == len(head):
                if tp == len(last) or last[tp:tp + 1] == b"/":
                    return  # the same dirs (or below them): nothing changes
                break
            if tp >= len(last) or last[tp] != head[tp]:
                break
            if head[tp] == 0x2F:
                start, depth = tp, depth + 1
            tp += 1
        cut = head.find(b"/", start + 1)
        while cut >= 0:
            depth += 1
            self._enter(head[:cut], base, depth)
            cut = head.find(b"/", cut + 1)
        self._enter(head, base, depth + 1)
        self.last = head

    def _enter(self, d: bytes, base: bytes, depth: int) -> None:
        if os.path.isdir(join(base, d)):  # (followed: an implied dir may be a link)
            self.change(d, join(base, d), depth)

    def close(self) -> None:
        while self.stack:
            self.f.leave_dir(self.stack.pop()[1])
        if self.dot is not None:
            self.f.leave_dir(self.dot)
            self.dot = None


class Sender:
    # --iconv (netsync.charset.Iconv): names and, with ``symlink_iconv``, symlink
    # targets that do not convert to UTF-8 stay out of the list.
    iconv = None
    symlink_iconv = False
    # What rsync's incremental recursion would be for this transfer: with -R and
    # per-dir merge files, it decides when each dir's merge file is read (_MergeDirs).
    rsync_inc = False
    _mdirs: _MergeDirs | None = None

    def __init__(self, wopts: WalkOptions, reporter: Reporter, filters=None,
                 checksum_fn=None) -> None:
        self.w = wopts
        self.rep = reporter
        self.filters = filters
        self.checksum_fn = checksum_fn
        self.flist = FileList()
        self._seen_dirs: set[tuple[int, bytes]] = set()
        self._hl_groups: dict[tuple[int, int], int] = {}
        self.io_error = 0
        self._open_flags: int | None = None  # open_source()'s, once the first file goes
        # sender.c sender_open_confined(): a file's parent dirs are opened from its
        # root one step at a time without following a symlink, so a dir swapped for a
        # symlink mid-transfer cannot lead the open out of the tree. (root, dir, fd)
        # of the last parent is kept for its next files.
        self._confine: bool | None = None
        self._src_dir: tuple[int, bytes, int] | None = None
        self._rm_held: tuple[bytes, bytes, int] | None = None  # _removal_parent()'s
        # A daemon's module is a jail for the sender too: (module root fd, the cwd's
        # path below it), or () when no module confines us; see _jail().
        self._jail_st: tuple[int, bytes] | None = None
        # The dir _walk_dir() is listing: (its path + "/", its fd), flist.c scan_dirfd.
        self._scan: tuple[bytes, int] | None = None
        self.missing_args = 0  # 1: --ignore-missing-args
        # One plain source walks out already in rsync's order; anything else is sorted.
        self._presorted = True
        #: build_file_list()'s count so far, after each directory (-P: "N files...")
        self.on_count: Callable[[int], None] | None = None

    # ---------------------------------------------------------------- file list
    def build_file_list(self, args: list[bytes], files_from: list[bytes] | None = None,
                        ff_base: bytes | None = None) -> FileList:
        """The whole sorted list at once (what the wire protocol without inc-recursion,
        and the options that need every entry up front, work from)."""
        self._entries: list[FileEntry] = []
        self._hl_keys: list[None] = []  # kept for subclasses that append placeholders
        if files_from is not None or len(args) != 1 or self.w.relative:
            self._presorted = False
        self._mdirs = None
        if (self.w.relative or files_from is not None) and self.filters is not None \
                and self.filters.has_perdir_merges:
            self._mdirs = _MergeDirs(self.filters)
            self._mlater: list[tuple] = []
        try:
            for _ in self._arg_chunks_all(args, files_from, ff_base, collect=True):
                pass
            if self._mdirs is not None and self._mlater:
                self._run_later()
        finally:
            if self._mdirs is not None:
                self._mdirs.close()
                self._mdirs = None
        self._finish()
        return self.flist

    def _run_later(self) -> None:
        """send1extra(): the names below a dir, and the named dirs' contents, come with
        that dir's list, the dirs taken in the lists' order (each one's dirs entered)."""
        md = self._mdirs
        assert md is not None
        out = self._entries
        jobs = sorted(self._mlater, key=lambda j: (j[0], j[1], j[2]))
        self._mlater = []
        try:
            for comps, kind, _, root_idx, base, name, st, from_files, e in jobs:
                md.goto(comps, base)
                if kind == 1:  # a top-level dir's contents: the dir is entered already
                    for d, children in self._walk_dir(root_idx, join(base, name), e,
                                                      depth_recurse=self.w.recursive,
                                                      ident=(st.st_dev, st.st_ino),
                                                      entered=True):
                        self._collect(out, None if d is e else d, children)
                    continue
                if self._excluded(name, stat.S_ISDIR(st.st_mode)):
                    continue
                tops: list[FileEntry] = []
                self._entries = tops
                for d, children in self._named(root_idx, base, name, st, tops,
                                               dotdir=False, from_files=from_files):
                    self._collect(out, d, children)
        finally:
            self._entries = out

    @staticmethod
    def _collect(out: list[FileEntry], d: FileEntry | None, children: list[FileEntry]) -> None:
        if d is not None:
            out.append(d)
        for e in children:
            if e.mode & _S_IFMT != _S_IFDIR:
                out.append(e)

    def iter_chunks(self, args: list[bytes]) -> Iterator[Chunk]:
        """The list one directory at a time, as rsync's incremental recursion sends it.

        Yields ``(dir, children)``: ``(None, top-level entries)`` first, then for every
        listed directory, in rsync's depth-first order, its entry and its direct
        children (non-dirs first, then subdirs; each subdir gets its own chunk later).
        Only for one plain source (no -R, no --files-from), whose walk needs no sort;
        with -H an entry's ``hlink`` is still its (dev, ino): the lists number the
        groups as they go out.  A chunk is not referenced by the sender once the next
        one is asked for."""
        assert len(args) == 1 and not self.w.relative
        for chunk in self._arg_chunks_all(args, None, None, collect=False):
            self.flist.io_error = self.io_error  # what the generator knows so far
            yield chunk
        self.flist.io_error = self.io_error

    def _arg_chunks_all(self, args: list[bytes], files_from: list[bytes] | None,
                        ff_base: bytes | None, collect: bool) -> Iterator[Chunk]:
        if files_from is not None:
            assert ff_base is not None
            base = ff_base.rstrip(b"/") or b"/"
            root_idx = self._root(base)
            for name in files_from:
                rbase, ridx = base, root_idx
                cut = name.find(b"/./")
                if cut >= 0:
                    # "dir/./path": dir is part of the source, path what is sent.
                    rbase = join(base, _clean(name[:cut]))
                    ridx = self._root(rbase)
                    name = name[cut + 3:]
                trailing = name.endswith(b"/")
                rel = _clean(name.lstrip(b"/")) if name.strip(b"/") else b"."
                dotdir = rel == b"." or trailing
                yield from self._arg_or_collect(collect, ridx, rbase, rel, relative=True,
                                                dotdir=dotdir, from_files=True)
        else:
            for arg in args:
                yield from self._add_source(arg, collect)

    def _arg_or_collect(self, collect: bool, root_idx: int, base: bytes, name: bytes, *,
                        relative: bool, dotdir: bool = False,
                        from_files: bool = False) -> Iterator[Chunk]:
        if collect:
            # Through _add_arg, which subclasses may override.
            self._add_arg(root_idx, base, name, relative=relative, dotdir=dotdir,
                          from_files=from_files)
            return
        yield from self._arg_chunks(root_idx, base, name, relative=relative, dotdir=dotdir,
                                    from_files=from_files)

    def _root(self, root: bytes) -> int:
        try:
            return self.flist.roots.index(root)
        except ValueError:
            self.flist.roots.append(root)
            return len(self.flist.roots) - 1

    def _add_source(self, arg: bytes, collect: bool) -> Iterator[Chunk]:
        w = self.w
        if w.relative:
            idx = arg.find(b"/./")
            if idx >= 0:
                base = arg[:idx] or b"/"
                rel = arg[idx + 3:]
            else:
                base = b"/" if arg.startswith(b"/") else b"."
                rel = arg.lstrip(b"/") if arg.startswith(b"/") else arg
            trailing = rel.endswith(b"/")
            rel = _clean(rel.lstrip(b"/")) if rel.strip(b"/") else b"."
            if rel == b"/":
                rel = b"."
            for comp in rel.split(b"/"):
                if comp == b"..":
                    raise m.FatalError(1, f'found ".." dir in relative path: {os.fsdecode(rel)}')
            root_idx = self._root(base)
            fn = arg[idx + 3:].lstrip(b"/") if idx >= 0 else arg
            if collect and len(fn) > 2 and fn.startswith(b"./"):
                # flist.c: a leading "./" sends the dir it names (once, implied) so
                # the dest dir itself gets its attributes.
                try:
                    self._make(b".", self._stat_dir(base), base, root_idx, FLAG_IMPLIED_DIR)
                except OSError:
                    pass
            yield from self._arg_or_collect(collect, root_idx, base, rel, relative=True,
                                            dotdir=(rel == b"." or trailing))
            return
        # Non-relative: the last component is the name, what precedes it the root.
        dotdir = False
        if not arg or arg.endswith(b"/"):
            dotdir = True
            path = arg + b"." if arg != b"./" else b"."
        elif arg == b".." or arg.endswith(b"/.."):
            path = arg + b"/."
            dotdir = True
        elif arg == b"." or arg.endswith(b"/."):
            path = arg
            dotdir = True
        else:
            path = arg
        slash = path.rfind(b"/")
        if slash >= 0:
            base = path[:slash] or b"/"
            name = path[slash + 1:]
        else:
            base, name = b".", path
        root_idx = self._root(base)
        yield from self._arg_or_collect(collect, root_idx, base, name, relative=False,
                                        dotdir=dotdir)

    def _lstat(self, path: bytes, follow: bool) -> os.stat_result:
        return os.stat(path) if follow else os.lstat(path)

    def _add_arg(self, root_idx: int, base: bytes, name: bytes, *, relative: bool,
                 dotdir: bool = False, from_files: bool = False) -> None:
        """One source argument into the whole list (self._entries), in walk order:
        each directory right before its contents."""
        out = self._entries
        add = out.append
        on_count = self.on_count
        try:
            for d, children in self._arg_chunks(root_idx, base, name, relative=relative,
                                                dotdir=dotdir, from_files=from_files):
                if d is not None:
                    add(d)
                for e in children:
                    if e.mode & _S_IFMT != _S_IFDIR:  # a dir comes with its own chunk
                        add(e)
                if on_count is not None:
                    on_count(len(out))
        finally:
            self._entries = out

    def _arg_chunks(self, root_idx: int, base: bytes, name: bytes, *, relative: bool,
                    dotdir: bool = False, from_files: bool = False) -> Iterator[Chunk]:
        w = self.w
        path = join(base, name)
        if not relative and base != b".":
            # flist.c change_pathname(): the arg's dir is entered (inside the module for
            # a daemon: util1.c change_dir()), or the arg fails as a whole.
            try:
                if self._jail() is not None:
                    os.close(self._jail_dir(base))
                elif not stat.S_ISDIR(os.stat(base).st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "")
                elif not os.access(base, os.X_OK):  # chdir() needs search permission
                    raise PermissionError(errno.EACCES, "")
            except OSError as e:
                self.io_error |= IOERR_GENERAL
                self.rep.error_xfer(f'change_dir {self.rep.qpath(base)} failed: '
                                    f"{os.strerror(e.errno or 0)} ({e.errno})", role="sender")
                return
        try:
            st = self._stat_for(path, name, follow_dir=w.copy_dirlinks or dotdir)
            if F.daemon_excluded is not None and _daemon_hidden(path, stat.S_ISDIR(st.st_mode)):
                raise FileNotFoundError(errno.ENOENT, "daemon-excluded")  # as rsync: ENOENT
        except OSError as e:
            if e.errno == errno.ENOENT and self.missing_args == 1:
                return
            if e.errno != errno.ENOENT:  # flist.c: a missing arg inhibits no deletion
                self.io_error |= IOERR_GENERAL
            self.rep.error_xfer(f'link_stat {self.rep.qpath(path)} failed: '
                                f"{os.strerror(e.errno or 0)} ({e.errno})", role="sender")
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        # flist.c: only a dot-dir is never excluded; "dir/" with -R is a name like any
        if not (dotdir and name == b".") and self._excluded(name, is_dir):
            return
        if is_dir and not (w.recursive or w.dirs):
            self.rep.info(f"skipping directory {self.rep.safe(name)}")
            return
        tops: list[FileEntry] = []
        self._entries = tops
        if relative and w.implied_dirs and b"/" in name:
            # Send implied parent dirs so their permissions arrive too.
            comps = name.split(b"/")
            for i in range(1, len(comps)):
                pname = b"/".join(comps[:i])
                if (root_idx, pname) in self._seen_dirs:
                    continue
                try:
                    pst = self._stat_dir(join(base, pname))
                except OSError:
                    continue
                self._seen_dirs.add((root_idx, pname))
                self._append(FileEntry(pname, pst.st_mode), pst, root_idx,
                             FLAG_IMPLIED_DIR, path=join(base, pname))
        md = self._mdirs if relative else None
        later = entered = False
        if md is not None:
            if not self.rsync_inc:
                if w.implied_dirs and b"/" in name:
                    md.implied(name, base)
            elif b"/" in name:
                # An incremental rsync lists it with its dir's list (send1extra()), with
                # that dir's merge files read: _run_later().
                self._mlater.append((name.split(b"/")[:-1], 0, len(self._mlater), root_idx,
                                     base, name, st, from_files, None))
                yield None, tops
                for e in tops:
                    yield e, []
                return
            elif dotdir and name == b"." and is_dir:
                if md.dot is None:  # "." at depth 0, for all that follows
                    md.dot = self.filters.enter_dir(b".", path)
                entered = True
            else:
                later = True
        yield from self._named(root_idx, base, name, st, tops, dotdir=dotdir,
                               from_files=from_files, later=later, entered=entered)

    def _named(self, root_idx: int, base: bytes, name: bytes, st: os.stat_result,
               tops: list[FileEntry], *, dotdir: bool, from_files: bool, later: bool = False,
               entered: bool = False) -> Iterator[Chunk]:
        """A named path's entry (after ``tops``, its implied dirs), then a dir's contents:
        walked now, or with ``later`` when its list comes up (_run_later())."""
        w = self.w
        path = join(base, name)
        is_dir = stat.S_ISDIR(st.st_mode)
        if w.one_file_system:
            self._fs_dev = st.st_dev
        top = None
        content = False
        if is_dir:
            content = w.recursive or (w.dirs and dotdir) or from_files and w.recursive
            flags = FLAG_TOP_DIR | (FLAG_CONTENT_DIR if content else 0)
            top = self._make(name, st, path, root_idx, flags)
        else:
            self._make(name, st, path, root_idx, 0)
        yield None, tops
        # Every listed directory gets a chunk of its own (empty unless walked).
        for e in tops:
            if e.mode & _S_IFMT == _S_IFDIR:
                if e is top and content and later:
                    self._mlater.append(([name], 1, len(self._mlater), root_idx, base, name, st,
                                         from_files, e))
                    yield e, []
                elif e is top and content:
                    yield from self._walk_dir(root_idx, path, e, depth_recurse=w.recursive,
                                              ident=(st.st_dev, st.st_ino), entered=entered)
                else:
                    yield e, []

    # ------------------------------------------------------- the module jail
    def _jail(self) -> tuple[int, bytes] | None:
        """(fd of the module root, the cwd's path below it + "/") when this sender
        serves a daemon module (syscall.c secure_relpath_active()), else None.

        Then every directory the list is built from is reached from the module
        root one component at a time: an in-module symlink is followed, one that
        leads out of the module (absolute, or climbing above the root) is ELOOP,
        as rsync's secure_opendir() / confined change_dir() / readlink at the held
        scan dir. Symlink-following modes (-L, -k, --copy-unsafe-links) follow
        leaves for the listing, but never enumerate or open out of the module."""
        j = self._jail_st
        if j is None:
            j = self._jail_st = safepath.module_anchor() or ()
        return j or None

    def _jail_dir(self, path: bytes, flags: int = safepath.DIR_FLAGS) -> int:
        """An fd of the directory ``path`` (from the cwd), confined to the module."""
        j = self._jail_st or self._jail()
        assert j is not None
        if j[0] < 0 or path.startswith(b"/"):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        return safepath.walk_beneath(j[0], j[1] + path, flags)

    def _jail_parent(self, path: bytes) -> tuple[int, bytes, bool]:
        """(fd of path's dir confined to the module, leaf name, whether the fd is
        the caller's to close): the dir being listed when path is in it."""
        held = self._in_scan(path)
        if held is not None:
            return held
        head, _, leaf = path.rpartition(b"/")
        if leaf in (b"", b".", b".."):
            return self._jail_dir(path), b".", True
        return self._jail_dir(head or b"."), leaf, True

    def _at(self, path: bytes) -> tuple[int | None, bytes, bool]:
        """Where a path the list names is reached: _jail_parent() in a daemon's
        module; else in the dir being listed when it is there (its held, checked
        fd: see _open_listed_dir()), or (None, path, False), the path from the cwd."""
        if self._jail() is None:
            held = self._in_scan(path)
            return (None, path, False) if held is None else held
        return self._jail_parent(path)

    def _in_scan(self, path: bytes) -> tuple[int, bytes, bool] | None:
        """(the listed dir's held fd, leaf, False) when ``path`` is directly in the
        dir being listed (flist.c scan_dirfd), else None."""
        sc = self._scan
        if sc is not None and path.startswith(sc[0]) and b"/" not in path[len(sc[0]):]:
            return sc[1], path[len(sc[0]):], False
        return None

    def _open_listed_dir(self, root_idx: int, dpath: bytes, ident: tuple[int, int]) -> int:
        """The directory ``dpath`` for its listing, outside a module: flist.c
        secure_opendir(), which opens it beneath the transfer root.  A dir is only
        descended into once its parent's listing saw it as one, so the quick way
        is to open the path and check it is still the dir (dev, ino) seen then;
        when it is not (a path component swapped since, maybe for a symlink that
        leads out of the tree) it is reached again from the transfer root, a
        component at a time, following only symlinks that stay beneath it."""
        try:
            fd = os.open(dpath, _DIR_FLAGS)
        except OSError as ex:
            if ex.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
        else:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == ident:
                return fd
            os.close(fd)
        base = self.flist.roots[root_idx]
        pre = b"" if base == b"." else base if base.endswith(b"/") else base + b"/"
        if not dpath.startswith(pre):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        anchor = os.open(base, safepath.DIR_FLAGS)
        try:
            return safepath.walk_beneath(anchor, dpath[len(pre):], _DIR_FLAGS)
        finally:
            os.close(anchor)

    def xattr_at(self, path: bytes) -> tuple[bytes, int]:
        """-X: how ``path``'s xattrs are reached (in a daemon's module, through its dir
        held within the module): (path, an fd for the caller to close, or -1)."""
        if self._jail() is None:
            return path, -1
        dfd, leaf, owned = self._jail_parent(path)
        return b"/proc/self/fd/%d/%s" % (dfd, leaf), dfd if owned else -1

    def _read_xattrs(self, e: FileEntry, path: bytes) -> bool:
        try:
            at, fd = self.xattr_at(path)
        except OSError as ex:
            self.rep.error_xfer(f"get_xattr_names: llistxattr({self.rep.qpath(path)},1024) "
                                f"failed: {os.strerror(ex.errno or 0)} ({ex.errno})",
                                role="sender")
            return False
        try:
            return self.w.xattrs(e, at)  # type: ignore[misc]
        finally:
            if fd >= 0:
                os.close(fd)

    def _stat_dir(self, path: bytes) -> os.stat_result:
        """stat() of a directory the list names (an implied or "./" dir)."""
        if self._jail() is None:
            return os.stat(path)
        fd = self._jail_dir(path)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def _readlink(self, path: bytes) -> bytes:
        if _md.fake_super:
            return _md.fake_readlink(path, _md.fake_super, am_sender=True)
        dfd, leaf, owned = self._at(path)
        try:
            return os.readlink(leaf, dir_fd=dfd)
        finally:
            if owned:
                os.close(dfd)

    def _stat_for(self, path: bytes, name: bytes, follow_dir: bool) -> os.stat_result:
        st = self._stat_for_real(path, name, follow_dir)
        if _md.fake_super:  # flist.c link_stat() -> x_lstat(): the %stat xattr is folded in
            def report(ex: OSError) -> None:
                self.rep.error_xfer(f'failed to read xattr user.rsync.%stat for '
                                    f'{self.rep.qpath(path)}: '
                                    f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="sender")
            st = _md.xstat_overlay(path, st, report)
        return st

    def _stat_for_real(self, path: bytes, name: bytes, follow_dir: bool) -> os.stat_result:
        dfd, leaf, owned = self._at(path)
        try:
            return self._stat_at(dfd, leaf, name, follow_dir)
        finally:
            if owned:
                os.close(dfd)

    def _stat_at(self, dfd: int | None, leaf: bytes, name: bytes,
                 follow_dir: bool) -> os.stat_result:
        """flist.c link_stat(): ``leaf`` in the held dir ``dfd`` (link_stat_at()), or a
        path from the cwd (None).
        A followed leaf is stat()ed where it points, as rsync does; its contents are
        listed and opened only through the module jail."""
        w = self.w
        if w.copy_links:
            return os.stat(leaf, dir_fd=dfd)
        st = os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            if follow_dir:
                try:
                    st2 = os.stat(leaf, dir_fd=dfd)
                    if stat.S_ISDIR(st2.st_mode):
                        return st2
                except OSError:
                    pass
            if w.copy_unsafe_links:
                target = os.readlink(leaf, dir_fd=dfd)
                if is_unsafe_symlink(target, name):
                    if self.rep.level("symsafe") >= 1:  # flist.c readlink_stat()
                        self.rep.info(f'copying unsafe symlink "{self.rep.safe(name)}" -> '
                                      f'"{self.rep.safe(target)}"')
                    return os.stat(leaf, dir_fd=dfd)
        return st

    def _excluded(self, name: bytes, is_dir: bool, path: bytes | None = None) -> bool:
        if F.daemon_excluded is not None and path is not None \
                and F.daemon_excluded(path, is_dir):
            return True
        return bool(self.filters is not None and self.filters.excluded(name, is_dir, "sender"))

    def _make(self, name: bytes, st: os.stat_result, path: bytes, root_idx: int,
              flags: int) -> FileEntry | None:
        mode = st.st_mode
        e = FileEntry(name, mode, st.st_size if stat.S_ISDIR(mode) else 0, st.st_mtime_ns,
                      st.st_uid, st.st_gid)
        if stat.S_ISDIR(mode):
            if (root_idx, name) in self._seen_dirs and not flags & FLAG_TOP_DIR:
                return None
            self._seen_dirs.add((root_idx, name))
        return self._append(e, st, root_idx, flags, path)

    def _append(self, e: FileEntry, st: os.stat_result, root_idx: int, flags: int,
                path: bytes) -> FileEntry | None:
        mode = st.st_mode
        e.mode = mode
        e.mtime_ns = st.st_mtime_ns
        e.uid, e.gid = st.st_uid, st.st_gid
        e.flags |= flags
        e.root = root_idx
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            e.size = st.st_size
        elif stat.S_ISLNK(mode):
            try:
                e.link = self._readlink(path)
                if unmunge_links and len(e.link) > len(SYMLINK_PREFIX) \
                        and e.link.startswith(SYMLINK_PREFIX):
                    e.link = e.link[len(SYMLINK_PREFIX):]
            except OSError as ex:
                self._vanished_or_error(path, ex, "readlink_stat")
                return None
            e.size = len(e.link)
        elif (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and copy_devices:
            # flist.c make_file(): the device is listed as a regular file of its
            # current length, its mtime (seconds) "now" since a device's is stale.
            size = st.st_size
            if size == 0:
                try:
                    dfd, leaf, owned = self._at(path)
                    try:
                        fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                                     | read_flags(), dir_fd=dfd)
                    finally:
                        if owned:
                            os.close(dfd)
                except OSError:
                    pass
                else:
                    try:
                        size = device_size(fd)
                    finally:
                        os.close(fd)
            e.mode = _S_IFREG | stat.S_IMODE(mode)
            e.size = size
            e.mtime_ns = int(time.time()) * 10**9 + st.st_mtime_ns % 10**9
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            e.rdev = st.st_rdev
        if self.w.atimes:
            e.atime_ns = st.st_atime_ns
        key: tuple[int, int] | None = None
        if self.w.hard_links and st.st_nlink > 1 and not stat.S_ISDIR(mode):
            key = (st.st_dev, st.st_ino)
        if self.w.checksum and stat.S_ISREG(mode) and self.checksum_fn is not None:
            try:
                e.checksum = self.checksum_fn(path, e.size)
            except OSError:
                e.checksum = b""
        if self.iconv is not None and not self._convertible(e, path):
            return None
        if self.w.acls and not stat.S_ISLNK(e.mode) and not self._get_acl(e, path):
            return None
        if key is not None:
            e.hlink = key  # type: ignore[assignment]  # _finish() makes it a group index
        if self.w.xattrs is not None and not self._read_xattrs(e, path):
            self.io_error |= IOERR_GENERAL  # flist.c: left out of the list
            return None
        self._entries.append(e)
        return e

    def _convertible(self, e: FileEntry, path: bytes) -> bool:
        """flist.c send_file_name() with --iconv: a name (or, with CF_SYMLINK_ICONV, a
        symlink's target) that does not convert to UTF-8 leaves the entry out."""
        ic = self.iconv
        assert ic is not None
        if ic.to_wire(e.name) is None:
            what = f"filename: {self.rep.safe(e.name)}"
        elif e.link is not None and self.symlink_iconv and ic.to_wire(e.link) is None:
            what = f"symlink data for: {self.rep.qpath(path)}"
        else:
            return True
        self.io_error |= IOERR_GENERAL
        self.rep.error_xfer(f"[sender] cannot convert {what} ({ic.error})", bare=True)
        return False

    def _get_acl(self, e: FileEntry, path: bytes) -> bool:
        """flist.c send_file_name() -> get_acl(): -A reads the entry's ACLs (in the
        module jail through the held dir); False (after the error) drops the entry."""
        from netsync import acls

        dfd, leaf, owned = self._at(path)
        try:
            p = path if dfd is None else b"/proc/self/fd/%d/%s" % (dfd, leaf)
            # (a path from the cwd is read as acl_get_file() does, a -L link where it
            # points; in a module's jail nothing is followed out of the held dir)
            acc, dflt = acls.get_acl(p, e.mode, specials=self.w.specials,
                                     devices=self.w.devices, fake_super=_md.fake_super,
                                     follow=dfd is None)
        except acls.CorruptFakeAcl:
            self.io_error |= IOERR_GENERAL  # (get_rsync_acl() fails without a word)
            return False
        except OSError as ex:
            self.io_error |= IOERR_GENERAL
            self.rep.error_xfer(f'get_acl: sys_acl_get_file({self.rep.safe(path)}, '
                                f'ACL_TYPE_ACCESS): {os.strerror(ex.errno or 0)} ({ex.errno})',
                                role="sender")
            return False
        finally:
            if owned:
                os.close(dfd)
        e.acl = (acc, dflt) if self.w.acls == 1 else acls.as_received(acc, dflt, e.mode)
        return True

    def _vanished_or_error(self, path: bytes, ex: OSError, what: str) -> None:
        if ex.errno == errno.ENOENT and (self.w.copy_links or self.w.copy_unsafe_links) \
                and os.path.islink(path):
            self.io_error |= IOERR_GENERAL
            self.rep.error_xfer(f'symlink has no referent: {self.rep.qpath(path)}',
                                bare=True)
            return
        if ex.errno == errno.ENOENT:
            self.io_error |= IOERR_VANISHED
            self.rep.warning(f'file has vanished: {self.rep.qpath(path)}', role="sender")
        else:
            self.io_error |= IOERR_GENERAL
            self.rep.error_xfer(f'{what}({self.rep.qpath(path)}) failed: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="sender")

    def _walk_dir(self, root_idx: int, dpath: bytes, d: FileEntry,
                  depth_recurse: bool, ident: tuple[int, int],
                  entered: bool = False) -> Iterator[Chunk]:
        """Depth-first walk below ``dpath`` (the directory listed as ``d``): its chunk,
        then its subdirectories' chunks.  A tree may be 2,000 dirs deep (a path fills
        MAXPATHLEN), so the descent is a list of frames, not Python's recursion.
        ``entered``: the filters are in ``d`` already (_MergeDirs)."""
        children, subs, fstate = self._list_dir(root_idx, dpath, d, depth_recurse, ident,
                                                enter=not entered)
        frames = [(fstate, iter(subs))]
        try:
            yield d, children
            del children  # the consumer may drop the chunk while we descend
            while frames:
                for e, path, flags, ident in frames[-1][1]:
                    if flags & FLAG_CONTENT_DIR:
                        children, subs, fstate = self._list_dir(root_idx, path, e,
                                                                depth_recurse, ident)
                        frames.append((fstate, iter(subs)))
                        yield e, children
                        del children
                        break
                    yield e, []
                else:
                    fstate = frames.pop()[0]
                    if fstate is not None:
                        self.filters.leave_dir(fstate)
        finally:
            while frames:  # closed early: leave the dirs' filter states, innermost first
                fstate = frames.pop()[0]
                if fstate is not None:
                    self.filters.leave_dir(fstate)

    def _list_dir(self, root_idx: int, dpath: bytes, d: FileEntry, depth_recurse: bool,
                  ident: tuple[int, int], enter: bool = True
                  ) -> tuple[list[FileEntry], list[tuple[FileEntry, bytes, int, tuple[int, int]]],
                             object]:
        """One directory of the walk: its chunk's entries, its subdirectories to
        descend into, and the filter state entered for it (left by the caller)."""
        w = self.w
        dname = d.name
        children: list[FileEntry] = []
        self._entries = children
        fstate = self.filters.enter_dir(dname, dpath) \
            if self.filters is not None and enter else None
        # Nothing but the lstat decides about a regular file: build its entry inline
        # (the hot loop of a big tree; the general path below does the same).
        fast = self.filters is None and F.daemon_excluded is None and not _md.fake_super and not (
            w.copy_links or w.copy_unsafe_links or w.atimes or w.hard_links or w.checksum
            or w.xattrs or w.acls) and self.iconv is None
        jail = self._jail() is not None
        # flist.c send_directory(): outside a module only the modes that follow
        # symlinks on purpose (the operator's own tree) list a dir by its path.
        held = jail or not (w.copy_links or w.copy_unsafe_links or w.copy_dirlinks
                            or safepath.insecure_links)
        sfd = -1
        try:
            try:
                if jail:
                    # flist.c secure_opendir(): listed from the module root down, so
                    # neither a raced parent nor a followed dir symlink (-L, -k,
                    # --copy-unsafe-links) enumerates anything outside the module.
                    sfd = self._jail_dir(dpath, _DIR_FLAGS)
                    names = _listdir_fd(sfd)
                elif held:
                    sfd = self._open_listed_dir(root_idx, dpath, ident)
                    names = _listdir_fd(sfd)
                else:
                    names = os.listdir(dpath)
            except OSError as ex:
                if sfd >= 0:
                    os.close(sfd)
                if ex.errno == errno.ENOENT:
                    self._vanished_or_error(dpath, ex, "opendir")
                else:
                    self.io_error |= IOERR_GENERAL
                    self.rep.error_xfer(f'opendir {self.rep.qpath(dpath)} failed: '
                                        f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="sender")
                return children, [], fstate
            # In rsync's sorted order (files, then the subdirs), so a single-source list
            # needs no global sort. Where the walk has messages to give (-v's "copying
            # unsafe symlink", filter traces) names are stat()ed in readdir order, as
            # rsync's send_directory() does, and sorted after: the fast path, with
            # nothing but I/O errors to say, sorts first (~3% of a no-op).
            if fast:
                names.sort()
            subdirs: list[tuple[bytes, bytes, bytes, os.stat_result, int]] = []
            nprefix = b"" if dname == b"." else dname + b"/"
            pprefix = dpath if dpath.endswith(b"/") else dpath + b"/"
            add = children.append
            dfd = -1
            if held:
                dfd = sfd  # every name is stat()ed and readlink()ed in the held dir
                self._scan = (pprefix, sfd)
                if not fast:
                    dfd = -1  # (the general path below finds it through _scan)
            elif fast:
                try:  # stat the names relative to the dir: no path walk per file
                    dfd = os.open(dpath, _DIR_FLAGS)
                except OSError:
                    pass
            fstatat = os.stat
            try:
                for n in names:
                    name = nprefix + n
                    try:
                        if dfd >= 0:
                            st = fstatat(n, dir_fd=dfd, follow_symlinks=False)
                            fmt = st.st_mode & _S_IFMT
                            if fmt == _S_IFREG:
                                add(FileEntry(name, st.st_mode, st.st_size, st.st_mtime_ns,
                                              st.st_uid, st.st_gid, 0, None, 0, root_idx))
                                continue
                            path = pprefix + n  # a plain file above never needs it
                            if fmt == _S_IFLNK:
                                st = self._stat_for(path, name, follow_dir=w.copy_dirlinks)
                        else:
                            path = pprefix + n
                            st = self._stat_for(path, name, follow_dir=w.copy_dirlinks)
                    except OSError as ex:
                        self._vanished_or_error(pprefix + n, ex, "readlink_stat")
                        continue
                    is_dir = stat.S_ISDIR(st.st_mode)
                    if self._excluded(name, is_dir, path):
                        continue
                    if not is_dir:
                        self._make(name, st, path, root_idx, 0)
                        continue
                    flags = 0
                    if w.one_file_system and st.st_dev != self._fs_dev:
                        if w.one_file_system > 1:
                            continue
                        flags |= FLAG_MOUNT_DIR
                    elif depth_recurse:
                        flags |= FLAG_CONTENT_DIR
                    subdirs.append((n + b"/", path, name, st, flags))
            finally:
                if held:
                    self._scan = None
                    os.close(sfd)
                elif dfd >= 0:
                    os.close(dfd)
            if not fast:
                children.sort(key=_entry_name)
            subdirs.sort(key=lambda t: t[0])
            subs: list[tuple[FileEntry, bytes, int, tuple[int, int]]] = []
            for _, path, name, st, flags in subdirs:
                e = self._make(name, st, path, root_idx, flags)
                if e is not None:
                    subs.append((e, path, flags, (st.st_dev, st.st_ino)))
            return children, subs, fstate
        except BaseException:
            if fstate is not None:
                self.filters.leave_dir(fstate)
            raise

    def _finish(self) -> None:
        """Sort like rsync, drop duplicates, and link hard-link groups."""
        entries = self._entries
        if not self._presorted:
            entries = sorted(entries, key=entry_key)  # stable: the first of equals stays
        out: list[FileEntry] = []
        last_name: bytes | None = None
        for e in entries:
            if e.name == last_name:
                # rsync keeps the first, or the dir of a dir and a non-dir; a later
                # top dir's flags merge into the kept one.
                prev = out[-1]
                if stat.S_ISDIR(e.mode) and not stat.S_ISDIR(prev.mode):
                    out[-1] = e
                    continue
                prev.flags |= e.flags & (FLAG_TOP_DIR | FLAG_CONTENT_DIR)
                continue
            last_name = e.name
            out.append(e)
        if not self._presorted:
            # flist_sort_and_clean(): a dir and a non-dir of one name (from two sources)
            # do not sort side by side; the dir is kept, it may have contents.
            dirs = {e.name for e in out if stat.S_ISDIR(e.mode)}
            if dirs:
                out = [e for e in out if stat.S_ISDIR(e.mode) or e.name not in dirs]
        groups: dict[tuple[int, int], int] = {}
        for idx, e in enumerate(out):
            key = e.hlink  # the walk left the (dev, ino) key here
            if key is None:
                continue
            first = groups.get(key)  # type: ignore[call-overload]
            if first is None:
                groups[key] = idx  # type: ignore[index]
                out[idx].hlink = idx
            else:
                out[idx].hlink = first
                out[idx].flags |= FLAG_HLINK_FOLLOWER
                out[first].flags |= FLAG_HLINK_FIRST
        # A lone member (others excluded) is no group at all.
        for first in groups.values():
            if not out[first].flags & FLAG_HLINK_FIRST:
                out[first].hlink = None
        self.flist.entries = out
        self.flist.io_error = self.io_error
        del self._entries

    # ---------------------------------------------------------------- data
    def send_file(self, req: m.SendRequest) -> m.FileData:
        """Open the source file and describe its data for the receiver."""
        opened = self.open_source(req.ndx)
        if opened is None:
            return m.FileData(req.ndx, req.iflags, None, iter(()), failed=True)
        return self.file_data(req, *opened)

    def open_source(self, ndx: int) -> tuple[int, os.stat_result] | None:
        """sender.c's open of a file to send, with its fstat(); None once reported failed."""
        return self.open_entry(self.flist.entry(ndx))

    def open_entry(self, e) -> tuple[int, os.stat_result] | None:
        """open_source() of the entry itself."""
        flags = self._open_flags
        if flags is None:  # the options are settled by the first send: work them out once
            flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | read_flags()
            if not (self.w.copy_links or self.w.copy_unsafe_links):
                flags |= os.O_NOFOLLOW
            self._open_flags = flags
            # Not where the list itself went through symlinked dirs (-L, -k,
            # --copy-unsafe-links) or -R kept them in the names.
            w = self.w
            self._confine = not (w.copy_links or w.copy_unsafe_links or w.copy_dirlinks
                                 or w.relative)
        name = e.name
        try:
            head, _, leaf = name.rpartition(b"/")
            if not self._confine and self._jail() is not None:
                fd = self._jail_open(self._entry_path(e), flags)
            elif (head and self._confine) or self._jail() is not None:
                # the held parent dir (_parent_fd()'s cache), looked at inline: once per file
                c = self._src_dir
                root = e.root
                if c is not None and c[1] == head and c[0] == root:
                    dfd = c[2]
                else:
                    dfd = self._parent_fd(root, self.flist.roots[root], head)
                fd = os.open(leaf, flags, dir_fd=dfd)
            else:
                fd = os.open(self._entry_path(e), flags)
        except OSError as ex:
            path = self._entry_path(e)
            if ex.errno == errno.ENOENT:
                self.io_error |= IOERR_VANISHED
                self.rep.warning(f'file has vanished: {self.rep.qpath(path)}', role="sender")
            else:
                self.io_error |= IOERR_GENERAL
                self.rep.error_xfer(f'send_files failed to open {self.rep.qpath(path)}: '
                                    f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="sender")
            return None
        try:
            return fd, os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise

    def _jail_open(self, path: bytes, flags: int) -> int:
        """sender.c's confined open for a daemon's module when the list may have gone
        through symlinks (-L, -k, --copy-unsafe-links, -R): in-module links are
        followed, none that leads out of the module (sender_open_copylinks_confined)."""
        w = self.w
        if w.copy_links or w.copy_unsafe_links or w.copy_dirlinks:
            j = self._jail_st
            assert j
            if j[0] < 0 or path.startswith(b"/"):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            return safepath.open_following_beneath(j[0], j[1] + path, flags)
        # -R: the parent is held for the next files (as _parent_fd() does, keyed
        # apart from its roots), the leaf never followed.
        head, _, leaf = path.rpartition(b"/")
        c = self._src_dir
        if c is not None and c[0] == -1 and c[1] == head:
            dfd = c[2]
        else:
            self.close_dirs()
            dfd = self._jail_dir(head or b".")
            self._src_dir = (-1, head, dfd)
        return os.open(leaf, flags | os.O_NOFOLLOW, dir_fd=dfd)

    def _entry_path(self, e) -> bytes:
        """flist.source_path(), inline: the path of the entry's file from here."""
        base = self.flist.roots[e.root]
        name = e.name
        if not base:
            return name
        if name == b".":
            return base
        return base + name if base.endswith(b"/") else base + b"/" + name

    def _parent_fd(self, root: int, base: bytes, head: bytes) -> int:
        c = self._src_dir
        if c is not None and c[0] == root and c[1] == head:
            return c[2]
        self.close_dirs()
        if self._jail() is not None:  # the root itself is reached inside the module
            rfd = self._jail_dir(base or b".")
        else:
            rfd = os.open(base or b".", safepath.DIR_FLAGS)
        try:
            fd = safepath.dir_beneath(rfd, head.split(b"/"))
        finally:
            os.close(rfd)
        self._src_dir = (root, head, fd)
        return fd

    def close_dirs(self) -> None:
        """Let go of the held source dir (open_entry() keeps the last one)."""
        c, self._src_dir = self._src_dir, None
        if c is not None:
            os.close(c[2])

    def close(self) -> None:
        """The end of the sending: every held dir let go."""
        self.close_dirs()
        r, self._rm_held = self._rm_held, None
        if r is not None:
            os.close(r[2])

    def file_data(self, req: m.SendRequest, fd: int, st: os.stat_result) -> m.FileData:
        """The data of an opened source file (``open_source``) as the receiver takes it."""
        src = m.SourceFd(fd)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            if not copy_devices:
                os.close(fd)
                raise m.FatalError(E.RERR_PROTOCOL,
                                   "attempt to copy device contents without --copy-devices")
            # sender.c: exactly the listed length is sent (a device may never end),
            # so the data goes as tokens, never as a copy of the whole fd.
            size = st.st_size or device_size(fd)
            return m.FileData(req.ndx, req.iflags, req.sums, self._tokens(src, req, size),
                              size=size, closer=src.close)
        sink: list[bytes] | None = None if req.sums is None or req.sums.head.count == 0 else []
        return m.FileData(req.ndx, req.iflags, req.sums, self._tokens(src, req, sink=sink),
                          source_fd=fd, size=st.st_size, closer=src.close, file_sum=sink)

    def _tokens(self, src: m.SourceFd, req: m.SendRequest, limit: int | None = None,
                sink: list[bytes] | None = None) -> Iterator[bytes | int]:
        """The file's data as tokens; ``limit``: a device's listed length; ``sink``
        gets the whole-file checksum of delta tokens once they are all out."""
        fd = src.fd
        assert fd is not None
        try:
            if req.sums is None or req.sums.head.count == 0:
                left = limit
                while left is None or left > 0:
                    chunk = os.read(fd, 256 * 1024 if left is None else min(left, 256 * 1024))
                    if not chunk:
                        break
                    if left is not None:
                        left -= len(chunk)
                    for i in range(0, len(chunk), CHUNK_SIZE):
                        yield chunk[i:i + CHUNK_SIZE]
                if left:
                    # map_file(): a device that ends early reads as zeros up to its length.
                    zeros = bytes(min(left, CHUNK_SIZE))
                    while left > 0:
                        yield zeros[:min(left, CHUNK_SIZE)]
                        left -= min(left, CHUNK_SIZE)
            else:
                from netsync import match

                size = os.fstat(fd).st_size if limit is None else limit
                # Read a window at a time (no mmap: a file that shrinks meanwhile would
                # raise SIGBUS); what went missing reads as zeros, reported as rsync does.
                data = match.FileWindow(fd, size)
                file_sum = yield from match.match_tokens(data, req.sums, req.checksum_name,
                                                         req.seed, req.protocol)
                if sink is not None:
                    sink.append(file_sum)
                if data.status:
                    self.read_errors(req.ndx, data.status)
        finally:
            src.close()

    def read_errors(self, ndx: int, status: int) -> None:
        """sender.c: a file that could not be read in full went out padded with zeros."""
        self.io_error |= IOERR_GENERAL
        path = self.flist.source_path(self.flist.entry(ndx))
        self.rep.error_xfer(f'read errors mapping {self.rep.qpath(path)}: '
                            f"{os.strerror(status)} ({status})", role="sender")

    def _removal_parent(self, e: FileEntry, path: bytes) -> tuple[int | None, bytes, bool]:
        """sender.c secure_sender_parent_fd() for a sender outside a module: the
        dir of the listed name, reached from the transfer root (what rsync's
        change_pathname() made the cwd) a component at a time, each beneath the one
        before: a symlink on the way may lead down, not up or out.  So a dir that -k
        or -L followed, or one swapped for a symlink since it was listed, does not
        steer the unlink to another file: that is an error (ELOOP), as rsync's.
        The last dir stays held for the next removal from it (most share one)."""
        head, _, leaf = e.name.rpartition(b"/")
        if not head or safepath.insecure_links:
            return None, path, False
        root = self.flist.roots[e.root]
        held = self._rm_held
        if held is not None:
            if held[0] == root and held[1] == head:
                return held[2], leaf, False
            os.close(held[2])
            self._rm_held = None
        fd = os.open(root or b".", safepath.DIR_FLAGS)
        try:
            for c in head.split(b"/"):
                if c in (b"", b"."):
                    continue
                nfd = safepath.walk_beneath(fd, c)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        self._rm_held = (root, head, fd)
        return fd, leaf, False

    def remove_source(self, ndx: int, dest: bytes | None = None) -> None:
        """--remove-source-files: the receiver confirmed this file arrived (``dest``:
        where, in a local copy)."""
        e = self.flist.entry(ndx)
        path = self.flist.source_path(e)
        dfd, leaf, owned = None, path, False
        try:
            try:
                dfd, leaf, owned = self._at(path) if self._jail() is not None \
                    else self._removal_parent(e, path)  # secure_sender_parent_fd()
            except OSError as ex:
                if ex.errno == errno.ENOENT:
                    raise
                self.rep.error_xfer(f"sender failed to secure-open-parent "
                                    f"{self.rep.safe(e.name)}: {os.strerror(ex.errno or 0)} "
                                    f"({ex.errno})", role="sender")
                return
            st = os.stat(leaf, dir_fd=dfd, follow_symlinks=bool(self.w.copy_links))
            if dest is not None:
                try:
                    dst = os.stat(dest, follow_symlinks=False)
                except OSError:
                    dst = None
                if dst is not None and (dst.st_dev, dst.st_ino) == (st.st_dev, st.st_ino):
                    self.rep.error_xfer("ERROR: Skipping sender remove of destination file: "
                                        f"{self.rep.safe(e.name)}", bare=True)
                    return
            # rsync refuses to remove a file that changed since it was listed; the
            # nanoseconds count where the entry has them (sender.c: NSEC_BUMP).
            if stat.S_ISREG(e.mode) and (
                    st.st_size != e.size or st.st_mtime_ns // 10**9 != e.mtime_ns // 10**9
                    or e.mtime_ns % 10**9 and st.st_mtime_ns != e.mtime_ns):
                self.rep.error_xfer("ERROR: Skipping sender remove for changed file: "
                                    f"{self.rep.safe(e.name)}", bare=True)
                return
            os.unlink(leaf, dir_fd=dfd)
            self.rep.remove_note(e)
        except OSError as ex:
            if ex.errno == errno.ENOENT:
                self.rep.info(f"sender file already removed: {self.rep.safe(e.name)}")
            else:
                self.rep.error_xfer(f'sender failed to remove {self.rep.qpath(path)}: '
                                    f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="sender")
        finally:
            if owned:
                os.close(dfd)


__all__ = ["Sender", "FLAG_HLINK_FIRST", "FLAG_MOUNT_DIR"]
