"""Symlink-safe path resolution, as rsync 3.5 does it (syscall.c).

Two policies:

* **operator paths** (--backup-dir, --temp-dir, --partial-dir, --*-dest,
  --log-file, --*-from, merge files, the password file): walked one component
  at a time; a symlink is followed only when owned by root or our euid, any
  other one is refused with ELOOP (rsync's ``open_no_attacker_symlinks``).
  ``--insecure-links`` turns this off.
* **transfer paths** beneath a held directory (the destination, a backup or
  alt-dest dir): every component is opened with O_NOFOLLOW, so a symlink
  planted or swapped in under the tree is never followed
  (``secure_relative_open``).

Every refusal of an untrusted symlink prints rsync's warning once per walk.

A daemon opens its own files (config, motd, lock, secrets, log) and its module
path by the ownership rule too (``daemon_open``), and reaches what its clients
name from the module's top, following a link only while it stays inside
(``walk_beneath``, ``open_following_beneath``).
"""

from __future__ import annotations

import errno
import os
import stat
import sys

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIRFLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | _NOFOLLOW
# A held dir fd for a path the operator named (its own symlinks are followed).
DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_LINKS = 40

WARNING = ('refusing to follow a symlink owned by an untrusted user; use --insecure-links '
           'locally or "insecure links = yes" in a daemon module ONLY if every path '
           'component is trusted')

# Set once from the parsed options (--insecure-links): follow any symlink.
insecure_links = False
# A daemon's module dir: an operator/peer path may not resolve outside it, even
# through a symlink we would otherwise trust (syscall.c abspath_outside_confinement).
confine_root: bytes | None = None


def _refuse() -> OSError:
    try:
        sys.stderr.write(WARNING + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return OSError(errno.ELOOP, os.strerror(errno.ELOOP))


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid == 0 or st.st_uid == os.geteuid()


def _walk(path: bytes, start_fd: int | None, *, confine: bool = True,
          warn: bool = True) -> tuple[int, bytes]:
    """Resolve ``path`` by the ownership rule up to its last non-directory component.

    Returns (directory fd, leaf name); the leaf is b"." when the whole path is a
    directory, else a name that is missing or not a directory. The caller closes
    the fd. Raises OSError (ELOOP on refusal). ``confine`` False: the module root
    does not bound the path (a daemon's own files); ``warn`` False: no warning."""
    if not path:
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
    dfd = os.open(b"/" if path.startswith(b"/") else b".", _DIRFLAGS, dir_fd=start_fd)
    comps = [c for c in path.split(b"/") if c and c != b"."]
    comps.reverse()  # a stack: the next component is last
    links = _MAX_LINKS
    # Where the walk is, as absolute components, when a module confines it.
    here: list[bytes] | None = None
    if confine and confine_root is not None and len(confine_root.rstrip(b"/")) > 0:
        here = [] if path.startswith(b"/") else \
            [c for c in os.fsencode(os.getcwd()).split(b"/") if c]
    try:
        while comps:
            comp = comps[-1]
            try:
                st = os.stat(comp, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                if len(comps) == 1:
                    if here is not None:
                        _check_confined(here, comp)
                    break  # a missing leaf: the caller may create it
                raise
            if stat.S_ISLNK(st.st_mode):
                if not _trusted(st):
                    raise _refuse() if warn else OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                links -= 1
                if links < 0:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                target = os.readlink(comp, dir_fd=dfd)
                comps.pop()
                if target.startswith(b"/"):
                    os.close(dfd)
                    dfd = -1
                    dfd = os.open(b"/", _DIRFLAGS)
                    if here is not None:
                        here = []
                comps.extend(reversed([c for c in target.split(b"/") if c and c != b"."]))
                continue
            if here is not None:
                _check_confined(here, comp)
            if not stat.S_ISDIR(st.st_mode):
                if len(comps) == 1:
                    break
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            if here is not None:
                if comp == b"..":
                    del here[-1:]
                else:
                    here.append(comp)
            nfd = os.open(comp, _DIRFLAGS, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
            comps.pop()
    except BaseException:
        if dfd >= 0:
            os.close(dfd)
        raise
    return dfd, (comps[0] if comps else b".")


def _check_confined(here: list[bytes], comp: bytes) -> None:
    """ELOOP when stepping to ``comp`` from ``here`` leaves the confinement root
    (its ancestors, on the way down to it, are not "outside")."""
    assert confine_root is not None
    root = [c for c in confine_root.split(b"/") if c]
    to = here[:-1] if comp == b".." else [*here, comp]
    n = min(len(to), len(root))
    if to[:n] != root[:n]:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))


def owner_walk_parent(path: bytes, start_fd: int | None = None) -> tuple[int, bytes]:
    """(fd of the parent dir, leaf name) of an operator path; the leaf itself is
    not resolved (it may not exist yet). rsync's owner_walk_parent()."""
    head, _, leaf = path.rstrip(b"/").rpartition(b"/") if b"/" in path.rstrip(b"/") \
        else (b"", b"", path.rstrip(b"/"))
    if not leaf:
        leaf = b"."
    if leaf == b".." and confine_root is not None and not insecure_links:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
    if insecure_links:
        d = head or (b"/" if path.startswith(b"/") else b".")
        return os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=start_fd), leaf
    if not head:
        head = b"/" if path.startswith(b"/") else b"."
    return owner_open_dir(head, start_fd), leaf


def owner_open_dir(path: bytes, start_fd: int | None = None) -> int:
    """An O_PATH/O_RDONLY fd of the operator directory ``path`` (ownership rule)."""
    if insecure_links:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=start_fd)
    dfd, leaf = _walk(path, start_fd)
    if leaf == b".":
        return dfd
    try:
        return os.open(leaf, _DIRFLAGS, dir_fd=dfd)
    finally:
        os.close(dfd)


def owner_open(path: bytes | str, flags: int, mode: int = 0o666,
               start_fd: int | None = None) -> int:
    """open() an operator-supplied file, refusing untrusted symlinks anywhere in it."""
    bpath = os.fsencode(path)
    if insecure_links:
        return os.open(bpath, flags | os.O_CLOEXEC, mode, dir_fd=start_fd)
    dfd, leaf = _walk(bpath, start_fd)
    try:
        if leaf == b".":
            if not flags & os.O_DIRECTORY:
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        return os.open(leaf, flags | _NOFOLLOW, mode, dir_fd=dfd)
    finally:
        os.close(dfd)


def daemon_open(path: bytes | str, flags: int, mode: int = 0o666, *,
                follow_any: bool = False) -> int:
    """open_no_attacker_symlinks() for the daemon's own files (its config, motd,
    lock file, secrets file): a symlink anywhere in ``path`` is followed only when
    owned by root or our euid, whatever the module root (they may live anywhere).
    ``follow_any``: the module's "insecure links" (never a client's option)."""
    bpath = os.fsencode(path)
    if follow_any:
        return os.open(bpath, flags | os.O_CLOEXEC, mode)
    dfd, leaf = _walk(bpath, None, confine=False, warn=False)
    try:
        if leaf == b"." and not flags & os.O_DIRECTORY:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        return os.open(leaf, flags | _NOFOLLOW, mode, dir_fd=dfd)
    finally:
        os.close(dfd)


def owner_makedirs(path: bytes, start_fd: int | None = None, mode: int = 0o777) -> int:
    """Open operator dir ``path``, creating missing components (never through an
    untrusted symlink); returns its fd."""
    try:
        return owner_open_dir(path, start_fd)
    except FileNotFoundError:
        pass
    head, _, leaf = path.rstrip(b"/").rpartition(b"/")
    if not leaf or leaf in (b".", b".."):
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
    if head or path.startswith(b"/"):
        pfd = owner_makedirs(head or b"/", start_fd)
    else:
        pfd = owner_open_dir(b".", start_fd)
    try:
        try:
            os.mkdir(leaf, mode, dir_fd=pfd)
        except FileExistsError:
            pass
        return os.open(leaf, _DIRFLAGS, dir_fd=pfd)
    finally:
        os.close(pfd)


# --------------------------------------------------------------------------
# Transfer paths: no symlink is ever followed below the held directory.

def module_anchor() -> tuple[int, bytes] | None:
    """(fd of the daemon module's root, the cwd's path below it + "/") while a module
    confines us (syscall.c secure_relpath_active()), else None; (-1, b"") when the cwd
    is not inside the module at all (nothing may be reached).  Paths from the cwd
    are then walked from that fd, following only in-module symlinks (walk_beneath)."""
    root = confine_root
    if root is None or not root.rstrip(b"/"):
        return None  # no module, or a chroot: the root is the jail
    root = root.rstrip(b"/")
    cwd = os.getcwdb()
    if cwd == root:
        return os.open(b".", DIR_FLAGS), b""
    if cwd.startswith(root + b"/"):
        return os.open(root, DIR_FLAGS), cwd[len(root) + 1:] + b"/"
    return -1, b""


def dir_beneath(dir_fd: int | None, comps: list[bytes], create: int | None = None) -> int:
    """An fd of the directory ``comps`` below ``dir_fd``, every step O_NOFOLLOW;
    with ``create`` (a mode) missing steps are made."""
    dfd = os.open(b".", _DIRFLAGS, dir_fd=dir_fd)
    try:
        for c in comps:
            if c in (b"", b"."):
                continue
            if c == b"..":
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            try:
                nfd = open_dir_at(dfd, c)
            except FileNotFoundError:
                if create is None:
                    raise
                try:
                    os.mkdir(c, create, dir_fd=dfd)
                except FileExistsError:
                    pass
                nfd = open_dir_at(dfd, c)
            os.close(dfd)
            dfd = nfd
    except BaseException:
        os.close(dfd)
        raise
    return dfd


def dir_following_beneath(dir_fd: int | None, rel: bytes) -> int:
    """An fd of the directory ``rel`` below ``dir_fd`` (None: the cwd), following
    a symlink on the way only while it stays below that anchor: syscall.c
    secure_walk_at() for an O_DIRECTORY open.  Each step is held as an fd; a
    symlink's (relative) target is walked on the same stack, whoever owns it, so
    its ``..`` may climb but never above the anchor; an absolute target, a
    ``..`` at the anchor or more than 40 hops is ELOOP (a literal ``..`` in
    ``rel`` is EINVAL, as secure_relative_open() refuses it)."""
    if rel.startswith(b"/") or b".." in rel.split(b"/"):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    anchor = os.open(b".", _DIRFLAGS, dir_fd=dir_fd)
    try:
        return walk_beneath(anchor, rel)
    finally:
        os.close(anchor)


def open_dir_at(dfd: int | None, name: bytes) -> int:
    """Open the directory ``name`` in ``dfd`` without following a symlink there;
    a symlink is ELOOP, as rsync reports it."""
    try:
        return os.open(name, _DIRFLAGS, dir_fd=dfd)
    except NotADirectoryError:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
        raise


def walk_beneath(anchor_fd: int, rel: bytes, flags: int = _DIRFLAGS) -> int:
    """An fd (opened with ``flags``) of the directory ``rel`` below ``anchor_fd``,
    never leaving it: secure_relative_open_at_beneath() for a directory. A symlink
    on the way is followed when its target is relative and stays beneath the
    anchor (its ".." pops back to the dir already held, never above the anchor);
    an absolute or escaping target is ELOOP. ``anchor_fd`` is borrowed."""
    stack = [anchor_fd]  # stack[0] is the caller's
    todo = [c for c in rel.split(b"/") if c and c != b"."]
    todo.reverse()  # the next component is last
    links = _MAX_LINKS
    try:
        while todo:
            c = todo.pop()
            if c == b".":
                continue
            if c == b"..":
                if len(stack) == 1:  # would rise above the anchor
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                os.close(stack.pop())
                continue
            try:
                stack.append(os.open(c, _DIRFLAGS, dir_fd=stack[-1]))
                continue
            except OSError as ex:
                if ex.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                err = ex
            try:
                target = os.readlink(c, dir_fd=stack[-1])
            except OSError as ex:
                if ex.errno == errno.EINVAL:  # no symlink: a real non-directory
                    raise err from None
                raise
            links -= 1
            if not target or target.startswith(b"/") or links < 0:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
            todo.extend(reversed([t for t in target.split(b"/") if t and t != b"."]))
        return os.open(b".", flags | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=stack[-1])
    finally:
        for fd in stack[1:]:
            os.close(fd)


def open_following_beneath(anchor_fd: int, rel: bytes, flags: int) -> int:
    """Open the file ``rel`` below ``anchor_fd`` for a symlink-following transfer
    (-L, --copy-unsafe-links, -k), never leaving the anchor: rsync's
    sender_open_copylinks_confined(). A symlink leaf is read and its relative
    target resolved again beneath the anchor (a chain up to 32 hops); an absolute
    target, or one climbing above the anchor, is ELOOP. The final open is
    O_NOFOLLOW, so a leaf swapped for a symlink meanwhile is refused too."""
    cur = rel
    for _ in range(32):
        cur = cur.rstrip(b"/")
        head, _, leaf = cur.rpartition(b"/")
        if leaf in (b"", b".", b".."):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        pfd = walk_beneath(anchor_fd, head)
        try:
            try:
                target = os.readlink(leaf, dir_fd=pfd)
            except OSError as ex:
                if ex.errno != errno.EINVAL:
                    raise
                return os.open(leaf, flags | _NOFOLLOW, dir_fd=pfd)
        finally:
            os.close(pfd)
        if not target or target.startswith(b"/"):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        cur = head + b"/" + target if head else target
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))


def copy_fd_into(sfd: int, dfd: int | None, name: bytes, st: os.stat_result | None = None,
                 *, uid: bool = True, gid: bool = True, times: bool = True,
                 nsec: bool = True) -> None:
    """Copy the open regular file ``sfd`` to ``name`` in ``dfd`` via a temporary
    name (never through a symlink), keeping its mode, and its owner, group and times
    as ``uid``, ``gid`` and ``times`` say (a backup: as -o, -g, -t keep them)."""
    st = st or os.fstat(sfd)
    head, slash, leaf = name.rpartition(b"/")  # (a path: the temp name beside its leaf)
    tmp = head + slash + b"." + leaf[:200] + b"." + os.urandom(3).hex().encode()
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=dfd)
    try:
        copy_fd_to_fd(sfd, out)
        if uid or gid:
            try:
                os.fchown(out, st.st_uid if uid else -1, st.st_gid if gid else -1)
            except OSError:
                pass
        os.fchmod(out, stat.S_IMODE(st.st_mode))
        if times:
            mtime = st.st_mtime_ns if nsec else st.st_mtime_ns - st.st_mtime_ns % 10**9
            os.utime(out, ns=(st.st_atime_ns, mtime))
        os.close(out)
        out = -1
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        if out >= 0:
            os.close(out)
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise


def copy_into(src: bytes, dfd: int | None, name: bytes, **keep: bool) -> None:
    """Copy the file/symlink at path ``src`` (not followed) to ``name`` in ``dfd``
    (``keep``: copy_fd_into()'s uid, gid and times)."""
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), name, dir_fd=dfd)
        return
    if not stat.S_ISREG(st.st_mode):
        # A fifo/device/socket is recreated (backup.c do_mknod_at), never read:
        # opening a fifo would block.
        os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dfd)
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd)  # not the umask's
        return
    sfd = os.open(src, os.O_RDONLY | _NOFOLLOW)
    try:
        copy_fd_into(sfd, dfd, name, **keep)
    finally:
        os.close(sfd)


def copy_fd_to_fd(sfd: int, out: int) -> None:
    """Copy all of ``sfd`` to ``out`` (both open regular files)."""
    off = 0
    while True:
        try:
            n = os.copy_file_range(sfd, out, 1 << 30, off, off)
        except OSError:
            n = -1
        if n < 0:  # no copy_file_range here: read and write
            chunk = os.pread(sfd, 1 << 20, off)
            n = len(chunk)
            if n:
                os.pwrite(out, chunk, off)
        if n == 0:
            return
        off += n
