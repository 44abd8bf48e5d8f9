"""RSYNC_PROXY: rsync:// through an HTTP CONNECT proxy (socket.c
establish_proxy_connection()), against a real rsync daemon on loopback.

The proxy here is a few lines of Python in the test: it records the request,
answers as told, and relays the tunnel to the daemon.  netsync and the stock
client are run the same way and must agree."""

from __future__ import annotations

import os
import select
import shutil
import socket
import threading
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers

RSYNC = shutil.which("rsync")


class _Proxy:
    def __init__(self, upstream: int, answer: bytes = b"HTTP/1.0 200 Connection established\r\n"
                 b"Via: test\r\n\r\n") -> None:
        self.upstream, self.answer = upstream, answer
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c: socket.socket) -> None:
        req = b""
        while b"\r\n\r\n" not in req and len(req) < 8192:
            got = c.recv(1)
            if not got:
                break
            req += got
        self.requests.append(req)
        c.sendall(self.answer)
        if not self.answer.startswith(b"HTTP/1.0 2"):
            c.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream))
        socks = [c, up]
        while True:
            r, _, _ = select.select(socks, [], [], 10)
            if not r:
                break
            data = b""
            for s in r:
                data = s.recv(65536)
                if not data:
                    break
                (up if s is c else c).sendall(data)
            if not data:
                break
        for s in socks:
            s.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def daemon(tmp_path: Path):
    if RSYNC is None:
        peers.missing("rsync is not installed")
    mod = tmp_path / "mod"
    (mod / "sub").mkdir(parents=True)
    (mod / "sub" / "f").write_text("through the proxy\n")
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\n[mod]\npath = {mod}\nread only = yes\n"
                    + ("uid = root\ngid = root\n" if os.geteuid() == 0 else ""))
    proc, port = peers.start_daemon([RSYNC], conf)
    yield port
    peers.stop(proc)


def _both(tmp_path: Path, proxy_env: str, port: int) -> dict[str, tc.Run]:
    runs = {}
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        env = dict(tc.sync_env(), RSYNC_PROXY=proxy_env)
        import subprocess

        p = subprocess.run([*cmd, "-r", f"rsync://upstream.invalid:{port}/mod/",
                            str(tmp_path / f"dst-{who}")], env=env, capture_output=True,
                           timeout=60, cwd=tmp_path)
        runs[who] = tc.Run([], p.returncode, p.stdout, p.stderr)
    return runs


def test_pull_through_the_proxy(tmp_path: Path, daemon: int) -> None:
    proxy = _Proxy(daemon)
    try:
        runs = _both(tmp_path, f"me:s3cret@127.0.0.1:{proxy.port}", daemon)
    finally:
        proxy.close()
    for who, r in runs.items():
        assert r.returncode == 0, (who, r.stderr)
        assert (tmp_path / f"dst-{who}" / "sub" / "f").read_text() == "through the proxy\n"
    # The same request from both: the daemon's name as given, never resolved here.
    assert len(proxy.requests) == 2 and proxy.requests[0] == proxy.requests[1]
    assert proxy.requests[1] == (f"CONNECT upstream.invalid:{daemon} HTTP/1.0\r\n"
                                 "Proxy-Authorization: Basic bWU6czNjcmV0\r\n\r\n").encode()


@pytest.mark.parametrize("answer", [b"HTTP/1.0 503 Service Unavailable\r\n\r\n",
                                    b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 200 " + b"x" * 1100],
                         ids=["503", "not-http", "line-too-long"])
def test_proxy_refusal_is_exit_10(tmp_path: Path, daemon: int, answer: bytes) -> None:
    proxy = _Proxy(daemon, answer)
    try:
        runs = _both(tmp_path, f"127.0.0.1:{proxy.port}", daemon)
    finally:
        proxy.close()
    assert runs["rsync"].returncode == runs["netsync"].returncode == 10
    first = {who: r.stderr.splitlines()[0] for who, r in runs.items()}
    assert first["netsync"] == first["rsync"], runs["netsync"].stderr


@pytest.mark.parametrize("spec", ["127.0.0.1", "user@127.0.0.1:3128"])
def test_bad_proxy_specification(tmp_path: Path, spec: str) -> None:
    runs = _both(tmp_path, spec, 873)
    assert runs["rsync"].returncode == runs["netsync"].returncode == 10
    assert runs["netsync"].stderr.splitlines()[0] == runs["rsync"].stderr.splitlines()[0]
