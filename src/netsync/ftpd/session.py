"""One FTP session: pyftpdlib's protocol handler with vsftpd's rules added.

An instance lives in its own process (forked by server.py).  Run as root
for plain FTP, the pre-login dialogue is served by an unprivileged, chrooted
child (prelogin.py) and the root process takes over once a login is
granted; otherwise (TLS, or no root) one process runs it all with the
server's privileges.  A successful login chroots where configured and drops
permanently to the user's uid and groups.

Nothing here imports pyOpenSSL: with ssl_enable=NO the server never loads
it (see tlsimport.py).  TLS sessions are tls.TLSSession, this class with
pyftpdlib's TLS handler mixed in.
"""

from __future__ import annotations

import asynchat
import errno
import itertools
import os
import random
import socket
import stat
import time
from typing import TYPE_CHECKING, Any

from pyftpdlib.exceptions import _FileReadWriteError, _RetryError
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers.ftp.control import FTPHandler
from pyftpdlib.handlers.ftp.data import DTPHandler, ThrottledDTPHandler
from pyftpdlib.handlers.ftp.dispatchers import ActiveDTP, PassiveDTP
from pyftpdlib.handlers.ftp.producers import BufferedIteratorProducer
from pyftpdlib.ioloop import Acceptor
from pyftpdlib.utils import is_ssl_sock

from . import accounts, filters, prelogin
from .config import Config, load_user_config
from .logs import TransferLog

if TYPE_CHECKING:
    from OpenSSL import SSL

OOPS_WRITABLE_ROOT = "500 OOPS: vsftpd: refusing to run with writable root inside chroot()"
MAX_LINE = 4096  # vsftpd's VSFTP_MAX_COMMAND_LINE

# pyftpdlib wording -> vsftpd wording, for replies clients or people may match on.
_REPLY_TEXT = {
    "530 Log in with USER and PASS first.": "530 Please login with USER and PASS.",
    "550 Not enough privileges.": "550 Permission denied.",
    "125 Data connection already open. Transfer starting.": "150 Ok to send data.",
    "150 File status okay. About to open data connection.": "150 Ok to send data.",
    "421 Data connection timed out.": "421 Data timeout. Reconnect. Sorry.",
    "421 Control connection timed out.": "421 Timeout.",
    "200 PBSZ=0 successful.": "200 PBSZ set to 0.",
    "200 Protection set to Private": "200 PROT now Private.",
    "200 Protection set to Clear": "200 PROT now Clear.",
    "200 I successfully did nothing'.": "200 NOOP ok.",
    "200 Active data connection established.": "200 PORT command successful. Consider using PASV.",
    "421 Active data channel timed out.": "425 Failed to establish connection.",
}

# Commands whose argument names a file or directory (deny_file applies).
_PATH_CMDS = frozenset({
    "CWD", "XCWD", "CDUP", "XCUP", "MKD", "XMKD", "RMD", "XRMD", "DELE", "RNFR", "RNTO",
    "RETR", "STOR", "APPE", "STOU", "SIZE", "MDTM", "MFMT", "MLSD", "MLST", "STAT", "SITE",
})
_DATA_CMDS = frozenset({"LIST", "NLST", "MLSD", "RETR", "STOR", "STOU", "APPE"})
_LIST_CMDS = frozenset({"LIST", "NLST", "MLSD"})


_preloaded = False


def preload_lazy_modules() -> None:
    """Import what Python and pyftpdlib load lazily, while the files are still
    reachable: after a chroot the interpreter cannot import anything."""
    global _preloaded
    if _preloaded:
        return
    _preloaded = True
    time.strptime("20000101000000", "%Y%m%d%H%M%S")  # MFMT -> _strptime
    for enc in ("latin-1", "ascii", "idna", "utf-16", "utf-32"):
        "x".encode(enc)
    import datetime  # noqa: F401
    import glob  # noqa: F401
    import tempfile  # noqa: F401
    import traceback  # noqa: F401

    datetime.datetime.now(datetime.UTC).astimezone()


class _FamilyOnly:
    def __init__(self, family: int) -> None:
        self.family = family


class ServerStub:
    """The few attributes pyftpdlib's handlers read from their server object;
    the real limits (max_clients, max_per_ip) are enforced by the listener."""

    backlog = 5

    def __init__(self, family: int) -> None:
        self.ip_map: list[str] = []
        self.socket = _FamilyOnly(family)  # pyftpdlib reads only .family

    def _accept_new_cons(self) -> bool:
        return True


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_HALF_YEAR = 60 * 60 * 24 * 182  # vsftpd's cut-off between "HH:MM" and "  YYYY"


class VsFS(AbstractedFS):
    """vsftpd's listing format (numeric owners, "ftp" with hide_ids, UTC
    unless use_localtime), hide_file, and uploads created with
    file_open_mode (then masked by the umask), exclusively for anonymous
    users, and handed to chown_uploads' owner."""

    cmd_channel: Session

    def get_user_by_uid(self, uid: int) -> str:
        return "ftp" if self.cmd_channel.cfg.hide_ids else str(uid)

    def get_group_by_gid(self, gid: int) -> str:
        return "ftp" if self.cmd_channel.cfg.hide_ids else str(gid)

    def listdir(self, path: str) -> list[str]:
        names = os.listdir(path)
        hide = self.cmd_channel.cfg.hide_file
        if hide:
            names = [n for n in names if not filters.matches(n, hide)]
        return names

    def format_list(self, basedir: str, listing: list[str], ignore_err: bool = True) -> Any:
        """Lines as vsftpd's ls.c builds them (a 4-wide link count, 8-wide
        owner, group and size columns)."""
        cfg = self.cmd_channel.cfg
        timefunc = time.localtime if cfg.use_localtime else time.gmtime
        now = time.time()
        enc, errors = self.cmd_channel.encoding, self.cmd_channel.unicode_errors
        for name in listing:
            path = os.path.join(basedir, name)
            try:
                st = os.lstat(path)
            except OSError:
                if ignore_err:
                    continue
                raise
            try:
                tm = timefunc(st.st_mtime)
            except (OverflowError, OSError, ValueError):
                tm = timefunc(0)
            if abs(now - st.st_mtime) > _HALF_YEAR:
                date = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:02d}  {tm.tm_year}"
            else:
                date = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d}"
            shown = name
            if stat.S_ISLNK(st.st_mode):
                try:
                    shown = f"{name} -> {os.readlink(path)}"
                except OSError:
                    pass
            line = (f"{stat.filemode(st.st_mode)} {st.st_nlink:>4} "
                    f"{self.get_user_by_uid(st.st_uid):<8} {self.get_group_by_gid(st.st_gid):<8} "
                    f"{st.st_size:>8} {date} {shown}\r\n")
            yield line.encode(enc, errors)

    def format_mlsx(self, basedir: str, listing: list[str], perms: str, facts: Any,
                    ignore_err: bool = True) -> Any:
        # RFC 3659: MLSx times are always UTC, whatever use_localtime says.
        ch = self.cmd_channel
        saved, ch.use_gmt_times = ch.use_gmt_times, True
        inner = super().format_mlsx(basedir, listing, perms, facts, ignore_err)
        try:
            first = next(inner)  # pyftpdlib reads use_gmt_times on its first step
        except StopIteration:
            return
        finally:
            ch.use_gmt_times = saved
        yield first
        yield from inner

    def open(self, filename: str, mode: str) -> Any:
        ch = self.cmd_channel
        cfg = ch.cfg
        perm = cfg.file_open_mode & 0o7777
        writing = "r" not in mode or "+" in mode
        # vsftpd: an anonymous user may only create new files, never
        # overwrite or append, unless anon_other_write_enable.
        exclusive = writing and ch.anonymous and not cfg.anon_other_write_enable

        def opener(p: str, flags: int) -> int:
            if exclusive:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            return os.open(p, flags | os.O_CLOEXEC, perm)

        fobj = open(filename, mode, opener=opener)
        if writing:
            ch.chown_upload(fobj.fileno())
        return fobj

    def mkstemp(self, suffix: str = "", prefix: str = "", dir: str | None = None,  # noqa: A002
                mode: str = "wb") -> Any:
        fobj = super().mkstemp(suffix, prefix, dir, mode)
        self.cmd_channel.chown_upload(fobj.fileno())
        return fobj


class Perms:
    """pyftpdlib's authorizer interface answered from vsftpd's write switches."""

    def __init__(self, cfg: Config, anonymous: bool) -> None:
        self.cfg = cfg
        self.anonymous = anonymous

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        c = self.cfg
        if perm in "elr":
            return True
        if not c.write_enable:
            return False
        if not self.anonymous:
            if perm == "M":
                return bool(c.chmod_enable)
            if perm == "T":
                return bool(c.mdtm_write)
            return True
        if perm == "w":
            return bool(c.anon_upload_enable)
        if perm == "m":
            return bool(c.anon_mkdir_write_enable)
        if perm in "adfT":
            return bool(c.anon_other_write_enable)
        return False  # SITE CHMOD is never allowed to anonymous users

    def get_perms(self, username: str) -> str:
        return "".join(p for p in "elradfmwMT" if self.has_perm(username, p))

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        """Privileges were dropped for good at login; nothing to switch."""

    def terminate_impersonation(self, username: str) -> None:
        """See impersonate_user."""


class _DataTimeout:
    cmd_channel: Session

    def __init__(self, sock: socket.socket, cmd_channel: Session) -> None:
        super().__init__(sock, cmd_channel)  # type: ignore[call-arg]
        self.timeout = cmd_channel.cfg.data_connection_timeout


SENDFILE_CHUNK = 1 << 22  # per sendfile(2) call; the socket takes what fits
SENDFILE_BURST = 1 << 26  # per write event, so the control channel stays served


class _BulkReceive(DTPHandler):
    """TLS uploads: pyftpdlib reads one TLS record (at most 16 KiB) per
    event-loop pass; read until OpenSSL has nothing buffered, up to
    RECV_BURST records, each written out before the next (a recv() that sees
    the end of the stream closes the channel and its file).  Plain uploads
    keep pyftpdlib's single 64 KiB read, which measured faster."""

    def handle_read(self) -> None:
        if not is_ssl_sock(self.socket):
            DTPHandler.handle_read(self)
            return
        for _ in range(RECV_BURST):
            try:
                chunk = self.recv(self.ac_in_buffer_size)
            except _RetryError:
                return
            except OSError:
                self.handle_error()
                return
            self.tot_bytes_received += len(chunk)
            if not chunk:
                self.transfer_finished = True
                return
            if self._data_wrapper is not None:
                chunk = self._data_wrapper(chunk)
            try:
                self.file_obj.write(chunk)
            except OSError as err:
                raise _FileReadWriteError(err) from err

    handle_read_event = handle_read


RECV_BURST = 64


class DataChannel(_DataTimeout, _BulkReceive):
    def initiate_sendfile(self) -> None:
        """pyftpdlib sends 64 KiB per trip through the event loop; vsftpd one
        sendfile() for the whole file.  Keep the kernel busy: call sendfile()
        until the socket is full, then wait for the next write event."""
        sent_now = 0
        while sent_now < SENDFILE_BURST:
            try:
                sent = os.sendfile(self._fileno, self._filefd, self._offset, SENDFILE_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                if sent_now:
                    return  # let pyftpdlib's own code see the error on the next event
                super().initiate_sendfile()
                return
            if sent == 0:
                self.discard_buffers()
                self.handle_close()
                return
            self._offset += sent
            self.tot_bytes_sent += sent
            sent_now += sent


class ThrottledDataChannel(_DataTimeout, ThrottledDTPHandler):
    pass


class ActiveConnector(ActiveDTP):
    def __init__(self, ip: str, port: int, cmd_channel: Session) -> None:
        self.timeout = cmd_channel.cfg.connect_timeout
        super().__init__(ip, port, cmd_channel)


def _pasv_range(cfg: Config) -> tuple[int, int]:
    """vsftpd's clamping: [1024, 65535], narrowed by pasv_min_port/pasv_max_port."""
    lo, hi = 1024, 65535
    if lo < cfg.pasv_min_port <= hi:
        lo = cfg.pasv_min_port
    if lo <= cfg.pasv_max_port < hi:
        hi = cfg.pasv_max_port
    return lo, hi


class PassiveListener(PassiveDTP):
    """PASV/EPSV: a port from the configured range, pasv_address in the reply,
    and connections only from the control connection's peer."""

    def __init__(self, cmd_channel: Session, extmode: bool = False) -> None:
        cfg = cmd_channel.cfg
        self.cmd_channel = cmd_channel
        self.log = cmd_channel.log
        self.log_exception = cmd_channel.log_exception
        self.timeout = cfg.accept_timeout
        Acceptor.__init__(self, ioloop=cmd_channel.ioloop)
        local_ip = cmd_channel.socket.getsockname()[0]
        self.create_socket(cmd_channel.socket.family, socket.SOCK_STREAM)
        lo, hi = _pasv_range(cfg)
        for _ in range(100):
            try:
                self.bind((local_ip, random.randint(lo, hi)))
                break
            except OSError as err:
                if err.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
        else:
            self.bind((local_ip, 0))
        self.listen(1)
        port = self.socket.getsockname()[1]
        if extmode:
            cmd_channel.respond(f"229 Entering Extended Passive Mode (|||{port}|)")
        else:
            ip = cmd_channel.pasv_ip or local_ip
            if ip.startswith("::ffff:"):
                ip = ip[7:]
            cmd_channel.respond(
                f"227 Entering Passive Mode ({ip.replace('.', ',')},{port // 256},{port % 256})."
            )
        if self.timeout:
            self.call_later(self.timeout, self.handle_timeout)

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        ch = self.cmd_channel
        if not ch.connected:
            self.close()
            return
        if addr[0] != ch.remote_ip and not ch.cfg.pasv_promiscuous:
            try:
                sock.close()
            except OSError:
                pass
            ch.respond("425 Security: Bad IP connecting.")
            self.close()
            return
        self.close()
        handler = ch.dtp_handler(sock, ch)
        if handler.connected:
            ch.data_channel = handler
            ch._on_dtp_connection()

    def handle_timeout(self) -> None:
        if self.cmd_channel.connected:
            self.cmd_channel.respond("425 Failed to establish connection.")
        self.close()


class Session(FTPHandler):
    """Per-process settings are class attributes, set by server.run_session()."""

    cfg: Config = Config()
    tlog: TransferLog | None = None
    # Set in the unprivileged pre-login process (prelogin.py): logins are
    # requested from the root session process over this socket pair.
    priv: socket.socket | None = None
    tls_ctx: SSL.Context | None = None
    banner_lines: list[str] = []
    encoding = "utf-8"
    unicode_errors = "surrogateescape"
    use_gmt_times = True
    auth_failed_timeout = 0
    dtp_handler: type[DTPHandler] = DataChannel
    throttled_dtp: type[DTPHandler] = ThrottledDataChannel
    passive_dtp = PassiveListener
    active_dtp = ActiveConnector
    abstracted_fs = VsFS
    # pyftpdlib's TLS handler state, for the plain class (tls.TLSSession sets them).
    _ssl_accepting = False
    _pbsz = False
    _prot = False
    proto_cmds = FTPHandler.proto_cmds.copy()
    proto_cmds.update({
        # Known without TLS too, as vsftpd's: refused when ssl_enable=NO.
        # The argument is checked by the handlers, with vsftpd's replies.
        "AUTH": dict(perm=None, auth=False, arg=None, help="Syntax: AUTH <SP> TLS|SSL."),
        "PBSZ": dict(perm=None, auth=False, arg=None, help="Syntax: PBSZ <SP> 0."),
        "PROT": dict(perm=None, auth=False, arg=None, help="Syntax: PROT <SP> [C|P]."),
        "CCC": dict(perm=None, auth=False, arg=False, help="Syntax: CCC (refused)."),
        "HOST": dict(perm=None, auth=False, arg=True, help="Syntax: HOST <SP> host-name."),
    })

    def __init__(self, conn: socket.socket, server: Any, ioloop: Any = None) -> None:
        self.anonymous = False
        self.anon_password = ""
        self.login_fails = 0
        self.pasv_ip: str | None = None
        self._requested_type = "i"
        self._skip_line = False
        self._port_verb = "PORT"
        self._xfer_start = 0.0
        self._storing = False
        self._last_data_cmd = ""
        self.chown_broker: accounts.ChownBroker | None = None
        self.authorizer = Perms(self.cfg, False)
        self.timeout = self.cfg.idle_session_timeout or None
        super().__init__(conn, server, ioloop)
        self._current_type = "i"
        self._extra_feats = ["AUTH TLS", "PBSZ", "PROT"] if self.cfg.ssl_enable else []
        self.pasv_ip = self._resolve_pasv_address()

    # --- setup helpers

    def _resolve_pasv_address(self) -> str | None:
        addr = self.cfg.pasv_address
        if not addr:
            return None
        if self.cfg.pasv_addr_resolve:
            try:
                return socket.gethostbyname(addr)
            except OSError:
                return None
        return addr

    def handle(self) -> None:
        if self.tlog is not None:
            self.tlog.vsftpd(f'CONNECT: Client "{self.remote_ip}"')
        if self.cfg.implicit_ssl and self.tls_ctx is not None:
            self.secure_connection(self.tls_ctx)  # type: ignore[attr-defined]  # tls.TLSSession
        for line in self.banner_lines[:-1]:
            self.push(f"220-{line}\r\n")
        self.respond(f"220 {self.banner_lines[-1] if self.banner_lines else ''}".rstrip() + "")

    # --- wire-level hardening

    def push(self, data: str) -> None:  # type: ignore[override]
        asynchat.async_chat.push(self, data.encode(self.encoding, "surrogateescape"))

    def respond(self, resp: str, logfun: Any = None) -> None:  # type: ignore[override]
        resp = _REPLY_TEXT.get(resp, resp)
        if self._last_data_cmd in _LIST_CMDS:
            if resp.startswith("150 "):
                resp = "150 Here comes the directory listing."
            elif resp == "226 Transfer complete.":
                resp = "226 Directory send OK."
        if self._storing and resp.startswith("550 "):
            resp = "553 Could not create file."  # vsftpd's reply for any failed create
        if resp.startswith('500 Command "') and resp.endswith('" not understood.'):
            resp = "500 Unknown command." if self.authenticated else "530 Please login with USER and PASS."
        self._last_response = resp
        self.push(resp + "\r\n")

    def collect_incoming_data(self, data: bytes) -> None:
        # Over-long lines are dropped whole and answered once, as vsftpd does,
        # instead of pyftpdlib's one 500 per 2 KiB received.
        if self._skip_line:
            return
        self._in_buffer.append(data)
        self._in_buffer_len += len(data)
        if self._in_buffer_len > MAX_LINE:
            self._in_buffer = []
            self._in_buffer_len = 0
            self._skip_line = True

    def found_terminator(self) -> None:
        if self._skip_line:
            self._skip_line = False
            self._in_buffer = []
            self._in_buffer_len = 0
            self.respond("500 Input line too long.")
            return
        super().found_terminator()

    def handle_timeout(self) -> None:
        if self._ssl_accepting:
            self.close()
            return
        self.respond("421 Timeout.")
        self.close_when_done()

    # --- command dispatch

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        if not self.authenticated:
            super().pre_process_command(line, cmd, arg)
            return
        c = self.cfg
        if not filters.command_permitted(cmd, c.cmds_allowed, c.cmds_denied):
            self.respond("550 Permission denied.")
            return
        if cmd in ("LIST", "NLST"):
            self._list_command(cmd, arg)
            return
        if c.deny_file and cmd in _PATH_CMDS and self._denied(cmd, arg):
            self.respond("550 Permission denied.")
            return
        super().pre_process_command(line, cmd, arg)

    def _denied(self, cmd: str, arg: str) -> bool:
        """deny_file, applied to the path argument of cmd."""
        if cmd == "SITE":
            parts = arg.split(" ", 2)
            if len(parts) < 3 or parts[0].upper() != "CHMOD":
                return False
            arg = parts[2]
        elif cmd == "MFMT":
            arg = arg.partition(" ")[2]
        elif cmd in ("CDUP", "XCUP"):
            arg = ".."
        if not arg and cmd in ("STOU", "MLSD", "MLST", "STAT"):
            return False
        ftp_path = self.fs.fs2ftp(self.fs.ftp2fs(arg or self.fs.cwd))
        return filters.path_matches(arg, ftp_path, self.cfg.deny_file)

    def _list_command(self, cmd: str, arg: str) -> None:
        """LIST/NLST as vsftpd parses them: a leading `-word` is ls options
        (only R, with ls_recurse_enable, and a matter), the rest a path."""
        opts = ""
        if arg.startswith("-"):
            opts, _, arg = arg.partition(" ")
        if arg and self.cfg.deny_file and self._denied(cmd, arg):
            self.respond("550 Permission denied.")
            return
        path = self.fs.ftp2fs(arg or self.fs.cwd)
        if not self.fs.validpath(path):
            self.respond("550 Permission denied.")
            return
        self.process_command(cmd, path, opts=opts, label=arg or ".")

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        if self.authenticated and cmd in _DATA_CMDS:
            if cmd in _LIST_CMDS and not self.cfg.dirlist_enable:
                self.respond("550 Permission denied.")
                return
            if cmd == "RETR" and not self.cfg.download_enable:
                self.respond("550 Permission denied.")
                return
            if self._dtp_acceptor is None and self._dtp_connector is None and self.data_channel is None:
                self.respond("425 Use PORT or PASV first.")
                return
            if self._data_tls_required() and not self._prot:
                self.respond("522 Data connections must be encrypted.")
                return
            self._xfer_start = time.time()
            self._last_data_cmd = cmd
        FTPHandler.process_command(self, cmd, *args, **kwargs)

    def _data_tls_required(self) -> bool:
        c = self.cfg
        if not c.ssl_enable:
            return False
        return bool(c.force_anon_data_ssl if self.anonymous else c.force_local_data_ssl)

    def _control_secure(self) -> bool:
        return is_ssl_sock(self.socket)

    # --- TLS commands

    def ftp_AUTH(self, line: str) -> None:
        if not self.cfg.ssl_enable or self.tls_ctx is None:
            self._no_tls(known=False)
            return
        if self._control_secure() or self.authenticated:
            # vsftpd knows AUTH only before login, on a plaintext connection.
            self._no_tls(known=False)
            return
        if line.upper() not in ("TLS", "TLS-C", "SSL", "TLS-P"):
            self.respond("504 Unknown AUTH type.")
            return
        self.respond("234 Proceed with negotiation.")
        # Anything the client sent after AUTH in the same packet was sent in
        # the clear and must not be executed as if it came over TLS.
        self.ac_in_buffer = b""
        self._in_buffer = []
        self._in_buffer_len = 0
        self.secure_connection(self.tls_ctx)  # type: ignore[attr-defined]  # tls.TLSSession

    def _no_tls(self, known: bool) -> None:
        """vsftpd's replies to a TLS command it does not take here (ssl_enable=NO, or
        AUTH/CCC on a TLS connection): before login all are "please login"; after
        it PBSZ and PROT are known but refused, AUTH and CCC unknown."""
        if not self.authenticated:
            self.respond("530 Please login with USER and PASS.")
        else:
            self.respond("550 Permission denied." if known else "500 Unknown command.")

    def ftp_PBSZ(self, line: str) -> None:
        if not self.cfg.ssl_enable:
            self._no_tls(known=True)
        elif not self._control_secure():
            self.respond("503 PBSZ needs a secure connection.")
        else:  # vsftpd takes any size, and answers with the only one TLS has
            self._pbsz = True
            self.respond("200 PBSZ set to 0.")

    def ftp_PROT(self, line: str) -> None:
        arg = line.upper()
        if not self.cfg.ssl_enable:
            self._no_tls(known=True)
        elif not self._control_secure():
            self.respond("503 PROT needs a secure connection.")
        elif arg in ("C", "P"):  # vsftpd does not insist on PBSZ first
            self._prot = arg == "P"
            self.respond("200 PROT now Private." if self._prot else "200 PROT now Clear.")
        elif arg in ("S", "E"):
            self.respond("536 PROT not supported.")
        else:
            self.respond("504 PROT not recognized.")

    def ftp_CCC(self, line: str) -> None:
        # Refused, as vsftpd does (it does not know the command): reverting to
        # plaintext would let a man in the middle inject commands.
        self._no_tls(known=False)

    def ftp_HOST(self, line: str) -> None:
        if self.authenticated:
            self.respond("503 HOST must be sent before USER.")
        else:
            self.respond("220 Host accepted.")

    # --- login

    def ftp_USER(self, line: str) -> None:
        c = self.cfg
        if self.authenticated:
            self.respond("530 Can't change to another user.")
            return
        anon = bool(c.anonymous_enable) and line.lower() in ("ftp", "anonymous")
        if not c.local_enable and not anon:
            self.respond("530 This FTP server is anonymous only.")
            return
        secure = self._control_secure()
        if anon and secure and not c.allow_anon_ssl:
            self.respond("530 Anonymous sessions may not use encryption.")
            return
        if c.ssl_enable and not anon and not secure and c.force_local_logins_ssl:
            self.respond("530 Non-anonymous sessions must use encryption.")
            return
        if c.ssl_enable and anon and not secure and c.force_anon_logins_ssl:
            self.respond("530 Anonymous sessions must use encryption.")
            return
        if not anon and accounts.userlist_refuses(c, line):
            self.username = ""
            self._login_failed("530 Permission denied.")
            return
        self.username = line
        self.anonymous = anon
        if anon and c.no_anon_password:
            if self.priv is not None:
                self._request_login("")
                return
            self._login_anonymous("")
            return
        self.respond("331 Please specify the password.")

    def ftp_PASS(self, line: str) -> None:
        if self.authenticated:
            self.respond("230 Already logged in.")
            return
        if not self.username:
            self.respond("503 Login with USER first.")
            return
        if self.anonymous:
            if self.cfg.deny_email_enable and line in accounts.read_name_list(self.cfg.banned_email_file):
                self._login_failed("530 Login incorrect.")
                return
            if self.priv is not None:
                self._request_login(line)
                return
            self._login_anonymous(line)
            return
        if self.priv is not None:
            self._request_login(line)
            return
        user = self.username
        ok = False
        try:
            ok = accounts.pam_authenticate(self.cfg.pam_service_name or "ftp", user, line)
        except Exception as err:  # a broken PAM stack must not kill the session
            self.logerror(f"PAM error: {err!r}")
        ident = accounts.lookup(user) if ok else None
        if ident is None:
            if self.tlog is not None:
                self.tlog.vsftpd(f'FAIL LOGIN: Client "{self.remote_ip}"', user)
            self._login_failed("530 Login incorrect.")
            return
        self._login_local(ident)

    def _request_login(self, password: str) -> None:
        """Pre-login process: ask the root side to log the user in.  Granted,
        it serves the connection from here on and this process just ends."""
        assert self.priv is not None
        pending = bytes(self.ac_in_buffer)  # pipelined input read past this command
        msg = prelogin.encode_request(self.anonymous, self.username, password, pending)
        answer = b""
        if msg is not None:
            try:
                self.priv.send(msg)
                answer = self.priv.recv(1)
            except OSError:
                answer = b""
        if answer == b"O":
            os._exit(0)  # without a byte more on the connection: it is not ours now
        if answer != b"F":
            self.close()
            return
        self._login_failed("530 Login incorrect.", delay=False)  # the root side waited

    def take_over(self, user: str, anonymous: bool, password: str,
                  ident: accounts.Identity | None, pending: bytes) -> None:
        """Root session process, after the pre-login process had this login
        granted: log in as it would have, then go on with what the client
        had already sent."""
        # This handler was built before the pre-login dialogue: the idle
        # timeout counts from now, as for a handler built at this point.
        if self._idler is not None and not self._idler.cancelled:
            self._idler.reset()
        self.username = user
        self.anonymous = anonymous
        if anonymous:
            self._login_anonymous(password)
        elif ident is not None:
            self._login_local(ident)
        self.ac_in_buffer = pending
        term = self.get_terminator()
        while self.ac_in_buffer and self.connected:
            idx = self.ac_in_buffer.find(term)
            if idx < 0:
                break  # a partial line: asynchat completes it with the next read
            if idx:
                self.collect_incoming_data(self.ac_in_buffer[:idx])
            self.ac_in_buffer = self.ac_in_buffer[idx + len(term):]
            self.found_terminator()

    def _login_failed(self, reply: str, delay: bool = True) -> None:
        if delay and self.cfg.delay_failed_login:
            time.sleep(min(self.cfg.delay_failed_login, 60))
        self.login_fails += 1
        self.username = ""
        self.anonymous = False
        self.respond(reply)
        if self.cfg.max_login_fails and self.login_fails >= self.cfg.max_login_fails:
            self.close_when_done()

    def _oops(self, text: str) -> None:
        self.respond(text)
        self.close_when_done()

    def _login_anonymous(self, password: str) -> None:
        c = self.cfg
        if c.user_config_dir:
            c = load_user_config(c, c.user_config_dir, self.username)
        ident = accounts.lookup(c.ftp_username or "ftp")
        root = c.anon_root or (ident.home if ident else None)
        if root is None:
            self._oops(f"500 OOPS: cannot locate user entry:{c.ftp_username}")
            return
        if ident is None:
            if os.geteuid() == 0:
                self._oops(f"500 OOPS: cannot locate user entry:{c.ftp_username}")
                return
            ident = accounts.Identity("ftp", os.getuid(), os.getgid(), root)
        self.anon_password = password
        self._start_session(c, ident, root=root, chroot=True, cwd="/", umask=c.anon_umask,
                            anonymous=True)

    def _login_local(self, ident: accounts.Identity) -> None:
        c = self.cfg
        if c.user_config_dir:
            c = load_user_config(c, c.user_config_dir, ident.name)
        start = c.local_root or ident.home
        if not os.path.isdir(start):
            self._oops(f"500 OOPS: cannot change directory:{start}")
            return
        chroot = accounts.wants_chroot(c, ident.name)
        if chroot:
            self._start_session(c, ident, root=start, chroot=True, cwd="/", umask=c.local_umask,
                                anonymous=False)
        else:
            self._start_session(c, ident, root="/", chroot=False, cwd=os.path.normpath(start),
                                umask=c.local_umask, anonymous=False)

    def _start_session(
        self, c: Config, ident: accounts.Identity, *, root: str, chroot: bool, cwd: str,
        umask: int, anonymous: bool,
    ) -> None:
        root = os.path.realpath(root)
        if chroot and not c.allow_writeable_chroot and accounts.writable_by(root, ident):
            self._oops(OOPS_WRITABLE_ROOT)
            return
        real_chroot = chroot and os.geteuid() == 0
        if anonymous and c.chown_uploads and c.write_enable and os.geteuid() == 0:
            owner = accounts.lookup(c.chown_username or "root")
            if owner is None:
                self._oops(f"500 OOPS: cannot locate user entry:{c.chown_username}")
                return
            # Forked while still root: the one privileged helper a session keeps.
            self.chown_broker = accounts.ChownBroker(owner.uid, ident.uid)
        try:
            accounts.become(ident, root if real_chroot else None)
        except OSError as err:
            self._oops(f"500 OOPS: cannot change to user {ident.name}: {err.strerror}")
            return
        os.umask(umask & 0o777)
        self.cfg = c
        self.anonymous = anonymous
        self.use_gmt_times = not c.use_localtime  # MDTM, as vsftpd
        self.authorizer = Perms(c, anonymous)
        rate = c.anon_max_rate if anonymous else c.local_max_rate
        if rate:
            self.throttled_dtp.read_limit = rate  # type: ignore[attr-defined]
            self.throttled_dtp.write_limit = rate  # type: ignore[attr-defined]
            self.dtp_handler = self.throttled_dtp
        self.timeout = c.idle_session_timeout or None
        fs_root = "/" if real_chroot else root
        self.fs = self.abstracted_fs(fs_root, self)
        self.fs.cwd = cwd
        self.authenticated = True
        self.password = ""
        self.attempted_logins = 0
        if self.tlog is not None:
            detail = f', anon password "{self.anon_password}"' if anonymous else ""
            self.tlog.vsftpd(f'OK LOGIN: Client "{self.remote_ip}"{detail}', self.log_user)
        self.respond("230 Login successful.")

    @property
    def log_user(self) -> str:
        return "ftp" if self.anonymous else self.username

    # --- commands with vsftpd semantics

    def ftp_TYPE(self, line: str) -> None:
        t = line.upper().replace(" ", "")
        ascii_ok = self.cfg.ascii_upload_enable or self.cfg.ascii_download_enable
        if t in ("A", "AN", "L7"):
            self._requested_type = "a"
            self._current_type = "a" if ascii_ok else "i"
            self.respond("200 Switching to ASCII mode.")
        elif t in ("I", "L8"):
            self._requested_type = "i"
            self._current_type = "i"
            self.respond("200 Switching to Binary mode.")
        else:
            self.respond("500 Unrecognised TYPE command.")

    def ftp_PORT(self, line: str) -> None:
        if not self.cfg.port_enable:
            self.respond("550 Permission denied.")
            return
        self._port_verb = "PORT"
        super().ftp_PORT(line)

    def ftp_EPRT(self, line: str) -> None:
        if not self.cfg.port_enable:
            self.respond("550 Permission denied.")
            return
        self._port_verb = "EPRT"
        super().ftp_EPRT(line)

    def ftp_PASV(self, line: str) -> None:
        if not self.cfg.pasv_enable:
            self.respond("550 Permission denied.")
            return
        super().ftp_PASV(line)

    def ftp_EPSV(self, line: str) -> None:
        if not self.cfg.pasv_enable:
            self.respond("550 Permission denied.")
            return
        super().ftp_EPSV(line)

    def _make_eport(self, ip: str, port: int) -> None:
        remote = self.remote_ip[7:] if self.remote_ip.startswith("::ffff:") else self.remote_ip
        if not self.cfg.port_promiscuous and (ip != remote or port < 1024):
            # No FTP bounce: only the client itself, on an unprivileged port.
            self.respond(f"500 Illegal {self._port_verb} command.")
            return
        self._shutdown_connecting_dtp()
        if self.data_channel is not None:
            self.data_channel.close()
            self.data_channel = None
        self._dtp_connector = self.active_dtp(ip, port, self)

    def ftp_RETR(self, file: str) -> Any:
        if self.anonymous and self.cfg.anon_world_readable_only:
            try:
                st = os.stat(file)
            except OSError:
                st = None
            if st is None or not st.st_mode & stat.S_IROTH:
                self.respond("550 Failed to open file.")
                return None
        return super().ftp_RETR(file)

    # --- listings

    def _entries(self, path: str, opts: str) -> list[str]:
        """A directory's names as vsftpd lists them: dot files only with
        `-a` or force_dot_files, "." and ".." only with `-a`."""
        names = self.fs.listdir(path)
        if "a" in opts:
            names += [".", ".."]
        elif not self.cfg.force_dot_files:
            names = [n for n in names if not n.startswith(".")]
        names.sort()
        return names

    def _listing(self, path: str, opts: str, label: str, verbose: bool) -> Any:
        """LIST/NLST output; with `-R` (and ls_recurse_enable) vsftpd's
        recursive form: "DIR:" headers, a blank line between directories,
        depth first, symbolic links to directories not followed."""
        enc, errors = self.encoding, self.unicode_errors
        recurse = "R" in opts and bool(self.cfg.ls_recurse_enable)
        stack = [(path, label)]
        first = True
        while stack:
            real, shown = stack.pop()
            try:
                names = self._entries(real, opts)
            except OSError:
                if first:
                    raise
                continue  # vsftpd: unreadable subdirectories are skipped
            if recurse:
                yield ("" if first else "\r\n").encode() + f"{shown}:\r\n".encode(enc, errors)
            first = False
            if verbose:
                yield from self.fs.format_list(real, names)
            else:
                # vsftpd's NLST names carry the directory as it was asked for
                prefix = "" if shown == "." else shown if shown.endswith("/") else shown + "/"
                for n in names:
                    yield f"{prefix}{n}\r\n".encode(enc, errors)
            if recurse:
                subdirs = []
                for n in names:
                    if n in (".", ".."):
                        continue
                    try:
                        if stat.S_ISDIR(os.lstat(os.path.join(real, n)).st_mode):
                            subdirs.append(n)
                    except OSError:
                        pass
                stack.extend((os.path.join(real, n), f"{shown}/{n}") for n in reversed(subdirs))

    def _send_listing(self, cmd: str, path: str, opts: str, label: str) -> str | None:
        verbose = cmd == "LIST"
        chunks: Any = iter(())
        try:
            if self.fs.isdir(path):
                gen = self._listing(path, opts, label, verbose)
                head = next(gen, b"")  # surfaces an unreadable directory here
                chunks = itertools.chain([head], gen)
            else:
                self.fs.lstat(path)
                basedir, name = os.path.split(path)
                if filters.matches(name, self.cfg.hide_file):
                    raise FileNotFoundError(path)  # hidden even when named
                chunks = (self.fs.format_list(basedir, [name]) if verbose
                          else iter([f"{label}\r\n".encode(self.encoding, self.unicode_errors)]))
        except OSError:
            pass  # vsftpd answers a missing or unreadable path with an empty listing
        self.push_dtp_data(BufferedIteratorProducer(chunks), isproducer=True, cmd=cmd)
        return path

    def ftp_LIST(self, path: str, opts: str = "", label: str = ".") -> str | None:  # type: ignore[override]
        return self._send_listing("LIST", path, opts, label)

    def ftp_NLST(self, path: str, opts: str = "", label: str = ".") -> str | None:  # type: ignore[override]
        return self._send_listing("NLST", path, opts, label)

    # --- uploads

    def ftp_STOR(self, file: str, mode: str = "w") -> Any:
        self._storing = True
        try:
            return super().ftp_STOR(file, mode)
        finally:
            self._storing = False

    def chown_upload(self, fd: int) -> None:
        """chown_uploads: new anonymous uploads get chown_upload_mode and
        belong to chown_username (root only; see accounts.ChownBroker)."""
        if not (self.anonymous and self.cfg.chown_uploads):
            return
        os.fchmod(fd, self.cfg.chown_upload_mode & 0o7777)
        if self.chown_broker is not None:
            self.chown_broker.chown(fd)

    def ftp_CWD(self, path: str) -> Any:
        init_cwd = os.getcwd()
        try:
            self.fs.chdir(path)
        except OSError:
            self.respond("550 Failed to change directory.")
            return None
        finally:
            if os.getcwd() != init_cwd:
                os.chdir(init_cwd)
        if self.cfg.dirmessage_enable and self.cfg.message_file:
            try:
                with open(os.path.join(path, self.cfg.message_file),
                          encoding="utf-8", errors="replace") as fh:
                    lines = fh.read(8192).splitlines()
            except OSError:
                lines = []
            for ln in lines:
                self.push(f"250-{ln}\r\n")
        self.respond("250 Directory successfully changed.")
        return path

    def ftp_SITE_CHMOD(self, path: str, mode: str) -> Any:
        if self.anonymous or not self.cfg.chmod_enable:
            self.respond("550 Permission denied.")
            return None
        return super().ftp_SITE_CHMOD(path, mode)

    # --- logging hooks

    def log_cmd(self, cmd: str, arg: str, respcode: int, respstr: str) -> None:
        if self.tlog is None:
            return
        what = {"MKD": "MKDIR", "XMKD": "MKDIR", "DELE": "DELETE", "RMD": "RMDIR",
                "XRMD": "RMDIR", "RNTO": "RENAME", "SITE CHMOD": "CHMOD"}.get(cmd)
        if what is None or self.fs is None:
            return
        ok = str(respcode).startswith("2")
        path = self.fs.fs2ftp(arg) if os.path.isabs(arg) else arg
        self.tlog.vsftpd(
            f'{"OK" if ok else "FAIL"} {what}: Client "{self.remote_ip}", "{path}"', self.log_user
        )

    def log_transfer(self, cmd: str, filename: str, receive: bool, completed: bool,
                     elapsed: float, bytes: int) -> None:  # noqa: A002 - pyftpdlib's name
        if self.tlog is None or self.fs is None:
            return
        path = self.fs.fs2ftp(filename)
        self.tlog.transfer(
            ok=bool(completed), what="UPLOAD" if receive else "DOWNLOAD",
            host=self.remote_ip, path=path, size=int(bytes), start=time.time() - elapsed,
            binary=self._requested_type == "i", incoming=receive, anonymous=self.anonymous,
            user=self.log_user, xfer_user=self.anon_password if self.anonymous else self.username,
        )

    def log(self, msg: str, logfun: Any = None) -> None:  # type: ignore[override]
        """pyftpdlib's per-event logging is replaced by the vsftpd/xferlog files."""

    def logline(self, msg: str, logfun: Any = None) -> None:  # type: ignore[override]
        pass
