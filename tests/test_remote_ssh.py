"""netsync as an rsync client over ssh against a stock ``rsync --server``.

Every case runs the same transfer twice: stock rsync -> rsync, and netsync ->
rsync, each in its own copy of a work dir, and requires the same exit code and
the same resulting trees (names, types, contents, modes, mtimes, symlinks,
hard links).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import treecompare as tc
import trees
from interop import peers
from interop.peers import SshServer

sshd_server = peers.sshd_server  # the session fixture

PROTOCOLS = (32, 31, 30, 29, 27)


def _pair(tmp_path: Path, dest: str, tree: str = "mixed") -> tuple[Path, Path]:
    base = tmp_path / "base"
    trees.make_tree(base / "src", tree)
    trees.make_dest(base / "src", base / "dst", dest)
    a, b = tmp_path / "rsync", tmp_path / "netsync"
    for w in (a, b):
        trees.copy_tree(base, w)
    shutil.rmtree(base)
    return a, b


def _transfer(ssh: SshServer, cmd: list[str], work: Path, direction: str,
              extra: list[str]) -> tc.Run:
    if direction == "push":
        args = [*extra, "-e", ssh.rsh, "src/", f"{ssh.login}:{work}/dst/"]
    else:
        args = [*extra, "-e", ssh.rsh, f"{ssh.login}:{work}/src/", "dst/"]
    return tc.run(cmd, args, cwd=work)


def _compare(ssh: SshServer, tmp_path: Path, direction: str, extra: list[str],
             dest: str = "diverged", tree: str = "mixed", rc: int = 0) -> tc.Run:
    a, b = _pair(tmp_path, dest, tree)
    now = time.time_ns() - 10**9
    want = _transfer(ssh, [tc.RSYNC], a, direction, extra)
    got = _transfer(ssh, tc.program_under_test(), b, direction, extra)
    assert want.returncode == rc, want.describe()
    assert got.returncode == want.returncode, got.describe()
    assert b"Traceback" not in got.stderr, got.describe()
    tc.assert_same(tc.snapshot(a, now), tc.snapshot(b, now))
    return got


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_archive_each_protocol(sshd_server: SshServer, tmp_path: Path, direction: str,
                               protocol: int) -> None:
    _compare(sshd_server, tmp_path, direction, ["-a", f"--protocol={protocol}"],
             dest="none")


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", (*PROTOCOLS, 28))
def test_itemize_each_protocol(sshd_server: SshServer, tmp_path: Path, direction: str,
                               protocol: int) -> None:
    """-i lines as rsync's, per protocol.  Before 29 the sender sends no item flags, so a
    pull's receiver logs each transfer as ">f?????????"; rsync's generator prints the
    other lines meanwhile, in another process: there the lines are compared as a set."""
    a, b = _pair(tmp_path, "diverged", "small")
    extra = ["-ai", "--delete", f"--protocol={protocol}"]
    want = _transfer(sshd_server, [tc.RSYNC], a, direction, extra)
    got = _transfer(sshd_server, tc.program_under_test(), b, direction, extra)
    assert got.returncode == want.returncode == 0, got.describe()
    want_lines, got_lines = tc.output_lines(want.stdout), tc.output_lines(got.stdout)
    assert any(ln.startswith((b">f", b"<f")) for ln in want_lines), want.describe()
    if protocol < 29 and direction == "pull":
        assert sorted(got_lines) == sorted(want_lines)
    else:
        tc.assert_same_output(want_lines, got_lines)


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", (31, 29))
def test_diverged_delta_delete(sshd_server: SshServer, tmp_path: Path, direction: str,
                               protocol: int) -> None:
    _compare(sshd_server, tmp_path, direction,
             ["-a", "--no-W", "--delete", f"--protocol={protocol}"])


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("compressor", ["zstd", "lz4", "zlibx", "zlib"])
def test_compression(sshd_server: SshServer, tmp_path: Path, direction: str,
                     compressor: str) -> None:
    _compare(sshd_server, tmp_path, direction, ["-a", "--no-W", "-z", f"--zc={compressor}"],
             tree="small")


@pytest.mark.parametrize(("direction", "checksum"), [
    ("push", "xxh128"), ("pull", "xxh3"), ("push", "xxh64"), ("pull", "md5"), ("push", "md4"),
    ("pull", "md4")])
def test_checksum_choice(sshd_server: SshServer, tmp_path: Path, direction: str,
                         checksum: str) -> None:
    _compare(sshd_server, tmp_path, direction, ["-a", "--no-W", f"--checksum-choice={checksum}"],
             tree="small")


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_hard_links(sshd_server: SshServer, tmp_path: Path, direction: str) -> None:
    _compare(sshd_server, tmp_path, direction, ["-aH", "--delete"])


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("protocol", (32, 29))
def test_cvs_exclude_delete_excluded(sshd_server: SshServer, tmp_path: Path, direction: str,
                                     protocol: int) -> None:
    """-C --delete-excluded: a pulling client adds -C's rules after sending its list, so
    they still protect the dest's *.o, core, *~ (rsync keeps them; netsync deleted
    them); pushed, rsync's receiving server deletes them."""
    got = _compare(sshd_server, tmp_path, direction,
                   ["-ai", "-C", "--delete-excluded", f"--protocol={protocol}"])
    assert (b"*deleting   sub/extra.o" in got.stdout) == (direction == "push"), got.describe()


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_prune_keeps_protected_dirs(sshd_server: SshServer, tmp_path: Path,
                                    direction: str) -> None:
    """-m: a dir the receiver protects is kept, and the dirs above it."""
    _compare(sshd_server, tmp_path, direction,
             ["-ai", "-m", "--exclude=precious", "--filter=P keep/", "--filter=P emptydir/"],
             dest="none")


@pytest.mark.parametrize(("direction", "protocol"), [("push", 31), ("pull", 31), ("pull", 29)])
def test_checksum_mode(sshd_server: SshServer, tmp_path: Path, direction: str,
                       protocol: int) -> None:
    _compare(sshd_server, tmp_path, direction, ["-ac", f"--protocol={protocol}"])


@pytest.mark.parametrize("extra", [[], ["-r"], ["-a"], ["-rl", "--protocol=29"]])
def test_remote_listing(sshd_server: SshServer, tmp_path: Path, extra: list[str]) -> None:
    """``netsync host:path`` with no destination lists the remote files like rsync."""
    trees.make_tree(tmp_path / "src", "small")
    args = [*extra, "--no-inc-recursive", "-e", sshd_server.rsh,
            f"{sshd_server.login}:{tmp_path}/src/"]
    want = tc.run([tc.RSYNC], args, cwd=tmp_path)
    got = tc.run(tc.program_under_test(), args, cwd=tmp_path)
    assert got.returncode == want.returncode == 0, got.describe()
    assert got.stdout == want.stdout


def test_push_itemize_and_deletions(sshd_server: SshServer, tmp_path: Path) -> None:
    """-i lines (incl. MSG_DELETED 'deleting' lines) match rsync without inc-recursion."""
    extra = ["-ai", "--delete", "--no-inc-recursive"]
    a, b = _pair(tmp_path, "diverged")
    want = _transfer(sshd_server, [tc.RSYNC], a, "push", extra)
    got = _transfer(sshd_server, tc.program_under_test(), b, "push", extra)
    assert got.returncode == want.returncode == 0, got.describe()
    assert sorted(tc.output_lines(got.stdout)) == sorted(tc.output_lines(want.stdout))
    tc.assert_same(tc.snapshot(a), tc.snapshot(b))


def _edit(data: bytes, how: str) -> bytes:
    mid = len(data) // 2
    return {
        "middle": data[:mid] + b"CHANGED" + data[mid + 7:],
        "start": b"NEWSTART" + data[8:],
        "end": data[:-5] + b"tail!",
        "grown": data + b"more data at the end" * 100,
        "truncated": data[: len(data) // 3],
        "inserted": data[:mid] + b"I" * 333 + data[mid:],
        "deleted": data[:mid] + data[mid + 1234:],
    }[how]


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("how", ["middle", "start", "end", "grown", "truncated", "inserted",
                                 "deleted"])
def test_delta_edits(sshd_server: SshServer, tmp_path: Path, direction: str, how: str) -> None:
    import random

    sizes = {"f0": 0, "f1": 1, "f699": 699, "f700": 700, "f701": 701, "f1401": 1401,
             "fbig": 700_001}
    base = tmp_path / "base"
    for d in ("src", "dst"):
        (base / d).mkdir(parents=True)
    for name, size in sizes.items():
        basis = random.Random(name).randbytes(size)
        (base / "dst" / name).write_bytes(basis)
        os.utime(base / "dst" / name, (1_500_000_000, 1_500_000_000))
        (base / "src" / name).write_bytes(_edit(basis, how) if size > 50 else basis + b"x")
    for side in ("rsync", "netsync"):
        trees.copy_tree(base, tmp_path / side)
    a, b = tmp_path / "rsync", tmp_path / "netsync"
    # Without inc-recursion on both sides: with it, stock rsync may re-touch dst/ late.
    extra = ["-rt", "--no-W", "--stats", "--no-inc-recursive"]
    now = time.time_ns()
    want = _transfer(sshd_server, [tc.RSYNC], a, direction, extra)
    got = _transfer(sshd_server, tc.program_under_test(), b, direction, extra)
    assert got.returncode == want.returncode == 0, got.describe()
    for name in sizes:
        assert (b / "dst" / name).read_bytes() == (b / "src" / name).read_bytes(), name
    # The top dir's mtime is left out here: see the report (rsync re-times dst/ differently
    # in this -rt case); the -a cases above compare it.
    snap_a, snap_b = tc.snapshot(a, now), tc.snapshot(b, now)
    for snap in (snap_a, snap_b):
        snap.pop(b"dst")
    tc.assert_same(snap_a, snap_b)
    def delta_lines(out: bytes) -> list[bytes]:
        return [line for line in out.splitlines()
                if line.startswith((b"Matched data", b"Literal data"))]
    assert delta_lines(got.stdout) == delta_lines(want.stdout)

    def labels(out: bytes) -> list[bytes]:  # the --stats lines there are, in order
        return [line.partition(b":")[0] for line in out.splitlines() if b": " in line]
    assert labels(got.stdout) == labels(want.stdout)


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_remove_source_files(sshd_server: SshServer, tmp_path: Path, direction: str) -> None:
    """MSG_SUCCESS: the sending side removes what arrived (the source tree is compared too)."""
    _compare(sshd_server, tmp_path, direction, ["-a", "--remove-source-files"], dest="none",
             tree="small")


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_secluded_args(sshd_server: SshServer, tmp_path: Path, direction: str) -> None:
    """-s: the options and paths after the flags go over the connection, not ssh's
    command line (names with spaces and shell characters need no quoting)."""
    got = _compare(sshd_server, tmp_path, direction, ["-ais", "--delete"])
    assert got.stdout, got.describe()


@pytest.mark.parametrize("inc", [[], ["--no-inc-recursive"]])
@pytest.mark.parametrize("slash", ["/", ""])
def test_pull_into_a_symlinked_destination_dir(sshd_server: SshServer, tmp_path: Path,
                                               slash: str, inc: list[str]) -> None:
    """A local destination that is a symlink to a dir is followed, as rsync chdir()s
    into it (netsync's pull replaced the link with a new dir)."""
    runs = []
    for side, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        work = tmp_path / side
        (work / "src").mkdir(parents=True)
        (work / "src" / "f").write_text("f\n")
        (work / "real").mkdir()
        (work / "lnk").symlink_to("real")
        runs.append(tc.run(cmd, ["-ai", *inc, "-e", sshd_server.rsh,
                                 f"{sshd_server.login}:{work}/src/", f"lnk{slash}"], cwd=work))
    want, got = runs
    assert got.returncode == want.returncode == 0, got.describe()
    assert got.stdout == want.stdout
    assert (tmp_path / "netsync" / "lnk").is_symlink()
    assert (tmp_path / "netsync" / "real" / "f").read_text() == "f\n"


@pytest.mark.parametrize("direction", ["push", "pull"])
@pytest.mark.parametrize("delete", ["--delete", "--delete-delay"])
@pytest.mark.parametrize("dest", ["diverged", "empty"])
def test_delete_with_an_io_error_in_a_later_dir(sshd_server: SshServer, tmp_path: Path,
                                                direction: str, delete: str, dest: str) -> None:
    """netsync as the client of a stock server, -L meeting a symlink loop in links/:
    the dirs listed before that list keep their deletions, and "IO error encountered
    -- skipping file deletion" comes as with rsync, also where every dir is new (a
    pulling netsync said nothing there; with -b its top dir's deletions go first)."""
    a, b = _pair(tmp_path, dest)
    now = time.time_ns() - 10**9
    extra = ["-a", "-L", delete, "-b"]
    want = _transfer(sshd_server, [tc.RSYNC], a, direction, extra)
    got = _transfer(sshd_server, tc.program_under_test(), b, direction, extra)
    assert want.returncode == 23, want.describe()
    assert got.returncode == want.returncode, got.describe()
    tc.assert_same(tc.snapshot(a, now), tc.snapshot(b, now))
    tc.assert_same_output(tc.output_lines(want.stdout.replace(os.fsencode(a), b"WORK")),
                          tc.output_lines(got.stdout.replace(os.fsencode(b), b"WORK")))
