"""-A/--acls: POSIX ACLs copied like rsync 3.5's acls.c, compared with a stock rsync.

Each differential case builds the same source tree (access ACLs naming users and
groups, masks, default ACLs on directories, files whose ACL is just their mode) in two
work dirs, runs the same command once with rsync and once with netsync in the role
under test, changes the source's ACLs (one removed, one added, a default ACL
dropped, a mode changed) and runs it again. Exit codes, the ``-i`` lines and the
resulting ACLs (the raw ``system.posix_acl_*`` xattrs) and modes must be the same.

The ACLs name existing system users and groups (nobody, daemon, bin), so the
receiving side maps them by name to the same ids.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hostile_peer as hp
import treecompare as tc
from interop import peers
from interop.peers import SshServer
from netsync import acls
from netsync.flist import FileEntry
from netsync.flist_codec import EndOfList, FlistDecoder, FlistEncoder
from netsync.wire import WireError, encode_varint

sshd_server = peers.sshd_server  # the session fixture

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"

pytestmark = pytest.mark.skipif(shutil.which("setfacl") is None, reason="setfacl missing")


def _setfacl(*args: str | Path) -> None:
    subprocess.run(["setfacl", *map(str, args)], check=True)


def make_source(src: Path) -> None:
    (src / "d" / "sub").mkdir(parents=True)
    (src / "plain").mkdir()
    for name, body in (("named", "a\n"), ("masked", "b\n"), ("asmode", "c\n"),
                       ("later", "d\n"), ("d/inner", "e\n"), ("d/sub/deep", "f\n")):
        (src / name).write_text(body)
    os.chmod(src / "asmode", 0o640)
    _setfacl("-m", "u:nobody:rw,g:daemon:r,u:bin:r", src / "named")
    _setfacl("-m", "u:daemon:rwx,m::r", src / "masked")
    _setfacl("-m", "u:bin:rwx,g:sys:rx", src / "d")
    _setfacl("-d", "-m", "u:daemon:rx,g:bin:rwx,o::-", src / "d")
    _setfacl("-d", "-m", "u:nobody:r", src / "d" / "sub")
    _setfacl("-m", "u:nobody:rw", src / "d" / "inner")


def change_source(src: Path) -> None:
    _setfacl("-b", src / "named")           # the ACL removed on the source
    _setfacl("-m", "g:daemon:rw", src / "later")   # one added
    _setfacl("-k", src / "d")               # a default ACL removed
    os.chmod(src / "plain", 0o751)           # a mode change only
    _setfacl("-m", "m::rwx", src / "masked")  # the mask changed


def acl_state(root: Path) -> dict[str, tuple]:
    """path -> (mode, access ACL xattr, default ACL xattr) for everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            p = Path(dirpath, name) if name else Path(dirpath)
            if not name and p != root:
                continue
            st = p.lstat()
            vals = []
            for attr in (acls.ACCESS_XATTR, acls.DEFAULT_XATTR):
                try:
                    vals.append(os.getxattr(p, attr, follow_symlinks=False))
                except OSError:
                    vals.append(None)
            out[str(p.relative_to(root))] = (oct(st.st_mode), *vals)
    return out


def _items(run: tc.Run) -> list[bytes]:
    """The -i lines, sorted: rsync's generator and receiver print theirs apart, so
    their interleaving varies from run to run."""
    return sorted(ln for ln in tc.output_lines(run.stdout) if ln and not ln.startswith(
        (b"sent ", b"total size", b"created directory")))


@dataclass
class Case:
    """How to run one side: ``argv(prog_is_netsync, work)`` for the command and cwd."""

    argv: Callable[[bool, Path], list[str]]


def _differential(tmp_path: Path, case: Case, extra: list[str],
                  dst_of: Callable[[str, Path], Path] = lambda side, w: w / "dst", *,
                  make: Callable[[Path], None] = make_source,
                  change: Callable[[Path], None] | None = change_source, steps: int = 3,
                  state: Callable[[Path], dict] = acl_state,
                  check_source: bool = True) -> dict[str, Path]:
    """Both programs, ``steps`` times (the source changed after the first): the same
    exit codes, items and ``state`` (the ACLs) at ``dst_of(side, work)``."""
    works = {}
    for side in ("rsync", "netsync"):
        w = tmp_path / side
        (w / "src").mkdir(parents=True)
        make(w / "src")
        works[side] = w
    for step in range(steps):
        if step == 1 and change is not None:
            for w in works.values():
                change(w / "src")
        runs = {side: tc.run([], case.argv(side == "netsync", w) + extra, cwd=w)
                for side, w in works.items()}
        want, got = runs["rsync"], runs["netsync"]
        assert want.returncode == 0, want.describe()
        assert got.returncode == want.returncode, got.describe()
        assert b"Traceback" not in got.stderr, got.describe()
        assert _items(got) == _items(want), (want.stdout, got.stdout)
        assert state(dst_of("netsync", works["netsync"])) == \
            state(dst_of("rsync", works["rsync"])), step
    # and the destination really has the source's ACLs (and modes)
    if check_source and not any(x.startswith(("--no-p", "--chmod")) for x in extra):
        assert state(dst_of("netsync", works["netsync"])) == state(works["netsync"] / "src")
    return works


NUMERIC = [pytest.param([], id="names"), pytest.param(["--numeric-ids"], id="numeric")]


def _local(ns: bool, w: Path) -> list[str]:
    prog = tc.program_under_test() if ns else [tc.RSYNC]
    return [*prog, "-aAi", "src/", "dst/"]


@pytest.mark.parametrize("extra", [*NUMERIC, pytest.param(["--no-p"], id="no-p"),
                                   pytest.param(["--chmod=g-w,o+x"], id="chmod"),
                                   pytest.param(["-H", "--no-i-r"], id="H")])
def test_local(tmp_path: Path, extra: list[str]) -> None:
    _differential(tmp_path, Case(_local), extra)


def test_local_up_to_date_dest_fixed(tmp_path: Path) -> None:
    """ACLs changed on the destination alone are put back on files otherwise up to
    date (".f.......a." items)."""
    def argv(ns: bool, w: Path) -> list[str]:
        prog = tc.program_under_test() if ns else [tc.RSYNC]
        if not (w / "dst").exists():
            return [*prog, "-aA", "src/", "dst/"]
        _setfacl("-m", "u:bin:rwx", w / "dst" / "asmode")
        _setfacl("-b", w / "dst" / "masked")
        return [*prog, "-aAi", "src/", "dst/"]
    _differential(tmp_path, Case(argv), [])


def test_no_perms_default_acl_dest(tmp_path: Path) -> None:
    """Without -p a new file takes its directory's default ACL (default_perms_for_dir),
    the way an ACL-enabled rsync does it."""
    def argv(ns: bool, w: Path) -> list[str]:
        prog = tc.program_under_test() if ns else [tc.RSYNC]
        (w / "dst").mkdir(exist_ok=True)
        _setfacl("-d", "-m", "u::rwx,g::rwx,o::r-x", w / "dst")
        os.utime(w / "dst", ns=(10**18, 10**18))  # ("./" itemized as re-timed either way)
        return [*prog, "-rti", "src/", "dst/"]
    _differential_modes(tmp_path, Case(argv))


def _differential_modes(tmp_path: Path, case: Case) -> None:
    states = []
    for side in ("rsync", "netsync"):
        w = tmp_path / side
        (w / "src").mkdir(parents=True)
        make_source(w / "src")
        r = tc.run([], case.argv(side == "netsync", w), cwd=w)
        assert r.returncode == 0, r.describe()
        states.append((acl_state(w / "dst"), _items(r)))
    assert states[0] == states[1]


# -- over ssh ------------------------------------------------------------------

def _ssh_case(ssh: SshServer, direction: str, role: str) -> Case:
    """role "client": netsync runs the command against a stock rsync server;
    "server": a stock rsync client runs netsync as its --rsync-path."""
    def argv(ns: bool, w: Path) -> list[str]:
        if role == "client":
            prog = tc.program_under_test() if ns else [tc.RSYNC]
            path = "rsync"
        else:
            prog = [tc.RSYNC]
            path = NETSYNC_PATH if ns else "rsync"
        common = [*prog, "-aAi", "-e", ssh.rsh, f"--rsync-path={path}"]
        if direction == "push":
            return [*common, "src/", f"{ssh.login}:{w}/dst/"]
        return [*common, f"{ssh.login}:{w}/src/", "dst/"]
    return Case(argv)


@pytest.mark.parametrize("extra", NUMERIC)
@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("role", ["client", "server"])
def test_ssh(tmp_path: Path, sshd_server: SshServer, role: str, direction: str,
             extra: list[str]) -> None:
    _differential(tmp_path, _ssh_case(sshd_server, direction, role), extra)


# -- daemons -------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """A stock ``rsync --daemon`` and a ``netsync --daemon``, each with a module "m"
    on the same (per-test) work area."""
    base = tmp_path_factory.mktemp("acl-daemons")
    ports = {}
    procs = []
    try:
        for kind in ("rsync", "netsync"):
            conf = base / f"{kind}.conf"
            conf.write_text("\n".join([
                "use chroot = no", "uid = root", "gid = root",
                f"pid file = {base / kind}.pid", f"log file = {base / kind}.log",
                "[m]", f"    path = {base / 'area'}", "    read only = no",
                "[f]", f"    path = {base / 'fake' / kind}", "    read only = no",
                "    fake super = yes", ""]))
            (base / "fake" / kind).mkdir(parents=True)
            cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
            proc, port = peers.start_daemon(cmd, conf, env=tc.sync_env())
            procs.append(proc)
            ports[kind] = port
        (base / "area").mkdir()
        ports["area"] = base / "area"  # type: ignore[assignment]
        ports["fake"] = base / "fake"  # type: ignore[assignment]
        yield ports
    finally:
        for p in procs:
            peers.stop(p)


def _daemon_case(daemons: dict, direction: str, role: str, sub: str) -> Case:
    def argv(ns: bool, w: Path) -> list[str]:
        area = Path(daemons["area"]) / sub / ("n" if ns else "r")
        area.mkdir(parents=True, exist_ok=True)
        if role == "client":  # netsync against the stock daemon
            prog = tc.program_under_test() if ns else [tc.RSYNC]
            port = daemons["rsync"]
        else:  # the stock client against netsync's daemon
            prog = [tc.RSYNC]
            port = daemons["netsync" if ns else "rsync"]
        rel = f"{sub}/{'n' if ns else 'r'}"
        url = f"rsync://127.0.0.1:{port}/m/{rel}"
        if direction == "push":
            return [*prog, "-aAi", "src/", f"{url}/dst/"]
        # pull: the source lives in the module (copied there from this work dir)
        if (area / "src").exists():
            shutil.rmtree(area / "src")
        subprocess.run(["cp", "-a", f"{w}/src", f"{area}/src"], check=True)
        return [*prog, "-aAi", f"{url}/src/", "dst/"]
    return Case(argv)


@pytest.mark.parametrize("extra", NUMERIC)
@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("role", ["client", "server"])
def test_daemon(tmp_path: Path, daemons: dict, role: str, direction: str,
                extra: list[str]) -> None:
    sub = f"{role}-{direction}-{'num' if extra else 'names'}"
    case = _daemon_case(daemons, direction, role, sub)
    if direction == "pull":
        _differential(tmp_path, case, extra)
        return
    area = Path(daemons["area"]) / sub  # a push lands in the module: compare there
    _differential(tmp_path, case, extra, dst_of=lambda side, w: area / side[0] / "dst")


# -- --usermap/--groupmap/--chown on the ACLs' ids -------------------------------

def _idmap_source(src: Path) -> None:
    """Named entries for ids with no name here (4242, 4343) and for names (daemon,
    bin), access and default ACLs; owned by the nameless ids."""
    (src / "d" / "sub").mkdir(parents=True)
    for name in ("f", "d/g", "d/sub/h"):
        (src / name).write_text(name)
    _setfacl("-m", "u:4242:rwx,g:4343:r,u:daemon:rw,g:bin:rx", src / "f")
    _setfacl("-m", "u:4242:rx,g:daemon:rwx", src / "d")
    _setfacl("-d", "-m", "u:4242:r,g:4343:rw,u:bin:rwx", src / "d")
    _setfacl("-m", "g:4343:rw,u:daemon:r", src / "d" / "g")
    for p in (src / "f", src / "d", src / "d" / "g"):
        os.chown(p, 4242, 4343)


def _idmap_state(root: Path) -> dict:
    state = acl_state(root)
    for name in list(state):
        st = (root / name).lstat()
        state[name] = (*state[name], st.st_uid, st.st_gid)
    return state


MAPS = ["--usermap=4242:4444,daemon:bin", "--groupmap=4343:4545,bin:daemon"]
IDMAP_EXTRA = [
    pytest.param(MAPS, id="maps"),
    # --numeric-ids: mapped after the whole list (without it incremental recursion
    # leaves them be, recv_ida_entries())
    pytest.param(["--numeric-ids", "--no-i-r", *MAPS], id="numeric-no-i-r"),
    pytest.param(["--chown=4444:4545"], id="chown"),
    pytest.param(["--usermap=*:bin", "--groupmap=4000-4400:daemon"], id="wild-range"),
]


def _differential_idmap(tmp_path: Path, case: Case, extra: list[str],
                        dst_of: Callable[[str, Path], Path] = lambda side, w: w / "dst",
                        ) -> None:
    """Both programs, twice (the second run finds the destination done): the same
    exit codes, items, and ACLs, modes and owners in the destination."""
    works = _differential(tmp_path, case, extra, dst_of, make=_idmap_source, change=None,
                          steps=2, state=_idmap_state, check_source=False)
    # (and rsync did change the named entries' ids)
    assert _idmap_state(dst_of("rsync", works["rsync"])) != \
        _idmap_state(works["rsync"] / "src")


@pytest.mark.parametrize("extra", IDMAP_EXTRA)
def test_local_idmap(tmp_path: Path, extra: list[str]) -> None:
    _differential_idmap(tmp_path, Case(_local), extra)


@pytest.mark.parametrize("extra", IDMAP_EXTRA)
@pytest.mark.parametrize("role,direction", [("client", "pull"), ("server", "push")])
def test_ssh_idmap(tmp_path: Path, sshd_server: SshServer, role: str, direction: str,
                   extra: list[str]) -> None:
    """netsync receiving: pulling from a stock rsync, or run by a stock rsync client
    pushing to it."""
    _differential_idmap(tmp_path, _ssh_case(sshd_server, direction, role), extra)


@pytest.mark.parametrize("role,direction", [("client", "pull"), ("server", "push")])
def test_daemon_idmap(tmp_path: Path, daemons: dict, role: str, direction: str) -> None:
    sub = f"idmap-{role}-{direction}"
    case = _daemon_case(daemons, direction, role, sub)
    if direction == "pull":
        _differential_idmap(tmp_path, case, MAPS)
        return
    area = Path(daemons["area"]) / sub
    _differential_idmap(tmp_path, case, MAPS, dst_of=lambda side, w: area / side[0] / "dst")


# -- the codec, and hostile peers ------------------------------------------------

U, G = acls.NAME_IS_USER, 0


def _roundtrip(entries: list[FileEntry], inc: bool) -> list[FileEntry]:
    cf = 1 << 7 | (1 if inc else 0)  # CF_VARINT_FLIST_FLAGS (| CF_INC_RECURSE)
    enc = FlistEncoder(31, compat_flags=cf, preserve_uid=True, preserve_gid=True,
                       user_names=lambda i: b"u%d" % i, group_names=lambda i: b"g%d" % i)
    enc.acls = acls.AclEncoder(numeric_ids=False, inc_recurse=enc.inc_recurse,
                               add_uid=enc.acl_add_uid, add_gid=enc.acl_add_gid)
    parts: list[bytes] = []
    enc.encode_into(parts, entries)
    data = b"".join(parts) + enc.end()
    dec = FlistDecoder(31, compat_flags=cf, preserve_uid=True, preserve_gid=True)
    dec.acls = acls.AclDecoder()
    dec.feed(data[:7])  # a short feed first: nothing is kept from a partial entry
    assert dec.next_entry() is None
    dec.feed(data[7:])
    got = dec.entries_until_end()
    assert got is not None and isinstance(got[1], EndOfList)
    assert dec.uid_names.get(1001) == b"u1001" and dec.gid_names.get(7) == b"g7"
    return got[0]


@pytest.mark.parametrize("inc", [False, True])
def test_codec_roundtrip_shares_acls(inc: bool) -> None:
    named = (6, 4, 6, 4, ((1001, 6 | U), (7, 4 | G)))
    dflt = (7, 5, 7, 0, ((1001, 5 | U),))
    entries = []
    for i, (mode, acl) in enumerate([
            (stat.S_IFDIR | 0o755, (acls.fake_perms(0o755), dflt)),
            (stat.S_IFREG | 0o664, (named, None)),
            (stat.S_IFREG | 0o644, (acls.fake_perms(0o644), None)),
            (stat.S_IFREG | 0o664, (named, None)),
            (stat.S_IFLNK | 0o777, None)]):
        e = FileEntry(b"." if i == 0 else b"f%d" % i, mode, 0, 10**18, 0, 0,
                      link=b"x" if stat.S_ISLNK(mode) else None)
        e.acl = acl
        entries.append(e)
    got = _roundtrip(entries, inc)
    want = [acls.as_received(*e.acl, e.mode) if e.acl else None for e in entries]
    assert [e.acl for e in got] == want
    assert got[1].acl[0] is got[3].acl[0]  # one shared ACL, sent once then by index
    assert got[1].acl[0][2] == 6  # the mask, restored from the mode's group bits


def _decode_one(acl_bytes: bytes) -> FileEntry | EndOfList | None:
    enc = FlistEncoder(31, compat_flags=1 << 7)
    dec = FlistDecoder(31, compat_flags=1 << 7)
    dec.acls = acls.AclDecoder()
    dec.feed(enc.encode_entry(FileEntry(b"f", stat.S_IFREG | 0o644, 0, 10**18)) + acl_bytes
             + b"\0\0")
    return dec.next_entry()


@pytest.mark.parametrize("raw,code,msg", [
    (b"\x05", 12, "recv_acl_index: ACL_TYPE_ACCESS ACL index 5 > 0"),
    (b"\x00\x01\x08", 12, "recv_acl_access: value out of range: 8"),
    (b"\x00\x10" + encode_varint(65537), 2,
     "wire value ACL count out of range: 65537 not in [0,65536]"),
    (b"\x00\x10\x01\x05\x20", 12, "recv_acl_access: value out of range: 8"),
])
def test_codec_bounds(raw: bytes, code: int, msg: str) -> None:
    with pytest.raises(WireError) as ei:
        _decode_one(raw)
    assert ei.value.code == code and str(ei.value.args[0]) == msg


HOSTILE = {
    "index": (b"\x05", 12, b"recv_acl_index: ACL_TYPE_ACCESS ACL index 5 > 0"),
    "count": (b"\x00\x10" + encode_varint(65537), 2,
              b"wire value ACL count out of range: 65537 not in [0,65536]"),
    "value": (b"\x00\x01\x1f", 12, b"recv_acl_access: value out of range: 1f"),
    "truncated-names": (b"\x00\x10" + encode_varint(65536) + b"\x01\x1c" * 1000, 12,
                        b"connection unexpectedly closed"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_client_acl_data(tmp_path: Path, case: str) -> None:
    """``netsync --server -A`` (receiving) fed bad ACL data: rsync's message and exit
    code, no traceback, nothing written."""
    raw, code, message = HOSTILE[case]
    child, text = hp.push_to_server(
        tmp_path, "-rlA", lambda enc: enc.encode_entry(hp.entry(b"f", size=3)) + raw,
        hang_up=case == "truncated-names")
    assert child.returncode == code, text
    assert b"Traceback" not in text, text
    assert message in text, text
    assert child.maxrss_kb < hp.MAX_RSS_KB
    assert list((tmp_path / "dst").iterdir()) == []


def test_version_reports_acls() -> None:
    r = tc.run(tc.program_under_test(), ["--version"], cwd=".")
    assert b" ACLs,\n    ACL-at," in r.stdout  # (rsync's line break)
    r = tc.run(tc.program_under_test(), ["-VV"], cwd=".")
    assert b'"ACLs": true' in r.stdout and b'"ACL_at": true' in r.stdout


def test_protocol_29_refused(tmp_path: Path, sshd_server: SshServer) -> None:
    (tmp_path / "src").mkdir()
    args = ["-aA", "--protocol=29", "-e", sshd_server.rsh, "src/",
            f"{sshd_server.login}:{tmp_path}/dst/"]
    want = tc.run([tc.RSYNC], args, cwd=tmp_path)
    got = tc.run(tc.program_under_test(), args, cwd=tmp_path)
    assert want.returncode == got.returncode == 2, got.describe()
    assert b"--acls requires protocol 30 or higher (negotiated 29)." in got.stderr


@pytest.mark.parametrize("opt", ["link-dest", "compare-dest", "copy-dest"])
def test_alt_dest_acls_compared(tmp_path: Path, opt: str) -> None:
    """A --*-dest file equal but for its ACLs is not a match (unchanged_attrs()), and
    the item's "a" compares with that file (itemize()'s fnamecmp)."""
    def argv(ns: bool, w: Path) -> list[str]:
        prog = tc.program_under_test() if ns else [tc.RSYNC]
        alt = w / "alt"
        if not alt.exists():
            alt.mkdir()
            for name in ("named", "asmode"):
                shutil.copy2(w / "src" / name, alt / name)
            _setfacl("-b", alt / "named")
            # The alt dir's mtime as the source dir's: whether "./" is itemized with a
            # time change ("cd..t......", a whole-second compare) must not depend on a
            # second boundary falling between the two mkdirs on one side only.
            src_st = (w / "src").stat()
            os.utime(alt, ns=(src_st.st_atime_ns, src_st.st_mtime_ns))
        return [*prog, "-aAi", f"--{opt}={alt}", "src/", "dst/"]
    _differential_modes(tmp_path, Case(argv))
    n = tmp_path / "netsync" / "dst"
    if opt == "link-dest":
        assert os.stat(n / "asmode").st_nlink == 2 and os.stat(n / "named").st_nlink == 1


def test_codec_name_budget() -> None:
    """The named entries held, all ACLs together, are bounded (--max-alloc)."""
    enc = FlistEncoder(31, compat_flags=1 << 7)
    dec = FlistDecoder(31, compat_flags=1 << 7)
    dec.acls = acls.AclDecoder(max_names=3)
    names = b"".join(encode_varint(i) + b"\x18" for i in range(2))  # id, rw- as a group
    one = b"\x00\x10" + encode_varint(2) + names
    data = b"".join(enc.encode_entry(FileEntry(b"f%d" % i, stat.S_IFREG | 0o644, 0, 10**18))
                    + one for i in range(2))
    dec.feed(data)
    assert isinstance(dec.next_entry(), FileEntry)
    with pytest.raises(WireError) as ei:
        dec.next_entry()
    assert ei.value.code == 22 and "out of memory in recv_ida_entries" in str(ei.value.args[0])


def _sticky_source(src: Path) -> None:
    (src / "sticky" / "sub").mkdir(parents=True)
    os.chmod(src / "sticky", 0o1777)
    _setfacl("-m", "u:bin:rwx", src / "sticky")
    _setfacl("-d", "-m", "u:daemon:rx", src / "sticky")


@pytest.mark.parametrize("extra", [[], ["--no-i-r"], ["-H"]], ids=["inc", "no-i-r", "H"])
def test_new_sticky_dir(tmp_path: Path, extra: list[str]) -> None:
    """A new dir whose sticky bit goes on: an incremental rsync makes it owner-only
    first, so change_sacl_perms() writes its ACL with the group entry shut; without
    incremental recursion the group entry is kept. netsync's receiver does the same
    whichever way it runs the transfer."""
    states = []
    for side in ("rsync", "netsync"):
        w = tmp_path / side
        _sticky_source(w / "src")
        prog = tc.program_under_test() if side == "netsync" else [tc.RSYNC]
        r = tc.run([*prog, "-aAi", *extra, "src/", "dst/"], [], cwd=w)
        assert r.returncode == 0, r.describe()
        states.append((acl_state(w / "dst"), _items(r)))
    assert states[0] == states[1]


def test_new_sticky_dir_pulled(tmp_path: Path, sshd_server: SshServer) -> None:
    """The same, netsync pulling with -H (which it runs without incremental recursion)
    from a stock rsync."""
    states = []
    for side in ("rsync", "netsync"):
        w = tmp_path / side
        _sticky_source(w / "src")
        prog = tc.program_under_test() if side == "netsync" else [tc.RSYNC]
        r = tc.run([*prog, "-aAHi", "-e", sshd_server.rsh, "--rsync-path=rsync",
                    f"{sshd_server.login}:{w}/src/", "dst/"], [], cwd=w)
        assert r.returncode == 0, r.describe()
        states.append((acl_state(w / "dst"), _items(r)))
    assert states[0] == states[1]


def _xattrs(root: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = {
                n: os.getxattr(p, n, follow_symlinks=False)
                for n in sorted(os.listxattr(p, follow_symlinks=False))}
    return out


def test_fake_super_acl_xattrs(tmp_path: Path) -> None:
    """--fake-super keeps the ACLs in user.rsync.%aacl / %dacl (xattrs.c
    set_xattr_acl()), and a --fake-super sender reads them back from there."""
    results = []
    for side in ("rsync", "netsync"):
        w = tmp_path / side
        make_source(w / "src")
        prog = tc.program_under_test() if side == "netsync" else [tc.RSYNC]
        r1 = tc.run([*prog, "-aAi", "-M--fake-super", "src/", "fake/"], [], cwd=w)
        change_source(w / "src")
        r2 = tc.run([*prog, "-aAi", "-M--fake-super", "src/", "fake/"], [], cwd=w)
        r3 = tc.run([*prog, "-aAi", "--fake-super", "fake/", "dst/"], [], cwd=w)
        for r in (r1, r2, r3):
            assert r.returncode == 0, r.describe()
        results.append((_xattrs(w / "fake"), _items(r1), _items(r2), _items(r3),
                        acl_state(w / "dst")))
    assert any(n == "user.rsync.%aacl" for x in results[1][0].values() for n in x)
    assert results[0] == results[1]


def test_daemon_fake_super_module(tmp_path: Path, daemons: dict) -> None:
    """A stock client pushing -A to a "fake super = yes" module of netsync's daemon:
    the ACLs land in the same user.rsync.%aacl/%dacl xattrs as with rsync's daemon,
    and come back out of them on a pull."""
    results = []
    for kind in ("rsync", "netsync"):
        w = tmp_path / kind
        make_source(w / "src")
        url = f"rsync://127.0.0.1:{daemons[kind]}/f/t/"
        r1 = tc.run([tc.RSYNC, "-aAi", "src/", url], [], cwd=w)
        r2 = tc.run([tc.RSYNC, "-aAi", url, "back/"], [], cwd=w)
        for r in (r1, r2):
            assert r.returncode == 0, r.describe()
        results.append((_xattrs(Path(daemons["fake"]) / kind / "t"), _items(r1), _items(r2),
                        acl_state(w / "back")))
    assert results[0] == results[1]
    assert results[1][3] == acl_state(tmp_path / "netsync" / "src")
