"""Client-side transports: get a byte stream to a remote rsync and start the protocol.

- ``remote``: command-line specs (host:path, host::module, rsync://...).
- ``rsh``: the remote-shell command line and the ``rsync --server`` argument vector.
- ``daemon``: TCP connection and the ``@RSYNCD:`` exchange (also over a remote shell).
- ``handshake``: sans-I/O start of the binary protocol (versions, compat flags,
  checksum/compression negotiation, checksum seed).

Submodules are imported lazily so ``import netsync.transport`` stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from netsync.errors import RERR_STREAMIO, RERR_TIMEOUT, RsyncError

if TYPE_CHECKING:
    import socket
    import subprocess
    from collections.abc import Callable

__all__ = ["TransportError", "Connection", "PipeConnection", "SocketConnection", "join_lines",
           "PROG"]

PROG = "netsync"


class TransportError(RsyncError):
    """A fatal transport condition.

    ``bare`` messages are printed as they are (rsync prints "@ERROR: ..." and
    "ERROR: ..." lines without its "rsync: " prefix); others get "netsync: ".
    """

    def __init__(self, code: int, message: str | None = None, *, bare: bool = False,
                 own_code: bool = False) -> None:
        super().__init__(code, message, own_code=own_code, bare=bare)


def pre_fork_who(who: str) -> str:
    """rsync's who_am_i() before it forks: a pulling client is still the "Receiver"."""
    return "Receiver" if who == "receiver" else who


#: fd -> what re-arms quick ACKs on the TCP connection read from it (tune_tcp()).
_QUICKACK: dict[int, Callable[[], None]] = {}


def tune_tcp(sock: socket.socket, fds: tuple[int, ...] = (), sockopts: str | None = None
             ) -> bool:
    """A daemon connection (either end): Nagle off, and quick ACKs re-armed before
    each read from ``sock``'s fd.  rsync's small protocol turns (its args one write
    each, a flag, a seed, the end's stats) otherwise wait out the peer's delayed ACK,
    40 ms each: three per one-file pull between two stock rsyncs.  Linux drops quick
    ACK mode again on its own, hence the re-arming.  ``fds``: the descriptors it is read
    through (default its own); ``sockopts``: the user's socket options, whose own
    TCP_NODELAY setting stands.  False if ``sock`` is no TCP socket."""
    import socket as _socket

    if sock.family not in (_socket.AF_INET, _socket.AF_INET6) \
            or sock.type != _socket.SOCK_STREAM:
        return False
    if "TCP_NODELAY" not in (sockopts or "").upper():
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            return False
    opt = getattr(_socket, "TCP_QUICKACK", None)
    if opt is None:
        return True
    level = _socket.IPPROTO_TCP

    def arm() -> None:
        try:
            sock.setsockopt(level, opt, 1)
        except OSError:
            pass

    for fd in fds or (sock.fileno(),):
        _QUICKACK[fd] = arm
    return True


def quickack(fd: int) -> Callable[[], None] | None:
    """What tune_tcp() left for ``fd`` (None: not a tuned TCP connection)."""
    return _QUICKACK.get(fd)


def join_lines(lines: list[str]) -> str:
    """Several "netsync: ..." error lines as one non-bare message."""
    return f"\n{PROG}: ".join(lines)


class Connection:
    """A byte stream to the remote rsync: blocking reads/writes on raw fds.

    ``rfd``/``wfd`` are exposed so the engine can select()/poll() on them.
    """

    def __init__(self, rfd: int, wfd: int, who: str = "client") -> None:
        #: rsync's who_am_i() for messages: "sender" (push) or "Receiver" (pull).
        self.who = who
        self.rfd = rfd
        self.wfd = wfd
        self.bytes_read = 0
        self.bytes_written = 0
        self.closed = False
        self.before_read = _QUICKACK.get(rfd)  # (a tuned TCP connection: re-arm quick ACKs)

    #: what runs before each read (tune_tcp()'s quick-ACK re-arming), if anything
    before_read: Callable[[], None] | None = None

    #: --timeout, rsync's global io_timeout: a handshake read waiting longer fails (code 30).
    timeout: float | None = None

    def count_from_here(self, leftover: bytes = b"") -> None:
        """Start the byte counts rsync reports (its stats.total_read/total_written)
        here, where io.c's buffering starts, after setup_protocol(): the version,
        compat flags, checksum and compression names and the seed (and a daemon's
        greeting and arguments before them) go by safe_read()/safe_write() and are
        not counted.  ``leftover``: read past that point, so counted."""
        self.bytes_read = len(leftover)
        self.bytes_written = 0

    def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; b"" at end of stream."""
        if self.timeout:
            import select

            if not select.select([self.rfd], [], [], self.timeout)[0]:
                raise TransportError(RERR_TIMEOUT, f"[{self.who}] io timeout after "
                                     f"{int(self.timeout)} seconds -- exiting")
        if self.before_read is not None:
            self.before_read()
        try:
            data = os.read(self.rfd, n)
        except OSError as exc:
            raise TransportError(RERR_STREAMIO, f"read error: {exc.strerror} ({exc.errno}) "
                                 f"[{self.who}]") from None
        self.bytes_read += len(data)
        return data

    def read_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes or an rsync-style "connection unexpectedly closed" error."""
        chunks = []
        left = n
        while left:
            data = self.read(left)
            if not data:
                raise self.unexpected_close()
            chunks.append(data)
            left -= len(data)
        return b"".join(chunks)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                done = os.write(self.wfd, view)
            except OSError as exc:
                # rsync's safe_write() message; the child's status (e.g. 127) wins if higher.
                code = max(RERR_STREAMIO, self.exit_status(timeout=2.0) or 0)
                raise TransportError(code, f"[{self.who}] safe_write failed to write "
                                     f"{len(view)} bytes to socket: {exc.strerror} "
                                     f"({exc.errno})") from None
            self.bytes_written += done
            view = view[done:]

    def unexpected_close(self) -> TransportError:
        """rsync's "connection unexpectedly closed" (exit 12, or the child's status if higher)."""
        code = max(RERR_STREAMIO, self.exit_status(timeout=2.0) or 0)
        return TransportError(code, f"connection unexpectedly closed "
                                    f"({self.bytes_read} bytes received so far) [{self.who}]")

    def exit_status(self, timeout: float | None = None) -> int | None:  # noqa: ARG002
        """The remote-shell child's exit status (None for sockets or a running child)."""
        return None

    def close(self) -> int | None:
        """Close both directions; returns the child's exit status when there is one."""
        if not self.closed:
            self.closed = True
            for fd in {self.rfd, self.wfd}:
                try:
                    os.close(fd)
                except OSError:
                    pass
        return None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PipeConnection(Connection):
    """The connection to a remote-shell child (ssh ... rsync --server ...): our ends
    (``fds``: read, write) of the socket pairs on its stdout and stdin."""

    def __init__(self, proc: subprocess.Popen[bytes], command: list[str],
                 who: str, fds: tuple[int, int]) -> None:
        self.proc = proc
        self.command = command
        super().__init__(fds[0], fds[1], who)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_status(self, timeout: float | None = None) -> int | None:
        import subprocess

        if timeout is None:
            rc = self.proc.poll()
        else:
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        if rc is None:
            return None
        # rsync's wait_process_with_flush: a signal death is "terminated abnormally" (16).
        return rc if rc >= 0 else 16

    def abandon(self) -> int | None:
        """cleanup.c on a fatal error of our own: the child's status only if it has
        exited already (WNOHANG), else kill_all(SIGUSR1) stops it; our ends closed."""
        import signal

        rc = self.exit_status()
        if rc is None:
            try:
                self.proc.send_signal(signal.SIGUSR1)
            except OSError:
                pass
        super().close()
        return rc

    def reap(self, timeout: float = 1.0) -> None:
        """After abandon(): collect the child if it goes soon (it is not waited for)."""
        import subprocess

        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def close(self, timeout: float = 30.0) -> int | None:
        """Close our ends, then wait for the child like rsync does at the end of a run."""
        import subprocess

        super().close()
        if not _wait_pidfd(self.proc, timeout):
            try:  # Popen.wait polls from 0.5 ms up: a quick child costs no fixed sleep
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.exit_status()


def _wait_pidfd(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for ``proc`` to exit, waking the moment it does (Popen.wait's timed
    polling oversleeps by up to half the wait).  False where pidfds are missing."""
    import select

    if proc.poll() is not None:
        return True
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return False
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        proc.kill()
    proc.wait()
    return True


class SocketConnection(Connection):
    """A TCP connection to an rsync daemon."""

    def __init__(self, sock: socket.socket, peer: str = "", who: str = "client",
                 sockopts: str | None = None) -> None:
        self.sock = sock
        self.peer = peer
        tune_tcp(sock, sockopts=sockopts)
        super().__init__(sock.fileno(), sock.fileno(), who)

    def close(self) -> int | None:
        if not self.closed:
            self.closed = True
            _QUICKACK.pop(self.rfd, None)
            self.sock.close()
        return None
