"""``proxy protocol = yes``: a trusted balancer's PROXY v1/v2 header names the client.

The same raw exchanges go to Debian's ``rsync --daemon`` and to ``netsync --daemon``
started from the same rsyncd.conf; the bytes each daemon answers must be identical.
``hosts allow`` admits only the address carried in the header, so a pass shows that
the header's address, not the socket's, is the one access control sees.
"""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

GREETING = b"@RSYNCD: 32.0 md5\n"


def _v2(src: str, dst: str = "127.0.0.1", cmd: int = 1) -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", 5555, 873)
    return (b"\r\n\r\n\0\r\nQUIT\n" + bytes((0x20 | cmd, 0x11))
            + struct.pack(">H", len(body)) + body)


def _start(kind: str, root: Path, trusted: str) -> tuple[subprocess.Popen[bytes], int]:
    root.mkdir(parents=True)
    (root / "mod").mkdir()
    conf = root / "rsyncd.conf"
    conf.write_text("\n".join([
        "use chroot = no", "reverse lookup = no", "proxy protocol = yes",
        f"proxy protocol hosts = {trusted}", f"log file = {root / 'log'}",
        "[mod]", f"path = {root / 'mod'}", "hosts allow = 10.1.2.3", ""]))
    cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
    return peers.start_daemon(cmd, conf, env=tc.sync_env())


@pytest.fixture(scope="module", params=["127.0.0.1", "10.0.0.1"], ids=["trusted", "untrusted"])
def ports(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, int]]]:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    base = tmp_path_factory.mktemp("proxy")
    procs = {kind: _start(kind, base / kind, request.param) for kind in ("rsync", "netsync")}
    try:
        yield request.param, {kind: port for kind, (_, port) in procs.items()}
    finally:
        for proc, _ in procs.values():
            peers.stop(proc)


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        try:  # a daemon that drops the connection may do so before all is sent
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out


CASES = {
    "v1-allowed": b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 873\r\n" + GREETING + b"mod\n",
    "v1-denied": b"PROXY TCP4 10.9.9.9 127.0.0.1 5555 873\r\n" + GREETING + b"mod\n",
    "v1-ipv6-denied": b"PROXY TCP6 2001:db8::1 ::1 5555 873\r\n" + GREETING + b"mod\n",
    "v1-unknown": b"PROXY UNKNOWN\r\n" + GREETING + b"mod\n",
    "v1-bad-port": b"PROXY TCP4 10.1.2.3 127.0.0.1 0 873\r\n" + GREETING + b"mod\n",
    "v1-no-crlf": b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 873\n" + GREETING + b"mod\n",
    "v1-overlong": b"PROXY TCP4 " + b"1" * 200 + b"\r\n" + GREETING + b"mod\n",
    "v2-allowed": _v2("10.1.2.3") + GREETING + b"mod\n",
    "v2-denied": _v2("10.9.9.9") + GREETING + b"mod\n",
    "v2-local": _v2("10.1.2.3", cmd=0) + GREETING + b"mod\n",
    "no-header": GREETING + b"mod\n",
}


@pytest.mark.parametrize("case", list(CASES))
def test_proxy_header_like_rsync(ports: tuple[str, dict[str, int]], case: str) -> None:
    trusted, port = ports
    want = _exchange(port["rsync"], CASES[case])
    got = _exchange(port["netsync"], CASES[case])
    # Up to the module's answer: what follows an admitted module is the transfer, here
    # cut short by the end of input (which the two daemons end differently).
    ok = b"@RSYNCD: OK\n"
    assert got.partition(ok)[:2] == want.partition(ok)[:2], (case, want, got)
    if trusted == "127.0.0.1" and case in ("v1-allowed", "v2-allowed"):
        assert b"@RSYNCD: OK" in got  # admitted only as the header's 10.1.2.3
    if trusted != "127.0.0.1":
        assert got == b""  # an untrusted peer's connection is dropped unanswered
