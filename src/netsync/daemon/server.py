"""``netsync --daemon``: rsyncd for stock rsync clients (rsync 3.5's clientserver.c + socket.c).

Three ways in, one conversation (:func:`serve_connection`):

- standalone: :func:`run_daemon` listens on TCP (``--port``, ``--address``,
  IPv4 and IPv6) and forks a child per connection; the parent never reads a
  byte from a client, so a hostile or slow client only ever hurts its own
  process.  SIGCHLD reaps children, SIGTERM/SIGINT/SIGHUP stop the listener;
- inetd: stdin is a socket, served by this process;
- over a remote shell: ``rsync -e ssh host::module`` runs ``netsync --server
  --daemon .``; stdin/stdout carry the same exchange.

The conversation (start_daemon / rsync_module): our greeting and the motd,
the client's greeting, ``#list`` or a module name, hosts allow/deny,
``max connections``, ``auth users``, uid/gid, the module directory (chroot
when configured), ``@RSYNCD: OK``, the client's arguments, ``refuse options``
and then netsync.server.run_server() inside the module.  Every path the client
names is sanitized as rsync does for a module (``..`` cannot climb above the
module, a leading ``/`` means the module's top).

A module's ``filter``/``include``/``exclude`` rules (netsync.daemon.dfilter)
apply whatever the client asks; ``pre-xfer exec``/``post-xfer exec`` run as
rsync runs them (netsync.daemon.xfer_exec); ``munge symlinks`` defaults as in
rsync (on unless the module is a chroot of its own top).

The log (``log file``, else syslog with ``syslog facility``/``syslog tag``)
and ``transfer logging`` with ``log format`` are netsync.daemon.xferlog's.

``early exec`` gets the client's ``--early-input`` bytes on its stdin, and a
``name converter`` (netsync.daemon.namecvt) answers the connection's uid/gid
name lookups.

Not done yet (kept out rather than half done): ``proxy protocol``,
``--bwlimit``, ``daemon chroot``/``daemon uid``.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import errno
import fcntl
import gc
import glob
import grp
import importlib
import os
import pkgutil
import pwd
import select
import signal
import socket
import stat
import sys
import syslog
import time
from collections.abc import Callable

from netsync import errors as E
from netsync import safepath
from netsync.daemon import access, auth, refuse, xfer_exec, xferlog
from netsync.daemon.config import ConfigError, DaemonConfig, Module, load_config
from netsync.daemon.dfilter import DaemonFilter
from netsync.daemon.xferlog import DaemonLog
from netsync.transport import quickack, tune_tcp

__all__ = ["run_daemon", "sanitize_path", "serve_connection"]

OUR_PROTOCOL = 32
OUR_SUB = 0
DEFAULT_PORT = 873
DEFAULT_CONFIG = "/etc/rsyncd.conf"
DEFAULT_LOCK_FILE = "/var/run/rsyncd.lock"
HANDSHAKE_TIMEOUT = 60  # DAEMON_HANDSHAKE_TIMEOUT
LINE_MAX = 1024  # start_daemon()'s line buffer
ARG_MAX = 4096 + 1024  # BIGPATHBUFLEN
MAX_DAEMON_ARGS = 16 * 1000
NOBODY_USER = "nobody"
NOBODY_GROUP = "nogroup"
SYMLINK_PREFIX = "/rsyncd-munged/"


class _Refused(Exception):
    """The connection ends here; ``line`` (if any) has already been sent."""


# ---------------------------------------------------------------------------
# paths (util1.c sanitize_path / glob_expand_module)


def sanitize_path(p: bytes, rootdir: bytes = b"", depth: int = 0,
                  keep_dot_dirs: bool = False) -> bytes:
    """util1.c sanitize_path(): make ``p`` look as if chrooted into the module.

    A leading "/" becomes ``rootdir`` (and allows no ``..``); ``..`` never climbs
    above the start except for ``depth`` leading ones; "." elements and
    repeated slashes go; a trailing slash stays; an empty result is ".".
    """
    out = b""
    if p.startswith(b"/"):
        out = rootdir.rstrip(b"/") + b"/" if rootdir and rootdir != b"/" else rootdir
        depth = 0
        p = p[1:]
    parts: list[bytes] = []
    fixed = 0  # leading ".." kept by depth
    pieces = p.split(b"/")
    trailing = len(pieces) > 1 and pieces[-1] == b""
    for comp in pieces:
        if not comp or (comp == b"." and not keep_dot_dirs):
            continue
        if comp == b"..":
            if depth > 0 and len(parts) == fixed:
                depth -= 1
                parts.append(comp)
                fixed += 1
            elif len(parts) > fixed:
                parts.pop()
            continue
        parts.append(comp)
    body = b"/".join(parts)
    if body and trailing:
        body += b"/"
    if not out and not body:
        return b"."
    return out + body


def expand_module_arg(mod: bytes, arg: bytes, split: bool = True) -> list[bytes]:
    """glob_expand_module(): strip the module name, split old-style " mod/" lists, glob."""
    if not arg:
        return []
    if arg.startswith(mod):
        arg = arg[len(mod):]
    pieces = arg.split(b" " + mod + b"/") if split else [arg]
    out: list[bytes] = []
    for piece in pieces:
        s = sanitize_path(piece, b"", 0, keep_dot_dirs=True)
        matches = sorted(glob.glob(s)) if glob.has_magic(s) else []
        out.extend(matches or [s])
    return out


# ---------------------------------------------------------------------------
# line I/O on the raw descriptors (no read-ahead: the binary protocol follows)


class _Wire:
    def __init__(self, f_in: int, f_out: int) -> None:
        self.f_in = f_in
        self.f_out = f_out

    def write(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        while data:
            n = os.write(self.f_out, data)
            data = data[n:]

    def read_line(self, limit: int = LINE_MAX, eol: bytes = b"\n") -> bytes | None:
        """One line without its terminator (and a "\\r" before a newline); None at EOF."""
        buf = bytearray()
        arm = quickack(self.f_in)
        if arm is not None:
            arm()  # (a stock client writes each argument on its own)
        while True:
            ch = os.read(self.f_in, 1)
            if not ch:
                return None
            if ch == eol:
                break
            if len(buf) < limit - 1:  # rsync truncates an overlong line
                buf += ch
        if eol == b"\n" and buf.endswith(b"\r"):
            del buf[-1]
        return bytes(buf)


# ---------------------------------------------------------------------------
# one connection


#: The connection's log, for the handshake deadline's lines (set by serve_connection).
_alarm_log: DaemonLog | None = None


def _on_alarm(_sig: int, _frame: object) -> None:
    """The handshake deadline (io.c handshake_poll_timeout_ms): rsync logs its
    rprintf(FERROR) line and exit_cleanup()'s "error ... (code 30)" line, then exits."""
    if _alarm_log is not None:
        from netsync import __version__

        _alarm_log("[Receiver] daemon handshake timeout -- exiting", syslog.LOG_ERR)
        _alarm_log(f"{E.exit_message(E.RERR_TIMEOUT)} [Receiver={__version__}]", syslog.LOG_ERR)
    os._exit(E.RERR_TIMEOUT)


def _negotiate_protocol(remote: int, remote_sub: int) -> int:
    """exchange_protocols(): the protocol both sides settle on."""
    proto = OUR_PROTOCOL
    if proto > remote:
        proto = remote - (1 if remote_sub else 0)
    elif proto == remote and remote_sub != OUR_SUB:
        proto -= 1
    return proto


def _lookup_uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return int(name) if name.isdigit() else None


def _lookup_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return int(name) if name.isdigit() else None


def _unescape_options(args: list[bytes]) -> list[bytes]:
    """io.c read_args() for a daemon: the words before the "." lose the backslashes
    the client's safe_arg() put in for a remote shell (unbackslash_arg(): \\X -> X);
    the file names after it are left to the glob expansion."""
    out = []
    for k, a in enumerate(args):
        if b"\\" in a:
            b = bytearray()
            i, n = 0, len(a)
            while i < n:
                if a[i] == 0x5C and i + 1 < n:
                    i += 1
                b.append(a[i])
                i += 1
            a = bytes(b)
        out.append(a)
        if a == b".":
            return out + args[k + 1:]
    return out


def _claim_connection(lock_file: str, max_conn: int, follow_any: bool = False) -> int | None:
    """connection.c claim_connection(): lock one of ``max_conn`` 4-byte slots.

    Returns the open lock fd (kept for the life of the process), -1 when there
    is no limit, None when every slot is taken.  Raises OSError if the file
    cannot be opened (ELOOP for a planted symlink on its path, which is not
    followed unless owned by root or us, or ``follow_any``: "insecure links").
    """
    if max_conn <= 0:
        return -1
    fd = safepath.daemon_open(lock_file, os.O_RDWR | os.O_CREAT, 0o600, follow_any=follow_any)
    for i in range(max_conn):
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 4, i * 4)
            return fd
        except OSError:
            continue
    os.close(fd)
    return None


_preloaded = False  # set once _preload_modules() has run in this process (or its parent)


def _preload_modules() -> None:
    """Import every engine module before chroot(): lazy imports would fail inside it."""
    global _preloaded
    if _preloaded:  # a forked connection of the listener: already done there
        return
    import netsync

    # numpy's OpenBLAS would start a thread per core that spins ~0.1 s of CPU at load:
    # nothing here multiplies matrices, so one thread (set only while it loads; exec
    # hooks see the environment as it was).
    blas = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        for info in pkgutil.walk_packages(netsync.__path__, "netsync."):
            if ".ftpd" in info.name or info.name.endswith("__main__"):
                continue  # __main__ would run the CLI again
            # Only a missing optional module is skipped: a signal's exception must get out.
            with contextlib.suppress(ImportError):
                importlib.import_module(info.name)
        # Also what the engine imports lazily: after chroot() or dropping to the module's
        # uid (which may not read the interpreter's own tree) an import would fail
        # mid-transfer.
        for name in ("hashlib", "zlib", "mmap", "secrets", "shutil", "numpy", "xxhash",
                     "zstandard", "lz4.block", "Crypto.Hash.MD4", "encodings.idna",
                     "encodings.latin_1", "ctypes.util"):
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        # -z: the system libzstd/liblz4 rsync links are found (ldconfig) and loaded on
        # first use; a connection's process may not run ldconfig or read the library
        # path (chroot, the module's uid), so look them up here once.
        from netsync import token

        token._libzstd()
        token._liblz4()
    finally:
        if blas is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = blas
    time.strftime("%Y")  # load the time zone
    _preloaded = True


def _tune_malloc() -> None:
    """glibc malloc for the forked connections: big short-lived buffers (every file read
    of up to 256 KiB is a fresh bytes, the output buffers) stay in the heap and are
    reused, rather than going back to the kernel (munmap, heap trim) and faulting in
    anew: ~1,500 fewer page faults in a 2,000-file pull.  Set in the listener,
    inherited by every child."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):  # not glibc: nothing to tune
        return
    mallopt(-1, 4 << 20)  # M_TRIM_THRESHOLD
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's dynamic ceiling)


def _warm_lookups(config: DaemonConfig) -> None:
    """glibc loads its NSS modules and reads its resolver files on a process's first
    lookup of each kind: make the connections' lookups once in the listener (a loopback
    reverse lookup; root's connections map to nobody/nogroup), so that each forked
    connection finds them loaded instead of repeating that (~0.3 ms, ~100 page faults)."""
    if os.geteuid() == 0:
        _lookup_uid(NOBODY_USER)
        _lookup_gid(NOBODY_GROUP)
    if config.globals.reverse_lookup or any(m.reverse_lookup for m in config.modules):
        access.client_name("127.0.0.1")
    _build_refuse_tables(config)


def _build_refuse_tables(config: DaemonConfig) -> None:
    """Each module's refuse table, built in the listener once for every connection."""
    for m in config.modules:
        with contextlib.suppress(ConfigError):
            refuse.table(m.refuse_options or "", m.charset or "")


class _Session:
    """start_daemon() + rsync_module() for one client."""

    def __init__(self, wire: _Wire, opts, addr: str, am_daemon: int, log: DaemonLog) -> None:
        self.wire = wire
        self.opts = opts
        self.addr = addr
        self.am_daemon = am_daemon  # 1 listening/inetd, -1 over a remote shell
        self.log = log
        self.config: DaemonConfig | None = None
        self.protocol = OUR_PROTOCOL
        self.remote_protocol = OUR_PROTOCOL
        self.auth_choices: str | None = None
        self.drain_fd = -1  # a socket descriptor that outlives run_server()'s close
        self.conn_fds: tuple[int, ...] = ()  # the accepted socket's own descriptors
        self.dfilter: DaemonFilter | None = None
        self.pre_exec: tuple[int, int, int] | None = None  # pid, args fd, stdout fd
        self.early_input = b""  # the client's --early-input, for the early exec hook
        self.namecvt: tuple[int, int, int] | None = None  # the name converter's, likewise
        self.chrooted = False  # "use chroot" in effect for the module
        self.munge = False  # "munge symlinks" in effect for the module
        self.sanitize = True

    def refuse(self, line: str, logline: str | None = None) -> None:
        if logline:
            self.log(logline)
        with contextlib.suppress(OSError):
            self.wire.write(line + "\n")
        raise _Refused()

    def _proxy_header(self, g) -> bool:
        """start_daemon(): a trusted balancer's PROXY header names the real client."""
        from netsync.daemon import proxy

        if not access.proxy_peer_allowed(g.proxy_protocol_hosts, self.addr, self.log):
            self.log(f"proxy protocol rejected from untrusted peer UNDETERMINED ({self.addr})")
            return False
        ok, addr = proxy.read_header(lambda n: _read_exact(self.wire.f_in, n))
        if ok and addr is not None:
            self.addr = access.peer_address(addr)
        return ok

    def _daemon_identity(self, g) -> bool:
        """start_daemon(): ``daemon chroot``, then ``daemon gid`` and ``daemon uid``, for
        the whole connection (before the client says anything beyond the socket)."""
        try:
            if g.daemon_chroot:
                what = f'daemon chroot("{g.daemon_chroot}") failed'
                time.tzset()
                os.chroot(g.daemon_chroot)
                what = 'daemon chdir("/") failed'
                os.chdir("/")
            if g.daemon_gid:
                gid = _lookup_gid(g.daemon_gid)
                if gid is None:
                    self.log(f"Invalid daemon gid: {g.daemon_gid}")
                    return False
                what = f"Unable to set group to daemon gid {gid}"
                os.setgid(gid)
                os.setgroups([gid])
            if g.daemon_uid:
                uid = _lookup_uid(g.daemon_uid)
                if uid is None:
                    self.log(f"Invalid daemon uid: {g.daemon_uid}")
                    return False
                what = f"Unable to set user to daemon uid {uid}"
                os.setuid(uid)
        except OSError as exc:
            self.log(f"{what}: {exc.strerror} ({exc.errno})")
            return False
        return True

    def timeout(self, seconds: int) -> None:
        if self.am_daemon > 0:
            signal.alarm(seconds)

    # -- start_daemon ------------------------------------------------------
    def run(self) -> int:
        cfg = self.config
        assert cfg is not None
        g = cfg.globals
        self.timeout(_handshake_timeout(g))
        if g.proxy_protocol and not self._proxy_header(g):
            return E.RERR_STARTCLIENT
        host = access.client_name(self.addr) if g.reverse_lookup else "UNDETERMINED"
        if not g.reverse_lookup and any(m.reverse_lookup for m in cfg.modules):
            access.client_name(self.addr)  # names need DNS: load the resolver before chroot
        if not self._daemon_identity(g):
            return E.RERR_STARTCLIENT
        self.log(f"connect from {host} ({self.addr})")
        self._exchange_protocols(g.motd_file)
        line = self.wire.read_line()
        if line is None:
            return E.RERR_STARTCLIENT
        if line.startswith(b"#early_input="):
            n = _atoi(line[len(b"#early_input="):])
            if n <= 0 or n > ARG_MAX:
                self.refuse("@ERROR: invalid early_input length")
            self.early_input = _read_exact(self.wire.f_in, n)
            line = self.wire.read_line()
            if line is None:
                return E.RERR_STARTCLIENT
        text = line.decode("utf-8", "surrogateescape")
        if not text or text == "#list":
            self.log(f"module-list request from {host} ({self.addr})")
            self.wire.write(cfg.listing_text())
            if self.protocol >= 25:
                self.wire.write("@RSYNCD: EXIT\n")
            return 0
        if text.startswith("#"):
            self.refuse(f"@ERROR: Unknown command '{text}'")
        mod = cfg.module(text)
        if mod is None:
            self.refuse(f"@ERROR: Unknown module '{text}'",
                        f"unknown module '{text}' tried from {host} ({self.addr})")
        assert mod is not None
        return self._module(mod, host)

    def _exchange_protocols(self, motd: str) -> None:
        self.wire.write(f"@RSYNCD: {OUR_PROTOCOL}.{OUR_SUB} {auth.greeting_digests()}\n")
        if motd:
            with contextlib.suppress(OSError):
                # A planted symlink on the motd path would send its target's bytes
                # to every client: open_no_attacker_symlinks() (clientserver.c).
                with open(safepath.daemon_open(motd, os.O_RDONLY), "rb") as f:
                    self.wire.write(f.read())
            self.wire.write("\n")
        line = self.wire.read_line()
        if line is None:
            raise _Refused()
        text = line.decode("utf-8", "surrogateescape")
        head, _, rest = text.partition("@RSYNCD: ")
        nums = rest.split(" ", 1)[0] if not head else ""
        major, dot, minor = nums.partition(".")
        if not major.isdigit():
            self.refuse("@ERROR: protocol startup error")
        remote = int(major)
        remote_sub = int(minor) if dot and minor.isdigit() else -1
        if remote_sub < 0:
            if remote >= 30:
                self.refuse(f"@ERROR: your client omitted the subprotocol value: {text}")
            remote_sub = 0
        sp = text.find(" ", 9)
        self.auth_choices = text[sp + 1:] if sp >= 0 else None
        if self.auth_choices is None and remote > 31:
            self.refuse(f"@ERROR: your client omitted the digest name list: {text}")
        self.remote_protocol = remote
        self.protocol = _negotiate_protocol(remote, remote_sub)

    # -- rsync_module ------------------------------------------------------
    def _module(self, mod: Module, host: str) -> int:
        name = mod.name
        addr = self.addr
        os.environ["RSYNC_MODULE_NAME"] = name
        if host == "UNDETERMINED" and mod.reverse_lookup:
            host = access.client_name(addr)
        os.environ["RSYNC_HOST_NAME"] = host
        os.environ["RSYNC_HOST_ADDR"] = addr
        ok, named = access.check_access(addr, host, mod.hosts_allow, mod.hosts_deny,
                                        forward_lookup=mod.forward_lookup, log=self.log)
        host = named or host
        if not ok:
            line = (f"@ERROR: access denied to {name} from {host} ({addr})" if mod.list
                    else f"@ERROR: Unknown module '{name}'")
            self.refuse(line, f"rsync denied on module {name} from {host} ({addr})")
        if self.am_daemon > 0:
            self.log(f"rsync allowed access on module {name} from {host} ({addr})")
        lock_file = mod.lock_file or DEFAULT_LOCK_FILE
        try:
            claimed = _claim_connection(lock_file, mod.max_connections,
                                        bool(mod.insecure_links))
        except OSError as exc:
            self.refuse("@ERROR: failed to open lock file",
                        f"failed to open lock file {lock_file}: {exc.strerror} ({exc.errno})")
        if claimed is None:
            n = mod.max_connections
            self.refuse(f"@ERROR: max connections ({n}) reached -- try again later",
                        f"max connections ({n}) reached")
        self.timeout(_handshake_timeout(mod))
        read_only = mod.read_only
        user = self._auth(mod, host)
        if user is None:
            self.refuse(f"@ERROR: auth failed on module {name}")
        user_name, ro = user  # type: ignore[misc]
        if ro is not None:
            read_only = ro
        os.environ["RSYNC_USER_NAME"] = user_name
        uid, gids = self._ids(mod)
        module_dir, chroot_dir = self._paths(mod)
        os.environ["RSYNC_MODULE_PATH"] = module_dir
        inner = module_dir
        if chroot_dir is not None:
            inner = module_dir[len(chroot_dir):] or "/" if chroot_dir != "/" else module_dir
        self._load_filters(mod, inner)
        self._log_init(mod)
        if chroot_dir is not None or os.geteuid() == 0:
            _preload_modules()
            if mod.charset:  # its codec, for a client's --iconv (netsync.charset)
                with contextlib.suppress(LookupError, ValueError):
                    codecs.lookup(mod.charset)
        self._start_hooks(mod)
        self.chrooted = chroot_dir is not None
        if chroot_dir is not None:
            try:
                os.chroot(chroot_dir)
            except OSError as exc:
                self.refuse("@ERROR: chroot failed",
                            f'chroot("{chroot_dir}") failed: {exc.strerror} ({exc.errno})')
            module_dir = module_dir[len(chroot_dir):] or "/" if chroot_dir != "/" else module_dir
        try:
            if chroot_dir is not None or mod.insecure_links:
                os.chdir(module_dir)
            else:
                # util1.c change_dir(): the module path is walked a component at a
                # time; a symlink on it is followed only when owned by root or us.
                fd = safepath.daemon_open(module_dir, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fchdir(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            self.refuse("@ERROR: chdir failed",
                        f'chdir "{module_dir}" (in module {name}) failed: {exc.strerror} '
                        f"({exc.errno})")
        self.sanitize = module_dir != "/"
        munge = mod.munge_symlinks
        self.munge = (chroot_dir is None or self.sanitize) if munge is None else munge
        if self.munge and os.path.isdir(SYMLINK_PREFIX.rstrip("/")):
            self.log(f"Symlink munging is unsafe when a {SYMLINK_PREFIX.rstrip('/')} "
                     "directory exists.")
            self.refuse("@ERROR: daemon security issue -- contact admin")
        self._drop_privileges(uid, gids)
        self.wire.write("@RSYNCD: OK\n")
        return self._transfer(mod, host, user_name, read_only, module_dir.encode())

    def _log_init(self, mod: Module) -> None:
        """log.c log_init(1): the module's own ``log file`` or syslog settings."""
        old = self.log.fd
        self.log.reopen_for(self.opts.log_file or mod.log_file, mod)
        if self.am_daemon > 0 and self.log.fd != old:
            if self.log.fd >= 0:
                os.dup2(self.log.fd, 2)  # stray stderr text follows the log
            else:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 2)
                os.close(null)

    def _load_filters(self, mod: Module, inner: str) -> None:
        """rsync_module(): the module's filter/include/exclude parameters."""
        from netsync.filters import FilterError

        self.dfilter = DaemonFilter(os.fsencode(inner))
        try:
            self.dfilter.load(mod)
        except FilterError as exc:
            self.log(exc.message or str(exc))
            raise _Refused() from None  # exit_cleanup() before "@RSYNCD: OK"

    def _start_hooks(self, mod: Module) -> None:
        """rsync_module(): post-xfer exec's fork, the early exec run, the pre-xfer
        command's and the name converter's start."""
        try:
            pre = mod.pre_xfer_exec
            post = mod.post_xfer_exec
            early = mod.early_exec
            conv = mod.name_converter
        except ConfigError as exc:  # a %RSYNC_*% value with a shell metacharacter
            for m in exc.messages:
                self.log(m.text)
            raise _Refused() from None
        if not (pre or post or early or conv) or os.environ.get("RSYNC_NO_XFER_EXEC"):
            return
        os.environ["RSYNC_PID"] = str(os.getpid())
        signal.alarm(0)  # no hook inherits the handshake's deadline
        if post:
            try:
                pid = os.fork()
            except OSError as exc:
                self.refuse("@ERROR: fork failed", f"fork failed: {exc.strerror}")
            if pid:
                self._run_post_xfer(pid, post)
        if early:
            # Run to completion before anything else of the module; it reads the
            # client's --early-input (at most 5 KiB) on its stdin.
            try:
                epid, arg_fd, _ = xfer_exec.start_pre_exec(early, capture=False)
            except OSError as exc:
                self.refuse("@ERROR: early exec preparation failed",
                            f"early exec preparation failed: {exc.strerror}")
            xfer_exec.write_pre_exec_args(arg_fd, None, [], early_input=self.early_input)
            failed = xfer_exec.finish_pre_exec("early exec", epid, -1)
            if failed is not None:
                self.refuse("@ERROR: early exec failed",
                            "early exec failed: " + failed.rstrip("\n").replace("\n", " "))
        self.early_input = b""
        if pre:
            try:
                self.pre_exec = xfer_exec.start_pre_exec(pre)
            except OSError as exc:
                self.refuse("@ERROR: pre-xfer exec preparation failed",
                            f"pre-xfer exec preparation failed: {exc.strerror}")
        if conv:
            try:
                self.namecvt = xfer_exec.start_pre_exec(conv)
            except OSError as exc:
                self.refuse("@ERROR: name-converter exec preparation failed",
                            f"name-converter exec preparation failed: {exc.strerror}")

    def _run_post_xfer(self, pid: int, cmd: str) -> None:
        """The parent of the transfer: wait for it, then run the command; never returns."""
        for fd in {0, 1, self.drain_fd, *self.conn_fds}:
            if fd >= 0 and fd != self.log.fd:
                with contextlib.suppress(OSError):
                    os.close(fd)
        status = xfer_exec.wait_status(pid)
        os.environ["RSYNC_RAW_STATUS"] = str(status)
        code = os.WEXITSTATUS(status) if status >= 0 and os.WIFEXITED(status) else -1
        os.environ["RSYNC_EXIT_STATUS"] = str(code)
        if xfer_exec.shell_exec(cmd) < 0:
            code = -1
        os._exit(code & 0xFF)

    def _auth(self, mod: Module, host: str) -> tuple[str, bool | None] | None:
        """auth_server(): ("", None) for an open module, None when refused."""
        if not mod.auth_users:
            return "", None
        name = mod.name
        try:
            digest = auth.negotiate_auth_digest(self.auth_choices, self.protocol)
        except auth.DigestError as exc:
            self.refuse(str(exc))
        why = auth.digest_floor_error(mod.auth_digest, digest)
        if why:
            self.log(f"auth failed on module {name} from {host} ({self.addr}): {why}")
            return None
        challenge = auth.make_challenge(digest)
        self.wire.write(f"@RSYNCD: AUTHREQD {challenge}\n")
        line = self.wire.read_line(ARG_MAX)
        response = (line or b"").decode("utf-8", "surrogateescape")
        res = auth.authenticate(response, challenge, digest, auth_users=mod.auth_users,
                                secrets_file=mod.secrets_file, strict_modes=mod.strict_modes,
                                log=self.log)
        if res.user is None:
            who = response.partition(" ")[0]
            tail = f" for {who}" if " " in response else ""
            self.log(f"auth failed on module {name} from {host} ({self.addr}){tail}: "
                     f"{res.error}")
            return None
        return res.user, res.read_only

    def _ids(self, mod: Module) -> tuple[int | None, list[int]]:
        am_root = os.geteuid() == 0
        name = mod.uid or (NOBODY_USER if am_root else "")
        uid = None
        if name:
            uid = _lookup_uid(name)
            if uid is None:
                self.refuse(f"@ERROR: invalid uid {name}", f"Invalid uid {name}")
        gids: list[int] = []
        tokens = auth.conf_strtok(mod.gid) if mod.gid else ([NOBODY_GROUP] if am_root else [])
        for i, tok in enumerate(tokens):
            if tok == "*" and i == 0:
                user = pwd.getpwuid(uid if uid is not None else os.getuid())
                gids.extend(os.getgrouplist(user.pw_name, user.pw_gid))
                continue
            gid = _lookup_gid(tok)
            if gid is None:
                self.refuse(f"@ERROR: invalid gid {tok}", f"Invalid gid {tok}")
            gids.append(gid)  # type: ignore[arg-type]
        return uid, gids

    def _paths(self, mod: Module) -> tuple[str, str | None]:
        """(module directory, directory to chroot into or None)."""
        path = mod.path
        if not path:
            self.refuse("@ERROR: no path setting.", f"No path specified for module {mod.name}")
        use_chroot = mod.use_chroot
        if use_chroot is None:
            # rsync tests chroot("/"): it works only with the privilege to chroot.
            use_chroot = "/./" in path or os.geteuid() == 0
        full = os.path.normpath(os.path.abspath(path.replace("/./", "/")))
        if not use_chroot:
            return full, None
        if "/./" in path:
            outer = os.path.normpath(os.path.abspath(path.split("/./", 1)[0]))
            return full, outer
        return full, full

    def _drop_privileges(self, uid: int | None, gids: list[int]) -> None:
        try:
            if gids:
                os.setgid(gids[0])
                os.setgroups(gids)
            if uid is not None and uid != os.geteuid():
                os.setuid(uid)
        except OSError as exc:
            what = "setuid" if gids and os.getegid() == gids[0] else "setgid"
            self.refuse(f"@ERROR: {what} failed", f"{what} failed: {exc.strerror}")

    # -- the transfer ------------------------------------------------------
    def _read_args(self, nulls: bool) -> list[bytes]:
        eol = b"\0" if nulls else b"\n"
        args: list[bytes] = []
        while True:
            line = self.wire.read_line(ARG_MAX, eol)
            if not line:  # the empty terminator (or EOF)
                if line is None:
                    raise _Refused()
                return args
            if len(args) >= MAX_DAEMON_ARGS - 1:
                self.log("too many daemon arguments")  # io.c read_args(): then exit
                raise _Refused()
            args.append(line)

    def _transfer(self, mod: Module, host: str, user: str, read_only: bool,
                  module_dir: bytes) -> int:
        from netsync.options import OptionError, parse_server_args
        from netsync.server import DaemonLink, run_server

        raw = _unescape_options(self._read_args(self.protocol >= 30))
        argv = [os.fsdecode(a) for a in raw]
        error: str | None = None
        opts = None
        try:
            opts = parse_server_args(argv)
        except OptionError as exc:
            error = exc.message or "option error"
        except E.UsageError as exc:
            error = exc.message or "option error"
        if opts is not None and opts.secluded_args:
            raw = self._read_args(True)[1:]  # the first word is the program name
            argv = [*argv[:argv.index(".") + 1 if "." in argv else len(argv)],
                    *(os.fsdecode(a) for a in raw)]
            try:
                opts = parse_server_args(argv)
            except (OptionError, E.UsageError) as exc:
                error = exc.message or "option error"
        if error is None:
            # Even with no "refuse options" some are refused (--insecure-links,
            # --log-file, --iconv without a module charset): set_refuse_options().
            hit = refuse.refused(argv, mod.refuse_options or "", charset=mod.charset or "",
                                 log=self.log)
            if hit is not None:
                error = hit.message
        signal.alarm(0)
        if opts is None:
            from netsync.options import Options

            opts = Options()
            opts.server = True
            opts.sender = "--sender" in argv
        am_sender = bool(opts.sender)
        request = " ".join(argv[argv.index(".") + 1:]) if "." in argv else ""
        if request:
            who = f"{user}@{host}" if user else host
            self.log(f"rsync {'on' if am_sender else 'to'} {request} from {who} ({self.addr})")
        pre_error = None
        if self.pre_exec is not None or self.namecvt is not None:
            files: list[bytes] = []
            if b"." in raw:
                for a in raw[raw.index(b".") + 1:]:
                    files.extend(expand_module_arg(mod.name.encode(), a,
                                                   split=not opts.secluded_args))
            request, words = xfer_exec.pre_exec_words(raw, files)
            if self.pre_exec is not None:
                pid, arg_fd, out_fd = self.pre_exec
                xfer_exec.write_pre_exec_args(arg_fd, request, words)
                pre_error = xfer_exec.finish_pre_exec("pre-xfer exec", pid, out_fd)
            if self.namecvt is not None:
                from netsync.daemon import namecvt

                # It reads the same request and words first; then its requests follow
                # on that pipe, answered on its stdout, for the rest of the connection.
                cpid, req_fd, ans_fd = self.namecvt
                xfer_exec.write_pre_exec_args(req_fd, request, words, keep_open=True)
                namecvt.active = namecvt.NameConverter(cpid, req_fd, ans_fd)
                namecvt.active.on_error = self.log
        numeric = mod.numeric_ids
        if not opts.numeric_ids and ((numeric is not False and not mod.name_converter)
                                     if self.chrooted else numeric is True):
            from netsync.daemon import namecvt

            # "numeric ids": as --numeric-ids, without changing what the wire carries.
            namecvt.active = namecvt.NoNames()
        if self.namecvt is not None and not opts.numeric_ids:
            from netsync.daemon import namecvt
            from netsync.flist_codec import FlistDecoder

            if isinstance(namecvt.active, namecvt.NameConverter):
                # A name in a received entry is converted as it is read (recv_add_id()).
                FlistDecoder.name_hook = namecvt.active.name_to_id
        if error is None:
            _sanitize_opts(opts, mod.name.encode(), module_dir)
            if not am_sender and self.dfilter is not None and self.dfilter.active \
                    and _filter_rejects(self.dfilter, (opts.temp_dir, opts.backup_dir)):
                error = OPTIONS_REJECTED
        if error is None:
            self._apply_module(opts, mod)
        if self.dfilter is not None:
            self.dfilter.install()
        # The module, not the client, decides on munging (rsync_module()).
        opts.munge_links = self.munge
        if self.munge:
            from netsync import sender

            sender.unmunge_links = True
        link = DaemonLink(protocol=self.protocol, remote_protocol=self.remote_protocol,
                          read_only=read_only, write_only=mod.write_only, error=error,
                          files_from=any(a.startswith("--files-from") for a in argv),
                          sanitize=self.sanitize and not self.munge,
                          pre_exec_error=pre_error,
                          incoming_chmod=None if am_sender else self._incoming_chmod(mod),
                          dont_compress=mod.dont_compress, charset=mod.charset or "")
        opts.daemon = False
        opts.server = True
        # The module is a jail for every path a client names: only the module's
        # "insecure links" (never a client's --insecure-links) lifts that.
        safepath.insecure_links = bool(mod.insecure_links)
        safepath.confine_root = None if mod.insecure_links else os.getcwdb()
        link.module = mod.name
        dest = None
        if not am_sender:
            dest = os.fsencode(opts.args[1]) if len(opts.args) > 1 else b"."
        xferlog.current = xferlog.TransferLog(
            self.log, fmt=(mod.log_format if mod.transfer_logging else None),
            module=mod.name, module_path=os.environ.get("RSYNC_MODULE_PATH", ""),
            module_root=module_dir, host=host, addr=self.addr, user=user,
            am_sender=am_sender, dest=dest, dry_run=bool(opts.dry_run),
            preserve_uid=bool(opts.owner), preserve_gid=bool(opts.group), munge=self.munge)
        code = run_server(opts, link)
        xferlog.current.finish(code)
        if code and self.drain_fd >= 0:
            _drain(self.drain_fd)
        return code

    def _incoming_chmod(self, mod: Module) -> list | None:
        from netsync.chmod import parse_chmod

        if not mod.incoming_chmod:
            return None
        try:
            return parse_chmod([mod.incoming_chmod])
        except E.UsageError:
            self.log(f'Invalid "incoming chmod" directive: {mod.incoming_chmod}')
            return None

    def _apply_module(self, opts, mod: Module) -> None:
        from netsync.options import limit_output_verbosity

        if mod.ignore_errors:
            opts.ignore_errors = True
        if mod.timeout > 0 and (not opts.timeout or mod.timeout < opts.timeout):
            opts.timeout = mod.timeout
        # options.c: the daemon's --bwlimit caps what a client asks for.
        cap = self.opts.daemon_bwlimit
        if cap and (not opts.bwlimit or opts.bwlimit > cap):
            opts.bwlimit = cap
        if mod.temp_dir:
            opts.temp_dir = mod.temp_dir
        if mod.open_noatime is not None:  # clientserver.c: unset leaves the client's choice
            opts.open_noatime = mod.open_noatime
        if mod.fake_super:
            opts.am_root = -1
        elif opts.am_root < 0:  # clientserver.c: a client's --fake-super means --super
            opts.am_root = 2
        chmod = mod.outgoing_chmod if opts.sender else mod.incoming_chmod
        if chmod:
            opts.chmod = [*opts.chmod, chmod]
        limit_output_verbosity(opts, mod.max_verbosity)


OPTIONS_REJECTED = "Your options have been rejected by the server."


def _filter_rejects(dfilter: DaemonFilter, dirs) -> bool:
    """options.c / main.c do_server_recv(): a --temp-dir, --backup-dir, --*-dest or
    absolute --partial-dir the module's own rules exclude (as a dir, by its name
    with ".." collapsed) rejects the client's options; so does an empty one."""
    for d in dirs:
        if d is None:
            continue
        if not d:
            return True
        clean = sanitize_path(os.fsencode(d), b"/", 0)
        if dfilter.excluded(clean, True):
            return True
    return False


def _sanitize_opts(opts, mod: bytes, module_dir: bytes) -> None:
    """The path arguments and path options as rsync's daemon sanitizes them."""
    args = [os.fsencode(a) for a in opts.args]
    if b"." in args:
        dot = args.index(b".")
        files: list[bytes] = []
        for a in args[dot + 1:]:
            files.extend(expand_module_arg(mod, a, split=not opts.secluded_args))
        args = [b".", *files]
    else:
        args = [sanitize_path(a, b"", 0, keep_dot_dirs=True) for a in args]
    opts.args = [os.fsdecode(a) for a in args]
    dest_depth = 0
    if not opts.sender and len(args) > 1:
        dest_depth = len([c for c in args[1].split(b"/") if c not in (b"", b".")])

    def fix(value: str | None, depth: int = 0) -> str | None:
        if value is None:
            return None
        return os.fsdecode(sanitize_path(os.fsencode(value), module_dir, depth))

    opts.temp_dir = fix(opts.temp_dir)
    opts.backup_dir = fix(opts.backup_dir)
    opts.partial_dir = fix(opts.partial_dir, dest_depth) if opts.partial_dir else None
    for kind in ("compare_dest", "copy_dest", "link_dest"):
        # main.c do_server_recv(): relative to the destination dir, so as many
        # leading ".." as it is deep (curr_dir_depth) reach the module's top, no more.
        setattr(opts, kind, [fix(d, dest_depth) for d in getattr(opts, kind)])


def _drain(fd: int, limit: float = 2.0) -> None:
    """After an error, read what the client still sends until it hangs up (bounded):
    closing a socket with unread data would reset the connection before the
    client has read our error (rsync sleeps 400 ms there)."""
    deadline = time.monotonic() + limit
    with contextlib.suppress(OSError, ValueError):
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not ready or not os.read(fd, 65536):
                return


def _handshake_timeout(section: Module) -> int:
    t = section.timeout
    return HANDSHAKE_TIMEOUT if t <= 0 or t > HANDSHAKE_TIMEOUT else t


def _atoi(b: bytes) -> int:
    digits = b.strip()
    return int(digits) if digits.isdigit() else -1


def _read_exact(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise _Refused()
        out += chunk
    return bytes(out)


def _config_path(opts) -> str:
    return opts.config or DEFAULT_CONFIG


def _tune_connection(sockopts: str | None = None) -> None:
    """The client's TCP connection on fd 0 (and 1): see transport.tune_tcp() (a socket
    object of our own for it, on a duplicate descriptor; inetd's may be anything)."""
    try:
        sock = socket.socket(fileno=os.dup(0))
    except OSError:  # not a socket (a pipe, in inetd or stdio mode)
        return
    if tune_tcp(sock, (0, 1), sockopts):
        _tuned.append(sock)  # (kept open for the connection's life)
    else:
        sock.close()


_tuned: list[socket.socket] = []


def serve_connection(f_in: int, f_out: int, opts, addr: str, am_daemon: int = 1,
                     config: DaemonConfig | None = None) -> int:
    """Run the daemon conversation with one client on ``f_in``/``f_out``.

    The binary protocol reads stdin/stdout, so the descriptors are moved
    there; the caller must be a process dedicated to this client.
    """
    if config is None:
        try:
            config = load_config(_config_path(opts), opts.dparam)
        except ConfigError as exc:
            sys.stderr.write(f"{exc}\n")
            return E.RERR_SYNTAX
    log = DaemonLog(opts.log_file or config.globals.log_file, config.globals)
    for fd, target in ((f_in, 0), (f_out, 1)):
        if fd != target:
            os.dup2(fd, target)
    if am_daemon > 0:
        _tune_connection(opts.sockopts or config.globals.socket_options)
        # A daemon has no stderr for messages (msgs2stderr = 0).
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(log.fd if log.fd >= 0 else null, 2)
        os.close(null)
    global _alarm_log
    _alarm_log = log
    signal.signal(signal.SIGALRM, _on_alarm)
    session = _Session(_Wire(0, 1), opts, addr, am_daemon, log)
    session.config = config
    session.conn_fds = tuple(fd for fd in (f_in, f_out) if fd > 2)
    if am_daemon > 0:
        session.drain_fd = os.dup(0)
    try:
        return session.run()
    except _Refused:
        return E.RERR_STARTCLIENT
    except OSError as exc:
        if exc.errno in (errno.EPIPE, errno.ECONNRESET):
            return E.RERR_SOCKETIO
        raise
    finally:
        signal.alarm(0)


# ---------------------------------------------------------------------------
# the listener (socket.c open_socket_in / start_accept_loop, main.c daemon_main)


def _rsh_peer_address() -> str:
    """client_addr() for a daemon over a remote shell: $SSH_CONNECTION's first word."""
    for var in ("SSH_CONNECTION", "SSH_CLIENT", "SSH2_CLIENT"):
        val = os.environ.get(var, "").split()
        if val:
            return val[0]
    return "0.0.0.0"


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def run_daemon(opts) -> int:
    """``netsync --daemon`` (and ``--server --daemon``): the entry point from the CLI."""
    if opts.server:
        return serve_connection(0, 1, opts, _rsh_peer_address(), am_daemon=-1)
    try:
        config = load_config(_config_path(opts), opts.dparam)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return E.RERR_SYNTAX
    if _is_socket(0):  # started by inetd / a systemd socket unit (Accept=yes)
        sock = socket.socket(fileno=os.dup(0))
        try:
            addr = access.peer_address(sock.getpeername())
        except OSError:
            addr = "0.0.0.0"
        sock.detach()
        return serve_connection(0, 1 if _is_socket(1) else 0, opts, addr, config=config)
    return _listen(opts, config)


def _open_listeners(address: str | None, port: int, af_hint: int, sockopts: str | None,
                    warn: Callable[[str], None]) -> list[socket.socket]:
    """socket.c open_socket_in(): a socket per address (only IPv4 with -4, only IPv6
    with -6), bound, each with --sockopts (else the global "socket options");
    non-blocking, for the accept loop to drain.  They listen later (_start_listening)."""
    from netsync.transport.daemon import set_socket_options

    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(af_hint, socket.AF_UNSPEC)
    infos = socket.getaddrinfo(address or None, port, family, socket.SOCK_STREAM,
                               0, socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    last: OSError | None = None
    for fam, typ, proto, _, sa in infos:
        try:
            s = socket.socket(fam, typ, proto)
        except OSError as exc:
            last = exc
            continue
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sockopts:
            set_socket_options(s, sockopts, warn)
        if fam == socket.AF_INET6:
            try:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            except OSError:
                if af_hint != 6:  # as rsync: a dual-stack socket only when asked for v6
                    s.close()
                    continue
        try:
            s.bind(sa)
        except OSError as exc:
            last = exc
            s.close()
            continue
        s.set_inheritable(False)
        s.setblocking(False)
        socks.append(s)
    if not socks:
        raise last or OSError(errno.EADDRNOTAVAIL, "no address to listen on")
    return socks


class _Stop(Exception):
    pass


def _listen(opts, config: DaemonConfig) -> int:
    # Import the engine once, before listening: every forked connection then starts with
    # it loaded (pages shared copy-on-write) instead of importing it again per client.
    _preload_modules()
    _tune_malloc()
    _warm_lookups(config)
    # Keep the garbage collector off the preloaded objects in the forked children: a
    # collection there would write to (and so copy) every shared page it walks.
    gc.collect()
    gc.freeze()
    g = config.globals
    port = opts.port or g.port or DEFAULT_PORT
    address = opts.address or g.address or None
    log = DaemonLog(opts.log_file or g.log_file, g)
    if g.proxy_protocol and not g.proxy_protocol_hosts:
        # Fail-closed but silent otherwise: clientserver.c daemon_main() warns.
        msg = ('"proxy protocol = true" but "proxy protocol hosts" is unset: all '
               "connections will be rejected as untrusted proxy peers.  Set "
               '"proxy protocol hosts" to your trusted proxy\'s address.')
        log(msg)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()
    try:
        socks = _open_listeners(address, port, opts.af_hint,
                                opts.sockopts or g.socket_options or None, log)
    except OSError as exc:
        msg = f"{PROG_NAME}: failed to create listening socket on port {port}: {exc.strerror or exc}"
        log(msg)
        sys.stderr.write(msg + "\n")
        return E.RERR_SOCKETIO
    if opts.detach is not False:
        _become_daemon()
    pid_file = g.pid_file
    if pid_file:
        try:
            fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
        except OSError as exc:
            log(f"failed to create pid file {pid_file}: {exc.strerror}")
            return E.RERR_FILEIO
    from netsync import __version__

    # rsync's line, which log watchers match ("rsyncd version X starting, ...").
    log(f"rsyncd version {__version__} (netsync) starting, listening on port {port}")
    # socket.c start_accept_loop(): the sockets listen only now, so a client that
    # gets in finds the pid file and that line already written.
    for s in socks:
        try:
            s.listen(g.listen_backlog or 5)
        except OSError as exc:
            log(f"listen() on socket failed: {exc.strerror} ({exc.errno})")
            if pid_file:
                with contextlib.suppress(OSError):
                    os.unlink(pid_file)  # (cleanup.c: the daemon's own pid file goes)
            return E.RERR_SOCKETIO

    def stop(_sig: int, _frame: object) -> None:
        raise _Stop()

    def reap(_sig: int, _frame: object) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # Connections the kernel has completed are taken off its queue before each fork: a
    # fork of this (big) process takes a millisecond or two, and a burst of clients
    # would otherwise overflow the listen backlog, each dropped handshake costing its
    # client a retransmit a second later.  At most _MAX_PENDING wait here for a fork.
    pending: collections.deque[tuple[socket.socket, tuple[object, ...]]] = collections.deque()
    try:
        while True:
            try:
                ready, _, _ = select.select(socks, [], [], 0 if pending else None)
            except InterruptedError:
                continue
            for s in ready:
                while len(pending) < _MAX_PENDING:
                    try:
                        pending.append(s.accept())
                    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                        break
            if pending:
                conn, peer = pending.popleft()
                config = _current_config(config, opts)
                _fork_child(conn, peer, opts, socks, log, config)
    except _Stop:
        pass
    finally:
        for conn, _ in pending:
            conn.close()
        for s in socks:
            s.close()
        if pid_file:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)
    return 0


PROG_NAME = "netsync"


_MAX_PENDING = 128  # accepted connections waiting for their process


def _current_config(config: DaemonConfig | None, opts) -> DaemonConfig | None:
    """The configuration a connection's process would read now, parsed in the listener:
    the last one while its files (and the environment) are unchanged, else a fresh load
    (None if that fails: the connection's process then loads it and reports why)."""
    if config is not None and config.is_current():
        return config
    try:
        config = load_config(_config_path(opts), opts.dparam)
    except ConfigError:
        return None
    _build_refuse_tables(config)
    return config


def _fork_child(conn: socket.socket, peer: tuple[object, ...], opts,
                socks: list[socket.socket], log: Callable[[str], None],
                config: DaemonConfig | None = None) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        log(f"fork failed: {exc.strerror}")
        conn.close()
        return
    if pid:
        conn.close()
        return
    code = E.RERR_IPC
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD,
                    signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for s in socks:
            s.close()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        fd = conn.detach()
        # rsync's connection process re-reads the config; the listener has just checked
        # that its parse is what that read would give (else config is None: read it).
        code = serve_connection(fd, fd, opts, access.peer_address(peer), config=config)
    except BaseException:  # never return into the accept loop from a child
        if os.environ.get("NETSYNC_DEBUG"):
            import traceback

            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(code)


def _become_daemon() -> None:
    """main.c become_daemon(): fork, setsid, stdio to /dev/null."""
    if os.fork():
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
