"""Privilege separation before login (plain FTP, server run as root): the
pre-login dialogue is parsed by a process running as nopriv_user, chrooted
into secure_chroot_dir; the root session process only authenticates and
takes over once the login is granted."""

from __future__ import annotations

import ftplib
import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from ftpd_helpers import REPO, curl, free_port, need, wait_port


@pytest.fixture(autouse=True)
def _root_only() -> None:
    need(os.geteuid() == 0, "privilege separation needs the server to run as root")


def children(pid: int) -> list[int]:
    try:
        return [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def ids(pid: int, field: str) -> set[str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return set(next(ln for ln in status.splitlines() if ln.startswith(field + ":")).split()[1:])


def session_tree(srv, want_prelogin: bool = True) -> tuple[int, int | None]:
    """(session process, its pre-login child) once the fixture's readiness
    probe has gone; with want_prelogin, wait for the child to exist."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sessions = children(srv.proc.pid)
        if len(sessions) == 1:
            kids = children(sessions[0])
            if kids or not want_prelogin:
                return sessions[0], (kids[0] if kids else None)
        time.sleep(0.05)
    raise AssertionError(f"no single session process: {children(srv.proc.pid)}")


def local_opts(user, **extra: object) -> dict:
    opts: dict = {"anonymous_enable": False, "local_enable": True,
                  "pam_service_name": user.pam_service}
    opts.update(extra)
    return opts


def test_prelogin_process_is_nopriv_user_in_secure_chroot(ftpd, system_user, user_home) -> None:
    srv = ftpd(**local_opts(system_user))
    nobody = pwd.getpwnam("nobody")
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)  # banner read: the dialogue has begun
    session, pre = session_tree(srv)
    assert pre is not None
    assert ids(pre, "Uid") == {str(nobody.pw_uid)}  # real, effective, saved, fs
    assert ids(pre, "Gid") == {str(nobody.pw_gid)}
    assert ids(pre, "Groups") == set()
    empty = Path(srv.options["secure_chroot_dir"])
    assert Path(f"/proc/{pre}/root").resolve() == empty.resolve()
    assert ids(session, "Uid") == {"0"}  # the root side, waiting for a login request
    f.login(system_user.name, system_user.password)
    assert f.pwd() == str(user_home)
    assert "readme.txt" in f.nlst()
    # the session process now serves the user; the pre-login process is gone
    assert session_tree(srv, want_prelogin=False) == (session, None)
    assert ids(session, "Uid") == {str(system_user.uid)}
    f.quit()


def test_local_and_anonymous_logins_through_the_split(ftpd, system_user, user_home,
                                                      anon_root: Path) -> None:
    srv = ftpd(**local_opts(system_user))
    r = curl("-u", f"{system_user.name}:{system_user.password}", f"{srv.url}/")
    assert r.returncode == 0, r.stderr
    assert b"readme.txt" in r.stdout
    r = curl("-u", f"{system_user.name}:wrong", f"{srv.url}/")
    assert r.returncode == 67  # curl: login denied (530 Login incorrect.)
    anon = ftpd(anon_root=anon_root, nopriv_user="daemon")
    daemon = pwd.getpwnam("daemon")
    f = ftplib.FTP()
    f.connect("127.0.0.1", anon.port, timeout=10)
    _, pre = session_tree(anon)
    assert pre is not None and ids(pre, "Uid") == {str(daemon.pw_uid)}  # nopriv_user honoured
    f.quit()
    r = curl(f"{anon.url}/hello.txt")
    assert r.returncode == 0 and r.stdout == b"hello anonymous\n"


def test_commands_pipelined_behind_pass_reach_the_user_session(ftpd, system_user,
                                                               user_home) -> None:
    srv = ftpd(**local_opts(system_user))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        fh = s.makefile("rb")
        assert fh.readline().startswith(b"220 ")
        s.sendall(f"USER {system_user.name}\r\nPASS {system_user.password}\r\nPWD\r\nQUIT\r\n"
                  .encode())
        replies = [fh.readline() for _ in range(4)]
    assert replies == [b"331 Please specify the password.\r\n", b"230 Login successful.\r\n",
                       f'257 "{user_home}" is the current directory.\r\n'.encode(),
                       b"221 Goodbye.\r\n"]


def test_tls_sessions_keep_one_process(ftpd, system_user, user_home, cert) -> None:
    srv = ftpd(**local_opts(system_user, ssl_enable=True, rsa_cert_file=cert[0],
                            rsa_private_key_file=cert[1]))
    f = ftplib.FTP_TLS()
    f.connect("127.0.0.1", srv.port, timeout=10)
    f.auth()
    session, pre = session_tree(srv, want_prelogin=False)
    assert pre is None and ids(session, "Uid") == {"0"}  # documented: TLS is not split
    f.login(system_user.name, system_user.password)
    assert f.pwd() == str(user_home)
    assert ids(session, "Uid") == {str(system_user.uid)}
    f.quit()


@pytest.mark.parametrize(("option", "message"), [
    ("secure_chroot_dir=/nonexistent-empty",
     "500 OOPS: vsftpd: not found: directory given in 'secure_chroot_dir':/nonexistent-empty"),
    ("nopriv_user=no-such-user-here",
     "500 OOPS: cannot locate user specified in 'nopriv_user':no-such-user-here"),
])
def test_bad_sandbox_settings_are_fatal_at_start(tmp_path: Path, option: str, message: str) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text(f"listen=YES\nlisten_address=127.0.0.1\nlisten_port={free_port()}\n{option}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    r = subprocess.run([sys.executable, "-m", "netsync.ftpd", str(conf)], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.returncode == 1
    assert message in r.stderr


def test_default_secure_chroot_dir(tmp_path: Path, anon_root: Path) -> None:
    """vsftpd's default /usr/share/empty when it exists; otherwise a private
    empty directory of the server's own, removed when the server stops."""
    port = free_port()
    conf = tmp_path / "default.conf"
    conf.write_text(f"listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\n"
                    f"anon_root={anon_root}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "netsync.ftpd", str(conf)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc)
        f = ftplib.FTP()
        f.connect("127.0.0.1", port, timeout=10)
        _, pre = session_tree(SimpleNamespace(proc=proc))
        assert pre is not None
        root = Path(f"/proc/{pre}/root").resolve()
        if Path("/usr/share/empty").is_dir():
            assert root == Path("/usr/share/empty").resolve()
        else:
            assert root.name.startswith("netsync-ftpd-empty.") and not any(root.iterdir())
        f.login()
        assert "hello.txt" in f.nlst()
        f.quit()
    finally:
        proc.terminate()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    if root.name.startswith("netsync-ftpd-empty."):
        assert not root.exists()


def test_prelogin_process_cannot_write_the_logs(ftpd, system_user, user_home,
                                                tmp_path: Path) -> None:
    log = tmp_path / "vsftpd.log"
    srv = ftpd(**local_opts(system_user, xferlog_enable=True, vsftpd_log_file=log))
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    _, pre = session_tree(srv)
    assert pre is not None
    open_files = {os.readlink(fd) for fd in Path(f"/proc/{pre}/fd").iterdir()
                  if not os.readlink(fd).startswith(("socket:", "pipe:", "anon_inode:"))}
    assert str(log) not in open_files
    f.login(system_user.name, system_user.password)
    f.quit()
    text = log.read_text()
    assert 'CONNECT: Client "127.0.0.1"' in text
    assert f'[{system_user.name}] OK LOGIN: Client "127.0.0.1"' in text
