"""The remote-shell transport: rsync's do_cmd() and the server argument vector.

``build_rsh_command`` reproduces the command line stock rsync runs
(``ssh [-l user] [-4|-6] host rsync --server [--sender] -flags . paths``),
including its -e word splitting and quoting rules; ``server_args`` builds
the vector after the remote program (command-line part and, with
``--secluded-args``, the part sent over the connection); ``spawn`` starts
the child and returns a :class:`~netsync.transport.PipeConnection`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from netsync.errors import RERR_IPC, RERR_SYNTAX
from netsync.record import Record, factory
from netsync.transport import PipeConnection, TransportError, pre_fork_who

if TYPE_CHECKING:
    from netsync.options import Options

__all__ = [
    "RSYNC_RSH_DEFAULT", "ServerArgs", "split_rsh", "rsh_command", "build_rsh_command",
    "safe_path_arg", "server_args", "encode_secluded", "wants_blocking_io", "spawn",
]

RSYNC_RSH_DEFAULT = "ssh"  # rsync's RSYNC_RSH compile-time default
_SHELL_CHARS = "!#$&;|<>(){}\"'` \t\n\r\\"
_WILD_CHARS = "*?[]"


def split_rsh(cmd: str) -> list[str]:
    """Split an -e/RSYNC_RSH value the way rsync's do_cmd() does.

    Words are separated by spaces only (not tabs); single or double quotes
    group, and a doubled quote character inside quotes stands for itself.
    No backslash escapes.
    """
    args: list[str] = []
    i, n = 0, len(cmd)
    in_quote = ""
    while i < n:
        if cmd[i] == " ":
            i += 1
            continue
        word: list[str] = []
        while i < n and (cmd[i] != " " or in_quote):
            ch = cmd[i]
            if ch in "'\"":
                if not in_quote:
                    in_quote = ch
                    i += 1
                    continue
                if ch == in_quote:
                    if i + 1 < n and cmd[i + 1] == in_quote:
                        word.append(ch)  # a doubled quote is a literal one
                        i += 2
                        continue
                    in_quote = ""
                    i += 1
                    continue
            word.append(ch)
            i += 1
        args.append("".join(word))
    if in_quote:
        raise TransportError(RERR_SYNTAX, f"Missing trailing-{in_quote} in remote-shell command.",
                             bare=True)
    return args


def rsh_command(opts: Options) -> str:
    """-e value, else $RSYNC_RSH, else "ssh"."""
    return opts.rsh or os.environ.get("RSYNC_RSH") or RSYNC_RSH_DEFAULT


def wants_blocking_io(opts: Options) -> bool:
    """rsync turns blocking I/O on by default for rsh/remsh (not for ssh)."""
    if opts.blocking_io is not None:
        return opts.blocking_io
    prog = split_rsh(rsh_command(opts))[0].rsplit("/", 1)[-1] if rsh_command(opts) else ""
    return prog in ("rsh", "remsh")


def _protect_args(opts: Options) -> bool:
    return bool(opts.secluded_args) and not opts.old_args


def safe_path_arg(opts: Options, path: str, am_sender: bool) -> str:
    """rsync's safe_arg(NULL, path) for a remote file name on the command line.

    The remote shell would otherwise expand it: shell characters get a
    backslash (wildcards are kept), a leading '-' becomes "./-", and a
    leading '~' is escaped when pulling so the remote side does not expand it
    into a path the user did not ask for.
    """
    if path.startswith("-"):
        path = "./" + path
    if _protect_args(opts) or opts.old_args >= 1:
        return path
    out = []
    if (path.startswith("~") and not am_sender and not opts.trust_sender
            and ((opts.relative and "/./" not in path) or "/" not in path)):
        out.append("\\")
    for k, ch in enumerate(path):
        if ch == "\\":
            nxt = path[k + 1:k + 2]
            if not (nxt and nxt in _WILD_CHARS):
                out.append("\\")
        elif ch in _SHELL_CHARS:
            out.append("\\")
        out.append(ch)
    return "".join(out)


class ServerArgs(Record):
    """The remote program's arguments.

    ``argv`` goes on the remote command line (after the rsync path);
    ``secluded`` (with --secluded-args) is sent over the connection first,
    see :func:`encode_secluded`.
    """

    argv: list[str]
    secluded: list[str] = factory(list)


def server_args(opts: Options, am_sender: bool, paths: list[str]) -> ServerArgs:
    """``--server [--sender] -flags [options] . paths`` exactly as rsync's client builds it.

    ``am_sender`` is the client's role (True for a push); ``paths`` are the
    remote paths from the command line.
    """
    from netsync.options import server_options

    head, rest = server_options(opts, am_sender)
    quoted = [safe_path_arg(opts, p, am_sender) for p in paths]
    if _protect_args(opts):
        return ServerArgs(head, ["rsync", *rest, ".", *quoted])
    return ServerArgs([*head, ".", *quoted])


def child_argv_line(prefix: str, argv: list[str]) -> str:
    """util1.c print_child_argv(): the words, quoted where they hold anything but
    ``[A-Za-z0-9,.-_=+@/]`` (for a log line, not for a shell), and their count."""
    words = "".join(f"{w} " if w and not w.strip(_PLAIN) else f'"{w}" ' for w in argv)
    return f"{prefix} {words} ({len(argv)} args)"


_PLAIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.-_=+@/"


def encode_secluded(words: list[str]) -> bytes:
    """rsync's send_protected_args(): NUL-terminated words, "" sent as ".", then a NUL."""
    return b"".join(os.fsencode(w or ".") + b"\0" for w in words) + b"\0"


def build_rsh_command(opts: Options, host: str, user: str | None, server_argv: list[str],
                      *, daemon: bool = False) -> list[str]:
    """The full remote-shell command line (rsync's do_cmd()).

    ``server_argv`` is :attr:`ServerArgs.argv` (ignored with ``daemon``,
    which runs ``rsync --server --daemon .`` for a daemon over a remote shell).
    """
    args = split_rsh(rsh_command(opts))
    if not args:
        raise TransportError(RERR_SYNTAX, "Missing remote-shell command.", bare=True)
    prog = args[0].rsplit("/", 1)[-1]
    dash_l_set = any(args[i] == "-l" and not args[i + 1].startswith("-")
                     for i in range(len(args) - 1))
    if user and not (daemon and dash_l_set):
        args += ["-l", user]
    if prog == "ssh" and opts.af_hint in (4, 6):
        args.append(f"-{opts.af_hint}")
    args += [host, opts.rsync_path]
    if daemon:
        return [*args, "--server", "--daemon", "."]
    return [*args, *server_argv]


class ExecFailed(TransportError):
    """The remote shell could not be run.  rsync's forked child says so and exits 14
    (pipe.c); the parent then finds the connection closed, which its caller reports
    (rsh: "connection unexpectedly closed", a daemon over rsh: no greeting)."""

    def __init__(self, who: str, program: str, exc: OSError) -> None:
        from netsync.errors import exit_message
        from netsync.helptext import PROG

        self.who = pre_fork_who(who)
        self.child_lines = (f"{PROG}: [{self.who}] Failed to exec {program}: {exc.strerror} "
                            f"({exc.errno})\n{exit_message(RERR_IPC, PROG)}")
        super().__init__(RERR_IPC, self.child_lines + f"\n{PROG}: connection unexpectedly "
                         f"closed (0 bytes received so far) [{self.who}]", bare=True)


def spawn(cmd: list[str], *, who: str = "client",
          env: dict[str, str] | None = None) -> PipeConnection:
    """Start the remote shell with pipes on its stdin/stdout (stderr is the user's).

    A command that cannot be executed gives rsync's "Failed to exec" error
    (exit 14); a remote rsync that is missing shows up later as the shell's
    own message plus "connection unexpectedly closed" with the shell's exit
    status (127 for "command not found").
    """
    import socket
    import subprocess

    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    # Socket pairs, one per direction, as rsync's piped_child() (fd_pair): their buffers
    # are larger than a pipe's 64 KiB, so a big transfer needs fewer wake-ups.  (One
    # pair for both would turn a child that exits without reading into a reset read.)
    to_child, child_in = socket.socketpair()
    from_child, child_out = socket.socketpair()
    try:
        proc = subprocess.Popen(cmd, stdin=child_in.fileno(), stdout=child_out.fileno(),
                                env=full_env, close_fds=True, bufsize=0)
    except OSError as exc:
        to_child.close()
        from_child.close()
        raise ExecFailed(who, cmd[0], exc) from None
    finally:
        child_in.close()
        child_out.close()
    return PipeConnection(proc, cmd, who=who, fds=(from_child.detach(), to_child.detach()))
