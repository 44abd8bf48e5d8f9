"""Fixtures for netsync-ftpd: a real server process on a free loopback port,
real clients (lftp, curl, ftplib) and, as root, a real throwaway system user."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ftpd_helpers import PAM_FILE, REPO, free_port, need, wait_port


@dataclass
class Ftpd:
    port: int
    proc: subprocess.Popen
    conf: Path
    options: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"ftp://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def ftpd(tmp_path: Path) -> Iterator:
    """Factory: ftpd(option=value, ...) starts netsync-ftpd with a vsftpd.conf
    holding those options, listening on a free loopback port."""
    started: list[Ftpd] = []

    def start(**options: object) -> Ftpd:
        port = free_port()
        # The pre-login process's chroot (vsftpd's default, /usr/share/empty,
        # is not on every system): an empty directory of the test's own.
        empty = tmp_path / "ftpd-empty"
        empty.mkdir(mode=0o755, exist_ok=True)
        opts = {"listen": "YES", "listen_address": "127.0.0.1", "listen_port": str(port),
                "delay_failed_login": "0", "secure_chroot_dir": str(empty)}
        for k, v in options.items():
            opts[k] = ("YES" if v else "NO") if isinstance(v, bool) else str(v)
        conf = tmp_path / f"ftpd-{port}.conf"
        conf.write_text("# written by the test\n" + "".join(f"{k}={v}\n" for k, v in opts.items()))
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        proc = subprocess.Popen([sys.executable, "-m", "netsync.ftpd", str(conf)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        srv = Ftpd(port, proc, conf, opts)
        started.append(srv)
        wait_port(port, proc)
        return srv

    yield start
    for srv in started:
        srv.stop()
        for stream in (srv.proc.stdout, srv.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def vsftpd(tmp_path: Path) -> Iterator:
    """Factory: vsftpd(option=value, ...) starts Debian's vsftpd, the reference,
    with the same kind of config as the ftpd fixture (root only)."""
    need(os.geteuid() == 0, "vsftpd must be started as root")
    need(os.path.exists("/usr/sbin/vsftpd"), "vsftpd not installed")
    started: list[Ftpd] = []

    def start(**options: object) -> Ftpd:
        port = free_port()
        empty = tmp_path / "vsftpd-empty"
        empty.mkdir(exist_ok=True)
        opts = {"listen": "YES", "listen_address": "127.0.0.1", "listen_port": str(port),
                "background": "NO", "seccomp_sandbox": "NO", "isolate": "NO",
                "isolate_network": "NO", "secure_chroot_dir": str(empty)}
        for k, v in options.items():
            opts[k] = ("YES" if v else "NO") if isinstance(v, bool) else str(v)
        conf = tmp_path / f"vsftpd-{port}.conf"
        conf.write_text("".join(f"{k}={v}\n" for k, v in opts.items()))
        proc = subprocess.Popen(["/usr/sbin/vsftpd", str(conf)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        srv = Ftpd(port, proc, conf, opts)
        started.append(srv)
        wait_port(port, proc)
        return srv

    yield start
    for srv in started:
        srv.stop()
        for stream in (srv.proc.stdout, srv.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def anon_root(tmp_path: Path) -> Path:
    """A read-only anonymous area with a file, a subdirectory and traps:
    a symlink pointing outside the root, and a secret next to the root."""
    base = tmp_path / "srv"
    root = base / "anon"
    (root / "pub").mkdir(parents=True)
    (root / "hello.txt").write_text("hello anonymous\n")
    (root / "pub" / "data.bin").write_bytes(bytes(range(256)) * 64)
    (root / "private.txt").write_text("not world readable\n")
    os.chmod(root / "private.txt", 0o600)
    (base / "secret.txt").write_text("outside the root\n")
    os.symlink(base / "secret.txt", root / "escape")
    os.symlink("/etc", root / "etc-link")
    for d in (base, root, root / "pub"):
        os.chmod(d, 0o755)
    for f in (root / "hello.txt", root / "pub" / "data.bin"):
        os.chmod(f, 0o644)
    return root


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    from netsync.ftpd.certs import make_cert

    return make_cert(str(tmp_path_factory.mktemp("cert")), "localhost")


@dataclass
class SysUser:
    name: str
    password: str
    home: Path
    uid: int
    gid: int
    pam_service: str


@pytest.fixture(scope="session")
def system_user() -> Iterator[SysUser]:
    """A real account (useradd + chpasswd) and a PAM service made from the
    shipped packaging/pam.d file; both removed afterwards."""
    need(os.geteuid() == 0, "creating a system user for PAM logins needs root")
    need(shutil.which("useradd") is not None and shutil.which("chpasswd") is not None,
         "useradd/chpasswd not installed")
    need(os.path.isdir("/etc/pam.d"), "no /etc/pam.d")
    name = "nsft" + secrets.token_hex(3)
    password = "Pw-" + secrets.token_hex(8)
    service = f"netsync-ftpd-test-{name}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    pam_path = Path("/etc/pam.d") / service
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        shutil.copy(PAM_FILE, pam_path)
        import pwd

        pw = pwd.getpwnam(name)
        yield SysUser(name, password, Path(pw.pw_dir), pw.pw_uid, pw.pw_gid, service)
    finally:
        pam_path.unlink(missing_ok=True)
        subprocess.run(["userdel", "-r", "-f", name], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def user_home(system_user: SysUser) -> Iterator[Path]:
    """The user's home, reset to a known state for each test."""
    home = system_user.home
    for child in home.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    os.chown(home, system_user.uid, system_user.gid)
    os.chmod(home, 0o755)
    (home / "readme.txt").write_text("in the home\n")
    os.chown(home / "readme.txt", system_user.uid, system_user.gid)
    yield home
