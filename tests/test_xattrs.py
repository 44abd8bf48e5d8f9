"""-X/--xattrs against Debian's rsync: local copies, push and pull with netsync as the
client (of a C rsync server over a remote shell, or of rsync's daemon) and as the server
(the C rsync client with --rsync-path, or against ``netsync --daemon``), as root and as
nobody, and -X batches -- comparing the resulting xattrs, the ``-i`` lines and the exit
code with what rsync does; and the bounds rsync 3.5.0 puts on a hostile peer's xattr
data (the file list's, and the abbreviated-value requests).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from interop import peers
from netsync import xattrs as xa
from netsync.errors import RERR_FILEIO, RERR_PROTOCOL, RERR_STREAMIO
from netsync.wire import TruncatedError, WireError, encode_varint

RSYNC = "/usr/bin/rsync"
SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC = [sys.executable, "-m", "netsync"]
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(SRC)} {shlex.quote(sys.executable)} -m netsync"
LONG = b"L" * 70  # over MAX_FULL_DATUM: travels as its checksum first


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC
    return env


def _have_user_xattrs(tmp: Path) -> bool:
    p = tmp / "probe"
    p.write_text("x")
    try:
        os.setxattr(p, "user.probe", b"1")
    except OSError:
        return False
    return True


def _xattrs(root: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in sorted(dirnames + filenames) + ["."]:
            p = Path(dirpath) / n if n != "." else Path(dirpath)
            rel = os.path.relpath(p, root)
            if p.is_symlink():
                names = os.listxattr(p, follow_symlinks=False)
                out[rel] = {k: os.getxattr(p, k, follow_symlinks=False) for k in names}
            else:
                out[rel] = {k: os.getxattr(p, k) for k in os.listxattr(p)}
    return out


def _make_src(src: Path) -> None:
    (src / "d" / "sub").mkdir(parents=True)
    (src / "a").write_text("a\n")
    (src / "b").write_text("bb\n")
    (src / "d" / "c").write_text("ccc\n")
    (src / "d" / "sub" / "e").write_text("e\n")
    (src / "same1").write_text("s\n")
    (src / "same2").write_text("s\n")
    os.symlink("a", src / "link")
    os.setxattr(src / "a", "user.short", b"short")
    os.setxattr(src / "a", "user.long", LONG)
    os.setxattr(src / "a", "user.empty", b"")
    for i in range(40):
        os.setxattr(src / "b", f"user.item{i:02d}", b"v%d" % i * (i % 7 + 1))
    os.setxattr(src / "d", "user.dir", b"a dir value")
    os.setxattr(src / "d" / "sub", "user.dirlong", LONG + b"dir")
    os.setxattr(src / "d" / "c", "user.c", b"c value")
    for n in ("same1", "same2"):  # equal lists: sent once, then by index
        os.setxattr(src / n, "user.same", LONG)
        os.setxattr(src / n, "user.s2", b"two")


def _change_src(src: Path) -> None:
    os.setxattr(src / "a", "user.short", b"changed")
    os.setxattr(src / "a", "user.long", LONG + b"more")
    os.setxattr(src / "d" / "c", "user.added", b"x" * 40)
    os.setxattr(src / "d", "user.dir", b"new dir value")
    with open(src / "same1", "a") as f:  # new data; its long xattr stays (from the basis)
        f.write("more data\n")
    for path, name in ((src / "a", "user.empty"), (src / "b", "user.item03")):
        if name in os.listxattr(path):
            os.removexattr(path, name)


def _run(cmd: list[str], cwd: Path) -> tuple[int, list[str], str]:
    p = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, timeout=120)
    lines = sorted(ln for ln in p.stdout.decode(errors="replace").splitlines()
                   if ln and not ln.startswith(("created directory", "sent ", "total ")))
    return p.returncode, lines, p.stderr.decode(errors="replace")


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    if not _have_user_xattrs(tmp_path):
        pytest.skip("no user xattrs on this filesystem")
    if not os.path.exists(RSYNC):
        pytest.skip("rsync is not installed")
    _make_src(tmp_path / "src")
    return tmp_path


def _rsh(work: Path) -> str:
    """A remote shell that runs the command here (no sshd needed)."""
    sh = work / "lsh.sh"
    sh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    sh.chmod(0o755)
    return str(sh)


def _daemon(work: Path, kind: str) -> tuple[subprocess.Popen[bytes], int]:
    """A daemon (C rsync's or netsync's) whose module "m" is ``work``."""
    conf = work / f"rsyncd-{kind}.conf"
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    conf.write_text("\n".join(["use chroot = no", *uid, f"log file = {work}/{kind}.log",
                               "[m]", f"path = {work}", "read only = no", ""]))
    cmd = [RSYNC] if kind == "rsync" else NETSYNC
    return peers.start_daemon(cmd, conf, env=_env())


def _pair(work: Path, how: str, opts: list[str]) -> None:
    """Run the C rsync way and the netsync way, twice (the second time after a change
    to the xattrs only), and compare."""
    rsh = _rsh(work)
    daemons = {}
    if how.startswith(("daemon", "ndaemon")):
        daemons = {k: _daemon(work, k) for k in ("rsync", "netsync")}
    try:
        _rounds(work, how, opts, rsh, daemons)
    finally:
        for proc, _port in daemons.values():
            peers.stop(proc)


def _rounds(work: Path, how: str, opts: list[str], rsh: str, daemons: dict) -> None:
    first = True
    base_opts = opts
    for _round in range(2):
        got = {}
        for who in ("rsync", "netsync"):
            dst = work / f"dst-{who}"
            opts = [o.replace("{who}", who) for o in base_opts]
            if how.startswith("daemon"):  # netsync as the client of C rsync's daemon
                url = f"rsync://127.0.0.1:{daemons['rsync'][1]}/m"
                prog = [RSYNC] if who == "rsync" else NETSYNC
                ends = ["src/", f"{url}/dst-{who}/"] if how == "daemon-push" else [
                    f"{url}/src/", f"{dst}/"]
                cmd = prog + [*opts, *ends]
            elif how.startswith("ndaemon"):  # the C client of netsync's daemon
                url = f"rsync://127.0.0.1:{daemons[who][1]}/m"
                ends = ["src/", f"{url}/dst-{who}/"] if how == "ndaemon-push" else [
                    f"{url}/src/", f"{dst}/"]
                cmd = [RSYNC, *opts, *ends]
            elif how == "local":
                cmd = ([RSYNC] if who == "rsync" else NETSYNC) + [*opts, "src/", f"{dst}/"]
            elif how in ("push", "pull"):  # netsync as the client
                prog = [RSYNC] if who == "rsync" else NETSYNC
                remote = ["-e", rsh, f"--rsync-path={RSYNC}"]
                ends = ["src/", f"host:{dst}/"] if how == "push" else [f"host:{work}/src/",
                                                                     f"{dst}/"]
                cmd = prog + [*opts, *remote, *ends]
            else:  # server-push / server-pull: the C client, netsync as the server
                path = RSYNC if who == "rsync" else NETSYNC_PATH
                remote = ["-e", rsh, f"--rsync-path={path}"]
                ends = ["src/", f"host:{dst}/"] if how == "server-push" else [
                    f"host:{work}/src/", f"{dst}/"]
                cmd = [RSYNC, *opts, *remote, *ends]
            got[who] = _run(cmd, work)
        want, have = got["rsync"], got["netsync"]
        assert have[0] == want[0], (how, have, want)
        assert have[1] == want[1], (how, have[1], want[1])
        assert _xattrs(work / "dst-netsync") == _xattrs(work / "dst-rsync")
        if "-n" not in opts:
            assert _xattrs(work / "dst-netsync")["d"].get("user.dir")  # (something went)
        if first:
            _change_src(work / "src")
            first = False


@pytest.mark.parametrize("how", ["local", "push", "pull", "server-push", "server-pull",
                                 "daemon-push", "daemon-pull", "ndaemon-push", "ndaemon-pull"])
def test_xattrs_like_rsync(work: Path, how: str) -> None:
    _pair(work, how, ["-aiX"])


@pytest.mark.parametrize("extra", [["--inplace"], ["--partial-dir=.p"], ["--link-dest=ALT"],
                                   ["--copy-dest=ALT"], ["-H"], ["-c"], ["--delete", "-n"],
                                   ["--fuzzy", "--no-whole-file"]])
@pytest.mark.parametrize("how", ["local", "pull", "server-push"])
def test_xattrs_with_options(work: Path, how: str, extra: list[str]) -> None:
    """Alt dirs (with other xattrs), in-place and partial updates, -H, -c, a dry run."""
    for who in ("rsync", "netsync"):  # (each its own: a --link-dest run links into it)
        alt = work / f"alt-{who}"
        shutil.copytree(work / "src", alt, symlinks=True)
        os.setxattr(alt / "a", "user.short", b"alt value")
        os.removexattr(alt / "b", "user.item05")
    os.link(work / "src" / "b", work / "src" / "b-link")
    _pair(work, how, ["-aiX", *(x.replace("ALT", f"{work}/alt-{{who}}") for x in extra)])


@pytest.mark.parametrize("how", ["pull", "push", "server-pull"])
def test_xattrs_need_protocol_30(work: Path, how: str) -> None:
    """compat.c: -X from protocol 30 on; both ends say so, the run ends with 2."""
    rsh = _rsh(work)
    got = {}
    for who in ("rsync", "netsync"):
        if how == "server-pull":
            path = RSYNC if who == "rsync" else NETSYNC_PATH
            cmd = [RSYNC, "-aX", "--protocol=29", "-e", rsh, f"--rsync-path={path}",
                   f"host:{work}/src/", f"{work}/p29-{who}/"]
        else:
            prog = [RSYNC] if who == "rsync" else NETSYNC
            ends = ["src/", f"host:{work}/p29-{who}/"] if how == "push" else [
                f"host:{work}/src/", f"{work}/p29-{who}/"]
            cmd = [*prog, "-aX", "--protocol=29", "-e", rsh, f"--rsync-path={RSYNC}", *ends]
        got[who] = _run(cmd, work)
    assert got["netsync"][0] == got["rsync"][0] == RERR_PROTOCOL
    assert "--xattrs requires protocol 30 or higher (negotiated 29)." in got["netsync"][2]


@pytest.mark.parametrize("how", ["local", "pull", "server-push"])
def test_xattrs_protocol_30(work: Path, how: str) -> None:
    _pair(work, how, ["-aiX", "--protocol=30"])


@pytest.mark.parametrize("how", ["local", "push"])
def test_xattrs_xx_and_fake_super(work: Path, how: str) -> None:
    os.setxattr(work / "src" / "a", "user.rsync.%stat", b"100644 0,0 1:1")
    os.setxattr(work / "src" / "d", "user.rsync.%stat", b"40755 0,0 1:1")
    os.setxattr(work / "src" / "b", "user.rsync.%other", b"x" * 50)
    _pair(work, how, ["-aiXX"])
    for d in ("dst-rsync", "dst-netsync"):
        shutil.rmtree(work / d)
    _pair(work, how, ["-aiX", "--fake-super"])


def test_xattr_batches(work: Path) -> None:
    """An -X --write-batch: netsync's read by both, rsync's read by netsync."""
    for who, prog in (("rsync", [RSYNC]), ("netsync", NETSYNC)):
        code, _l, err = _run([*prog, "-aX", f"--only-write-batch={work}/b-{who}", "src/",
                              f"{work}/unused-{who}/"], work)
        assert code == 0, err
    for batch in ("rsync", "netsync"):
        for who, prog in (("rsync", [RSYNC]), ("netsync", NETSYNC)):
            dst = work / f"rb-{batch}-{who}"
            dst.mkdir()
            code, _l, err = _run([*prog, "-a", f"--read-batch={work}/b-{batch}", f"{dst}/"],
                                 work)
            assert code == 0, (batch, who, err)
            assert _xattrs(dst) == _xattrs(work / "src")


def test_xattrs_hardlinks_local(work: Path) -> None:
    os.link(work / "src" / "a", work / "src" / "a-link")
    _pair(work, "local", ["-aiXH"])


@pytest.mark.parametrize("how", ["local", "pull", "push", "server-pull"])
def test_xattr_filter(work: Path, how: str) -> None:
    _pair(work, how, ["-aiX", "--filter=-x user.item1*", "--filter=-x user.short"])


@pytest.fixture()
def open_work(work: Path) -> Iterator[Path]:
    """``work``'s source in a dir every user can reach (pytest's is root's alone)."""
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="xattrs-nobody-", dir="/tmp"))
    os.chmod(top, 0o755)
    shutil.copytree(work / "src", top / "src", symlinks=True)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("how", ["push", "pull"])
def test_xattrs_daemon_as_nobody(open_work: Path, how: str) -> None:
    """A daemon module run as nobody: a non-root receiver keeps only user.*, a non-root
    sender sends what it can read (netsync's daemon and rsync's, the C client)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    import pwd

    work = open_work
    nobody = pwd.getpwnam("nobody")
    os.setxattr(work / "src" / "a", "trusted.secret", b"root only")
    os.setxattr(work / "src" / "d", "trusted.dirsecret", b"T" * 50)
    mods = {}
    for who in ("rsync", "netsync"):
        mod = work / f"mod-{who}"
        mod.mkdir()
        if how == "pull":
            shutil.copytree(work / "src", mod / "src", symlinks=True)
        for dirpath, dirnames, filenames in os.walk(mod):
            for n in [*dirnames, *filenames, "."]:
                os.chown(Path(dirpath) / n, nobody.pw_uid, nobody.pw_gid,
                         follow_symlinks=False)
        conf = work / f"nobody-{who}.conf"
        conf.write_text("\n".join(["use chroot = no", f"uid = {nobody.pw_uid}",
                                   f"gid = {nobody.pw_gid}", f"log file = {work}/{who}.log",
                                   "[m]", f"path = {mod}", "read only = no", ""]))
        mods[who] = peers.start_daemon([RSYNC] if who == "rsync" else NETSYNC, conf,
                                       env=_env())
    try:
        got = {}
        for who, (_proc, port) in mods.items():
            url = f"rsync://127.0.0.1:{port}/m"
            ends = ["src/", f"{url}/dst/"] if how == "push" else [f"{url}/src/",
                                                                 f"{work}/dst-{who}/"]
            got[who] = _run([RSYNC, "-aiX", *ends], work)
        assert got["netsync"][:2] == got["rsync"][:2], got
        tops = {w: (work / f"mod-{w}" / "dst") if how == "push" else work / f"dst-{w}"
                for w in mods}
        assert _xattrs(tops["netsync"]) == _xattrs(tops["rsync"])
        got_a = _xattrs(tops["netsync"])["a"]
        assert "user.long" in got_a and "trusted.secret" not in got_a
    finally:
        for proc, _port in mods.values():
            peers.stop(proc)


def _nobody_python() -> str | None:
    """An interpreter nobody may run netsync with (ours may live under /root)."""
    for py in (sys.executable, "/usr/bin/python3"):
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            py, "-c", "import sys; assert sys.version_info >= (3, 11); "
                            "import netsync.xattrs"], env=_env(), capture_output=True)
        if r.returncode == 0:
            return py
    return None


def test_xattrs_local_as_nobody(open_work: Path) -> None:
    """A plain user: only user.* kept, a read-only file's xattrs changed all the same
    (u+w added for the change), as rsync run by the same user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to become nobody) and setpriv")
    py = _nobody_python()
    if py is None:
        pytest.skip("no interpreter nobody can run netsync with")
    work = open_work
    os.setxattr(work / "src" / "a", "trusted.secret", b"root only")
    os.chmod(work / "src" / "a", 0o444)
    os.chmod(work, 0o777)
    for dirpath, dirnames, filenames in os.walk(work):
        for n in [*dirnames, *filenames, "."]:
            os.chown(Path(dirpath) / n, 65534, 65534, follow_symlinks=False)
    for rnd in range(2):
        outs = {}
        for who, prog in (("rsync", [RSYNC]), ("netsync", [py, "-m", "netsync"])):
            cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *prog,
                   "-aiX", "src/", f"dst-{who}/"]
            outs[who] = _run(cmd, work)
        assert outs["netsync"][:2] == outs["rsync"][:2], outs
        assert _xattrs(work / "dst-netsync") == _xattrs(work / "dst-rsync")
        assert "trusted.secret" not in _xattrs(work / "dst-netsync")["a"]
        if rnd == 0:
            _change_src(work / "src")


# -- a hostile file list: receive_xattr()'s bounds -------------------------------

def _parse(data: bytes, table: xa.XaTable | None = None):
    ctx = xa.XaCtx(1, 1)
    return (table or xa.XaTable()).parse(data, 0, ctx, lambda: "f")


def test_hostile_index_out_of_range() -> None:
    with pytest.raises(WireError) as ei:
        _parse(encode_varint(5))
    assert ei.value.code == RERR_STREAMIO
    assert "receive_xattr: xa index 5 out of range for f" in str(ei.value)


def test_hostile_bounds() -> None:
    with pytest.raises(WireError) as ei:
        _parse(b"\0" + encode_varint(xa.MAX_WIRE_XATTR_COUNT + 1))
    assert ei.value.code == RERR_PROTOCOL and "xattr count" in str(ei.value)
    with pytest.raises(WireError) as ei:
        _parse(b"\0\1" + encode_varint(5000) + encode_varint(1))
    assert ei.value.code == RERR_PROTOCOL and "name_len" in str(ei.value)
    with pytest.raises(WireError) as ei:
        _parse(b"\0\1\6" + encode_varint(xa.MAX_XATTR_VALUE_BYTES + 1) + b"user.x\0")
    assert ei.value.code == RERR_PROTOCOL and "per-value limit" in str(ei.value)
    with pytest.raises(WireError) as ei:
        _parse(b"\0\1\6\1user.xx1")  # no trailing NUL
    assert ei.value.code == RERR_FILEIO
    with pytest.raises(TruncatedError):
        _parse(b"\0\1\7\1user.x")  # ends early: more is awaited, nothing stored


def test_request_bounds() -> None:
    table = xa.XaTable()
    items = [(b"user.long", 40, None, xa.xsum(b"x" * 40), 1)]
    xl = table.store(items)
    reads = iter([5, 0])
    with pytest.raises(WireError) as ei:
        xa.sender_read_request(xl, lambda: next(reads), lambda: "f")
    assert ei.value.code == RERR_PROTOCOL and "could not find xattr #5 for f" in str(ei.value)
    reads = iter([1, 0])
    assert xa.sender_read_request(xl, lambda: next(reads), lambda: "f") == [0]


# -- a hostile client against netsync --server: the bounds end the run cleanly ------

def _hostile_push(tmp_path: Path, xattr_field: bytes) -> tuple[object, bytes]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import hostile_peer as hp

    return hp.push_to_server(
        tmp_path, "-rlX",
        lambda enc: enc.encode_entry(hp.entry(b"f"), 0) + xattr_field + enc.end())


@pytest.mark.parametrize(("field", "code", "message"), [
    (encode_varint(5), RERR_STREAMIO, b"receive_xattr: xa index 5 out of range for f"),
    (b"\0" + encode_varint(70000), RERR_PROTOCOL, b"wire value xattr count out of range"),
    (b"\0\1" + encode_varint(9000) + b"\0", RERR_PROTOCOL, b"xattr name_len out of range"),
    (b"\0\1\7" + encode_varint(xa.MAX_XATTR_VALUE_BYTES + 1) + b"user.x\0",
     RERR_PROTOCOL, b"xattr datum_len exceeds per-value limit"),
    (b"\0\1\6\1user.xx1", RERR_FILEIO, b"Invalid xattr name received (missing trailing \\0)."),
])
def test_hostile_flist_against_server(tmp_path: Path, field: bytes, code: int,
                                      message: bytes) -> None:
    child, text = _hostile_push(tmp_path, field)
    assert child.returncode == code, text  # type: ignore[attr-defined]
    assert b"Traceback" not in text and b"internal error" not in text, text
    assert message in text, text
    assert not (tmp_path / "dst" / "f").exists()


@pytest.mark.parametrize(("request_bytes", "message"), [
    (encode_varint(9) + b"\0", b"could not find xattr #9 for f"),
    (encode_varint(2) + b"\0", b"internal abbrev error on f"),  # user.short: never asked
    (encode_varint(0x7FFFFFF0) + encode_varint(0x7FFFFFF0) + b"\0",
     b"could not find xattr #2147483632 for f"),
])
def test_hostile_xattr_request_against_server_sender(tmp_path: Path, request_bytes: bytes,
                                                      message: bytes) -> None:
    """sender.c recv_xattr_request(): a request for an item the list does not hold, or
    one not abbreviated, ends the run (exit 2), nothing read out of bounds."""
    if not _have_user_xattrs(tmp_path):
        pytest.skip("no user xattrs on this filesystem")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import hostile_peer as hp
    from netsync.flist_codec import FlistDecoder
    from netsync.log import ITEM_REPORT_XATTR, ITEM_TRANSFER

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("data\n")
    os.setxattr(tmp_path / "src" / "f", "user.short", b"s")
    os.setxattr(tmp_path / "src" / "f", "user.long", LONG)
    child = hp.start_server(tmp_path, "--sender", "-rX", "-e.LsfxCIvu", "--timeout=20",
                            ".", "src/")
    c = hp.EvilClient.on_child(child, am_sender=False)
    try:
        c.handshake()
        io = c.io
        assert io is not None and c.neg is not None
        c.send(hp.empty_filter_list())
        c.flush()
        dec = FlistDecoder(c.neg.protocol, compat_flags=c.neg.compat_flags)  # type: ignore[attr-defined]
        table = xa.XaTable()
        ctx = xa.XaCtx(1, 1)
        dec.xattr_parse = lambda buf, pos, name: table.parse(buf, pos, ctx, lambda: "?")
        dec.xattr_commit = table.commit
        names = hp.read_flist(io, dec)
        io.write_ndx(names.index(b"f"))
        io.write_shortint(ITEM_TRANSFER | ITEM_REPORT_XATTR)
        c.send(request_bytes)
        c.flush()
    except Exception:  # noqa: BLE001 - the server hanging up on the lie is the point
        pass
    text = c.drain() if c.io is not None else b""
    hp.finish(child, 60)
    text += child.stderr
    assert child.returncode == RERR_PROTOCOL, text
    assert b"Traceback" not in text and b"internal error in" not in text, text
    assert message in text, text
