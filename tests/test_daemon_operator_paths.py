"""Operator paths and in-module symlinks on ``netsync --daemon``'s receiving side.

A stock rsync client pushes to a real ``netsync --daemon`` on loopback, as rsync
3.5.0's daemon is pushed to:

- the module is a jail for the client's --link-dest/--partial-dir/--backup-dir:
  relative ones climb no higher than the module's top, an absolute one means the
  module's top, and a symlink that leads out of the module is refused;
- the module's ``exclude`` is name-based: a --backup-dir/--temp-dir/--*-dest or an
  absolute --partial-dir it excludes rejects the options, but a symlink in the
  module whose own name is not excluded is followed (the destination, a
  --partial-dir), as stock rsync does;
- a sender that echoes a basis the generator did not name gets no basis.

Each expectation is rsync 3.5.0's daemon's too: with NETSYNC_TEST_CMD=/usr/bin/rsync
(3.5.0) these tests pass against it.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hostile_peer as hp
import treecompare as tc
from interop import peers
from netsync.log import ITEM_BASIS_TYPE_FOLLOWS, ITEM_XNAME_FOLLOWS
from netsync.transport import SocketConnection
from netsync.wire import encode_int32, encode_shortint, encode_vstring

FNAMECMP_FUZZY = 0x83


@dataclass
class Daemon:
    port: int
    root: Path
    proc: subprocess.Popen[bytes]

    def url(self, path: str = "") -> str:
        return f"rsync://127.0.0.1:{self.port}/{path}"

    @property
    def log(self) -> str:
        p = self.root / "log"
        return p.read_text(errors="replace") if p.exists() else ""


MODULES = """
[mod]
path = {root}/mod
read only = no
exclude = /secret/ /public/pdir/
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """netsync --daemon serving {root}/mod; {root}/outside is next to it."""
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    root = tmp_path / "d"
    for d in ("mod/public", "mod/secret", "outside", "src"):
        (root / d).mkdir(parents=True)
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    (root / "rsyncd.conf").write_text("\n".join([
        "use chroot = no", *uid, f"log file = {root / 'log'}", f"lock file = {root / 'lock'}",
        MODULES.format(root=root), ""]))
    proc, port = peers.start_daemon(tc.program_under_test(), root / "rsyncd.conf",
                                    env=tc.sync_env())
    try:
        yield Daemon(port, root, proc)
    finally:
        peers.stop(proc)


def push(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tc.RSYNC, *args], capture_output=True, text=True, timeout=60,
                          env=tc.sync_env(), stdin=subprocess.DEVNULL)


def _old(path: Path, text: str) -> None:
    """A file older than anything pushed, so the quick check never skips it."""
    path.write_text(text)
    os.utime(path, (1_500_000_000, 1_500_000_000))


# ---------------------------------------------------------------------------
# --link-dest: relative to the destination, never above the module's top


def test_link_dest_cannot_climb_out_of_the_module(daemon: Daemon) -> None:
    """main.c: ``../outside`` from the module's top is sanitized to ``outside`` in
    the module (missing: rsync's warning), not the real dir next to the module,
    whose identical file would otherwise be hard-linked."""
    src, mod, outside = daemon.root / "src", daemon.root / "mod", daemon.root / "outside"
    for d in (src, outside):
        (d / "probe").write_text("same content\n")
        os.utime(d / "probe", (1_600_000_000, 1_600_000_000))
    r = push("-rtv", "--link-dest=../outside", f"{src}/", daemon.url("mod/"))
    assert r.returncode == 0, r.stderr
    assert "--link-dest arg does not exist: outside\n" in r.stderr
    assert (mod / "probe").read_text() == "same content\n"
    assert (mod / "probe").stat().st_ino != (outside / "probe").stat().st_ino


def test_link_dest_excluded_by_the_module_rejects_the_options(daemon: Daemon) -> None:
    src, mod = daemon.root / "src", daemon.root / "mod"
    (src / "f").write_text("x\n")
    r = push("-r", "--link-dest=/secret", f"{src}/", daemon.url("mod/"))
    assert r.returncode == 1, r.stderr
    assert "Your options have been rejected by the server.\n" in r.stderr
    assert not (mod / "f").exists()


# ---------------------------------------------------------------------------
# --backup-dir / --temp-dir / --partial-dir that the module excludes


@pytest.mark.parametrize("option", ["--backup-dir", "--temp-dir"])
def test_excluded_operator_dir_rejects_the_options(daemon: Daemon, option: str) -> None:
    """options.c: the module's exclude judges the dir by its name, ".." collapsed:
    ``/public/../secret`` is ``secret``, which it excludes."""
    src, mod = daemon.root / "src", daemon.root / "mod"
    (src / "f0").write_text("NEW-PUSHED-CONTENT\n")
    _old(mod / "f0", "OLD\n")
    _old(mod / "secret" / "f0", "PROTECTED\n")
    r = push("-a", "--backup", f"{option}=/public/../secret/", f"{src}/", daemon.url("mod/"))
    assert r.returncode == 4, r.stderr
    assert "Your options have been rejected by the server.\n" in r.stderr
    assert (mod / "secret" / "f0").read_text() == "PROTECTED\n"
    assert (mod / "f0").read_text() == "OLD\n"


def test_excluded_partial_dir_rejects_the_options(daemon: Daemon) -> None:
    """main.c do_server_recv(): an absolute --partial-dir the module excludes ends
    the transfer before its partial file is used (and then deleted)."""
    src, mod = daemon.root / "src", daemon.root / "mod"
    (src / "f0").write_text("NEW-PUSHED-CONTENT\n")
    _old(mod / "secret" / "f0", "PROTECTED\n")
    r = push("-a", "--partial-dir=/public/../secret/", f"{src}/", daemon.url("mod/"))
    assert r.returncode == 1, r.stderr
    assert "Your options have been rejected by the server.\n" in r.stderr
    assert (mod / "secret" / "f0").read_text() == "PROTECTED\n"
    assert not (mod / "f0").exists()


# ---------------------------------------------------------------------------
# --partial-dir through a symlink in the module


def test_partial_dir_symlink_inside_the_module_is_followed(daemon: Daemon) -> None:
    """The exclude is name-based ("blink/pdir" is not excluded): a --partial-dir
    through the module's own symlink is made where it leads, as stock rsync does."""
    src, mod = daemon.root / "src", daemon.root / "mod"
    os.symlink("public", mod / "blink")
    (src / "f0").write_text("NEW\n")
    r = push("-a", "--delay-updates", "--partial-dir=/blink/pdir", f"{src}/",
             daemon.url("mod/"))
    assert r.returncode == 0, r.stderr
    assert (mod / "public" / "pdir").is_dir()
    assert (mod / "f0").read_text() == "NEW\n"
    assert (mod / "blink").is_symlink()


def test_partial_dir_symlink_out_of_the_module_is_refused(daemon: Daemon) -> None:
    """receiver.c: the partial-dir basis lies out of the module (through a symlink
    owned by root or us): the daemon refuses the transfer, neither the file in the
    module nor the one outside changes."""
    src, mod, outside = daemon.root / "src", daemon.root / "mod", daemon.root / "outside"
    os.symlink(outside, mod / "blink")
    _old(outside / "f0", "PROTECTED-OUTSIDE-MODULE\n")
    _old(mod / "f0", "OLD-DESTINATION-FILE-CONTENT\n")
    (src / "f0").write_text("NEW\n")
    r = push("-a", "--delay-updates", "--partial-dir=/blink", f"{src}/", daemon.url("mod/"))
    assert r.returncode == 2, r.stderr
    assert "refusing unconfined partial basis for f0\n" in r.stderr
    assert (mod / "f0").read_text() == "OLD-DESTINATION-FILE-CONTENT\n"
    assert (outside / "f0").read_text() == "PROTECTED-OUTSIDE-MODULE\n"
    assert (mod / "blink").is_symlink()


# ---------------------------------------------------------------------------
# the destination through a symlink in the module (util1.c change_dir)


def test_push_through_an_in_module_symlink_follows_it(daemon: Daemon) -> None:
    """rsync chdir()s into ``blink/`` (an in-module symlink to the excluded
    ``secret/``): the exclude is name-based, ``blink`` is not excluded, so the
    file lands in secret/ and the symlink stays."""
    src, mod = daemon.root / "src", daemon.root / "mod"
    os.symlink("secret/", mod / "blink")
    _old(mod / "secret" / "f0", "OLD-EXCLUDED-CONTENT\n")
    (src / "f0").write_text("NEW\n")
    r = push("-a", f"{src}/", daemon.url("mod/blink/"))
    assert r.returncode == 0, r.stderr
    assert (mod / "secret" / "f0").read_text() == "NEW\n"
    assert (mod / "blink").is_symlink()


def test_keep_dirlinks_push_through_a_symlinked_destination(daemon: Daemon) -> None:
    """The names below the destination are judged as the client named them
    (``blink2/pdir/x``), not by where the symlink leads (``public/pdir``)."""
    src, mod = daemon.root / "src", daemon.root / "mod"
    os.symlink("public/", mod / "blink2")
    (mod / "public" / "pdir").mkdir()
    _old(mod / "public" / "pdir" / "x", "PROTECTED-IN-EXCLUDED-SUBTREE\n")
    (src / "pdir").mkdir()
    (src / "pdir" / "x").write_text("NEW\n")
    r = push("-a", "--keep-dirlinks", f"{src}/", daemon.url("mod/blink2/"))
    assert r.returncode == 0, r.stderr
    assert (mod / "public" / "pdir" / "x").read_text() == "NEW\n"


@pytest.mark.parametrize("target", ["../outside", "ABS"])
def test_push_through_a_symlink_out_of_the_module_is_refused(daemon: Daemon,
                                                             target: str) -> None:
    src, mod, outside = daemon.root / "src", daemon.root / "mod", daemon.root / "outside"
    os.symlink(str(outside) if target == "ABS" else target, mod / "evil")
    (src / "pwned").write_text("WROTE-THROUGH-LINK\n")
    r = push("-r", f"{src}/", daemon.url("mod/evil/"))
    assert r.returncode == 3, r.stderr
    assert 'change_dir#1 "evil/" (in mod) failed: Too many levels of symbolic links (40)' \
        in r.stderr
    assert list(outside.iterdir()) == []
    assert (mod / "evil").is_symlink()


# ---------------------------------------------------------------------------
# a sender that names its own basis


_line = peers.recv_line


def test_forged_basis_echo_is_never_opened(daemon: Daemon) -> None:
    """The sender echoes each request with the generator's basis type; one that
    names another (an alt-dest basis, through a symlink that leads out of the
    module) gets no basis at all: its block match ends the transfer before the
    file is checked, and nothing of the outside file reaches the module."""
    mod, outside = daemon.root / "mod", daemon.root / "outside"
    os.symlink("../outside", mod / "linkparent")
    block = 700
    (outside / "f").write_bytes(b"S" * block + b"Y")
    (outside / "dest").mkdir()
    (outside / "dest" / "f").write_bytes(b"S" * block + b"Y")
    (mod / "dest").mkdir()
    (mod / "dest" / "f").write_bytes(b"A" * block)
    s = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
    _line(s)
    s.sendall(b"@RSYNCD: 31.0\nmod\n")
    assert _line(s) == b"@RSYNCD: OK\n"
    s.settimeout(None)
    args = [b"--server", b"-le.LsfxCIvu", b"--no-whole-file", b"--compare-dest=../linkparent",
            b".", b"dest/"]
    s.sendall(b"".join(a + b"\0" for a in args) + b"\0")
    c = hp.EvilClient(SocketConnection(s, who="evil"), am_sender=True)
    io = c.handshake(daemon_protocol=31)
    c.send(hp.flist_bytes(c.encoder(), [hp.entry(b"f", size=block + 1)]))
    c.flush()
    ndx = io.read_ndx()
    assert ndx >= 0
    io.read_shortint()
    count, blength, s2length, remainder = (io.read_int() for _ in range(4))
    assert count == 1
    for _ in range(count):
        io.read_int()
        io.read(s2length)
    io.write_ndx(ndx)
    c.send(encode_shortint(0x8000 | ITEM_BASIS_TYPE_FOLLOWS | ITEM_XNAME_FOLLOWS)
           + bytes((FNAMECMP_FUZZY + 1,)) + encode_vstring(b"f")
           + b"".join(encode_int32(v) for v in (count, blength, s2length, remainder))
           + encode_int32(-1)  # block 0 of the basis
           + encode_int32(1) + b"X" + encode_int32(0) + b"\0" * 16)
    c.flush()
    text = c.drain()
    c.conn.close()
    assert b"got a block match with no basis file for " in text, text
    assert b"(code 2)" in text
    deadline = time.monotonic() + 30
    while "(code 2)" not in daemon.log and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "got a block match with no basis file" in daemon.log, daemon.log
    assert "failed verification" not in daemon.log
    assert (mod / "dest" / "f").read_bytes() == b"A" * block
    assert stat.S_ISLNK((mod / "linkparent").lstat().st_mode)
