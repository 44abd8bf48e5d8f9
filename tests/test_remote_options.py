"""Options over the wire: --files-from, --inplace/--append*, --*-missing-args,
--skip-compress and --list-only, compared with rsync-to-rsync.

Every case runs one transfer three times, each in its own copy of a work dir:
stock rsync to stock rsync (the reference), netsync as the client of a stock
rsync, and a stock rsync client with netsync as its server.  Over ssh the
server is ``netsync --server`` (``--rsync-path``); over the daemon protocol it
is ``netsync --daemon`` next to an ``rsync --daemon`` serving the same config.
Exit codes, the resulting trees and the client's stdout lines must be the same.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import treecompare as tc
import trees
from interop import peers
from interop.peers import SshServer

sshd_server = peers.sshd_server  # the session fixture

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"
ROLES = ("client", "server")  # which side netsync plays
FLIST = b"modes/\nsub/f00.txt\n#a comment\n\nfile1.dat\r\nmissing.txt\ndeep/d00/\nkeep\n"


def _work(tmp_path: Path, dest: str = "diverged", tree: str = "small") -> Path:
    base = tmp_path / "base"
    trees.make_tree(base / "src", tree)
    trees.make_dest(base / "src", base / "dst", dest)
    return base


def _copies(base: Path, tmp_path: Path) -> dict[str, Path]:
    out = {}
    for who in ("ref", *ROLES):
        out[who] = tmp_path / who
        trees.copy_tree(base, out[who])
    shutil.rmtree(base)
    return out


def _lines(run: tc.Run, work: Path) -> list[bytes]:
    return tc.output_lines(run.stdout.replace(str(work).encode(), b"WORK"))



def _check(runs: dict[str, tc.Run], works: dict[str, Path], now: int, rc: int,
           compare_output: bool = True) -> None:
    want = runs["ref"]
    assert want.returncode == rc, want.describe()
    for who in ROLES:
        got = runs[who]
        assert got.returncode == want.returncode, f"{who}: {got.describe()}"
        assert b"Traceback" not in got.stderr, got.describe()
        assert b"not implemented" not in got.stderr, got.describe()
        tc.assert_same(tc.snapshot(works["ref"], now), tc.snapshot(works[who], now))
        if compare_output:
            tc.assert_same_output(_lines(want, works["ref"]), _lines(got, works[who]))


def _ssh(ssh: SshServer, tmp_path: Path, direction: str, extra: list[str], *,
         base: Path | None = None, rc: int = 0, compare_output: bool = True,
         src: str = "src/", dst: str = "dst/", stdin: bytes | None = None) -> dict[str, tc.Run]:
    """``extra`` may hold "{work}" (each copy's own work dir)."""
    works = _copies(base if base is not None else _work(tmp_path), tmp_path)
    now = time.time_ns() - 10**9
    runs = {}
    for who, work in works.items():
        cmd = tc.program_under_test() if who == "client" else [tc.RSYNC]
        path = NETSYNC_PATH if who == "server" else "rsync"
        args = [a.replace("{work}", str(work)) for a in extra]
        args += ["-e", ssh.rsh, f"--rsync-path={path}"]
        if direction == "push":
            args += [src, f"{ssh.login}:{work}/{dst}"]
        else:
            args += [f"{ssh.login}:{work}/{src}", dst]
        runs[who] = _run(cmd, args, work, stdin)
    _check(runs, works, now, rc, compare_output)
    return runs


def _run(cmd: list[str], args: list[str], cwd: Path, stdin: bytes | None = None) -> tc.Run:
    argv = [*cmd, *args]
    p = subprocess.run(argv, cwd=cwd, env=tc.sync_env(), input=stdin or b"",
                       capture_output=True, timeout=120)
    return tc.Run(argv, p.returncode, p.stdout, p.stderr)


# ---------------------------------------------------------------------------
# --files-from


@pytest.mark.parametrize("protocol", [32, 31, 30, 29])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_files_from_local_list(sshd_server: SshServer, tmp_path: Path, direction: str,
                               protocol: int) -> None:
    """A local list: sent over the wire when the sender is remote (pull)."""
    base = _work(tmp_path)
    (base / "list").write_bytes(FLIST)
    _ssh(sshd_server, tmp_path, direction,
         ["-ai", "--files-from=list", f"--protocol={protocol}"], base=base, rc=23)


@pytest.mark.parametrize("protocol", [32, 30, 29])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_files_from_remote_list(sshd_server: SshServer, tmp_path: Path, direction: str,
                                protocol: int) -> None:
    """``--files-from=:PATH``: the list lives on the remote side (forwarded on a push)."""
    base = _work(tmp_path)
    (base / "list").write_bytes(FLIST)
    _ssh(sshd_server, tmp_path, direction,
         ["-ai", "--files-from=:{work}/list", f"--protocol={protocol}"], base=base, rc=23)


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("where", ["local", "remote"])
def test_files_from_unreadable(sshd_server: SshServer, tmp_path: Path, direction: str,
                               where: str) -> None:
    """A list that cannot be opened: rsync's option error on the side that opens it."""
    spec = "--files-from=nolist" if where == "local" else "--files-from=:{work}/nolist"
    runs = _ssh(sshd_server, tmp_path, direction, ["-a", spec],
                rc=1 if where == "local" else 12)
    for who in ("ref", *ROLES):
        assert b"failed to open files-from file" in runs[who].stderr, runs[who].stderr


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_files_from_stdin_from0(sshd_server: SshServer, tmp_path: Path,
                                direction: str) -> None:
    names = b"\0".join([b"sub/f00.txt", b"file1.dat", b"deep/./d00"]) + b"\0"
    _ssh(sshd_server, tmp_path, direction, ["-ai", "--from0", "--files-from=-", "-r"],
         stdin=names)


@pytest.mark.parametrize("protocol", [32, 30])
def test_files_from_long_list(sshd_server: SshServer, tmp_path: Path, protocol: int) -> None:
    """A list and a file list far bigger than a pipe: forwarding the names while the
    file list comes back must not deadlock."""
    base = tmp_path / "base"
    (base / "src").mkdir(parents=True)
    (base / "dst").mkdir()
    names = []
    for i in range(1200):
        name = f"d{i % 50:02d}/{'n' * 60}{i:05d}"
        names.append(name)
        (base / "src" / name).parent.mkdir(exist_ok=True)
        (base / "src" / name).write_bytes(b"")
    (base / "list").write_text("\n".join(names) + "\n")
    _ssh(sshd_server, tmp_path, "pull", ["-rt", "--files-from=list", f"--protocol={protocol}"],
         base=base)


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_files_from_no_relative_delete(sshd_server: SshServer, tmp_path: Path,
                                       direction: str) -> None:
    base = _work(tmp_path)
    (base / "list").write_bytes(b"sub/f00.txt\nfile1.dat\n")
    _ssh(sshd_server, tmp_path, direction, ["-ai", "--no-R", "--files-from=list"], base=base)


# ---------------------------------------------------------------------------
# --inplace / --append / --append-verify


def _grown(tmp_path: Path) -> Path:
    """dst holds prefixes (and one wrong prefix) of growing source files."""
    base = tmp_path / "base"
    src, dst = base / "src", base / "dst"
    src.mkdir(parents=True)
    dst.mkdir()
    blob = bytes(range(256)) * 3000  # 768000 bytes
    (src / "log.txt").write_bytes(blob)
    (dst / "log.txt").write_bytes(blob[:300000])
    (src / "same.txt").write_bytes(b"unchanged\n")
    (dst / "same.txt").write_bytes(b"unchanged\n")
    (src / "new.txt").write_bytes(b"brand new\n" * 999)
    (src / "edited.bin").write_bytes(blob[:200000] + b"X" * 5000 + blob[205000:400000])
    (dst / "edited.bin").write_bytes(blob[:400000])
    (src / "shrunk.txt").write_bytes(b"short\n")
    (dst / "shrunk.txt").write_bytes(b"a much longer line than the source has\n")
    for p in (src / "same.txt", dst / "same.txt"):
        os.utime(p, ns=(1_600_000_000_000_000_000,) * 2)
    return base


@pytest.mark.parametrize("opt", ["--inplace", "--append", "--append-verify"])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_inplace_append(sshd_server: SshServer, tmp_path: Path, direction: str,
                        opt: str) -> None:
    runs = _ssh(sshd_server, tmp_path, direction, ["-rti", "--no-W", "--stats", opt],
                base=_grown(tmp_path), compare_output=False)
    for who in ROLES:  # the same items; the same data on the wire for --append*
        want = _lines(runs["ref"], tmp_path / "ref")
        got = _lines(runs[who], tmp_path / who)
        keep = (b"<f", b">f", b".f", b"Number of", b"Total file size",
                b"Total transferred")
        if opt != "--inplace":
            keep += (b"Literal data", b"Matched data")
        tc.assert_same_output([ln for ln in want if ln.startswith(keep)],
                              [ln for ln in got if ln.startswith(keep)])


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_append_verify_redo(sshd_server: SshServer, tmp_path: Path, direction: str) -> None:
    """A wrong prefix fails --append-verify's whole-file check: the file is redone whole."""
    base = tmp_path / "base"
    (base / "src").mkdir(parents=True)
    (base / "dst").mkdir()
    full = bytes(range(251)) * 400
    (base / "src" / "f").write_bytes(full)
    (base / "dst" / "f").write_bytes(b"\0" * 64 + full[64:20000])
    # Both from one old time: after the failed pass the dest carries its write time,
    # which the redo reports as a time change (rsync sets no times on a failed file).
    for p in (base / "src" / "f", base / "dst" / "f"):
        os.utime(p, ns=(1_600_000_000_000_000_000,) * 2)
    _ssh(sshd_server, tmp_path, direction,
         ["-ai", "--append-verify", "--no-W", "--checksum-choice=xxh64"], base=base)


@pytest.mark.parametrize("protocol", [32, 29])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_inplace_delta_protocols(sshd_server: SshServer, tmp_path: Path, direction: str,
                                 protocol: int) -> None:
    """A rewritten tree in place: a block moved backwards must not read overwritten data."""
    base = tmp_path / "base"
    (base / "src").mkdir(parents=True)
    (base / "dst").mkdir()
    parts = [bytes([i]) * 7000 + os.urandom(900) for i in range(40)]
    (base / "dst" / "f").write_bytes(b"".join(parts))
    (base / "src" / "f").write_bytes(b"".join(parts[20:] + parts[:20]))
    _ssh(sshd_server, tmp_path, direction,
         ["-ai", "--inplace", "--no-W", "-B", "2048", f"--protocol={protocol}"], base=base)


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_inplace_leaves_matched_blocks_alone(sshd_server: SshServer, tmp_path: Path,
                                             direction: str) -> None:
    """--inplace: a block matched where it already is is not written again
    (receiver.c skip_matched()), so a sparse image keeps its holes.  netsync's
    receiver rewrote every block, filling them; its sender matched the zeros
    off the block grid (the image's data repeats, shifted), where rsync's
    realigns them (match.c), and pushing it did not prefer blocks in place."""
    base = tmp_path / "base"
    (base / "src").mkdir(parents=True)
    (base / "dst").mkdir()
    data = os.urandom(256 << 10)
    for side, head in (("src", data), ("dst", data[:4096] + b"changed!" + data[4104:])):
        with open(base / side / "disk.img", "wb") as fh:
            fh.write(head)
            fh.seek(4 << 20, os.SEEK_CUR)  # a 4 MiB hole
            fh.write(data)
    assert os.stat(base / "dst" / "disk.img").st_blocks * 512 < 1 << 20
    _ssh(sshd_server, tmp_path, direction, ["-rti", "-I", "--inplace", "--no-W"], base=base)
    for who in ("ref", *ROLES):
        img, orig = (tmp_path / who / side / "disk.img" for side in ("dst", "src"))
        assert img.read_bytes() == orig.read_bytes()
        assert os.stat(img).st_blocks * 512 < 1 << 20, who  # the 4 MiB hole is there


# ---------------------------------------------------------------------------
# --remove-source-files -H


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_remove_source_files_linked_up_to_date(sshd_server: SshServer, tmp_path: Path,
                                               direction: str) -> None:
    """The destination already holds each hard-link group, linked: every member is
    done, so every member's source goes (hlink.c hard_link_check() reports a member
    found linked as a success; netsync's receiver kept those sources)."""
    base = _work(tmp_path, "same", tree="mixed")
    _ssh(sshd_server, tmp_path, direction, ["-aiH", "--remove-source-files"], base=base)
    assert not (tmp_path / "ref" / "src" / "hard" / "a2").exists()


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_munge_links_lines(sshd_server: SshServer, tmp_path: Path, direction: str) -> None:
    """--munge-links: a pulling client munges each link as it reads the list (flist.c
    recv_file_entry()), so its -i lines show the target it makes ("-> /rsyncd-munged/
    target"); netsync printed the sender's target.  Differential seed 42023."""
    base = _work(tmp_path, "empty", tree="mixed")
    runs = _ssh(sshd_server, tmp_path, direction, ["-ai", "--munge-links"], base=base)
    if direction == "pull":
        assert b" -> /rsyncd-munged/" in runs["client"].stdout


# ---------------------------------------------------------------------------
# --delete-missing-args / --ignore-missing-args


@pytest.mark.parametrize("opt", ["--ignore-missing-args", "--delete-missing-args"])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_missing_args(sshd_server: SshServer, tmp_path: Path, direction: str,
                      opt: str) -> None:
    base = _work(tmp_path)
    (base / "dst" / "gone.txt").write_text("delete me\n")
    (base / "dst" / "gone_dir").mkdir()
    (base / "dst" / "gone_dir" / "x").write_text("x\n")
    (base / "list").write_bytes(b"gone.txt\ngone_dir\nfile1.dat\nsub\n")
    _ssh(sshd_server, tmp_path, direction,
         ["-ai", opt, "--files-from=list", "--force"], base=base)


@pytest.mark.parametrize("source", ["src/", "src/not-there"])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_ignore_missing_args_one_source(sshd_server: SshServer, tmp_path: Path,
                                        direction: str, source: str) -> None:
    """One source with --ignore-missing-args: incremental as with rsync ("sending
    incremental file list"), and a missing one ends cleanly with an empty list (a
    pulling netsync wrote on after the sender had ended: exit 12)."""
    runs = _ssh(sshd_server, tmp_path, direction, ["-av", "--ignore-missing-args"],
                src=source)
    assert runs["client"].stdout.split(b"\n")[0] == (
        b"sending incremental file list" if direction == "push"
        else b"receiving incremental file list")


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_delete_missing_args_plain(sshd_server: SshServer, tmp_path: Path,
                                   direction: str) -> None:
    base = _work(tmp_path)
    (base / "dst" / "gone.txt").write_text("delete me\n")
    srcs = ["src/gone.txt", "src/file1.dat"]
    works = _copies(base, tmp_path)
    now = time.time_ns() - 10**9
    runs = {}
    for who, work in works.items():
        cmd = tc.program_under_test() if who == "client" else [tc.RSYNC]
        path = NETSYNC_PATH if who == "server" else "rsync"
        args = ["-ai", "--delete-missing-args", "-e", sshd_server.rsh, f"--rsync-path={path}"]
        if direction == "push":
            args += [*srcs, f"{sshd_server.login}:{work}/dst/"]
        else:
            args += [f"{sshd_server.login}:{work}/{srcs[0]}", f":{work}/{srcs[1]}", "dst/"]
        runs[who] = _run(cmd, args, work)
    _check(runs, works, now, 0)


# ---------------------------------------------------------------------------
# -z --skip-compress, --list-only


@pytest.mark.parametrize("zc", ["zlib", "zlibx", "zstd", "lz4"])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_skip_compress(sshd_server: SshServer, tmp_path: Path, direction: str,
                       zc: str) -> None:
    """-z with --skip-compress (sent to the server, as rsync does) for every codec:
    the same items, tree and delta.  rsync 3.5.0 works out a per-file level but no
    codec changes level mid-stream, so the stream is that of plain -z."""
    base = _work(tmp_path)
    (base / "src" / "data.gz").write_bytes(b"compressible " * 5000)
    (base / "src" / "data.TXT").write_bytes(b"compressible " * 5000)
    runs = _ssh(sshd_server, tmp_path, direction,
                ["-ai", "--no-W", f"--zc={zc}", "--stats", "--skip-compress=gz/[tT]xt"],
                base=base, compare_output=False)

    def keep(who: str) -> list[bytes]:
        return [ln for ln in _lines(runs[who], tmp_path / who)
                if ln[:1] in b"<>.c*" or ln.startswith((b"Literal data", b"Matched data"))]

    for who in ROLES:
        assert keep(who) == keep("ref"), who


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_list_only(sshd_server: SshServer, tmp_path: Path, direction: str) -> None:
    _ssh(sshd_server, tmp_path, direction, ["-a", "--list-only"])


def test_list_without_destination(sshd_server: SshServer, tmp_path: Path) -> None:
    works = _copies(_work(tmp_path), tmp_path)
    now = time.time_ns() - 10**9
    runs = {}
    for who, work in works.items():
        cmd = tc.program_under_test() if who == "client" else [tc.RSYNC]
        path = NETSYNC_PATH if who == "server" else "rsync"
        runs[who] = _run(cmd, ["-r", "-e", sshd_server.rsh, f"--rsync-path={path}",
                               f"{sshd_server.login}:{work}/src/"], work)
    _check(runs, works, now, 0)
    assert b"file1.dat" in runs["client"].stdout


def test_list_missing_args(sshd_server: SshServer, tmp_path: Path) -> None:
    """--delete-missing-args shows a missing argument as "*missing" in a listing."""
    works = _copies(_work(tmp_path), tmp_path)
    now = time.time_ns() - 10**9
    runs = {}
    for who, work in works.items():
        cmd = tc.program_under_test() if who == "client" else [tc.RSYNC]
        path = NETSYNC_PATH if who == "server" else "rsync"
        runs[who] = _run(cmd, ["--delete-missing-args", "-e", sshd_server.rsh,
                               f"--rsync-path={path}", f"{sshd_server.login}:{work}/src/gone"],
                           work)
    _check(runs, works, now, 0)
    assert b"*missing" in runs["client"].stdout


def test_dont_compress_level() -> None:
    from netsync.server import dont_compress_level

    assert dont_compress_level("*.gz *.zip", "zlib", None) is None
    assert dont_compress_level("*.gz * *.zip", "zlibx", 6) == 0
    assert dont_compress_level("*", "zstd", 3) == 3
    assert dont_compress_level(None, "zlib", 9) == 9


# ---------------------------------------------------------------------------
# the same over the daemon protocol


@dataclass
class Daemon:
    name: str
    port: int
    module: Path
    proc: subprocess.Popen[bytes]


def _start_daemon(kind: str, root: Path) -> Daemon:
    module = root / "mod"
    module.mkdir(parents=True)
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    config = root / "rsyncd.conf"
    config.write_text("\n".join(["use chroot = no", *uid, f"log file = {root / 'log'}",
                                 "[mod]", f"path = {module}", "read only = no", ""]))
    cmd = [tc.RSYNC] if kind == "ref" else tc.program_under_test()
    proc, port = peers.start_daemon(cmd, config, env=tc.sync_env())
    return Daemon(kind, port, module, proc)


@pytest.fixture(scope="module")
def daemon_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Daemon]]:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")
    base = tmp_path_factory.mktemp("opt-daemons")
    ds = {"ref": _start_daemon("ref", base / "ref")}
    try:
        ds["server"] = _start_daemon("server", base / "server")
        yield ds
    finally:
        for d in ds.values():
            peers.stop(d.proc)


def _daemon(ds: dict[str, Daemon], tmp_path: Path, direction: str, extra: list[str], *,
            base: Path, rc: int = 0, compare_output: bool = True,
            from_root: bool = False) -> dict[str, tc.Run]:
    """The netsync client talks to the rsync daemon, the rsync client to the netsync
    daemon.  The remote half of each work dir (dst for a push, src for a pull) is moved
    into the module for its run, under one name for all runs.  ``from_root``: pull from
    the module's top with the local --files-from names prefixed by that name (rsync
    3.5.0's daemon sender loses files when a --files-from pull starts in a subdir)."""
    rname = f"w-{tmp_path.name}"
    half = "dst" if direction == "push" else "src"
    works = _copies(base, tmp_path)
    now = time.time_ns() - 10**9
    runs = {}
    for who, work in works.items():
        d = ds["server" if who == "server" else "ref"]
        rdir = d.module / rname
        shutil.move(str(work / half), str(rdir))
        dest = "dst/"
        if (work / "list").exists():
            if from_root:
                lines = (work / "list").read_bytes().split(b"\n")
                (work / "list").write_bytes(b"\n".join(rname.encode() + b"/" + ln if ln else ln
                                                       for ln in lines))
                # The pulled names carry rname/: keep dst as that dir of the destination.
                (work / "pulled").mkdir()
                shutil.move(str(work / "dst"), str(work / "pulled" / rname))
                dest = "pulled/"
            shutil.copy2(work / "list", d.module / f"list-{rname}")
        url = f"rsync://127.0.0.1:{d.port}/mod/{'' if from_root else rname + '/'}"
        args = [a.replace("{rlist}", f":list-{rname}") for a in extra]
        cmd = tc.program_under_test() if who == "client" else [tc.RSYNC]
        args += ["src/", url] if direction == "push" else [url, dest]
        try:
            runs[who] = _run(cmd, args, work)
        finally:
            shutil.move(str(rdir), str(work / half))
            if dest != "dst/":
                shutil.move(str(work / "pulled" / rname), str(work / "dst"))
                shutil.rmtree(work / "pulled")
            (work / "list").unlink(missing_ok=True)
    _check(runs, works, now, rc, compare_output)
    return runs


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("where", ["local", "remote"])
def test_daemon_files_from(daemon_pair: dict[str, Daemon], tmp_path: Path, direction: str,
                           where: str) -> None:
    base = _work(tmp_path)
    (base / "list").write_bytes(FLIST)
    spec = "--files-from=list" if where == "local" else "--files-from={rlist}"
    _daemon(daemon_pair, tmp_path, direction, ["-ri", spec], base=base, rc=23,
            from_root=direction == "pull")


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_daemon_files_from_protocol30(daemon_pair: dict[str, Daemon], tmp_path: Path,
                                      direction: str) -> None:
    base = _work(tmp_path)
    (base / "list").write_bytes(FLIST)
    _daemon(daemon_pair, tmp_path, direction, ["-ri", "--files-from=list", "--protocol=30"],
            base=base, rc=23, from_root=direction == "pull")


@pytest.mark.parametrize("opt", ["--inplace", "--append", "--append-verify"])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_daemon_inplace_append(daemon_pair: dict[str, Daemon], tmp_path: Path,
                               direction: str, opt: str) -> None:
    _daemon(daemon_pair, tmp_path, direction, ["-rti", "--no-W", opt], base=_grown(tmp_path))


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_daemon_delete_missing_args(daemon_pair: dict[str, Daemon], tmp_path: Path,
                                    direction: str) -> None:
    base = _work(tmp_path)
    (base / "dst" / "gone.txt").write_text("delete me\n")
    (base / "list").write_bytes(b"gone.txt\nfile1.dat\n")
    _daemon(daemon_pair, tmp_path, direction,
            ["-ri", "--delete-missing-args", "--files-from=list"], base=base,
            from_root=direction == "pull")


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_daemon_list_only(daemon_pair: dict[str, Daemon], tmp_path: Path,
                          direction: str) -> None:
    _daemon(daemon_pair, tmp_path, direction, ["-r", "--list-only"], base=_work(tmp_path))
