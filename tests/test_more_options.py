"""Options netsync used to refuse: --open-noatime (and the daemon's "open noatime"),
--fsync, --preallocate, --copy-devices, --checksum-seed, --stop-after/--stop-at,
--old-args/RSYNC_OLD_ARGS and --trust-sender, each run side by side with Debian's rsync.

"Remote" transfers here go through a remote-shell script that records the command
the client asks for, then has sh parse and run it (as a remote shell would), so
the command lines of the two clients compare word for word; the server is stock
rsync or ``netsync --server``.  The daemon cases start both daemons on loopback.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile_peer as hp
import treecompare as tc
from interop import peers

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"
OLD = 1_577_836_800 * 10**9  # 2020-01-01: an atime older than the mtime, so a read moves it
MTIME = 1_700_000_000 * 10**9
CLIENTS = {"rsync": [tc.RSYNC], "netsync": tc.program_under_test()}


_RSH = """
import os, select, subprocess, sys
d = os.path.dirname(os.path.abspath(sys.argv[0]))
cmd = " ".join(sys.argv[2:])  # as ssh joins the words for the remote shell
with open(os.path.join(d, "argv.log"), "a") as f:
    f.write(cmd + "\\n")
p = subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.PIPE)
with open(os.path.join(d, "s2c.bin"), "wb") as log:
    while data := os.read(p.stdout.fileno(), 65536):
        log.write(data)
        view = memoryview(data)
        while view:  # the client may have made this pipe non-blocking
            try:
                view = view[os.write(1, view):]
            except BlockingIOError:
                select.select([], [1], [])
sys.exit(p.wait())
"""


def _rsh(tmp_path: Path) -> str:
    """A remote shell (an -e value): logs the command (a line per run) and the server's
    output, and runs the command through sh as a remote shell would."""
    script = tmp_path / "rsh.py"
    if not script.exists():
        tmp_path.mkdir(parents=True, exist_ok=True)
        script.write_text(_RSH)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def _argv(work: Path) -> str:
    """The logged remote commands, the work dir as W; incremental recursion (the "i"
    capability) is the engine's own choice, not the options'."""
    return re.sub(r"(-\w*e\.)i", r"\1", (work / "argv.log").read_text().replace(str(work), "W"))


def _run(cmd: list[str], args: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 120) -> tc.Run:
    argv = [*cmd, *args]
    p = subprocess.run(argv, cwd=cwd, env=env or tc.sync_env(), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return tc.Run(argv, p.returncode, p.stdout, p.stderr)


def _atime_src(root: Path) -> Path:
    src = root / "src"
    (src / "sub").mkdir(parents=True)
    for name, data in (("a.txt", b"alpha\n" * 1000), ("sub/b.bin", bytes(range(256)) * 270)):
        (src / name).write_bytes(data)
    for p in (src / "a.txt", src / "sub" / "b.bin"):
        os.utime(p, ns=(OLD, MTIME))
    for p in (src / "sub", src):
        os.utime(p, ns=(MTIME, MTIME))
    return src


def _atimes_kept(src: Path) -> bool:
    """True: no source file's atime moved; False: all moved (mixed fails the test)."""
    kept = {p.stat().st_atime_ns == OLD for p in (src / "a.txt", src / "sub" / "b.bin")}
    assert len(kept) == 1, "some atimes moved, some did not"
    return kept.pop()


# ---------------------------------------------------------------------------
# --open-noatime


@pytest.mark.parametrize(("opts", "kept"), [
    ([], False),
    (["--open-noatime"], True),
    (["-UU"], True),  # --atimes twice implies it
    (["--open-noatime", "--no-open-noatime"], False),
    (["--open-noatime", "-c"], True),  # the -c sums read every file too
    (["--open-noatime", "--no-W"], True),
])
def test_open_noatime_local(tmp_path: Path, opts: list[str], kept: bool) -> None:
    got = {}
    for who, cmd in CLIENTS.items():
        src = _atime_src(tmp_path / who)
        if "--no-W" in opts:  # a basis to read on the receiving side as well
            (tmp_path / who / "dst" / "sub").mkdir(parents=True)
            (tmp_path / who / "dst" / "a.txt").write_bytes(b"alpha\n" * 900)
        run = _run(cmd, ["-a", *opts, "src/", "dst/"], tmp_path / who)
        assert run.returncode == 0, run.describe()
        got[who] = _atimes_kept(src)
    assert got == {"rsync": kept, "netsync": kept}
    now = time.time_ns() - 10**9
    tc.assert_same(tc.snapshot(tmp_path / "rsync" / "dst", now),
                   tc.snapshot(tmp_path / "netsync" / "dst", now))


# netsync as client of rsync, rsync as client of netsync --server, and the reference.
PAIRS = {"ref": ([tc.RSYNC], "rsync"), "client": (tc.program_under_test(), "rsync"),
         "server": ([tc.RSYNC], NETSYNC_PATH)}


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize(("opts", "kept"), [([], False), (["--open-noatime"], True),
                                            (["-UU"], True)])
def test_open_noatime_remote(tmp_path: Path, direction: str, opts: list[str],
                             kept: bool) -> None:
    """The sender opens the files: the client on a push, the server (told by the
    client's --open-noatime) on a pull."""
    for who, (cmd, path) in PAIRS.items():
        work = tmp_path / who
        src = _atime_src(work)
        args = ["-a", *opts, "-e", _rsh(work), f"--rsync-path={path}"]
        args += ["src/", f"lh:{work}/dst/"] if direction == "push" else [f"lh:{work}/src/",
                                                                         "dst/"]
        run = _run(cmd, args, work)
        assert run.returncode == 0, run.describe()
        assert _atimes_kept(src) is kept, who
        if who == "client":
            assert _argv(work) == _argv(tmp_path / "ref")
        assert (work / "dst" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_atimes_cross_the_wire(tmp_path: Path, direction: str) -> None:
    """-U: the destination files get the source's (old) atimes, whichever side sends."""
    for who, (cmd, path) in PAIRS.items():
        work = tmp_path / who
        _atime_src(work)
        args = ["-aU", "-e", _rsh(work), f"--rsync-path={path}"]
        args += ["src/", f"lh:{work}/dst/"] if direction == "push" else [f"lh:{work}/src/",
                                                                         "dst/"]
        run = _run(cmd, args, work)
        assert run.returncode == 0, run.describe()
        for f in (p for p in (work / "dst").rglob("*") if p.is_file()):
            assert f.stat().st_atime_ns == OLD, (who, f)


def _noatime_daemon(kind: str, root: Path) -> tuple[object, int]:
    mods = []
    for name, value in (("yes", "yes"), ("no", "no"), ("unset", None)):
        mods += [f"[{name}]", f"path = {root / name}", "read only = no"]
        if value is not None:
            mods.append(f"open noatime = {value}")
        _atime_src(root / name)
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    config = root / "rsyncd.conf"
    config.write_text("\n".join(["use chroot = no", *uid, f"log file = {root / 'log'}",
                                 *mods, ""]))
    cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
    return peers.start_daemon(cmd, config, env=tc.sync_env())


@pytest.mark.parametrize(("module", "opts", "kept"), [
    ("yes", [], True),  # the module turns it on for every client
    ("no", ["--open-noatime"], False),  # ... or off, whatever the client asks
    ("unset", ["--open-noatime"], True),  # unset: the client's choice
    ("unset", [], False),
])
def test_open_noatime_daemon_module(tmp_path: Path, module: str, opts: list[str],
                                    kept: bool) -> None:
    """rsyncd.conf "open noatime": the daemon's sender honours it (clientserver.c)."""
    got = {}
    for daemon, client in (("rsync", "netsync"), ("netsync", "rsync")):
        root = tmp_path / daemon
        proc, port = _noatime_daemon(daemon, root)
        try:
            run = _run(CLIENTS[client], ["-a", *opts, f"rsync://127.0.0.1:{port}/{module}/src/",
                                         str(tmp_path / f"dst-{daemon}")], tmp_path)
        finally:
            peers.stop(proc)
        assert run.returncode == 0, run.describe()
        got[daemon] = _atimes_kept(root / module / "src")
    assert got == {"rsync": kept, "netsync": kept}


# ---------------------------------------------------------------------------
# Options forwarded to the server: the same remote command, the same result


def _fwd_tree(root: Path) -> None:
    src = root / "src"
    src.mkdir(parents=True)
    (src / "text.txt").write_bytes(b"line\n" * 20000)
    (src / "holes.bin").write_bytes(b"x" * 300000 + bytes(3 << 20) + b"y" * 5000)
    (src / "odd.bin").write_bytes(bytes(range(7, 250)) * 51)
    (src / "empty").write_bytes(b"")
    dst = root / "dst"
    dst.mkdir()
    (dst / "text.txt").write_bytes(b"line\n" * 15000 + b"old\n")  # a basis for --no-W
    (dst / "holes.bin").write_bytes(b"x" * 9000)
    for d in (src, dst):
        for p in [*d.iterdir(), d]:
            os.utime(p, ns=(MTIME, MTIME))


FORWARDED = [
    ["--fsync"],
    ["--preallocate"],
    ["--preallocate", "--sparse"],
    ["--preallocate", "--inplace"],
    ["--fsync", "--inplace", "--no-W"],
    ["--checksum-seed=12345", "--no-W"],
    ["--checksum-seed=-7", "-c"],
    ["--open-noatime"],
    ["--copy-devices"],
]


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("opts", FORWARDED, ids=" ".join)
def test_forwarded_options(tmp_path: Path, direction: str, opts: list[str]) -> None:
    runs = {}
    for who, (cmd, path) in PAIRS.items():
        work = tmp_path / who
        _fwd_tree(work)
        args = ["-ai", *opts, "-e", _rsh(work), f"--rsync-path={path}"]
        args += ["src/", f"lh:{work}/dst/"] if direction == "push" else [f"lh:{work}/src/",
                                                                         "dst/"]
        runs[who] = _run(cmd, args, work)
        assert runs[who].returncode == 0, runs[who].describe()
    # The netsync client asks the remote rsync for exactly what rsync's client asks.
    assert _argv(tmp_path / "client") == _argv(tmp_path / "ref")
    now = time.time_ns() - 10**9
    ref = tc.snapshot(tmp_path / "ref" / "dst", now)
    for who in ("client", "server"):
        assert b"Traceback" not in runs[who].stderr, runs[who].describe()
        tc.assert_same(ref, tc.snapshot(tmp_path / who / "dst", now))
        tc.assert_same_output(tc.output_lines(runs["ref"].stdout),
                              tc.output_lines(runs[who].stdout))
    if "--sparse" in opts:
        for who in PAIRS:
            st = (tmp_path / who / "dst" / "holes.bin").stat()
            assert st.st_blocks * 512 < st.st_size // 2, who


# ---------------------------------------------------------------------------
# --preallocate


def _both(tmp_path: Path, setup, *args: str) -> dict[str, tc.Run]:
    runs = {}
    now = time.time_ns() - 10**9
    for who, cmd in CLIENTS.items():
        work = tmp_path / who
        work.mkdir()
        setup(work)
        runs[who] = _run(cmd, list(args), work)
    assert runs["netsync"].returncode == runs["rsync"].returncode, runs["netsync"].describe()
    tc.assert_same(tc.snapshot(tmp_path / "rsync", now), tc.snapshot(tmp_path / "netsync", now))
    tc.assert_same_output(tc.output_lines(runs["rsync"].stdout),
                          tc.output_lines(runs["netsync"].stdout))
    return runs


def _holey(work: Path) -> None:
    (work / "src").mkdir()
    (work / "src" / "holes.bin").write_bytes(b"a" * 1048576 + bytes(4 << 20) + b"b" * 1048577)
    (work / "src" / "small").write_bytes(b"z" * 3)
    for p in (work / "src" / "holes.bin", work / "src" / "small", work / "src"):
        os.utime(p, ns=(MTIME, MTIME))


@pytest.mark.parametrize("opts", [["--preallocate"], ["--preallocate", "--sparse"],
                                  ["--preallocate", "--sparse", "--no-W"],
                                  ["--preallocate", "--inplace"], ["--sparse"]], ids=" ".join)
def test_preallocate_local(tmp_path: Path, opts: list[str]) -> None:
    """The snapshot compares sparseness too: with --sparse the zeros still become holes
    in the space --preallocate reserved (rsync 3.5 punches them)."""
    _both(tmp_path, _holey, "-ai", *opts, "src/", "dst/")
    st = (tmp_path / "netsync" / "dst" / "holes.bin").stat()
    assert (st.st_blocks * 512 < st.st_size // 2) == ("--sparse" in opts)


@pytest.mark.parametrize("opts", [["--preallocate", "--inplace"],
                                  ["--inplace", "--sparse", "--no-W"],
                                  ["--inplace", "--sparse", "--preallocate"]], ids=" ".join)
def test_inplace_over_data(tmp_path: Path, opts: list[str]) -> None:
    """Written into a longer file full of data: the zeros must replace that data (as
    holes punched into it with --sparse, rsync's do_punch_hole), the rest is cut off."""
    def setup(work: Path) -> None:
        _holey(work)
        (work / "dst").mkdir()
        (work / "dst" / "holes.bin").write_bytes(b"q" * (8 << 20))
    _both(tmp_path, setup, "-ai", *opts, "src/", "dst/")
    got = tmp_path / "netsync" / "dst" / "holes.bin"
    assert got.read_bytes() == (tmp_path / "netsync" / "src" / "holes.bin").read_bytes()


def test_inplace_sparse_punches_matched_blocks(tmp_path: Path) -> None:
    """--inplace --sparse: a block matched at its own offset is not rewritten, but its
    zero runs are still punched out (fileio.c skip_matched() -> write_sparse()), so a
    dense copy of a file with zero runs comes out sparse, as from rsync."""
    block = random.Random(7).randbytes(4096)

    def setup(work: Path) -> None:
        data = (block + bytes(24576) + block) * 64
        for side in ("src", "dst"):
            (work / side).mkdir()
            (work / side / "f").write_bytes(data)  # written out: no holes yet
            os.utime(work / side / "f", ns=(MTIME, MTIME))
            os.utime(work / side, ns=(MTIME, MTIME))
        st = (work / "dst" / "f").stat()
        assert st.st_blocks * 512 >= st.st_size

    _both(tmp_path, setup, "-ai", "-I", "--inplace", "--sparse", "--no-W",
          "--block-size=32768", "src/", "dst/")
    got = tmp_path / "netsync" / "dst" / "f"
    assert got.read_bytes() == (tmp_path / "netsync" / "src" / "f").read_bytes()
    st = got.stat()
    assert st.st_blocks * 512 < st.st_size // 2


# ---------------------------------------------------------------------------
# --copy-devices


def _devices(work: Path) -> None:
    (work / "src").mkdir(parents=True)
    os.mknod(work / "src" / "null", 0o640 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(work / "src" / "zero", 0o604 | stat.S_IFCHR, os.makedev(1, 5))
    (work / "src" / "file").write_bytes(b"data\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
@pytest.mark.parametrize("opts", [["--copy-devices"], ["--copy-devices", "-D"], ["-D"],
                                  ["--copy-devices", "--no-W", "-c"]], ids=" ".join)
def test_copy_devices_local(tmp_path: Path, opts: list[str]) -> None:
    """A device is sent as a regular file holding what reading it gives (a char
    device's length is 0 here); without --copy-devices -D keeps it a device."""
    _both(tmp_path, _devices, "-rlpti", *opts, "src/", "dst/")
    null = (tmp_path / "netsync" / "dst" / "null").lstat()
    if "--copy-devices" in opts:
        assert stat.S_ISREG(null.st_mode) and null.st_size == 0
        assert stat.S_IMODE(null.st_mode) == 0o640
    else:
        assert stat.S_ISCHR(null.st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_copy_devices_remote(tmp_path: Path, direction: str) -> None:
    """On a pull the option goes to the server, whose sender converts the devices."""
    now = time.time_ns() - 10**9
    snaps = {}
    for who, (cmd, path) in PAIRS.items():
        work = tmp_path / who
        _devices(work)
        args = ["-a", "--copy-devices", "-e", _rsh(work), f"--rsync-path={path}"]
        args += ["src/", f"lh:{work}/dst/"] if direction == "push" else [f"lh:{work}/src/",
                                                                         "dst/"]
        run = _run(cmd, args, work)
        assert run.returncode == 0, run.describe()
        snaps[who] = tc.snapshot(work / "dst", now)
    assert snaps["ref"][b"zero"].kind == "file"
    for who in ("client", "server"):
        tc.assert_same(snaps["ref"], snaps[who])


# ---------------------------------------------------------------------------
# --checksum-seed


@pytest.mark.parametrize("server", ["rsync", "netsync"])
def test_checksum_seed_in_handshake(tmp_path: Path, server: str) -> None:
    """Below protocol 30 the server's first words are its version and the seed:
    the client's --checksum-seed must arrive there (compat.c setup_protocol)."""
    path = "rsync" if server == "rsync" else NETSYNC_PATH
    for client in CLIENTS:
        work = tmp_path / client
        (work / "src").mkdir(parents=True)
        (work / "dst").mkdir()
        (work / "src" / "text.txt").write_bytes(b"line\n" * 20000)
        (work / "dst" / "text.txt").write_bytes(b"line\n" * 15000 + b"old\n")
        run = _run(CLIENTS[client], ["-a", "--no-W", "--protocol=29", "--checksum-seed=305419896",
                                     "-e", _rsh(work), f"--rsync-path={path}",
                                     f"lh:{work}/src/", "dst/"], work)
        assert run.returncode == 0, run.describe()
        head = (work / "s2c.bin").read_bytes()[:8]  # its own highest protocol, the seed
        assert head == (32).to_bytes(4, "little") + (305419896).to_bytes(4, "little"), client
        assert (work / "dst" / "text.txt").read_bytes() == (work / "src" / "text.txt").read_bytes()


# ---------------------------------------------------------------------------
# --stop-at / --stop-after


@pytest.mark.parametrize("spec", [
    "--stop-at=2020-01-01T00:00", "--stop-at=garbage", "--stop-at=25:00", "--stop-at=12:60",
    "--stop-at=T", "--stop-at=T12", "--stop-at=1-2-3-4", "--stop-at=2-30", "--stop-at=2-29",
    "--stop-at=13-01", "--stop-at=2099-12-31T23:59", "--stop-at=12:30", "--stop-at=:30",
    "--stop-at=t7:05", "--stop-at=99-1-1", "--stop-at=12", "--stop-at=1/2", "--stop-at=31",
    "--stop-at=2030-02-29", "--stop-at=12:", "--stop-at=", "--stop-after=0",
    "--stop-after=-5", "--stop-after=junk", "--stop-after=3x", "--stop-after=10",
])
def test_stop_limits_parse(tmp_path: Path, spec: str) -> None:
    """Accepted or refused with rsync's message; an accepted limit far ahead lets a small
    copy finish normally."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"f\n")
    runs = {who: _run(cmd, ["-r", spec, "src/", f"dst-{who}/"], tmp_path)
            for who, cmd in CLIENTS.items()}
    want, got = runs["rsync"], runs["netsync"]
    assert got.returncode == want.returncode, (want.describe(), got.describe())
    first = want.stderr.split(b"\n")[0].replace(b"rsync:", b"netsync:")
    assert got.stderr.split(b"\n")[0] == first
    assert (tmp_path / "dst-netsync").exists() == (tmp_path / "dst-rsync").exists()


def test_stop_after_stops_the_transfer(tmp_path: Path) -> None:
    """--bwlimit makes the copy take far longer than the one-minute limit: each client
    stops with rsync's message and exit code 30, and leaves no partial file."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big").write_bytes(os.urandom(2_000_000))
    cases = {"rsync": CLIENTS["rsync"] + ["src/", "dst-rsync/"],
             "netsync": CLIENTS["netsync"] + ["src/", "dst-netsync/"],
             "netsync-pull": CLIENTS["netsync"] + ["-e", _rsh(tmp_path),
                                                   f"lh:{tmp_path}/src/", "dst-pull/"]}
    procs = {who: subprocess.Popen([argv[0], *argv[1:-2], "-a", "--bwlimit=10",
                                    "--stop-after=1", *argv[-2:]],
                                   cwd=tmp_path, env=tc.sync_env(), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for who, argv in cases.items()}
    for who, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 30, (who, err)
        lines = err.decode().splitlines()
        assert lines[0] == "stopping at requested limit", (who, err)
        assert any("timeout in data send/receive (code 30)" in ln for ln in lines), (who, err)
        dst = tmp_path / f"dst-{who.split('-')[-1]}"
        assert not dst.exists() or not any(dst.iterdir()), (who, list(dst.iterdir()))


# ---------------------------------------------------------------------------
# --old-args / RSYNC_OLD_ARGS / --trust-sender


@pytest.mark.parametrize(("opts", "env"), [
    ([], {}),
    (["--old-args"], {}),
    (["--old-args", "--old-args"], {}),
    ([], {"RSYNC_OLD_ARGS": "1"}),
    ([], {"RSYNC_OLD_ARGS": "2"}),
    (["--no-old-args"], {"RSYNC_OLD_ARGS": "1"}),
    (["-s"], {"RSYNC_OLD_ARGS": "1"}),
    (["--old-args", "-s"], {}),
])
def test_old_args_command_line(tmp_path: Path, opts: list[str], env: dict[str, str]) -> None:
    """The remote command line: --old-args leaves names to the remote shell (so a name
    with a space is two names), twice also option values; -M values are split too."""
    runs = {}
    now = time.time_ns() - 10**9
    for who, cmd in CLIENTS.items():
        work = tmp_path / who
        (work / "src").mkdir(parents=True)
        (work / "src" / "a b").write_bytes(b"ab\n")
        (work / "src" / "a").write_bytes(b"a\n")
        (work / "src" / "b").write_bytes(b"b\n")
        for p in (*(work / "src").iterdir(), work / "src"):
            os.utime(p, ns=(MTIME, MTIME))
        (work / "dst").mkdir()
        args = ["-ri", *opts, "--backup-dir=bk up", "-M--log-format=%n %l", "-e",
                _rsh(work), f"lh:{work}/src/a b", "dst/"]
        runs[who] = _run(cmd, args, work, env={**tc.sync_env(), **env})
        assert b"Traceback" not in runs[who].stderr
    want, got = runs["rsync"], runs["netsync"]
    assert got.returncode == want.returncode, (want.describe(), got.describe())
    if want.returncode:  # the remote rsync's complaint, passed on by the client
        first = [re.sub(rb"^(rsync|netsync): ", b"",
                        r.stderr.split(b"\n")[0].replace(os.fsencode(tmp_path / w), b"W"))
                 for w, r in (("rsync", want), ("netsync", got))]
        assert first[1] == first[0], got.describe()
        return
    assert _argv(tmp_path / "netsync") == _argv(tmp_path / "rsync")
    tc.assert_same(tc.snapshot(tmp_path / "rsync" / "dst", now),
                   tc.snapshot(tmp_path / "netsync" / "dst", now))


EVIL = Path(hp.__file__).resolve()


@pytest.mark.parametrize(("opts", "ok"), [(("--trust-sender",), True), ((), False),
                                          (("--old-args",), True)])
def test_trust_sender_accepts_unrequested_names(tmp_path: Path, opts: tuple[str, ...],
                                                ok: bool) -> None:
    """A sender answering with a name nobody asked for: refused unless the client
    trusts it (--trust-sender; --old-args also lifts the check, as in rsync).  The fake
    sender knows no more of the protocol than the list: rsync, let through, then waits a
    minute on it, so only the refusal runs both (the acceptance is options.c's
    trust_sender_args, set by either option)."""
    refused = {}
    for who, cmd in CLIENTS.items():
        if ok and who == "rsync":
            refused[who] = False
            continue
        dst = tmp_path / who
        rsh = f"{shlex.quote(sys.executable)} {shlex.quote(str(EVIL))} serve dot-content-dir"
        child = _run(cmd, ["-e", rsh, *opts, "host:src/other", f"{dst}/"], tmp_path)
        refused[who] = b"ERROR: rejecting unrequested file-list name: requested" in child.stderr
        if who == "netsync":
            files = sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) if dst.exists() else []
            assert (child.returncode, files) == ((0, ["requested"]) if ok else (4, [])), \
                child.stderr
    assert refused == {"rsync": not ok, "netsync": not ok}


def test_delete_after_through_kept_dirlink_empties_a_dir_made_this_run(tmp_path: Path) -> None:
    """-K keeps the destination's ``a -> sub``; --delete-after then empties ``a/`` (the
    source's ``a`` is empty), which is ``sub/``, taking the ``sub/inner/`` this run
    made.  rsync's touch_up_dirs() passes over the dir that is gone: no error, exit 0
    (netsync reported "stat ... failed" and exited 23)."""
    def setup(work: Path) -> None:
        (work / "src" / "a").mkdir(parents=True)
        (work / "src" / "sub" / "inner").mkdir(parents=True)
        (work / "src" / "sub" / "inner" / "f").write_bytes(b"f\n")
        (work / "dst" / "sub").mkdir(parents=True)
        (work / "dst" / "a").symlink_to("sub")
        for p in ("src/sub/inner/f", "src/sub/inner", "src/sub", "src/a", "src", "dst/sub"):
            os.utime(work / p, ns=(MTIME, MTIME))

    runs = _both(tmp_path, setup, "-aiK", "--delete-after", "src/", "dst/")
    assert runs["netsync"].returncode == 0, runs["netsync"].describe()
    assert b"failed" not in runs["netsync"].stderr
    assert not (tmp_path / "netsync" / "dst" / "sub" / "inner").exists()


def test_skipped_non_dir_limits_and_exit_code(tmp_path: Path) -> None:
    """Differential seed 40291, cut down: the destination's ``sub`` is a file where the
    source has a dir, kept by --ignore-existing.  As rsync's incremental generator,
    netsync tries to clear it of extras ("opendir ... failed: Not a directory"), says
    nothing of ``sub/f`` (--min-size skips it before its failed stat would be told),
    and with --max-delete hit as well exits 23, not 25 (cleanup.c: a partial
    transfer outranks the deletion limit)."""
    def setup(work: Path) -> None:
        (work / "src" / "sub").mkdir(parents=True)
        (work / "src" / "sub" / "f").write_bytes(b"hi\n")
        (work / "src" / "big").write_bytes(b"\0" * 200)
        (work / "dst").mkdir()
        (work / "dst" / "sub").write_bytes(b"x\n")
        for i in range(3):
            (work / "dst" / f"x{i}").write_bytes(b"%d\n" % i)

    runs = _both(tmp_path, setup, "-ai", "--ignore-existing", "--delete", "--max-delete=1",
                 "--min-size=100", "src/", "dst/")
    for who, run in runs.items():
        assert run.returncode == 23, run.describe()
        err = run.stderr.replace(str(tmp_path / who).encode(), b"W")
        assert f'{who}: [generator] opendir "W/dst/sub" failed: Not a directory (20)'.encode() \
            in err.splitlines(), run.describe()
        assert b"sub/f" not in err, run.describe()
        assert b"Deletions stopped due to --max-delete limit (2 skipped)" in err


def test_delete_delay_of_a_name_already_gone(tmp_path: Path) -> None:
    """-K --delete-delay: the destination's ``dl -> real`` is kept, and the walk finds
    both ``real`` (not in the source) and ``dl/extra`` to delete.  Deleting ``real``
    takes ``dl/extra`` with it; rsync's delete_item() then finds it gone (ENOENT) and
    says nothing, where netsync printed "*deleting dl/extra" (and counted it).
    Differential seed 42016."""
    def setup(work: Path) -> None:
        (work / "src" / "dl").mkdir(parents=True)
        (work / "src" / "dl" / "a").write_bytes(b"a\n")
        (work / "dst" / "real").mkdir(parents=True)
        (work / "dst" / "real" / "extra").write_bytes(b"x\n")
        (work / "dst" / "dl").symlink_to("real")
        for p in ("src/dl/a", "src/dl", "src", "dst/real/extra", "dst/real", "dst"):
            os.utime(work / p, ns=(MTIME, MTIME))

    runs = _both(tmp_path, setup, "-aiK", "--delete-delay", "src/", "dst/")
    assert b"*deleting   real/" in runs["netsync"].stdout, runs["netsync"].describe()
    assert b"dl/extra" not in runs["netsync"].stdout, runs["netsync"].describe()


def test_fake_super_backup_dir_parents(tmp_path: Path) -> None:
    """--fake-super --backup-dir: a backup's parent dir made in the backup dir copies
    the destination dir's owner into its %stat xattr, as rsync's set_file_attrs()
    does under fake-super, and is not chowned (netsync chowned it).  Differential seed
    42155."""
    if os.geteuid() != 0:
        peers.missing("needs root (the destination dir is owned by another user)")

    def setup(work: Path) -> None:
        for side, body in (("src", b"new\n"), ("dst", b"old\n")):
            (work / side / "o" / "d").mkdir(parents=True)
            (work / side / "o" / "d" / "f").write_bytes(body)
            os.chown(work / side / "o" / "d", 4321, 8765)
        os.utime(work / "dst" / "o" / "d" / "f", ns=(OLD, OLD))

    _both(tmp_path, setup, "-a", "--super", "--fake-super", "--backup-dir=bk", "-O", "-I",
          "src/", "dst/")
    for who in CLIENTS:
        made = tmp_path / who / "dst" / "bk" / "o" / "d"
        assert (made.stat().st_uid, made.stat().st_gid) == (0, 0), who
        assert os.getxattr(made, "user.rsync.%stat") == b"40755 0,0 4321:8765", who


@pytest.mark.parametrize("opts", [["-aib"], ["-aib", "--delay-updates"]], ids=" ".join)
def test_backup_that_cannot_be_made(tmp_path: Path, opts: list[str]) -> None:
    """-b where the backup's name is one byte too long (a 255-byte name plus "~"): the
    old version stays.  rsync.c finish_transfer() ends the run there (exit 11; netsync
    went on, 23); with --delay-updates, handle_delayed_updates() leaves the new version
    staged in .~tmp~ (netsync replaced the old one, which had no backup).
    Differential seeds 43058 and 40032."""
    long = b"x" * 255

    def setup(work: Path) -> None:
        for side, body in (("src", b"new\n"), ("dst", b"old\n")):
            (work / side).mkdir()
            (work / side / os.fsdecode(long)).write_bytes(body)
            os.utime(work / side / os.fsdecode(long), ns=(OLD if side == "dst" else MTIME,) * 2)

    runs = _both(tmp_path, setup, *opts, "src/", "dst/")
    for who, run in runs.items():
        assert run.returncode == (23 if "--delay-updates" in opts else 11), run.describe()
        assert (tmp_path / who / "dst" / os.fsdecode(long)).read_bytes() == b"old\n"
