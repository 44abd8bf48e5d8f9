"""``early exec``, ``pre-xfer exec`` / ``post-xfer exec``: clientserver.c start_pre_exec(),
write_pre_exec_args(), finish_pre_exec() and the post-xfer wait in rsync_module().

The pre-xfer command starts before the module's chroot and uid change, waits on
a pipe for the client's request and arguments (NUL-terminated: the request or
"(NONE)", then RSYNC_ARG0 = "rsyncd", the options, ".", the file arguments,
then an empty one), and its stdout is shown to the client only when it fails,
which refuses the transfer.  For ``post-xfer exec`` the connection's process
forks: the child runs the transfer, the parent waits for it and runs the
command with RSYNC_EXIT_STATUS / RSYNC_RAW_STATUS.  ``early exec`` runs (and is
waited for) before any of that, with request "(NONE)", no words, and the client's
--early-input bytes on its stdin; its failure refuses the connection.  All go
through /bin/sh (``system()``), or ``$RSYNC_SHELL -c`` when that is set, as rsync
does.  (A ``name converter`` is started the same way: netsync.daemon.namecvt.)
"""

from __future__ import annotations

import contextlib
import errno
import os

__all__ = ["finish_pre_exec", "shell_exec", "start_pre_exec", "wait_status",
           "write_pre_exec_args"]

BIGPATHBUFLEN = 4096 + 1024
REQUEST_MAX = 1024  # read_args() stops growing the request here


def shell_exec(cmd: str) -> int:
    """main.c shell_exec(): the raw wait status, -1 when the shell could not run."""
    shell = os.environ.get("RSYNC_SHELL")
    if not shell:
        return os.system(cmd)
    try:
        pid = os.fork()
    except OSError:
        return -1
    if pid == 0:
        try:
            os.execvp(shell, [shell, "-c", cmd])
        finally:
            os._exit(1)
    return wait_status(pid)


def wait_status(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return -1


def _read_arg(fd: int) -> bytes | None:
    """read_arg_from_pipe(): one NUL-terminated word (truncated); None on EOF/error."""
    buf = bytearray()
    while True:
        try:
            ch = os.read(fd, 1)
        except InterruptedError:
            continue
        except OSError:
            return None
        if not ch:
            return None
        if ch == b"\0":
            return bytes(buf)
        if len(buf) < BIGPATHBUFLEN - 1:
            buf += ch


def start_pre_exec(cmd: str, capture: bool = True) -> tuple[int, int, int]:
    """Fork a hook: (pid, fd to write the args to, fd to read its stdout).

    Without ``capture`` (early exec) the hook keeps the daemon's stdout, as rsync's
    start_pre_exec() with no error fd, and the returned stdout fd is -1.
    """
    err_r, err_w = os.pipe() if capture else (-1, -1)
    arg_r, arg_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            if capture:
                os.close(err_r)
            os.close(arg_w)
            req = _read_arg(arg_r)
            if not req:
                os._exit(1)
            os.environb[b"RSYNC_REQUEST"] = req
            j = 0
            while True:
                word = _read_arg(arg_r)
                if word is None:
                    os._exit(1)
                if not word:
                    break
                os.environb[b"RSYNC_ARG%d" % j] = word
                j += 1
            os.dup2(arg_r, 0)
            if capture:
                os.dup2(err_w, 1)
            # The client's socket stays with the daemon, not with the hook.
            os.closerange(3, _max_fd())
            status = shell_exec(cmd)
            status = os.waitstatus_to_exitcode(status) if status >= 0 else 1
            status = status if 0 <= status < 256 else 1
        finally:
            os._exit(status)
    if capture:
        os.close(err_w)
    os.close(arg_r)
    return pid, arg_w, err_r


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 65536)
    except (OSError, ValueError):
        return 1024


def pre_exec_words(raw_args: list[bytes], files: list[bytes]) -> tuple[bytes | None, list[bytes]]:
    """read_args()'s request (the words after ".", up to ~1 KiB) and the argv the
    hook sees: "rsyncd", the options, ".", the expanded file arguments."""
    if b"." in raw_args:
        dot = raw_args.index(b".")
        opts, after = raw_args[:dot + 1], raw_args[dot + 1:]
    else:
        opts, after = raw_args, []
    request = b""
    for word in after:
        if len(request) >= REQUEST_MAX:
            break
        request = request + b" " + word if request else word
    return (request or None), [b"rsyncd", *opts, *files]


def write_pre_exec_args(fd: int, request: bytes | None, argv: list[bytes], *,
                        early_input: bytes = b"", keep_open: bool = False) -> None:
    """The request, the words and an empty one; then (early exec) the client's
    --early-input bytes, which the hook reads on its stdin.  A name converter's
    pipe stays open (``keep_open``): its requests follow on it."""
    data = b"".join(w + b"\0" for w in [request or b"(NONE)", *argv]) + b"\0" + early_input
    with contextlib.suppress(OSError):
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    if not keep_open:
        os.close(fd)


def finish_pre_exec(desc: str, pid: int, read_fd: int) -> str | None:
    """The failure text for the client (lines, newline-terminated), None on success."""
    buf = bytearray()
    limit = BIGPATHBUFLEN - 1 if read_fd >= 0 else 0
    while len(buf) < limit:
        try:
            chunk = os.read(read_fd, limit - len(buf))
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    if read_fd >= 0:
        os.close(read_fd)
    text = bytes(buf).replace(b"\r\n", b"\n").decode("utf-8", "surrogateescape")
    status = wait_status(pid)
    why = ""
    if status < 0:
        why = ": " + os.strerror(errno.ECHILD)
    if status < 0 or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return f"{desc} returned failure ({status}){why}{':' if text else ''}\n{text}"
    return None
