"""A client's own fatal errors end the run as rsync's do: its exit code (the remote
end's only if that has already exited; it is stopped with SIGUSR1, cleanup.c), its own
messages (options.c reads filter files before connecting: "[client]"; exclude.c's rule
errors are bare), and no connection when the options already fail."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import treecompare as tc

PROGRAMS = (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test()))


@pytest.fixture(autouse=True)
def _need_rsync() -> None:
    if not Path(tc.RSYNC).exists():
        pytest.fail("Debian's rsync is needed (apt-get install rsync)")


def _rsh(tmp_path: Path) -> Path:
    """A local "remote shell" that notes each run in ran.log."""
    rsh = tmp_path / "rsh"
    rsh.write_text(f'#!/bin/sh\nshift\necho "$@" >> {tmp_path}/ran.log\nexec "$@"\n')
    rsh.chmod(0o755)
    return rsh


def _run(tmp_path: Path, args: list[str]) -> dict[str, tuple[int, list[bytes], bool]]:
    """Each program in a work dir of its own with src/{g,d/f}: exit code, the stderr lines
    (source location, program name and work dir aside) and whether a remote ran."""
    out = {}
    for who, cmd in PROGRAMS:
        work = tmp_path / who
        (work / "src" / "d").mkdir(parents=True)
        (work / "src" / "g").write_text("g\n")
        (work / "src" / "d" / "f").write_text("f\n")
        rsh = _rsh(work)
        argv = [a.replace("{W}", str(work)).replace("{RSH}", str(rsh)) for a in args]
        p = subprocess.run([*cmd, *argv], cwd=work, capture_output=True, timeout=60,
                           env=tc.sync_env(), stdin=subprocess.DEVNULL)
        lines = []
        for line in p.stderr.splitlines():
            line = line.replace(str(work).encode(), b"W")
            if line.startswith(b"netsync"):
                line = b"rsync" + line[len(b"netsync"):]
            lines.append(line.split(b" at ", 1)[0] if b" (code " in line else line)
        out[who] = (p.returncode, lines, (work / "ran.log").exists())
    return out


def test_pull_into_a_destination_that_cannot_be_made(tmp_path: Path) -> None:
    got = _run(tmp_path, ["-a", "-e", "{RSH}", "localhost:{W}/src/", "no/such/dest/"])
    code, err, ran = got["netsync"]
    assert code == got["rsync"][0] == 11  # not the server's 12 after we closed on it
    assert ran
    want_ours = [b'rsync: [Receiver] mkdir "W/no/such/dest" failed: '
                 b"No such file or directory (2)", b"rsync error: error in file IO (code 11)"]
    for r in (got["rsync"][1], err):  # (the stopped server's own line may come first)
        assert [ln for ln in r if b"SIGUSR1" not in ln] == want_ours, r


def test_local_destination_that_cannot_be_made(tmp_path: Path) -> None:
    got = _run(tmp_path, ["-a", "src/", "no/such/dest/"])
    assert got["netsync"] == got["rsync"]
    assert got["netsync"][1][0].startswith(b'rsync: [Receiver] mkdir "W/no/such/dest"')


@pytest.mark.parametrize("filt", ["--exclude-from=nofile", "--include-from=nofile",
                                  "--filter=merge nofile"])
@pytest.mark.parametrize("where", ["local", "pull", "push"])
def test_missing_filter_file_fails_before_connecting(tmp_path: Path, filt: str,
                                                     where: str) -> None:
    ends = {"local": ["src/", "dst/"], "pull": ["-e", "{RSH}", "localhost:{W}/src/", "dst/"],
            "push": ["-e", "{RSH}", "src/", "localhost:{W}/dst/"]}[where]
    got = _run(tmp_path, ["-a", filt, *ends])
    assert got["netsync"] == got["rsync"]
    kind = "include" if "include" in filt else "exclude"
    assert got["netsync"] == (11, [
        f"rsync: [client] failed to open {kind} file nofile: No such file or directory (2)"
        .encode(), b"rsync error: error in file IO (code 11)"], False)


def test_missing_filter_file_without_paths_is_still_code_11(tmp_path: Path) -> None:
    """main.c checks for paths only after parse_arguments() has read the filter files:
    a missing one is code 11, not the usage text."""
    got = _run(tmp_path, ["-a", "--exclude-from=nofile"])
    assert got["netsync"] == got["rsync"] == (11, [
        b"rsync: [client] failed to open exclude file nofile: No such file or directory (2)",
        b"rsync error: error in file IO (code 11)"], False)
    usage = _run(tmp_path / "u", ["-a", "--delete"])
    assert usage["netsync"][0] == usage["rsync"][0] == 1
    assert usage["netsync"][1][-1] == b"rsync error: syntax or usage error (code 1)"
    assert b"Usage: rsync [OPTION]... SRC [SRC]... DEST" in usage["rsync"][1]


@pytest.mark.parametrize("rule, msg", [
    ("bogus", b"Unknown filter rule: bogus"),
    ("+,e foo", b"invalid modifier 'e' at position 2 in filter rule: +,e foo"),
])
def test_filter_rule_errors_are_bare(tmp_path: Path, rule: str, msg: bytes) -> None:
    """exclude.c: rprintf(FERROR, ...), without "rsync: "."""
    got = _run(tmp_path, ["-a", f"--filter={rule}", "src/", "dst/"])
    assert got["netsync"] == got["rsync"] == (1, [msg, b"rsync error: syntax or usage error "
                                                      b"(code 1)"], False)


@pytest.mark.parametrize("where", ["push", "pull", "daemon"])
def test_remote_shell_that_cannot_run(tmp_path: Path, where: str) -> None:
    """pipe.c: the forked child says it could not exec the shell and exits 14; the
    client then finds no peer (rsh: the connection closed; daemon over rsh: no
    greeting).  rsync's last lines race its child (12 or 14/5); the child's are fixed."""
    ends = {"push": ["src/", "localhost:{W}/dst/"], "pull": ["localhost:{W}/src/", "dst/"],
            "daemon": ["localhost::m/", "dst/"]}[where]
    got = _run(tmp_path, ["-a", "-e", str(tmp_path / "no-such-rsh"), *ends])
    who = b"sender" if where == "push" else b"Receiver"
    child = [b"rsync: [" + who + b"] Failed to exec " + str(tmp_path).encode()
             + b"/no-such-rsh: No such file or directory (2)",
             b"rsync error: error in IPC code (code 14)"]
    assert got["rsync"][1][:2] == child
    if where == "daemon":
        assert got["netsync"] == (5, [*child, b"rsync: did not see server greeting",
                                      b"rsync error: error starting client-server protocol "
                                      b"(code 5)"], False)
    else:
        assert got["netsync"] == (14, [*child, b"rsync: connection unexpectedly closed "
                                       b"(0 bytes received so far) [" + who + b"]",
                                       b"rsync error: error in IPC code (code 14)"], False)


def test_daemon_refused_names_the_receiver(tmp_path: Path) -> None:
    """who_am_i() before the fork: a pulling client is the "Receiver"."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    got = _run(tmp_path, ["-a", f"rsync://127.0.0.1:{port}/m/", "dst/"])
    assert got["netsync"] == got["rsync"]
    assert got["netsync"][1][0] == (b"rsync: [Receiver] failed to connect to 127.0.0.1 "
                                    b"(127.0.0.1): Connection refused (111)")


@pytest.mark.parametrize("args, want", [
    # a single file into a missing dir: its parent is entered (change_dir#3), exit 3
    (["src/g", "no/such/file"], (3, [b'rsync: [Receiver] change_dir#3 "W/no/such" failed: '
                                     b"No such file or directory (2)",
                                     b"rsync error: errors selecting input/output files, "
                                     b"dirs (code 3)"])),
    # a path through a file: the destination cannot be stat()ed
    (["src/g", "src/g/x"], (3, [b'rsync: [Receiver] ERROR: cannot stat destination '
                                b'"W/src/g/x": Not a directory (20)',
                                b"rsync error: errors selecting input/output files, "
                                b"dirs (code 3)"])),
    (["src/g", "src/d/f", "src/g/"], (3, [b'rsync: [Receiver] ERROR: cannot stat '
                                          b'destination "W/src/g/": Not a directory (20)',
                                          b"rsync error: errors selecting input/output "
                                          b"files, dirs (code 3)"])),
    # --mkpath blocked by a file: the destination as given is named
    (["--mkpath", "src/", "src/g/n/"], (11, [b'rsync: [Receiver] mkdir "W/src/g/n/" failed: '
                                             b"Not a directory (20)",
                                             b"rsync error: error in file IO (code 11)"])),
    # main.c's own ERROR lines are bare
    (["src/", "src/g"], (3, [b"ERROR: destination must be a directory when copying more "
                             b"than 1 file", b"rsync error: errors selecting input/output "
                                             b"files, dirs (code 3)"])),
])
def test_destination_errors(tmp_path: Path, args: list[str], want: tuple) -> None:
    got = _run(tmp_path, ["-a", *args])
    assert got["netsync"] == got["rsync"] == (*want, False)


_CLEAN = [b"protocol version mismatch -- is your shell clean?",
          b"(see the rsync manpage for an explanation)"]
_CODE2 = b"rsync error: protocol incompatibility (code 2)"


@pytest.mark.parametrize("proto, want", [
    ("40", [b"--protocol must be no more than 32 on the Server.",
            b"--protocol must be no more than 32 on the Client.", _CODE2, _CODE2]),
    ("19", [*_CLEAN, _CODE2, *_CLEAN, _CODE2]),
])
def test_local_protocol_out_of_range(tmp_path: Path, proto: str, want: list[bytes]) -> None:
    """compat.c on both ends of a local run.  rsync's two processes race to print (and
    one may be stopped first: "received SIGUSR1"); the lines each says are these."""
    got = _run(tmp_path, ["-a", f"--protocol={proto}", "src/", "dst/"])
    assert got["netsync"] == (2, want, False)
    assert got["rsync"][0] == 2
    assert set(got["rsync"][1]) - {b"rsync error: received SIGUSR1 (code 19)"} <= set(want)
    assert not (tmp_path / "netsync" / "dst").exists()


@pytest.mark.parametrize("where", ["push", "pull"])
def test_higher_protocol_settles_on_the_servers(tmp_path: Path, where: str) -> None:
    """setup_protocol(): --protocol=40 is sent as asked and the lower one is used."""
    ends = {"push": ["src/", "localhost:{W}/dst/"], "pull": ["localhost:{W}/src/", "dst/"]}
    got = _run(tmp_path, ["-a", "--protocol=40", "-e", "{RSH}", *ends[where]])
    assert got["netsync"] == got["rsync"] == (0, [], True)
    assert (tmp_path / "netsync" / "dst" / "d" / "f").read_text() == "f\n"


@pytest.mark.parametrize("rule", ["--filter=merge_-", "--filter=merge -", "--filter=. -",
                                  "--exclude-from=-"])
@pytest.mark.parametrize("where", ["local", "pull"])
def test_rules_from_stdin_are_read_once(tmp_path: Path, rule: str, where: str) -> None:
    """The early check of the filter files must leave stdin to the real parse: the
    rules it holds apply (a check that read it first left none)."""
    ends = {"local": ["src/", "dst/"],
            "pull": ["-e", "{RSH}", "localhost:{W}/src/", "dst/"]}[where]
    for who, cmd in PROGRAMS:
        work = tmp_path / who
        (work / "src").mkdir(parents=True)
        (work / "src" / "keep").write_text("k")
        (work / "src" / "junk.tmp").write_text("j")
        rsh = _rsh(work)
        argv = [a.replace("{W}", str(work)).replace("{RSH}", str(rsh)) for a in ends]
        p = subprocess.run([*cmd, "-r", rule, *argv], cwd=work, capture_output=True,
                           timeout=60, env=tc.sync_env(), input=b"- *.tmp\n")
        assert p.returncode == 0, (who, p.stderr)
        assert sorted(os.listdir(work / "dst")) == ["keep"], who
