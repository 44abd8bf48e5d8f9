"""The PROXY protocol header (v1 text, v2 binary) a load balancer sends before the
greeting when ``proxy protocol = yes``, read as rsync 3.5's clientname.c reads it.

Only peers listed in ``proxy protocol hosts`` may send one (rsync 3.5 trusts none by
default); the client's address then comes from the header, so ``hosts allow``/``hosts
deny``, the logs and ``RSYNC_HOST_ADDR`` see the real client, not the balancer.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

__all__ = ["read_header"]

V2_SIG = b"\r\n\r\n\0\r\nQUIT\n"
V2_HEADER = len(V2_SIG) + 4  # signature, version/command, family, length
V2_MAX_BODY = 216  # two AF_UNIX addresses: the largest body rsync's buffer holds
V1_MAX = 108  # the longest v1 line, CRLF included, per the specification
CMD_LOCAL, CMD_PROXY = 0, 1
FAM_TCP4, FAM_TCP6 = 0x11, 0x21


def _valid_ip(text: bytes) -> bool:
    try:
        ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def _port(text: bytes) -> bool:
    return text.isdigit() and int(text) != 0


def read_header(read_exact: Callable[[int], bytes]) -> tuple[bool, str | None]:
    """(accepted, client address or None to keep the socket's) for one header.

    ``read_exact(n)`` returns exactly n bytes (or raises at EOF); nothing past the
    header is read, so the greeting that follows stays on the socket.
    """
    head = read_exact(len(V2_SIG))
    if head == V2_SIG:
        rest = read_exact(V2_HEADER - len(V2_SIG))
        ver, cmd, fam = rest[0] >> 4, rest[0] & 0x0F, rest[1]
        size = int.from_bytes(rest[2:4], "big")
        if ver != 2 or size > V2_MAX_BODY:
            return False, None
        body = read_exact(size) if size else b""
        if cmd == CMD_LOCAL:
            return True, None
        if cmd != CMD_PROXY:
            return False, None
        if fam in (FAM_TCP4, FAM_TCP6):
            af, alen = (socket.AF_INET, 4) if fam == FAM_TCP4 else (socket.AF_INET6, 16)
            if size != 2 * alen + 4:  # source and destination addresses and ports
                return False, None
            return True, socket.inet_ntop(af, body[:alen])
        return True, None  # another family: served under the socket's own address
    if not head.startswith(b"PROXY"):
        return False, None
    line = bytearray(head)
    if b"\n" not in line:
        while True:
            ch = read_exact(1)
            line += ch
            if ch == b"\n":
                break
            if len(line) >= V1_MAX - 1:
                return False, None
    cr = line.find(b"\r")
    if cr < 0 or bytes(line[cr:]) != b"\r\n":
        return False, None
    fields = bytes(line[5:cr])
    if not fields[:1].isspace():
        return False, None
    fields = fields[1:]
    if fields.startswith(b"UNKNOWN"):
        return True, None
    if not fields.startswith((b"TCP4", b"TCP6")) or not fields[4:5].isspace():
        return False, None
    parts = fields[5:].split(b" ")
    if len(parts) != 4 or not (_valid_ip(parts[0]) and _valid_ip(parts[1])
                               and _port(parts[2]) and _port(parts[3])):
        return False, None
    return True, parts[0].decode("ascii")
