"""Applying file-list metadata to destination files (rsync.c's set_file_attrs)."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from netsync.flist import FileEntry

CHMOD_BITS = 0o7777


@dataclass
class AttrOptions:
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


def dest_mode(a: AttrOptions, flist_mode: int, stat_mode: int, exists: bool) -> int:
    """The mode a file gets without -p (rsync's dest_mode)."""
    if exists:
        new = (flist_mode & ~CHMOD_BITS) | (stat_mode & CHMOD_BITS)
        if a.executability and stat.S_ISREG(flist_mode):
            if not flist_mode & 0o111:
                new &= ~0o111
            elif not stat_mode & 0o111:
                new |= (new & 0o444) >> 2
        return new
    return flist_mode & (~CHMOD_BITS | (0o777 & ~a.umask))


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


def set_file_attrs(a: AttrOptions, path: bytes, e: FileEntry, st: os.stat_result | None,
                   *, new_mode: int | None = None, errors: list[str] | None = None,
                   accurate: bool = False) -> bool:
    """Make ``path`` carry ``e``'s metadata; return True if anything changed.

    ``st`` is the current stat of ``path`` (None: stat it here). ``new_mode``
    is the mode decided by the caller (defaults to ``e.mode``).
    """
    if a.dry_run:
        return st is None
    if st is None:
        try:
            st = os.lstat(path)
        except OSError as ex:
            if errors is not None:
                errors.append(f'stat "{os.fsdecode(path)}" failed: {os.strerror(ex.errno or 0)} ({ex.errno})')
            return False
    mode = e.mode if new_mode is None else new_mode
    updated = False
    is_link = stat.S_ISLNK(st.st_mode)
    uid = want_uid(a, e)
    gid = want_gid(a, e)
    change_uid = uid is not None and uid != st.st_uid
    change_gid = gid is not None and gid != st.st_gid
    if change_uid or change_gid:
        try:
            os.chown(path, uid if change_uid else -1, gid if change_gid else -1,
                     follow_symlinks=False)
            updated = True
            # chown clears setuid/setgid bits: re-apply the mode below.
            st = os.lstat(path)
        except OSError as ex:
            if ex.errno != errno.EPERM or a.am_root:
                if errors is not None:
                    what = "chown" if change_uid else "chgrp"
                    errors.append(f'{what} "{os.fsdecode(path)}" failed: '
                                  f"{os.strerror(ex.errno or 0)} ({ex.errno})")
    if not is_link and stat.S_IMODE(st.st_mode) != stat.S_IMODE(mode):
        try:
            os.chmod(path, stat.S_IMODE(mode))
            updated = True
        except OSError as ex:
            if errors is not None:
                errors.append(f'failed to set permissions on "{os.fsdecode(path)}": '
                              f"{os.strerror(ex.errno or 0)} ({ex.errno})")
    if keep_time(a, e.mode) and mtime_differs(a, st, e, accurate):
        set_times(a, path, e, st, errors)
        updated = True
    elif a.atimes and not stat.S_ISDIR(e.mode) and not is_link and st.st_atime_ns != e.atime_ns:
        set_times(a, path, e, st, errors)
        updated = True
    return updated


def set_times(a: AttrOptions, path: bytes, e: FileEntry, st: os.stat_result | None,
              errors: list[str] | None = None) -> None:
    atime = e.atime_ns if a.atimes and e.atime_ns else (st.st_atime_ns if st else e.mtime_ns)
    mtime = e.mtime_ns if keep_time(a, e.mode) else (st.st_mtime_ns if st else e.mtime_ns)
    try:
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
    except OSError as ex:
        if errors is not None:
            errors.append(f'failed to set times on "{os.fsdecode(path)}": '
                          f"{os.strerror(ex.errno or 0)} ({ex.errno})")
