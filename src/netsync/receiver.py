"""The receiver role: writes file data to a temporary file and renames it into place.

Nothing is ever written over a good destination file until the new one is
complete and carries its metadata (except with --inplace/--append, which the
user asked for).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat

from netsync import messages as m
from netsync import safepath
from netsync import sender as _sender
from netsync.errors import RERR_FILEIO, RERR_SYNTAX, RsyncError
from netsync.flist import FileEntry, parent_of
from netsync.metadata import AttrOptions, set_file_attrs
from netsync.record import Record
from netsync.report import Reporter

COPY_CHUNK = 1 << 30  # copy_file_range asks, the kernel decides how much per call
# rsync's globals, set per process by options.apply_process_options():
# --fsync syncs each written file before it is renamed into place, --preallocate
# reserves its final size first (syscall.c do_fallocate).
do_fsync = False
preallocate = False
# --write-devices: a regular file's data goes into an existing device at its name
# (written in place, never truncated) instead of replacing the device.
write_devices = False
SPARSE_WRITE_SIZE = 1024  # rsync.h: shorter zero runs inside a chunk stay data
_ZERO_RUN = re.compile(rb"\x00+")
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate_fn = None


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """Linux fallocate(2) (os.posix_fallocate has no mode flags); OSError on failure."""
    global _fallocate_fn
    if _fallocate_fn is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate
        fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        fn.restype = ctypes.c_int
        _fallocate_fn = fn
    if _fallocate_fn(fd, mode, offset, length) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class ReceiveOptions(Record):
    inplace: bool = False
    append: int = 0
    partial: bool = False
    partial_dir: bytes | None = None
    temp_dir: bytes | None = None
    delay_updates: bool = False
    stage_dir: bytes = b".~tmp~"  # --delay-updates: the --partial-dir files wait in
    sparse: bool = False
    backup: bool = False
    backup_dir: bytes | None = None
    suffix: bytes = b"~"
    dry_run: bool = False
    bwlimit: int = 0  # bytes per second, 0 = unlimited
    # --progress as receiver.c shows it (before each token: a file's first line is "0
    # 0%"), not as a local copy's sender does (after each piece)
    progress_per_token: bool = False
    # A backup copied for --inplace takes the dest's times as make_file() lists them:
    # before protocol 31 without nanoseconds.
    backup_nsec: bool = True


def check_backup_dir(bdir: bytes, shown: str, rep: Reporter) -> None:
    """main.c do_recv(): an existing --backup-dir must be a directory (exit 1); a missing
    one is made as needed; -vv (info backup) says which."""
    try:
        st = os.stat(bdir)
    except OSError as ex:
        if ex.errno != errno.ENOENT:
            rep._emit(f"Failed to stat {shown}: {os.strerror(ex.errno or 0)}", rep.err)
            raise RsyncError(RERR_FILEIO, None) from None
        if rep.level("backup") >= 1:
            rep.info(f"(new) backup_dir is {shown}")
        return
    if not stat.S_ISDIR(st.st_mode):
        rep._emit(f"The backup-dir is not a directory: {shown}", rep.err)
        raise RsyncError(RERR_SYNTAX, None, own_code=True)  # exit 1, whatever the peer's
    if rep.level("backup") >= 1:
        rep.info(f"backup_dir is {shown}")


def partial_hidden(pp: bytes) -> bool:
    """util1.c partial_dir_fname(): a partial-dir file (or its dir) that a daemon
    module's own rules exclude is not used (no partial-dir for that file)."""
    from netsync import filters as F

    dx = F.daemon_excluded
    if dx is None:
        return False
    return dx(parent_of(pp), True) or dx(pp, False)


def tmp_name(dest: bytes, temp_dir: bytes | None) -> bytes:
    """rsync's get_tmpname: ``.<name>.XXXXXX`` beside the file (or in --temp-dir)."""
    d, _, base = dest.rpartition(b"/")
    base = base[:200]
    # os.urandom, not secrets: the same source, without secrets' imports (~10 ms a start)
    name = base + b"." + os.urandom(3).hex().encode()
    if temp_dir is not None:  # no leading dot in a --temp-dir (receiver.c get_tmpname)
        return temp_dir.rstrip(b"/") + b"/" + name
    name = b"." + name
    return (d + b"/" if d else b"") + name


def _is_device(mode: int) -> bool:
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def device_stat(path: bytes, st: os.stat_result) -> os.stat_result:
    """generator.c: a device about to be written (--write-devices) has the size a
    seek to its end finds, when its stat shows none."""
    if st.st_size:
        return st
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return st
    try:
        size = _sender.device_size(fd)
    finally:
        os.close(fd)
    seq, extra = st.__reduce__()[1]  # type: ignore[misc]
    seq = list(seq)
    seq[6] = size
    return os.stat_result(seq, extra)


class Receiver:
    def __init__(self, ropts: ReceiveOptions, attrs: AttrOptions, reporter: Reporter) -> None:
        self.r = ropts
        self.a = attrs
        self.rep = reporter
        self.current_tmp: bytes | None = None
        self.current_dest: bytes | None = None
        self.delayed: list[tuple[bytes, bytes]] = []
        self._bw_start: float | None = None
        self._bw_bytes = 0
        # The destination dir below which nothing is followed (None: not confined).
        self.confine_root: bytes | None = None
        self._root_fd: tuple[bytes, int] | None = None
        # Temp files are named through /proc/self/fd/N (the held dir) where /proc exists;
        # inside a daemon chroot it does not, and the plain path is used instead.
        self._fd_paths = os.path.isdir(b"/proc/self/fd")
        self._prealloc = 0  # receiver.c preallocated_len of the file being written
        self._punch = False  # --sparse over existing data (--inplace): holes are punched
        self._hole_at = self._hole_len = 0  # the zero run not yet made a hole
        self._last_dir: tuple[bytes, int, int] | None = None  # (_dest_parent's cache)

    def _preallocate(self, fd: int, total: int, dest: bytes) -> int:
        """receiver.c receive_data() + syscall.c do_fallocate(): reserve ``total`` bytes.

        Without --sparse the file keeps its size (FALLOC_FL_KEEP_SIZE); with it the
        space is allocated at full size so the zero runs can be punched out again.
        Returns rsync's preallocated_len (0: nothing reserved)."""
        keep = not self.r.sparse
        # rsync 3.5 asks for one byte more (odd) or less (even) than the file's length.
        length = total + 1 if total & 1 else total - 1
        try:
            fallocate(fd, _FALLOC_FL_KEEP_SIZE if keep else 0, 0, length)
        except OSError as ex:
            self.rep.warn_msg(f'{self.rep.prog}: [receiver] do_fallocate '
                              f'{self.rep.qpath(dest)}: '
                              f"{os.strerror(ex.errno or 0)} ({ex.errno})")
            return 0
        if keep:
            return length
        return os.fstat(fd).st_blocks * 512

    def _fsync(self, fd: int, dest: bytes) -> None:
        """--fsync: a failure ends the transfer (receiver.c: exit_cleanup(RERR_FILEIO))."""
        try:
            os.fsync(fd)
        except OSError as ex:
            raise m.FatalError(RERR_FILEIO, f'fsync failed on {self.rep.qpath(dest)}: '
                                            f"{os.strerror(ex.errno or 0)} ({ex.errno})") from None

    def _dest_parent(self, dest: bytes, dest_rel: bytes) -> int | None:
        """An fd of dest's dir, opened below the destination (``confine_root``, set
        by the generator) without following a symlink; None: use the plain path."""
        root = self.confine_root
        if root is None or not dest_rel or not dest.endswith(dest_rel) \
                or dest[: len(dest) - len(dest_rel)].rstrip(b"/") != root.rstrip(b"/"):
            return None
        if self._root_fd is None or self._root_fd[0] != root:
            try:
                self._root_fd = (root, os.open(root or b".", safepath.DIR_FLAGS))
            except OSError:
                return None
        head = dest_rel.rpartition(b"/")[0]
        rfd = self._root_fd[1]
        if not head:
            return os.dup(rfd)
        # The files of a dir come one after another: its fd, opened below the root
        # without following a symlink, is kept for the next (a dup is one syscall,
        # the walk one per component).
        last = self._last_dir
        if last is not None and last[0] == head and last[1] == rfd:
            return os.dup(last[2])
        fd = safepath.dir_beneath(rfd, head.split(b"/"))
        if last is not None:
            os.close(last[2])
        self._last_dir = (head, rfd, os.dup(fd))
        return fd

    def _throttle(self, n: int) -> None:
        """--bwlimit: sleep so the average rate stays under the limit (io.c sleep_for_bwlimit)."""
        import time

        now = time.monotonic()
        if self._bw_start is None:
            self._bw_start = now
        self._bw_bytes += n
        ahead = self._bw_bytes / self.r.bwlimit - (now - self._bw_start)
        if ahead > 0:
            time.sleep(ahead)

    # ------------------------------------------------------------- backups
    def backup_name(self, dest_rel: bytes, dest: bytes) -> bytes:
        if self.r.backup_dir is not None:
            return self.r.backup_dir.rstrip(b"/") + b"/" + dest_rel + self.r.suffix
        return dest + self.r.suffix

    def _backup_parent(self, dest_rel: bytes, dest: bytes) -> int:
        """backup.c make_bak_dir: an fd of the backup dir's copy of dest_rel's parent.

        The --backup-dir itself is an operator path (a symlink owned by another
        user is refused); below it nothing is followed, so a symlink planted or
        swapped in there cannot redirect the backup. Missing dirs copy the
        mode/owner/times of the destination dirs."""
        assert self.r.backup_dir is not None
        bdir = self.r.backup_dir.rstrip(b"/") or b"/"
        fd = safepath.owner_makedirs(bdir)
        droot = dest[: len(dest) - len(dest_rel)].rstrip(b"/") if dest.endswith(dest_rel) else None
        comps = dest_rel.split(b"/")[:-1]
        try:
            for i, comp in enumerate(comps):
                try:
                    nfd = safepath.open_dir_at(fd, comp)
                except OSError as ex:
                    if ex.errno in (errno.ELOOP, errno.ENOTDIR):
                        # A symlink or file where a backup dir belongs is replaced.
                        os.unlink(comp, dir_fd=fd)
                    elif ex.errno != errno.ENOENT:
                        raise
                    os.mkdir(comp, 0o700, dir_fd=fd)
                    if droot is not None:
                        self._copy_dir_attrs(fd, comp, (droot + b"/" if droot else b"")
                                             + b"/".join(comps[: i + 1]))
                    nfd = safepath.open_dir_at(fd, comp)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _copy_dir_attrs(self, dfd: int, name: bytes, model: bytes) -> None:
        # backup.c: set_file_attrs() with the dest dir's make_file(), as a backup's
        try:
            st = os.stat(model)
        except OSError:
            return
        keep = self._backup_keeps()
        if self.a.fake_super:
            # rsync.c set_file_attrs() under --fake-super: the dest dir's owner, group
            # and mode as its %stat says go to the copy's %stat, never chown/chmod.
            from netsync import metadata as _md

            with contextlib.suppress(_md.CorruptXstat):
                st = _md.xstat_overlay(model, st)
            _md.set_stat_xattr(b"/proc/self/fd/%d/%s" % (dfd, name),
                               FileEntry(name, st.st_mode), st.st_mode,
                               st.st_uid if keep["uid"] else None,
                               st.st_gid if keep["gid"] else None, None)
        else:
            uid = st.st_uid if keep["uid"] else -1
            gid = st.st_gid if keep["gid"] else -1
            _quietly(os.chmod, name, stat.S_IMODE(st.st_mode), dir_fd=dfd)  # (each alone)
            if uid != -1 or gid != -1:
                _quietly(os.chown, name, uid, gid, dir_fd=dfd, follow_symlinks=False)
        if keep["times"] and not self.a.omit_dir_times:
            _quietly(os.utime, name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd,
                     follow_symlinks=False)

    def _backup_keeps(self) -> dict[str, bool]:
        """backup.c: a copied backup gets set_file_attrs() of the dest file, so its
        owner, group and times only as -o, -g and -t keep them."""
        a = self.a
        return {"uid": bool(a.owner and a.am_root), "gid": bool(a.group),
                "times": bool(a.times), "nsec": self.r.backup_nsec}

    def make_backup(self, dest_rel: bytes, dest: bytes) -> bool:
        """Move ``dest`` aside as its backup. Returns False on failure."""
        bpath = self.backup_name(dest_rel, dest)
        bfd: int | None = None
        try:
            if self.r.backup_dir is not None:
                bfd = self._backup_parent(dest_rel, dest)
                bleaf = dest_rel.rpartition(b"/")[2] + self.r.suffix
            else:
                bleaf = bpath
            try:
                st = os.stat(bleaf, dir_fd=bfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    import shutil

                    shutil.rmtree(bleaf, dir_fd=bfd)
            except FileNotFoundError:
                pass
            try:
                os.replace(dest, bleaf, dst_dir_fd=bfd)
            except OSError as ex:
                if ex.errno != errno.EXDEV:
                    raise
                # --backup-dir on another filesystem: copy (keeping metadata), then remove.
                safepath.copy_into(dest, bfd, bleaf, **self._backup_keeps())
                os.unlink(dest)
            # rsync names the backup relative to the destination dir it works in.
            root = dest[: len(dest) - len(dest_rel)] if dest.endswith(dest_rel) else b""
            self.rep.backup_note(dest_rel, bpath[len(root):] if root and bpath.startswith(root)
                                 else bpath)
            return True
        except OSError as ex:
            if ex.errno == errno.ELOOP:
                # backup.c: clearing the old backup, then the copy fallback, fail
                # too, and that ends the transfer.
                why = f"{os.strerror(ex.errno)} ({ex.errno})"
                self.rep.error_xfer(f'unlink "{self.rep.safe(bpath)}": {why}', role="receiver")
                self.rep.error_xfer(f'keep_backup failed: {self.rep.qpath(dest)} -> '
                                    f'"{self.rep.safe(bpath)}": {why}', role="receiver")
                raise m.FatalError(RERR_FILEIO) from None
            # backup.c: a failed move falls back to copying, whose failure is reported so.
            self.rep.error_xfer(f'keep_backup failed: {self.rep.qpath(dest)} -> '
                                f'"{self.rep.safe(bpath)}": '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="receiver")
            return False
        finally:
            if bfd is not None:
                os.close(bfd)

    # ------------------------------------------------------------- data
    def receive(self, e: FileEntry, data: m.FileData, dest: bytes, dest_rel: bytes,
                basis: bytes | None, dest_st: os.stat_result | None, new_mode: int) -> bool:
        """Write one file. Returns True when the new file is in place."""
        if data.failed:
            return False
        r = self.r
        if r.dry_run:
            data.close()
            return True
        inplace = (r.inplace or r.append) and dest_st is not None and (
            stat.S_ISREG(dest_st.st_mode) or (write_devices and _is_device(dest_st.st_mode)))
        try:
            if inplace:
                return self._receive_inplace(e, data, dest, dest_rel, basis, dest_st, new_mode)
            return self._receive_tmp(e, data, dest, dest_rel, basis, dest_st, new_mode)
        finally:
            data.close()

    def _open_basis(self, basis: bytes | None) -> int | None:
        if basis is None:
            return None
        try:
            return os.open(basis, os.O_RDONLY | os.O_NOFOLLOW | _sender.read_flags())
        except OSError:
            return None

    def _write_data(self, out_fd: int, data: m.FileData, basis_fd: int | None,
                    start: int = 0, in_place: bool = False) -> int:
        """Write the file's data to ``out_fd`` from offset ``start``; return bytes written.
        ``in_place``: the basis is ``out_fd``'s own file (--inplace), so a block matched
        at the offset it would be written to is already there: it is skipped, as
        receiver.c skip_matched() does (no rewrite; a hole stays a hole)."""
        written = 0
        self._hole_len = 0
        prog = self.rep.progress_update
        if data.source_fd is not None and not self.r.sparse and data.sums is None \
                and not self.r.bwlimit:
            src = data.source_fd
            off = start
            size = data.size  # what fstat gave, as rsync's sender sends (map_file)
            # With --progress the first piece is rsync's first (match.c shows progress
            # after each CHUNK_SIZE piece it sends): its line says 32,768 as rsync's.
            want = _sender.CHUNK_SIZE if self.rep.progress is not None else COPY_CHUNK
            while off < size:
                try:
                    n = os.copy_file_range(src, out_fd, min(size - off, want), off, off)
                except OSError as ex:
                    if ex.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) \
                            and off == start:
                        break  # fall back to the token stream
                    raise
                if n == 0:
                    return written  # it shrank meanwhile
                off += n
                written += n
                prog(written)
                want = COPY_CHUNK
            else:
                return written
            # Fall back: read ourselves from the source fd.
            os.lseek(out_fd, start, os.SEEK_SET)
            while start + written < size:
                chunk = os.pread(src, min(1 << 20, size - start - written), start + written)
                if not chunk:
                    return written
                os.write(out_fd, chunk)
                written += len(chunk)
                prog(written)
            return written
        if start:
            # --append: the sender's stream starts at the beginning; skip what we have.
            os.lseek(out_fd, start, os.SEEK_SET)
        skip = start
        sums = data.sums
        before = self.r.progress_per_token and self.rep.progress is not None
        for tok in data.tokens:
            if before:
                prog(written)
            if isinstance(tok, int):
                assert basis_fd is not None and sums is not None
                head = sums.head
                blen = head.blength
                length = head.remainder if tok == head.count - 1 and head.remainder else blen
                if in_place and not skip and tok * blen == start + written:
                    if self.r.sparse:
                        # fileio.c skip_matched(): the block's zero runs are still
                        # punched out (a dense basis turns sparse, as with new data);
                        # the rest is already there and only skipped.
                        chunk = os.pread(basis_fd, length, tok * blen)
                        self._write_sparse(out_fd, chunk, seek=True)
                        if len(chunk) < length:  # it shrank meanwhile
                            self._flush_hole(out_fd)
                            os.lseek(out_fd, length - len(chunk), os.SEEK_CUR)
                    else:
                        os.lseek(out_fd, length, os.SEEK_CUR)
                    written += length
                    if not before:
                        prog(written)
                    continue
                chunk = os.pread(basis_fd, length, tok * blen)
            else:
                chunk = tok
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk = chunk[skip:]
                skip = 0
            if self.r.sparse and chunk:
                self._write_sparse(out_fd, chunk)
            else:
                os.write(out_fd, chunk)
            written += len(chunk)
            if self.r.bwlimit:
                self._throttle(len(chunk))
            if not before:
                prog(written)
        if self.r.sparse:
            self._flush_hole(out_fd)
            os.ftruncate(out_fd, os.lseek(out_fd, 0, os.SEEK_CUR))
        return written

    def _write_sparse(self, fd: int, chunk: bytes, seek: bool = False) -> None:
        """fileio.c write_sparse(): zero runs become holes.  A run at either end of
        the chunk counts whatever its length (it may join the next chunk's), one
        inside only from SPARSE_WRITE_SIZE bytes.  Skipping a run leaves a hole in
        a new file; where the file had data (--inplace) or space was reserved
        (--preallocate) the run is punched out, or written as zeros if it cannot be.
        ``seek``: the chunk is already on disk at this offset (a block matched in
        place), so the data between the runs is skipped rather than written."""
        n = len(chunk)
        pos = self._hole_at + self._hole_len if self._hole_len else \
            os.lseek(fd, 0, os.SEEK_CUR)
        start = 0
        for mt in _ZERO_RUN.finditer(chunk):
            a, b = mt.span()
            if b - a < SPARSE_WRITE_SIZE and a != 0 and b != n:
                continue
            if a > start:
                self._flush_hole(fd)
                if seek:
                    os.lseek(fd, a - start, os.SEEK_CUR)
                else:
                    os.write(fd, chunk[start:a])
            if not self._hole_len:
                self._hole_at = pos + a
            self._hole_len += b - a  # deferred: the next run may extend it
            start = b
        if start < n:
            self._flush_hole(fd)
            if seek:
                os.lseek(fd, n - start, os.SEEK_CUR)
            else:
                os.write(fd, chunk[start:])

    def _flush_hole(self, fd: int) -> None:
        """Turn the pending zero run into a hole, in one piece (whole blocks get freed)."""
        pos, length = self._hole_at, self._hole_len
        if not length:
            return
        self._hole_len = 0
        if self._punch or pos < self._prealloc:
            try:
                fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, pos, length)
            except OSError:
                os.lseek(fd, pos, os.SEEK_SET)
                os.write(fd, bytes(length))  # do_punch_hole()'s last resort: zeros
                return
        os.lseek(fd, pos + length, os.SEEK_SET)

    def _receive_tmp(self, e: FileEntry, data: m.FileData, dest: bytes, dest_rel: bytes,
                     basis: bytes | None, dest_st: os.stat_result | None, new_mode: int) -> bool:
        r = self.r
        tdir = r.temp_dir
        tmp = shown = tmp_name(dest, tdir)
        tfd: int | None = None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            # --temp-dir is an operator path: resolve it once, refusing symlinks owned
            # by others, and keep every later step inside the held dir.  Otherwise the
            # file goes beside its destination, in its dir opened without following
            # symlinks under the destination: a dir swapped for a symlink mid-transfer
            # cannot send the data (or the rename) elsewhere.
            tfd = safepath.owner_open_dir(tdir) if tdir is not None \
                else self._dest_parent(dest, dest_rel)
            leaf = tmp.rpartition(b"/")[2]
            if tfd is not None and self._fd_paths:
                tmp = b"/proc/self/fd/%d/%s" % (tfd, leaf)
            # Known before it exists: a signal handled right after the create (a create
            # is the slow step, so that is where one lands) still finds it to remove.
            self.current_tmp, self.current_dest = tmp, dest
            fd = os.open(tmp, flags, 0o600) if tfd is None else \
                os.open(leaf, flags, 0o600, dir_fd=tfd)
        except OSError as ex:
            self.current_tmp = self.current_dest = None
            if tfd is not None:
                os.close(tfd)
            self.rep.error_xfer(f'mkstemp {self.rep.qpath(shown)} failed: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="receiver")
            return False
        basis_fd = self._open_basis(basis)
        ok = False
        try:
            self._prealloc = self._preallocate(fd, e.size, dest) if preallocate and e.size > 0 \
                else 0
            written = self._write_data(fd, data, basis_fd)
            if self._prealloc > written:
                os.ftruncate(fd, written)  # the reservation may overshoot the data
            if do_fsync:
                self._fsync(fd, dest)
            errs: list[str] = []
            # Through the open file: no path (through /proc) looked up three times.
            set_file_attrs(self.a, tmp, e, None, new_mode=new_mode, errors=errs, accurate=True,
                           fd=fd, xattr_from=(basis, dest) if self.a.xattrs else None)
            fd, cfd = -1, fd  # forgotten first: a signal between the two never closes it twice
            os.close(cfd)
            for msg in errs:
                self.rep.error_xfer(msg, role="receiver")
            if r.delay_updates:
                base = dest.rpartition(b"/")[2]
                sdir = r.stage_dir.rstrip(b"/") or b"/"
                if not sdir.startswith(b"/"):
                    sdir = (parent_of(dest) if b"/" in dest else b".") + b"/" + sdir
            if r.delay_updates and not partial_hidden(sdir + b"/" + base):
                # The --partial-dir is an operator path (util1.c handle_partial_dir()):
                # a symlink in it owned by another user, or one that leaves a
                # daemon's module, is refused and the stage stays where it is.
                try:
                    sfd = safepath.owner_makedirs(sdir, mode=0o700)
                except OSError:
                    # receiver.c: not an error of the transfer, the file is dropped.
                    self.rep._emit(f"Unable to create partial-dir for "
                                   f"{self.rep.safe(dest_rel)} -- discarding completed "
                                   f"file.", self.rep.err)
                    os.unlink(tmp)
                    self.current_tmp = None
                    return False
                try:
                    os.replace(tmp, base, dst_dir_fd=sfd)
                finally:
                    os.close(sfd)
                staged = sdir + b"/" + base
                self.delayed.append((staged, dest, dest_rel))  # type: ignore[arg-type]
                ok = True
                return True
            if r.backup and dest_st is not None and stat.S_ISREG(dest_st.st_mode):
                if not self.make_backup(dest_rel, dest):
                    # rsync.c finish_transfer(): a file whose old version cannot be kept
                    # ends the run (the new one is dropped, the old one stays).
                    raise RsyncError(RERR_FILEIO, own_code=True)
            if tdir is not None:
                self._move_into_place(tmp, dest, tfd, dest_rel)
            elif tfd is not None:
                os.replace(tmp.rpartition(b"/")[2], dest.rpartition(b"/")[2], src_dir_fd=tfd,
                           dst_dir_fd=tfd)
            else:
                os.replace(tmp, dest)
            ok = True
            return True
        except m.DiscardFile:
            return False
        except OSError as ex:
            self.rep.error_xfer(f'write {self.rep.qpath(dest)} failed: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="receiver",
                                    fatal_io=True)
            return False
        finally:
            self._prealloc = 0
            if fd >= 0:
                os.close(fd)
            if basis_fd is not None:
                os.close(basis_fd)
            if not ok:
                self._discard_tmp()
            if tfd is not None:
                os.close(tfd)
            self.current_tmp = self.current_dest = None

    def _move_into_place(self, tmp: bytes, dest: bytes, tfd: int | None = None,
                         dest_rel: bytes = b"") -> None:
        """A --temp-dir file renamed to its destination.  From the held temp dir into
        dest's dir opened below the destination, when there is one: a dest dir swapped
        for a symlink meanwhile cannot take the file elsewhere (syscall.c
        do_rename_at(), which rsync 3.5 also confines for an absolute temp path)."""
        pfd = self._dest_parent(dest, dest_rel) if tfd is not None else None
        leaf, name = tmp.rpartition(b"/")[2], dest.rpartition(b"/")[2]
        try:
            try:
                if pfd is not None:
                    os.replace(leaf, name, src_dir_fd=tfd, dst_dir_fd=pfd)
                else:
                    os.replace(tmp, dest)
            except OSError as ex:
                if ex.errno != errno.EXDEV:
                    raise
                # --temp-dir on another filesystem: copy beside the target, then rename.
                if pfd is not None:
                    sfd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=tfd)
                    try:
                        safepath.copy_fd_into(sfd, pfd, name)
                    finally:
                        os.close(sfd)
                    os.unlink(leaf, dir_fd=tfd)
                    return
                near = tmp_name(dest, None)
                import shutil

                shutil.copy2(tmp, near, follow_symlinks=False)
                os.replace(near, dest)
                os.unlink(tmp)
        finally:
            if pfd is not None:
                os.close(pfd)

    def _receive_inplace(self, e: FileEntry, data: m.FileData, dest: bytes, dest_rel: bytes,
                         basis: bytes | None, dest_st: os.stat_result | None,
                         new_mode: int) -> bool:
        r = self.r
        bk_fd: int | None = None
        to_device = dest_st is not None and _is_device(dest_st.st_mode)
        if r.backup and dest_st is not None and not to_device:
            bpath = self.backup_name(dest_rel, dest)
            try:
                bfd = self._backup_parent(dest_rel, dest) if r.backup_dir is not None else None
            except OSError as ex:
                self.rep.error_xfer(f'unlink "{self.rep.safe(bpath)}": '
                                    f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
                return False
            bname = bpath if bfd is None else dest_rel.rpartition(b"/")[2] + r.suffix
            try:
                safepath.copy_into(dest, bfd, bname, **self._backup_keeps())
                if basis is None or basis == dest:
                    # receiver.c: the backup is the basis, so the delta never reads
                    # blocks this very write has already overwritten.
                    bk_fd = os.open(bname, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                    dir_fd=bfd)
                root = dest[: len(dest) - len(dest_rel)] if dest.endswith(dest_rel) else b""
                self.rep.backup_note(dest_rel, bpath[len(root):] if root
                                     and bpath.startswith(root) else bpath)
            except FileExistsError:
                pass
            finally:
                if bfd is not None:
                    os.close(bfd)
        start = dest_st.st_size if r.append and dest_st is not None else 0
        pfd = self._dest_parent(dest, dest_rel)
        try:
            fd = os.open(dest if pfd is None else dest.rpartition(b"/")[2],
                         os.O_WRONLY | os.O_NOFOLLOW, dir_fd=pfd)
        except OSError as ex:
            if bk_fd is not None:
                os.close(bk_fd)
            self.rep.error_xfer(f'open {self.rep.qpath(dest)} failed: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="receiver")
            return False
        finally:
            if pfd is not None:
                os.close(pfd)
        basis_fd = bk_fd if bk_fd is not None else \
            self._open_basis(basis if basis is not None else dest)
        try:
            self._prealloc = 0
            if preallocate and e.size > 0 and dest_st is not None and e.size > dest_st.st_size:
                self._prealloc = self._preallocate(fd, e.size, dest)
            self._punch = True
            try:
                written = self._write_data(fd, data, basis_fd, start,
                                           in_place=bk_fd is None and basis_fd is not None
                                           and (basis is None or basis == dest))
            except OSError as ex:
                # receiver.c receive_data(): a failed write ends the transfer.
                raise m.FatalError(RERR_FILEIO, f'[receiver] write failed on '
                                                f'{self.rep.qpath(dest)}: '
                                                f"{os.strerror(ex.errno or 0)} ({ex.errno})"
                                   ) from None
            if not to_device:  # receiver.c: a device keeps its length
                os.ftruncate(fd, start + written)
            if do_fsync:
                self._fsync(fd, dest)
        finally:
            self._prealloc = 0
            self._punch = False
            os.close(fd)
            if basis_fd is not None:
                os.close(basis_fd)
        errs: list[str] = []
        set_file_attrs(self.a, dest, e, None, new_mode=new_mode, errors=errs, accurate=True,
                       xattr_from=dest if self.a.xattrs else None)
        for msg in errs:
            self.rep.error_xfer(msg, role="receiver")
        return True

    def _discard_tmp(self) -> None:
        tmp = self.current_tmp
        if tmp is None:
            return
        if self.r.partial and self.current_dest is not None:
            # --partial: keep what arrived so a re-run can use it as a basis.
            try:
                if os.path.getsize(tmp) > 0:
                    target = self.current_dest
                    if self.r.partial_dir is not None:
                        # An operator path: no symlink owned by another user is followed.
                        target = self._partial_path(self.current_dest)
                        if partial_hidden(target):
                            raise OSError(errno.EPERM, "excluded")
                        head, _, leaf = target.rpartition(b"/")
                        pfd = safepath.owner_makedirs(head or b".")
                        try:
                            os.replace(tmp, leaf, dst_dir_fd=pfd)
                        finally:
                            os.close(pfd)
                        return
                    os.replace(tmp, target)
                    return
            except OSError:
                pass
        try:
            os.unlink(tmp)
        except OSError:
            pass

    def _partial_path(self, dest: bytes) -> bytes:
        pd = self.r.partial_dir or b""
        d, _, base = dest.rpartition(b"/")
        if pd.startswith(b"/"):
            return pd + b"/" + base
        return (d + b"/" if d else b"") + pd + b"/" + base

    def abort(self) -> None:
        """Signal/interrupt cleanup: drop (or keep with --partial) the file in flight."""
        self._discard_tmp()
        self.current_tmp = self.current_dest = None

    def close_fds(self) -> None:
        """Close the dir fds held for the next files."""
        if self._last_dir is not None:
            os.close(self._last_dir[2])
            self._last_dir = None
        if self._root_fd is not None:
            os.close(self._root_fd[1])
            self._root_fd = None

    def finish_delayed(self) -> None:
        """--delay-updates: rename every staged file into place at the end."""
        dirs: set[bytes] = set()
        for staged, dest, dest_rel in self.delayed:  # type: ignore[misc]
            try:
                if self.r.backup and os.path.lexists(dest) \
                        and not self.make_backup(dest_rel, dest):
                    continue  # receiver.c handle_delayed_updates(): left staged
                os.replace(staged, dest)
            except OSError as ex:
                self.rep.error_xfer(f'rename {self.rep.qpath(staged)} -> '
                                    f'"{self.rep.safe(dest_rel)}": {os.strerror(ex.errno or 0)} ({ex.errno})', role="receiver")
            if not self.r.stage_dir.startswith(b"/"):
                dirs.add(parent_of(staged))  # an absolute --partial-dir stays
        for d in dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass
        self.delayed.clear()


def _quietly(fn, *args, **kw) -> None:
    """One attribute step whose failure rsync ignores too."""
    try:
        fn(*args, **kw)
    except OSError:
        pass
