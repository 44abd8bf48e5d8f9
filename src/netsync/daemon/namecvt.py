"""A module's ``name converter``: clientserver.c namecvt_call() and uidlist.c's use of it.

The program (started by the daemon before the chroot, as the other hooks) first gets
the request and arguments the pre-xfer hook gets, then answers one line per line
asked: ``uid N`` / ``gid N`` with a name, ``usr NAME`` / ``grp NAME`` with a number;
an empty line means unknown.  While one is running, every uid/gid <-> name mapping
of the connection goes through it instead of the passwd/group files, which a chroot
hides.  A module with ``numeric ids`` in effect (the default in a chroot without a
converter) maps no name at all (NoNames).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from netsync.errors import RERR_SOCKETIO, RERR_UNSUPPORTED, RsyncError

_LINE_MAX = 1024  # rsync's buffer: a longer answer is cut there


class NoNames:
    """A module's ``numeric ids`` (clientserver.c sets numeric_ids = -1): no uid/gid is
    mapped by name either way, while the wire keeps its (then empty) name lists."""

    def id_to_name(self, kind: str, num: int) -> bytes | None:
        return None

    def name_to_id(self, kind: str, name: bytes) -> int | None:
        return None


class NameConverter(NoNames):
    def __init__(self, pid: int, req_fd: int, ans_fd: int) -> None:
        self.pid = pid
        self.req_fd = req_fd
        self.ans_fd = ans_fd
        self.on_error: Callable[[str], None] | None = None  # the daemon's log
        # Each id or name is asked once, as uidlist.c's lists remember them.
        self._names: dict[tuple[str, int], bytes | None] = {}
        self._ids: dict[tuple[str, bytes], int | None] = {}

    def _ask(self, line: bytes) -> bytes | None:
        """One request and its answer line; None when the program has gone away."""
        if len(line) >= _LINE_MAX:
            raise RsyncError(RERR_UNSUPPORTED, "namecvt_call() request was too large.")
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self.req_fd, view):]
        except OSError:
            raise RsyncError(RERR_SOCKETIO, "Connection to name-converter failed.") from None
        buf = bytearray()
        while True:
            try:
                ch = os.read(self.ans_fd, 1)
            except InterruptedError:
                continue
            except OSError:
                return None
            if not ch or ch == b"\0":
                return None
            if ch == b"\n":
                break
            if ch != b"\r" and len(buf) < _LINE_MAX - 1:
                buf += ch
        return bytes(buf)

    def id_to_name(self, kind: str, num: int) -> bytes | None:
        """"uid"/"gid" -> the name, None if unknown."""
        key = (kind, num)
        if key not in self._names:
            self._names[key] = self._ask(f"{kind} {num}\n".encode()) or None
        return self._names[key]

    def name_to_id(self, kind: str, name: bytes) -> int | None:
        """"usr"/"grp" -> the id, None if unknown.  An empty or non-numeric answer is
        unknown, never 0 (which would map the name to root)."""
        key = (kind, name)
        if key not in self._ids and any(c < 0x20 or c == 0x7F for c in name):
            # namecvt_safe_token(): a control character could forge a request line.
            if self.on_error is not None:
                # As it came: the log's own escaping keeps it one line ("\#012").
                self.on_error("invalid name-converter token: " + os.fsdecode(name))
            self._ids[key] = None
        if key not in self._ids:
            ans = self._ask(kind.encode() + b" " + name + b"\n")
            num = int(ans) if ans and ans.isdigit() else None
            self._ids[key] = num if num is not None and num < 1 << 32 else None
        return self._ids[key]


#: The connection's converter (or NoNames), set by the daemon for the module.
active: NoNames | None = None
