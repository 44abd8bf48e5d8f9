"""Real peers for interop tests: an OpenSSH sshd and an ``rsync --daemon``.

Both listen on a free loopback port, use throwaway keys/configs in a temp
dir and are stopped when the fixture ends.  Use the pytest fixtures
``sshd_server`` and ``rsyncd`` (session scoped); import them into a test
module (``from interop.peers import sshd_server, rsyncd  # noqa: F401``) or a
conftest.

When a peer program is missing the fixture skips, except under CI
(``CI=true``) where it fails: CI must run these tests.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/bin/sshd", "/usr/local/sbin/sshd")


def missing(what: str) -> None:
    """Skip the test, or fail it under CI."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: interop peers are required)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def start_daemon(cmd: list[str], config: os.PathLike[str] | str, *,
                 env: dict[str, str] | None = None,
                 what: str = "--daemon", extra: Sequence[str] = (),
                 address: str | None = "127.0.0.1",
                 ready: Callable[[int, subprocess.Popen[bytes]], bool] = wait_for_port,
                 ) -> tuple[subprocess.Popen[bytes], int]:
    """``cmd --daemon --no-detach`` from ``config`` on a free loopback port (``extra``:
    more daemon options; ``address`` None: every address; ``ready``: how to tell it
    listens).

    Retried on a new port: another test may bind the free port first.  (proc, port);
    fails through missing() when the daemon never listens.
    """
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen([*cmd, "--daemon", "--no-detach", f"--port={port}",
                                 *([f"--address={address}"] if address else []),
                                 f"--config={config}", *extra],
                                env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if ready(port, proc):
            return proc, port
        stop(proc)
    missing(f"could not start {shlex.join(cmd)} {what}")
    raise AssertionError("unreachable")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------
# sshd


@dataclass
class SshServer:
    port: int
    host: str
    user: str
    key: Path  # the client's private key
    dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def ssh_args(self) -> list[str]:
        return ["ssh", "-p", str(self.port), "-i", str(self.key),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes"]

    @property
    def rsh(self) -> str:
        """An -e value for rsync/netsync."""
        return " ".join(self.ssh_args)

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}"


def _keygen(path: Path, kind: str = "ed25519") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "netsync-test", "-f",
                    str(path)], check=True, stdout=subprocess.DEVNULL)


def start_sshd(workdir: Path) -> SshServer:
    """Start sshd as the current user (root in CI) with key-only login for that user."""
    sshd = next((p for p in SSHD_CANDIDATES if os.access(p, os.X_OK)), None)
    if sshd is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        missing("OpenSSH (sshd, ssh, ssh-keygen) is not installed: apt-get install openssh-server")
    assert sshd is not None
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = workdir / "host_ed25519"
    user_key = workdir / "id_ed25519"
    _keygen(host_key)
    _keygen(user_key)
    auth_keys = workdir / "authorized_keys"
    auth_keys.write_bytes(user_key.with_suffix(".pub").read_bytes())
    auth_keys.chmod(0o600)
    # sshd insists on its privilege-separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    last_err = ""
    for _attempt in range(5):
        port = free_port()
        config = workdir / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {auth_keys}",
            "PermitRootLogin yes",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel ERROR",
            "",
        ]))
        check = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            missing(f"sshd refuses its test config: {check.stderr.strip()}")
        log = open(workdir / "sshd.log", "ab")  # noqa: SIM115 - lives as long as sshd
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
        log.close()
        if wait_for_port(port, proc):
            server = SshServer(port, "127.0.0.1", user, user_key, workdir, proc)
            # Make sure a login works before handing it out.
            probe = subprocess.run([*server.ssh_args, server.login, "true"], capture_output=True,
                                   text=True, timeout=30)
            if probe.returncode == 0:
                return server
            last_err = probe.stderr.strip()
        else:
            last_err = (workdir / "sshd.log").read_text(errors="replace")[-2000:]
        stop(proc)
    missing(f"could not start a working sshd: {last_err}")
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# rsync daemon


@dataclass
class RsyncDaemon:
    port: int
    dir: Path
    modules: dict[str, Path]
    user: str = "alice"
    password: str = "s3cret pass"
    motd: list[str] = field(default_factory=lambda: ["Welcome to the netsync test daemon",
                                                     "second motd line"])
    proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str = "") -> str:
        return f"rsync://127.0.0.1:{self.port}/{path}"


def start_rsyncd(workdir: Path) -> RsyncDaemon:
    """``rsync --daemon --no-detach`` with modules open (rw), ro and auth (user alice)."""
    rsync = shutil.which("rsync")
    if rsync is None:
        missing("rsync is not installed: apt-get install rsync")
    assert rsync is not None
    workdir.mkdir(parents=True, exist_ok=True)
    modules = {name: workdir / name for name in ("open", "ro", "auth")}
    for path in modules.values():
        path.mkdir(exist_ok=True)
    (modules["ro"] / "readme.txt").write_text("read only\n")
    (modules["auth"] / "secret.txt").write_text("for alice\n")
    d = RsyncDaemon(0, workdir, modules)
    secrets = workdir / "secrets"
    secrets.write_text(f"{d.user}:{d.password}\n")
    secrets.chmod(0o600)
    motd = workdir / "motd"
    motd.write_text("\n".join(d.motd) + "\n")
    uid_lines = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    last_err = ""
    for _attempt in range(5):
        port = free_port()
        config = workdir / "rsyncd.conf"
        config.write_text("\n".join([
            "use chroot = no",
            *uid_lines,
            f"pid file = {workdir / 'rsyncd.pid'}",
            f"log file = {workdir / 'rsyncd.log'}",
            f"motd file = {motd}",
            "[open]",
            f"    path = {modules['open']}",
            "    comment = Open module",
            "    read only = no",
            "[ro]",
            f"    path = {modules['ro']}",
            "    comment = Read-only module",
            "    read only = yes",
            "[auth]",
            f"    path = {modules['auth']}",
            "    comment = Needs a password",
            "    read only = no",
            f"    auth users = {d.user}",
            f"    secrets file = {secrets}",
            "",
        ]))
        (workdir / "rsyncd.pid").unlink(missing_ok=True)
        proc = subprocess.Popen([rsync, "--daemon", "--no-detach", f"--port={port}",
                                 "--address=127.0.0.1", f"--config={config}"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        if wait_for_port(port, proc):
            d.port = port
            d.proc = proc
            return d
        stop(proc)
        last_err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    missing(f"could not start rsync --daemon: {last_err}")
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# pytest fixtures


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A running sshd on 127.0.0.1 (key login as the current user, usually root)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stop(server.proc)


@pytest.fixture(scope="session")
def rsyncd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RsyncDaemon]:
    """A running ``rsync --daemon`` on 127.0.0.1 with modules open, ro and auth."""
    daemon = start_rsyncd(tmp_path_factory.mktemp("rsyncd"))
    try:
        yield daemon
    finally:
        if daemon.proc is not None:
            stop(daemon.proc)


@dataclass
class RunningDaemon:
    """A daemon a test started: which program, its port, its work dir, its process."""

    name: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes]

    def url(self, path: str = "") -> str:
        return f"rsync://127.0.0.1:{self.port}/{path}"


def recv_line(s: socket.socket) -> bytes:
    """One line of a daemon's text handshake, read a byte at a time (nothing past it)."""
    out = bytearray()
    while not out.endswith(b"\n"):
        ch = s.recv(1)
        if not ch:
            break
        out += ch
    return bytes(out)
