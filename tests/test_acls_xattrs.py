"""-A and -X together (``rsync -aAX``, the usual system backup): each file-list
entry carries its ACLs, then its xattrs (flist.c send_file_name()), and the two
are applied xattrs first, then ACLs, then the mode (rsync.c set_file_attrs()).

Debian's rsync and netsync do the same transfer, locally, as client (push and
pull) and as the ssh server of Debian's rsync, twice: the second time after the
source's ACLs and xattrs changed.  Compared: exit code, the -i lines, and every
name's xattrs (the ACLs are the system.posix_acl_* ones).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import treecompare as tc

RSYNC = tc.RSYNC
_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"


def _need() -> None:
    if not Path(RSYNC).exists() or not shutil.which("setfacl"):
        pytest.skip("needs Debian's rsync and setfacl (package acl)")


def _make(src: Path) -> None:
    (src / "d" / "sub").mkdir(parents=True)
    (src / "a").write_bytes(b"a\n")
    (src / "d" / "c").write_bytes(b"c\n")
    (src / "d" / "sub" / "e").write_bytes(b"e\n")
    os.symlink("a", src / "lnk")
    subprocess.run(["setfacl", "-m", "u:nobody:rw,g:daemon:r", str(src / "a")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:daemon:rx", str(src / "d")], check=True)
    os.setxattr(src / "a", "user.short", b"v1")
    os.setxattr(src / "d" / "c", "user.long", b"x" * 60)
    os.setxattr(src / "d", "user.dir", b"dv")
    os.setxattr(src / "d" / "sub" / "e", "user.e", b"")
    # A new sticky dir with a named entry and group::rwx (sent as "same as the mode"):
    # rsync sets its ACL with the group bits masked (change_sacl_perms()), then again
    # in the receiver's set_file_attrs() of the xattr item, once the sticky bit is
    # on: group::rwx in the end (netsync left group::---).
    (src / "st").mkdir()
    os.chmod(src / "st", 0o1777)
    subprocess.run(["setfacl", "-m", "u:nobody:rwx", str(src / "st")], check=True)
    os.setxattr(src / "st", "user.st", b"s")


def _change(src: Path) -> None:
    subprocess.run(["setfacl", "-b", str(src / "a")], check=True)
    subprocess.run(["setfacl", "-m", "u:nobody:r", str(src / "d" / "c")], check=True)
    os.setxattr(src / "a", "user.short", b"v2")
    os.removexattr(src / "d" / "c", "user.long")
    os.setxattr(src / "d" / "sub" / "e", "user.long2", b"y" * 80)


def _state(root: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [".", *dirnames, *filenames] if dirpath == str(root) else dirnames + filenames:
            p = Path(dirpath) / n
            if p.is_symlink():
                continue
            out[str(p.relative_to(root))] = {
                k: os.getxattr(p, k) for k in sorted(os.listxattr(p))}
    return out


def _cmd(who: str, how: str, rsh: str, work: Path, dst: Path) -> list[str]:
    opts = ["-aAXi"]
    if how == "local":
        prog = [RSYNC] if who == "rsync" else tc.program_under_test()
        return [*prog, *opts, f"{work}/src/", f"{dst}/"]
    if how in ("push", "pull"):  # netsync as the client of Debian's rsync
        prog = [RSYNC] if who == "rsync" else tc.program_under_test()
        ends = [f"{work}/src/", f"h:{dst}/"] if how == "push" else [f"h:{work}/src/", f"{dst}/"]
        return [*prog, *opts, "-e", rsh, f"--rsync-path={RSYNC}", *ends]
    path = RSYNC if who == "rsync" else NETSYNC_PATH  # netsync as the server
    ends = [f"{work}/src/", f"h:{dst}/"] if how == "server-push" else [f"h:{work}/src/",
                                                                      f"{dst}/"]
    return [RSYNC, *opts, "-e", rsh, f"--rsync-path={path}", *ends]


@pytest.mark.parametrize("how", ["local", "push", "pull", "server-push", "server-pull"])
def test_acls_and_xattrs_like_rsync(tmp_path: Path, how: str) -> None:
    _need()
    _make(tmp_path / "src")
    rsh = tmp_path / "lsh.sh"  # a remote shell that runs the command here
    rsh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    rsh.chmod(0o755)
    for rnd in range(2):
        got = {}
        for who in ("rsync", "netsync"):
            dst = tmp_path / f"dst-{who}"
            p = subprocess.run(_cmd(who, how, str(rsh), tmp_path, dst), cwd=tmp_path,
                               capture_output=True, env=tc.sync_env(), timeout=120)
            lines = sorted(ln for ln in p.stdout.decode().splitlines()
                           if ln and not ln.startswith("created directory"))
            got[who] = (p.returncode, lines, p.stderr.decode())
        assert got["netsync"][0] == got["rsync"][0] == 0, got
        assert got["netsync"][1] == got["rsync"][1], (rnd, got)
        want = _state(tmp_path / "dst-rsync")
        assert _state(tmp_path / "dst-netsync") == want
        if rnd == 0:
            assert "system.posix_acl_access" in want["a"] and "user.long" in want["d/c"]
            assert b"\x04\x00\x07\x00" in want["st"]["system.posix_acl_access"]  # group rwx
            _change(tmp_path / "src")
        else:
            assert "system.posix_acl_access" not in want["a"]
            assert "system.posix_acl_access" in want["d/c"] and "user.long" not in want["d/c"]


@pytest.mark.parametrize("name", ["push31-ax", "pull31-ax"])
def test_recorded_traffic_decodes(name: str) -> None:
    """What Debian's rsync sent with -aAX (tools/record_rsync_traffic.py, the tree of
    with_acls_xattrs()) decodes to the ACLs and xattrs it was made with."""
    import hashlib

    import fuzz_targets as F
    from netsync.flist_codec import EndOfList, FlistDecoder

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from record_rsync_traffic import content

    opts, data = F._flist_setup(name)
    dec = FlistDecoder(**opts)  # type: ignore[arg-type]
    F.acl_xattr_hooks(dec)
    dec.feed(data)
    got = {}
    while not isinstance(item := dec.next_entry(), EndOfList | None):
        got[item.name] = item
    assert set(got) == {b".", b"data.bin", b"hello.txt", b"sub"}
    acc, dflt = got[b"hello.txt"].acl  # type: ignore[misc]
    assert dflt is None and acc[1] == 4 and acc[2] == 6  # group r--, mask rw-
    assert dict(acc[4]) == {65534: 0x80000006, 1: 4}  # user:nobody:rw-, group:daemon:r--
    assert dec.uid_names[65534] == b"nobody" and dec.gid_names[1] == b"daemon"
    assert got[b"sub"].acl[1][4] == ((1, 5),)  # type: ignore[index]  default group:daemon:r-x
    items = {i[0]: i for i in got[b"hello.txt"].xattr.items}  # type: ignore[union-attr]
    assert items[b"user.short"][2] == b"v1" and items[b"user.empty"][2] == b""
    (long_item,) = got[b"data.bin"].xattr.items  # type: ignore[union-attr]
    # over 32 bytes a value goes as its (unseeded) MD5, fetched later on request
    assert long_item[:2] == (b"user.long", 60)
    assert long_item[3] == hashlib.md5(content(60, 3)).digest()


@pytest.mark.parametrize("writer", ["rsync", "netsync"])
def test_batch_with_acls_and_xattrs(tmp_path: Path, writer: str) -> None:
    """An -aAX batch written by one program is replayed by both, to the same ACLs and
    xattrs.  The readers leave -A out: the batch's flags turn it on, as rsync's
    check_batch_flags() does ("Setting the --acls (-A) option to match the batchfile";
    netsync used to refuse the batch instead)."""
    _need()
    _make(tmp_path / "src")
    prog = {"rsync": [RSYNC], "netsync": tc.program_under_test()}
    w = subprocess.run([*prog[writer], "-aAX", f"--write-batch={tmp_path}/batch",
                        f"{tmp_path}/src/", f"{tmp_path}/written/"], capture_output=True,
                       env=tc.sync_env(), timeout=120)
    assert w.returncode == 0, w.stderr
    got = {}
    for who, cmd in prog.items():
        p = subprocess.run([*cmd, "-aXi", f"--read-batch={tmp_path}/batch",
                            f"{tmp_path}/read-{who}/"], capture_output=True,
                           env=tc.sync_env(), timeout=120)
        got[who] = (p.returncode, sorted(ln for ln in p.stdout.decode().splitlines()
                                         if not ln.startswith("created directory")),
                    p.stderr.decode())
    assert got["netsync"][0] == got["rsync"][0] == 0, got
    assert got["netsync"][1] == got["rsync"][1]
    want = _state(tmp_path / "written")
    assert _state(tmp_path / "read-rsync") == want
    assert _state(tmp_path / "read-netsync") == want
    assert "system.posix_acl_access" in want["a"] and "user.long" in want["d/c"]
