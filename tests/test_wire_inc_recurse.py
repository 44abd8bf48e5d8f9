"""Incremental recursion over the wire: netsync as the client of a stock rsync server
(over ssh and ``rsync --daemon``) offers the ``i`` capability, so the file list comes
(pull) or goes (push) a directory at a time.

Each case runs rsync -> rsync and netsync -> rsync on copies of the same work dir and
requires the same tree, the same ``-i`` lines in the same order (incremental recursion
reorders them: each directory comes right before its contents) and the same exit
code.  That inc-recursion is in use is checked on the wire: over ssh the server's
argv (recorded by an --rsync-path wrapper) carries the same ``e.i...`` word as
rsync's client sends; over a daemon, netsync prints "receiving/sending incremental
file list" only when the server's compat flags turned CF_INC_RECURSE on.  Also: a
pull's peak RSS stays flat from 1k to 30k files (and grows without inc-recursion),
option sets netsync runs whole-list do not offer 'i', and a hostile sender's
sub-lists meet rsync 3.4's checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import treecompare as tc
import trees
from interop import peers
from interop.peers import SshServer
from memtrees import PER_DIR, empty_tree, peak_kib

sshd_server = peers.sshd_server  # the session fixture

PROTOCOLS = (30, 31, 32)


# --------------------------------------------------------------------------- trees

def _nested(root: Path) -> None:
    """Dirs three deep, files at each level, symlinks (to files, to dirs, dangling)."""
    t = 1_600_000_000
    for a in range(3):
        for b in range(3):
            d = root / f"a{a}" / f"b{b}"
            d.mkdir(parents=True)
            for i in range(4):
                p = d / f"f{i}.txt"
                p.write_bytes(f"{a}-{b}-{i}\n".encode() * (i + 1))
                os.utime(p, (t + i, t + i))
            (d / "c").mkdir()
            (d / "c" / "leaf").write_bytes(b"leaf")
        (root / f"a{a}" / "top.txt").write_bytes(b"x" * (a * 100))
        (root / f"a{a}" / "link").symlink_to("b0/f0.txt")
        (root / f"a{a}" / "dirlink").symlink_to("b1")
        (root / f"a{a}" / "dangling").symlink_to("nowhere")
    (root / "empty").mkdir()
    (root / "z.txt").write_bytes(b"last")
    (root / "0.txt").write_bytes(b"first")


def _diverge(dst: Path) -> None:
    """What --delete and the generator must deal with, in several dirs."""
    (dst / "a0" / "b0" / "f1.txt").write_bytes(b"changed!")
    (dst / "a0" / "b1" / "f2.txt").unlink()
    (dst / "a1" / "b2" / "extra.txt").write_bytes(b"delete me")
    (dst / "a1" / "gone").mkdir()
    (dst / "a1" / "gone" / "deep.txt").write_bytes(b"deep")
    (dst / "a2" / "b0" / "c").rename(dst / "a2" / "b0" / "c-old")
    (dst / "a2" / "b0" / "c").write_bytes(b"a file where a dir belongs")
    (dst / "a2" / "top.txt").unlink()
    (dst / "a2" / "top.txt").mkdir()
    (dst / "stray.txt").write_bytes(b"stray")
    os.chmod(dst / "a0" / "b2" / "f3.txt", 0o600)


def _many_dirs(root: Path, n: int = 60, per_dir: int = 25) -> None:
    """More entries than the sender's 1,000-entry lookahead, spread over many dirs."""
    t = 1_600_000_000
    for d in range(n):
        sub = root / f"d{d:03d}" / "sub"
        sub.mkdir(parents=True)
        for i in range(per_dir):
            p = root / f"d{d:03d}" / f"f{i:03d}"
            p.write_bytes(b"y" * ((d + i) % 40))
            os.utime(p, (t + i, t + i))
        (sub / "s").write_bytes(b"s")


def _linked(root: Path) -> None:
    """Hard-link groups whose members lie in different lists (the top list, a dir
    listed early, one listed late), a group within one dir, a file whose other link
    is outside the source, and a hard-linked symlink."""
    t = 1_600_000_000
    for d in ("a/deep", "b", "c/x"):
        (root / d).mkdir(parents=True)
    groups = {
        "a/g1": ("b/g1-b", "c/x/g1-c", "top-g1"),
        "c/x/g2": ("a/deep/g2-a",),
        "b/g3": ("b/g3-again",),
    }
    for i, (first, others) in enumerate(groups.items()):
        (root / first).write_bytes(f"group {i}\n".encode() * (i + 3))
        os.utime(root / first, (t + i, t + i))
        for o in others:
            os.link(root / first, root / o)
    (root / "a" / "lone").write_bytes(b"its other name is outside\n")
    os.link(root / "a" / "lone", root.parent / "outside-lone")
    (root / "a" / "plain").write_bytes(b"one link\n")
    (root / "c" / "sym").symlink_to("x/g2")
    os.link(root / "c" / "sym", root / "b" / "sym-link", follow_symlinks=False)


def _diverge_linked(dst: Path) -> None:
    """A group's data changed (one member replaced), a member missing, a member that
    is a separate copy, and an extra file for --delete."""
    (dst / "b" / "g1-b").unlink()
    (dst / "b" / "g1-b").write_bytes(b"an older version\n")
    (dst / "c" / "x" / "g1-c").unlink()
    (dst / "b" / "g3-again").unlink()
    shutil.copy2(dst / "b" / "g3", dst / "b" / "g3-again")
    (dst / "c" / "extra").write_bytes(b"delete me")


def _work(tmp_path: Path, kind: str, dest: str) -> tuple[Path, Path]:
    base = tmp_path / "base"
    src = base / "src"
    src.mkdir(parents=True)
    make, diverge = {"nested": (_nested, _diverge), "many": (_many_dirs, _diverge_many),
                     "linked": (_linked, _diverge_linked)}[kind]
    make(src)
    if dest == "none":
        pass
    else:
        subprocess.run(["cp", "-a", "--", os.fspath(src), os.fspath(base / "dst")], check=True)
        diverge(base / "dst")
    a, b = tmp_path / "rsync", tmp_path / "netsync"
    for w in (a, b):
        trees.copy_tree(base, w)
    shutil.rmtree(base)
    return a, b


def _diverge_many(dst: Path) -> None:
    for d in range(0, 60, 7):
        (dst / f"d{d:03d}" / "f003").write_bytes(b"changed")
        (dst / f"d{d:03d}" / "old").write_bytes(b"delete me")
    shutil.rmtree(dst / "d010" / "sub")


# ------------------------------------------------------------------ the remote side

def _wrapper(tmp_path: Path) -> tuple[Path, Path]:
    """An --rsync-path that records the server's argv, then runs rsync."""
    log = tmp_path / "server-argv.log"
    script = tmp_path / "rsync-wrapper"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec rsync "$@"\n')
    script.chmod(0o755)
    return script, log


def _server_flags(log: Path) -> list[str]:
    """The bundled flag word of each recorded server argv (``-vlogDtpre.iLsfxCIvu``)."""
    out = []
    for line in log.read_text().splitlines():
        words = line.split()
        out.append(next(w for w in words[1:] if w.startswith("-") and "e." in w))
    log.unlink()
    return out


def _caps(flags: str) -> str:
    return flags.split("e.", 1)[1]


def _ssh_args(ssh: SshServer, work: Path, direction: str, wrapper: Path,
              extra: list[str]) -> list[str]:
    via = [*extra, "-e", ssh.rsh, f"--rsync-path={wrapper}"]
    if direction == "push":
        return [*via, "src/", f"{ssh.login}:{work}/dst/"]
    return [*via, f"{ssh.login}:{work}/src/", "dst/"]


def _daemon_conf(tmp_path: Path, a: Path, b: Path) -> Path:
    """A daemon config whose modules are the two work dirs (so push and pull both go
    through the daemon).  Started per test with the module paths it needs."""
    conf = tmp_path / "rsyncd.conf"
    uid = ["uid = root", "gid = root"] if os.geteuid() == 0 else []
    conf.write_text("\n".join([
        "use chroot = no", *uid, f"log file = {tmp_path / 'rsyncd.log'}",
        "[rs]", f"    path = {a}", "    read only = no",
        "[ns]", f"    path = {b}", "    read only = no", ""]))
    return conf


class _Daemon:
    def __init__(self, tmp_path: Path, a: Path, b: Path) -> None:
        self.conf = _daemon_conf(tmp_path, a, b)
        self.port = peers.free_port()
        self.proc = subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", f"--port={self.port}",
             "--address=127.0.0.1", f"--config={self.conf}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert peers.wait_for_port(self.port, self.proc), "rsync --daemon did not start"

    def args(self, module: str, direction: str, extra: list[str]) -> list[str]:
        url = f"rsync://127.0.0.1:{self.port}/{module}"
        if direction == "push":
            return [*extra, "src/", f"{url}/dst/"]
        return [*extra, f"{url}/src/", "dst/"]

    def stop(self) -> None:
        peers.stop(self.proc)


def _check_same(want: tc.Run, got: tc.Run, a: Path, b: Path, now: int, rc: int = 0) -> None:
    assert want.returncode == rc, want.describe()
    assert got.returncode == want.returncode, got.describe()
    assert b"Traceback" not in got.stderr, got.describe()
    # ("created directory WORK/dst": each run has its own work dir.)
    tc.assert_same_output(tc.output_lines(want.stdout.replace(os.fsencode(a), b"WORK")),
                          tc.output_lines(got.stdout.replace(os.fsencode(b), b"WORK")))
    tc.assert_same(tc.snapshot(a, now), tc.snapshot(b, now))


# ------------------------------------------------------------------------ over ssh

CASES = [
    ("nested", "none", ["-ai"]),
    ("nested", "diverged", ["-ai", "--delete"]),
    ("nested", "diverged", ["-rlti", "--delete", "-v"]),
    ("many", "diverged", ["-ai", "--delete"]),
    ("nested", "diverged", ["-ain", "--delete"]),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("kind", "dest", "extra"), CASES,
                         ids=["nested-new", "nested-delete", "nested-rlt-v", "many-delete",
                              "nested-dry-run"])
@pytest.mark.parametrize("direction", ["pull", "push"])
def test_ssh_same_as_rsync(sshd_server: SshServer, tmp_path: Path, direction: str,
                           kind: str, dest: str, extra: list[str], protocol: int) -> None:
    a, b = _work(tmp_path, kind, dest)
    wrapper, log = _wrapper(tmp_path)
    opts = [*extra, f"--protocol={protocol}"]
    now = time.time_ns() - 10**9
    want = tc.run([tc.RSYNC], _ssh_args(sshd_server, a, direction, wrapper, opts), cwd=a)
    want_flags = _server_flags(log)
    got = tc.run(tc.program_under_test(), _ssh_args(sshd_server, b, direction, wrapper, opts),
                 cwd=b)
    got_flags = _server_flags(log)
    _check_same(want, got, a, b, now)
    # The capabilities offered: rsync's client offers 'i' here, and so does netsync.
    assert _caps(want_flags[0]).startswith("i"), want_flags
    assert got_flags == want_flags


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("direction", ["pull"])
def test_ssh_progress_and_itemize(sshd_server: SshServer, tmp_path: Path, direction: str,
                                  protocol: int) -> None:
    """--progress shows "ir-chk" while lists still arrive, as rsync's does, with the
    same counts (each list's number is taken off the index).  (A push's progress
    lines depend on when the remote generator asks for files: not compared.)"""
    a, b = _work(tmp_path, "many", "diverged")
    wrapper, log = _wrapper(tmp_path)
    opts = ["-a", "--progress", "--delete", f"--protocol={protocol}"]
    now = time.time_ns() - 10**9
    want = tc.run([tc.RSYNC], _ssh_args(sshd_server, a, direction, wrapper, opts), cwd=a)
    got = tc.run(tc.program_under_test(), _ssh_args(sshd_server, b, direction, wrapper, opts),
                 cwd=b)
    log.unlink()
    assert want.returncode == 0 and got.returncode == 0, got.describe()
    tc.assert_same(tc.snapshot(a, now), tc.snapshot(b, now))

    def final_lines(out: bytes) -> list[bytes]:
        # The per-file final progress lines without their rate/time columns.
        return [ln.split(b"(xfr#")[1] for ln in out.replace(b"\r", b"\n").split(b"\n")
                if b"(xfr#" in ln]

    assert final_lines(got.stdout) == final_lines(want.stdout)
    assert any(b"ir-chk" in ln for ln in final_lines(got.stdout))


@pytest.mark.parametrize("incremental", [True, False], ids=["inc", "no-inc"])
def test_ssh_push_progress(sshd_server: SshServer, tmp_path: Path, incremental: bool) -> None:
    """On a push the progress lines come from our sender: one per file sent, numbered
    xfr#1.., ending at to-chk=0/N with rsync's N.  (Whether a line says ir-chk or
    to-chk, and its count before the end, depends on how far ahead the lists went.)"""
    a, b = _work(tmp_path, "many", "diverged")
    wrapper, log = _wrapper(tmp_path)
    opts = ["-a", "--progress", *([] if incremental else ["--no-i-r"])]
    want = tc.run([tc.RSYNC], _ssh_args(sshd_server, a, "push", wrapper, opts), cwd=a)
    got = tc.run(tc.program_under_test(), _ssh_args(sshd_server, b, "push", wrapper, opts),
                 cwd=b)
    log.unlink()
    assert want.returncode == 0 and got.returncode == 0, got.describe()

    def final_lines(out: bytes) -> list[bytes]:
        return [ln.split(b"(xfr#")[1] for ln in out.replace(b"\r", b"\n").split(b"\n")
                if b"(xfr#" in ln]

    w, g = final_lines(want.stdout), final_lines(got.stdout)
    assert len(w) > 3 and [x.split(b",")[0] for x in g] == [x.split(b",")[0] for x in w]
    assert g[-1] == w[-1]
    if not incremental:  # one whole list: every count is fixed
        assert g == w


@pytest.mark.parametrize("form", ["src", "src/a0/top.txt", "src/empty/", "src/a1"])
@pytest.mark.parametrize("direction", ["pull", "push"])
def test_ssh_source_forms(sshd_server: SshServer, tmp_path: Path, direction: str,
                          form: str) -> None:
    """A dir without the slash (its first list is just the dir: a second list follows at
    once), a single file (one entry, then NDX_FLIST_EOF), an empty dir."""
    a, b = _work(tmp_path, "nested", "diverged")
    wrapper, log = _wrapper(tmp_path)
    now = time.time_ns() - 10**9

    def args(work: Path) -> list[str]:
        via = ["-ai", "--delete", "-e", sshd_server.rsh, f"--rsync-path={wrapper}"]
        if direction == "push":
            return [*via, form, f"{sshd_server.login}:{work}/dst/"]
        return [*via, f"{sshd_server.login}:{work}/{form}", "dst/"]

    want = tc.run([tc.RSYNC], args(a), cwd=a)
    want_flags = _server_flags(log)
    got = tc.run(tc.program_under_test(), args(b), cwd=b)
    _check_same(want, got, a, b, now)
    assert _server_flags(log) == want_flags
    assert _caps(want_flags[0]).startswith("i")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("dest", "extra"), [("none", ["-aviH"]),
                                             ("diverged", ["-aviH", "--delete"]),
                                             ("diverged", ["-aviHn", "--delete"])],
                         ids=["new", "diverged", "dry-run"])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_hard_links_incrementally(sshd_server: SshServer, tmp_path: Path, direction: str,
                                  dest: str, extra: list[str], protocol: int) -> None:
    """-H with the lists a directory at a time, as rsync's client offers 'i' with -H.
    Pushed: each group's first member is named across lists.  Pulled: the receiver
    keeps each group's state across lists (hlink.c prior_hlinks) and reads lists
    ahead before generating one, so the member that gets the data -- and the "=>"
    lines -- are rsync's.  Both: the same links, the same lines."""
    a, b = _work(tmp_path, "linked", dest)
    wrapper, log = _wrapper(tmp_path)
    opts = [*extra, f"--protocol={protocol}"]
    now = time.time_ns() - 10**9
    want = tc.run([tc.RSYNC], _ssh_args(sshd_server, a, direction, wrapper, opts), cwd=a)
    want_flags = _server_flags(log)
    got = tc.run(tc.program_under_test(), _ssh_args(sshd_server, b, direction, wrapper, opts),
                 cwd=b)
    got_flags = _server_flags(log)
    _check_same(want, got, a, b, now)
    assert b"hf" in want.stdout and b" => " in want.stdout, want.describe()
    assert _caps(want_flags[0]).startswith("i"), want_flags
    assert got_flags == want_flags
    word = b"sending" if direction == "push" else b"receiving"
    assert word + b" incremental file list" in tc.output_lines(got.stdout)


@pytest.mark.parametrize(("direction", "extra"), [
    ("push", ["-aR"]),
    ("pull", ["-a", "--delete-after"]), ("push", ["-a", "--delete-missing-args"]),
])
def test_declined_option_sets(sshd_server: SshServer, tmp_path: Path, direction: str,
                              extra: list[str]) -> None:
    """Option sets netsync does not run incrementally: no 'i' is offered (a client may
    leave it out), and the transfer still ends like rsync's."""
    a, b = _work(tmp_path, "nested", "diverged")
    wrapper, log = _wrapper(tmp_path)
    now = time.time_ns() - 10**9
    want = tc.run([tc.RSYNC], _ssh_args(sshd_server, a, direction, wrapper, extra), cwd=a)
    log.unlink()
    got = tc.run(tc.program_under_test(), _ssh_args(sshd_server, b, direction, wrapper, extra),
                 cwd=b)
    flags = _server_flags(log)
    assert want.returncode == 0 and got.returncode == 0, got.describe()
    assert not _caps(flags[0]).startswith("i"), flags
    tc.assert_same(tc.snapshot(a, now), tc.snapshot(b, now))


@pytest.mark.parametrize("direction", ["pull", "push"])
def test_delete_delay_runs_incrementally(sshd_server: SshServer, tmp_path: Path,
                                         direction: str) -> None:
    """--delete-delay keeps incremental recursion, as rsync's does (netsync declined it:
    the client said "building file list ... done" where rsync's says "sending
    incremental file list")."""
    a, b = _work(tmp_path, "nested", "diverged")
    wrapper, log = _wrapper(tmp_path)
    now = time.time_ns() - 10**9
    extra = ["-av", "--delete-delay"]
    want = tc.run([tc.RSYNC], _ssh_args(sshd_server, a, direction, wrapper, extra), cwd=a)
    want_flags = _server_flags(log)
    got = tc.run(tc.program_under_test(), _ssh_args(sshd_server, b, direction, wrapper, extra),
                 cwd=b)
    _check_same(want, got, a, b, now)
    assert _server_flags(log) == want_flags
    assert _caps(want_flags[0]).startswith("i")


# --------------------------------------------------------------------- over rsyncd

@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("kind", "dest", "extra"), CASES,
                         ids=["nested-new", "nested-delete", "nested-rlt-v", "many-delete",
                              "nested-dry-run"])
@pytest.mark.parametrize("direction", ["pull", "push"])
def test_daemon_same_as_rsync(tmp_path: Path, direction: str, kind: str, dest: str,
                              extra: list[str], protocol: int) -> None:
    a, b = _work(tmp_path, kind, dest)
    d = _Daemon(tmp_path, a, b)
    try:
        opts = [*extra, *([] if "-v" in extra else ["-v"]), f"--protocol={protocol}"]
        now = time.time_ns() - 10**9
        want = tc.run([tc.RSYNC], d.args("rs", direction, opts), cwd=a)
        got = tc.run(tc.program_under_test(), d.args("ns", direction, opts), cwd=b)
    finally:
        d.stop()
    _check_same(want, got, a, b, now)
    # A daemon's server sets CF_INC_RECURSE only when the client offered 'i'; both
    # clients report the incremental list ("receiving/sending incremental file list").
    word = b"receiving incremental file list" if direction == "pull" \
        else b"sending incremental file list"
    assert word in want.stdout, want.stdout
    assert word in got.stdout, got.stdout


# ----------------------------------------------------------- flat memory on a pull

@pytest.fixture(scope="module")
def pull_trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    small = tmp_path_factory.mktemp("wire-inc-small")
    large = tmp_path_factory.mktemp("wire-inc-large")
    empty_tree(small, 2)     # 1,000 files
    empty_tree(large, 60)    # 30,000 files
    return small, large


def _pull_growth(ssh: SshServer, pull_trees: tuple[Path, Path], extra: list[str]) -> float:
    small, large = pull_trees

    def peak(work: Path) -> int:
        args = ["-ai", *extra, "-e", ssh.rsh, f"{ssh.login}:{work}/src/", "dst/"]
        return max(peak_kib([*tc.program_under_test(), *args], work) for _ in range(2))

    lo, hi = peak(small), peak(large)
    per_file = (hi - lo) * 1024 / ((60 - 2) * PER_DIR)
    print(f"peak RSS {extra or ['inc']}: 1k files {lo} KiB, 30k files {hi} KiB, "
          f"{per_file:.1f} bytes/file", file=sys.stderr)
    return per_file


def test_pull_memory_flat(sshd_server: SshServer, pull_trees) -> None:
    per_file = _pull_growth(sshd_server, pull_trees, [])
    assert per_file < 25, f"peak memory grows {per_file:.0f} bytes per file"


def test_pull_memory_control_grows(sshd_server: SshServer, pull_trees) -> None:
    # Without incremental recursion the client holds the whole list: the measure
    # above must be able to see that, or it proves nothing.
    per_file = _pull_growth(sshd_server, pull_trees, ["--no-inc-recursive"])
    assert per_file > 40, f"peak memory grows only {per_file:.0f} bytes per file"


# ------------------------------------------- netsync as the server of a stock client
# A daemon serving a mirror to many clients must not build each one's whole list
# before sending: as rsync's server, netsync grants incremental recursion when the
# client offers it ('i'), and its sender walks a directory at a time.

_SRC = str(Path(__file__).resolve().parent.parent / "src")


def _server_peak(ssh: SshServer, work: Path, extra: list[str], tmp: Path) -> int:
    """Peak RSS (KiB) of the netsync server Debian's rsync pulls ``work``/src from."""
    import shlex

    if not Path("/usr/bin/time").exists():
        peers.missing("/usr/bin/time is not installed (Debian package time)")
    out = tmp / "maxrss"
    server = (f"/usr/bin/time -o {shlex.quote(str(out))} -f %M env PYTHONPATH="
              f"{shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync")
    shutil.rmtree(work / "dst", ignore_errors=True)
    r = tc.run([tc.RSYNC], ["-a", *extra, "-e", ssh.rsh, f"--rsync-path={server}",
                            f"{ssh.login}:{work}/src/", "dst/"], cwd=work)
    shutil.rmtree(work / "dst", ignore_errors=True)
    assert r.returncode == 0, r.describe()
    return int(out.read_text().split()[-1])


@pytest.fixture(scope="module")
def huge_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    huge = tmp_path_factory.mktemp("wire-inc-huge")
    empty_tree(huge, 120)    # 60,000 files
    return huge


def test_server_sender_memory_flat(sshd_server: SshServer, pull_trees, huge_tree: Path,
                                   tmp_path: Path) -> None:
    """The server holds the lists the client's generator has not finished with plus
    rsync's lookahead (10,000 entries): about 20,000 entries at most, so from 30,000
    files to 60,000 its peak hardly moves (0-30 bytes a file as the client's pipeline
    runs deeper or not; the whole list costs ~470, see the control below)."""
    lo = _server_peak(sshd_server, pull_trees[1], [], tmp_path)
    hi = _server_peak(sshd_server, huge_tree, [], tmp_path)
    per_file = (hi - lo) * 1024 / ((120 - 60) * PER_DIR)
    print(f"server peak RSS: 30k files {lo} KiB, 60k files {hi} KiB, "
          f"{per_file:.1f} bytes/file", file=sys.stderr)
    assert per_file < 100


def test_server_sender_memory_control_grows(sshd_server: SshServer, pull_trees,
                                            tmp_path: Path) -> None:
    # A client that does not offer 'i' gets the whole list at once: the server then
    # holds it, which the measure above must be able to see.
    lo = _server_peak(sshd_server, pull_trees[0], ["--no-inc-recursive"], tmp_path)
    hi = _server_peak(sshd_server, pull_trees[1], ["--no-inc-recursive"], tmp_path)
    assert (hi - lo) * 1024 / ((60 - 2) * PER_DIR) > 40


@pytest.mark.parametrize("direction", ["pull", "push"])
@pytest.mark.parametrize("extra", [[], ["--delete"], ["-n", "--delete"]])
def test_server_lists_as_rsyncs_server(sshd_server: SshServer, tmp_path: Path,
                                       direction: str, extra: list[str]) -> None:
    """Debian's rsync with netsync as its ssh server prints what it prints with an
    rsync server ("receiving incremental file list"), the same items, the same tree.
    (-H: test_server_sends_hard_links_incrementally below.)"""
    import shlex

    base = tmp_path / "base"
    trees.make_tree(base / "src", "mixed")
    trees.make_dest(base / "src", base / "dst", "diverged")
    runs = {}
    for who, path in (("rsync", "rsync"), ("netsync", f"env PYTHONPATH={shlex.quote(_SRC)} "
                                         f"{shlex.quote(sys.executable)} -m netsync")):
        work = tmp_path / who
        trees.copy_tree(base, work)
        common = ["-av", "-i", *extra, "-e", sshd_server.rsh, f"--rsync-path={path}"]
        remote = f"{sshd_server.login}:{work}"
        args = ([*common, "src/", f"{remote}/dst/"] if direction == "push"
                else [*common, f"{remote}/src/", "dst/"])
        runs[who] = (work, tc.run([tc.RSYNC], args, cwd=work))
    (wa, want), (wb, got) = runs["rsync"], runs["netsync"]
    assert want.returncode == 0, want.describe()
    assert got.returncode == 0, got.describe()
    now = time.time_ns() - 10**9
    tc.assert_same(tc.snapshot(wa, now), tc.snapshot(wb, now))
    lines = [tc.output_lines(r.stdout.replace(str(w).encode(), b"WORK"))
             for w, r in ((wa, want), (wb, got))]
    assert lines[1][0] == lines[0][0]  # the list's header line
    assert sorted(lines[1]) == sorted(lines[0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("dest", "extra"), [("none", ["-aviH"]),
                                             ("diverged", ["-aviH", "--delete"])],
                         ids=["new", "diverged"])
def test_server_sends_hard_links_incrementally(sshd_server: SshServer, tmp_path: Path,
                                               dest: str, extra: list[str],
                                               protocol: int) -> None:
    """Debian's rsync pulling -H from netsync as its ssh server gets the lists a
    directory at a time, as from rsync's server: "receiving incremental file list",
    the same lines in the same order, the same links."""
    import shlex

    a, b = _work(tmp_path, "linked", dest)
    now = time.time_ns() - 10**9
    runs = []
    for work, path in ((a, "rsync"), (b, f"env PYTHONPATH={shlex.quote(_SRC)} "
                                         f"{shlex.quote(sys.executable)} -m netsync")):
        runs.append(tc.run([tc.RSYNC], [*extra, f"--protocol={protocol}", "-e", sshd_server.rsh,
                                        f"--rsync-path={path}",
                                        f"{sshd_server.login}:{work}/src/", "dst/"], cwd=work))
    want, got = runs
    _check_same(want, got, a, b, now)
    assert b"hf" in want.stdout and b" => " in want.stdout, want.describe()
    assert b"receiving incremental file list" in tc.output_lines(got.stdout)


# ------------------------------------------------------ a hostile incremental sender
# This file doubles as the -e program: hostile_peer's evil server, with incremental
# recursion granted when the client offers 'i', playing the attacks below.

EVIL_SELF = Path(__file__).resolve()


def _evil_sublists(subs: list[tuple[int, list[tuple[bytes, int]]]],
                   first_names: tuple[bytes, ...] = (b".", b"d"), done_first: bool = False):
    def run(s) -> None:
        import stat as st

        import hostile_peer as hp
        from netsync.wire import NDX_DONE, NDX_FLIST_OFFSET

        if not s.neg.compat_flags & 1:  # CF_INC_RECURSE: the client must have offered 'i'
            return
        enc = s.encoder()
        s.read_filters()
        first = [hp.entry(n, st.S_IFDIR | 0o755) for n in first_names]
        s.io.write(b"".join(enc.encode_entry(e) for e in first) + enc.end())
        if done_first:  # an NDX_DONE no list's end asked for: it frees the only list
            s.io.write_ndx(NDX_DONE)
        for dir_ndx, entries in subs:
            s.io.write_ndx(NDX_FLIST_OFFSET - dir_ndx)
            s.io.write(b"".join(enc.encode_entry(hp.entry(n, m)) for n, m in entries)
                       + enc.end_marker())
        s.io.flush()
        s.io.read_some()  # until the client hangs up
    return run


def _evil_hlink_gnum(s) -> None:
    """-H: a sub-list's member of hard-link group 1, which no list declared (its first
    member would have come with XMIT_HLINK_FIRST): hlink.c match_gnums() refuses it
    (rsync aborted on an assert there before 3.5, proto-hlink-gnum)."""
    import stat as st

    import hostile_peer as hp
    from netsync.flist import FLAG_HLINK_FOLLOWER
    from netsync.wire import NDX_FLIST_OFFSET

    if not s.neg.compat_flags & 1:
        return
    enc = s.encoder(preserve_hard_links=True)
    s.read_filters()
    first = [hp.entry(b".", st.S_IFDIR | 0o755), hp.entry(b"d", st.S_IFDIR | 0o755),
             hp.entry(b"f", _REG, size=100)]
    s.io.write(b"".join(enc.encode_entry(e) for e in first) + enc.end())
    h = hp.entry(b"d/h", _REG)
    h.hlink, h.flags = 1, h.flags | FLAG_HLINK_FOLLOWER
    enc.ndx_start = 5  # the sub-list's (1 + 3 entries + its dir's slot)
    s.io.write_ndx(NDX_FLIST_OFFSET - 1)
    s.io.write(enc.encode_entry(h) + enc.end_marker())
    s.io.flush()
    s.io.read_some()


_REG = 0o100644
EVIL_ATTACKS = {
    "inc-hlink-gnum": _evil_hlink_gnum,
    "inc-dotdot": _evil_sublists([(1, [(b"d/../../escaped", _REG)])]),
    "inc-absolute": _evil_sublists([(1, [(b"/tmp/inc-absolute-escape", _REG)])]),
    "inc-outside-dir": _evil_sublists([(1, [(b"elsewhere/file", _REG)])]),
    "inc-dot-again": _evil_sublists([(0, [])]),
    "inc-dir-twice": _evil_sublists([(1, [(b"d/x", _REG)]), (1, [])]),
    "inc-bad-dir": _evil_sublists([(7, [])]),
    # The same dir twice in the first list: the cleaning clears the second's slot, which
    # then takes no list (proto-cleared-dirflist).
    "inc-cleared-dir": _evil_sublists([(2, [(b"d/x", _REG)])], (b".", b"d", b"d")),
    # A forged NDX_DONE frees the first (only) list; a sub-list then has no list left
    # to join (proto-subflist-freed).
    "inc-after-freed": _evil_sublists([(1, [(b"d/x", _REG)])], done_first=True),
    # "host:src/wanted" asked for; the sender lists "wanted" and sneaks in "other".
    "inc-unrequested": _evil_sublists([(0, [(b"wanted/x", _REG)])], (b"other", b"wanted")),
    # Many small lists, each within --max-alloc, sent far ahead of the generator (whose
    # files never come): together they must hit the bound too.
    "inc-flood": _evil_sublists(
        [(d, [(b"d%04d/f%05d" % (d, i), _REG) for i in range(100)]) for d in range(1, 101)],
        (b".", *(b"d%04d" % d for d in range(1, 101)))),
}


@pytest.mark.parametrize(("attack", "code", "message"), [
    ("inc-dotdot", 4, b"ABORTING due to unsafe pathname from sender: d/../../escaped"),
    ("inc-absolute", 4, b"ABORTING due to unsafe pathname from sender: /tmp/inc-absolute"),
    ("inc-outside-dir", 4, b"ABORTING due to invalid path from sender: elsewhere/file"),
    ("inc-dot-again", 2, b"refusing malicious duplicate flist for dir 0"),
    ("inc-dir-twice", 2, b"refusing malicious duplicate flist for dir 1"),
    ("inc-bad-dir", 2, b"Invalid dir index: -108 (-101 - -102)"),
    ("inc-cleared-dir", 2, b"refusing flist for cleared dir_ndx 2"),
    ("inc-after-freed", 2, b"refusing sub-flist after final flist was freed\n"),
    ("inc-unrequested", 4, b"ERROR: rejecting unrequested file-list name: other"),
    ("inc-flood", 22, b"ERROR: out of memory in flist_expand (over 4096 entries"),
    ("inc-hlink-gnum", 2, b"hard-link gnum 1 precedes flist start 5"),
])
def test_hostile_sublists_are_refused(tmp_path: Path, attack: str, code: int,
                                      message: bytes) -> None:
    """rsync 3.4's checks hold for every sub-list: no "..", no absolute names, only
    names inside the directory the list is for, one list per directory (the top dir's
    contents came in the first list), and a directory that was listed."""
    import shlex

    import hostile_peer as hp

    dst = tmp_path / "dst"
    keep = dst / "private"
    keep.mkdir(parents=True)
    (keep / "must-survive").write_text("receiver-owned\n")
    rsh = f"{shlex.quote(sys.executable)} {shlex.quote(str(EVIL_SELF))} serve {attack}"
    child = hp.finish(hp.spawn([*hp.netsync_cmd(), "-e", rsh, "-r", "--delete",
                                *(["-H"] if attack == "inc-hlink-gnum" else []),
                                "--timeout=20", "--max-alloc=1M",
                                "host:src/wanted" if attack == "inc-unrequested" else "host:src/",
                                f"{dst}/"], tmp_path,
                               pipes=False, env=hp.child_env()), 90)
    err = child.stderr
    assert child.returncode == code, err
    assert b"Traceback" not in err and message in err, err
    assert child.maxrss_kb < hp.MAX_RSS_KB
    assert (keep / "must-survive").read_text() == "receiver-owned\n"
    assert not (tmp_path / "escaped").exists()
    assert not Path("/tmp/inc-absolute-escape").exists()
    # Nothing of a sub-list (the flood's first list only names empty directories).
    assert all(p.name in ("d", "private") or (attack == "inc-flood" and p.is_dir()
                                              and not any(p.iterdir()))
               for p in dst.iterdir())


def _evil_main(argv: list[str]) -> int:  # pragma: no cover - runs as the -e program
    import hostile_peer as hp
    import netsync.server_handshake as sh

    plain = sh.server_compat_flags

    def with_inc(caps: str, inc_recurse: bool = False) -> int:
        return plain(caps, True)  # grant CF_INC_RECURSE whenever the client offers 'i'

    sh.server_compat_flags = with_inc
    hp.SERVER_ATTACKS.update(EVIL_ATTACKS)
    return hp.main(argv)


if __name__ == "__main__":
    sys.exit(_evil_main(sys.argv[1:]))
