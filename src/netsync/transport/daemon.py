"""Talking to an rsync daemon: TCP connect (socket.c) and the @RSYNCD: exchange
(clientserver.c start_inband_exchange, authenticate.c auth_client).

The same :class:`DaemonClient` runs over a TCP :class:`SocketConnection` or over
the pipes of ``ssh host rsync --server --daemon .`` (daemon over a remote shell).
After ``@RSYNCD: OK`` and the arguments, the binary protocol starts with the
compat flags: build a ``ClientHandshake`` with ``daemon_protocol=client.protocol``.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from netsync.errors import (
    RERR_CONTIMEOUT,
    RERR_PROTOCOL,
    RERR_SOCKETIO,
    RERR_STARTCLIENT,
    RERR_SYNTAX,
    RERR_UNSUPPORTED,
)
from netsync.record import Record, factory
from netsync.transport import (
    Connection,
    SocketConnection,
    TransportError,
    join_lines,
    pre_fork_who,
)
from netsync.transport.rsh import ServerArgs

if TYPE_CHECKING:
    from netsync.options import Options

__all__ = [
    "AUTH_DIGESTS", "DaemonClient", "ModuleReply", "connect", "greeting_line", "parse_greeting",
    "negotiate_protocol", "choose_auth_digest", "auth_response", "read_password",
    "daemon_server_args", "encode_daemon_args",
]

# checksum.c valid_auth_checksums_items, strongest first.
AUTH_DIGESTS: tuple[str, ...] = ("sha512", "sha256", "sha1", "md5", "md4")
_MAX_LINE = 4096 + 1024  # rsync's BIGPATHBUFLEN (read_line_old fails on longer lines)
# Listing/motd lines kept when nobody streams them (a hostile daemon can send endless ones).
_MAX_KEPT_LINES = 10_000

_SOCKET_OPTIONS: dict[str, tuple[str, str, str]] = {
    # name: (level, option, kind) -- socket.c socket_options[]
    "SO_KEEPALIVE": ("SOL_SOCKET", "SO_KEEPALIVE", "bool"),
    "SO_REUSEADDR": ("SOL_SOCKET", "SO_REUSEADDR", "bool"),
    "SO_BROADCAST": ("SOL_SOCKET", "SO_BROADCAST", "bool"),
    "TCP_NODELAY": ("IPPROTO_TCP", "TCP_NODELAY", "bool"),
    "IPTOS_LOWDELAY": ("IPPROTO_IP", "IP_TOS", "on:16"),
    "IPTOS_THROUGHPUT": ("IPPROTO_IP", "IP_TOS", "on:8"),
    "SO_SNDBUF": ("SOL_SOCKET", "SO_SNDBUF", "int"),
    "SO_RCVBUF": ("SOL_SOCKET", "SO_RCVBUF", "int"),
    "SO_SNDLOWAT": ("SOL_SOCKET", "SO_SNDLOWAT", "int"),
    "SO_RCVLOWAT": ("SOL_SOCKET", "SO_RCVLOWAT", "int"),
    "SO_SNDTIMEO": ("SOL_SOCKET", "SO_SNDTIMEO", "int"),
    "SO_RCVTIMEO": ("SOL_SOCKET", "SO_RCVTIMEO", "int"),
}


def _stderr(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _atoi(text: str) -> int:
    """C atoi(): leading whitespace, optional sign, digits; 0 when none."""
    s = text.lstrip()
    k = 1 if s[:1] in ("+", "-") else 0
    while k < len(s) and s[k].isdigit() and s[k].isascii():
        k += 1
    try:
        return int(s[:k])
    except ValueError:
        return 0


def set_socket_options(sock: object, options: str | None,
                       warn: Callable[[str], None] = _stderr) -> None:
    """rsync's set_socket_options() for --sockopts (unknown names are reported, not fatal)."""
    import socket

    assert isinstance(sock, socket.socket)
    if not options:
        return
    for tok in options.replace("\t", " ").replace(",", " ").split():
        name, eq, val = tok.partition("=")
        spec = _SOCKET_OPTIONS.get(name)
        if spec is None:
            warn(f"Unknown socket option {name}")
            continue
        level = getattr(socket, spec[0], None)
        opt = getattr(socket, spec[1], None)
        if level is None or opt is None:
            continue
        if spec[2].startswith("on:"):
            if eq:
                warn(f"syntax error -- {name} does not take a value")
                continue
            value = int(spec[2][3:])
        else:
            value = _atoi(val) if eq else 1
        try:
            sock.setsockopt(level, opt, value)
        except OSError as exc:
            warn(f"failed to set socket option {name}: {exc.strerror}")


def _socketpair_tcp():
    """socket.c socketpair_tcp(): a connected pair over loopback TCP, not AF_UNIX, so a
    daemon run by the program sees a TCP peer (127.0.0.1) for its logs and host rules."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        ours = socket.create_connection(listener.getsockname())
        try:
            while True:  # only our own connection: another local process may race us
                theirs, peer = listener.accept()
                if peer == ours.getsockname():
                    theirs.settimeout(None)
                    return ours, theirs
                theirs.close()
        except OSError:
            ours.close()
            raise


def _connect_prog(command: str, host: str, who: str) -> SocketConnection:
    """socket.c sock_exec(): RSYNC_CONNECT_PROG runs through the shell on a socketpair
    (its %H already replaced by the host), and the daemon protocol goes over that."""
    import subprocess

    ours, theirs = _socketpair_tcp()
    try:
        subprocess.Popen(["sh", "-c", command], stdin=theirs, stdout=theirs,
                         close_fds=True, start_new_session=False)
    except OSError as exc:
        ours.close()
        raise TransportError(RERR_SOCKETIO, f"[{who}] Failed to exec sh: {exc.strerror} "
                             f"({exc.errno})") from None
    finally:
        theirs.close()
    return SocketConnection(ours, host, who)


_CONNECT_HOST_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-%+~")


def expand_connect_prog(prog: str, host: str) -> str:
    """socket.c open_socket_out_wrapped(): "%H" becomes the host in single quotes,
    "%%" a "%"; any other "%" stays.  A template with no "%" is run as it is.

    A program such as ``sh -c '... %H ...'`` re-parses the host in a nested shell
    where our quotes are already gone, so (as rsync) only name characters pass, and
    none of "-+~%" first (an option to the program, a tilde or fish expansion).
    """
    if "%" not in prog:
        return prog
    if not host or host[0] in "-+~%" or not set(host) <= _CONNECT_HOST_CHARS:
        raise TransportError(RERR_SOCKETIO, "unsafe host characters for RSYNC_CONNECT_PROG",
                             bare=True)
    quoted = "'" + host.replace("'", "'\\''") + "'"
    out: list[str] = []
    i = 0
    while i < len(prog):
        c = prog[i]
        nxt = prog[i + 1:i + 2]
        if c == "%" and nxt == "%":
            out.append("%")
            i += 2
        elif c == "%" and nxt == "H":
            out.append(quoted)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def connect(host: str, port: int, *, address: str | None = None, af_hint: int = 0,
            contimeout: int = 0, sockopts: str | None = None, who: str = "client",
            warn: Callable[[str], None] = _stderr, debug_connect: int = 0
            ) -> SocketConnection:
    """rsync's open_socket_out(): try each address of ``host`` until one connects
    (of the proxy's, with RSYNC_PROXY set, which is then asked to CONNECT to it).

    Refused/unreachable: exit 10 with rsync's "failed to connect to HOST (ADDR):
    ... (errno)" line per address; --contimeout expiring: exit 35.
    """
    import errno as errno_mod
    import socket

    prog = os.environ.get("RSYNC_CONNECT_PROG")
    if prog:
        return _connect_prog(expand_connect_prog(prog, host), host, who)
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(af_hint, socket.AF_UNSPEC)
    target = (host, port)
    try:
        proxy = parse_proxy(os.environ.get("RSYNC_PROXY") or "")
    except ValueError as bad:
        warn(str(bad))  # rprintf(FERROR): the bare message, then exit 10
        raise TransportError(RERR_SOCKETIO) from None
    gai_host, gai_port = host, str(port)
    if proxy is not None:
        gai_host, gai_port = proxy[0], proxy[1]
        if debug_connect >= 1:
            sys.stdout.write(f"connection via http proxy {gai_host} port {gai_port}\n")
            sys.stdout.flush()
    try:
        infos = socket.getaddrinfo(gai_host, gai_port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransportError(RERR_SOCKETIO, f"getaddrinfo: {gai_host} {gai_port}: "
                                            f"{exc.strerror}") from None
    except UnicodeError:  # (a label the idna codec refuses: too long, or empty)
        raise TransportError(RERR_SOCKETIO, f"getaddrinfo: {gai_host} {gai_port}: "
                                            "Name or service not known") from None
    failures: list[str] = []
    start_who = pre_fork_who(who)
    for fam, stype, proto, _canon, addr in infos:
        try:
            sock = socket.socket(fam, stype, proto)
        except OSError:
            continue
        if address is not None:
            try:
                local = socket.getaddrinfo(address, 0, fam, stype, 0, socket.AI_PASSIVE)
                sock.bind(local[0][4])
            except OSError as exc:
                if isinstance(exc, socket.gaierror):
                    warn(f"getaddrinfo: bind address {address}: {exc.strerror}")
                sock.close()
                continue
        set_socket_options(sock, sockopts, warn)
        if contimeout > 0:
            sock.settimeout(contimeout)
        try:
            sock.connect(addr)
        except TimeoutError:
            sock.close()
            raise TransportError(RERR_CONTIMEOUT) from None
        except OSError as exc:
            sock.close()
            code = exc.errno or errno_mod.EIO
            failures.append(f"[{start_who}] failed to connect to {gai_host} ({addr[0]}): "
                            f"{os.strerror(code)} ({code})")
            continue
        sock.settimeout(None)
        if proxy is not None:
            refused = proxy_connect(sock, *target, proxy[2], proxy[3])
            if refused is not None:
                warn(refused)  # socket.c: rprintf(FERROR), then the next address
                sock.close()
                continue
        return SocketConnection(sock, peer=addr[0], who=who, sockopts=sockopts)
    raise TransportError(RERR_SOCKETIO, join_lines(failures) if failures else None)


PROXY_BUF_SIZE = 1024  # socket.c: the CONNECT request and each response line


def parse_proxy(spec: str) -> tuple[str, str, str | None, str | None] | None:
    """RSYNC_PROXY, "[USER:PASS@]HOST:PORT" (socket.c open_socket_out()):
    (host, port, user, password); None when unset.  ValueError, in rsync's words,
    for a malformed one."""
    if not spec:
        return None
    spec = spec.encode("utf-8", "surrogateescape")[:1023].decode("utf-8", "surrogateescape")
    user = password = None
    cred, at, hostport = spec.rpartition("@")
    if at:
        if ":" not in cred:
            raise ValueError("invalid proxy specification: should be USER:PASS@HOST:PORT")
        user, _, password = cred.partition(":")
    else:
        hostport = spec
    if ":" not in hostport:
        raise ValueError("invalid proxy specification: should be HOST:PORT")
    phost, _, pport = hostport.partition(":")
    return phost, pport[:9], user, password  # (portbuf[10])


def proxy_connect(sock, host: str, port: int, user: str | None, password: str | None
                  ) -> str | None:
    """socket.c establish_proxy_connection(): ask an HTTP proxy to CONNECT to
    host:port and read its answer up to the blank line.  None when the tunnel
    is up, else the error rsync prints; every line read is bounded."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in host):
        return "invalid control character in proxy CONNECT host"
    auth = ""
    if user is not None and password is not None:
        cred = f"{user}:{password}".encode("utf-8", "surrogateescape")[:PROXY_BUF_SIZE - 1]
        if (len(cred) * 8 + 5) // 6 >= PROXY_BUF_SIZE - 3:
            return "authentication information is too long"
        auth = "\r\nProxy-Authorization: Basic " + base64.b64encode(cred).decode()
    req = f"CONNECT {host}:{port} HTTP/1.0{auth}\r\n\r\n".encode("utf-8", "surrogateescape")
    if len(req) >= PROXY_BUF_SIZE:
        return "proxy CONNECT request too long"
    try:
        sock.sendall(req)
    except OSError as exc:
        return f"failed to write to proxy: {os.strerror(exc.errno or 0)} ({exc.errno or 0})"

    def line() -> bytes | str:
        got = bytearray()
        while len(got) < PROXY_BUF_SIZE - 1:
            try:
                c = sock.recv(1)
            except OSError as exc:
                return f"failed to read from proxy: {os.strerror(exc.errno or 0)} " \
                       f"({exc.errno or 0})"
            if not c:
                return "failed to read from proxy: Success (0)"
            got += c
            if c == b"\n":
                return bytes(got)
        return ""  # too long

    first = line()
    if isinstance(first, str):
        return first or "proxy response line too long"
    text = first[:-1].removesuffix(b"\r").decode("utf-8", "replace")
    status = text[5:].lstrip("0123456789.").lstrip(" ")
    if not text.startswith("HTTP/") or not status.startswith("2"):
        return f"bad response from proxy -- {text}"
    while True:  # the rest of the header, to its blank line
        got = line()
        if isinstance(got, str):
            return got or "proxy response header line too long"
        if got in (b"\n", b"\r\n"):
            return None


# ---------------------------------------------------------------------------
# Pure pieces of the exchange


def greeting_line(protocol: int, digests: tuple[str, ...] = AUTH_DIGESTS) -> bytes:
    """Our "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4" line (the list is always sent)."""
    return f"@RSYNCD: {protocol}.0 {' '.join(digests)}\n".encode()


class Greeting(NamedTuple):
    remote_protocol: int
    remote_sub: int
    digests: list[str] | None  # None when the server sent no list


def parse_greeting(line: str) -> Greeting:
    """Parse the server's "@RSYNCD: VER.SUB [digest ...]" line (exchange_protocols)."""
    if not line.startswith("@RSYNCD: "):
        raise TransportError(RERR_STARTCLIENT, f'server sent "{line}" rather than greeting')
    rest = line[9:]
    num = rest.split(" ", 1)[0]
    ver, dot, sub = num.partition(".")
    if not ver.strip().lstrip("+-").isdigit():
        raise TransportError(RERR_STARTCLIENT, f'server sent "{line}" rather than greeting')
    remote = _atoi(ver)
    if not dot or not sub[:1].isdigit():
        if remote >= 30:
            raise TransportError(RERR_STARTCLIENT,
                                 f"the server omitted the subprotocol value: {line}")
        remote_sub = 0
    else:
        remote_sub = _atoi(sub)
    space = line.find(" ", 9)
    digests = line[space + 1:].split() if space >= 0 else None
    if digests is None and remote > 31:
        raise TransportError(RERR_STARTCLIENT, f"the server omitted the digest name list: {line}")
    return Greeting(remote, remote_sub, digests)


def negotiate_protocol(ours: int, greeting: Greeting) -> int:
    """The protocol both sides use after the greetings (our subprotocol is 0)."""
    remote, sub = greeting.remote_protocol, greeting.remote_sub
    if ours > remote:
        return remote - 1 if sub else remote
    if ours == remote and sub != 0:
        return ours - 1
    return ours


def choose_auth_digest(server_digests: list[str] | None, protocol: int,
                       ours: tuple[str, ...] = AUTH_DIGESTS) -> str:
    """negotiate_daemon_auth() on the client: our strongest digest the server listed.

    A server without a list gets md5 from protocol 30, else (old) md4.
    """
    if server_digests is None:
        return "md5" if protocol >= 30 else "md4"
    theirs = {d.lower() for d in server_digests}
    for name in ours:
        if name in theirs:
            return name
    raise TransportError(RERR_UNSUPPORTED, "\n".join([
        "Failed to negotiate a daemon auth checksum choice.",
        f"Server list: {' '.join(server_digests)}",
        f"Client list: {' '.join(ours)}"]), bare=True)


def auth_response(password: bytes, challenge: str, digest: str) -> str:
    """base64 (no '=' padding) of H(password + challenge), as rsync's generate_hash()."""
    data = password + challenge.encode()
    if digest == "md4":
        from Crypto.Hash import MD4

        raw = MD4.new(data).digest()
    else:
        import hashlib

        raw = hashlib.new(digest, data).digest()
    return base64.b64encode(raw).decode().rstrip("=")


EARLY_INPUT_CMD = "#early_input="
EARLY_INPUT_MAX = 4096 + 1024  # BIGPATHBUFLEN: the daemon refuses more


def read_early_input(path: str, *, who: str = "client") -> bytes:
    """clientserver.c start_inband_exchange(): the --early-input file, read once the
    greetings are exchanged (an operator path: no untrusted symlinks).  Any failure
    ends the connection before the module is asked for (exit 5)."""
    from netsync import safepath

    try:
        fd = safepath.owner_open(path, os.O_RDONLY)
    except OSError as exc:
        raise TransportError(RERR_STARTCLIENT, f"[{who}] failed to open {path}: "
                             f"{exc.strerror} ({exc.errno})") from None
    try:
        size = os.fstat(fd).st_size
        if size > EARLY_INPUT_MAX:
            raise TransportError(RERR_STARTCLIENT, f"{path} is > {EARLY_INPUT_MAX} bytes.",
                                 bare=True)
        data = bytearray()
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise TransportError(RERR_STARTCLIENT, f"Early EOF in {path}", bare=True)
            data += chunk
    except OSError as exc:
        raise TransportError(RERR_STARTCLIENT, f"[{who}] failed to open {path}: "
                             f"{exc.strerror} ({exc.errno})") from None
    finally:
        os.close(fd)
    return bytes(data)


def read_password(password_file: str | None, *, who: str = "client",
                  prompt: Callable[[], str] | None = None) -> bytes:
    """The password: --password-file ("-" = stdin), else $RSYNC_PASSWORD, else a prompt.

    The file must not be accessible by others, and must be owned by root when
    running as root (rsync's getpassf checks); only its first line is used.
    """
    if password_file is not None:
        if password_file == "-":
            data = sys.stdin.buffer.readline(511)
        else:
            try:
                from netsync import safepath  # an operator path: no untrusted symlinks

                fd = safepath.owner_open(password_file, os.O_RDONLY)
            except OSError as exc:
                raise TransportError(RERR_SYNTAX, f"[{who}] could not open password file "
                                     f"{password_file}: {exc.strerror} ({exc.errno})") from None
            try:
                st = os.fstat(fd)
                if st.st_mode & 0o006:
                    raise TransportError(RERR_SYNTAX,
                                         "ERROR: password file must not be other-accessible",
                                         bare=True)
                if os.geteuid() == 0 and st.st_uid != 0:
                    raise TransportError(RERR_SYNTAX, "ERROR: password file must be owned by "
                                         "root when running as root", bare=True)
                data = os.read(fd, 511)
            finally:
                os.close(fd)
        first = data.replace(b"\r", b"\n").split(b"\n")
        line = next((part for part in first if part), b"")
        if not line:
            raise TransportError(RERR_SYNTAX,
                                 f"ERROR: failed to read a password from {password_file}",
                                 bare=True)
        return line
    env = os.environb.get(b"RSYNC_PASSWORD")
    if env is not None:
        return env
    if prompt is None:
        import getpass

        try:
            return os.fsencode(getpass.getpass("Password: "))
        except (EOFError, OSError):
            return b""
    return os.fsencode(prompt())


def daemon_server_args(opts: Options, am_sender: bool, paths: list[str]) -> ServerArgs:
    """The arguments sent to a daemon after "@RSYNCD: OK" (start_inband_exchange).

    ``paths`` start with the module name ("mod/dir").  A bare "mod" is sent as
    "mod/"; a leading '-' gets "./" and, unless --old-args, a " mod/" inside a
    name is written " [ ]mod/"-style ("[ ]" replaces the space) so the daemon
    cannot split it into another module path.
    """
    from netsync.options import server_options

    head, rest = server_options(opts, am_sender)
    module = paths[0].split("/", 1)[0] if paths else ""
    marker = f" {module}/"
    converted: list[str] = []
    for arg in paths:
        if arg == module:
            converted.append(module + "/")
            continue
        out = "./" + arg if arg.startswith("-") else arg
        if not opts.old_args:
            out = out.replace(marker, "[ ]" + marker[1:])
        converted.append(out)
    if opts.secluded_args and not opts.old_args:
        return ServerArgs(head, ["rsync", *rest, ".", *converted])
    return ServerArgs([*head, *rest, ".", *converted])


def encode_daemon_args(words: list[str], protocol: int) -> bytes:
    """NUL-terminated words plus an empty one from protocol 30, else newline-terminated."""
    end = b"\0" if protocol >= 30 else b"\n"
    return b"".join(os.fsencode(w) + end for w in words) + end


# ---------------------------------------------------------------------------
# The exchange


class ModuleReply(Record):
    """What the daemon said before "@RSYNCD: OK" (ok=True) or "@RSYNCD: EXIT" (ok=False).

    ``lines`` are the motd and, for a listing, the "name\\tcomment" lines: the
    protocol cannot tell them apart (rsync's man page says so too).
    """

    ok: bool
    lines: list[str] = factory(list)

    @property
    def modules(self) -> list[tuple[str, str]]:
        """(name, comment) for the lines that look like module listing entries."""
        out = []
        for line in self.lines:
            name, tab, comment = line.partition("\t")
            if tab and name.strip():
                out.append((name.rstrip(" "), comment))
        return out


class DaemonClient:
    """The client side of the @RSYNCD: exchange over any Connection.

    ``on_line`` is called with every motd/listing line as it arrives (rsync
    prints them as they come) and then the lines are not kept: a daemon may send
    them forever.  Without it they are collected in the reply, at most
    ``_MAX_KEPT_LINES`` of them.
    """

    def __init__(self, conn: Connection, protocol: int = 32, *,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.conn = conn
        self.our_protocol = protocol
        self.on_line = on_line
        self.eight_bit = False  # -8: how an @ERROR line is shown (escaped, as rwrite())
        self.greeting: Greeting | None = None
        self.protocol = protocol
        self.auth_digest: str | None = None

    def read_line(self, what: str) -> str:
        """One line (\\r dropped) as rsync's read_line_old; EOF, NUL or overlong = failure."""
        buf = bytearray()
        while True:
            ch = self.conn.read(1)
            if not ch or ch == b"\0":
                raise TransportError(RERR_STARTCLIENT, what)
            if ch == b"\n":
                return buf.decode("utf-8", "surrogateescape")
            if ch != b"\r":
                buf += ch
                if len(buf) >= _MAX_LINE:
                    raise TransportError(RERR_STARTCLIENT, what)

    def greet(self) -> int:
        """Exchange greetings; returns (and stores) the negotiated protocol."""
        self.conn.write(greeting_line(self.our_protocol))
        line = self.read_line("did not see server greeting")
        self.greeting = parse_greeting(line)
        remote = self.greeting.remote_protocol
        if remote < 20 or remote > 40:
            raise TransportError(RERR_PROTOCOL, "\n".join([
                "protocol version mismatch -- is your shell clean?",
                "(see the rsync manpage for an explanation)"]), bare=True)
        self.protocol = negotiate_protocol(self.our_protocol, self.greeting)
        from netsync.transport.handshake import MIN_PROTOCOL

        if self.protocol < MIN_PROTOCOL:
            raise TransportError(RERR_PROTOCOL, f"the server speaks protocol {remote}; "
                                 f"netsync needs {MIN_PROTOCOL} or newer (rsync 2.6.0+)")
        return self.protocol

    def request(self, module: str, user: str | None = None,
                password: Callable[[], bytes] | None = None,
                early_input: bytes = b"") -> ModuleReply:
        """Ask for ``module`` ("" lists the modules) and read up to OK / EXIT.

        ``password`` is called only if the daemon asks (AUTHREQD).  An @ERROR
        line raises TransportError(5) with the line as a bare message.
        ``early_input`` (--early-input) goes first, for the module's early exec.
        """
        if self.greeting is None:
            self.greet()
        assert self.greeting is not None
        if early_input:
            self.conn.write(f"{EARLY_INPUT_CMD}{len(early_input)}\n".encode() + early_input)
        self.conn.write(module.encode("utf-8", "surrogateescape") + b"\n")
        reply = ModuleReply(ok=False)
        while True:
            line = self.read_line("didn't get server startup line")
            if line.startswith("@RSYNCD: AUTHREQD "):
                self._authenticate(line[18:], user, password)
                continue
            if line == "@RSYNCD: OK":
                reply.ok = True
                return reply
            if line == "@RSYNCD: EXIT":
                return reply
            if line.startswith("@ERROR"):
                from netsync.log import escape_output  # the daemon's text, escaped

                shown = escape_output(line.encode("utf-8", "surrogateescape"),
                                      eight_bit=self.eight_bit)
                # main.c: exit code 5 whatever the (daemon-over-shell) child exits with
                raise TransportError(RERR_STARTCLIENT, shown, bare=True, own_code=True)
            if self.on_line is not None:
                self.on_line(line)
            elif len(reply.lines) < _MAX_KEPT_LINES:
                reply.lines.append(line)

    def list_modules(self, early_input: bytes = b"") -> ModuleReply:
        return self.request("", early_input=early_input)

    def _authenticate(self, challenge: str, user: str | None,
                      password: Callable[[], bytes] | None) -> None:
        assert self.greeting is not None
        if user is None:
            user = os.environ.get("USER") or os.environ.get("LOGNAME")
        if not user:
            user = "nobody"
        self.auth_digest = choose_auth_digest(self.greeting.digests, self.protocol)
        secret = password() if password is not None else read_password(None)
        response = auth_response(secret, challenge, self.auth_digest)
        self.conn.write(f"{user} {response}\n".encode("utf-8", "surrogateescape"))

    def send_args(self, args: ServerArgs) -> None:
        """Send the server arguments in the protocol's form (then the secluded ones)."""
        from netsync.transport.rsh import encode_secluded

        self.conn.write(encode_daemon_args(args.argv, self.protocol))
        if args.secluded:
            self.conn.write(encode_secluded(args.secluded))
