"""Daemon connections turn Nagle off and re-arm quick ACKs before each read (both ends):
rsync's small protocol turns otherwise wait out the peer's delayed ACK, 40 ms each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from netsync import transport
from netsync.transport import Connection, SocketConnection, quickack, tune_tcp

QUICKACK = getattr(socket, "TCP_QUICKACK", None)


@pytest.fixture(autouse=True)
def _forget_tuned() -> Iterator[None]:
    yield
    transport._QUICKACK.clear()  # (the sockets tuned by hand here are closed)


def _pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        a = socket.create_connection(srv.getsockname())
        b, _ = srv.accept()
    return a, b


def test_client_connection_is_tuned() -> None:
    a, b = _pair()
    conn = SocketConnection(a, "127.0.0.1")
    fd = a.fileno()
    try:
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert conn.before_read is quickack(a.fileno()) is not None
        if QUICKACK is not None:
            a.setsockopt(socket.IPPROTO_TCP, QUICKACK, 0)
            b.sendall(b"x")
            assert conn.read(1) == b"x"  # re-armed before the read
            assert a.getsockopt(socket.IPPROTO_TCP, QUICKACK) == 1
    finally:
        conn.close()
        b.close()
    assert quickack(fd) is None  # (forgotten with the connection: fds are reused)


def test_other_streams_are_left_alone() -> None:
    u1, u2 = socket.socketpair()
    r, w = os.pipe()
    try:
        assert not tune_tcp(u1)
        assert quickack(u1.fileno()) is None
        assert Connection(r, w).before_read is None
    finally:
        for s in (u1, u2):
            s.close()
        os.close(r)
        os.close(w)


@pytest.mark.skipif(QUICKACK is None, reason="no TCP_QUICKACK on this system")
def test_daemon_connection_on_stdin_is_tuned() -> None:
    """serve_connection()'s fds 0 and 1 (the accepted socket moved there) are tuned; a
    pipe there (inetd-style stdio) is not."""
    code = textwrap.dedent("""
        import os, socket
        from netsync.daemon import server
        from netsync.transport import quickack
        srv = socket.create_server(("127.0.0.1", 0))
        c = socket.create_connection(srv.getsockname())
        s, _ = srv.accept()
        os.dup2(s.fileno(), 0)
        server._tune_connection()
        probe = socket.socket(fileno=os.dup(0))
        probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        quickack(0)()
        print(probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0,
              probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK),
              quickack(1) is quickack(0))
        r, w = os.pipe()
        os.dup2(r, 0)
        server._tuned.clear()
        from netsync import transport
        transport._QUICKACK.clear()
        server._tune_connection()
        print(quickack(0))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["True 1 True", "None"]


def test_user_nodelay_setting_stands() -> None:
    """--sockopts / "socket options" naming TCP_NODELAY: the user's choice is kept."""
    a, b = _pair()
    try:
        assert tune_tcp(a, sockopts="SO_KEEPALIVE,TCP_NODELAY=0")
        assert not a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert tune_tcp(b, sockopts="SO_KEEPALIVE")
        assert b.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        a.close()
        b.close()
