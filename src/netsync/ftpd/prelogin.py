"""vsftpd's privilege separation before login, for plain FTP run as root.

The session process (forked by the listener, still root) forks a pre-login
process that chroots into `secure_chroot_dir`, drops for good to
`nopriv_user` and only then reads the client's first byte: the banner, USER,
PASS and every other pre-login command are parsed there.  The root session
process reads nothing from the client.  It waits on a socket pair for one
kind of request, "log this user in", in a small bounded format:

    kind (1 byte: L local, A anonymous) | user length (2 bytes) |
    password length (2 bytes) | pending length (4 bytes) | user | password |
    pending

`pending` is input the pre-login process had read past the login command
(pipelined commands).  The answer is one byte: F (refused: the pre-login
process answers 530 and goes on) or O (accepted: the pre-login process
exits at once without touching the connection; the root process waits for
it to be gone, then checks the account itself, authenticates through PAM,
changes to the user and serves the rest of the session).  Anything else on
the socket pair ends the session.

TLS sessions live in the process that did the handshake, and a data
connection with require_ssl_reuse must resume the control connection's
session, so ssl_enable=YES keeps the single-process model (see
docs/ftpd.md).  Without root there is nothing to separate.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import socket
import struct
import tempfile
import time

from pyftpdlib.ioloop import IOLoop

from . import accounts
from .config import OPTIONS, Config, ConfigError

MAX_FIELD = 4096  # vsftpd's command line limit; USER and PASS arguments fit in it
MAX_PENDING = 1 << 17  # asynchat reads 64 KiB at a time: what is left of one read
_HEADER = struct.Struct("!cHHI")
MAX_MESSAGE = _HEADER.size + 2 * MAX_FIELD + MAX_PENDING

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38


def applies(cfg: Config) -> bool:
    return os.geteuid() == 0 and not cfg.ssl_enable


DEFAULT_CHROOT = OPTIONS["secure_chroot_dir"][1]
_private_empty: str | None = None
_nopriv: tuple[str, accounts.Identity] | None = None


def _private_empty_dir() -> str:
    """An empty root-owned directory of our own, removed when this process exits."""
    global _private_empty
    if _private_empty is None or not os.path.isdir(_private_empty):
        base = "/run" if os.access("/run", os.W_OK) else None
        _private_empty = tempfile.mkdtemp(prefix="netsync-ftpd-empty.", dir=base)
        path = _private_empty

        def remove() -> None:  # session processes leave by os._exit: only the server runs this
            try:
                os.rmdir(path)
            except OSError:
                pass

        atexit.register(remove)
    return _private_empty


def check_config(cfg: Config) -> None:
    """vsftpd's start-up checks for the pre-login sandbox, made at start and
    reload.  vsftpd's default secure_chroot_dir, /usr/share/empty, is absent
    on many systems (Debian's vsftpd uses its own); when the default is
    missing, a private empty directory stands in for it.  A directory named
    in the configuration must exist, as with vsftpd."""
    global _nopriv
    if not applies(cfg):
        return
    nopriv = accounts.lookup(cfg.nopriv_user or "nobody")
    if nopriv is None:
        raise ConfigError(f"cannot locate user specified in 'nopriv_user':{cfg.nopriv_user}")
    if cfg.secure_chroot_dir == DEFAULT_CHROOT and not os.path.isdir(DEFAULT_CHROOT):
        try:
            cfg.set(f"secure_chroot_dir={_private_empty_dir()}")
        except OSError as err:
            raise ConfigError(f"cannot create an empty directory for the pre-login process: "
                              f"{err.strerror}") from None
    if not cfg.secure_chroot_dir or not os.path.isdir(cfg.secure_chroot_dir):
        raise ConfigError("vsftpd: not found: directory given in 'secure_chroot_dir':"
                          f"{cfg.secure_chroot_dir}")
    _nopriv = (cfg.nopriv_user or "nobody", nopriv)  # looked up once, in the listener


def encode_request(anonymous: bool, user: str, password: str, pending: bytes) -> bytes | None:
    u = user.encode("utf-8", "surrogateescape")
    p = password.encode("utf-8", "surrogateescape")
    if len(u) > MAX_FIELD or len(p) > MAX_FIELD or len(pending) > MAX_PENDING:
        return None
    return _HEADER.pack(b"A" if anonymous else b"L", len(u), len(p), len(pending)) + u + p + pending


def decode_request(msg: bytes) -> tuple[bool, str, str, bytes] | None:
    """The request, or None for anything that is not exactly one well-formed request."""
    if len(msg) < _HEADER.size:
        return None
    kind, ulen, plen, pend = _HEADER.unpack_from(msg)
    if kind not in (b"A", b"L") or ulen > MAX_FIELD or plen > MAX_FIELD or pend > MAX_PENDING:
        return None
    if len(msg) != _HEADER.size + ulen + plen + pend:
        return None
    pos = _HEADER.size
    user = msg[pos:pos + ulen].decode("utf-8", "surrogateescape")
    password = msg[pos + ulen:pos + ulen + plen].decode("utf-8", "surrogateescape")
    return kind == b"A", user, password, msg[pos + ulen + plen:]


def _oops(conn: socket.socket, text: str) -> None:
    try:
        conn.setblocking(True)
        conn.sendall(f"500 OOPS: {text}\r\n".encode("utf-8", "surrogateescape"))
    except OSError:
        pass


def _drop_to_nopriv(nopriv: accounts.Identity, root: str, parent: int) -> None:
    os.chroot(root)
    os.chdir("/")
    accounts.drop_ids(nopriv.uid, nopriv.gid, [])
    libc = accounts.libc()
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # Set after the uid change (which clears it): the root side's death (the
    # listener's SIGTERM at shutdown) must end this process too.
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def run(cfg: Config, conn: socket.socket) -> None:
    """Serve one control connection with the pre-login dialogue in an
    unprivileged child; called in the (root) session process."""
    from .session import ServerStub, Session

    name = cfg.nopriv_user or "nobody"
    nopriv = _nopriv[1] if _nopriv is not None and _nopriv[0] == name else accounts.lookup(name)
    root = cfg.secure_chroot_dir or ""
    if nopriv is None:
        _oops(conn, f"cannot locate user specified in 'nopriv_user':{cfg.nopriv_user}")
        return
    if not os.path.isdir(root):
        _oops(conn, f"vsftpd: not found: directory given in 'secure_chroot_dir':{root}")
        return
    lists = []
    if cfg.userlist_enable and cfg.userlist_file:
        lists.append(cfg.userlist_file)
    if cfg.deny_email_enable and cfg.banned_email_file:
        lists.append(cfg.banned_email_file)
    tlog = Session.tlog
    if tlog is not None:
        # Logged from here: the pre-login process gets no log file descriptors.
        try:
            tlog.vsftpd(f'CONNECT: Client "{conn.getpeername()[0]}"')
        except OSError:
            pass
    # The handler is built once, here, before anything is read from the
    # client: the pre-login process serves the dialogue with its copy, and
    # this process takes the connection over with its own, untouched one.
    # (Building it on both sides cost each login a second set-up.)
    ioloop = IOLoop()
    handler = Session(conn, ServerStub(conn.family), ioloop=ioloop)
    if not handler.connected:
        return
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent = os.getpid()
    accounts.cache_name_lists(lists)  # read here: the chroot has no files
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            ours.close()
            if tlog is not None:
                tlog.close()
                Session.tlog = None
            _drop_to_nopriv(nopriv, root, parent)
            _own_poller(ioloop)
            Session.priv = theirs
            handler.handle()
            ioloop.loop()
        except BaseException:  # noqa: BLE001 - the pre-login process must always exit here
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    accounts.cache_name_lists([])
    try:
        granted = _serve_requests(cfg, ours, pid, conn)
    finally:
        ours.close()
        _reap(pid)
    if granted is None:
        return
    anonymous, user, password, pending, ident = granted
    handler.take_over(user, anonymous, password, ident, pending)
    # pyftpdlib's loop() waits for a first event before it looks at timers;
    # here the client may already be idle, so idle_session_timeout counts now.
    soonest = ioloop.sched.poll()
    while ioloop.socket_map:
        ioloop.poll(soonest)
        soonest = ioloop.sched.poll()


def _own_poller(ioloop: IOLoop) -> None:
    """In the pre-login process: an epoll instance of its own for the
    inherited loop.  The inherited descriptor names the root side's
    instance, which must not see this process's registrations."""
    shared = getattr(ioloop, "_poller", None)
    if not isinstance(shared, select.epoll):
        return  # poll()/select() objects hold no kernel state to share
    ioloop._poller = select.epoll()  # type: ignore[attr-defined]
    shared.close()  # this process's descriptor only: the root side keeps its own
    for fd, inst in ioloop.socket_map.items():
        ioloop._poller.register(fd, inst._current_io_events)  # type: ignore[attr-defined]


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _serve_requests(cfg: Config, sock: socket.socket, pid: int, conn: socket.socket
                    ) -> tuple[bool, str, str, bytes, accounts.Identity | None] | None:
    """Answer login requests until one is granted (returned, the pre-login
    process gone) or the pre-login process ends (None)."""
    fails = 0
    try:
        remote_ip = conn.getpeername()[0]
    except OSError:
        remote_ip = "?"
    from .session import Session

    tlog = Session.tlog
    while True:
        try:
            msg = sock.recv(MAX_MESSAGE + 1)
        except OSError:
            msg = b""
        request = decode_request(msg) if msg else None
        if request is None or (cfg.max_login_fails and fails >= cfg.max_login_fails):
            if msg:  # a malformed or excess request: the pre-login side is not ours any more
                os.kill(pid, signal.SIGKILL)
            return None
        anonymous, user, password, pending = request
        ident: accounts.Identity | None = None
        if anonymous:
            ok = (bool(cfg.anonymous_enable) and user.lower() in ("ftp", "anonymous")
                  and not (cfg.deny_email_enable
                           and password in accounts.read_name_list(cfg.banned_email_file)))
        else:
            ok = bool(cfg.local_enable) and not accounts.userlist_refuses(cfg, user)
            if ok:
                try:
                    ok = accounts.pam_authenticate(cfg.pam_service_name or "ftp", user, password)
                except Exception:  # noqa: BLE001 - a broken PAM stack must not kill the session
                    ok = False
                ident = accounts.lookup(user) if ok else None
                ok = ident is not None
                if not ok and tlog is not None:
                    tlog.vsftpd(f'FAIL LOGIN: Client "{remote_ip}"', user)
        if not ok:
            fails += 1
            if cfg.delay_failed_login:
                time.sleep(min(cfg.delay_failed_login, 60))
            try:
                sock.send(b"F")
            except OSError:
                return None
            continue
        try:
            sock.send(b"O")
        except OSError:
            return None
        _reap(pid)  # the connection is ours only once the pre-login process is gone
        return anonymous, user, password, pending, ident

