"""Transfer logs: wu-ftpd's xferlog format and vsftpd's own format.

Files are opened by the listening process, before any privilege drop or chroot,
and inherited by session processes, which only ever append to them.
"""

from __future__ import annotations

import os
import time

from .config import Config


def _date(t: float, localtime: bool = True) -> str:
    tm = time.localtime(t) if localtime else time.gmtime(t)
    return time.strftime("%a %b ", tm) + f"{tm.tm_mday:2d}" + time.strftime(" %H:%M:%S %Y", tm)


def _open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


class TransferLog:
    """Which logs are written follows vsftpd's logging.c: xferlog_enable turns
    logging on; xferlog_std_format picks the wu-ftpd file instead of vsftpd's,
    and dual_log_enable writes both."""

    def __init__(self, cfg: Config) -> None:
        self.xfer_fd: int | None = None
        self.vsftpd_fd: int | None = None
        if not cfg.xferlog_enable and not cfg.dual_log_enable:
            return
        want_std = cfg.xferlog_std_format or cfg.dual_log_enable
        want_vsf = (not cfg.xferlog_std_format) or cfg.dual_log_enable
        if want_std and cfg.xferlog_file:
            self.xfer_fd = _open_append(cfg.xferlog_file)
        if want_vsf and cfg.vsftpd_log_file:
            self.vsftpd_fd = _open_append(cfg.vsftpd_log_file)

    def close(self) -> None:
        for fd in (self.xfer_fd, self.vsftpd_fd):
            if fd is not None:
                os.close(fd)
        self.xfer_fd = self.vsftpd_fd = None

    @staticmethod
    def _write(fd: int | None, line: str) -> None:
        if fd is None:
            return
        try:
            os.write(fd, line.encode("utf-8", "surrogateescape") + b"\n")
        except OSError:
            pass

    def xferlog(
        self,
        *,
        start: float,
        host: str,
        size: int,
        path: str,
        binary: bool,
        incoming: bool,
        anonymous: bool,
        user: str,
        complete: bool,
    ) -> None:
        """One wu-ftpd line: date secs host bytes file type flag dir mode user
        service auth-method auth-user status."""
        now = time.time()
        secs = max(1, int(now - start + 0.5))
        fname = "".join("_" if c.isspace() else c for c in path)
        line = (
            f"{_date(now)} {secs} {host} {size} {fname} {'b' if binary else 'a'} _ "
            f"{'i' if incoming else 'o'} {'a' if anonymous else 'r'} {user or '*'} "
            f"ftp 0 * {'c' if complete else 'i'}"
        )
        self._write(self.xfer_fd, line)

    def vsftpd(self, text: str, user: str | None = None) -> None:
        """A vsftpd-format line: 'DATE [pid N] [user] OK DOWNLOAD: Client "ip", ...'."""
        prefix = f"{_date(time.time())} [pid {os.getpid()}] "
        if user:
            prefix += f"[{user}] "
        self._write(self.vsftpd_fd, prefix + text)

    def transfer(
        self,
        *,
        ok: bool,
        what: str,
        host: str,
        path: str,
        size: int,
        start: float,
        binary: bool,
        incoming: bool,
        anonymous: bool,
        user: str,
        xfer_user: str,
    ) -> None:
        elapsed = max(time.time() - start, 1e-6)
        rate = size / 1024.0 / elapsed
        self.vsftpd(
            f'{"OK" if ok else "FAIL"} {what}: Client "{host}", "{path}", '
            f"{size} bytes, {rate:.2f}Kbyte/sec",
            user,
        )
        self.xferlog(
            start=start,
            host=host,
            size=size,
            path=path,
            binary=binary,
            incoming=incoming,
            anonymous=anonymous,
            user=xfer_user,
            complete=ok,
        )
