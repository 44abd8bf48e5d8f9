"""Applying file-list metadata to destination files (rsync.c's set_file_attrs)."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable

from netsync.errors import RERR_FILEIO
from netsync.flist import FileEntry
from netsync.messages import FatalError
from netsync.record import Record, factory

CHMOD_BITS = 0o7777

# rsync's am_root < 0 (--fake-super, or a daemon module's "fake super = yes"): a
# process-wide global as in rsync, set by options.apply_process_options(). The
# privileged attributes live in the XSTAT_ATTR xattr instead of on the file, and
# every stat of such a file (sender and generator alike) sees them folded in.
fake_super = False
# A local copy's receiving side under -M--super/-M--no-super/-M--fake-super (rsync
# forks a server for it that parses those); None: the same as the sender's.
recv_fake_super: bool | None = None
XSTAT_ATTR = b"user.rsync.%stat"
_XSTAT_RE = re.compile(rb"\s*([0-7]+)\s+([-+]?\d+)\s*,\s*([-+]?\d+)\s+([-+]?\d+)\s*:\s*([-+]?\d+)")
_XSTAT_MAX = 255  # xattrs.c reads it into a 256-byte buffer


class AttrOptions(Record):
    perms: bool = False
    executability: bool = False
    owner: bool = False
    group: bool = False
    times: bool = False
    omit_dir_times: bool = False
    omit_link_times: bool = False
    atimes: bool = False
    am_root: bool = False
    dry_run: bool = False
    modify_window: int = 0
    uid_map: dict[int, int] | None = None
    gid_map: dict[int, int] | None = None
    chown_uid: int | None = None
    chown_gid: int | None = None
    umask: int = 0o022
    acls: bool = False  # -A: set_file_attrs() also sets the entry's ACLs (netsync.acls)
    fake_super: bool = factory(
        lambda: fake_super if recv_fake_super is None else recv_fake_super)
    xattrs: object = None  # -X: the receiving side's netsync.xattrs.XaCtx
    # A path as messages show it (util1.c full_fname(): Reporter.qpath), else quoted.
    shown: object = None

    def __post_init__(self) -> None:
        # rsync's am_root is -1 under --fake-super: "root" for every decision
        # (-o, devices), but set_file_attrs() stores instead of chown/chmod.
        if self.fake_super:
            self.am_root = True


def dest_mode(a: AttrOptions, flist_mode: int, stat_mode: int, exists: bool,
              dflt_perms: int | None = None) -> int:
    """The mode a file gets without -p (rsync's dest_mode); ``dflt_perms``: a new
    file's permissions from its dir's default ACL (instead of the umask's)."""
    if exists:
        new = (flist_mode & ~CHMOD_BITS) | (stat_mode & CHMOD_BITS)
        if a.executability and stat.S_ISREG(flist_mode):
            if not flist_mode & 0o111:
                new &= ~0o111
            elif not stat_mode & 0o111:
                new |= (new & 0o444) >> 2
        return new
    return flist_mode & (~CHMOD_BITS | (0o777 & ~a.umask if dflt_perms is None else dflt_perms))


def want_uid(a: AttrOptions, e: FileEntry) -> int | None:
    if a.chown_uid is not None:
        return a.chown_uid
    if not a.owner or not a.am_root:
        return None
    return a.uid_map.get(e.uid, e.uid) if a.uid_map else e.uid


def want_gid(a: AttrOptions, e: FileEntry) -> int | None:
    if a.chown_gid is not None:
        return a.chown_gid
    if not a.group:
        return None
    return a.gid_map.get(e.gid, e.gid) if a.gid_map else e.gid


def keep_time(a: AttrOptions, mode: int) -> bool:
    if not a.times:
        return False
    if stat.S_ISDIR(mode):
        return not a.omit_dir_times
    if stat.S_ISLNK(mode):
        return not a.omit_link_times
    return True


def mtime_differs(a: AttrOptions, st: os.stat_result, e: FileEntry, accurate: bool = False) -> bool:
    """rsync's same_time(): window 0 compares seconds, a negative window nanoseconds.

    ``accurate`` (after a transfer or a checksum match) demands an exact match.
    """
    if accurate or a.modify_window < 0:
        return st.st_mtime_ns != e.mtime_ns
    if a.modify_window == 0:
        return st.st_mtime_ns // 1_000_000_000 != e.mtime
    return abs(st.st_mtime_ns // 1_000_000_000 - e.mtime) > a.modify_window


def _q(a: AttrOptions, path: bytes) -> str:
    shown = a.shown
    return shown(path) if callable(shown) else f'"{os.fsdecode(path)}"'


def set_file_attrs(a: AttrOptions, path: bytes, e: FileEntry, st: os.stat_result | None,
                   *, new_mode: int | None = None, errors: list[str] | None = None,
                   accurate: bool = False, fd: int | None = None,
                   xattr_from: bytes | tuple | None = None) -> bool:
    """Make ``path`` carry ``e``'s metadata; return True if anything changed.

    ``st`` is the current stat of ``path`` (None: stat it here). ``new_mode``
    is the mode decided by the caller (defaults to ``e.mode``).  ``fd``: the file
    open (a regular file just written): changed through it, no path looked up.
    """
    if a.dry_run:
        return st is None
    xfd = fd
    if a.fake_super:
        fd = None  # (the %stat xattr goes by path)
    # The path itself, never a symlink's target; or the open file (the only way an fd
    # takes follow_symlinks).
    tgt: bytes | int = path if fd is None else fd
    follow = fd is not None
    if st is None:
        try:
            st = fake_lstat(path) if a.fake_super else os.stat(tgt, follow_symlinks=follow)
        except OSError as ex:
            if errors is not None:
                errors.append(f"stat {_q(a, path)} failed: {os.strerror(ex.errno or 0)} ({ex.errno})")
            return False
    mode = e.mode if new_mode is None else new_mode
    updated = False
    is_link = stat.S_ISLNK(st.st_mode)
    uid = want_uid(a, e)
    gid = want_gid(a, e)
    change_uid = uid is not None and uid != st.st_uid
    change_gid = gid is not None and gid != st.st_gid
    if a.fake_super:
        # rsync.c: the owner, group and mode go to the %stat xattr, never chown/chmod.
        set_stat_xattr(path, e, mode, uid, gid, errors)
        updated = change_uid or change_gid or (
            stat.S_IMODE(st.st_mode) != stat.S_IMODE(mode))
        change_uid = change_gid = False
    if change_uid or change_gid:
        try:
            os.chown(tgt, uid if change_uid else -1, gid if change_gid else -1,
                     follow_symlinks=follow)
            updated = True
            # chown clears setuid/setgid bits: re-apply the mode below.
            st = os.stat(tgt, follow_symlinks=follow)
        except OSError as ex:
            if ex.errno != errno.EPERM or a.am_root:
                if errors is not None:
                    what = "chown" if change_uid else "chgrp"
                    errors.append(f"{what} {_q(a, path)} failed: "
                                  f"{os.strerror(ex.errno or 0)} ({ex.errno})")
                return updated  # rsync.c set_file_attrs(): goto cleanup
    if xattr_from is not None and a.xattrs is not None and e.xattr is not None:
        # rsync.c: after the owner, before the mode; ``xattr_from`` is the basis (or
        # the places to try) an abbreviated value matching there is copied from.
        from netsync import xattrs as _xa

        if _xa.apply(a.xattrs, path if xfd is None else xfd, e.xattr,  # type: ignore[arg-type]
                     xattr_from, st.st_mode, errors if errors is not None else [],
                     _q(a, path), same_file=xattr_from == path):
            updated = True
    # rsync.c: the times before the ACLs and the mode; failing, they stop there.
    # -O/-J go by what is on disk (sxp->st), so a --fake-super symlink's stand-in file
    # just made gets its time; once its %stat says link, no more.
    if keep_time(a, st.st_mode) and mtime_differs(a, st, e, accurate):
        if not set_times(a, path, e, st, errors, fd, mode=st.st_mode):
            return updated
        updated = True
    elif a.atimes and not stat.S_ISDIR(e.mode) and not is_link and st.st_atime_ns != e.atime_ns:
        if not set_times(a, path, e, st, errors, fd):
            return updated
        updated = True
    if a.acls and not is_link and e.acl is not None and not stat.S_ISLNK(mode):
        # rsync.c: set_acl() before the chmod; writing an access ACL sets the mode's
        # permission bits too, so the chmod below sees what is on disk now.
        got = _set_acl(path, e, st, mode, fd, errors, a.fake_super)
        if got is not None:
            updated |= got[0]
            st_mode = got[1]
        else:
            st_mode = st.st_mode
    else:
        st_mode = st.st_mode
    if not is_link and not a.fake_super and stat.S_IMODE(st_mode) != stat.S_IMODE(mode):
        try:
            os.chmod(tgt, stat.S_IMODE(mode))
            updated = True
        except OSError as ex:
            if errors is not None:
                errors.append(f"failed to set permissions on {_q(a, path)}: "
                              f"{os.strerror(ex.errno or 0)} ({ex.errno})")
    return updated


def _set_acl(path: bytes, e: FileEntry, st: os.stat_result, mode: int, fd: int | None,
             errors: list[str] | None, fake: bool = False) -> tuple[bool, int] | None:
    """set_file_attrs()'s set_acl(): (changed, the mode on disk), None if it failed."""
    from netsync import acls

    pfd = None
    tgt = path
    if fd is None:
        try:  # a daemon's module: the parent dirs resolved beneath it
            tgt, pfd = acls.confined_path(path)
        except OSError as ex:
            if errors is not None:
                errors.append(f"set_acl: sys_acl_set_file({os.fsdecode(path)}, ACL_TYPE_ACCESS)"
                              f": {os.strerror(ex.errno or 0)} ({ex.errno})")
            return None
    try:
        try:
            cur = acls.get_acl(tgt, st.st_mode, fd=fd, specials=True, devices=True,
                               fake_super=fake)
        except OSError:
            cur = None
        return acls.set_acl(tgt, e.acl, cur, st.st_mode, mode, fd=fd,  # type: ignore[arg-type]
                            fake_super=fake)
    except OSError as ex:
        if errors is not None:
            step = getattr(ex, "acl_step", "ACL_TYPE_ACCESS")
            if step == "fake":
                name = acls.FAKE_DEFAULT_XATTR if stat.S_ISDIR(mode) and \
                    e.acl is not None and e.acl[1] is not None else acls.FAKE_ACCESS_XATTR
                errors.append(f'set_xattr_acl: {"f" if fd is not None else "l"}setxattr('
                              f'"{os.fsdecode(path)}","{name}") failed: '
                              f"{os.strerror(ex.errno or 0)} ({ex.errno})")
            elif step == "sys_acl_delete_def_file":
                errors.append(f"set_acl: sys_acl_delete_def_file({os.fsdecode(path)}): "
                              f"{os.strerror(ex.errno or 0)} ({ex.errno})")
            else:
                errors.append(f"set_acl: sys_acl_set_file({os.fsdecode(path)}, {step}): "
                              f"{os.strerror(ex.errno or 0)} ({ex.errno})")
        return None
    finally:
        if pfd is not None:
            os.close(pfd)


def set_times(a: AttrOptions, path: bytes, e: FileEntry, st: os.stat_result | None,
              errors: list[str] | None = None, fd: int | None = None,
              mode: int | None = None) -> bool:
    """False (after the error) when the times could not be set."""
    atime = e.atime_ns if a.atimes and e.atime_ns else (st.st_atime_ns if st else e.mtime_ns)
    mtime = e.mtime_ns if keep_time(a, e.mode if mode is None else mode) \
        else (st.st_mtime_ns if st else e.mtime_ns)
    try:
        os.utime(path if fd is None else fd, ns=(atime, mtime), follow_symlinks=fd is not None)
    except OSError as ex:
        if errors is not None:
            errors.append(f"failed to set times on {_q(a, path)}: "
                          f"{os.strerror(ex.errno or 0)} ({ex.errno})")
        return False
    return True


# -- --fake-super (xattrs.c get_stat_xattr/set_stat_xattr, syscall.c) ----------

def _with_ids(st: os.stat_result, mode: int, rdev: int, uid: int, gid: int) -> os.stat_result:
    seq, extra = st.__reduce__()[1]  # type: ignore[misc]
    seq = list(seq)
    seq[0], seq[4], seq[5] = mode, uid, gid
    extra = dict(extra)
    extra["st_rdev"] = rdev
    return os.stat_result(seq, extra)


def read_xstat(path: bytes) -> bytes | None:
    """The raw %stat xattr of ``path`` (not following a symlink); None if it has none.

    Raises OSError for any other failure (rsync reports those)."""
    try:
        val = os.getxattr(path, XSTAT_ATTR, follow_symlinks=False)
    except OSError as ex:
        if ex.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise
    if len(val) > _XSTAT_MAX:
        raise OSError(errno.ERANGE, os.strerror(errno.ERANGE))
    return val


class CorruptXstat(FatalError):
    """A %stat xattr that does not parse: rsync ends the transfer (RERR_FILEIO)."""

    def __init__(self, path: bytes, value: bytes) -> None:
        text = value.decode("utf-8", "backslashreplace")
        super().__init__(RERR_FILEIO, f'Corrupt {XSTAT_ATTR.decode()} xattr attached to '
                                      f'"{os.fsdecode(os.path.abspath(path))}": "{text}"')


def xstat_overlay(path: bytes, st: os.stat_result,
                  on_error: Callable[[OSError], None] | None = None,
                  shown: bytes | None = None) -> os.stat_result:
    """get_stat_xattr(): ``st`` with the mode, rdev, uid and gid of ``path``'s %stat
    xattr folded in. A real device or special file keeps its own. A read error
    other than "no such attribute" goes to ``on_error`` and leaves ``st`` as is;
    ``shown`` names the file in a corrupt-xattr error (``path`` may be a /proc one)."""
    fmt = stat.S_IFMT(st.st_mode)
    if fmt in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        return st
    try:
        val = read_xstat(path)
    except OSError as ex:
        if ex.errno == errno.EPERM and fmt == stat.S_IFLNK:
            return _with_ids(st, st.st_mode, st.st_rdev, 0, 0)
        if on_error is not None:
            on_error(ex)
        return st
    if val is None:
        return st
    mt = _XSTAT_RE.match(val)
    if mt is None:
        raise CorruptXstat(path if shown is None else shown, val)
    mode, major, minor, uid, gid = (int(mt[1], 8), *(int(x) for x in mt.group(2, 3, 4, 5)))
    mask = 0xFFFFFFFF
    return _with_ids(st, mode & mask, os.makedev(major & mask, minor & mask), uid & mask,
                     gid & mask)


def fake_lstat(path: bytes, on_error: Callable[[OSError], None] | None = None
               ) -> os.stat_result:
    """x_lstat(): lstat with the %stat xattr folded in."""
    return xstat_overlay(path, os.lstat(path), on_error)


def fake_readlink(path: bytes, fake: bool, am_sender: bool = False) -> bytes:
    """syscall.c do_readlink(): under --fake-super a "symlink" is a file holding its
    target. A real symlink reads as empty on the receiving side (so it gets
    replaced by a placeholder) and as itself on the sender."""
    if not fake:
        return os.readlink(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as ex:
        if ex.errno != errno.ELOOP:
            raise
        return os.readlink(path) if am_sender else b""
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def fake_create(path: bytes, content: bytes = b"") -> None:
    """do_symlink()/do_mknod() under --fake-super: a 0600 regular file (holding a
    symlink's target) stands in for the node; its xattr says what it is."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        if content and os.write(fd, content) != len(content):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
    finally:
        os.close(fd)


def set_stat_xattr(path: bytes, e: FileEntry, new_mode: int, uid: int | None, gid: int | None,
                   errors: list[str] | None) -> None:
    """xattrs.c set_stat_xattr(): give the real file safe permissions (no set-id
    bits, full owner access) and record what it should have been in the xattr,
    which is dropped again when the real file already says it all."""
    def fail(what: str, ex: OSError) -> None:
        if errors is not None:
            errors.append(f'{what} "{os.fsdecode(path)}": {os.strerror(ex.errno or 0)} ({ex.errno})')

    try:
        fst = os.lstat(path)
    except OSError as ex:
        fail("failed to re-stat", ex)
        return
    try:
        xval = read_xstat(path) if stat.S_IFMT(fst.st_mode) not in (
            stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK) else None
        xst = xstat_overlay(path, fst) if xval is not None else None
    except (OSError, CorruptXstat):
        xst = None
    ftype = stat.S_IFMT(fst.st_mode)
    fmode = new_mode & (stat.S_IFMT(new_mode) | CHMOD_BITS)
    rdev = e.rdev if stat.S_ISCHR(fmode) or stat.S_ISBLK(fmode) else 0
    # Without -o/-g rsync records 0 (its F_OWNER/F_GROUP of an unlisted id).
    owner = 0 if uid is None else uid
    group = 0 if gid is None else gid
    mode = ftype | (fmode & 0o777) | (0o700 if ftype == stat.S_IFDIR else 0o600)
    cur = fst.st_mode & (stat.S_IFMT(fst.st_mode) | CHMOD_BITS)
    if cur != mode and ftype != stat.S_IFLNK:
        try:
            os.chmod(path, stat.S_IMODE(mode))
        except OSError:
            pass  # rsync ignores it too
    frdev = fst.st_rdev if ftype in (stat.S_IFCHR, stat.S_IFBLK) else 0
    if mode == fmode and frdev == rdev and fst.st_uid == owner and fst.st_gid == group:
        if xst is not None:
            try:
                os.removexattr(path, XSTAT_ATTR, follow_symlinks=False)
            except OSError as ex:
                fail("delete of stat xattr failed for", ex)
        return
    if xst is None or xst.st_mode != fmode or xst.st_rdev != rdev or xst.st_uid != owner \
            or xst.st_gid != group:
        val = b"%o %u,%u %u:%u" % (fmode, os.major(rdev), os.minor(rdev), owner & 0xFFFFFFFF,
                                   group & 0xFFFFFFFF)
        try:
            os.setxattr(path, XSTAT_ATTR, val, follow_symlinks=False)
        except OSError as ex:
            if ex.errno == errno.EPERM and ftype == stat.S_IFLNK:
                return
            fail(f"failed to write xattr {XSTAT_ATTR.decode()} for", ex)


# -- --copy-as (main.c become_copy_as_user) -----------------------------------

def _name_to_id(name: str, lookup: Callable[[str], int]) -> int | None:
    """uidlist.c user_to_uid()/group_to_gid() with num_ok: digits are the id."""
    if not name:
        return None
    if name.isascii() and name.isdigit():
        return int(name) & 0xFFFFFFFF
    try:
        return lookup(name)
    except (KeyError, UnicodeError):
        return None


def become_copy_as_user(spec: str) -> tuple[str, bool] | None:
    """Switch this process to --copy-as=USER[:GROUP] for the copying part.

    None when done; else (message, bare): a bare message is printed as is, the
    others after the program name and role, like rsync's rsyserr()."""
    import grp
    import pwd

    user, colon, gname = spec.partition(":")
    uid = _name_to_id(user, lambda n: pwd.getpwnam(n).pw_uid)
    if uid is None:
        return f"Invalid copy-as user: {user}", True
    if colon:
        gid = _name_to_id(gname, lambda n: grp.getgrnam(n).gr_gid)
        if gid is None:
            return f"Invalid copy-as group: {gname}", True
    else:
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            return "getpwuid failed: Success (0)", False
    # The user may not read the interpreter's tree: import what the engine loads
    # lazily while still able to (as the daemon does before dropping privileges).
    from netsync.daemon.server import _preload_modules

    _preload_modules()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("setgid", lambda: os.setgid(gid)),
        ("setgroups", lambda: os.setgroups([gid])),
    ]
    if not colon:
        steps.append(("initgroups", lambda: os.initgroups(user, gid)))
    steps.append(("setuid", lambda: (os.setuid(uid), os.seteuid(uid)) and None))
    for what, step in steps:
        try:
            step()
        except OSError as ex:
            return f"{what} failed: {os.strerror(ex.errno or 0)} ({ex.errno})", False
    # main.c: am_root follows the new uid, which ends any --fake-super too.
    global fake_super, recv_fake_super
    fake_super, recv_fake_super = False, None
    return None
