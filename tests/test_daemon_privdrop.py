"""netsync --daemon as root drops to the module's uid (nobody by default) before the
transfer; every module the engine loads lazily must already be imported by then."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from interop.peers import start_daemon, stop


@pytest.mark.parametrize("zopts", [[], ["-z", "--zc=zstd"], ["-z", "--zc=lz4"],
                                   ["-z", "--zc=zlibx"]], ids=" ".join)
def test_default_uid_module_serves_whole_and_delta_pulls(tmp_path: Path,
                                                         zopts: list[str]) -> None:
    """(-z: the compressor's system library is found before the drop, which
    left the connection unable to run the lookup.)"""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    big = os.urandom(300_000)
    (data / "big").write_bytes(big)
    (data / "small").write_bytes(b"hello\n")
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\n[data]\n  path = {data}\n  read only = yes\n"
                    "  munge symlinks = no\n")  # no uid/gid lines: nobody/nogroup as root
    proc, port = start_daemon([sys.executable, "-m", "netsync"], conf)
    try:
        dst = tmp_path / "dst"
        dst.mkdir()
        (dst / "big").write_bytes(big[:100_000] + b"changed" + big[100_000:])
        r = subprocess.run(["rsync", "-a", "--no-W", *zopts, f"rsync://127.0.0.1:{port}/data/",
                            f"{dst}/"], capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert (dst / "big").read_bytes() == big
        assert (dst / "small").read_bytes() == b"hello\n"
    finally:
        stop(proc)


def _serve(conf: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc, port = start_daemon([sys.executable, "-m", "netsync"], conf)
    return proc, f"rsync://127.0.0.1:{port}/mod/"


def _push_and_pull(tmp_path: Path, mod: Path, url: str, owner: tuple[int, int]) -> None:
    """A pull gets the public file and reports the root-only one (exit 23, as rsync);
    a push creates a file owned by ``owner``."""
    dst = tmp_path / "dst"
    r = subprocess.run(["rsync", "-a", url, f"{dst}/"], capture_output=True, timeout=120)
    assert r.returncode == 23, r.stderr
    assert b'private" (in mod): Permission denied' in r.stderr, r.stderr
    assert (dst / "public").read_bytes() == b"for everyone\n"
    assert not (dst / "private").exists()
    up = tmp_path / "up"
    up.mkdir()
    (up / "new").write_bytes(b"pushed\n")
    r = subprocess.run(["rsync", "-rt", f"{up}/", url], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    st = os.stat(mod / "new")
    assert (st.st_uid, st.st_gid) == owner
    assert (mod / "new").read_bytes() == b"pushed\n"
    assert sorted(p.name for p in mod.iterdir()) == ["new", "private", "public"]  # no temp


def _module_tree(mod: Path, owner: tuple[int, int]) -> None:
    mod.mkdir(parents=True)
    for p in mod.parents:
        if p == Path("/tmp") or p == Path("/"):
            break
        os.chmod(p, 0o755)
    os.chown(mod, *owner)
    (mod / "public").write_bytes(b"for everyone\n")
    (mod / "public").chmod(0o644)
    (mod / "private").write_bytes(b"root only\n")
    (mod / "private").chmod(0o600)


def test_daemon_chroot_and_daemon_uid_gid(tmp_path: Path) -> None:
    """rsyncd.conf's global ``daemon chroot``/``daemon uid``/``daemon gid``: each
    connection chroots and drops to them before talking to the client, so module paths
    are inside the chroot and files are read and written as that user.  (As in rsync,
    names are looked up after the chroot, so numeric ids suit a bare chroot.)"""
    if os.geteuid() != 0:
        pytest.skip("needs root to chroot and drop privileges")
    import pwd

    nobody = pwd.getpwnam("nobody")
    owner = (nobody.pw_uid, nobody.pw_gid)
    jail = tmp_path / "jail"
    _module_tree(jail / "mod", owner)
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"daemon chroot = {jail}\ndaemon uid = {owner[0]}\n"
                    f"daemon gid = {owner[1]}\nuse chroot = no\nlog file = {tmp_path}/log\n"
                    "[mod]\n  path = /mod\n  read only = no\n  munge symlinks = no\n")
    proc, url = _serve(conf)
    try:
        _push_and_pull(tmp_path, jail / "mod", url, owner)
    finally:
        stop(proc)


def test_use_chroot_module_push_and_pull(tmp_path: Path) -> None:
    """``use chroot = yes``: the transfer runs chrooted into the module (no /proc there)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to chroot and drop privileges")
    import pwd

    nobody = pwd.getpwnam("nobody")
    owner = (nobody.pw_uid, nobody.pw_gid)
    mod = tmp_path / "mod"
    _module_tree(mod, owner)
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = yes\nuid = {owner[0]}\ngid = {owner[1]}\n"
                    f"log file = {tmp_path}/log\n[mod]\n  path = {mod}\n  read only = no\n")
    proc, url = _serve(conf)
    try:
        _push_and_pull(tmp_path, mod, url, owner)
    finally:
        stop(proc)


def test_invalid_daemon_uid_refuses_connections(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    mod = tmp_path / "mod"
    mod.mkdir()
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"daemon uid = no-such-user-xyz\nlog file = {tmp_path}/log\n"
                    f"[mod]\n  path = {mod}\n")
    proc, port = start_daemon([sys.executable, "-m", "netsync"], conf)
    try:
        r = subprocess.run(["rsync", f"rsync://127.0.0.1:{port}/"], capture_output=True,
                           timeout=60)
        assert r.returncode != 0
        assert b"Invalid daemon uid: no-such-user-xyz" in (tmp_path / "log").read_bytes()
    finally:
        stop(proc)


@pytest.mark.parametrize("chroot", ["no", "yes"])
@pytest.mark.parametrize("direction", ["pull", "push"])
@pytest.mark.parametrize("where", ["", "sub/"])
def test_error_paths_are_named_in_the_module(tmp_path: Path, chroot: str, direction: str,
                                             where: str) -> None:
    """util1.c full_fname() in a daemon: a path below the module, "(in mod)" after it,
    with or without a leading slash as rsync's curr_dir makes it; the same lines as an
    rsync daemon's (the client chdir()-relative cases: module top and a subdir)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    os.chmod(tmp_path, 0o755)
    mod = tmp_path / "mod"
    (mod / "sub").mkdir(parents=True)
    os.chmod(mod, 0o755)
    (mod / "sub" / "private").write_text("root only\n")
    os.chmod(mod / "sub" / "private", 0o600)
    src = tmp_path / "src" / "sub"
    src.mkdir(parents=True)
    (src / "newf").write_text("new\n")
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = {chroot}\nuid = nobody\ngid = nogroup\n"
                    f"[mod]\npath = {mod}\nread only = no\n")
    lines = []
    for daemon in ("/usr/bin/rsync", f"{sys.executable} -m netsync"):
        env = dict(os.environ, RSYNC_CONNECT_PROG=f"{daemon} --daemon --config={conf}")
        if direction == "pull":
            args = [f"rsync://x/mod/{where}", str(tmp_path / "dst") + "/"]
        else:
            args = [str(tmp_path / "src" / where) + "/" if where else str(tmp_path / "src") + "/",
                    f"rsync://x/mod/{where}"]
        r = subprocess.run(["/usr/bin/rsync", "-r", *args], capture_output=True, env=env,
                           timeout=60)
        assert r.returncode == 23, r.stderr
        first = r.stderr.split(b"\n")[0].split(b": ", 1)[1]
        lines.append(re.sub(rb"\.newf\.\w+", b".newf.X", first))  # (the temp name's random part)
    assert lines[1] == lines[0]
    assert b" (in mod)" in lines[1]


def test_module_top_dir_owned_by_root(tmp_path: Path) -> None:
    """A writable module whose top dir the module's uid does not own: its times cannot
    be set.  rsync's generator says so once, when the dir comes up, and then sets
    no mode (set_file_attrs(): the times come first, a failure ends it; touch_up_dirs()
    is silent).  netsync said "failed to set permissions" there and again at the end,
    then "failed to set times"."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    out = {}
    for who, cmd in (("rsync", ["rsync"]), ("netsync", [sys.executable, "-m", "netsync"])):
        base = tmp_path / who
        mod = base / "mod"
        _module_tree(mod, (0, 0))
        mod.chmod(0o777)
        src = base / "src"
        src.mkdir()
        (src / "f").write_bytes(b"x\n")
        os.utime(src, (1_500_000_000, 1_500_000_000))
        conf = base / "rsyncd.conf"
        conf.write_text(f"use chroot = no\n[mod]\n  path = {mod}\n  read only = no\n")
        proc, port = start_daemon(cmd, conf)
        try:
            r = subprocess.run(["rsync", "-a", f"{src}/", f"rsync://127.0.0.1:{port}/mod/"],
                               capture_output=True, timeout=120)
        finally:
            stop(proc)
        lines = [re.sub(rb"^netsync", b"rsync", ln).split(b" at ")[0]
                 for ln in r.stderr.splitlines()]
        out[who] = (r.returncode, lines, (mod / "f").read_bytes())
    assert out["netsync"] == out["rsync"]
    assert out["rsync"][0] == 23
    assert out["rsync"][1] == [
        b'rsync: [generator] failed to set times on "." (in mod): Operation not permitted (1)',
        b"rsync error: some files/attrs were not transferred (see previous errors) (code 23)"]
