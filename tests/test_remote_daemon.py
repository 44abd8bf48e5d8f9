"""netsync as a client of a stock ``rsync --daemon``: listing, auth, push, pull, refusals."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import treecompare as tc
import trees
from interop import peers
from interop.peers import RsyncDaemon, SshServer

rsyncd = peers.rsyncd  # the session fixtures
sshd_server = peers.sshd_server


def _run(cmd: list[str], args: list[str], cwd: Path, env: dict[str, str] | None = None):
    import subprocess

    full = tc.sync_env()
    full.update(env or {})
    p = subprocess.run([*cmd, *args], cwd=cwd, env=full, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    return tc.Run([*cmd, *args], p.returncode, p.stdout, p.stderr)


def _both(args: list[str], cwd: Path, env: dict[str, str] | None = None):
    return _run([tc.RSYNC], args, cwd, env), _run(tc.program_under_test(), args, cwd, env)


def test_module_listing(rsyncd: RsyncDaemon, tmp_path: Path) -> None:
    want, got = _both([rsyncd.url()], tmp_path)
    assert got.returncode == want.returncode == 0, got.describe()
    assert got.stdout == want.stdout
    assert b"open           \tOpen module" in got.stdout


@pytest.mark.parametrize("spec", ["url", "double-colon"])
def test_push_then_pull(rsyncd: RsyncDaemon, tmp_path: Path, spec: str) -> None:
    trees.make_tree(tmp_path / "src", "small")
    now = time.time_ns() - 10**9
    results = {}
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        remote = (rsyncd.url(f"open/{spec}-{who}/") if spec == "url"
                  else f"127.0.0.1::open/{spec}-{who}/")
        port = [f"--port={rsyncd.port}"] if spec != "url" else []
        push = _run(cmd, ["-a", *port, "src/", remote], tmp_path)
        assert push.returncode == 0, push.describe()
        pull = _run(cmd, ["-a", *port, remote, f"back-{who}/"], tmp_path)
        assert pull.returncode == 0, pull.describe()
        results[who] = (tc.snapshot(rsyncd.modules["open"] / f"{spec}-{who}", now),
                        tc.snapshot(tmp_path / f"back-{who}", now))
    tc.assert_same(results["rsync"][0], results["netsync"][0], what="pushed trees")
    tc.assert_same(results["rsync"][1], results["netsync"][1], what="pulled trees")
    tc.assert_same(tc.snapshot(tmp_path / "src"), results["netsync"][1])


def test_auth_module(rsyncd: RsyncDaemon, tmp_path: Path) -> None:
    url = f"rsync://{rsyncd.user}@127.0.0.1:{rsyncd.port}/auth/"
    ok = _run(tc.program_under_test(), ["-a", url, "got/"], tmp_path,
              {"RSYNC_PASSWORD": rsyncd.password})
    assert ok.returncode == 0, ok.describe()
    assert (tmp_path / "got" / "secret.txt").read_text() == "for alice\n"
    want, got = _both(["-a", url, "bad/"], tmp_path, {"RSYNC_PASSWORD": "wrong"})
    assert got.returncode == want.returncode == 5, got.describe()
    assert b"@ERROR: auth failed on module auth" in got.stderr
    assert not (tmp_path / "bad" / "secret.txt").exists()


def test_password_file(rsyncd: RsyncDaemon, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(rsyncd.password + "\n")
    pw.chmod(0o600)
    url = f"rsync://{rsyncd.user}@127.0.0.1:{rsyncd.port}/auth/"
    got = _run(tc.program_under_test(), ["-a", f"--password-file={pw}", url, "got/"], tmp_path)
    assert got.returncode == 0, got.describe()
    assert (tmp_path / "got" / "secret.txt").exists()


@pytest.mark.parametrize("case", ["unknown-module", "read-only"])
def test_refusals_match_rsync(rsyncd: RsyncDaemon, tmp_path: Path, case: str) -> None:
    (tmp_path / "f").write_text("x")
    args = (["-a", rsyncd.url("nomod/"), "d/"] if case == "unknown-module"
            else ["-a", "f", rsyncd.url("ro/")])
    want, got = _both(args, tmp_path)
    assert got.returncode == want.returncode != 0, got.describe()
    assert b"Traceback" not in got.stderr
    # The daemon's own refusal line ("@ERROR: ..." / "ERROR: module is read only").
    first = want.stderr.splitlines()[0]
    assert first.startswith((b"@ERROR", b"ERROR")) and first in got.stderr.splitlines()


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_daemon_over_ssh(rsyncd: RsyncDaemon, sshd_server: SshServer, tmp_path: Path,
                         direction: str) -> None:
    """``-e ssh host::module``: the daemon protocol over a remote shell."""
    trees.make_tree(tmp_path / "src", "small")
    via = ["-a", "-e", sshd_server.rsh, f"--rsync-path=rsync --config={rsyncd.dir / 'rsyncd.conf'}"]
    target = f"{sshd_server.login}::open/over-ssh-{direction}/"
    if direction == "push":
        run = _run(tc.program_under_test(), [*via, "src/", target], tmp_path)
        got = rsyncd.modules["open"] / f"over-ssh-{direction}"
    else:
        seed = _run([tc.RSYNC], [*via, "src/", target], tmp_path)
        assert seed.returncode == 0, seed.describe()
        run = _run(tc.program_under_test(), [*via, target, "back/"], tmp_path)
        got = tmp_path / "back"
    assert run.returncode == 0, run.describe()
    assert b"Welcome to the netsync test daemon" in run.stdout
    tc.assert_same(tc.snapshot(tmp_path / "src"), tc.snapshot(got))


def test_pull_past_files_the_daemon_cannot_open(tmp_path: Path) -> None:
    # The daemon (as nobody) lists a file it cannot open: its sender says MSG_NO_SEND
    # and goes straight on with the next file, so the message and the next file's
    # header often arrive in one read. The files after it must still come (exit 23,
    # as rsync's client), not "sender sent file N instead of M" (exit 2).
    import os
    import subprocess

    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "a-locked").write_bytes(b"secret\n")
    (mod / "a-locked").chmod(0)
    for i in range(60):
        (mod / f"b{i:03d}").write_bytes(b"data %d\n" % i)
    os.chmod(tmp_path, 0o755)
    port = peers.free_port()
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\nuid = nobody\ngid = nogroup\n[m]\n  path = {mod}\n")
    proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--port={port}",
                             "--address=127.0.0.1", f"--config={conf}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert peers.wait_for_port(port, proc)
        for _ in range(3):
            runs = {}
            for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
                dst = tmp_path / f"dst-{who}"
                subprocess.run(["rm", "-rf", str(dst)], check=True)
                runs[who] = _run(cmd, ["-r", f"rsync://127.0.0.1:{port}/m/", f"{dst}/"],
                                 tmp_path)
            want, got = runs["rsync"], runs["netsync"]
            assert want.returncode == 23, want.describe()
            assert got.returncode == want.returncode, got.describe()
            assert b'send_files failed to open "a-locked" (in m)' in got.stderr
            assert sorted(p.name for p in (tmp_path / "dst-netsync").iterdir()) == \
                [f"b{i:03d}" for i in range(60)]
    finally:
        peers.stop(proc)


_CMD_LINES = (b"opening connection using:", b"opening tcp connection to", b"sending daemon args:",
              b"protected args:")


@pytest.mark.parametrize("secluded", [[], ["-s"]], ids=["plain", "secluded"])
@pytest.mark.parametrize("via", ["daemon", "ssh", "daemon-over-ssh"])
def test_vv_shows_the_commands_as_rsync(rsyncd: RsyncDaemon, sshd_server: SshServer,
                                        tmp_path: Path, via: str, secluded: list[str]) -> None:
    """-vv (--debug=cmd,connect): the command run, the connection made, the args sent."""
    trees.make_tree(tmp_path / "src", "small")
    seed = _run([tc.RSYNC], ["-a", "src/", rsyncd.url("open/vv/")], tmp_path)
    assert seed.returncode == 0, seed.describe()
    if via == "daemon":
        args, remote = [], rsyncd.url("open/vv/")
    elif via == "ssh":
        args, remote = ["-e", sshd_server.rsh], f"{sshd_server.login}:{rsyncd.modules['open']}/vv/"
    else:
        args = ["-e", sshd_server.rsh,
                f"--rsync-path=rsync --config={rsyncd.dir / 'rsyncd.conf'}"]
        remote = f"{sshd_server.login}::open/vv/"
    lines = {}
    for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
        run = _run(cmd, ["-avv", *secluded, *args, remote, f"{who}/"], tmp_path)
        assert run.returncode == 0, run.describe()
        lines[who] = [ln for ln in run.stdout.splitlines() if ln.startswith(_CMD_LINES)]
    assert lines["netsync"] == lines["rsync"]
    assert lines["rsync"], "rsync printed none of the lines compared"


@pytest.mark.parametrize("opts", [["-ai"], ["-ain"], ["-ai", "--no-i-r"]], ids=" ".join)
def test_daemon_transfer_log_sees_our_items(tmp_path: Path, opts: list[str]) -> None:
    """A pull reports its generator's items to the sender (from protocol 29), so an
    rsyncd's transfer log lists the new dirs and links as for an rsync client (a dry
    run logs nothing there, but its transfers are reported and echoed too)."""
    import re

    trees.make_tree(tmp_path / "mod", "small")
    log = tmp_path / "rsyncd.log"
    conf = tmp_path / "rsyncd.conf"
    import os

    as_root = "uid = root\ngid = root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"use chroot = no\n{as_root}log file = {log}\ntransfer logging = yes\n"
                    f"log format = %o %i %n%L\n[m]\n    path = {tmp_path / 'mod'}\n")
    proc, port = peers.start_daemon([tc.RSYNC], conf)
    try:
        items, out = {}, {}
        for who, cmd in (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test())):
            (tmp_path / who).mkdir()
            before = log.read_text()
            run = _run(cmd, [*opts, f"rsync://127.0.0.1:{port}/m/", "dst/"], tmp_path / who)
            assert run.returncode == 0, run.describe()
            out[who] = tc.output_lines(run.stdout)
            deadline = time.monotonic() + 10
            while log.read_text().count("total size") == before.count("total size") \
                    and time.monotonic() < deadline:
                time.sleep(0.05)  # the daemon's child logs its last line as it exits
            new = log.read_text()[len(before):]
            items[who] = [re.sub(r"^\S+ \S+ \[\d+\] ", "", ln) for ln in new.splitlines()
                          if re.match(r"^\S+ \S+ \[\d+\] send ", ln)]
    finally:
        peers.stop(proc)
    assert out["netsync"] == out["rsync"]
    assert any(ln.startswith(b"cd+++") for ln in out["rsync"]), out["rsync"]
    assert items["netsync"] == items["rsync"]
    assert "-ain" in opts or any(ln.startswith("send cd") for ln in items["rsync"])
