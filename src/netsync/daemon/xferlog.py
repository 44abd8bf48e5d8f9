"""The daemon's log: ``log file`` or syslog, and ``transfer logging`` (rsync 3.5 log.c).

:class:`DaemonLog` is log.c logit()/log_init() for a daemon: lines go to the
``log file`` as ``YYYY/MM/DD HH:MM:SS [pid] text`` (control bytes escaped as
logit() does), or, when no log file is configured, to syslog with the
``syslog facility`` and ``syslog tag`` (LOG_PID | LOG_NDELAY, as rsync).

:class:`TransferLog` is what a module connection logs while netsync.server
runs the transfer (netsync.server.ServerReporter calls it through
:data:`current`; a daemon connection is a process of its own): every text
message the server sends the client (rwrite() logs them all in a daemon),
with ``transfer logging`` one ``log format`` line per transferred or deleted
file (log_item()/log_delete()), and log_exit()'s closing lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import syslog
import time

from netsync import log as L

__all__ = ["DEFAULT_SYSLOG_TAG", "DaemonLog", "TransferLog", "current", "syslog_settings"]

DEFAULT_SYSLOG_TAG = "rsyncd"
_EXIT_LINE = re.compile(rb"^\S+ (?:error|warning): .* \(code (\d+)\)")


def syslog_settings(section) -> tuple[str, int]:
    """(tag, facility) for openlog(): lp_syslog_tag()/lp_syslog_facility() of a module
    (or of the global section); the tag's %VAR% references are expanded by the config."""
    try:
        tag = section.syslog_tag
    except Exception:  # a bad %VAR% expansion: rsync would log with the default
        tag = DEFAULT_SYSLOG_TAG
    return tag, section.syslog_facility


class DaemonLog:
    """log.c logit() for a daemon: the log file, else syslog."""

    def __init__(self, path: str | None, section=None) -> None:
        self.fd = -1
        self.path = path or ""
        self.syslog: tuple[str, int] | None = None
        self._open(section)

    def _open(self, section) -> None:
        if self.path:
            try:
                from netsync.safepath import daemon_open

                # A planted symlink must not redirect the log (logfile_open()).
                self.fd = daemon_open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                return
            except OSError as exc:
                failed = exc
            self._open_syslog(section)
            self(f"rsync: [daemon] failed to open log-file {self.path}: "
                 f"{failed.strerror} ({failed.errno})", syslog.LOG_WARNING)
            self("Ignoring \"log file\" setting.")
            self.path = ""
            return
        self._open_syslog(section)

    def _open_syslog(self, section) -> None:
        tag, facility = syslog_settings(section) if section is not None \
            else (DEFAULT_SYSLOG_TAG, syslog.LOG_DAEMON)
        with contextlib.suppress(OSError, ValueError):
            syslog.openlog(tag, syslog.LOG_PID | syslog.LOG_NDELAY, facility)
        self.syslog = (tag, facility)

    def reopen_for(self, path: str, section) -> None:
        """log_init(1) once the module is known: its own ``log file`` or syslog settings."""
        if path == self.path:
            if path or self.syslog == syslog_settings(section):
                return
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        elif self.syslog is not None:
            syslog.closelog()
            self.syslog = None
        self.path = path
        self._open(section)

    def __call__(self, text: str | bytes, priority: int = syslog.LOG_INFO) -> None:
        raw = text.encode(errors="surrogateescape") if isinstance(text, str) else text
        if self.fd >= 0:
            if not raw.endswith((b"\n", b"\r")):
                raw += b"\n"
            stamp = time.strftime("%Y/%m/%d %H:%M:%S").encode()
            with contextlib.suppress(OSError):
                os.write(self.fd, b"%s [%d] %s" % (stamp, os.getpid(), L.escape_logfile(raw)))
        elif self.syslog is not None:
            with contextlib.suppress(OSError, ValueError):
                syslog.syslog(priority, raw.rstrip(b"\n").decode("utf-8", "replace"))


class TransferLog:
    """What one module connection logs about its transfer."""

    def __init__(self, out: DaemonLog, *, fmt: str | None, module: str, module_path: str,
                 module_root: bytes, host: str, addr: str, user: str, am_sender: bool,
                 dest: bytes | None, dry_run: bool, preserve_uid: bool = False,
                 preserve_gid: bool = False, munge: bool = False) -> None:
        self.out = out
        self.fmt = fmt or None  # clientserver.c: the log format only with transfer logging
        self.has_i = L.log_format_has(self.fmt, "i")
        self.has_o_or_i = self.has_i or L.log_format_has(self.fmt, "o")
        self.wants_bytes = L.log_format_has(self.fmt, "b") or L.log_format_has(self.fmt, "c")
        self.ctx = L.LogContext(
            am_sender=am_sender, am_daemon=True, module_name=module.encode(errors="surrogateescape"),
            module_path=module_path.encode(errors="surrogateescape"),
            host=host.encode(errors="surrogateescape"), addr=addr.encode(),
            auth_user=user.encode(errors="surrogateescape"))
        self.root = b"" if module_root == b"/" else module_root.rstrip(b"/")
        self.dest = dest  # a receiver's destination in the module (its cwd in rsync)
        self.dry_run = dry_run
        self.preserve_uid = preserve_uid
        self.preserve_gid = preserve_gid
        self.munge = munge  # "munge symlinks": a received link's target is logged munged
        self.am_sender = am_sender
        self.reporter = None  # the ServerReporter, for the byte counts and the stats
        self.finished = False

    # -- per-file lines ----------------------------------------------------
    def _daemon_dir(self) -> bytes:
        """curr_dir + module_dirlen: the receiver's directory inside the module."""
        try:
            cwd = os.getcwdb()
        except OSError:
            cwd = b"/"
        rel = cwd[len(self.root):] if cwd.startswith(self.root) else cwd
        if self.dest is not None and not self.am_sender:
            d = self.dest.rstrip(b"/")
            if d and d != b".":
                # get_local_name(): rsync changes into the destination directory (or
                # into its parent when the destination names a file).
                if not os.path.isdir(d):
                    d = d.rpartition(b"/")[0]
                rel = rel.rstrip(b"/") + b"/" + d if d else rel
        return rel

    def item(self, item: L.LogItem) -> None:
        """log_item(FLOG): one line in ``log format``."""
        if self.fmt is None or self.dry_run:
            return
        self.ctx.daemon_dir = self._daemon_dir()
        self.out(L.expand_log_format(self.fmt, item, self.ctx))

    def deleted(self, name: bytes, mode: int) -> None:
        """log_delete(): the module's format if it has %o or %i, else "deleting %n"."""
        if self.fmt is None or self.dry_run:
            return
        fmt = self.fmt if self.has_o_or_i else "deleting %n"
        self.ctx.daemon_dir = self._daemon_dir()
        self.out(L.expand_log_format(fmt, L.LogItem.deletion(name, mode), self.ctx))

    # -- messages and the end ------------------------------------------------
    def message(self, code: int, payload: bytes) -> None:
        """rwrite() in a daemon: a text message for the client is logged first."""
        from netsync.wire import Msg

        m = _EXIT_LINE.match(payload)
        if m and not self.finished:
            self.finish(int(m.group(1)), payload)
            return
        prio = syslog.LOG_INFO if code == Msg.INFO else syslog.LOG_WARNING
        self.out(payload, prio)

    def finish(self, code: int, exit_line: bytes | None = None) -> None:
        """log_exit(): "sent ... total size" (at success, or always from a sender), then the
        error line.  ``exit_line`` is the one the server sent the client, if any."""
        if self.finished:
            return
        self.finished = True
        if code == 0 or self.am_sender:
            sent = received = total = 0
            rep = self.reporter
            if rep is not None:
                conn = rep.io.conn
                sent, received = conn.bytes_written, conn.bytes_read
                stats = getattr(rep, "stats", None)
                total = stats.total_size if stats is not None else 0
            self.out(f"sent {L.big_num(sent)} bytes  received {L.big_num(received)} bytes  "
                     f"total size {L.big_num(total)}")
        if code:
            if exit_line is None:
                from netsync import __version__
                from netsync import errors as E

                who = "sender" if self.am_sender else "receiver"
                exit_line = f"{E.exit_message(code)} [{who}={__version__}]".encode()
            self.out(exit_line, syslog.LOG_WARNING)


current: TransferLog | None = None
