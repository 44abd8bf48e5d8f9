"""rsync's exit codes (errcode.h) and the exception that carries one."""

from __future__ import annotations

import sys

RERR_OK = 0
RERR_SYNTAX = 1  # syntax or usage error
RERR_PROTOCOL = 2  # protocol incompatibility
RERR_FILESELECT = 3  # errors selecting input/output files, dirs
RERR_UNSUPPORTED = 4  # requested action not supported
RERR_STARTCLIENT = 5  # error starting client-server protocol
RERR_SOCKETIO = 10  # error in socket IO
RERR_FILEIO = 11  # error in file IO
RERR_STREAMIO = 12  # error in rsync protocol data stream
RERR_MESSAGEIO = 13  # errors with program diagnostics
RERR_IPC = 14  # error in IPC code
RERR_CRASHED = 15  # sibling crashed
RERR_TERMINATED = 16  # sibling terminated abnormally
RERR_SIGNAL1 = 19  # status returned when sent SIGUSR1
RERR_SIGNAL = 20  # status returned when sent SIGINT, SIGTERM, SIGHUP
RERR_WAITCHILD = 21  # some error returned by waitpid()
RERR_MALLOC = 22  # error allocating core memory buffers
RERR_PARTIAL = 23  # partial transfer
RERR_VANISHED = 24  # file(s) vanished on sender side
RERR_DEL_LIMIT = 25  # skipped some deletes due to --max-delete
RERR_TIMEOUT = 30  # timeout in data send/receive
RERR_CONTIMEOUT = 35  # timeout waiting for daemon connection
RERR_CMD_FAILED = 124
RERR_CMD_KILLED = 125
RERR_CMD_RUN = 126
RERR_CMD_NOTFOUND = 127

# rsync's rerr_names table, used in "rsync error: ... (code N)" lines.
MESSAGES = {
    RERR_SYNTAX: "syntax or usage error",
    RERR_PROTOCOL: "protocol incompatibility",
    RERR_FILESELECT: "errors selecting input/output files, dirs",
    RERR_UNSUPPORTED: "requested action not supported",
    RERR_STARTCLIENT: "error starting client-server protocol",
    RERR_SOCKETIO: "error in socket IO",
    RERR_FILEIO: "error in file IO",
    RERR_STREAMIO: "error in rsync protocol data stream",
    RERR_MESSAGEIO: "errors with program diagnostics",
    RERR_IPC: "error in IPC code",
    RERR_CRASHED: "sibling process crashed",
    RERR_TERMINATED: "sibling process terminated abnormally",
    RERR_SIGNAL1: "received SIGUSR1",
    RERR_SIGNAL: "received SIGINT, SIGTERM, or SIGHUP",
    RERR_WAITCHILD: "waitpid() failed",
    RERR_MALLOC: "error allocating core memory buffers",
    RERR_PARTIAL: "some files/attrs were not transferred (see previous errors)",
    RERR_VANISHED: "some files vanished before they could be transferred",
    RERR_DEL_LIMIT: "the --max-delete limit stopped deletions",
    RERR_TIMEOUT: "timeout in data send/receive",
    RERR_CONTIMEOUT: "timeout waiting for daemon connection",
    RERR_CMD_FAILED: "remote shell failed",
    RERR_CMD_KILLED: "remote shell killed",
    RERR_CMD_RUN: "remote command could not be run",
    RERR_CMD_NOTFOUND: "remote command not found",
}


class RsyncError(Exception):
    """A fatal condition that ends the run with an rsync exit code.

    ``message`` (if any) is printed as ``rsync: <message>`` style text by the CLI
    before the final ``rsync error: ... (code N)`` line.
    """

    bare = False  # printed as it is, without the "rsync: " prefix

    def __init__(self, code: int, message: str | None = None, *,
                 own_code: bool = False, bare: bool = False) -> None:
        super().__init__(message or MESSAGES.get(code, f"error {code}"))
        self.code = code
        self.message = message
        if bare:  # (else the class's say)
            self.bare = True
        # The run ends with this code even if the peer exits with a higher one (rsync's
        # own early checks: the peer only stops because we did).
        self.own_code = own_code


class UsageError(RsyncError):
    """Bad command line: exit code 1 unless told otherwise."""

    def __init__(self, message: str, code: int = RERR_SYNTAX) -> None:
        super().__init__(code, message)


def print_error(msg: str) -> None:
    """One line on stderr, after whatever stdout holds (so the order reads right)."""
    sys.stdout.flush()
    buf = getattr(sys.stderr, "buffer", None)
    if buf is not None:  # (a name's undecodable bytes, shown raw under -8, stay bytes)
        sys.stderr.flush()
        buf.write((msg + "\n").encode("utf-8", "surrogateescape"))
    else:
        sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def exit_message(code: int, prog: str = "netsync") -> str:
    """rsync's closing ``rsync error: <what> (code N)`` line, in our name (log.c
    log_exit(): vanished files end with a warning)."""
    kind = "warning" if code == RERR_VANISHED else "error"
    return f"{prog} {kind}: {MESSAGES.get(code, 'unexplained error')} (code {code})"


def print_exit_line(code: int, prog: str = "netsync") -> None:
    from netsync.report import end_open_line, log_exit_line

    end_open_line()
    if code:
        line = exit_message(code, prog)
        print_error(line)
        log_exit_line(line)
