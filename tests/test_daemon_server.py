"""``netsync --daemon`` serving stock rsync clients, compared with ``rsync --daemon``.

Both daemons run side by side from the same rsyncd.conf (each with its own
module directories) on free loopback ports; every case runs the same stock
``/usr/bin/rsync`` command against each and compares exit codes, the
client's error lines and the resulting trees.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import treecompare as tc
import trees
from interop import peers

USER, PASSWORD = "alice", "s3cret pass"
MODULES = ("open", "ro", "wo", "auth", "ref", "deny", "one", "src", "wide")


@dataclass
class Daemon:
    name: str
    port: int
    root: Path
    config: Path
    proc: subprocess.Popen[bytes]

    def url(self, path: str = "") -> str:
        return f"rsync://127.0.0.1:{self.port}/{path}"


def _config(root: Path) -> str:
    m = {name: root / name for name in MODULES}
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    return "\n".join([
        "use chroot = no", "munge symlinks = no", *uid,
        f"log file = {root / 'log'}", f"motd file = {root / 'motd'}",
        f"lock file = {root / 'lock'}",
        "[open]", f"path = {m['open']}", "comment = Open module", "read only = no",
        "[ro]", f"path = {m['ro']}", "comment = Read-only", "read only = yes",
        "[wo]", f"path = {m['wo']}", "write only = yes", "read only = no",
        "[auth]", f"path = {m['auth']}", "comment = Needs a password", "read only = no",
        f"auth users = {USER}", f"secrets file = {root / 'secrets'}",
        "[ref]", f"path = {m['ref']}", "read only = no", "refuse options = delete",
        "[deny]", f"path = {m['deny']}", "hosts deny = 127.0.0.1",
        "[one]", f"path = {m['one']}", "max connections = 1", f"auth users = {USER}",
        f"secrets file = {root / 'secrets'}", "list = no",
        "[src]", f"path = {m['src']}", "comment = a tree to pull",
        # Fullwidth "*" and "/": IDNA folds them to ASCII, which must not make a
        # wildcard or a mask their author never typed (util1.c idn_to_ascii()).
        "[wide]", f"path = {m['wide']}", "hosts allow = \uff0a 127.0.0.0\uff0f8", "list = no",
        "",
    ])


def _start(kind: str, root: Path) -> Daemon:
    root.mkdir(parents=True)
    for name in MODULES:
        (root / name).mkdir()
    trees.make_tree(root / "src", "mixed")
    (root / "ro" / "readme.txt").write_text("read only\n")
    (root / "auth" / "secret.txt").write_text("for alice\n")
    (root / "motd").write_text("Welcome to the test daemon\nsecond line\n")
    # The two daemons' trees are made a moment apart: give the module dirs and the
    # files made here one fixed mtime so listings compare equal whatever second each
    # was made in.
    fixed = (1_600_000_000_000_000_000, 1_600_000_000_000_000_000)
    for path in (root / "ro" / "readme.txt", root / "auth" / "secret.txt",
                 *(root / name for name in MODULES)):
        os.utime(path, ns=fixed)
    secrets = root / "secrets"
    secrets.write_text(f"{USER}:{PASSWORD}\n")
    secrets.chmod(0o600)
    config = root / "rsyncd.conf"
    config.write_text(_config(root), encoding="utf-8")
    cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
    proc, port = peers.start_daemon(cmd, config, env=tc.sync_env())
    return Daemon(kind, port, root, config, proc)


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    base = tmp_path_factory.mktemp("daemons")
    ref = _start("rsync", base / "rsync")
    ours = _start("netsync", base / "netsync")
    try:
        yield ref, ours
    finally:
        peers.stop(ref.proc)
        peers.stop(ours.proc)


def _rsync(args: list[str], cwd: Path, password: str | None = None) -> tc.Run:
    env = tc.sync_env()
    env.pop("RSYNC_PASSWORD", None)
    if password is not None:
        env["RSYNC_PASSWORD"] = password
    argv = [tc.RSYNC, *args]
    p = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=60)
    return tc.Run(argv, p.returncode, p.stdout, p.stderr)


_TRAILER = re.compile(rb" at [\w.]+\(\d+\)| \[\w+=[\d.]+\w*\]")


def _errors(run: tc.Run) -> list[bytes]:
    """The client's stderr lines with the program name, source location and version
    (which differ between rsync and netsync) taken out."""
    out = []
    for line in run.stderr.splitlines():
        line = _TRAILER.sub(b"", line)
        line = re.sub(rb"^(rsync|netsync)( error)?:", rb"PROG\2:", line)
        out.append(line)
    return out


def _both(daemons: tuple[Daemon, Daemon], tmp_path: Path, make_args,
          password: str | None = None) -> tuple[tc.Run, tc.Run]:
    runs = []
    for d in daemons:
        work = tmp_path / d.name
        work.mkdir(exist_ok=True)
        runs.append(_rsync(make_args(d, work), work, password))
    return runs[0], runs[1]


def test_startup_log_line(daemons: tuple[Daemon, Daemon]) -> None:
    """The listener's first log line has rsyncd's wording, which log watchers match."""
    pat = re.compile(r"rsyncd version \S+ (\(netsync\) )?starting, listening on port (\d+)$")
    for d in daemons:
        lines = (d.root / "log").read_text().splitlines()
        found = [m for m in map(pat.search, lines) if m]
        assert found and found[0].group(2) == str(d.port), (d.name, lines[:3])
        assert bool(found[0].group(1)) == (d.name == "netsync")


def test_module_listing(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    want, got = _both(daemons, tmp_path, lambda d, w: [d.url()])
    assert want.returncode == got.returncode == 0, got.describe()
    assert b"Welcome to the test daemon" in got.stdout
    assert got.stdout == want.stdout
    assert b"one " not in got.stdout  # list = no


def test_pull_tree(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    """-H too comes a directory at a time ("receiving incremental file list"), as
    from rsyncd: the same lines in the same order, the same links."""
    want, got = _both(daemons, tmp_path, lambda d, w: ["-aHvi", d.url("src/"), "dst/"])
    assert want.returncode == got.returncode == 0, got.describe()
    tc.assert_same(tc.snapshot(tmp_path / "rsync" / "dst"), tc.snapshot(tmp_path / "netsync" / "dst"))
    assert b"receiving incremental file list" in tc.output_lines(want.stdout)
    assert b" => " in want.stdout
    tc.assert_same_output(tc.output_lines(want.stdout), tc.output_lines(got.stdout))


@pytest.mark.parametrize("protocol", [30, 29, 27])
def test_pull_old_protocols(daemons: tuple[Daemon, Daemon], tmp_path: Path,
                            protocol: int) -> None:
    want, got = _both(daemons, tmp_path,
                      lambda d, w: ["-a", f"--protocol={protocol}", d.url("src/"), f"{w}/dst/"])
    assert want.returncode == got.returncode == 0, got.describe()
    tc.assert_same(tc.snapshot(tmp_path / "rsync" / "dst"), tc.snapshot(tmp_path / "netsync" / "dst"))


def test_push_tree(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    trees.make_tree(tmp_path / "tree", "mixed", seed=7)
    want, got = _both(daemons, tmp_path,
                      lambda d, w: ["-aH", f"{tmp_path}/tree/", d.url("open/pushed/")])
    assert want.returncode == got.returncode == 0, got.describe()
    ref, ours = daemons
    tc.assert_same(tc.snapshot(ref.root / "open" / "pushed"),
                   tc.snapshot(ours.root / "open" / "pushed"))
    # As in rsync's daemon, symlink targets cannot point above the module.
    assert os.readlink(ours.root / "open" / "pushed" / "links" / "abs_etc") == "etc/hostname"


def test_read_only_refuses_push(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x\n")
    want, got = _both(daemons, tmp_path, lambda d, w: ["-a", f"{tmp_path}/f", d.url("ro/")])
    assert want.returncode == got.returncode == 1, got.describe()
    assert b"ERROR: module is read only" in got.stderr
    assert not (daemons[1].root / "ro" / "f").exists()


def test_write_only_refuses_pull(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    want, got = _both(daemons, tmp_path, lambda d, w: ["-a", d.url("wo/"), f"{w}/dst/"])
    assert want.returncode == got.returncode == 1, got.describe()
    assert _errors(got)[:2] == _errors(want)[:2]
    assert b"ERROR: module is write only" in got.stderr


def test_dotdot_and_absolute_paths_stay_in_module(daemons: tuple[Daemon, Daemon],
                                                 tmp_path: Path) -> None:
    for path in ("ro/../../", "ro//etc/", "ro/../src/../../"):
        want, got = _both(daemons, tmp_path, lambda d, w, p=path: ["-a", "--list-only", d.url(p)])
        assert got.returncode == want.returncode, got.describe()
        assert tc.output_lines(got.stdout) == tc.output_lines(want.stdout), path
    # A push aimed above the module lands inside it.
    (tmp_path / "up.txt").write_text("up\n")
    want, got = _both(daemons, tmp_path, lambda d, w: [f"{tmp_path}/up.txt", d.url("open/../../")])
    assert want.returncode == got.returncode == 0, got.describe()
    assert (daemons[1].root / "open" / "up.txt").exists()
    assert not (daemons[1].root / "up.txt").exists()


def test_auth_success(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    want, got = _both(daemons, tmp_path,
                      lambda d, w: ["-a", f"rsync://{USER}@127.0.0.1:{d.port}/auth/", f"{w}/dst/"],
                      password=PASSWORD)
    assert want.returncode == got.returncode == 0, got.describe()
    assert (tmp_path / "netsync" / "dst" / "secret.txt").read_text() == "for alice\n"


def test_auth_failure(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    want, got = _both(daemons, tmp_path,
                      lambda d, w: ["-a", f"rsync://{USER}@127.0.0.1:{d.port}/auth/", f"{w}/d/"],
                      password="wrong")
    assert want.returncode == got.returncode == 5, got.describe()
    assert _errors(got) == _errors(want)
    assert b"@ERROR: auth failed on module auth" in got.stderr


def test_unknown_module(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    want, got = _both(daemons, tmp_path, lambda d, w: ["-a", d.url("nope/"), f"{w}/d/"])
    assert want.returncode == got.returncode == 5, got.describe()
    assert _errors(got) == _errors(want)
    assert b"@ERROR: Unknown module 'nope'" in got.stderr


def test_hosts_deny(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    want, got = _both(daemons, tmp_path, lambda d, w: ["-a", d.url("deny/"), f"{w}/d/"])
    assert want.returncode == got.returncode == 5, got.describe()
    assert _errors(got) == _errors(want)
    assert b"@ERROR: access denied to deny from " in got.stderr


def test_hosts_allow_fullwidth_is_no_wildcard(daemons: tuple[Daemon, Daemon],
                                             tmp_path: Path) -> None:
    want, got = _both(daemons, tmp_path, lambda d, w: ["-a", d.url("wide/"), f"{w}/d/"])
    assert want.returncode == got.returncode == 5, got.describe()
    assert _errors(got) == _errors(want)
    # (an unlisted module is not named to a host it refuses, as rsyncd's)
    assert b"@ERROR: Unknown module 'wide'" in got.stderr


def test_refuse_options(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    want, got = _both(daemons, tmp_path,
                      lambda d, w: ["-a", "--delete", f"{tmp_path}/s/", d.url("ref/")])
    assert want.returncode == got.returncode == 4, got.describe()
    assert _errors(got)[0] == _errors(want)[0] == b"PROG: The server is configured to refuse --delete"


def test_max_connections(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    """A client parked at the password prompt holds the only slot of module "one"."""
    holders = []
    try:
        for d in daemons:
            s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
            holders.append(s)
            s.sendall(b"@RSYNCD: 32.0 md5\none\n")
            f = s.makefile("rb")
            while not f.readline().startswith(b"@RSYNCD: AUTHREQD"):
                pass
        want, got = _both(daemons, tmp_path, lambda d, w: ["-a", d.url("one/"), f"{w}/d/"],
                          password=PASSWORD)
    finally:
        for s in holders:
            s.close()
    assert want.returncode == got.returncode == 5, got.describe()
    assert _errors(got) == _errors(want)
    assert b"@ERROR: max connections (1) reached -- try again later" in got.stderr


def test_daemon_over_remote_shell(daemons: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    """``rsync -e RSH host::module`` runs ``netsync --server --daemon .`` on the far side."""
    ours = daemons[1]
    rsh = tmp_path / "rsh"
    rsh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    rsh.chmod(0o755)
    netsync = " ".join([sys.executable, "-m", "netsync", f"--config={ours.config}"])
    run = _rsync(["-aH", "-e", str(rsh), f"--rsync-path={netsync}", "localhost::src/",
                  f"{tmp_path}/dst/"], tmp_path)
    assert run.returncode == 0, run.describe()
    tc.assert_same(tc.snapshot(ours.root / "src", sparse=False),
                   tc.snapshot(tmp_path / "dst", sparse=False))
    listing = _rsync(["-e", str(rsh), f"--rsync-path={netsync}", "localhost::"], tmp_path)
    assert listing.returncode == 0, listing.describe()
    assert b"src            \ta tree to pull" in listing.stdout


def test_inetd_mode(daemons: tuple[Daemon, Daemon]) -> None:
    """stdin a socket: one connection served by the started process."""
    ours = daemons[1]
    a, b = socket.socketpair()
    with a, b:
        proc = subprocess.Popen([*tc.program_under_test(), "--daemon",
                                 f"--config={ours.config}"], env=tc.sync_env(),
                                stdin=b.fileno(), stdout=b.fileno(), stderr=subprocess.DEVNULL)
        b.close()
        a.sendall(b"@RSYNCD: 32.0 md5\n#list\n")
        data = b""
        while chunk := a.recv(65536):
            data += chunk
        assert proc.wait(20) == 0
    assert data.startswith(b"@RSYNCD: 32.0 ")
    assert b"Welcome to the test daemon" in data
    assert data.endswith(b"@RSYNCD: EXIT\n")


def test_sigterm_stops_listener(tmp_path: Path) -> None:
    d = _start("netsync", tmp_path / "d")
    d.proc.terminate()
    assert d.proc.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", d.port), timeout=2).close()
    shutil.rmtree(d.root)


def test_pull_past_a_file_the_server_cannot_open(tmp_path: Path) -> None:
    """The daemon's sender (as nobody) cannot open one listed file: it says MSG_NO_SEND
    and sends the files after it, which a stock client must get as from rsyncd (the
    skipped file's index is not the base the next one is coded against)."""
    got = {}
    os.chmod(tmp_path, 0o755)
    for kind in ("rsync", "netsync"):
        root = tmp_path / kind
        mod = root / "m"
        mod.mkdir(parents=True)
        os.chmod(root, 0o755)
        (mod / "a-locked").write_bytes(b"secret\n")
        (mod / "a-locked").chmod(0)
        for i in range(40):
            (mod / f"b{i:03d}").write_bytes(b"data %d\n" % i)
        conf = root / "rsyncd.conf"
        conf.write_text(f"use chroot = no\nuid = nobody\ngid = nogroup\n[m]\n  path = {mod}\n")
        cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
        proc, port = peers.start_daemon(cmd, conf, env=tc.sync_env())
        try:
            run = _rsync(["-r", f"rsync://127.0.0.1:{port}/m/", "dst/"], root)
        finally:
            peers.stop(proc)
        assert run.returncode == 23, run.describe()
        got[kind] = {p.name: p.read_bytes() for p in (root / "dst").iterdir()}
    assert got["netsync"] == got["rsync"]
    assert sorted(got["rsync"]) == [f"b{i:03d}" for i in range(40)]
