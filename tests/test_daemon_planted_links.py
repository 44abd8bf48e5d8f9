"""``netsync --daemon`` against symlinks planted by another user, the module's
``insecure links`` opt-out, and a few more daemon behaviours of rsync 3.5, each
checked with a real daemon on loopback and the stock rsync client.

rsync 3.5 opens the daemon's own files (config, motd, lock file, secrets, log)
and changes into a module's path with open_no_attacker_symlinks(): a symlink on
the way is followed only when owned by root or the daemon's euid.  The sender's
scans stay inside the module (secure_opendir()/change_dir()).  Only the module's
``insecure links = yes`` restores following anything; a client's
``--insecure-links`` is refused.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile_peer as hp
from interop import peers
from netsync.flist import FileEntry
from netsync.transport import SocketConnection

RSYNC = shutil.which("rsync")
NETSYNC = [sys.executable, "-m", "netsync"]
MARKER = "PLANTED-LINK-TARGET-MARKER"


def _need_root_and_rsync() -> int:
    """The uid of another user (the attacker); skips unless we are root with rsync."""
    if RSYNC is None:
        peers.missing("rsync is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root to plant a symlink owned by another user")
    try:
        uid = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("no 'nobody' user")
    if uid in (0, os.geteuid()):
        pytest.skip("'nobody' is not another user here")
    return uid


def _plant(link: Path, target: Path | str, uid: int) -> None:
    os.symlink(target, link)
    os.lchown(link, uid, uid)


def _conf(tmp_path: Path, globals_: str, modules: dict[str, dict[str, str]]) -> Path:
    text = f"use chroot = no\nuid = 0\ngid = 0\nlog file = {tmp_path}/log\n{globals_}"
    for name, params in modules.items():
        text += f"[{name}]\n" + "".join(f"  {k} = {v}\n" for k, v in params.items())
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(text)
    return conf


def _rsync(*args: str) -> subprocess.CompletedProcess[str]:
    assert RSYNC is not None
    return subprocess.run([RSYNC, *args], capture_output=True, text=True, timeout=120)


class _Daemon:
    def __init__(self, conf: Path) -> None:
        self.proc, self.port = peers.start_daemon(NETSYNC, conf)
        self.url = f"rsync://127.0.0.1:{self.port}/"

    def __enter__(self) -> _Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        peers.stop(self.proc)


def _log(tmp_path: Path) -> str:
    p = tmp_path / "log"
    return p.read_text(errors="replace") if p.exists() else ""


# --------------------------------------------------------------------------
# The daemon's own files


def test_motd_and_lock_file_symlinks_planted_by_another_user(tmp_path: Path) -> None:
    att = _need_root_and_rsync()
    victim = tmp_path / "victim"
    victim.write_text(MARKER + "\n")
    victim.chmod(0o600)
    plants = tmp_path / "plants"
    plants.mkdir()
    _plant(plants / "motd", victim, att)
    (tmp_path / "lockdir").mkdir()
    _plant(plants / "lock", tmp_path / "lockdir" / "leaked", att)
    (tmp_path / "mod").mkdir()
    conf = _conf(tmp_path, f"motd file = {plants}/motd\nlock file = {plants}/lock\n",
                 {"mod": {"path": str(tmp_path / "mod"), "max connections": "5"}})
    with _Daemon(conf) as d:
        r = _rsync(d.url + "mod/")
    assert MARKER not in r.stdout + r.stderr
    assert not (tmp_path / "lockdir" / "leaked").exists()
    # The lock file cannot be opened, so the module is refused (as rsync does).
    assert "@ERROR: failed to open lock file" in r.stderr, r.stderr

    # The same links owned by root are the administrator's: followed.
    for name in ("motd", "lock"):
        os.lchown(plants / name, 0, 0)
    with _Daemon(conf) as d:
        r = _rsync(d.url + "mod/")
    assert r.returncode == 0, r.stderr
    assert MARKER in r.stdout
    assert (tmp_path / "lockdir" / "leaked").exists()


def test_config_file_symlink_planted_by_another_user(tmp_path: Path) -> None:
    att = _need_root_and_rsync()
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "f").write_text("x\n")
    real = _conf(tmp_path, "", {"mod": {"path": str(tmp_path / "mod")}})
    plant = tmp_path / "planted.conf"
    _plant(plant, real, att)
    r = subprocess.run([*NETSYNC, "--daemon", "--no-detach", f"--port={peers.free_port()}",
                        "--address=127.0.0.1", f"--config={plant}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert f'unable to open config file "{plant}": Too many levels of symbolic links' \
        in r.stderr, r.stderr

    os.lchown(plant, 0, 0)  # root's own link is followed
    with _Daemon(plant) as d:
        r = _rsync(d.url + "mod/")
    assert r.returncode == 0, r.stderr
    assert " f\n" in r.stdout


# --------------------------------------------------------------------------
# The module path, and what a client may ask for


def _escape_module(tmp_path: Path, att: int) -> Path:
    """A module path that is a symlink planted by ``att`` to a dir with a canary."""
    target = tmp_path / "escape_target"
    target.mkdir()
    (target / "canary").write_text("must not be served\n")
    plant = tmp_path / "plant"
    _plant(plant, target, att)
    return plant


def test_module_path_through_planted_symlink_is_refused(tmp_path: Path) -> None:
    att = _need_root_and_rsync()
    plant = _escape_module(tmp_path, att)
    conf = _conf(tmp_path, "", {"mod": {"path": str(plant), "read only": "yes"},
                                "optout": {"path": str(plant), "read only": "yes",
                                           "insecure links": "yes"}})
    with _Daemon(conf) as d:
        r = _rsync(d.url + "mod/")
        assert "canary" not in r.stdout
        assert r.returncode != 0
        assert "@ERROR: chdir failed" in r.stderr, r.stderr
        # A client cannot switch the confinement off: --insecure-links is refused,
        # even on a module that follows links itself.
        r = _rsync("-M--insecure-links", d.url + "optout/")
        assert "canary" not in r.stdout
        assert r.returncode != 0
        assert "The server is configured to refuse --insecure-links" in r.stderr, r.stderr
        # The module's own "insecure links = yes" is the administrator's opt-out.
        r = _rsync(d.url + "optout/")
        assert r.returncode == 0, r.stderr
        assert "canary" in r.stdout
    assert 'chdir "' in _log(tmp_path)

    os.lchown(plant, 0, 0)  # root's symlink as the module path: followed
    with _Daemon(conf) as d:
        r = _rsync(d.url + "mod/")
    assert r.returncode == 0, r.stderr
    assert "canary" in r.stdout


def _scan_tree(tmp_path: Path, att: int) -> tuple[Path, Path]:
    mod = tmp_path / "mod"
    outside = tmp_path / "outside"
    (mod / "realdir").mkdir(parents=True)
    outside.mkdir()
    (mod / "realdir" / "inside.txt").write_text("inside\n")
    (outside / "secret.txt").write_text(MARKER + "\n")
    os.symlink(outside, mod / "cd")  # root's own link, but out of the module
    _plant(mod / "sub", "../outside", att)
    return mod, outside


def test_sender_scans_stay_in_the_module(tmp_path: Path) -> None:
    att = _need_root_and_rsync()
    mod, _ = _scan_tree(tmp_path, att)
    conf = _conf(tmp_path, "", {"mod": {"path": str(mod), "read only": "yes"},
                                "optout": {"path": str(mod), "read only": "yes",
                                           "insecure links": "yes"}})
    dst = tmp_path / "dst"
    with _Daemon(conf) as d:
        r = _rsync("-nrv", d.url + "mod/realdir/", f"{dst}/")
        assert r.returncode == 0 and "inside.txt" in r.stdout, r.stderr
        # A directory argument through a symlink that leaves the module.
        r = _rsync("-nrv", d.url + "mod/cd/", f"{dst}/")
        assert "secret.txt" not in r.stdout
        assert r.returncode == 23, r.stderr
        assert "Too many levels of symbolic links" in r.stderr, r.stderr
        r = _rsync("-nv", d.url + "mod/cd/secret.txt", f"{dst}/")
        assert "secret.txt" not in r.stdout and r.returncode == 23, r.stderr
        # --copy-dirlinks: the planted dir link is not scanned.
        r = _rsync("-r", "--copy-dirlinks", d.url + "mod/", f"{dst}/")
        assert r.returncode == 23, r.stderr
        assert (dst / "realdir" / "inside.txt").exists()
        assert not (dst / "sub" / "secret.txt").exists()
        assert not (dst / "cd" / "secret.txt").exists()
        # "insecure links = yes" follows them (rsync 3.2.7's behaviour).
        shutil.rmtree(dst)
        r = _rsync("-r", "--copy-dirlinks", d.url + "optout/", f"{dst}/")
        assert r.returncode == 0, r.stderr
        assert (dst / "sub" / "secret.txt").read_text() == MARKER + "\n"


def test_copy_links_content_stays_in_the_module(tmp_path: Path) -> None:
    """-L: a file link leading out of the module is not read; one inside is."""
    _need_root_and_rsync()
    mod = tmp_path / "mod"
    outside = tmp_path / "outside"
    (mod / "sub").mkdir(parents=True)
    outside.mkdir()
    (mod / "target.txt").write_text("inside\n")
    (outside / "secret.txt").write_text(MARKER + "\n")
    os.symlink("../target.txt", mod / "sub" / "in_file")
    os.symlink("../../outside/secret.txt", mod / "sub" / "esc_file")
    conf = _conf(tmp_path, "", {"mod": {"path": str(mod), "read only": "yes"}})
    dst = tmp_path / "dst"
    with _Daemon(conf) as d:
        r = _rsync("-rL", d.url + "mod/sub/", f"{dst}/")
    assert r.returncode == 23, r.stderr
    assert 'send_files failed to open "' in r.stderr and "esc_file" in r.stderr, r.stderr
    assert (dst / "in_file").read_text() == "inside\n"
    assert not (dst / "esc_file").exists()


def test_insecure_links_push_follows_a_symlinked_destination(tmp_path: Path) -> None:
    att = _need_root_and_rsync()
    mod = tmp_path / "mod"
    (mod / "realdir").mkdir(parents=True)
    _plant(mod / "evil", "realdir", att)
    src = tmp_path / "src"
    src.mkdir()
    (src / "pushed").write_text("pushed\n")
    conf = _conf(tmp_path, "", {"optout": {"path": str(mod), "read only": "no",
                                           "insecure links": "yes",
                                           "munge symlinks": "no"}})
    with _Daemon(conf) as d:
        r = _rsync("-r", f"{src}/", d.url + "optout/evil/")
    assert r.returncode == 0, r.stderr
    assert (mod / "realdir" / "pushed").read_text() == "pushed\n"
    assert (mod / "evil").is_symlink()


@pytest.mark.parametrize("target", ["../outside", "ABS", "realdir"],
                         ids=["relative-out", "absolute-out", "inside"])
def test_keep_dirlinks_push_stays_in_the_module(tmp_path: Path, target: str) -> None:
    """-K keeps a destination dir symlink as the dir it leads to, but in a module
    nothing goes through one that leads out of it (rsync's
    daemon-symlink-escape-matrix, "write"): the link stays, what is below it fails
    with ELOOP (exit 23), as with rsyncd; nothing lands outside, and --delete
    deletes nothing there."""
    att = _need_root_and_rsync()
    mod, outside = tmp_path / "mod", tmp_path / "outside"
    (mod / "realdir").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep").write_text("keep\n")
    (mod / "realdir" / "keep").write_text("keep\n")
    _plant(mod / "evil", str(outside) if target == "ABS" else target, att)
    src = tmp_path / "src"
    (src / "evil").mkdir(parents=True)
    (src / "evil" / "pwned").write_text("pushed\n")
    conf = _conf(tmp_path, "", {"mod": {"path": str(mod), "read only": "no",
                                        "munge symlinks": "no"}})
    with _Daemon(conf) as d:
        r = _rsync("-r", "--keep-dirlinks", f"{src}/", d.url + "mod/")
        if target == "realdir":
            assert r.returncode == 0, r.stderr
            assert (mod / "realdir" / "pwned").read_text() == "pushed\n"
        else:
            assert r.returncode == 23, r.stderr
            assert ('recv_generator: failed to stat "evil/pwned" (in mod): '
                    "Too many levels of symbolic links (40)") in r.stderr, r.stderr
            # --delete with the source's evil/ empty: nothing is deleted out there
            (src / "evil" / "pwned").unlink()
            (src / "realdir").mkdir()
            r = _rsync("-r", "--keep-dirlinks", "--delete", f"{src}/", d.url + "mod/")
            assert r.returncode == 0, r.stderr
    assert (mod / "evil").is_symlink()
    assert (outside / "keep").exists() and not (outside / "pwned").exists()


# --------------------------------------------------------------------------
# More rsync 3.5 daemon behaviour


def test_proxy_protocol_without_trusted_hosts_warns_at_startup(tmp_path: Path) -> None:
    if RSYNC is None:
        peers.missing("rsync is not installed")
    (tmp_path / "mod").mkdir()
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\nproxy protocol = true\nlog file = {tmp_path}/log\n"
                    f"[mod]\n  path = {tmp_path}/mod\n")
    with _Daemon(conf) as d:
        with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
            s.sendall(b"PROXY TCP4 10.9.8.7 127.0.0.1 12345 873\r\n")
            try:
                got = s.recv(1024)
            except ConnectionResetError:
                got = b""
        assert b"@RSYNCD" not in got
    log = _log(tmp_path)
    assert ('"proxy protocol = true" but "proxy protocol hosts" is unset: all connections '
            "will be rejected as untrusted proxy peers.") in log, log


@pytest.mark.parametrize("extra", [[], ["--secluded-args"]], ids=["plain", "secluded"])
def test_groupmap_wildcard_over_the_daemon(tmp_path: Path, extra: list[str]) -> None:
    """The client backslashes the '*' for a remote shell; the daemon undoes that
    (io.c read_args()), so the wildcard maps every group."""
    if RSYNC is None:
        peers.missing("rsync is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root to set another group")
    mod = tmp_path / "mod"
    mod.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("hi\n")
    os.chown(src / "f", -1, 0)
    conf = _conf(tmp_path, "", {"mod": {"path": str(mod), "read only": "no"}})
    with _Daemon(conf) as d:
        r = _rsync("-rg", *extra, "--groupmap=*:1", f"{src}/f", d.url + "mod/")
    assert r.returncode == 0, r.stderr
    assert os.stat(mod / "f").st_gid == 1


def test_name_converter_refuses_an_inline_name_with_a_newline(tmp_path: Path) -> None:
    """A sender's in-line user name carrying a newline would forge a request to the
    converter; the daemon refuses the token as soon as it reads the entry (the sender
    here never sends anything after its list, as in rsync's own test)."""
    if os.geteuid() != 0:
        pytest.skip("runs the module as root")
    mod = tmp_path / "mod"
    mod.mkdir()
    asked = tmp_path / "asked"
    conv = tmp_path / "conv"
    conv.write_text(f"#!{sys.executable}\nimport sys\nlog = open({str(asked)!r}, 'a')\n"
                    "for line in sys.stdin:\n    log.write(line); log.flush()\n"
                    "    print('123', flush=True)\n")
    conv.chmod(0o755)
    conf = _conf(tmp_path, "", {"recv": {"path": str(mod), "read only": "no",
                                         "numeric ids": "no", "name converter": str(conv)}})
    with _Daemon(conf) as d:
        s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
        s.sendall(b"@RSYNCD: 31.0\nrecv\n")
        buf = b""
        while b"@RSYNCD: OK\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, buf
            buf += chunk
        s.settimeout(None)
        s.sendall(b"".join(a + b"\0" for a in (b"--server", b"-oe.LsfxCIvu", b".", b"recv/"))
                  + b"\0")
        c = hp.EvilClient(SocketConnection(s, who="evil"), am_sender=True)
        c.handshake(daemon_protocol=31)
        enc = c.encoder(preserve_uid=True, user_names=lambda uid: b"bad\nname")
        enc.inc_recurse, enc.id_lists_follow = True, False  # the name goes in-line
        c.send(hp.flist_bytes(enc, [FileEntry(b"f", stat.S_IFREG | 0o644, 0, hp.MTIME, 1, 0)]))
        c.flush()
        deadline = time.monotonic() + 60
        while "invalid name-converter token" not in _log(tmp_path) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        c.conn.close()
    # rsync's log escaping, once: the newline as \#012, nothing escaped twice.
    assert "invalid name-converter token: bad\\#012name\n" in _log(tmp_path), _log(tmp_path)
    lines = asked.read_text().splitlines() if asked.exists() else []
    assert "name" not in lines and not any(x.startswith("usr bad") for x in lines), lines
