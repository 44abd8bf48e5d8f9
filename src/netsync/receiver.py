"""The receiver role: writes file data to a temporary file and renames it into place.

Nothing is ever written over a good destination file until the new one is
complete and carries its metadata (except with --inplace/--append, which the
user asked for).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from dataclasses import dataclass

from netsync import messages as m
from netsync.flist import FileEntry, parent_of
from netsync.metadata import AttrOptions, set_file_attrs
from netsync.report import Reporter

COPY_CHUNK = 1 << 30  # copy_file_range asks, the kernel decides how much per call


@dataclass
class ReceiveOptions:
    inplace: bool = False
    append: int = 0
    partial: bool = False
    partial_dir: bytes | None = None
    temp_dir: bytes | None = None
    delay_updates: bool = False
    sparse: bool = False
    backup: bool = False
    backup_dir: bytes | None = None
    suffix: bytes = b"~"
    dry_run: bool = False
    bwlimit: int = 0  # bytes per second, 0 = unlimited


def tmp_name(dest: bytes, temp_dir: bytes | None) -> bytes:
    """rsync's get_tmpname: ``.<name>.XXXXXX`` beside the file (or in --temp-dir)."""
    d, _, base = dest.rpartition(b"/")
    base = base[:200]
    name = b"." + base + b"." + secrets.token_hex(3).encode()
    if temp_dir is not None:
        return temp_dir.rstrip(b"/") + b"/" + name
    return (d + b"/" if d else b"") + name


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

    def _make_backup_dirs(self, dest_rel: bytes, dest: bytes) -> None:
        """backup.c make_bak_dir: missing dirs copy the mode/owner of the dest dirs."""
        assert self.r.backup_dir is not None
        comps = dest_rel.split(b"/")[:-1]
        bdir = self.r.backup_dir.rstrip(b"/")
        os.makedirs(bdir, exist_ok=True)
        droot = dest[: len(dest) - len(dest_rel)].rstrip(b"/") if dest.endswith(dest_rel) else None
        for i, comp in enumerate(comps):
            bdir = bdir + b"/" + comp
            if os.path.isdir(bdir):
                continue
            os.mkdir(bdir, 0o700)
            if droot is None:
                continue
            try:
                st = os.stat((droot + b"/" if droot else b"") + b"/".join(comps[: i + 1]))
                os.chmod(bdir, stat.S_IMODE(st.st_mode))
                if self.a.am_root:
                    os.chown(bdir, st.st_uid, st.st_gid)
                os.utime(bdir, ns=(st.st_atime_ns, st.st_mtime_ns))
            except OSError:
                pass

    def make_backup(self, dest_rel: bytes, dest: bytes) -> bool:
        """Move ``dest`` aside as its backup. Returns False on failure."""
        bpath = self.backup_name(dest_rel, dest)
        try:
            if self.r.backup_dir is not None:
                self._make_backup_dirs(dest_rel, dest)
            try:
                st = os.lstat(bpath)
                if stat.S_ISDIR(st.st_mode):
                    import shutil

                    shutil.rmtree(bpath)
            except FileNotFoundError:
                pass
            try:
                os.replace(dest, bpath)
            except OSError as ex:
                if ex.errno != errno.EXDEV:
                    raise
                # --backup-dir on another filesystem: copy (keeping metadata), then remove.
                import shutil

                tmp = tmp_name(bpath, None)
                shutil.copy2(dest, tmp, follow_symlinks=False)
                os.replace(tmp, bpath)
                os.unlink(dest)
            # rsync names the backup relative to the destination dir it works in.
            root = dest[: len(dest) - len(dest_rel)] if dest.endswith(dest_rel) else b""
            self.rep.backup_note(dest_rel, bpath[len(root):] if root and bpath.startswith(root)
                                 else bpath)
            return True
        except OSError as ex:
            self.rep.error_xfer(f'make_backup "{self.rep.safe(dest_rel)}" failed: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})")
            return False

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
        inplace = (r.inplace or r.append) and dest_st is not None and stat.S_ISREG(dest_st.st_mode)
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
            return os.open(basis, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None

    def _write_data(self, out_fd: int, data: m.FileData, basis_fd: int | None,
                    start: int = 0) -> int:
        """Write the file's data to ``out_fd`` from offset ``start``; return bytes written."""
        written = 0
        prog = self.rep.progress_update
        if data.source_fd is not None and not self.r.sparse and data.sums is None \
                and not self.r.bwlimit:
            src = data.source_fd
            off = start
            while True:
                try:
                    n = os.copy_file_range(src, out_fd, COPY_CHUNK, off, off)
                except OSError as ex:
                    if ex.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) \
                            and off == start:
                        break  # fall back to the token stream
                    raise
                if n == 0:
                    return written
                off += n
                written += n
                prog(written)
            # Fall back: read ourselves from the source fd.
            os.lseek(out_fd, start, os.SEEK_SET)
            while True:
                chunk = os.pread(src, 1 << 20, start + written)
                if not chunk:
                    return written
                os.write(out_fd, chunk)
                written += len(chunk)
                prog(written)
        if start:
            # --append: the sender's stream starts at the beginning; skip what we have.
            os.lseek(out_fd, start, os.SEEK_SET)
        skip = start
        sums = data.sums
        for tok in data.tokens:
            if isinstance(tok, int):
                assert basis_fd is not None and sums is not None
                head = sums.head
                blen = head.blength
                length = head.remainder if tok == head.count - 1 and head.remainder else blen
                chunk = os.pread(basis_fd, length, tok * blen)
            else:
                chunk = tok
            if skip:
                if len(chunk) <= skip:
                    skip -= len(chunk)
                    continue
                chunk = chunk[skip:]
                skip = 0
            if self.r.sparse and chunk and chunk.count(0) == len(chunk):
                os.lseek(out_fd, len(chunk), os.SEEK_CUR)
            else:
                os.write(out_fd, chunk)
            written += len(chunk)
            if self.r.bwlimit:
                self._throttle(len(chunk))
            prog(written)
        if self.r.sparse:
            os.ftruncate(out_fd, os.lseek(out_fd, 0, os.SEEK_CUR))
        return written

    def _receive_tmp(self, e: FileEntry, data: m.FileData, dest: bytes, dest_rel: bytes,
                     basis: bytes | None, dest_st: os.stat_result | None, new_mode: int) -> bool:
        r = self.r
        tdir = r.temp_dir
        tmp = tmp_name(dest, tdir)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as ex:
            self.rep.error_xfer(f'mkstemp "{self.rep.full_path(tmp)}" failed: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})")
            return False
        self.current_tmp, self.current_dest = tmp, dest
        basis_fd = self._open_basis(basis)
        ok = False
        try:
            self._write_data(fd, data, basis_fd)
            os.close(fd)
            fd = -1
            errs: list[str] = []
            set_file_attrs(self.a, tmp, e, None, new_mode=new_mode, errors=errs, accurate=True)
            for msg in errs:
                self.rep.error_xfer(msg)
            if r.delay_updates:
                ddir = parent_of(dest) if b"/" in dest else b"."
                stage = ddir + b"/.~tmp~"
                os.makedirs(stage, exist_ok=True)
                staged = stage + b"/" + dest.rpartition(b"/")[2]
                os.replace(tmp, staged)
                self.delayed.append((staged, dest, dest_rel))  # type: ignore[arg-type]
                ok = True
                return True
            if r.backup and dest_st is not None and stat.S_ISREG(dest_st.st_mode):
                if not self.make_backup(dest_rel, dest):
                    return False
            os.replace(tmp, dest) if tdir is None else self._move_into_place(tmp, dest)
            ok = True
            return True
        except m.DiscardFile:
            return False
        except OSError as ex:
            self.rep.error_xfer(f'write "{self.rep.full_path(dest)}" failed: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", fatal_io=True)
            return False
        finally:
            if fd >= 0:
                os.close(fd)
            if basis_fd is not None:
                os.close(basis_fd)
            if not ok:
                self._discard_tmp()
            self.current_tmp = self.current_dest = None

    def _move_into_place(self, tmp: bytes, dest: bytes) -> None:
        try:
            os.replace(tmp, dest)
        except OSError as ex:
            if ex.errno != errno.EXDEV:
                raise
            # --temp-dir on another filesystem: copy beside the target, then rename.
            near = tmp_name(dest, None)
            import shutil

            shutil.copy2(tmp, near, follow_symlinks=False)
            os.replace(near, dest)
            os.unlink(tmp)

    def _receive_inplace(self, e: FileEntry, data: m.FileData, dest: bytes, dest_rel: bytes,
                         basis: bytes | None, dest_st: os.stat_result | None,
                         new_mode: int) -> bool:
        r = self.r
        if r.backup and dest_st is not None:
            import shutil

            bpath = self.backup_name(dest_rel, dest)
            if r.backup_dir is not None:
                os.makedirs(parent_of(bpath), exist_ok=True)
            shutil.copy2(dest, bpath, follow_symlinks=False)
        start = dest_st.st_size if r.append and dest_st is not None else 0
        fd = os.open(dest, os.O_WRONLY | os.O_NOFOLLOW)
        basis_fd = self._open_basis(basis if basis is not None else dest)
        try:
            written = self._write_data(fd, data, basis_fd, start)
            os.ftruncate(fd, start + written)
        finally:
            os.close(fd)
            if basis_fd is not None:
                os.close(basis_fd)
        errs: list[str] = []
        set_file_attrs(self.a, dest, e, None, new_mode=new_mode, errors=errs, accurate=True)
        for msg in errs:
            self.rep.error_xfer(msg)
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
                        target = self._partial_path(self.current_dest)
                        os.makedirs(parent_of(target), exist_ok=True)
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

    def finish_delayed(self) -> None:
        """--delay-updates: rename every staged file into place at the end."""
        dirs: set[bytes] = set()
        for staged, dest, dest_rel in self.delayed:  # type: ignore[misc]
            try:
                if self.r.backup and os.path.lexists(dest):
                    self.make_backup(dest_rel, dest)
                os.replace(staged, dest)
            except OSError as ex:
                self.rep.error_xfer(f'rename "{self.rep.full_path(staged)}" -> '
                                    f'"{self.rep.safe(dest_rel)}": {os.strerror(ex.errno or 0)} ({ex.errno})')
            dirs.add(parent_of(staged))
        for d in dirs:
            try:
                os.rmdir(d)
            except OSError:
                pass
        self.delayed.clear()
