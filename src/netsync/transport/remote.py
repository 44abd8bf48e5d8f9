"""Remote specs on the command line, parsed exactly as rsync parses them.

Mirrors rsync 3.5.0's ``check_for_hostspec``/``parse_hostspec`` (options.c)
and the argument triage in ``start_client`` (main.c): which side is remote,
whether the connection is a remote shell, a daemon over TCP or a daemon
over a remote shell, and the errors rsync gives for mixed arguments.

Pure: no I/O.  Arguments are ``str`` as they come from ``sys.argv`` (with
surrogate escapes for undecodable bytes).
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from netsync.errors import RERR_SYNTAX, RsyncError
from netsync.record import Record, factory

RSYNC_PORT = 873
URL_PREFIX = "rsync://"

__all__ = [
    "RSYNC_PORT", "Mode", "RemoteSpec", "TransferPlan", "check_for_hostspec",
    "parse_remote", "split_user", "split_module", "plan_transfer", "SpecError",
]


class SpecError(RsyncError):
    """A command-line arrangement rsync refuses; printed without the "rsync:" prefix."""

    bare = True

    def __init__(self, message: str, code: int = RERR_SYNTAX) -> None:
        super().__init__(code, message)


def _parse_hostspec(s: str, want_port: bool) -> tuple[str, int, int | None] | None:
    """rsync's parse_hostspec(): ("[user@]host", path start index, port) or None.

    ``port`` is None unless ``want_port`` (URL mode) and a ":PORT" was seen.
    Without ``want_port`` a '/' before the first ':' means a local path.
    """
    host_start = 0
    hostlen = -1
    userlen = 0
    port: int | None = None
    i = 0
    n = len(s)
    while True:
        if i >= n:
            # Running out of string is only fine for rsync:// URLs.
            if not want_port:
                return None
            if hostlen < 0:
                hostlen = i - host_start
            break
        ch = s[i]
        if ch in ":/":
            if hostlen < 0:
                hostlen = i - host_start
            i += 1
            if ch == "/":
                if not want_port:
                    return None
            elif want_port:
                j = i
                while j < n and s[j].isdigit() and s[j].isascii():
                    j += 1
                port = int(s[i:j]) if j > i else 0
                i = j
                if i < n:
                    if s[i] != "/":
                        return None
                    i += 1
            break
        if ch == "@":
            userlen = i + 1
            host_start = i + 1
        elif ch == "[":
            if i != host_start:
                return None
            host_start += 1
            while i < n and s[i] not in "]/":
                i += 1
            hostlen = i - host_start
            if i >= n or s[i] != "]" or (i + 1 < n and s[i + 1] not in "/:") or not hostlen:
                return None
        i += 1
    host = s[:userlen] + s[host_start:host_start + hostlen]
    return host, i, port


def check_for_hostspec(arg: str, port: int | None = 0) -> tuple[str, str, int] | None:
    """rsync's check_for_hostspec(): ("[user@]host", path, port) or None for a local arg.

    ``port`` is the current port setting (``--port`` or 0), or None when the
    caller only wants to know whether ``arg`` names a host (rsync passes a
    NULL port pointer then, and "rsync://" is not recognised).  The returned
    port is 0 for a remote-shell spec ("host:path"), -1 for "use the default
    daemon port" and > 0 for an explicit one.
    """
    if port is not None and arg[:len(URL_PREFIX)].lower() == URL_PREFIX:
        parsed = _parse_hostspec(arg[len(URL_PREFIX):], True)
        if parsed is not None:
            host, start, url_port = parsed
            got = url_port if url_port is not None else port
            return host, arg[len(URL_PREFIX) + start:], got or -1
    parsed = _parse_hostspec(arg, False)
    if parsed is None:
        return None
    host, start, _ = parsed
    path = arg[start:]
    if path.startswith(":"):
        return host, path[1:], (port or -1) if port is not None else -1
    return host, path, 0


def split_user(hostspec: str) -> tuple[str | None, str]:
    """"user@host" -> ("user", "host"); the last '@' separates, as in rsync."""
    user, at, host = hostspec.rpartition("@")
    return (user, host) if at else (None, hostspec)


def split_module(path: str) -> tuple[str, str]:
    """A daemon path "module/sub/dir" -> ("module", "sub/dir")."""
    module, _, rest = path.partition("/")
    return module, rest


class Mode(Enum):
    LOCAL = "local"
    SHELL = "shell"  # rsync --server over a remote shell
    DAEMON = "daemon"  # rsync daemon over TCP
    DAEMON_SHELL = "daemon-shell"  # "rsync --server --daemon ." over a remote shell


class RemoteSpec(NamedTuple):
    """One remote argument."""

    host: str  # without IPv6 brackets and without the user
    user: str | None
    path: str  # the part after ':' / '::' / 'rsync://host[:port]/'
    port: int  # 0 remote shell, -1 default daemon port, > 0 explicit
    url: bool = False

    @property
    def daemon(self) -> bool:
        return self.port != 0


def parse_remote(arg: str, port: int = 0) -> RemoteSpec | None:
    """Parse one argument; None when it is a local path."""
    got = check_for_hostspec(arg, port)
    if got is None:
        return None
    hostspec, path, got_port = got
    user, host = split_user(hostspec)
    return RemoteSpec(host=host, user=user, path=path, port=got_port,
                      url=arg[:len(URL_PREFIX)].lower() == URL_PREFIX)


class TransferPlan(Record):
    """What ``start_client`` works out from the non-option arguments.

    ``remote_paths`` are the paths on the remote side (module-prefixed for a
    daemon, "" for a module listing); ``local_paths`` are the local sources
    (push) or the single destination (pull; empty when there is none, which
    means list only).
    """

    mode: Mode
    am_sender: bool
    host: str | None = None
    user: str | None = None
    port: int = 0  # TCP port for a daemon (default 873 resolved), else 0
    remote_paths: list[str] = factory(list)
    local_paths: list[str] = factory(list)

    @property
    def daemon(self) -> bool:
        return self.mode in (Mode.DAEMON, Mode.DAEMON_SHELL)

    @property
    def module(self) -> str:
        """The daemon module named by the first remote path ("" = module listing)."""
        return split_module(self.remote_paths[0])[0] if self.remote_paths else ""


def plan_transfer(args: list[str], *, port: int = 0, shell_cmd: str | None = None,
                  password_file: str | None = None, contimeout: int = 0,
                  files_from_host: str | None = None) -> TransferPlan:
    """rsync's start_client() triage of ``args`` (sources then destination).

    ``shell_cmd`` is the -e/--rsh value only (RSYNC_RSH does not turn a
    "host::module" into daemon-over-shell, as in rsync).  Raises SpecError
    with rsync's messages and exit code 1.
    """
    if not args:
        raise SpecError("no arguments")
    args = list(args)
    first = check_for_hostspec(args[0], port)
    remote_paths: list[str]
    local_paths: list[str]
    if first is not None:  # pull: the source is remote
        hostspec, path, the_port = first
        am_sender = False
        last = args[-1]
        if len(args) == 1 or last.startswith(":"):
            remote_paths = [path] + args[1:]
            local_paths = []
        else:
            if check_for_hostspec(last, 0) is not None:
                raise SpecError("The source and destination cannot both be remote.")
            remote_paths = [path] + args[1:-1]
            local_paths = [last]
        if files_from_host and files_from_host != hostspec:
            raise SpecError("--files-from hostname is not the same as the transfer hostname")
    else:  # push, or a local copy
        am_sender = True
        if len(args) > 1:
            dest = args[-1] or _dot_dir_or_error()
            local_paths = args[:-1]
        else:
            dest = "."
            local_paths = args
        got = check_for_hostspec(dest, port)
        if got is not None and files_from_host and files_from_host != got[0]:
            raise SpecError("--files-from hostname is not the same as the transfer hostname")
        if got is None and files_from_host is not None:
            raise SpecError("--files-from cannot be remote when the transfer is local")
        the_port = got[2] if got is not None else 0
        for i, a in enumerate(local_paths):
            if not a:
                raise SpecError("Empty source arg specified.")
            if i and check_for_hostspec(a, the_port) is not None:
                raise SpecError(f"Unexpected remote arg: {a}")
        if got is None:
            return TransferPlan(Mode.LOCAL, True, local_paths=local_paths, remote_paths=[dest])
        hostspec, path, the_port = got
        remote_paths = [path]
    daemon = the_port != 0
    if not daemon and not remote_paths[0]:
        remote_paths[0] = "."
    if not am_sender:
        for i in range(1, len(remote_paths)):
            got = check_for_hostspec(remote_paths[i], the_port)
            if got is None:
                raise SpecError(f"Unexpected local arg: {remote_paths[i]}\n"
                                "If arg is a remote file/dir, prefix it with a colon (:).")
            other_host, other_path, other_port = got
            if other_host and other_host != hostspec:
                raise SpecError("All source args must come from the same machine.")
            if other_port != the_port:
                if not the_port or not other_port:
                    raise SpecError("All source args must use the same hostspec format.")
                raise SpecError("All source args must use the same port number.")
            remote_paths[i] = other_path if (daemon or other_path) else "."
    user, host = split_user(hostspec)
    if daemon:
        mode = Mode.DAEMON_SHELL if shell_cmd else Mode.DAEMON
        if remote_paths[0].startswith("/"):
            raise SpecError("ERROR: The remote path must start with a module name not a /",
                            code=5)
        return TransferPlan(mode, am_sender, host=host, user=user,
                            port=RSYNC_PORT if the_port < 0 else the_port,
                            remote_paths=remote_paths, local_paths=local_paths)
    if password_file:
        raise SpecError("The --password-file option may only be used when accessing an "
                        "rsync daemon.")
    if contimeout:
        raise SpecError("The --contimeout option may only be used when connecting to an "
                        "rsync daemon.")
    if host.startswith("-"):
        raise SpecError("Invalid remote host: hostnames may not start with '-'.")
    return TransferPlan(Mode.SHELL, am_sender, host=host, user=user, port=0,
                        remote_paths=remote_paths, local_paths=local_paths)


def _dot_dir_or_error() -> str:
    raise SpecError('Empty destination arg specified (use "." or see --old-args).')
