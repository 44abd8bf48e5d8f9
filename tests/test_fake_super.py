"""--fake-super and a daemon's ``fake super = yes``, compared with Debian's rsync.

A non-root receiver cannot chown, mknod or keep set-id bits; with fake super it
stores what it could not set in the ``user.rsync.%stat`` xattr of a plain file
and reads it back as the file's real metadata.  These tests copy a tree with a
root-owned file, set-id bits, a fifo, devices and a symlink as an unprivileged
user, compare the xattrs and files with what rsync writes for the same tree,
check that a re-run changes nothing, and that a root receiver restores the
original tree from the copy.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import treecompare as tc
import trees
from interop import peers

pytestmark = pytest.mark.skipif(not trees.IS_ROOT, reason="needs root (mknod, other users)")

NOBODY = 65534
XSTAT = "user.rsync.%stat"
T0 = 1_600_000_000_123_456_789


def _make_src(src: Path) -> None:
    src.mkdir()
    (src / "plain").write_text("plain\n")
    (src / "readonly").write_text("read only\n")
    os.chmod(src / "readonly", 0o444)
    (src / "rootfile").write_text("root's\n")
    os.chown(src / "rootfile", 0, 0)
    os.chmod(src / "rootfile", 0o644)
    (src / "setuid").write_text("#!/bin/sh\n")
    os.chown(src / "setuid", 1000, 1000)
    os.chmod(src / "setuid", 0o4755)  # after the chown, which clears set-id bits
    os.mkfifo(src / "fifo", 0o620)
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "blk", 0o640 | stat.S_IFBLK, os.makedev(7, 200))
    os.symlink("plain", src / "link")
    sub = src / "sub"
    sub.mkdir()
    (sub / "setgid").write_text("group\n")
    os.chown(sub / "setgid", 1000, 1001)
    os.chmod(sub / "setgid", 0o2755)
    os.chown(sub, 1000, 1001)
    os.chmod(sub, 0o1777)
    for p in [*sorted(src.rglob("*"), reverse=True), src]:
        os.utime(p, ns=(T0, T0), follow_symlinks=False)


def _dump(root: Path) -> dict[str, tuple[object, ...]]:
    """Per path: type+mode, owner, group, rdev, size, mtime, contents/target, %stat xattr."""
    out: dict[str, tuple[object, ...]] = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(p)
        try:
            x: object = os.getxattr(p, XSTAT, follow_symlinks=False)
        except OSError as ex:
            x = ex.errno
        if stat.S_ISREG(st.st_mode):
            body: object = p.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(p)
        else:
            body = None
        out[os.fspath(p.relative_to(root))] = (
            oct(st.st_mode), st.st_uid, st.st_gid, st.st_rdev, body, x,
            st.st_size if not stat.S_ISDIR(st.st_mode) else None,
            st.st_mtime_ns if p != root else None)
    return out


@pytest.fixture
def base() -> Iterator[Path]:
    # pytest's tmp dirs are root-only (0700); an unprivileged run needs its own.
    d = Path(tempfile.mkdtemp(prefix="netsync-fake-"))
    try:
        os.chmod(d, 0o755)
        yield d
    finally:
        shutil.rmtree(d)


def _dest(path: Path) -> None:
    path.mkdir()
    os.chown(path, NOBODY, NOBODY)


def _both(base: Path, sync_cmd: list[str], args: list[str], src: str, dests: tuple[str, str],
          user: int | None = NOBODY) -> tuple[tc.Run, tc.Run]:
    r = tc.run([tc.RSYNC], [*args, f"{src}/", f"{dests[0]}/"], base, user=user)
    t = tc.run(sync_cmd, [*args, f"{src}/", f"{dests[1]}/"], base, user=user)
    assert t.returncode == r.returncode, f"{r.describe()}\n{t.describe()}"
    tc.assert_same_output(tc.output_lines(r.stdout), tc.output_lines(t.stdout))
    return r, t


def test_fake_super_local_copy_as_nobody(base: Path, sync_cmd: list[str]) -> None:
    _make_src(base / "src")
    _dest(base / "ref")
    _dest(base / "test")
    r, t = _both(base, sync_cmd, ["-ai", "--fake-super"], "src", ("ref", "test"))
    assert r.returncode == 0, r.describe()
    ref = _dump(base / "ref")
    assert ref == _dump(base / "test")
    # What rsync stores, so the comparison above is not between two empty trees.
    assert ref["null"][0] == oct(0o100644) and ref["null"][5] == b"20644 1,3 0:0"
    assert ref["setuid"][5] == b"104755 0,0 1000:1000"
    assert ref["link"][4] == b"plain" and ref["link"][5] == b"120777 0,0 0:0"
    assert b"cD+++++++++ null" in t.stdout.split(b"\n")

    # A re-run is a no-op for both: nothing itemized, nothing changed.
    r, t = _both(base, sync_cmd, ["-ai", "--fake-super"], "src", ("ref", "test"))
    assert r.stdout == t.stdout == b""
    assert _dump(base / "ref") == _dump(base / "test") == ref

    # A change the real file cannot show is still seen (the xattr is compared).
    os.chown(base / "src" / "rootfile", 1000, 1000)
    os.chmod(base / "src" / "rootfile", 0o4711)
    os.utime(base / "src" / "rootfile", ns=(T0, T0))
    r, t = _both(base, sync_cmd, ["-ai", "--fake-super"], "src", ("ref", "test"))
    assert r.stdout.split(b"\n")[0] == b".f...pog... rootfile"
    assert _dump(base / "ref") == _dump(base / "test")
    assert _dump(base / "test")["rootfile"][5] == b"104711 0,0 1000:1000"


def test_fake_super_without_owner_records_zero(base: Path, sync_cmd: list[str]) -> None:
    """Without -o/-g rsync records owner and group 0 for top-level entries (it
    reads ids the file list never got: 0 there, pointer bits below a subdir, which
    are not compared)."""
    _make_src(base / "src")
    _dest(base / "ref")
    _dest(base / "test")
    _both(base, sync_cmd, ["-rlptD", "-i", "--fake-super"], "src", ("ref", "test"))

    def top(d: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
        return {k: v for k, v in d.items() if "/" not in k}

    got = top(_dump(base / "test"))
    assert got == top(_dump(base / "ref"))
    assert got["setuid"][5] == b"104755 0,0 0:0"


def test_fake_super_restore_as_root(base: Path, sync_cmd: list[str]) -> None:
    """The fake-super copy sent back by a root receiver gives the original tree
    (--fake-super for the sending side only: -M--super, as rsync.1 says)."""
    _make_src(base / "src")
    _dest(base / "fake")
    run = tc.run(sync_cmd, ["-a", "--fake-super", "src/", "fake/"], base, user=NOBODY)
    assert run.returncode == 0, run.describe()
    (base / "ref").mkdir()
    (base / "test").mkdir()
    _both(base, sync_cmd, ["-ai", "--fake-super", "-M--super"], "fake",
          ("ref", "test"), user=None)
    want = _dump(base / "src")
    assert _dump(base / "ref") == want
    assert _dump(base / "test") == want


# --- a daemon module with "fake super = yes" and "uid = nobody" --------------------

def _daemon(kind: str, root: Path) -> tuple[subprocess.Popen[bytes], int]:
    root.mkdir()
    (root / "mod").mkdir()
    os.chown(root / "mod", NOBODY, NOBODY)
    group = "nogroup" if _has_group("nogroup") else "nobody"
    conf = root / "rsyncd.conf"
    conf.write_text("\n".join([
        "use chroot = no", "munge symlinks = no", "uid = nobody", f"gid = {group}",
        f"log file = {root / 'log'}", f"lock file = {root / 'lock'}",
        "[fake]", f"path = {root / 'mod'}", "read only = no", "fake super = yes", ""]))
    cmd = [tc.RSYNC] if kind == "rsync" else tc.program_under_test()
    return peers.start_daemon(cmd, conf, env=tc.sync_env())


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def test_daemon_fake_super_module(base: Path) -> None:
    assert pwd.getpwnam("nobody").pw_uid == NOBODY
    _make_src(base / "src")
    procs = []
    try:
        ports = []
        for kind in ("rsync", "netsync"):
            proc, port = _daemon(kind, base / kind)
            procs.append(proc)
            ports.append(port)

        def push(i: int) -> tc.Run:
            return tc.run([tc.RSYNC], ["-ai", "src/", f"rsync://127.0.0.1:{ports[i]}/fake/"],
                          base)

        r, t = push(0), push(1)
        assert r.returncode == t.returncode == 0, f"{r.describe()}\n{t.describe()}"
        tc.assert_same_output(tc.output_lines(r.stdout), tc.output_lines(t.stdout))
        stored = _dump(base / "rsync" / "mod")
        assert _dump(base / "netsync" / "mod") == stored
        assert stored["blk"][5] == b"60640 7,200 0:0"
        assert stored["sub/setgid"][5] == b"102755 0,0 1000:1001"

        r, t = push(0), push(1)  # nothing to do the second time
        assert r.stdout == t.stdout == b""

        # Pulled back by a root client, the daemon's files are the original tree.
        want = _dump(base / "src")
        for i, kind in enumerate(("rsync", "netsync")):
            run = tc.run([tc.RSYNC], ["-a", f"rsync://127.0.0.1:{ports[i]}/fake/",
                                      f"back-{kind}/"], base)
            assert run.returncode == 0, run.describe()
            assert _dump(base / f"back-{kind}") == want, kind
    finally:
        for proc in procs:
            peers.stop(proc)


# --- remote-shell transfers with netsync --server on the far end -------------------

def _fake_rsh(base: Path) -> str:
    """A remote shell that runs the command here (like ssh to localhost, no sshd)."""
    rsh = base / "rsh"
    rsh.write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    rsh.chmod(0o755)
    return os.fspath(rsh)


def _server_path(sync_cmd: list[str], user: int | None = None) -> str:
    pre = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return shlex.join([*pre, *sync_cmd])


def test_fake_super_server_receiver(base: Path, sync_cmd: list[str]) -> None:
    """rsync -M--fake-super pushing to a non-root netsync --server stores what an rsync
    server stores; pulled back by root (-M--fake-super on the sender) it is the original."""
    _make_src(base / "src")
    _dest(base / "ref")
    _dest(base / "test")
    rsh = _fake_rsh(base)
    common = ["-ai", "--cc=md5", "-M--fake-super", "-e", rsh]
    for _ in range(2):  # the second run finds nothing to do
        r = tc.run([tc.RSYNC], [*common, f"--rsync-path={_server_path(['rsync'], NOBODY)}",
                                "src/", f"x:{base}/ref/"], base)
        t = tc.run([tc.RSYNC], [*common, f"--rsync-path={_server_path(sync_cmd, NOBODY)}",
                                "src/", f"x:{base}/test/"], base)
        assert r.returncode == t.returncode == 0, f"{r.describe()}\n{t.describe()}"
        assert r.stdout == t.stdout
        assert _dump(base / "ref") == _dump(base / "test")
    assert r.stdout == b""
    t = tc.run([tc.RSYNC], [*common, f"--rsync-path={_server_path(sync_cmd)}",
                            f"x:{base}/test/", "back/"], base)
    assert t.returncode == 0, t.describe()
    assert _dump(base / "back") == _dump(base / "src")


# --- --write-devices ---------------------------------------------------------------

def _device_work(work: Path, rdev: int) -> None:
    (work / "src").mkdir(parents=True)
    (work / "src" / "data").write_bytes(b"into the device\n")
    os.utime(work / "src" / "data", ns=(T0, T0))
    os.utime(work / "src", ns=(T0, T0))
    (work / "dst").mkdir()
    os.mknod(work / "dst" / "data", 0o600 | stat.S_IFCHR, rdev)
    os.utime(work / "dst", ns=(T0, T0))


def _norm_err(run: tc.Run, work: Path) -> list[bytes]:
    """stderr lines without the program name, source location and work dir."""
    out = []
    for line in run.stderr.splitlines():
        line = line.replace(os.fsencode(work), b"WORK")
        line = re.sub(rb"^(rsync|netsync)", b"PROG", line)
        out.append(re.sub(rb" at [\w.]+\(\d+\)| \[\w+=[\d.]+\w*\]$", b"", line))
    return out


@pytest.mark.parametrize("args", [["-ai", "--write-devices"], ["-ri", "--write-devices"],
                                  ["-ai"]], ids=["a", "no-times", "without"])
def test_write_devices_into_null(base: Path, sync_cmd: list[str], args: list[str]) -> None:
    """A char device with /dev/null's numbers takes the file's data and stays a device
    (its time set with -t); without --write-devices it is replaced by the file."""
    runs = []
    for who, cmd in (("ref", [tc.RSYNC]), ("test", sync_cmd)):
        _device_work(base / who, os.makedev(1, 3))
        first = tc.run(cmd, [*args, "src/", "dst/"], base / who)
        again = tc.run(cmd, [*args, "src/", "dst/"], base / who)
        dump = _dump(base / who / "dst")
        if "-a" not in args[0]:  # written "now" without -t
            dump = {k: v[:7] for k, v in dump.items()}
        runs.append((first, again, dump))
    (r1, r2, rdump), (t1, t2, tdump) = runs
    for r, t in ((r1, t1), (r2, t2)):
        assert r.returncode == t.returncode == 0, f"{r.describe()}\n{t.describe()}"
        assert r.stdout == t.stdout
    assert rdump == tdump
    if "--write-devices" in args:
        assert stat.S_ISCHR(int(tdump["data"][0], 8)) and tdump["data"][3] == os.makedev(1, 3)
        want = b">f.s....... data" if args[0] == "-ai" else b">f.sT...... data"
        assert want in t2.stdout.split(b"\n")
    else:
        assert tdump["data"][4] == b"into the device\n"


def test_write_devices_into_full(base: Path, sync_cmd: list[str]) -> None:
    """/dev/full's numbers: the write fails with ENOSPC, which ends the run (exit 11)
    -- the data really goes into the device."""
    runs = []
    for who, cmd in (("ref", [tc.RSYNC]), ("test", sync_cmd)):
        _device_work(base / who, os.makedev(1, 7))
        run = tc.run(cmd, ["-ri", "--write-devices", "src/", "dst/"], base / who)
        runs.append((run, _norm_err(run, base / who)))
    (r, rerr), (t, terr) = runs
    assert r.returncode == t.returncode == 11, f"{r.describe()}\n{t.describe()}"
    assert r.stdout == t.stdout
    assert rerr == terr
    assert b'PROG: [receiver] write failed on "WORK/dst/data": No space left on device (28)' \
        in terr


def test_write_devices_server_and_client(base: Path, sync_cmd: list[str]) -> None:
    """Over a remote shell: stock rsync pushing --write-devices to netsync --server, and
    netsync pushing to a stock rsync server (which needs --write-devices passed on)."""
    rsh = _fake_rsh(base)
    cases = {
        "rsync-rsync": ([tc.RSYNC], "rsync"),
        "rsync-netsync": ([tc.RSYNC], _server_path(sync_cmd)),
        "netsync-rsync": (sync_cmd, "rsync"),
    }
    seen = []
    for name, (client, server) in cases.items():
        work = base / name
        _device_work(work, os.makedev(1, 3))
        run = tc.run(client, ["-ai", "--write-devices", "-e", rsh, f"--rsync-path={server}",
                              "src/", f"x:{work}/dst/"], work)
        assert run.returncode == 0, run.describe()
        seen.append((run.stdout, _dump(work / "dst")))
    assert seen[0] == seen[1] == seen[2]
    assert stat.S_ISCHR(int(seen[0][1]["data"][0], 8))


# --- --copy-as ---------------------------------------------------------------------

def _copy_as_work(work: Path) -> None:
    (work / "src").mkdir(parents=True)
    (work / "src" / "f").write_text("copied\n")
    os.utime(work / "src" / "f", ns=(T0, T0))
    (work / "mine").mkdir()
    os.chown(work / "mine", NOBODY, NOBODY)
    (work / "roots").mkdir()
    os.chmod(work, 0o755)


def test_copy_as_local(base: Path, sync_cmd: list[str]) -> None:
    """Root copying --copy-as=nobody: a dir only nobody may write into works and the
    files are nobody's; root's own dir is refused to the user (exit 11)."""
    for who, cmd in (("ref", [tc.RSYNC]), ("test", sync_cmd)):
        work = base / who
        _copy_as_work(work)
        ok = tc.run(cmd, ["-ai", "--copy-as=nobody", "src/", "mine/new/"], work)
        assert ok.returncode == 0, ok.describe()
        assert ok.stdout == b"created directory mine/new\ncd+++++++++ ./\n>f+++++++++ f\n"
        st = os.lstat(work / "mine" / "new" / "f")
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
        bad = tc.run(cmd, ["-ai", "--copy-as=nobody", "src/", "roots/new/"], work)
        assert bad.returncode == 11, bad.describe()
        assert not (work / "roots" / "new").exists()
        assert any(b'mkdir "' + os.fsencode(work) + b'/roots/new" failed: Permission denied'
                   in line for line in bad.stderr.splitlines())


@pytest.mark.parametrize(("spec", "user"), [
    ("nosuchuser", None), ("nobody:nosuchgroup", None), ("2147480000", None),
    ("nobody", NOBODY), ("root", NOBODY)],
    ids=["user", "group", "no-passwd-entry", "nonroot-self", "nonroot-root"])
def test_copy_as_errors(base: Path, sync_cmd: list[str], spec: str, user: int | None) -> None:
    """Unknown names, and any --copy-as by a non-root user: exit 1 and rsync's message
    (a local rsync prints it from both of its processes, netsync once)."""
    runs = []
    for who, cmd in (("ref", [tc.RSYNC]), ("test", sync_cmd)):
        work = base / who
        _copy_as_work(work)
        os.chmod(work / "roots", 0o777)
        run = tc.run(cmd, ["-a", f"--copy-as={spec}", "src/", "roots/new/"], work, user=user)
        runs.append((run, _norm_err(run, work)))
        assert not (work / "roots" / "new").exists()
    (r, rerr), (t, terr) = runs
    assert r.returncode == t.returncode == 1, f"{r.describe()}\n{t.describe()}"
    assert terr and set(terr) <= set(rerr), (rerr, terr)


def test_copy_as_server(base: Path, sync_cmd: list[str]) -> None:
    """-M--copy-as=nobody to netsync --server (run as root): the server writes as nobody."""
    rsh = _fake_rsh(base)
    outs = []
    for who, server in (("ref", "rsync"), ("test", _server_path(sync_cmd))):
        work = base / who
        _copy_as_work(work)
        common = ["-ai", "-M--copy-as=nobody", "-e", rsh, f"--rsync-path={server}"]
        ok = tc.run([tc.RSYNC], [*common, "src/", f"x:{work}/mine/new/"], work)
        assert ok.returncode == 0, ok.describe()
        st = os.lstat(work / "mine" / "new" / "f")
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
        bad = tc.run([tc.RSYNC], [*common, "src/", f"x:{work}/roots/new/"], work)
        assert bad.returncode == 11, bad.describe()
        outs.append((ok.stdout.replace(os.fsencode(work), b"WORK"), bad.returncode))
    assert outs[0] == outs[1]


def test_fake_super_corrupt_xattr_ends_the_run(base: Path, sync_cmd: list[str]) -> None:
    runs = []
    for who, cmd in (("ref", [tc.RSYNC]), ("test", sync_cmd)):
        work = base / who
        (work / "src").mkdir(parents=True)
        (work / "dst").mkdir()
        for d in ("src", "dst"):
            (work / d / "f").write_text("same\n")
        os.setxattr(work / "dst" / "f", XSTAT, b"100644 garbage")
        run = tc.run(cmd, ["-ai", "--fake-super", "src/", "dst/"], work)
        runs.append((run, _norm_err(run, work)))
    (r, rerr), (t, terr) = runs
    assert r.returncode == t.returncode == 11, f"{r.describe()}\n{t.describe()}"
    want = b'Corrupt user.rsync.%stat xattr attached to "WORK/dst/f": "100644 garbage"'
    assert want in rerr
    assert b"PROG: " + want in terr


# Not --compare-dest with -H: rsync 3.5.0 itself fails there when a group member
# matches (exit 2 "File-list index 5 not in 0 - -1", and a dry run never ends).
@pytest.mark.parametrize(("kind", "extra"), [
    ("link", []), ("link", ["-H"]), ("link", ["-n", "-H"]), ("compare", []),
    ("compare", ["-n"]), ("copy", []), ("copy", ["-H"]), ("copy", ["-n", "-H"])],
    ids=lambda a: "".join(a) if isinstance(a, list) else a)
def test_fake_super_alt_dest_uses_the_stat_xattr(base: Path, sync_cmd: list[str], kind: str,
                                                 extra: list[str]) -> None:
    """An alt-dest file is stat'ed as rsync's link_stat() does (x_lstat folds in the
    %stat xattr): one whose real mode and owner differ from the source's but whose
    xattr matches is an unchanged basis, for the first of a hard-link group too."""
    src, alt = base / "src", base / "alt"
    src.mkdir()
    alt.mkdir()
    for name, body in (("f", b"hello\n"), ("g", b"group\n")):
        (src / name).write_bytes(body)
        os.chown(src / name, 1000, 1000)
        os.chmod(src / name, 0o755)
        (alt / name).write_bytes(body)
        os.chown(alt / name, NOBODY, NOBODY)
        os.chmod(alt / name, 0o600)
        os.setxattr(alt / name, XSTAT, b"100755 0,0 1000:1000")
    os.link(src / "g", src / "h")
    (src / "new").write_bytes(b"not in alt\n")
    for p in [*src.iterdir(), *alt.iterdir(), src, alt]:
        os.utime(p, ns=(T0, T0))
    _dest(base / "ref")
    _dest(base / "test")
    r, t = _both(base, sync_cmd, ["-ai", "--fake-super", *extra, f"--{kind}-dest=../alt"],
                 "src", ("ref", "test"))
    assert r.returncode == 0, r.describe()
    assert b"f" not in tc.output_lines(t.stdout)  # the basis is unchanged: no item for f
    ref = _dump(base / "ref")
    assert ref == _dump(base / "test")
    if "-n" in extra or kind == "compare":
        assert "f" not in ref
    else:
        assert ref["f"][5] == b"100755 0,0 1000:1000"
        same = (base / "test" / "f").stat().st_ino == (alt / "f").stat().st_ino
        assert same == (kind == "link")
        if "-H" in extra:
            assert (base / "test" / "h").stat().st_ino == (base / "test" / "g").stat().st_ino


@pytest.mark.parametrize("args", [["-ai", "-b"], ["-ai", "-b", "--backup-dir=BK"],
                                  ["-ri", "-b", "--suffix=.old"], ["-ai", "-b", "-n"]],
                         ids=["suffix", "backup-dir", "no-attrs", "dry-run"])
def test_write_devices_backs_up_the_device(base: Path, sync_cmd: list[str],
                                           args: list[str]) -> None:
    """generator.c: -b with the --inplace that --write-devices implies keeps what it
    reads of the device in a regular file with the device's attributes (-a) and says
    so at --info=backup; the device stays a device.  Not in a dry run."""
    runs = []
    for who, cmd in (("ref", [tc.RSYNC]), ("test", sync_cmd)):
        _device_work(base / who, os.makedev(1, 3))
        os.chown(base / who / "dst" / "data", 12, 34)
        os.utime(base / who / "dst" / "data", ns=(T0 - 10**12, T0 - 10**12))
        os.utime(base / who / "dst", ns=(T0, T0))
        # (an absolute --backup-dir: this rsync refuses a "../" one)
        argv = [a.replace("BK", os.fspath(base / who / "bk")) for a in args]
        run = tc.run(cmd, [*argv, "--write-devices", "--info=backup", "src/", "dst/"],
                     base / who)
        # Dirs, and everything without -t, get "now" as their time: not compared.
        dump = {k: v[:6] if stat.S_ISDIR(int(v[0], 8)) or "-a" not in args[0] else v
                for k, v in _dump(base / who).items() if not k.startswith("src")}
        runs.append((run, dump))
    (r, rdump), (t, tdump) = runs
    assert r.returncode == t.returncode == 0, f"{r.describe()}\n{t.describe()}"
    assert r.stdout.replace(os.fsencode(base / "ref"), b"W") \
        == t.stdout.replace(os.fsencode(base / "test"), b"W")
    assert rdump == tdump
    backup = [k for k in tdump if k.startswith("bk/") or k.startswith("dst/data")
              and k != "dst/data"]
    assert stat.S_ISCHR(int(tdump["dst/data"][0], 8))
    if "-n" in args:
        assert backup == []
    else:
        assert len(backup) == 1 and stat.S_ISREG(int(tdump[backup[0]][0], 8))
        assert b"backed up data to " in t.stdout
        if args[0] == "-ai":
            assert tdump[backup[0]][:3] == (oct(0o100600), 12, 34)


def test_fake_super_over_an_identical_copy(base: Path, sync_cmd: list[str]) -> None:
    """An up-to-date file still goes through set_file_attrs() -> set_stat_xattr() in
    rsync: the real file gets owner access (0444 -> 0644, no set-id bits) and the mode
    goes into the %stat xattr. netsync left such files untouched."""
    _make_src(base / "src")
    for d in ("dst-r", "dst-n"):  # a plain (root) copy first, then --fake-super over it
        assert tc.run([tc.RSYNC], ["-a", "src/", f"{d}/"], base).returncode == 0
    _both(base, sync_cmd, ["-ai", "--fake-super"], "src", ("dst-r", "dst-n"), user=None)
    want = _dump(base / "dst-r")
    assert want["readonly"][0] == oct(0o100644) and isinstance(want["readonly"][5], bytes)
    assert _dump(base / "dst-n") == want
