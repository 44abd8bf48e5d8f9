"""Abuse resistance: FTP bounce, foreign passive connections, connection
limits, idle timeout, floods -- and the transfer logs."""

from __future__ import annotations

import ftplib
import re
import socket
import time
from pathlib import Path

import pytest


def connect(srv, source: str = "127.0.0.1") -> ftplib.FTP:
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10, source_address=(source, 0))
    return f


def raw(srv, source: str = "127.0.0.1") -> tuple[socket.socket, object]:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10, source_address=(source, 0))
    return s, s.makefile("rb")


def settle(srv) -> None:
    """Wait until no session process is left (the fixture's readiness probe
    is a connection too, and it counts until its process has exited)."""
    s, fh = raw(srv)  # once this is served, earlier connections have been accepted
    fh.readline()
    fh.close()
    s.close()
    children = Path(f"/proc/{srv.proc.pid}/task/{srv.proc.pid}/children")
    deadline = time.monotonic() + 10
    while children.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_port_bounce_refused(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    f = connect(srv)
    f.login()
    with pytest.raises(ftplib.error_perm, match="500 Illegal PORT command."):
        f.sendcmd("PORT 10,1,2,3,200,10")  # someone else's host
    with pytest.raises(ftplib.error_perm, match="500 Illegal PORT command."):
        f.sendcmd("PORT 127,0,0,1,0,25")  # our host, privileged port (SMTP)
    with pytest.raises(ftplib.error_perm, match="500 Illegal EPRT command."):
        f.sendcmd("EPRT |1|192.0.2.1|6000|")
    # the client's own address on a high port is fine (active mode works)
    f.set_pasv(False)
    assert "hello.txt" in f.nlst()
    f.quit()


def test_passive_connection_from_foreign_address_refused(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    f = connect(srv)
    f.login()
    resp = f.sendcmd("PASV")
    host, port = ftplib.parse227(resp)
    # 127.0.0.2 is another address on loopback: a different host to the server
    intruder = socket.create_connection((host, port), timeout=5, source_address=("127.0.0.2", 0))
    assert f.getline() == "425 Security: Bad IP connecting."
    intruder.close()
    f.quit()


def test_pasv_port_range_and_address(ftpd, anon_root: Path) -> None:
    from ftpd_helpers import free_port

    lo = free_port()
    srv = ftpd(anon_root=anon_root, pasv_min_port=lo, pasv_max_port=lo, pasv_address="192.0.2.9")
    f = connect(srv)
    f.login()
    resp = f.sendcmd("PASV")
    assert resp.startswith("227 Entering Passive Mode (192,0,2,9,")
    assert ftplib.parse227(resp)[1] == lo
    f.quit()


def test_max_per_ip(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root, max_per_ip=2)
    settle(srv)
    a, b = connect(srv), connect(srv)
    s, fh = raw(srv)
    assert fh.readline() == b"421 There are too many connections from your internet address.\r\n"
    fh.close()
    s.close()
    other = connect(srv, "127.0.0.2")  # another address still gets in
    other.login()
    other.quit()
    a.close()
    deadline = time.monotonic() + 10
    while True:  # the slot frees up once the session process has gone
        s, fh = raw(srv)
        line = fh.readline()
        fh.close()
        s.close()
        if line.startswith(b"220") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert line.startswith(b"220")
    b.close()


def test_max_clients(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root, max_clients=2, max_per_ip=0)
    settle(srv)
    a, b = connect(srv, "127.0.0.1"), connect(srv, "127.0.0.3")
    s, fh = raw(srv, "127.0.0.4")
    assert fh.readline() == b"421 There are too many connected users, please try later.\r\n"
    fh.close()
    s.close()
    a.login()
    assert "hello.txt" in a.nlst()  # the admitted sessions are unaffected
    a.quit()
    b.close()


def test_idle_session_timeout(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root, idle_session_timeout=1)
    f = connect(srv)
    f.login()
    time.sleep(1.6)
    assert f.getline() == "421 Timeout."
    with pytest.raises((EOFError, OSError)):
        f.voidcmd("NOOP")


def test_idle_timeout_counts_from_login(ftpd, anon_root: Path) -> None:
    """A client slow to log in is not timed out right after it has: the
    idle time counts again from the login, as vsftpd's does."""
    srv = ftpd(anon_root=anon_root, idle_session_timeout=3)
    f = connect(srv)
    time.sleep(2)  # idle before logging in, within the timeout
    f.login()
    time.sleep(1.5)  # past 3 s since connecting, well within 3 s since the login
    assert f.voidcmd("NOOP").startswith("200")
    f.quit()


def test_huge_line_and_garbage_do_not_hurt_others(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    victim = connect(srv)
    victim.login()
    s, fh = raw(srv)
    fh.readline()
    s.sendall(b"USER " + b"A" * (1 << 20) + b"\r\n")  # a 1 MiB command line
    assert fh.readline().startswith(b"500")
    s.sendall(b"NOOP\r\n")  # the flooded session itself survives, answering once per line
    assert fh.readline() == b"200 NOOP ok.\r\n"
    garbage = bytes(range(256)) * 64 + b"\r\n" + b"\x00\xff junk \r\n" * 2000
    g, gfh = raw(srv)
    gfh.readline()
    g.sendall(garbage)
    # meanwhile the other session works normally
    assert "hello.txt" in victim.nlst()
    victim.voidcmd("NOOP")
    victim.quit()
    s.close()
    g.close()


def test_max_login_fails_with_delay(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root, local_enable=True, pam_service_name="netsync-ftpd-none",
               max_login_fails=2, delay_failed_login=1)
    f = connect(srv)
    t0 = time.monotonic()
    for _ in range(2):
        with pytest.raises(ftplib.error_perm, match="530 Login incorrect."):
            f.login("nobody-here", "x")
    assert time.monotonic() - t0 >= 2.0  # delay_failed_login seconds per failure
    with pytest.raises((EOFError, OSError)):
        f.login("nobody-here", "x")


def test_xferlog_std_format(ftpd, anon_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "xferlog"
    srv = ftpd(anon_root=anon_root, xferlog_enable=True, xferlog_std_format=True,
               xferlog_file=log)
    f = connect(srv)
    f.login("anonymous", "tester@example.org")
    f.retrbinary("RETR pub/data.bin", lambda _b: None)
    f.quit()
    line = wait_for_line(log)
    # wu-ftpd: date secs host bytes file type flag direction mode user service auth authuser status
    assert re.fullmatch(
        r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} \d+ 127\.0\.0\.1 16384 /pub/data\.bin b _ o a "
        r"tester@example\.org ftp 0 \* c", line), line


def test_vsftpd_log_format(ftpd, anon_root: Path, tmp_path: Path) -> None:
    log = tmp_path / "vsftpd.log"
    srv = ftpd(anon_root=anon_root, xferlog_enable=True, vsftpd_log_file=log)
    f = connect(srv)
    f.login("anonymous", "who@example.org")
    f.retrbinary("RETR hello.txt", lambda _b: None)
    f.quit()
    text = ""
    deadline = time.monotonic() + 5
    while "DOWNLOAD" not in text and time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        time.sleep(0.05)
    date = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} \[pid \d+\] "
    assert re.search(date + r'CONNECT: Client "127\.0\.0\.1"', text), text
    assert re.search(date + r'\[ftp\] OK LOGIN: Client "127\.0\.0\.1", anon password "who@example\.org"',
                     text), text
    assert re.search(date + r'\[ftp\] OK DOWNLOAD: Client "127\.0\.0\.1", "/hello\.txt", 16 bytes, '
                     r"[\d.]+Kbyte/sec", text), text


def wait_for_line(path: Path) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip().splitlines()[-1]
        time.sleep(0.05)
    raise AssertionError(f"nothing logged to {path}")
