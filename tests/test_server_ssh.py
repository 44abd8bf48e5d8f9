"""netsync as the rsync *server* over ssh, driven by a stock rsync client.

Each case runs the same stock ``/usr/bin/rsync`` client command twice over a
real sshd: once with the stock ``rsync --server`` on the far side, once with
``--rsync-path`` running ``python -m netsync --server``.  Exit codes, the
resulting trees and the client's stdout lines (``-i`` items, "deleting"
lines) must be the same.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest

import treecompare as tc
import trees
from interop import peers
from interop.peers import SshServer

sshd_server = peers.sshd_server  # the session fixture

PROTOCOLS = (32, 31, 30, 29, 27)
_SRC = str(Path(__file__).resolve().parent.parent / "src")
# sshd does not pass our environment on: set PYTHONPATH in the remote command itself.
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"


def _pair(tmp_path: Path, dest: str, tree: str) -> tuple[Path, Path]:
    base = tmp_path / "base"
    trees.make_tree(base / "src", tree)
    trees.make_dest(base / "src", base / "dst", dest)
    a, b = tmp_path / "rsync", tmp_path / "netsync"
    for w in (a, b):
        trees.copy_tree(base, w)
    shutil.rmtree(base)
    return a, b


def _run(ssh: SshServer, rsync_path: str, work: Path, direction: str,
         extra: list[str]) -> tc.Run:
    common = [*extra, "-e", ssh.rsh, f"--rsync-path={rsync_path}"]
    if direction == "push":
        args = [*common, "src/", f"{ssh.login}:{work}/dst/"]
    else:
        args = [*common, f"{ssh.login}:{work}/src/", "dst/"]
    return tc.run([tc.RSYNC], args, cwd=work)


def _compare(ssh: SshServer, tmp_path: Path, direction: str, extra: list[str],
             dest: str = "diverged", tree: str = "mixed", rc: int = 0,
             output: str = "lines") -> tc.Run:
    """``output``: which stdout lines must match (treecompare.output_lines modes)."""
    a, b = _pair(tmp_path, dest, tree)
    now = time.time_ns() - 10**9
    want = _run(ssh, "rsync", a, direction, extra)
    got = _run(ssh, NETSYNC_PATH, b, direction, extra)
    assert want.returncode == rc, want.describe()
    assert got.returncode == want.returncode, got.describe()
    assert b"Traceback" not in got.stderr, got.describe()
    assert b"internal error" not in got.stderr, got.describe()
    tc.assert_same(tc.snapshot(a, now), tc.snapshot(b, now))
    tc.assert_same_output(_lines(want, a, output), _lines(got, b, output))
    return got


def _lines(run: tc.Run, work: Path, mode: str) -> list[bytes]:
    """The client's stdout lines, with the work dir (named after the side) neutralised."""
    out = run.stdout.replace(str(work).encode(), b"WORK")
    if mode == "stats":  # the data counters too: the same delta must be found
        return [ln for ln in out.split(b"\n")
                if ln.startswith((b"Literal data", b"Matched data"))] + tc.output_lines(
                    out, "stats")
    return tc.output_lines(out, mode)


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_archive_each_protocol(sshd_server: SshServer, tmp_path: Path, direction: str,
                               protocol: int) -> None:
    _compare(sshd_server, tmp_path, direction, ["-ai", f"--protocol={protocol}"],
             dest="none")


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_delete_itemize_each_protocol(sshd_server: SshServer, tmp_path: Path,
                                      direction: str, protocol: int) -> None:
    _compare(sshd_server, tmp_path, direction,
             ["-a", "--delete", "-i", f"--protocol={protocol}"])


def _one_side(ssh: SshServer, tmp_path: Path, who: str, ours: str, direction: str,
              args: list[str]) -> Path:
    """One side of a differential over ssh: Debian's rsync both ends ("rsync"), or
    netsync as the client or as the --rsync-path server (``ours``); its tmp/dst-WHO."""
    dst = tmp_path / f"dst-{who}"
    netsync = who == "netsync"
    prog = tc.program_under_test() if netsync and ours == "client" else [tc.RSYNC]
    path = NETSYNC_PATH if netsync and ours == "server" else "rsync"
    src = tmp_path / "src"
    ends = ([f"{src}/", f"{ssh.login}:{dst}/"] if direction == "push"
            else [f"{ssh.login}:{src}/", f"{dst}/"])
    r = tc.run(prog, [*args, "-e", ssh.rsh, f"--rsync-path={path}", *ends], cwd=tmp_path)
    assert r.returncode == 0, r.describe()
    return dst


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("opt", ["--munge-links", "-M--munge-links"])
@pytest.mark.parametrize("ours", ["client", "server"])
def test_munge_links_side(sshd_server: SshServer, tmp_path: Path, direction: str,
                          opt: str, ours: str) -> None:
    # --munge-links acts on the side it is given to: a sender unmunges what it reads, a
    # receiver munges what it writes (-M: the server's side). netsync munged on any
    # receiving side and unmunged only in a daemon.
    src = tmp_path / "src"
    src.mkdir()
    os.symlink("target", src / "plain")
    os.symlink("/rsyncd-munged/t2", src / "munged")
    got = {}
    for who in ("rsync", "netsync"):
        dst = _one_side(sshd_server, tmp_path, who, ours, direction, ["-a", opt])
        got[who] = (os.readlink(dst / "plain"), os.readlink(dst / "munged"))
    assert got["netsync"] == got["rsync"]


@pytest.mark.parametrize("ours,direction,opt", [("client", "pull", "--chmod=D750,F600"),
                                               ("server", "push", "-M--chmod=D750,F600")])
def test_chmod_on_the_receiver(sshd_server: SshServer, tmp_path: Path, ours: str,
                               direction: str, opt: str) -> None:
    # flist.c recv_file_entry(): a receiver given --chmod tweaks the modes it receives
    # (a pulling client; a server through -M). netsync applied it only as the sender.
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "f").write_bytes(b"f\n")
    (src / "sub" / "g").write_bytes(b"g\n")
    os.chmod(src / "f", 0o644)
    os.chmod(src / "sub", 0o755)
    got = {}
    for who in ("rsync", "netsync"):
        dst = _one_side(sshd_server, tmp_path, who, ours, direction, ["-a", opt])
        got[who] = [oct((dst / n).stat().st_mode & 0o7777) for n in ("f", "sub", "sub/g")]
    assert got["rsync"] == ["0o600", "0o750", "0o600"]
    assert got["netsync"] == got["rsync"]


@pytest.mark.parametrize("delete", ["--delete", "--delete-before", "--delete-after"])
def test_pull_prune_empty_dirs_deletes_what_a_pruned_dir_names(
        sshd_server: SshServer, tmp_path: Path, delete: str) -> None:
    # -m clears a pruned dir's entry (clear_file(): no name), so the deletion pass
    # removes what the destination has under that name; netsync's pulling client kept it.
    src = tmp_path / "src"
    (src / "emptydir").mkdir(parents=True)
    (src / "sub").mkdir()
    (src / "sub" / "f").write_bytes(b"f\n")
    got = {}
    for who in ("rsync", "netsync"):
        dst = tmp_path / f"dst-{who}"
        (dst / "sub").mkdir(parents=True)
        os.symlink("sub", dst / "emptydir")
        _one_side(sshd_server, tmp_path, who, "client", "pull", ["-a", "-m", delete])
        got[who] = sorted(os.listdir(dst))
    assert got["rsync"] == ["sub"]
    assert got["netsync"] == got["rsync"]


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", (32, 29))
def test_itemize_unchanged(sshd_server: SshServer, tmp_path: Path, direction: str,
                           protocol: int) -> None:
    # -ii lists unchanged files too: a push's lines come from the server's generator
    # (told by --log-format=%i%I); netsync's server printed none of them.
    got = _compare(sshd_server, tmp_path, direction, ["-a", "-ii", f"--protocol={protocol}"],
                   dest="same")
    assert b".f          " in got.stdout, got.describe()


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", (32, 30, 27))
def test_hard_links(sshd_server: SshServer, tmp_path: Path, direction: str,
                    protocol: int) -> None:
    _compare(sshd_server, tmp_path, direction, ["-aiH", f"--protocol={protocol}"])


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("delete", ["--delete", "--delete-delay"])
@pytest.mark.parametrize("dest", ["diverged", "empty"])
def test_delete_with_an_io_error_in_a_later_dir(sshd_server: SshServer, tmp_path: Path,
                                                direction: str, delete: str, dest: str) -> None:
    """-L meets a symlink loop in links/: the dirs listed before that list still get
    their deletions (its end carries the error), the later ones do not; and the
    message saying so comes even where every dir is new (rsync's delete_in_dir())."""
    _compare(sshd_server, tmp_path, direction, ["-ai", "-L", delete], rc=23, dest=dest)


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_prune_keeps_protected_dirs(sshd_server: SshServer, tmp_path: Path,
                                    direction: str) -> None:
    """-m pushed to netsync: its receiving server keeps the dirs the client's rules
    protect (and the dirs above them), as rsync's does."""
    _compare(sshd_server, tmp_path, direction,
             ["-ai", "-m", "--exclude=precious", "--filter=P keep/", "--filter=P emptydir/"],
             dest="none")


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_hard_links_delay_updates(sshd_server: SshServer, tmp_path: Path,
                                  direction: str) -> None:
    """Pushed, netsync's receiver links a group's members after the delayed renames."""
    _compare(sshd_server, tmp_path, direction, ["-aiH", "--delay-updates"], dest="none")


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", (32, 29, 27))
def test_delta(sshd_server: SshServer, tmp_path: Path, direction: str, protocol: int) -> None:
    got = _compare(sshd_server, tmp_path, direction,
                   ["-a", "--no-W", "--stats", f"--protocol={protocol}"], output="stats")
    assert b"Matched data:" in got.stdout


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("compress", [["-z"], ["-z", "--zc=zlib"], ["-z", "--zc=zstd"],
                                      ["-z", "--protocol=29"]])
def test_compression(sshd_server: SshServer, tmp_path: Path, direction: str,
                     compress: list[str]) -> None:
    _compare(sshd_server, tmp_path, direction, ["-ai", "--no-W", *compress], tree="small")


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_dry_run(sshd_server: SshServer, tmp_path: Path, direction: str) -> None:
    _compare(sshd_server, tmp_path, direction, ["-ani", "--delete"])


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_excludes(sshd_server: SshServer, tmp_path: Path, direction: str) -> None:
    _compare(sshd_server, tmp_path, direction,
             ["-ai", "--delete", "--exclude=*.txt", "--exclude=sub*/"], tree="small")


def test_missing_source_is_partial(sshd_server: SshServer, tmp_path: Path) -> None:
    """A vanished/missing source on the server side: exit 23 like rsync, message relayed."""
    a, b = _pair(tmp_path, "none", "small")
    args = ["-a", "-e", sshd_server.rsh]
    want = tc.run([tc.RSYNC], [*args, "--rsync-path=rsync",
                               f"{sshd_server.login}:{a}/nope", "dst/"], cwd=a)
    got = tc.run([tc.RSYNC], [*args, f"--rsync-path={NETSYNC_PATH}",
                              f"{sshd_server.login}:{b}/nope", "dst/"], cwd=b)
    assert want.returncode == 23
    assert got.returncode == want.returncode, got.describe()
    assert b"No such file or directory" in got.stderr, got.describe()


def test_daemon_over_ssh_refused(sshd_server: SshServer, tmp_path: Path) -> None:
    """Daemon mode is not implemented yet: a clear error, no traceback."""
    got = tc.run([tc.RSYNC], ["-a", "-e", sshd_server.rsh, f"--rsync-path={NETSYNC_PATH}",
                              f"{sshd_server.login}::mod/", str(tmp_path / "d")], cwd=tmp_path)
    assert got.returncode != 0
    assert b"Traceback" not in got.stderr, got.describe()


# --- the sans-I/O server handshake against our client handshake, in memory ----------


def _shake(client_kw: dict, server_kw: dict):
    from netsync.server_handshake import ServerHandshake
    from netsync.transport.handshake import ClientHandshake

    c = ClientHandshake(**client_kw)
    s = ServerHandshake(**server_kw)
    for _ in range(100):
        to_s, to_c = c.data_to_send(), s.data_to_send()
        if to_s:
            s.receive_data(to_s)
        if to_c:
            c.receive_data(to_c)
        if c.result is not None and s.result is not None and not to_s and not to_c:
            break
    assert c.result is not None and s.result is not None
    return c.result, s.result


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_handshake_pairs_with_client(protocol: int) -> None:
    from netsync.transport.handshake import CF_INC_RECURSE

    cn, sn = _shake({"protocol": protocol, "compress": True},
                    {"caps": "iLsfxCIvu", "compress": True, "checksum_seed": 1234})
    assert cn.protocol == sn.protocol == protocol
    assert cn.checksum_seed == sn.checksum_seed == 1234
    assert cn.checksum == sn.checksum
    assert cn.compress == sn.compress
    assert not sn.compat_flags & CF_INC_RECURSE  # declined even though 'i' was offered
    assert cn.compat_flags == sn.compat_flags
    assert sn.mplex_out and sn.mplex_in == (protocol >= 30)
    if protocol >= 30:
        assert (cn.checksum, cn.compress) == ("xxh128", "zstd")
    else:
        assert (cn.checksum, cn.compress) == ("md4_old", "zlib")


def test_handshake_without_caps_and_with_choices() -> None:
    """An old client (no -e. letters): no negotiated strings, the implied md5/zlib."""
    cn, sn = _shake({"protocol": 30, "compress": True, "checksum_names": ["md5"]},
                    {"caps": None, "compress": True})
    assert sn.compat_flags & 0x80 == 0
    assert (sn.checksum, sn.compress) == ("md5", "zlib")
    cn, sn = _shake({"checksum_choice": "md5", "compress": True, "compress_choice": "zlibx"},
                    {"caps": "Lsfxv", "checksum_choice": "md5", "compress": True,
                     "compress_choice": "zlibx"})
    assert (cn.checksum, cn.compress) == (sn.checksum, sn.compress) == ("md5", "zlibx")
    assert sn.checksum_seed != 0


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("extra", [["-aic"], ["-a", "--remove-source-files"],
                                   ["-ai", "--checksum-choice=md5"],
                                   ["-rlptiv", "--no-inc-recursive"]])
def test_more_options(sshd_server: SshServer, tmp_path: Path, direction: str,
                      extra: list[str]) -> None:
    _compare(sshd_server, tmp_path, direction, extra, tree="small")


@pytest.mark.parametrize("protocol", (31, 29))
def test_unwritable_destination_file(sshd_server: SshServer, tmp_path: Path,
                                     protocol: int) -> None:
    """The receiver cannot create its temp file: the data is skipped, exit 23 as rsync."""
    (tmp_path / "f").write_bytes(b"x" * 5000)
    (tmp_path / "g").write_bytes(b"y" * 10)
    codes = []
    for path in ("rsync", NETSYNC_PATH):
        run = tc.run([tc.RSYNC], ["-t", f"--protocol={protocol}", "-e", sshd_server.rsh,
                                  f"--rsync-path={path}", "f", "g",
                                  f"{sshd_server.login}:/proc/self/"], cwd=tmp_path)
        assert b"Traceback" not in run.stderr and b"internal error" not in run.stderr
        codes.append(run.returncode)
    assert codes == [23, 23]


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", (32, 30))
def test_secluded_args(sshd_server: SshServer, tmp_path: Path, direction: str,
                       protocol: int) -> None:
    """A -s client sends the arguments over stdin; the server reads them first."""
    _compare(sshd_server, tmp_path, direction, ["-ais", "--delete", f"--protocol={protocol}"])


@pytest.mark.parametrize("protocol", (32, 30))
def test_pull_sends_the_size_fstat_gave(sshd_server: SshServer, tmp_path: Path,
                                        protocol: int) -> None:
    # sender.c sends exactly the st_size fstat() gave when the file was opened: a
    # /proc file (size 0, yet with content when read) arrives empty from rsync's
    # server, and so it does from ours; a regular file beside it arrives whole.
    src = tmp_path / "src.txt"
    src.write_bytes(b"regular\n" * 5000)
    got = {}
    for who, path in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        dst = tmp_path / who
        dst.mkdir()
        r = tc.run([tc.RSYNC], ["-t", f"--protocol={protocol}", "-e", sshd_server.rsh,
                                f"--rsync-path={path}", f"{sshd_server.login}:/proc/version",
                                f"{sshd_server.login}:{src}", f"{dst}/"], cwd=tmp_path)
        assert r.returncode == 0, r.describe()
        got[who] = {p.name: p.read_bytes() for p in dst.iterdir()}
    assert got["netsync"] == got["rsync"]
    assert got["rsync"] == {"version": b"", "src.txt": b"regular\n" * 5000}


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_vv_uptodate_lines_reach_the_client(sshd_server: SshServer, tmp_path: Path,
                                           direction: str) -> None:
    # At -vv the receiving side's generator reports "NAME is uptodate": on a server that
    # line must travel as a message (rsync's FCLIENT), never as raw bytes on stdout,
    # where it corrupted the protocol stream (seen as "unexpected tag 108", exit 12).
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i:02d}").write_bytes(b"x" * i)
    lines = {}
    for who, path in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        dst = tmp_path / f"dst-{who}"
        tc.run([tc.RSYNC], ["-rt", f"{src}/", f"{dst}/"], cwd=tmp_path)
        for _ in range(3):
            if direction == "push":
                args = ["-rt", "-vv", "-e", sshd_server.rsh, f"--rsync-path={path}",
                        f"{src}/", f"{sshd_server.login}:{dst}/"]
            else:
                args = ["-rt", "-vv", "-e", sshd_server.rsh, f"--rsync-path={path}",
                        f"{sshd_server.login}:{src}/", f"{dst}/"]
            r = tc.run([tc.RSYNC], args, cwd=tmp_path)
            assert r.returncode == 0, r.describe()
            lines[who] = sorted(ln for ln in r.stdout.split(b"\n")
                                if ln.endswith(b" is uptodate")
                                or ln.startswith(b"delta-transmission"))
    assert lines["netsync"] == lines["rsync"]
    assert len(lines["rsync"]) == 21  # the generator's "delta-transmission enabled" too


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_files_from_with_repeated_dirs(sshd_server: SshServer, tmp_path: Path,
                                       direction: str) -> None:
    """--files-from naming a dir and its contents: the sender's list holds the dir more
    than once, the receiver drops the repeats and reports each dir once, as rsync's
    generate_files() skips the cleared entries (netsync once itemized every copy)."""
    listing = tmp_path / "list"
    listing.write_text("a\ndir/\ndir/subdir/\ndir/subdir/foo\ndir/subdir/sub2/\n")
    now = time.time_ns() - 10**9
    runs = []
    for side in ("rsync", "netsync"):
        work = tmp_path / side
        (work / "src" / "dir" / "subdir" / "sub2").mkdir(parents=True)
        (work / "src" / "dir" / "subdir" / "foo").write_text("foo\n")
        (work / "src" / "a").write_text("a\n")
        path = "rsync" if side == "rsync" else NETSYNC_PATH
        runs.append(_run(sshd_server, path, work, direction, ["-av", f"--files-from={listing}"]))
    want, got = runs
    assert want.returncode == got.returncode == 0, got.describe()
    tc.assert_same(tc.snapshot(tmp_path / "rsync", now), tc.snapshot(tmp_path / "netsync", now))
    lines = _lines(got, tmp_path / "netsync", "lines")
    assert lines == _lines(want, tmp_path / "rsync", "lines")
    assert lines.count(b"dir/") == 1, lines


@pytest.mark.parametrize("slash", ["/", ""])
def test_push_into_a_symlinked_destination_dir(sshd_server: SshServer, tmp_path: Path,
                                               slash: str) -> None:
    """main.c get_local_name(): the server chdir()s into a destination that is a
    symlink to a dir, so the link stays and the files land in its target (netsync's
    server replaced the link with a new dir)."""
    runs = []
    for side in ("rsync", "netsync"):
        work = tmp_path / side
        (work / "src").mkdir(parents=True)
        (work / "src" / "f").write_text("f\n")
        (work / "real").mkdir()
        (work / "lnk").symlink_to("real")
        path = "rsync" if side == "rsync" else NETSYNC_PATH
        runs.append(tc.run([tc.RSYNC], ["-ai", "-e", sshd_server.rsh, f"--rsync-path={path}",
                                        "src/", f"{sshd_server.login}:{work}/lnk{slash}"],
                           cwd=work))
    want, got = runs
    assert got.returncode == want.returncode == 0, got.describe()
    assert got.stdout == want.stdout
    assert (tmp_path / "netsync" / "lnk").is_symlink()
    assert (tmp_path / "netsync" / "real" / "f").read_text() == "f\n"


@pytest.mark.parametrize("where", ["local", "push", "pull"])
def test_unknown_usermap_name_is_reported_and_skipped(sshd_server: SshServer, tmp_path: Path,
                                                      where: str) -> None:
    # uidlist.c parse_name_map(): a TO name the receiver does not know is an error line
    # ("Unknown --usermap name on receiver: X", from the list's end back) and its rule is
    # left out; the transfer goes on and exits 0. netsync stopped with a usage error.
    maps = ["--usermap=0:nosuchuser-ns,daemon:nouser2-ns", "--groupmap=0:nogroup3-ns"]
    runs = {}
    for who, path in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        work = tmp_path / who
        (work / "src" / "sub").mkdir(parents=True)
        (work / "src" / "f").write_bytes(b"f\n")
        (work / "src" / "sub" / "g").write_bytes(b"g\n")
        args = ["-a", *maps]
        if where == "local":
            cmd = [tc.RSYNC] if who == "rsync" else tc.program_under_test()
            runs[who] = tc.run(cmd, [*args, "src/", "dst/"], cwd=work)
            continue
        # the receiver is netsync's: the server of a push, the client of a pull
        server = path if where == "push" else "rsync"
        args += ["-e", sshd_server.rsh, f"--rsync-path={server}"]
        if where == "push":
            args += ["src/", f"{sshd_server.login}:{work}/dst/"]
        else:
            args += [f"{sshd_server.login}:{work}/src/", "dst/"]
        cmd = [tc.RSYNC] if who == "rsync" or where == "push" else tc.program_under_test()
        runs[who] = tc.run(cmd, args, cwd=work)
    want, got = runs["rsync"], runs["netsync"]
    assert want.returncode == 0, want.describe()
    assert got.returncode == 0, got.describe()
    lines = [b"Unknown --usermap name on receiver: nouser2-ns",
             b"Unknown --usermap name on receiver: nosuchuser-ns",
             b"Unknown --groupmap name on receiver: nogroup3-ns"]
    assert [ln for ln in want.stderr.splitlines() if ln.startswith(b"Unknown")] == lines
    assert [ln for ln in got.stderr.splitlines() if ln.startswith(b"Unknown")] == lines
    assert (work / "dst" / "sub" / "g").read_bytes() == b"g\n"


@pytest.mark.parametrize("how", ["local", "push", "pull", "server-push", "server-pull"])
def test_info_stats3_shows_each_roles_heap(sshd_server: SshServer, tmp_path: Path,
                                          how: str) -> None:
    # main.c show_malloc_stats(): --info=stats3 prints a "heap statistics" block per
    # process (sender, receiver, generator) in rsync's layout; netsync printed none
    # (rsync's suite, misc-coverage).
    import re

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(b"x" * (64 + i))
    remote = f"{sshd_server.login}:"
    prog = tc.program_under_test() if how in ("local", "push", "pull") else [tc.RSYNC]
    path = "rsync" if how in ("push", "pull") else NETSYNC_PATH
    ends = {"local": [f"{src}/", f"{tmp_path}/dst/"],
            "push": [f"{src}/", f"{remote}{tmp_path}/dst/"],
            "pull": [f"{remote}{src}/", f"{tmp_path}/dst/"]}[how.replace("server-", "")]
    rsh = [] if how == "local" else ["-e", sshd_server.rsh, f"--rsync-path={path}"]
    r = tc.run(prog, ["-r", "--info=stats3", *rsh, *ends], cwd=tmp_path)
    assert r.returncode == 0, r.describe()
    out = r.stdout.decode()
    heads = re.findall(r"^\w+\[\d+\] \((?:server )?(\w+)\) heap statistics:$", out, re.M)
    assert sorted(heads) == ["generator", "receiver", "sender"], out
    rows = re.findall(r"^  (\w+): +\d+   \(([a-z +0-9]+)\)$", out, re.M)
    assert len(rows) == 33 and rows[:2] == [("arena", "bytes from sbrk"),
                                            ("ordblks", "chunks not in use")], out
    assert (tmp_path / "dst" / "f2").read_bytes() == b"x" * 66


# A name with control bytes, an invalid UTF-8 byte and a literal "\#001" (which rsync's
# client escapes as "\#134#001" so it cannot pass for an escape).
ODD = b"a\x01b\x1bc\xffd\\#001e"


def _client_text(run: tc.Run, work: Path) -> list[bytes]:
    """The client's output lines naming the odd file, the work dir neutralised and the
    server's program name ("netsync:" for ours) made rsync's."""
    out = (run.stdout + run.stderr).replace(str(work).encode(), b"WORK")
    return sorted(ln.replace(b"netsync: ", b"rsync: ", 1) for ln in out.split(b"\n")
                  if b"a\\#001b" in ln)


@pytest.mark.parametrize("stderr_opt", [[], ["--no-msgs2stderr"]])
def test_server_error_names_are_escaped_once(sshd_server: SshServer, tmp_path: Path,
                                             stderr_opt: list[str]) -> None:
    # log.c rwrite(): a server's messages carry names raw, the client escapes what it
    # prints (netsync's server escaped them too: the client showed "\#134#001").
    got = {}
    for side, path in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        work = tmp_path / side
        (work / "src").mkdir(parents=True)
        missing = os.fsdecode(bytes(work / "src") + b"/" + ODD)
        r = tc.run([tc.RSYNC], ["-a", *stderr_opt, "-e", sshd_server.rsh,
                                f"--rsync-path={path}", f"{sshd_server.login}:{missing}",
                                "dst/"], cwd=work)
        assert r.returncode == 23, r.describe()
        assert b"\x01" not in r.stderr and b"\x1b" not in r.stderr, r.describe()
        got[side] = _client_text(r, work)
    assert got["netsync"] == got["rsync"]
    assert got["rsync"] == [b'rsync: [sender] link_stat "WORK/src/a\\#001b\\#033c\\#377d'
                            b'\\#134#001e" failed: No such file or directory (2)']


@pytest.mark.parametrize("protocol", (32, 28))
def test_server_info_names_are_escaped_once(sshd_server: SshServer, tmp_path: Path,
                                            protocol: int) -> None:
    # The receiving server's generator says "NAME is uptodate" at -vv and, before
    # protocol 29, "deleting NAME" as text: raw in the message, escaped by the client.
    got = {}
    for side, path in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        work = tmp_path / side
        (work / "src").mkdir(parents=True)
        (work / "src" / os.fsdecode(ODD)).write_bytes(b"same\n")
        tc.run([tc.RSYNC], ["-a", "src/", "dst/"], cwd=work)
        (work / "dst" / os.fsdecode(ODD + b".old")).write_bytes(b"old\n")
        r = tc.run([tc.RSYNC], ["-a", "-vv", "--delete", f"--protocol={protocol}", "-e",
                                sshd_server.rsh, f"--rsync-path={path}", "src/",
                                f"{sshd_server.login}:{work}/dst/"], cwd=work)
        assert r.returncode == 0, r.describe()
        assert b"\x01" not in r.stdout and b"\x1b" not in r.stdout, r.describe()
        got[side] = _client_text(r, work)
    assert got["netsync"] == got["rsync"]
    assert got["rsync"] == [b"a\\#001b\\#033c\\#377d\\#134#001e is uptodate",
                            b"deleting a\\#001b\\#033c\\#377d\\#134#001e.old"]


def test_daemon_over_ssh_error_names_are_escaped_once(sshd_server: SshServer,
                                                      tmp_path: Path) -> None:
    # The same for a daemon run over the remote shell (host::module): its messages name
    # the file below the module, raw; the client escapes them.
    got = {}
    for side, path in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        work = tmp_path / side
        (work / "src").mkdir(parents=True)
        conf = work / "d.conf"
        conf.write_text(f"use chroot = no\n[mod]\npath = {work}/src\n")
        r = tc.run([tc.RSYNC], ["-a", "-e", sshd_server.rsh,
                                f"--rsync-path={path} --config={conf}",
                                f"{sshd_server.login}::mod/{os.fsdecode(ODD)}", "dst/"],
                   cwd=work)
        assert r.returncode == 23, r.describe()
        got[side] = _client_text(r, work)
    assert got["netsync"] == got["rsync"]
    assert got["rsync"] == [b'rsync: [sender] link_stat "a\\#001b\\#033c\\#377d\\#134#001e" '
                            b"(in mod) failed: No such file or directory (2)"]


def test_daemon_over_ssh_unknown_module_exits_5(sshd_server: SshServer, tmp_path: Path) -> None:
    # main.c: "@ERROR: Unknown module" from a daemon run over the remote shell is exit 5
    # (RERR_STARTCLIENT), whatever the remote daemon exits with (255): netsync took the
    # shell's status and exited 255, "unexplained error".
    conf = tmp_path / "d.conf"
    conf.write_text(f"use chroot = no\n[m]\n  path = {tmp_path}\n")
    got = {}
    for who, prog in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        r = tc.run(prog, ["-a", "-e", sshd_server.rsh, f"--rsync-path=rsync --config={conf}",
                          f"{sshd_server.login}::nosuchmod/", f"{tmp_path}/dst-{who}/"],
                   cwd=tmp_path)
        got[who] = (r.returncode, [ln for ln in r.stderr.splitlines()
                                   if ln.startswith(b"@ERROR")])
    assert got["rsync"] == (5, [b"@ERROR: Unknown module 'nosuchmod'"])
    assert got["netsync"] == got["rsync"]


def _one_file(sshd_server: SshServer, tmp_path: Path, who: str, path: str,
              extra: list[str]) -> tc.Run:
    """Pull one 4 KiB file, then a changed copy of it by delta, from the server."""
    src = tmp_path / "src"
    if not src.exists():
        src.mkdir()
        (src / "f").write_bytes(bytes(range(256)) * 16 + b"tail\n")
    dst = tmp_path / f"dst-{who}"
    dst.mkdir()
    (dst / "f").write_bytes(bytes(range(256)) * 16 + b"other tail\n")
    r = tc.run([tc.RSYNC], ["-rt", *extra, "-e", sshd_server.rsh, f"--rsync-path={path}",
                            f"{sshd_server.login}:{src}/f", f"{dst}/f"], cwd=tmp_path)
    assert r.returncode == 0, r.describe()
    return r


def test_vv_match_report_comes_from_the_server_sender(sshd_server: SshServer,
                                                      tmp_path: Path) -> None:
    # match.c match_report(): at -vv the sender ends with its delta totals; a server
    # sender's line reaches the client.
    lines = {}
    for who, path in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        r = _one_file(sshd_server, tmp_path, who, path, ["-vv", "--no-W", "-B", "512"])
        lines[who] = [ln for ln in r.stdout.split(b"\n") if ln.startswith(b"total: matches=")]
    assert lines["netsync"] == lines["rsync"]
    assert lines["rsync"] == [b"total: matches=8  hash_hits=8  false_alarms=0 data=5"]


def test_byte_counts_leave_out_the_handshake(sshd_server: SshServer, tmp_path: Path) -> None:
    # rsync counts what goes through its buffered I/O, which starts after
    # setup_protocol(): the versions, checksum names and seed are not in "sent" and
    # "received".  A one-file pull (one frame each way) gives the same counts.
    counts = {}
    for who, path in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        r = _one_file(sshd_server, tmp_path, who, path, ["--stats", "-W"])
        counts[who] = [ln for ln in r.stdout.split(b"\n") if ln.startswith(b"Total bytes")]
    assert counts["netsync"] == counts["rsync"]
    assert len(counts["rsync"]) == 2


@pytest.mark.parametrize("when", ["--delete-before", "--delete-after"])
def test_pruned_dirs_are_not_deleted_in(sshd_server: SshServer, tmp_path: Path,
                                        when: str) -> None:
    """generator.c do_delete_pass(): a dir -m pruned (cleared on the receiving side) is
    not active, so nothing is deleted in it; its extraneous copy goes (or stays, its
    protected files keep it) from its parent, once.  netsync as the server deleted in
    every pruned dir too, and printed each "cannot delete non-empty directory" chain
    again for every level of a deep one."""
    src = tmp_path / "src"
    deep = src / "deep" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "only.txt").write_text("t")
    (src / "keep").write_text("k")
    out = {}
    for who in ("rsync", "netsync"):
        dst = tmp_path / f"dst-{who}"
        trees.copy_tree(src, dst)
        (dst / "deep" / "a" / "stale").write_text("s")
        path = NETSYNC_PATH if who == "netsync" else "rsync"
        r = tc.run([tc.RSYNC], ["-r", when, "-m", "--exclude=*.txt", "-e", sshd_server.rsh,
                                f"--rsync-path={path}", f"{src}/",
                                f"{sshd_server.login}:{dst}/"], cwd=tmp_path)
        assert r.returncode == 0, r.describe()
        out[who] = (r.stdout.splitlines(), sorted(os.listdir(dst / "deep" / "a")))
    assert out["netsync"] == out["rsync"]
    assert out["rsync"][0] == [
        b"cannot delete non-empty directory: deep/a/b/c",
        b"cannot delete non-empty directory: deep/a/b/c",
        b"cannot delete non-empty directory: deep/a/b",
        b"cannot delete non-empty directory: deep/a/b",
        b"cannot delete non-empty directory: deep/a",
        b"cannot delete non-empty directory: deep/a",
        b"cannot delete non-empty directory: deep"]


@pytest.mark.parametrize("ours,direction", [("server", "push"), ("client", "pull")])
def test_dry_run_into_a_missing_dest_with_hard_links_and_link_dest(
        sshd_server: SshServer, tmp_path: Path, ours: str, direction: str) -> None:
    """-n -H into a destination that does not exist yet, with --link-dest=../cmp:
    a hard link's later member is itemized as a link to the one "sent" (hlink.c: a dry
    run finishes the group at once; netsync as the server itemized it as a transfer),
    and the basis dir is looked for beside the missing dest, one "../" dropped (main.c
    check_alt_basis_dirs(); netsync receiving over the wire looked through the dest)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a\n")
    os.link(src / "a", src / "b")
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "b").write_text("a\n")
    out = {}
    for who in ("rsync", "netsync"):
        prog = tc.program_under_test() if who == "netsync" and ours == "client" else [tc.RSYNC]
        path = NETSYNC_PATH if who == "netsync" and ours == "server" else "rsync"
        dst = tmp_path / "dst"
        ends = ([f"{src}/", f"{sshd_server.login}:{dst}/"] if direction == "push"
                else [f"{sshd_server.login}:{src}/", f"{dst}/"])
        r = tc.run(prog, ["-n", "-aiH", "--link-dest=../cmp", "-e", sshd_server.rsh,
                          f"--rsync-path={path}", *ends], cwd=tmp_path)
        assert r.returncode == 0, r.describe()
        assert not dst.exists()
        out[who] = (r.stdout.splitlines(), r.stderr.splitlines())
    assert out["netsync"] == out["rsync"]
    assert out["rsync"][0][-1] == b"hf+++++++++ a => b"
    assert out["rsync"][1] == []  # (../cmp found beside the missing dest)
