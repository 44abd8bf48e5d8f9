"""--iconv: file names in UTF-8 on the wire, each side's own charset on disk.

Real peers: Debian's rsync over a real sshd (both directions, netsync as the client and
as the server), rsync's and netsync's daemons with a module ``charset``, and local
copies, each against the same run by rsync alone.  The trees' names are KOI8-R, whose
byte order differs from UTF-8's: the two ends sort their lists differently, so the
file indexes must follow the order the sender sent (flist.c need_unsorted_flist).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers
from interop.peers import SshServer
from netsync import charset as C
from netsync.errors import RERR_UNSUPPORTED, RsyncError
from netsync.options import parse_args, server_options

sshd_server = peers.sshd_server  # the session fixture

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_PATH = f"env PYTHONPATH={_SRC} {tc.program_under_test()[0]} -m netsync"
_LETTERS = "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЮЯ"


@pytest.fixture(autouse=True)
def _need_rsync() -> None:
    if not Path(tc.RSYNC).exists():
        pytest.fail("Debian's rsync is needed (apt-get install rsync)")


# ----------------------------------------------------------------------- the codec

def test_names_convert_both_ways() -> None:
    ic = C.Iconv("koi8-r")
    assert ic.to_wire("дом/ёж".encode("koi8-r")) == "дом/ёж".encode()
    assert ic.from_wire("дом/ёж".encode()) == "дом/ёж".encode("koi8-r")
    assert C.Iconv("UTF-8").identity and C.Iconv("utf8").to_wire(b"caf\xc3\xa9") == b"caf\xc3\xa9"


def test_a_name_that_does_not_convert_says_why() -> None:
    ic = C.Iconv("latin1")
    assert ic.from_wire("€uro".encode()) is None
    assert ic.error == "Invalid or incomplete multibyte or wide character"  # EILSEQ
    u = C.Iconv("utf8")
    assert u.to_wire(b"bad\xffname") is None and u.error == C.EILSEQ_TEXT
    assert u.to_wire(b"cut\xc3") is None and u.error == "Invalid argument"  # EINVAL


def test_a_converted_name_cannot_gain_a_slash_or_dot_dot() -> None:
    """UTF-7 spells some characters with a '/': a sender's name must not become a
    path of more components (or a "..") on the way in."""
    ic = C.Iconv("utf-7")
    assert ic.from_wire(b"a/b") == b"a/b"
    slashed = next(ch for ch in map(chr, range(0x80, 0x3000)) if b"/" in ch.encode("utf-7"))
    assert ic.from_wire(slashed.encode()) is None
    assert ic.from_wire(b"x/" + slashed.encode()) is None


def test_unknown_charset_is_code_4() -> None:
    with pytest.raises(RsyncError) as ei:
        C.Iconv("bogus")
    assert ei.value.code == RERR_UNSUPPORTED
    assert ei.value.message == 'iconv_open("UTF-8", "bogus") failed'


def test_a_peers_text_is_shown_in_our_charset() -> None:
    """rwrite() with ic_recv: what does not convert is one \\#ooo per byte."""
    assert C.Iconv("latin1").text_from_wire("café €\n".encode()) == \
        b"caf\xe9 \\#342\\#202\\#254\\#012"
    assert C.Iconv("utf8").text_from_wire(b"x\\#123") == b"x\\#134#123"


# ----------------------------------------------------------------------- options

def test_the_server_gets_its_part_of_the_spec() -> None:
    head, _ = server_options(parse_args(["-a", "--iconv=koi8-r,utf8", "a", "h:b"]), True)
    assert head[-1] == "--iconv=utf8"
    head, _ = server_options(parse_args(["-a", "--iconv=latin1", "a", "h:b"]), True)
    assert head[-1] == "--iconv=latin1"
    head, _ = server_options(parse_args(["-a", "--iconv=-", "a", "h:b"]), True)
    assert not any(w.startswith("--iconv") for w in head)


def test_rsync_iconv_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSYNC_ICONV", "latin1,utf8")
    assert parse_args(["a", "b"]).iconv == "latin1,utf8"
    assert parse_args(["--no-iconv", "a", "b"]).iconv is None
    assert parse_args(["--iconv=koi8-r", "a", "b"]).iconv == "koi8-r"
    assert parse_args(["--server", "--iconv=x", ".", "b"]).iconv == "x"


def test_version_lists_iconv() -> None:
    out = subprocess.run([*tc.program_under_test(), "--version"], capture_output=True,
                         env=tc.sync_env(), check=True).stdout
    assert b" iconv," in out and b"no iconv" not in out


# ----------------------------------------------------------------------- transfers

def _koi8_tree(root: Path) -> None:
    """A tree with KOI8-R names: dirs, files, symlinks, hard links."""
    r = random.Random(7)
    base = os.fsencode(root)

    def name() -> bytes:
        return "".join(r.choice(_LETTERS) for _ in range(r.randint(1, 5))).encode("koi8-r")

    os.makedirs(base)
    dirs = [base]
    for _ in range(8):
        d = os.path.join(r.choice(dirs), name())
        os.makedirs(d, exist_ok=True)
        dirs.append(d)
    files = []
    for i in range(60):
        f = os.path.join(r.choice(dirs), name() + b"%d.t" % i)
        with open(f, "wb") as fh:
            fh.write(r.randbytes(r.randint(0, 9000)))
        os.utime(f, ns=(1_600_000_000 * 10**9, (1_600_000_000 + i) * 10**9))
        files.append(f)
    for i in range(4):
        t = r.choice(files)
        os.symlink(os.path.basename(t), os.path.join(os.path.dirname(t), name() + b"%d.l" % i))
        os.link(t, os.path.join(os.path.dirname(t), name() + b"%d.h" % i))
    # Old times on the dirs and symlinks too: rsync (and netsync) leave alone a time in
    # the current second on what they create, which a fresh tree would trip on.
    for d, subs, names in os.walk(base, topdown=False):
        for n in (*subs, *(n for n in names if n.endswith(b".l"))):
            os.utime(os.path.join(d, n), ns=(10**18, 1_500_000_000 * 10**9),
                     follow_symlinks=False)
    os.utime(base, ns=(10**18, 1_500_000_000 * 10**9))


def _utf8_copy(src: Path, dst: Path) -> None:
    """The same tree with UTF-8 names (by stock rsync's own --iconv)."""
    subprocess.run([tc.RSYNC, "-aH", "--iconv=koi8-r,utf8", f"{src}/", f"{dst}/"], check=True)


def _mutate(root: Path) -> None:
    """Make a copied destination stale: drop, change and add a few files."""
    r = random.Random(3)
    names = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.fsencode(root)) for f in fs)
    for p in r.sample(names, 12):
        if os.path.islink(p):
            continue
        if r.random() < 0.5:
            os.unlink(p)
        else:
            data = bytearray(open(p, "rb").read()) + b"changed"
            data[len(data) // 2] ^= 1
            with open(p, "wb") as fh:
                fh.write(data)
    (root / "extra").write_text("x")


def _lines(r: tc.Run, work: Path) -> list[bytes]:
    out = (r.stdout + r.stderr).replace(os.fsencode(work), b"W")
    out = re.sub(rb"^netsync", b"rsync", out, flags=re.M)
    out = re.sub(rb" at \S+\(\d+\) \[\w+=[\d.]+\]$", b"", out, flags=re.M)
    return sorted(tc.output_lines(out))


def _ssh_side(ssh: SshServer, work: Path, client: str, server: str, direction: str,
              args: list[str], src: Path) -> tuple[tc.Run, Path]:
    dst = work / f"dst-{client}-{server}"
    prog = tc.program_under_test() if client == "netsync" else [tc.RSYNC]
    path = NETSYNC_PATH if server == "netsync" else "rsync"
    ends = ([f"{src}/", f"{ssh.login}:{dst}/"] if direction == "push"
            else [f"{ssh.login}:{src}/", f"{dst}/"])
    return tc.run(prog, [*args, "-e", ssh.rsh, f"--rsync-path={path}", *ends], cwd=work), dst


@pytest.mark.parametrize("stale", [False, True], ids=["new", "stale-dest"])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_ssh_like_rsync(sshd_server: SshServer, tmp_path: Path, direction: str,
                        stale: bool) -> None:
    """KOI8-R on the sending side, UTF-8 on the receiving side (and --delete into a
    stale copy): netsync as either end gives rsync's tree, items and exit code."""
    _koi8_tree(tmp_path / "koi8")
    _utf8_copy(tmp_path / "koi8", tmp_path / "utf8")
    if direction == "push":  # this side KOI8-R, the server's UTF-8
        src, spec = tmp_path / "koi8", "--iconv=koi8-r,utf8"
    else:  # the server's side KOI8-R, this side UTF-8
        src, spec = tmp_path / "koi8", "--iconv=utf8,koi8-r"
    args = ["-aiH", "--delete", spec]
    runs = {}
    for client, server in (("rsync", "rsync"), ("netsync", "rsync"), ("rsync", "netsync")):
        if stale:
            dst = tmp_path / f"dst-{client}-{server}"
            shutil.copytree(tmp_path / "utf8", dst, symlinks=True)
            _mutate(dst)
        r, dst = _ssh_side(sshd_server, tmp_path, client, server, direction, args, src)
        assert b"Traceback" not in r.stderr, r.describe()
        runs[client, server] = (r.returncode, _lines(r, dst), tc.snapshot(dst))
    want = runs["rsync", "rsync"]
    assert want[0] == 0
    assert b"\xd0" in b"".join(want[2]), "no UTF-8 Cyrillic names arrived"
    for who, got in runs.items():
        assert got[0] == want[0], who
        tc.assert_same(want[2], got[2])
        assert got[1] == want[1], who


def _names(snap: dict) -> list[bytes]:
    return sorted(k for k in snap if not k.startswith(b"\0"))


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_ssh_names_that_do_not_convert(sshd_server: SshServer, tmp_path: Path,
                                       direction: str) -> None:
    """A name the sender cannot convert (not UTF-8) and one the receiver cannot (no
    such character in Latin-1): each is an error for that file alone (exit 23), with
    rsync's messages, and the rest arrives.  (rsync 3.5.0 receiving as a client then
    rejects the empty name its failed conversion leaves as "unrequested", exit 4: a
    netsync client goes on.)"""
    src = tmp_path / "src"
    (src / "dé").mkdir(parents=True)
    (src / "café").write_text("1")
    (src / "dé" / "ñ").write_text("2")
    (src / "€uro").write_text("3")
    (src / os.fsdecode(b"bad\xff")).write_text("4")
    # The UTF-8 side sends; the Latin-1 side receives.
    spec = "--iconv=utf8,latin1" if direction == "push" else "--iconv=latin1,utf8"
    sent = [b".", b"caf\xe9", b"d\xe9", b"d\xe9/\xf1"]
    for client, server in (("rsync", "rsync"), ("netsync", "rsync"), ("rsync", "netsync")):
        r, dst = _ssh_side(sshd_server, tmp_path, client, server, direction, ["-rt", spec],
                           src)
        assert b"Traceback" not in r.stderr, r.describe()
        assert b"[sender] cannot convert filename: bad\\#377 (Invalid or incomplete " \
               b"multibyte or wide character)\n" in r.stderr, r.describe()
        assert b"[Receiver] cannot convert filename: " in r.stderr, r.describe()
        if direction == "pull" and client == "rsync":
            assert r.returncode == 4, r.describe()
            assert b"ERROR: rejecting unrequested file-list name: \n" in r.stderr
            continue
        assert r.returncode == 23, r.describe()
        assert _names(tc.snapshot(dst)) == sent
        with open(os.path.join(os.fsencode(dst), b"d\xe9", b"\xf1"), "rb") as fh:
            assert fh.read() == b"2"


@pytest.mark.parametrize("ends", [("netsync", "rsync"), ("rsync", "netsync")])
@pytest.mark.parametrize("spec", ["utf8,latin1", "latin1,utf8"])
def test_ssh_secluded_args_are_converted(sshd_server: SshServer, tmp_path: Path,
                                         ends: tuple[str, str], spec: str) -> None:
    """-s sends the remote path over the protocol, in UTF-8: the server finds "dé/" in
    its own charset (rsync.c send_protected_args(), io.c read_args(RL_CONVERT))."""
    here, there = spec.split(",")
    (tmp_path / "src").mkdir()
    with open(os.path.join(os.fsencode(tmp_path), b"src", "café".encode(here)), "w") as fh:
        fh.write("x")
    remote = tmp_path / "remote"
    os.makedirs(os.path.join(os.fsencode(remote), "dé".encode(there)))
    client, server = ends
    prog = tc.program_under_test() if client == "netsync" else [tc.RSYNC]
    path = NETSYNC_PATH if server == "netsync" else "rsync"
    dest = os.fsdecode(b"%s:%s/%s/" % (sshd_server.login.encode(), os.fsencode(remote),
                                       "dé".encode(here)))
    r = tc.run(prog, ["-s", "-rt", f"--iconv={spec}", "-e", sshd_server.rsh,
                      f"--rsync-path={path}", "src/", dest], cwd=tmp_path)
    assert r.returncode == 0, r.describe()
    got = os.listdir(os.path.join(os.fsencode(remote), "dé".encode(there)))
    assert got == ["café".encode(there)]


def test_bad_charset_is_code_4(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    r = tc.run(tc.program_under_test(), ["-a", "--iconv=bogus,utf8", "s/", "d/"], cwd=tmp_path)
    assert r.returncode == 4
    assert r.stderr.splitlines()[0] == b'iconv_open("UTF-8", "bogus") failed'
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------- local copies

@pytest.mark.parametrize("args", [["-ai"], ["-aiH", "--delete"]])
def test_local_copy_like_rsync(tmp_path: Path, args: list[str]) -> None:
    _koi8_tree(tmp_path / "koi8")
    runs = {}
    for who, prog in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        (tmp_path / who).mkdir()
        r = tc.run(prog, [*args, "--iconv=koi8-r,utf8", "../koi8/", "d/"], cwd=tmp_path / who)
        assert r.returncode == 0, r.describe()
        runs[who] = (_lines(r, tmp_path), tc.snapshot(tmp_path / who / "d"))
    tc.assert_same(runs["rsync"][1], runs["netsync"][1])
    assert runs["netsync"][0] == runs["rsync"][0]
    names = b"".join(runs["netsync"][1])
    assert "ё".encode() in names or "е".encode() in names  # UTF-8 on disk


def test_local_copy_shows_the_sources_names(tmp_path: Path) -> None:
    """UTF-8 into Latin-1: the items name the files as the source does (rsync's local
    client is the sender), the new names are Latin-1 bytes."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "café").write_text("x")
    r = tc.run(tc.program_under_test(), ["-ri", "--iconv=utf8,latin1", "s/", "d/"],
               cwd=tmp_path)
    assert r.returncode == 0, r.describe()
    assert os.listdir(os.fsencode(tmp_path / "d")) == [b"caf\xe9"]
    assert ">f+++++++++ café".encode() in r.stdout.splitlines()


# ----------------------------------------------------------------------- daemons

def _conf(tmp_path: Path) -> Path:
    up = tmp_path / "up"
    up.mkdir()
    up.chmod(0o777)
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\nuid = {os.getuid()}\ngid = {os.getgid()}\n"
                    f"[k]\n  path = {tmp_path / 'koi8'}\n  charset = koi8-r\n"
                    f"[plain]\n  path = {tmp_path / 'koi8'}\n"
                    f"[up]\n  path = {up}\n  read only = no\n  charset = koi8-r\n")
    return conf


def test_daemon_module_charset(tmp_path: Path) -> None:
    """A stock client pulls from and pushes into a module with "charset = koi8-r":
    the same items, in the same order, and the same trees as from rsync's daemon."""
    _koi8_tree(tmp_path / "koi8")
    _utf8_copy(tmp_path / "koi8", tmp_path / "utf8")
    conf = _conf(tmp_path)
    out = {}
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        proc, port = peers.start_daemon(cmd, conf, env=tc.sync_env())
        try:
            url = f"rsync://127.0.0.1:{port}"
            (tmp_path / f"pull-{who}").mkdir()
            pull = tc.run([tc.RSYNC], ["-aiH", "--iconv=utf8", f"{url}/k/", "d/"],
                          cwd=tmp_path / f"pull-{who}")
            refused = tc.run([tc.RSYNC], ["-a", "--iconv=utf8", f"{url}/plain/", "x/"],
                             cwd=tmp_path)
            push = tc.run([tc.RSYNC], ["-rltH", "--iconv=utf8", "utf8/", f"{url}/up/"],
                          cwd=tmp_path)
            up = tmp_path / f"up-{who}"
            shutil.move(tmp_path / "up", up)
            (tmp_path / "up").mkdir()
            (tmp_path / "up").chmod(0o777)
        finally:
            peers.stop(proc)
        assert pull.returncode == 0, pull.describe()
        assert push.returncode == 0, push.describe()
        out[who] = (pull.stdout, tc.snapshot(tmp_path / f"pull-{who}" / "d"), tc.snapshot(up),
                    refused.returncode)
    assert out["netsync"][0] == out["rsync"][0]  # the same lines in the same order
    tc.assert_same(out["rsync"][1], out["netsync"][1])
    tc.assert_same(out["rsync"][2], out["netsync"][2])
    assert out["netsync"][3] != 0 and out["rsync"][3] != 0  # no charset: --iconv refused
    assert sorted(out["netsync"][2]) == sorted(tc.snapshot(tmp_path / "koi8"))
