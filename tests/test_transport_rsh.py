"""Remote-shell transport: rsync's command line, and a real rsync --server over a real sshd."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interop.peers import SshServer, sshd_server  # noqa: F401
from netsync.options import parse_args
from netsync.transport import TransportError
from netsync.transport.handshake import ClientHandshake, run_client_handshake
from netsync.transport.remote import plan_transfer
from netsync.transport.rsh import (
    build_rsh_command,
    encode_secluded,
    server_args,
    spawn,
    split_rsh,
)

RSYNC = shutil.which("rsync")

# A remote shell that records its argv (and what the client sent first) and exits.
FAKE_RSH = """\
import json, os, select, sys
data = b""
if select.select([0], [], [], 2)[0]:
    data = os.read(0, 65536)
with open(os.environ["FAKE_RSH_OUT"], "w") as f:
    json.dump([sys.argv[1:], data.decode("latin-1")], f)
"""


@pytest.fixture(autouse=True)
def _all_options_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    import netsync.options

    monkeypatch.setattr(netsync.options, "NOT_IMPLEMENTED", set())


@pytest.mark.parametrize(("value", "words"), [
    ("ssh", ["ssh"]),
    ("ssh -p 2222  -o X=y", ["ssh", "-p", "2222", "-o", "X=y"]),
    ("ssh -o 'ProxyCommand nc %h %p'", ["ssh", "-o", "ProxyCommand nc %h %p"]),
    ('ssh -o "A=b c"d', ["ssh", "-o", "A=b cd"]),
    ("ssh -o 'it''s'", ["ssh", "-o", "it's"]),  # doubled quote inside quotes
    ("a\tb", ["a\tb"]),  # only spaces separate
    ("ssh -i a\\ b", ["ssh", "-i", "a\\", "b"]),  # no backslash escapes
])
def test_split_rsh(value: str, words: list[str]) -> None:
    assert split_rsh(value) == words


def test_split_rsh_unterminated_quote() -> None:
    with pytest.raises(TransportError) as err:
        split_rsh("ssh -o 'x")
    assert err.value.code == 1 and str(err.value) == "Missing trailing-' in remote-shell command."


def _real_rsync_command(tmp_path: Path, argv: list[str]) -> tuple[list[str], bytes]:
    """What stock rsync runs (and first writes) for ``argv`` with our recording -e script."""
    script = tmp_path / "fake_rsh.py"
    script.write_text(FAKE_RSH)
    out = tmp_path / "rsh.json"
    out.unlink(missing_ok=True)
    rsh = f"{sys.executable} {script} -p 2222"
    subprocess.run([RSYNC, "-e", rsh, *argv], env={"FAKE_RSH_OUT": str(out), "PATH": "/usr/bin:/bin"},
                   capture_output=True, timeout=30)
    words, first = json.loads(out.read_text())
    return [sys.executable, str(script), *words], first.encode("latin-1")


def _our_command(tmp_path: Path, argv: list[str]) -> tuple[list[str], bytes]:
    script = tmp_path / "fake_rsh.py"
    opts = parse_args(["-e", f"{sys.executable} {script} -p 2222", *argv])
    plan = plan_transfer(opts.args, port=opts.port, shell_cmd=opts.rsh)
    built = server_args(opts, plan.am_sender, plan.remote_paths)
    cmd = build_rsh_command(opts, plan.host or "", plan.user, built.argv)
    first = encode_secluded(built.secluded) if built.secluded else b""
    return cmd, first + opts.protocol.to_bytes(4, "little")


CASES = [
    ["-a", "/etc/hostname", "u@h:/dst"],
    ["-az", "/etc/hostname", "h:dst"],
    ["-a", "--delete", "/etc/", "h:d st/"],
    ["-c", "-H", "/etc/hostname", "h:x"],
    ["-a", "--protocol=29", "/etc/hostname", "h:x"],
    ["-a", "--protocol=30", "h:x", "/nonexistent-dst"],
    ["-avz", "--delete", "h:src/", "/nonexistent-dst"],
    ["-a", "-c", "-H", "--protocol=27", "h:a", "/nonexistent-dst"],
    ["-rt", "h:~x", ":a*b\\*c [x]$y", "h:-z", "/nonexistent-dst"],
    ["-aR", "h:~x/a", "/nonexistent-dst"],
    ["-a", "-M--log-file=/tmp/a b", "--rsync-path=sudo rsync", "/etc/hostname", "h:x"],
    ["-av", "-s", "-M--foo", "/etc/hostname", "u@h:d st"],
    ["-4", "-a", "/etc/hostname", "[::1]:x"],
    ["-a", "--checksum-choice=md5", "--compress-choice=zstd", "-z", "/etc/hostname", "h:x"],
]


@pytest.mark.skipif(RSYNC is None, reason="needs stock rsync")
@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c) for c in CASES])
def test_command_line_matches_stock_rsync(tmp_path: Path, argv: list[str]) -> None:
    theirs = _real_rsync_command(tmp_path, argv)
    ours = _our_command(tmp_path, argv)
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]  # secluded args (if any) and the protocol version


def test_dash_l_rules() -> None:
    opts = parse_args(["-e", "ssh -l bob", "a", "h:b"])
    assert build_rsh_command(opts, "h", "u", ["X"]) == ["ssh", "-l", "bob", "-l", "u", "h",
                                                         "rsync", "X"]
    # A daemon over a remote shell respects the -l already in the -e value.
    assert build_rsh_command(opts, "h", "u", [], daemon=True) == [
        "ssh", "-l", "bob", "h", "rsync", "--server", "--daemon", "."]
    opts6 = parse_args(["-6", "-e", "/usr/bin/ssh", "a", "h:b"])
    assert build_rsh_command(opts6, "h", None, ["X"]) == ["/usr/bin/ssh", "-6", "h", "rsync", "X"]


def test_rsync_rsh_env_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSYNC_RSH", "myssh -x")
    opts = parse_args(["a", "h:b"])
    assert build_rsh_command(opts, "h", None, ["X"])[:3] == ["myssh", "-x", "h"]
    monkeypatch.delenv("RSYNC_RSH")
    assert build_rsh_command(opts, "h", None, ["X"])[0] == "ssh"


def test_missing_remote_shell_is_exit_14() -> None:
    with pytest.raises(TransportError) as err:
        spawn(["/nonexistent/ssh", "h", "rsync"], who="sender")
    assert err.value.code == 14
    # pipe.c's child, then the parent that finds the connection closed
    assert str(err.value) == ("netsync: [sender] Failed to exec /nonexistent/ssh: "
                              "No such file or directory (2)\n"
                              "netsync error: error in IPC code (code 14)\n"
                              "netsync: connection unexpectedly closed (0 bytes received so "
                              "far) [sender]")


def test_missing_remote_rsync_reports_the_shells_status() -> None:
    # A remote shell whose rsync is missing: sh prints "not found" and exits 127.
    conn = spawn(["sh", "-c", "exec /nonexistent-rsync 2>/dev/null", "h"], who="Receiver")
    with pytest.raises(TransportError) as err:
        run_client_handshake(conn, ClientHandshake(32))
    conn.close()
    assert err.value.code == 127
    # Either the version write or the read notices first, as with stock rsync.
    assert str(err.value) in (
        "connection unexpectedly closed (0 bytes received so far) [Receiver]",
        "[Receiver] safe_write failed to write 4 bytes to socket: Broken pipe (32)")


# --- a real rsync --server through a real sshd ---------------------------------------


@pytest.mark.parametrize("protocol", [32, 31, 30, 29, 27])
@pytest.mark.parametrize("push", [True, False], ids=["push", "pull"])
def test_handshake_with_real_server_over_ssh(sshd_server: SshServer, tmp_path: Path,  # noqa: F811
                                              protocol: int, push: bool) -> None:
    remote = f"{sshd_server.login}:{tmp_path}/"
    argv = ["-a", f"--protocol={protocol}", "-e", sshd_server.rsh]
    argv += [str(tmp_path), remote] if push else [remote, str(tmp_path / "dst")]
    opts = parse_args(argv)
    plan = plan_transfer(opts.args, shell_cmd=opts.rsh)
    built = server_args(opts, plan.am_sender, plan.remote_paths)
    cmd = build_rsh_command(opts, plan.host or "", plan.user, built.argv)
    assert cmd[:len(sshd_server.ssh_args)] == sshd_server.ssh_args
    conn = spawn(cmd, who="sender" if push else "Receiver")
    try:
        neg = run_client_handshake(conn, ClientHandshake.from_options(opts, plan.am_sender))
        assert neg.protocol == protocol
        assert neg.remote_protocol == 32
        assert neg.checksum_seed != 0 or neg.checksum_seed == 0  # any seed; it was read
        if protocol >= 30:
            assert neg.checksum == "xxh128" and neg.varint_flist_flags
            assert neg.inc_recurse  # we offered 'i' and -a recurses
        else:
            assert neg.checksum == "md4_old" and neg.compat_flags == 0
    finally:
        conn.close(timeout=5)
