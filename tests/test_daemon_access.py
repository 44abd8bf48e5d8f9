"""hosts allow/deny and refuse options, with real rsync daemons as the reference."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from netsync.daemon.access import (
    UNDETERMINED,
    allow_access,
    check_access,
    match_address,
    peer_address,
    split_list,
)
from netsync.daemon.refuse import refused

RSYNC = shutil.which("rsync")
needs_rsync = pytest.mark.skipif(RSYNC is None, reason="needs rsync")


def no_dns(name: str) -> list[str] | None:
    return {"good.example": ["10.0.0.5"]}.get(name)


@pytest.mark.parametrize("addr,tok,want", [
    ("10.1.2.3", "10.1.2.3", True),
    ("10.1.2.3", "10.1.2.4", False),
    ("10.1.2.3", "10.1.0.0/16", True),
    ("10.2.2.3", "10.1.0.0/16", False),
    ("10.1.2.3", "10.1.0.0/255.255.0.0", True),
    ("10.1.2.3", "0.0.0.0/0", True),
    ("10.1.2.3", "10.0.0.0/33", False),
    ("10.1.2.3", "10.0.0.0/x", False),
    ("10.1.2.3", "::/0", False),  # family mismatch
    ("2001:db8::1", "2001:db8::/32", True),
    ("2001:db8::1", "2001:db9::/32", False),
    ("2001:db8::1", "2001:DB8::1", True),
    ("2001:db8::1", "2001:db8::/ffff:ffff::", True),
    ("10.1.2.3", "host.example", False),
    ("::ffff:10.1.2.3", "10.1.2.3", False),  # only after peer_address()
])
def test_match_address(addr, tok, want):
    assert match_address(addr, tok.lower()) is want


def test_peer_address_maps_v4():
    assert peer_address(("::ffff:10.1.2.3", 873, 0, 0)) == "10.1.2.3"
    assert peer_address("2001:db8::1") == "2001:db8::1"
    assert peer_address(("127.0.0.1", 5)) == "127.0.0.1"
    assert allow_access(peer_address("::ffff:10.1.2.3"), None, "10.1.0.0/16", None)


@pytest.mark.parametrize("addr,host,allow,deny,want", [
    ("10.0.0.1", None, None, None, True),
    ("10.0.0.1", None, "", "", True),
    ("10.0.0.1", None, "10.0.0.1", None, True),
    ("10.0.0.2", None, "10.0.0.1", None, False),
    ("10.0.0.2", None, "10.0.0.1", "10.9.9.9", True),   # allow+deny: unmatched passes
    ("10.0.0.1", None, "10.0.0.1", "10.0.0.1", True),   # allow wins
    ("10.0.0.1", None, None, "10.0.0.0/8", False),
    ("10.0.0.1", "a.Example.COM", "*.example.com", None, True),
    ("10.0.0.1", None, "*.example.com", None, False),  # no name known
    ("10.0.0.1", UNDETERMINED, "*", None, True),        # rsync's quirk
    ("10.0.0.5", "other", "good.example", None, True),  # forward lookup
    ("10.0.0.6", "other", "good.example", None, False),
    ("10.0.0.6", "other", None, "unresolvable.example", False),  # deny fails closed
    ("10.0.0.6", "other", "unresolvable.example", None, False),
    ("10.0.0.1", "x", "10.0.0.9,10.0.0.1\t10.0.0.7", None, True),    # IDN: a token's non-ASCII labels are folded to A-labels (DNS names are ASCII),
    # but only into bare A-labels: fullwidth "*", "/" stay unmatched, not wildcards
    ("10.0.0.1", "localhost", "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54", None, True),
    ("10.0.0.1", "localhost", None, "\uff2c\uff2f\uff23\uff21\uff2c\uff28\uff2f\uff33\uff34", False),
    ("10.0.0.1", "xn--iku-eqab.example", "\u010di\u010dku.example", None, True),
    ("10.0.0.1", "localhost", "\uff0a", None, False),
    ("10.0.0.1", UNDETERMINED, "\uff0a", None, False),
    ("10.0.0.1", "a.example", "\uff0a.example", None, False),
    ("127.0.0.1", "localhost", "127.0.0.0\uff0f8", None, False),
    ("10.0.0.1", "localhost", "\u200b.example", None, False),
])
def test_allow_access_table(addr, host, allow, deny, want):
    assert allow_access(addr, host, allow, deny, resolve=no_dns) is want


def test_forward_lookup_names_undetermined_host():
    ok, host = check_access("10.0.0.5", UNDETERMINED, "good.example", None, resolve=no_dns)
    assert ok and host == "good.example"
    ok, _ = check_access("10.0.0.5", "h", "good.example", None, forward_lookup=False,
                         resolve=no_dns)
    assert not ok
    assert split_list("A, b\tc,,d") == ["a", "b", "c", "d"]


# ---------------------------------------------------------------------------
# Real daemons


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rsyncd(tmp_path):
    """Start rsync --daemon on 127.0.0.1 with a config we may rewrite between connections."""
    procs = []

    def start(conf_text: str) -> tuple[int, str]:
        conf = tmp_path / "rsyncd.conf"
        conf.write_text(conf_text)
        port = free_port()
        proc = subprocess.Popen([RSYNC, "--daemon", "--no-detach", f"--config={conf}",
                                 f"--port={port}", "--address=0.0.0.0",
                                 f"--log-file={tmp_path / 'log'}"])
        procs.append(proc)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        return port, str(conf)

    yield start
    for p in procs:
        p.terminate()
        p.wait()


def can_bind(addr: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


@needs_rsync
@pytest.mark.skipif(not can_bind("127.0.0.2"), reason="no 127.0.0.2")
@pytest.mark.parametrize("allow,deny", [
    ("127.0.0.1", None), ("127.0.0.2", None), (None, "127.0.0.2"), (None, "127.0.0.0/8"),
    ("127.0.0.1", "127.0.0.0/255.0.0.0"), ("127.0.0.0/31", "127.0.0.2"), ("*", None),
    ("localhost", None),
])
def test_hosts_allow_deny_like_rsyncd(rsyncd, tmp_path, allow, deny):
    (tmp_path / "m").mkdir()
    conf = f"use chroot = no\nreverse lookup = no\n[m]\npath = {tmp_path / 'm'}\n"
    conf += f"hosts allow = {allow}\n" if allow else ""
    conf += f"hosts deny = {deny}\n" if deny else ""
    port, _ = rsyncd(conf)
    for src in ("127.0.0.1", "127.0.0.2"):
        got = subprocess.run([RSYNC, f"--address={src}", f"rsync://127.0.0.1:{port}/m/"],
                             capture_output=True, text=True, timeout=30)
        want = allow_access(src, UNDETERMINED, allow, deny)
        assert (got.returncode == 0) is want, (src, got.stderr)
        if not want:
            assert "@ERROR: access denied to m from" in got.stderr


# refuse options: (spec, client options, option rsync names or None)
REFUSE_CASES = [
    ("delete", ["-r", "--delete-after"], "delete"),
    ("delete", ["-r", "--del"], "delete"),
    ("delete", ["-r", "--delete-excluded"], "delete"),
    ("delete", ["-r"], None),
    ("delete-during", ["-r", "--del"], "delete-during"),   # alias of the same action
    ("delete-*", ["-r", "--delete"], "delete-before"),  # before and during both refused
    ("delete*", ["-r", "--delete"], "delete"),
    ("archive", ["-a"], "links"),  # the client sends -rlptgoD; l is the first refused
    ("a", ["-r"], "recursive"),
    ("a !r", ["-r"], None),
    ("t", ["-rt"], "times"),
    ("times", ["-rt"], "times"),
    ("compress", ["-rz"], "compress"),
    ("c*", ["-rc"], "checksum"),
    ("*", ["-r", "--dry-run"], "recursive"),
    ("* !r", ["-r", "-n"], None),
    ("partial", ["-rP"], "partial"),
    ("checksum", ["-rc"], "checksum"),
    ("inplace", ["-r", "--append"], "inplace"),
    ("D", ["-rD"], "(null)"),
    ("log-format", ["-r", "--out-format=%n"], "log-format"),  # exact names still work
]


@pytest.mark.parametrize("spec,opts,want", REFUSE_CASES)
def test_refused_table(spec, opts, want):
    from netsync.options import parse_args, server_options

    o = parse_args([*opts, "src/", "dst/"])
    head, rest = server_options(o, True)  # a push: the daemon receives
    argv = [*head, *rest, ".", "m/"]
    got = refused(argv, spec)
    assert (got.option if got else None) == want, argv


def test_refused_compact_string():
    argv = ["--server", "-vlogDtpre.iLsfxCIvu", ".", "m/"]
    assert refused(argv, "a").message.startswith("The server is configured to refuse --")
    assert refused(argv, "t").message == "The server is configured to refuse --times (-t)"
    assert refused(argv, "e").option == "rsh"  # an exact rule can, a wildcard cannot
    assert refused(["--server", "-e.iLsfx", "."], "?") is None
    assert refused(["--server", "--sender", "-a", "."], "o").option == "owner"
    assert refused(["--server", "--sender", "--remove-source-files", "."], "delete").option \
        == "delete"
    assert refused(["--server", "--remove-source-files", "."], "delete") is None
    assert refused(["--server", "--copy-devices", "."], "").option == "copy-devices"
    assert refused(["--server", "--copy-devices", "."], "!copy-devices") is None
    assert refused(["--server", "--log-file=/x", "."], "").option == "log-file"
    assert refused(["--server", "--zl=3", "."], "compress").option == "compress"
    assert refused(["--server", "--zc=none", "."], "compress") is None
    logged: list[str] = []
    assert refused(["--server", "-r", "."], "nosuch", log=logged.append) is None
    assert logged == ['No match for refuse-options string "nosuch"']
    # The table is built once per spec (the listener builds each module's): every
    # connection still logs what building it said.
    assert refused(["--server", "-t", "."], "nosuch t", log=logged.append).option == "times"
    assert refused(["--server", "-r", "."], "nosuch t", log=logged.append) is None
    assert logged[1:] == ['No match for refuse-options string "nosuch"'] * 2


@needs_rsync
def test_refuse_options_like_rsyncd(rsyncd, tmp_path):
    (tmp_path / "m").mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    sections = "".join(
        f"[m{i}]\npath = {tmp_path / 'm'}\nread only = no\nrefuse options = {spec}\n"
        for i, (spec, _, _) in enumerate(REFUSE_CASES))
    port, _ = rsyncd(f"use chroot = no\n{sections}")
    for i, (spec, opts, want) in enumerate(REFUSE_CASES):
        got = subprocess.run([RSYNC, *opts, f"{src}/", f"rsync://127.0.0.1:{port}/m{i}/"],
                             capture_output=True, text=True, timeout=30)
        if want is None:
            assert "configured to refuse" not in got.stderr, (spec, opts, got.stderr)
        else:
            assert f"The server is configured to refuse --{want}" in got.stderr, \
                (spec, opts, got.stderr)
            assert got.returncode == 4
    assert os.path.exists(tmp_path / "m")
