"""Batch mode (--write-batch, --only-write-batch, --read-batch) against Debian's rsync.

A batch written by one program is replayed by the other onto a copy of the old
destination; the result must be the tree a direct ``rsync`` run gives (names, types,
contents, modes, mtimes, symlinks, hard links).  A truncated or garbage batch must end
with rsync's exit code, no traceback and no half-written file.  --only-write-batch,
locally, pushed (over ssh to rsync or netsync servers, to rsync and netsync daemons) and
pulled, leaves the destination alone and records the delta rsync records.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import treecompare as tc
import trees
from interop import peers
from interop.peers import RsyncDaemon, SshServer

rsyncd = peers.rsyncd  # the session fixture

RSYNC = [tc.RSYNC]


def _setup(tmp_path: Path, dest: str, tree: str = "mixed") -> Path:
    """tmp_path/src and tmp_path/old (the destination before any run)."""
    trees.make_tree(tmp_path / "src", tree)
    trees.make_dest(tmp_path / "src", tmp_path / "old", dest)
    return tmp_path


def _copy_old(work: Path, name: str) -> Path:
    if (work / "old").exists():
        trees.copy_tree(work / "old", work / name)
    return work / name


def _ok(r: tc.Run) -> tc.Run:
    assert r.returncode == 0, r.describe()
    assert b"Traceback" not in r.stderr, r.describe()
    return r


def _reference(work: Path, opts: list[str]) -> dict:
    """The tree a plain rsync run makes of the old destination."""
    _copy_old(work, "ref")
    _ok(tc.run(RSYNC, [*opts, "src/", "ref/"], work))
    return tc.snapshot(work / "ref")


OPTION_SETS = [["-a"], ["-aH", "--delete"], ["-az", "--inplace"]]


@pytest.mark.parametrize("dest", ["none", "diverged"])
@pytest.mark.parametrize("opts", OPTION_SETS, ids=" ".join)
def test_netsync_batch_replayed_by_rsync(tmp_path: Path, sync_cmd: list[str], dest: str,
                                         opts: list[str]) -> None:
    work = _setup(tmp_path, dest)
    want = _reference(work, opts)
    _copy_old(work, "wrote")
    _ok(tc.run(sync_cmd, [*opts, "--write-batch=B", "src/", "wrote/"], work))
    tc.assert_same(want, tc.snapshot(work / "wrote"), what="--write-batch destination")
    _copy_old(work, "replay")
    _ok(tc.run(RSYNC, [*opts, "--read-batch=B", "replay/"], work))
    tc.assert_same(want, tc.snapshot(work / "replay"), what="rsync --read-batch result")


@pytest.mark.parametrize("dest", ["none", "diverged"])
@pytest.mark.parametrize("opts", [["-a"], ["-aH", "--delete", "--no-inc-recursive"],
                                  ["-az", "--inplace"], ["-a", "--delete"]], ids=" ".join)
def test_rsync_batch_replayed_by_netsync(tmp_path: Path, sync_cmd: list[str], dest: str,
                                         opts: list[str]) -> None:
    work = _setup(tmp_path, dest)
    want = _reference(work, opts)
    _copy_old(work, "wrote")
    _ok(tc.run(RSYNC, [*opts, "--write-batch=B", "src/", "wrote/"], work))
    _copy_old(work, "replay")
    _ok(tc.run(sync_cmd, [*opts, "--read-batch=B", "replay/"], work))
    tc.assert_same(want, tc.snapshot(work / "replay"), what="--read-batch result")


@pytest.mark.parametrize("dest", ["none", "diverged"])
def test_incremental_hard_link_batch(tmp_path: Path, sync_cmd: list[str], dest: str) -> None:
    """rsync writes -H batches with incremental recursion (a group's members in several
    lists); replayed, they make rsync's tree and print rsync's lines."""
    work = _setup(tmp_path, dest)
    want = _reference(work, ["-aH", "--delete"])
    _copy_old(work, "wrote")
    _ok(tc.run(RSYNC, ["-aH", "--delete", "--write-batch=B", "src/", "wrote/"], work))
    runs = {}
    for prog, tag in ((RSYNC, "r"), (sync_cmd, "n")):
        replay = _copy_old(work, "replay")  # (the same name: it is in the output)
        runs[tag] = _ok(tc.run(prog, ["-aHv", "--delete", "--read-batch=B", "replay/"],
                               work))
        tc.assert_same(want, tc.snapshot(replay), what=f"{tag} --read-batch result")
        replay.rename(work / f"replay-{tag}")
    tc.assert_same_output(tc.output_lines(runs["r"].stdout), tc.output_lines(runs["n"].stdout))


@pytest.mark.parametrize("proto", [31, 30, 29, 27])
def test_batches_of_older_protocols(tmp_path: Path, sync_cmd: list[str], proto: int) -> None:
    work = _setup(tmp_path, "diverged")
    opts = ["-a", f"--protocol={proto}"]
    want = _reference(work, opts)  # (nanoseconds only from 31)
    for writer, reader, tag in ((RSYNC, sync_cmd, "r"), (sync_cmd, RSYNC, "n")):
        _copy_old(work, f"wrote-{tag}")
        _ok(tc.run(writer, [*opts, f"--write-batch=B{tag}", "src/", f"wrote-{tag}/"], work))
        _copy_old(work, f"replay-{tag}")
        _ok(tc.run(reader, ["-a", f"--read-batch=B{tag}", f"replay-{tag}/"], work))
        tc.assert_same(want, tc.snapshot(work / f"replay-{tag}"), what=f"replay of B{tag}")


def test_delta_batch_both_ways(tmp_path: Path, sync_cmd: list[str]) -> None:
    """A changed file goes as a delta against the old destination, and replays onto it."""
    _delta_setup(tmp_path)
    want = _reference(tmp_path, ["-a"])
    # (rsync leaves the top dir's mtime as the rename into it made it: not compared)
    want.pop(b".")
    for writer, reader, tag in ((sync_cmd, RSYNC, "n"), (RSYNC, sync_cmd, "r")):
        _copy_old(tmp_path, f"wrote-{tag}")
        _ok(tc.run(writer, ["-a", f"--write-batch=B{tag}", "src/", f"wrote-{tag}/"], tmp_path))
        size = (tmp_path / f"B{tag}").stat().st_size
        assert size < 64 * 1024, f"B{tag} is {size} bytes: not a delta"
        _copy_old(tmp_path, f"replay-{tag}")
        _ok(tc.run(reader, ["-a", f"--read-batch=B{tag}", f"replay-{tag}/"], tmp_path))
        got = tc.snapshot(tmp_path / f"replay-{tag}")
        got.pop(b".")
        tc.assert_same(want, got, what=f"replay of B{tag}")
    # Replayed onto something else than the old destination, the delta cannot apply.
    (tmp_path / "fresh").mkdir()
    r = tc.run(sync_cmd, ["-a", "--read-batch=Bn", "fresh/"], tmp_path)
    assert r.returncode != 0 and b"Traceback" not in r.stderr, r.describe()
    assert os.listdir(tmp_path / "fresh") == []


def test_only_write_batch_leaves_destination(tmp_path: Path, sync_cmd: list[str]) -> None:
    work = _setup(tmp_path, "diverged")
    want = _reference(work, ["-aH"])
    dest = _copy_old(work, "dest")
    before = tc.snapshot(dest)
    r = _ok(tc.run(sync_cmd, ["-aH", "-v", "--only-write-batch=B", "src/", "dest/"], work))
    assert r.stdout.rstrip().endswith(b"(BATCH ONLY)"), r.describe()
    tc.assert_same(before, tc.snapshot(dest), what="destination after --only-write-batch")
    _ok(tc.run(sync_cmd, ["-aH", "--only-write-batch=B2", "src/", "missing/"], work))
    assert not (work / "missing").exists()
    _ok(tc.run(RSYNC, ["-aH", "src/", "ref2/"], work))
    want2 = tc.snapshot(work / "ref2")
    for reader, tag in ((RSYNC, "r"), (sync_cmd, "n")):
        replay = _copy_old(work, f"replay-{tag}")
        _ok(tc.run(reader, ["-aH", "--read-batch=B", f"{replay.name}/"], work))
        tc.assert_same(want, tc.snapshot(replay), what=f"{tag} replay of B")
        _ok(tc.run(reader, ["-aH", "--read-batch=B2", f"new-{tag}/"], work))
        tc.assert_same(want2, tc.snapshot(work / f"new-{tag}"), what=f"{tag} replay of B2")


def test_shell_script(tmp_path: Path, sync_cmd: list[str]) -> None:
    """FILE.sh is rsync's, but for the program that wrote it; run, it replays the batch."""
    work = _setup(tmp_path, "none", tree="small")
    dest = "d e'`x`$(y)/"
    args = ["-a", "-v", "--write-batch", "B{}", "--exclude=*.o", "--exclude", "tmp/",
            "-f", "+ keep", "--delete", "src/", dest]
    _ok(tc.run(RSYNC, [a.format("r") for a in args], work))
    shutil.rmtree(work / dest)
    _ok(tc.run(sync_cmd, [a.format("n") for a in args], work))
    assert sorted(os.listdir(work)) == sorted(["Br", "Br.sh", "Bn", "Bn.sh", "src", dest[:-1]])
    rsync_sh = (work / "Br.sh").read_bytes()
    ours = (work / "Bn.sh").read_bytes()
    prog = b"'/usr/bin/rsync' "
    assert rsync_sh.startswith(prog)
    assert rsync_sh.count(b"'Br'") == 1
    tail = rsync_sh[len(prog):].replace(b"'Br'", b"'Bn'")
    assert ours.endswith(b" " + tail), (ours, rsync_sh)
    assert tail.startswith(b"--filter='._-' '-a' '-v' --read-batch 'Bn' '--delete' ${1:-")
    assert tail.endswith(b"<<'#E#'\n- *.o\n- tmp/\n+ keep\n#E#\n")
    assert os.access(work / "Bn.sh", os.X_OK)
    p = subprocess.run(["sh", "Bn.sh", "replay/"], cwd=work, env=tc.sync_env(),
                       capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    tc.assert_same(tc.snapshot(work / dest), tc.snapshot(work / "replay"), what="sh Bn.sh")
    assert not list(work.glob("x*")) and not (work / "y").exists()


def test_filter_with_newline_refused(tmp_path: Path, sync_cmd: list[str]) -> None:
    work = _setup(tmp_path, "none", tree="small")
    r = tc.run(sync_cmd, ["-a", "--write-batch=B", "--filter=- a\n#E#\ntouch PWNED",
                          "src/", "dest/"], work)
    assert r.returncode == 1, r.describe()
    assert b"cannot write a filter rule containing a newline" in r.stderr
    subprocess.run(["sh", "B.sh"], cwd=work, env=tc.sync_env(), capture_output=True,
                   timeout=120)
    assert not (work / "PWNED").exists()


def test_read_batch_from_stdin(tmp_path: Path, sync_cmd: list[str]) -> None:
    work = _setup(tmp_path, "none")
    want = _reference(work, ["-a"])
    _ok(tc.run(RSYNC, ["-a", "--write-batch=B", "src/", "wrote/"], work))
    with open(work / "B", "rb") as f:
        p = subprocess.run([*sync_cmd, "-a", "--read-batch=-", "replay/"], cwd=work,
                           env=tc.sync_env(), stdin=f, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    tc.assert_same(want, tc.snapshot(work / "replay"), what="--read-batch=- result")


def test_read_batch_refusals(tmp_path: Path, sync_cmd: list[str]) -> None:
    """Exit codes as rsync's for what it refuses up front."""
    work = _setup(tmp_path, "none", tree="small")
    _ok(tc.run(RSYNC, ["-a", "--write-batch=B", "src/", "wrote/"], work))
    cases = [
        ["-a", "--read-batch=missing", "d1/"],  # 11: open error
        ["-a", "--read-batch=src", "d2/"],  # 11: not a regular file
        ["-a", "--read-batch=B", "host:d3/"],  # 1: remote destination
        ["-a", "--read-batch=B", "--write-batch=C", "d4/"],  # 1
        ["-a", "--read-batch=B", "--files-from=/dev/null", "d5/"],  # 1
    ]
    for args in cases:
        want = tc.run(RSYNC, args, work)
        got = tc.run(sync_cmd, args, work)
        assert got.returncode == want.returncode, (got.describe(), want.describe())
        assert b"Traceback" not in got.stderr
    assert not any((work / f"d{i}").exists() for i in range(1, 6))


def _assert_nothing_half_written(src: Path, dest: Path) -> None:
    """Every file in dest is complete (equal to the source's); no temp file is left."""
    for root, _dirs, files in os.walk(dest):
        for name in files:
            path = Path(root) / name
            rel = path.relative_to(dest)
            assert (src / rel).exists() or (src / rel).is_symlink(), f"left over: {rel}"
            if path.is_file() and not path.is_symlink():
                assert path.read_bytes() == (src / rel).read_bytes(), f"half-written: {rel}"


def test_truncated_batch(tmp_path: Path, sync_cmd: list[str]) -> None:
    work = _setup(tmp_path, "none", tree="big")
    _ok(tc.run(RSYNC, ["-a", "--write-batch=B", "src/", "wrote/"], work))
    data = (work / "B").read_bytes()
    for i, cut in enumerate((0, 2, 7, 100, len(data) // 3, len(data) // 2, len(data) - 1)):
        (work / f"T{i}").write_bytes(data[:cut])
        r = tc.run(sync_cmd, ["-a", f"--read-batch=T{i}", f"d{i}/"], work)
        assert r.returncode == 12, r.describe()
        assert b"connection unexpectedly closed" in r.stderr, r.describe()
        assert b"Traceback" not in r.stderr, r.describe()
        if (work / f"d{i}").exists():
            _assert_nothing_half_written(work / "src", work / f"d{i}")


def test_garbage_batch(tmp_path: Path, sync_cmd: list[str]) -> None:
    work = _setup(tmp_path, "none", tree="small")
    _ok(tc.run(RSYNC, ["-a", "--write-batch=B", "src/", "wrote/"], work))
    head = (work / "B").read_bytes()[:14]  # flags, protocol, compat flags, seed
    # A nonsense protocol number: rsync's own message and exit code (2).
    (work / "G1").write_bytes(b"\x9f\0\0\0\x77\x77\x77\x77" + os.urandom(64))
    want = tc.run(RSYNC, ["-a", "--read-batch=G1", "r1/"], work)
    got = tc.run(sync_cmd, ["-a", "--read-batch=G1", "d1/"], work)
    assert got.returncode == want.returncode == 2, (got.describe(), want.describe())
    assert got.stderr.splitlines()[0] == want.stderr.splitlines()[0]
    assert not (work / "d1").exists()
    # A valid header, then noise: an error, never a traceback or a hang.  (Seeded: noise
    # that happens to read as an empty list and a clean end is a good batch to rsync too.)
    for i in range(8):
        noise = bytearray(random.Random(i).randbytes(50 + 300 * i))
        noise[0] |= 1  # not the end of the list at once
        (work / f"N{i}").write_bytes(head + noise)
        r = tc.run(sync_cmd, ["-a", f"--read-batch=N{i}", f"n{i}/"], work, timeout=60)
        assert 0 < r.returncode < 128, r.describe()
        assert b"Traceback" not in r.stderr, r.describe()


@pytest.mark.parametrize("ignore", [[], ["--ignore-errors"]], ids=["", "ignore-errors"])
def test_sender_io_error_in_batch(tmp_path: Path, sync_cmd: list[str], ignore) -> None:
    """The list's end carries the sender's I/O errors: they set the exit code (23 over
    24 over 25, vanished files a warning) unless --ignore-errors (flist.c recv_file_list())."""
    work = _setup(tmp_path, "none", tree="small")
    _ok(tc.run(RSYNC, ["-a", "--write-batch=B", "src/", "wrote/"], work))
    head = (work / "B").read_bytes()[:14]
    for err in (1, 2, 4, 6, 7):
        # An empty list ended with the error bits, the empty uid and gid lists, the end.
        (work / "E").write_bytes(head + b"\0" + bytes([err]) + b"\0" * 4)
        want = tc.run(RSYNC, ["-a", *ignore, "--read-batch=E", "r/"], work)
        got = tc.run(sync_cmd, ["-a", *ignore, "--read-batch=E", "n/"], work)
        assert got.returncode == want.returncode, (err, got.describe(), want.describe())
        code = 23 if err & 1 else 24 if err & 2 else 25
        assert got.returncode == (0 if ignore else code), got.describe()
        assert _last_line(got, "netsync") == _last_line(want, "rsync"), \
            (got.describe(), want.describe())


def _last_line(r: tc.Run, prog: str) -> str:
    """The closing line, without rsync's "at main.c(N) [who=version]" and the name."""
    lines = r.stderr.decode().splitlines()
    return lines[-1].split(" at main.c")[0].replace(prog, "X", 1) if lines else ""


def test_daemon_pull_and_push_batches(tmp_path: Path, sync_cmd: list[str],
                                      rsyncd: RsyncDaemon) -> None:
    """--write-batch records the stream of a pull from and a push to an rsync daemon."""
    work = _setup(tmp_path, "none", tree="small")  # (the module munges symlinks)
    want = _reference(work, ["-a"])
    sub = f"batch-{os.getpid()}-{tmp_path.name}"
    _ok(tc.run(RSYNC, ["-a", "src/", rsyncd.url(f"open/{sub}-from/")], work))
    _ok(tc.run(sync_cmd, ["-a", "--write-batch=Bpull", rsyncd.url(f"open/{sub}-from/"),
                          "pulled/"], work))
    tc.assert_same(want, tc.snapshot(work / "pulled"), what="pulled tree")
    _ok(tc.run(sync_cmd, ["-a", "--write-batch=Bpush", "src/", rsyncd.url(f"open/{sub}-to/")],
               work))
    tc.assert_same(want, tc.snapshot(rsyncd.modules["open"] / f"{sub}-to"), what="pushed tree")
    for batch in ("Bpull", "Bpush"):
        for reader, tag in ((RSYNC, "r"), (sync_cmd, "n")):
            _ok(tc.run(reader, ["-a", f"--read-batch={batch}", f"{batch}-{tag}/"], work))
            tc.assert_same(want, tc.snapshot(work / f"{batch}-{tag}"),
                           what=f"{tag} replay of {batch}")


def test_replay_onto_another_destination(tmp_path: Path, sync_cmd: list[str]) -> None:
    """receiver.c gen_wants_ndx(): replayed onto a tree other than the one it was made
    against, a batch updates what it can and names what it has no update for, as rsync."""
    work = _setup(tmp_path, "diverged")
    _copy_old(work, "wrote")
    _ok(tc.run(RSYNC, ["-a", "--write-batch=B", "src/", "wrote/"], work))
    want = tc.run(RSYNC, ["-a", "--read-batch=B", "r/"], work)
    got = tc.run(sync_cmd, ["-a", "--read-batch=B", "n/"], work)
    assert want.returncode == got.returncode == 23, (want.describe(), got.describe())
    tail = b" (code 23)"

    def notes(err: bytes) -> list[bytes]:
        return [ln for ln in err.splitlines() if not ln.endswith(tail) and tail not in ln]

    assert notes(got.stderr) == notes(want.stderr)
    assert any(ln.startswith(b"(No batched update for ") for ln in notes(want.stderr))
    tc.assert_same(tc.snapshot(work / "r"), tc.snapshot(work / "n"), what="replayed trees")


@pytest.mark.parametrize("writer", ["rsync", "netsync"])
@pytest.mark.parametrize("dry", [False, True], ids=["real", "dry-run"])
def test_replay_output_matches_rsync(tmp_path: Path, sync_cmd: list[str], writer: str,
                                     dry: bool) -> None:
    """-v lines and --stats block of a replay (and of a dry-run one, which leaves the
    tree alone).  The list times come from the batch, so they match too; rsync counts
    the data a dry run reads past, and no list bytes read from a batch."""
    work = _setup(tmp_path, "diverged")
    _copy_old(work, "wrote")
    _ok(tc.run(RSYNC if writer == "rsync" else sync_cmd,
               ["-a", "--write-batch=B", "src/", "wrote/"], work))
    extra = ["-n", "--stats"] if dry else ["--stats"]
    before = tc.snapshot(_copy_old(work, "r"))
    _copy_old(work, "n")
    want = _ok(tc.run(RSYNC, ["-av", *extra, "--read-batch=B", "r/"], work))
    got = _ok(tc.run(sync_cmd, ["-av", *extra, "--read-batch=B", "n/"], work))
    tc.assert_same_output(tc.output_lines(want.stdout), tc.output_lines(got.stdout))
    tc.assert_same(tc.snapshot(work / "r"), tc.snapshot(work / "n"), what="replayed trees")
    if dry:
        tc.assert_same(before, tc.snapshot(work / "n"), what="tree after a dry-run replay")


def test_dry_run_writes_no_batch(tmp_path: Path, sync_cmd: list[str]) -> None:
    """options.c: with -n, --write-batch and --only-write-batch are dropped."""
    work = _setup(tmp_path, "none", tree="small")
    for opt in ("--write-batch=B1", "--only-write-batch=B2"):
        r = _ok(tc.run(sync_cmd, ["-av", "-n", opt, "src/", "dest/"], work))
        assert r.stdout.rstrip().endswith(b"(DRY RUN)"), r.describe()
    assert sorted(os.listdir(work)) == ["src"]


# ---------------------------------------------------------------- --only-write-batch
# rsync 3.5: the sender passes --only-write-batch=X to the server, which is a dry run
# whose generator still asks for each file against its destination; the file data (a
# delta) goes to the sender's batch alone.  A pull records what the remote sender sent.

sshd_server = peers.sshd_server  # the session fixture
_SRC = str(Path(__file__).resolve().parent.parent / "src")
# sshd does not pass our environment on: PYTHONPATH goes in the remote command itself.
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"
# Batches to compare byte for byte: no incremental recursion (netsync's client does not
# use it for batches) and a fixed seed (else the header's seed is the time).
SAME_STREAM = ["--no-i-r", "--checksum-seed=7"]


def _without_trailer(batch: bytes) -> bytes:
    """A batch less its closing stats (main.c handle_stats(): five varlong30s, here 3
    bytes each), which count each program's own wire bytes and timings."""
    return batch[:-15]


def _delta_setup(tmp_path: Path) -> Path:
    """src/big (1 MiB) and old/big, which differs in 8 bytes."""
    src, old = tmp_path / "src", tmp_path / "old"
    src.mkdir()
    old.mkdir()
    data = os.urandom(1 << 20)
    (src / "big").write_bytes(data)
    (old / "big").write_bytes(data[:500_000] + b"changed!" + data[500_008:])
    os.utime(src / "big", (1_600_000_000, 1_600_000_000))
    os.utime(old / "big", (1_500_000_000, 1_500_000_000))
    return tmp_path


@pytest.fixture(scope="module")
def netsyncd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RsyncDaemon]:
    """``netsync --daemon`` with one writable module, "open"."""
    root = tmp_path_factory.mktemp("netsyncd")
    (root / "open").mkdir()
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    config = root / "rsyncd.conf"
    config.write_text("\n".join(["use chroot = no", *uid, f"lock file = {root / 'lock'}",
                                 f"log file = {root / 'log'}", "[open]",
                                 f"path = {root / 'open'}", "read only = no", ""]))
    proc, port = peers.start_daemon(tc.program_under_test(), config, env=tc.sync_env())
    try:
        yield RsyncDaemon(port, root, {"open": root / "open"}, proc=proc)
    finally:
        peers.stop(proc)


def _dest_arg(where: str, work: Path, name: str, ssh: SshServer | None,
              daemon: RsyncDaemon | None) -> tuple[list[str], str, Path]:
    """(extra options, destination argument, the directory it names)."""
    if where == "local":
        return [], f"{name}/", work / name
    if where.endswith("daemon"):
        assert daemon is not None
        sub = f"only-{os.getpid()}-{work.name}-{name}"
        return [], daemon.url(f"open/{sub}/"), daemon.modules["open"] / sub
    assert ssh is not None
    path = NETSYNC_PATH if where == "ssh-netsync" else "rsync"
    return ["-e", ssh.rsh, f"--rsync-path={path}"], f"{ssh.login}:{work}/{name}/", work / name


@pytest.mark.parametrize("where", ["local", "ssh-rsync", "ssh-netsync", "daemon",
                                   "netsync-daemon"])
def test_only_write_batch_delta_as_rsync(tmp_path: Path, sync_cmd: list[str], where: str,
                                         request: pytest.FixtureRequest) -> None:
    """A small change to a big file: both programs record the same delta (the same bytes
    up to the closing stats), leave the destination alone, and either replays it."""
    ssh = request.getfixturevalue("sshd_server") if where.startswith("ssh") else None
    daemon = request.getfixturevalue("rsyncd") if where == "daemon" else \
        request.getfixturevalue("netsyncd") if where == "netsync-daemon" else None
    work = _delta_setup(tmp_path)
    batches = {}
    for prog, tag in ((RSYNC, "r"), (sync_cmd, "n")):
        extra, dest, path = _dest_arg(where, work, f"dest-{tag}", ssh, daemon)
        trees.copy_tree(work / "old", path)
        before = tc.snapshot(path)
        r = _ok(tc.run(prog, ["-av", *SAME_STREAM, *extra, f"--only-write-batch=B{tag}",
                              "src/", dest], work))
        assert r.stdout.rstrip().endswith(b"(BATCH ONLY)"), r.describe()
        assert b"big\n" in r.stdout, r.describe()
        tc.assert_same(before, tc.snapshot(path), what=f"{where} destination of B{tag}")
        batches[tag] = (work / f"B{tag}").read_bytes()
        assert len(batches[tag]) < 64 * 1024, f"B{tag} is {len(batches[tag])} bytes: no delta"
    assert len(batches["n"]) == len(batches["r"])
    assert _without_trailer(batches["n"]) == _without_trailer(batches["r"])
    want = (work / "src" / "big").read_bytes()
    for reader, rtag in ((RSYNC, "r"), (sync_cmd, "n")):
        for tag in "rn":
            replay = _copy_old(work, f"replay-{tag}{rtag}")
            _ok(tc.run(reader, ["-a", f"--read-batch=B{tag}", f"{replay.name}/"], work))
            assert (replay / "big").read_bytes() == want, f"{rtag} replay of B{tag}"
            assert (replay / "big").stat().st_mtime == 1_600_000_000


@pytest.mark.parametrize("opts", [["-ai", "--delete"], ["-aiH", "--delete"]], ids=" ".join)
@pytest.mark.parametrize("server", ["rsync", "netsync"])
def test_only_write_batch_push_over_ssh(tmp_path: Path, sync_cmd: list[str],
                                        sshd_server: SshServer, server: str,
                                        opts: list[str]) -> None:
    """netsync and rsync clients pushing to the same server: the same items listed, the
    destination untouched, and the batches replay (by either program) to the tree a
    plain rsync run makes.  rsync's own client (incremental recursion, as by default)
    against a netsync server, too."""
    work = _setup(tmp_path, "diverged")
    want = _reference(work, [o for o in opts if o != "-ai"] + ["-a"])
    path = NETSYNC_PATH if server == "netsync" else "rsync"
    runs = {}
    writers = [(RSYNC, "r", ["--no-i-r"]), (sync_cmd, "n", [])]
    if server == "netsync":
        writers.append((RSYNC, "i", []))
    for prog, tag, extra in writers:
        dest = _copy_old(work, f"dest-{tag}")
        before = tc.snapshot(dest)
        runs[tag] = _ok(tc.run(prog, [*opts, *extra, "-e", sshd_server.rsh,
                                      f"--rsync-path={path}", f"--only-write-batch=B{tag}",
                                      "src/", f"{sshd_server.login}:{dest}/"], work))
        tc.assert_same(before, tc.snapshot(dest), what=f"destination of B{tag}")
    tc.assert_same_output(tc.output_lines(runs["r"].stdout), tc.output_lines(runs["n"].stdout))
    for tag in runs:
        for reader, rtag in ((RSYNC, "r"), (sync_cmd, "n")):
            replay = _copy_old(work, f"replay-{tag}{rtag}")
            _ok(tc.run(reader, [*opts, f"--read-batch=B{tag}", f"{replay.name}/"], work))
            tc.assert_same(want, tc.snapshot(replay), what=f"{rtag} replay of B{tag}")


@pytest.mark.parametrize("server", ["rsync", "netsync"])
def test_only_write_batch_pull_over_ssh(tmp_path: Path, sync_cmd: list[str],
                                        sshd_server: SshServer, server: str) -> None:
    """Pulling, the client records what the remote sender sends (deltas against its own
    destination) and changes nothing; a destination that does not exist is not made."""
    work = _setup(tmp_path, "diverged")
    opts = ["-ai", "--delete"]
    want = _reference(work, ["-a", "--delete"])
    path = NETSYNC_PATH if server == "netsync" else "rsync"
    runs = {}
    for prog, tag, extra in ((RSYNC, "r", ["--no-i-r"]), (sync_cmd, "n", [])):
        dest = _copy_old(work, f"dest-{tag}")
        before = tc.snapshot(dest)
        ssh = ["-e", sshd_server.rsh, f"--rsync-path={path}"]
        runs[tag] = _ok(tc.run(prog, [*opts, *extra, *ssh, f"--only-write-batch=B{tag}",
                                      f"{sshd_server.login}:{work}/src/", f"{dest.name}/"],
                               work))
        tc.assert_same(before, tc.snapshot(dest), what=f"destination of B{tag}")
        r = _ok(tc.run(prog, ["-a", *ssh, f"--only-write-batch=N{tag}",
                              f"{sshd_server.login}:{work}/src/", f"new-{tag}/"], work))
        assert r.stdout == b"", r.describe()
        assert not (work / f"new-{tag}").exists()
    tc.assert_same_output(tc.output_lines(runs["r"].stdout), tc.output_lines(runs["n"].stdout))
    _ok(tc.run(RSYNC, ["-a", "src/", "ref-new/"], work))
    new = tc.snapshot(work / "ref-new")
    for tag in "rn":
        for reader, rtag in ((RSYNC, "r"), (sync_cmd, "n")):
            replay = _copy_old(work, f"replay-{tag}{rtag}")
            _ok(tc.run(reader, [*opts, f"--read-batch=B{tag}", f"{replay.name}/"], work))
            tc.assert_same(want, tc.snapshot(replay), what=f"{rtag} replay of B{tag}")
            _ok(tc.run(reader, ["-a", f"--read-batch=N{tag}", f"fresh-{tag}{rtag}/"], work))
            tc.assert_same(new, tc.snapshot(work / f"fresh-{tag}{rtag}"),
                           what=f"{rtag} replay of N{tag}")


def test_only_write_batch_daemon_pull(tmp_path: Path, sync_cmd: list[str],
                                      rsyncd: RsyncDaemon) -> None:
    """From an rsync daemon: the same items as rsync's client, nothing written locally."""
    work = _setup(tmp_path, "diverged", tree="small")
    sub = f"only-pull-{os.getpid()}-{tmp_path.name}"
    _ok(tc.run(RSYNC, ["-a", "src/", rsyncd.url(f"open/{sub}/")], work))
    _copy_old(work, "ref")
    _ok(tc.run(RSYNC, ["-a", rsyncd.url(f"open/{sub}/"), "ref/"], work))
    want = tc.snapshot(work / "ref")
    runs = {}
    for prog, tag, extra in ((RSYNC, "r", ["--no-i-r"]), (sync_cmd, "n", [])):
        dest = _copy_old(work, f"dest-{tag}")
        before = tc.snapshot(dest)
        runs[tag] = _ok(tc.run(prog, ["-ai", *extra, f"--only-write-batch=B{tag}",
                                      rsyncd.url(f"open/{sub}/"), f"{dest.name}/"], work))
        tc.assert_same(before, tc.snapshot(dest), what=f"destination of B{tag}")
    tc.assert_same_output(tc.output_lines(runs["r"].stdout), tc.output_lines(runs["n"].stdout))
    for tag in "rn":
        for reader, rtag in ((RSYNC, "r"), (sync_cmd, "n")):
            replay = _copy_old(work, f"replay-{tag}{rtag}")
            _ok(tc.run(reader, ["-a", f"--read-batch=B{tag}", f"{replay.name}/"], work))
            tc.assert_same(want, tc.snapshot(replay), what=f"{rtag} replay of B{tag}")


def test_only_write_batch_exit_codes(tmp_path: Path, sync_cmd: list[str],
                                     sshd_server: SshServer) -> None:
    """A source that is missing: rsync's exit code (23), and a batch of the rest."""
    work = _setup(tmp_path, "none", tree="small")
    for prog, tag in ((RSYNC, "r"), (sync_cmd, "n")):
        for where, dest in (("l", "dl/"), ("s", f"{sshd_server.login}:{work}/ds-{tag}/")):
            r = tc.run(prog, ["-a", "-e", sshd_server.rsh, f"--only-write-batch=B{tag}{where}",
                              "src/", "nope", dest], work)
            assert r.returncode == 23, r.describe()
            assert b"Traceback" not in r.stderr, r.describe()
            assert b'change_dir' in r.stderr or b"nope" in r.stderr, r.describe()
            assert (work / f"B{tag}{where}").exists()
    assert not any(p.name.startswith("d") for p in work.iterdir())
    _ok(tc.run(RSYNC, ["-a", "src/", "ref/"], work))
    for batch in ("Brl", "Bnl", "Brs", "Bns"):
        for reader, rtag in ((RSYNC, "r"), (sync_cmd, "n")):
            # (a missing arg is no I/O error in the list: the replay is clean)
            _ok(tc.run(reader, ["-a", f"--read-batch={batch}", f"r-{batch}{rtag}/"], work))
            tc.assert_same(tc.snapshot(work / "ref"), tc.snapshot(work / f"r-{batch}{rtag}"),
                           what=f"{rtag} replay of {batch}")


def test_server_takes_only_write_batch(tmp_path: Path) -> None:
    """`netsync --server` takes --only-write-batch=X as rsync's does (it used to be
    refused); with -n it is dropped, as options.c drops it."""
    from netsync.options import parse_args

    o = parse_args(["--server", "-logDtpre.iLsfxCIvu", "--only-write-batch=X", ".", "d/"])
    assert o.only_write_batch == "X" and o.dry_run
    o = parse_args(["--server", "-nlogDtpre.iLsfxCIvu", "--only-write-batch=X", ".", "d/"])
    assert o.only_write_batch is None and o.dry_run
    o = parse_args(["--server", "--sender", "-logDtpre.iLsfxCIvu", "--only-write-batch=X",
                    ".", "d/"])
    assert o.only_write_batch is None and not o.dry_run


@pytest.mark.parametrize("opt", ["--write-batch", "--read-batch"])
def test_server_ignores_batch_options(tmp_path: Path, sshd_server: SshServer, opt: str) -> None:
    """A batch option sent to a server is ignored with rsync's notice, and the
    transfer goes on (options.c: older clients send them)."""
    _setup(tmp_path, "none")
    runs = {}
    for who, server in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        dest = f"{sshd_server.login}:{tmp_path}/{who}/"
        runs[who] = tc.run(RSYNC, ["-a", "-e", sshd_server.rsh,
                                   f"--rsync-path={server} {opt}={tmp_path}/B-{who}",
                                   "src/", dest], tmp_path)
        assert runs[who].returncode == 0, runs[who].describe()
        assert not list(tmp_path.glob(f"B-{who}*"))
    assert runs["netsync"].stderr == runs["rsync"].stderr
    assert runs["rsync"].stderr == f"ignoring {opt} option sent to server\n".encode()
    tc.assert_same(tc.snapshot(tmp_path / "rsync"), tc.snapshot(tmp_path / "netsync"))


# ---------------------------------------------------------------- --read-batch -i
@pytest.mark.parametrize("target", ["old", "empty", "src"])
@pytest.mark.parametrize("writer", ["rsync", "netsync"])
def test_read_batch_itemizes_what_the_batch_recorded(tmp_path: Path, sync_cmd: list[str],
                                                     writer: str, target: str) -> None:
    """rsync's --read-batch itemizes from the flags the batch recorded (new files,
    changed ones, attribute-only changes), not from what it finds: replayed onto the old
    destination, an empty one or an up-to-date one, the same lines (and deletions,
    skipped and missing updates, exit code), real and dry run."""
    work = _setup(tmp_path, "diverged")
    opts = ["-a", "--delete"]
    _copy_old(work, "wrote")
    _ok(tc.run(RSYNC if writer == "rsync" else sync_cmd, [*opts, "--write-batch=B", "src/",
                                                          "wrote/"], work))

    def fresh(name: str) -> Path:
        path = work / name
        if target == "old":
            return _copy_old(work, name)
        if target == "src":
            trees.copy_tree(work / "src", path)
        return path

    for extra in ([], ["-n"]):
        a, b = fresh(f"tgt-rsync{len(extra)}"), fresh(f"tgt-netsync{len(extra)}")
        want = tc.run(RSYNC, [*opts, "-i", *extra, "--read-batch=B", f"{a.name}/"], work)
        got = tc.run(sync_cmd, [*opts, "-i", *extra, "--read-batch=B", f"{b.name}/"], work)
        assert got.returncode == want.returncode, (want.describe(), got.describe())
        assert b"Traceback" not in got.stderr, got.describe()
        tc.assert_same_output(tc.output_lines(want.stdout.replace(a.name.encode(), b"TGT")),
                              tc.output_lines(got.stdout.replace(b.name.encode(), b"TGT")))

        def notes(err: bytes) -> list[bytes]:
            return sorted(ln for ln in err.splitlines() if ln.startswith(b"("))

        assert notes(got.stderr) == notes(want.stderr)
        if a.exists() or b.exists():
            tc.assert_same(tc.snapshot(a), tc.snapshot(b), what="replayed trees")
