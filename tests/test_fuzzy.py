"""--fuzzy (-y) and -yy, side by side with Debian's rsync.

A missing destination file gets a similar file of its directory (with -yy also
of the --compare-dest/--copy-dest/--link-dest dirs) as its delta basis: the
tree, the ``-i`` lines (the file still shows as new) and the "Literal data" /
"Matched data" counters must be rsync's.  Locally (where rsync defaults to
--whole-file) the cases use --no-W; over the wire the delta is the default.
Which candidate wins is checked through rsync's own --debug=fuzzy2 lines.
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers
from interop.peers import RsyncDaemon, SshServer

sshd_server = peers.sshd_server  # the session fixtures
rsyncd = peers.rsyncd

_SRC = str(Path(__file__).resolve().parent.parent / "src")
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"
T0 = 1_600_000_000 * 10**9
T1 = 1_650_000_000 * 10**9


def _put(path: Path, data: bytes, mtime_ns: int = T0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _make(work: Path, dst: str = "dst") -> None:
    """src/ and an older ``dst`` whose files were renamed since (and some decoys)."""
    r = random.Random(7)
    base = r.randbytes(200_000)
    tar = r.randbytes(120_000)
    exact = r.randbytes(50_000)
    chg = r.randbytes(40_000)
    s, d = work / "src", work / dst
    # Top: a renamed report (the best candidate) beside an unrelated name.
    _put(s / "report-2024.txt", base[:150_000] + b"new tail" * 100, T1)
    _put(s / "other.bin", r.randbytes(3000))
    _put(d / "report-2023.txt", base)
    # sub/: suffix rules (.bak, ~, .v1 digits), an exact size+mtime match beating a
    # closer name, and a file rewritten here that is then no basis for the next one.
    _put(s / "sub" / "data.v2.tar", tar[:60_000] + b"changed" + tar[60_000:], T1)
    _put(d / "sub" / "data.v1.tar", tar)
    _put(d / "sub" / "data.v1.tar.bak", r.randbytes(30_000))
    _put(d / "sub" / "data.v2.tar~", r.randbytes(20_000))
    _put(d / "sub" / "empty.tar", b"")  # empty files are never a basis
    _put(s / "sub" / "exact.bin", exact, T1)
    _put(d / "sub" / "exact.bin.old", r.randbytes(50_000))
    _put(d / "sub" / "zz-moved.bin", exact[:25_000] + r.randbytes(25_000), T1)
    _put(s / "sub" / "chg1.txt", chg[:20_000] + r.randbytes(100))
    _put(d / "sub" / "chg0.txt", chg[20_000:])
    _put(d / "sub" / "chg2.txt", chg)
    _put(s / "sub" / "chg2.txt", r.randbytes(1000) + chg, T1)
    _put(s / "sub" / "chg3.txt", chg + b"more", T1)
    _put(s / "sub" / "keep.txt", b"unchanged\n")
    # Blocks found before the write position: --inplace must still match them (the
    # basis is another file, which the sender learns from the basis type sent).
    rot = r.randbytes(60_000)
    _put(s / "sub" / "rot-b.bin", rot[30_000:] + rot[:30_000], T1)
    _put(d / "sub" / "rot-a.bin", rot)
    _put(d / "sub" / "keep.txt", b"unchanged\n")
    _fix_dir_times(work)


def _fix_dir_times(work: Path) -> None:
    # Dir times made at run time would make ".d..t......" lines a matter of timing.
    for top, t in (("src", T1), ("dst", T0), ("cmp", T0)):
        for dirpath, _, _ in os.walk(work / top):
            os.utime(dirpath, ns=(t, t))


def _pair(tmp_path: Path, setup=_make) -> tuple[Path, Path]:
    a, b = tmp_path / "rsync", tmp_path / "netsync"
    for w in (a, b):
        w.mkdir(parents=True)
        setup(w)
    return a, b


def _fuzzy_lines(out: bytes) -> list[bytes]:
    # The generator's debug lines interleave with the receiver's items in rsync.
    return sorted(ln for ln in out.split(b"\n") if ln.startswith(b"fuzzy "))


def _data_lines(out: bytes) -> list[bytes]:
    return [ln for ln in out.split(b"\n") if ln.startswith((b"Literal data", b"Matched data"))]


def _items(out: bytes) -> list[bytes]:
    return [ln for ln in out.split(b"\n") if ln[:1] in (b">", b"<", b"c", b".", b"*", b"h")]


def _matched(out: bytes) -> int:
    line = next(ln for ln in out.split(b"\n") if ln.startswith(b"Matched data"))
    return int(line.split(b":")[1].split()[0].replace(b",", b""))


def _same(a: Path, b: Path, want: tc.Run, got: tc.Run, now: int, rc: int = 0) -> None:
    assert want.returncode == rc, want.describe()
    assert got.returncode == want.returncode, got.describe()
    assert b"Traceback" not in got.stderr, got.describe()
    tc.assert_same(tc.snapshot(a, now), tc.snapshot(b, now))
    wo = want.stdout.replace(str(a).encode(), b"W")
    go = got.stdout.replace(str(b).encode(), b"W")
    # (rsync's generator prints its deletions apart from the receiver's items)
    tc.assert_same_output(_items(wo), _items(go))
    assert _data_lines(go) == _data_lines(wo)
    assert _fuzzy_lines(go) == _fuzzy_lines(wo)
    assert tc.output_lines(go, "stats") == tc.output_lines(wo, "stats")


def _local(tmp_path: Path, args: list[str], setup=_make, rc: int = 0) -> tuple[bytes, bytes]:
    a, b = _pair(tmp_path, setup)
    now = time.time_ns() - 10**9
    want = tc.run([tc.RSYNC], args, cwd=a)
    got = tc.run(tc.program_under_test(), args, cwd=b)
    _same(a, b, want, got, now, rc)
    return want.stdout, got.stdout


LOCAL = ["-ai", "--no-W", "--stats", "--debug=fuzzy2"]


def test_local_renamed_files(tmp_path: Path) -> None:
    want, got = _local(tmp_path, [*LOCAL, "-y", "src/", "dst/"])
    # The case is what it claims: new files, rebuilt mostly from renamed ones.
    assert b">f+++++++++ report-2024.txt" in got
    assert b"fuzzy basis selected for report-2024.txt: report-2023.txt" in got
    assert b"fuzzy size/modtime match for sub/zz-moved.bin" in got
    assert b"fuzzy basis selected for sub/chg3.txt: sub/chg0.txt" in got
    assert _matched(got) > 300_000


def test_local_without_fuzzy_sends_literal(tmp_path: Path) -> None:
    _, got = _local(tmp_path, [*LOCAL, "src/", "dst/"])
    assert _matched(got) < 50_000  # only chg2.txt, against itself


def test_local_whole_file_and_dry_run(tmp_path: Path) -> None:
    # rsync still picks the basis (its mode matters without -p) but sends no delta.
    _, got = _local(tmp_path, ["-ri", "--stats", "--debug=fuzzy", "-y", "src/", "dst/"])
    assert _matched(got) == 0 and b"fuzzy basis selected" in got
    _local(tmp_path / "n", [*LOCAL, "-n", "-y", "src/", "dst/"])


def _cmp_setup(work: Path) -> None:
    _make(work, "cmp")
    (work / "dst").mkdir()
    _fix_dir_times(work)


@pytest.mark.parametrize("how", ["compare", "copy", "link"])
def test_local_yy_basis_dirs(tmp_path: Path, how: str) -> None:
    args = [*LOCAL, "-yy", f"--{how}-dest=../cmp", "src/", "dst/"]
    _, got = _local(tmp_path, args, _cmp_setup)
    assert b"/dst/../cmp/report-2023.txt\n" in got  # absolute, as rsync prints it
    assert _matched(got) > 300_000


def test_local_single_y_ignores_basis_dirs(tmp_path: Path) -> None:
    _, got = _local(tmp_path, [*LOCAL, "-y", "--compare-dest=../cmp", "src/", "dst/"],
                    _cmp_setup)
    assert b"fuzzy basis selected" not in got


@pytest.mark.parametrize("mode", ["delay", "after", "during"])
def test_local_fuzzy_with_delete(tmp_path: Path, mode: str) -> None:
    """Renamed-away files are bases when deleted late, gone first with --delete-during."""
    _, got = _local(tmp_path, [*LOCAL, "-y", f"--delete-{mode}", "src/", "dst/"])
    assert b"*deleting   report-2023.txt" in got
    if mode == "during":
        assert b"fuzzy basis selected for report-2024.txt" not in got
    else:
        assert b"fuzzy basis selected for report-2024.txt: report-2023.txt" in got


def _many(work: Path) -> None:
    """A dir of 300 files and 60 new ones named like some of them (ties included)."""
    r = random.Random(3)
    alpha = "abcab-_.0011"
    names = sorted({"".join(r.choice(alpha) for _ in range(r.randrange(3, 14)))
                    + r.choice(["", ".txt", ".txt.bak", "~", ".1", ".tar.gz"])
                    for _ in range(300)})
    for n in names:
        _put(work / "dst" / "d" / n, r.randbytes(r.randrange(1, 3000)))
        # The same names under the -yy basis dir: equal scores, the later list wins.
        _put(work / "cmp" / "d" / n, r.randbytes(r.randrange(1, 3000)))
    # Equal scores in one dir (a substitution by one either way): the later name wins.
    for n in ("tie-b.txt", "tie-d.txt"):
        _put(work / "dst" / "d" / n, r.randbytes(1000))
    _put(work / "src" / "d" / "tie-c.txt", r.randbytes(1000), T1)
    for _ in range(60):
        n = list(r.choice(names))
        for _i in range(r.randrange(1, 4)):
            n[r.randrange(len(n))] = r.choice(alpha)
        new = "".join(n).lstrip(".")
        if new and new not in names:
            _put(work / "src" / "d" / new, r.randbytes(2000), T1)
    _fix_dir_times(work)


@pytest.mark.parametrize("extra", [["-y"], ["-yy", "--compare-dest=../cmp"]])
def test_local_many_candidates(tmp_path: Path, extra: list[str]) -> None:
    """Every new file's basis (--debug=fuzzy) is rsync's among hundreds of names."""
    _, got = _local(tmp_path, ["-ai", "--no-W", "--stats", "--debug=fuzzy", *extra,
                               "src/", "dst/"], _many)
    assert got.count(b"fuzzy basis selected") > 40
    assert b"for d/tie-c.txt: d/tie-d.txt\n" in got
    assert (b": /" in got) == (len(extra) > 1)  # the basis dir's copies won the ties


def test_local_single_file(tmp_path: Path) -> None:
    _local(tmp_path, [*LOCAL, "-y", "src/report-2024.txt", "dst/"])
    _local(tmp_path / "2", [*LOCAL, "-y", "src/sub/data.v2.tar", "dst/sub/renamed.tar"])


# --- over the wire ---------------------------------------------------------------------

WIRE = ["-ai", "--stats", "-y"]


def _ssh(tmp_path: Path, ssh: SshServer, client: list[str], direction: str,
         rsync_path: str = "rsync", extra: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """``client`` moves src/ to dst/ over ssh with the stock or the netsync far end."""
    a, b = _pair(tmp_path)
    now = time.time_ns() - 10**9
    runs = []
    for w, cmd, rpath in ((a, [tc.RSYNC], "rsync"), (b, client, rsync_path)):
        args = [*WIRE, *extra, "-e", ssh.rsh, f"--rsync-path={rpath}"]
        if direction == "push":
            args += ["src/", f"{ssh.login}:{w}/dst/"]
        else:
            args += [f"{ssh.login}:{w}/src/", "dst/"]
        runs.append(tc.run(cmd, args, cwd=w))
    _same(a, b, runs[0], runs[1], now)
    assert _matched(runs[1].stdout) > 300_000
    assert b"f+++++++++ report-2024.txt" in runs[1].stdout
    return a, b


def test_pull_from_rsync_over_ssh(sshd_server: SshServer, tmp_path: Path) -> None:
    _ssh(tmp_path, sshd_server, tc.program_under_test(), "pull")


def test_push_to_rsync_over_ssh(sshd_server: SshServer, tmp_path: Path) -> None:
    _ssh(tmp_path, sshd_server, tc.program_under_test(), "push")


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_rsync_client_netsync_server(sshd_server: SshServer, tmp_path: Path,
                                     direction: str) -> None:
    """Stock rsync with netsync --server on the far side (a push: its generator)."""
    _ssh(tmp_path, sshd_server, [tc.RSYNC], direction, NETSYNC_PATH)


def test_rsync_pushes_yy_to_netsync_server(sshd_server: SshServer, tmp_path: Path) -> None:
    a, b = tmp_path / "rsync", tmp_path / "netsync"
    for w in (a, b):
        w.mkdir(parents=True)
        _cmp_setup(w)
    now = time.time_ns() - 10**9
    # WIRE has a -y: this is -yy
    runs = [tc.run([tc.RSYNC], [*WIRE, "-y", "--compare-dest=../cmp", "-e", sshd_server.rsh,
                                f"--rsync-path={rp}", "src/", f"{sshd_server.login}:{w}/dst/"],
                   cwd=w) for w, rp in ((a, "rsync"), (b, NETSYNC_PATH))]
    _same(a, b, *runs, now)
    assert _matched(runs[1].stdout) > 300_000


@pytest.mark.parametrize("extra", [[], ["--inplace"]])
def test_pull_from_rsync_daemon(rsyncd: RsyncDaemon, tmp_path: Path, extra: list[str]) -> None:
    mod = rsyncd.modules["open"] / f"fuzzy-{os.getpid()}-{time.time_ns()}"
    _make(mod)
    shutil.rmtree(mod / "dst")
    a, b = _pair(tmp_path)
    now = time.time_ns() - 10**9
    for w in (a, b):
        shutil.rmtree(w / "src")
    url = rsyncd.url(f"open/{mod.name}/src/")
    want = tc.run([tc.RSYNC], [*WIRE, *extra, url, "dst/"], cwd=a)
    got = tc.run(tc.program_under_test(), [*WIRE, *extra, url, "dst/"], cwd=b)
    try:
        _same(a, b, want, got, now)
        assert _matched(got.stdout) > 300_000
    finally:
        shutil.rmtree(mod)


def test_rsync_pushes_to_netsync_daemon(tmp_path: Path) -> None:
    """A daemon module receiving a -y push (stock rsync --daemon vs netsync --daemon,
    each inetd-style behind RSYNC_CONNECT_PROG)."""
    a, b = _pair(tmp_path)
    now = time.time_ns() - 10**9
    runs = []
    for w, daemon in ((a, [tc.RSYNC]), (b, tc.program_under_test())):
        conf = w / "rsyncd.conf"
        ids = "uid = root\ngid = root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"use chroot = no\n{ids}[m]\n  path = {w / 'dst'}\n"
                        "  read only = no\n")
        env = {**tc.sync_env(),
               "RSYNC_CONNECT_PROG": shlex.join([*daemon, "--daemon", f"--config={conf}"])}
        p = subprocess.run([tc.RSYNC, *WIRE, "src/", "rsync://somehost/m/"], cwd=w, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
        conf.unlink()
        runs.append(tc.Run(p.args, p.returncode, p.stdout, p.stderr))
    _same(a, b, *runs, now)
    assert _matched(runs[1].stdout) > 300_000


@pytest.mark.parametrize("extra", [["-y"], ["-m"], ["--inplace", "--link-dest=../x"],
                                   ["--compare-dest=../x", "--compare-dest=../y"]])
@pytest.mark.parametrize("direction", ["push", "pull"])
def test_options_protocol_28_cannot_carry(sshd_server: SshServer, tmp_path: Path,
                                          direction: str, extra: list[str]) -> None:
    # compat.c setup_protocol(): below protocol 29 these end the run, exit 2, with
    # rsync's message, before any file is looked at.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(b"data\n")
    results = []
    for cmd in ([tc.RSYNC], tc.program_under_test()):
        args = ["-r", "--protocol=28", *extra, "-e", sshd_server.rsh]
        if direction == "push":
            args += ["src/", f"{sshd_server.login}:{tmp_path}/dst/"]
        else:
            args += [f"{sshd_server.login}:{tmp_path}/src/", "dst/"]
        r = tc.run(cmd, args, cwd=tmp_path)
        lines = [ln for ln in r.stderr.split(b"\n") if b"requires protocol 29" in ln]
        results.append((r.returncode, sorted(set(lines))))
    assert results[0][0] == 2
    assert results[1] == results[0]
    assert not (tmp_path / "dst" / "f").exists()
