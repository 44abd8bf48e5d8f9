"""The listening process: accepts, enforces max_clients/max_per_ip, and forks
one process per session.  It never parses a client command itself."""

from __future__ import annotations

import errno
import gc
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from types import ModuleType

from pyftpdlib.ioloop import IOLoop

from . import __version__, accounts, prelogin, tlsimport
from .accounts import PamModules
from .config import Config, ConfigError, load
from .logs import TransferLog
from .session import ServerStub, Session, preload_lazy_modules

log = logging.getLogger("netsync.ftpd")

LISTENER_BOOST = 10  # nice levels the listener runs above its sessions
REAP_INTERVAL = 1.0  # seconds an ended session may stay unreaped while no one connects

MSG_MAX_CLIENTS = "421 There are too many connected users, please try later."
MSG_MAX_PER_IP = "421 There are too many connections from your internet address."


def banner_lines(cfg: Config) -> list[str]:
    if cfg.banner_file:
        try:
            with open(cfg.banner_file, encoding="utf-8", errors="replace") as fh:
                lines = fh.read(65536).splitlines()
            if lines:
                return lines
        except OSError:
            pass
    if cfg.ftpd_banner:
        return [cfg.ftpd_banner]
    return [f"(netsync-ftpd {__version__})"]


_quieted = False


def _quiet_pyftpdlib() -> None:
    # pyftpdlib logs every event at INFO to stderr; we keep only its errors
    # (unexpected exceptions) and write our own vsftpd-style logs.  Done once,
    # in the listener: each session inherits the configured logger.
    global _quieted
    if _quieted:
        return
    _quieted = True
    lg = logging.getLogger("pyftpdlib")
    if not lg.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("netsync-ftpd[%(process)d]: %(message)s"))
        lg.addHandler(h)
    lg.setLevel(logging.ERROR)
    lg.propagate = False


def tls_module() -> ModuleType:
    """tls.py, with pyOpenSSL let in (see tlsimport.py)."""
    tlsimport.allow()
    from . import tls

    return tls


def run_session(cfg: Config, conn: socket.socket, tlog: TransferLog | None) -> None:
    """Serve one control connection to the end (called in the session process)."""
    _quiet_pyftpdlib()
    preload_lazy_modules()  # a no-op when the listener already did it
    cls: type[Session] = Session
    Session.tls_ctx = None
    if cfg.ssl_enable:
        tls = tls_module()  # already imported by the listener
        cls = tls.TLSSession
        Session.tls_ctx = tls.make_context(cfg)
    Session.cfg = cfg
    Session.tlog = tlog
    Session.banner_lines = banner_lines(cfg)
    if prelogin.applies(cfg):
        prelogin.run(cfg, conn)
        return
    ioloop = IOLoop()
    handler = cls(conn, ServerStub(conn.family), ioloop=ioloop)
    if not handler.connected:
        return
    handler.handle()
    ioloop.loop()


def _compact_for_fork() -> None:
    """Before serving: every fork copies the page table entries of the
    listener's resident memory, and every exit tears them down again, so
    carry as little as possible.  The collector leaves start-up objects
    alone from now on (no copy-on-write of their headers in sessions), and
    malloc gives back the free memory start-up left behind (compiling and
    importing)."""
    gc.collect()
    gc.freeze()
    try:
        accounts.libc().malloc_trim(0)
    except AttributeError:  # not glibc
        pass


class Listener:
    def __init__(self, cfg: Config, config_path: str | None, overrides: Sequence[str]) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.overrides = list(overrides)
        self.socks: list[socket.socket] = []
        self.children: dict[int, str] = {}
        self._base_nice = 0
        self.tlog = TransferLog(cfg)
        self._stop = False
        self._reload = False
        # Import and set up once here rather than in every forked session.
        preload_lazy_modules()
        if cfg.ssl_enable:
            tls_module()
        _quiet_pyftpdlib()
        accounts.libc()
        accounts.preload_nss(["root", cfg.ftp_username or "ftp"])
        self.pam_modules: PamModules | None = None
        self._load_pam(cfg)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def _load_pam(self, cfg: Config) -> None:
        """Bind libpam and keep the service's modules loaded (see PamModules)."""
        if not cfg.local_enable:
            if self.pam_modules is not None:
                self.pam_modules.close()
                self.pam_modules = None
            return
        accounts.prefault_possible()  # decided once, inherited by sessions
        # Binds libpam once; every forked session inherits the bindings.
        try:
            accounts.pam_authenticator()
        except (ImportError, OSError):
            pass  # each login then fails (and says why in the session's error log)
        service = cfg.pam_service_name or "ftp"
        if self.pam_modules is not None and self.pam_modules.service == service:
            return
        if self.pam_modules is not None:
            self.pam_modules.close()
        self.pam_modules = PamModules(service)

    # --- sockets

    @staticmethod
    def _bind_key(cfg: Config) -> tuple:
        return (cfg.listen, cfg.listen_ipv6, cfg.listen_address, cfg.listen_address6,
                cfg.listen_port)

    def open_sockets(self) -> None:
        cfg = self.cfg
        socks = []
        if cfg.listen:
            family, host = socket.AF_INET, cfg.listen_address or "0.0.0.0"
        else:
            family, host = socket.AF_INET6, cfg.listen_address6 or "::"
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host == "::":
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            s.bind((host, cfg.listen_port))
        except OSError as err:
            s.close()
            raise ConfigError(f"could not bind listening IP address {host} port "
                              f"{cfg.listen_port}: {err.strerror}") from None
        s.listen(128)
        s.setblocking(False)
        socks.append(s)
        for old in self.socks:
            old.close()
        self.socks = socks

    @property
    def port(self) -> int:
        return self.socks[0].getsockname()[1]

    # --- signals

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stop = True
        elif signum == signal.SIGHUP:
            self._reload = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _install_signals(self) -> None:
        # No SIGCHLD handler: exited sessions are reaped each time the loop
        # wakes (before any accept, so max_clients counts are current, and at
        # least every REAP_INTERVAL).  Waking the listener for every session
        # that ends would cost it a pass through its loop, and copy-on-write
        # faults on the pages that pass touches, per login.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    # --- main loop

    def serve_forever(self) -> int:
        self._install_signals()
        self._base_nice = os.getpriority(os.PRIO_PROCESS, 0)
        if os.geteuid() == 0:
            # Accept-and-fork is the one serial step; under a login storm it
            # must not wait behind whatever shares its CPU group.  Sessions
            # go back to the normal priority.
            try:
                os.setpriority(os.PRIO_PROCESS, 0, max(-20, self._base_nice - LISTENER_BOOST))
            except OSError:
                pass
        _compact_for_fork()
        while not self._stop:
            try:
                ready, _, _ = select.select([*self.socks, self._wake_r], [], [], REAP_INTERVAL)
            except InterruptedError:
                ready = []
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            self._reap()
            if self._reload:
                self._reload = False
                self.reload()
            for s in ready:
                if s is not self._wake_r and not self._stop:
                    self._accept(s)  # type: ignore[arg-type]
        self.shutdown()
        return 0

    def _reap(self) -> None:
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.pop(pid, None)

    def _accept(self, lsock: socket.socket) -> None:
        # Per connection the listener handles a bare descriptor; the socket
        # object is made in the session process.  After every fork, each page
        # the listener then writes faults (and is copied while a session
        # still shares it), so its work between two forks is kept small:
        # building and closing a Python socket object here (socket.py,
        # enum conversions) was about half of the listener's ~100 page
        # faults per login.
        for _ in range(64):
            try:
                fd, addr = lsock._accept()  # what socket.accept() wraps in an object
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED):
                    time.sleep(0.05)
                    return
                raise
            ip = addr[0]
            cfg = self.cfg
            if cfg.max_clients and len(self.children) >= cfg.max_clients:
                self._refuse(lsock, fd, MSG_MAX_CLIENTS)
                continue
            if cfg.max_per_ip and sum(1 for v in self.children.values() if v == ip) >= cfg.max_per_ip:
                self._refuse(lsock, fd, MSG_MAX_PER_IP)
                continue
            self._spawn(lsock, fd, ip)

    def _refuse(self, lsock: socket.socket, fd: int, msg: str) -> None:
        conn = socket.socket(lsock.family, lsock.type, lsock.proto, fileno=fd)
        if not self.cfg.implicit_ssl:
            try:
                conn.setblocking(False)
                conn.send(msg.encode() + b"\r\n")
            except OSError:
                pass
        conn.close()

    def _spawn(self, lsock: socket.socket, fd: int, ip: str) -> None:
        try:
            pid = os.fork()
        except OSError:
            os.close(fd)
            return
        if pid:
            self.children[pid] = ip
            os.close(fd)
            return
        # --- session process
        code = 0
        try:
            conn = socket.socket(lsock.family, lsock.type, lsock.proto, fileno=fd)
            signal.set_wakeup_fd(-1)
            if os.getpriority(os.PRIO_PROCESS, 0) != self._base_nice:
                os.setpriority(os.PRIO_PROCESS, 0, self._base_nice)
            # Its own session, as vsftpd's: no terminal signals from the
            # listener's, and (with autogroup scheduling) its own CPU share
            # rather than one share split among every session.
            try:
                os.setsid()
            except OSError:
                pass
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            for s in self.socks:
                s.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            conn.setblocking(True)
            run_session(self.cfg, conn, self.tlog)
        except BaseException:  # noqa: BLE001 - the session process must always exit here
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stderr.flush()
            finally:
                os._exit(code)

    def reload(self) -> None:
        """SIGHUP: re-read the config; new sessions get it, running ones keep theirs."""
        try:
            new = load(self.config_path, self.overrides)
            if new.ssl_enable:
                tls_module().make_context(new)
            prelogin.check_config(new)
        except ConfigError as err:
            print(f"500 OOPS: {err} (reload ignored)", file=sys.stderr, flush=True)
            return
        rebind = self._bind_key(new) != self._bind_key(self.cfg)
        old = self.cfg
        self.cfg = new
        if rebind:
            try:
                self.open_sockets()
            except ConfigError as err:
                self.cfg = old
                print(f"500 OOPS: {err} (reload ignored)", file=sys.stderr, flush=True)
                return
        self.tlog.close()
        self.tlog = TransferLog(new)
        self._load_pam(new)
        _compact_for_fork()  # the new configuration's objects too

    def shutdown(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.children.pop(pid, None)
        deadline = time.monotonic() + 3.0
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()
        self.tlog.close()
        if self.pam_modules is not None:
            self.pam_modules.close()
            self.pam_modules = None


def serve_inetd(cfg: Config) -> int:
    """listen=NO and listen_ipv6=NO: one session on the socket given as stdin."""
    conn = socket.socket(fileno=os.dup(0))
    run_session(cfg, conn, TransferLog(cfg))
    return 0
