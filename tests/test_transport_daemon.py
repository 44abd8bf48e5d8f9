"""rsync daemon transport: the @RSYNCD: exchange against a real rsync --daemon."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from pathlib import Path

import pytest

from interop.peers import RsyncDaemon, SshServer, rsyncd, sshd_server  # noqa: F401
from netsync.options import parse_args
from netsync.transport import TransportError
from netsync.transport.daemon import (
    DaemonClient,
    auth_response,
    choose_auth_digest,
    connect,
    daemon_server_args,
    encode_daemon_args,
    negotiate_protocol,
    parse_greeting,
    read_password,
)
from netsync.transport.handshake import ClientHandshake, run_client_handshake
from netsync.transport.rsh import build_rsh_command, spawn


@pytest.fixture(autouse=True)
def _all_options_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    import netsync.options

    monkeypatch.setattr(netsync.options, "NOT_IMPLEMENTED", set())


# --- pure pieces ------------------------------------------------------------------


def test_parse_greeting_and_protocol() -> None:
    g = parse_greeting("@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4")
    assert (g.remote_protocol, g.remote_sub, g.digests) == (32, 0, ["sha512", "sha256", "sha1",
                                                                    "md5", "md4"])
    assert negotiate_protocol(32, g) == 32 and negotiate_protocol(29, g) == 29
    old = parse_greeting("@RSYNCD: 29")
    assert old.digests is None and negotiate_protocol(32, old) == 29
    pre = parse_greeting("@RSYNCD: 31.3 md5")
    assert negotiate_protocol(32, pre) == 30  # a pre-release sub-protocol drops one
    for bad, text in [("hello", 'server sent "hello" rather than greeting'),
                      ("@RSYNCD: 31", "the server omitted the subprotocol value"),
                      ("@RSYNCD: 32.0", "the server omitted the digest name list")]:
        with pytest.raises(TransportError) as err:
            parse_greeting(bad)
        assert err.value.code == 5 and text in str(err.value)


def test_auth_digest_choice() -> None:
    assert choose_auth_digest(["md4", "md5", "sha1"], 32) == "sha1"
    assert choose_auth_digest(None, 30) == "md5"
    assert choose_auth_digest(None, 29) == "md4"
    with pytest.raises(TransportError) as err:
        choose_auth_digest(["blake9"], 32)
    assert err.value.code == 4


@pytest.mark.parametrize("digest", ["sha512", "sha256", "sha1", "md5", "md4"])
def test_auth_response_is_unpadded_base64(digest: str) -> None:
    got = auth_response(b"pw", "CHAL", digest)
    assert "=" not in got
    if digest != "md4":
        want = base64.b64encode(hashlib.new(digest, b"pwCHAL").digest()).decode().rstrip("=")
        assert got == want
    else:
        # RFC 1320 test vector: MD4("abc")
        raw = base64.b64decode(auth_response(b"a", "bc", "md4") + "==")
        assert raw.hex() == "a448017aaf21d8525fc10ae87aa6729d"


def test_password_file_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "pw"
    pw.write_bytes(b"\nsecret\r\nsecond\n")
    pw.chmod(0o600)
    assert read_password(str(pw)) == b"secret"
    pw.chmod(0o604)
    with pytest.raises(TransportError) as err:
        read_password(str(pw))
    assert err.value.code == 1 and err.value.bare
    assert str(err.value) == "ERROR: password file must not be other-accessible"
    with pytest.raises(TransportError) as err:
        read_password(str(tmp_path / "missing"), who="Receiver")
    assert str(err.value).startswith("[Receiver] could not open password file")
    monkeypatch.setenv("RSYNC_PASSWORD", "fromenv")
    assert read_password(None) == b"fromenv"


def test_daemon_args_form() -> None:
    opts = parse_args(["-a", "h::mod/x", "dst"])
    args = daemon_server_args(opts, False, ["mod", "-a", "mod/x mod/y"])
    assert args.argv[:2] == ["--server", "--sender"]
    assert args.argv[-4:] == [".", "mod/", "./-a", "mod/x[ ]mod/y"]
    assert encode_daemon_args(["a", "b"], 30) == b"a\0b\0\0"
    assert encode_daemon_args(["a", "b"], 29) == b"a\nb\n\n"


# --- real daemon ------------------------------------------------------------------


def _client(daemon: RsyncDaemon, protocol: int = 32) -> DaemonClient:
    return DaemonClient(connect("127.0.0.1", daemon.port, who="Receiver"), protocol)


def test_list_modules(rsyncd: RsyncDaemon) -> None:  # noqa: F811
    client = _client(rsyncd)
    assert client.greet() == 32
    assert client.greeting is not None and "md4" in (client.greeting.digests or [])
    reply = client.list_modules()
    client.conn.close()
    assert not reply.ok
    assert reply.lines[:2] == rsyncd.motd
    assert reply.modules == [("open", "Open module"), ("ro", "Read-only module"),
                             ("auth", "Needs a password")]


def test_unknown_module(rsyncd: RsyncDaemon) -> None:  # noqa: F811
    client = _client(rsyncd)
    with pytest.raises(TransportError) as err:
        client.request("nosuch")
    client.conn.close()
    assert err.value.code == 5 and err.value.bare
    assert str(err.value) == "@ERROR: Unknown module 'nosuch'"


@pytest.mark.parametrize("protocol", [32, 30, 29])
def test_auth_success(rsyncd: RsyncDaemon, protocol: int) -> None:  # noqa: F811
    client = _client(rsyncd, protocol)
    reply = client.request("auth", rsyncd.user, lambda: rsyncd.password.encode())
    client.conn.close()
    assert reply.ok and reply.lines[:2] == rsyncd.motd
    assert client.auth_digest == "sha512"  # the daemon lists its digests at every protocol


def test_auth_failure(rsyncd: RsyncDaemon) -> None:  # noqa: F811
    client = _client(rsyncd)
    with pytest.raises(TransportError) as err:
        client.request("auth", rsyncd.user, lambda: b"wrong")
    client.conn.close()
    assert err.value.code == 5
    assert str(err.value) == "@ERROR: auth failed on module auth"


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        with pytest.raises(TransportError) as err:
            connect("127.0.0.1", port, who="Receiver")
    assert err.value.code == 10
    assert str(err.value) == ("[Receiver] failed to connect to 127.0.0.1 (127.0.0.1): "
                              "Connection refused (111)")


def test_unknown_host_is_exit_10() -> None:
    with pytest.raises(TransportError) as err:
        connect("no-such-host.invalid", 873)
    assert err.value.code == 10 and str(err.value).startswith("getaddrinfo: no-such-host.invalid")


@pytest.mark.parametrize("protocol", [32, 31, 30, 29, 27])
@pytest.mark.parametrize("push", [True, False], ids=["push", "pull"])
def test_handshake_after_ok(rsyncd: RsyncDaemon, tmp_path: Path,  # noqa: F811
                            protocol: int, push: bool) -> None:
    module = "open"
    argv = ["-a", f"--protocol={protocol}"]
    argv += [str(tmp_path), f"{rsyncd.url(module)}/"] if push else [rsyncd.url(module + "/"),
                                                                   str(tmp_path)]
    opts = parse_args(argv)
    client = _client(rsyncd, opts.protocol)
    reply = client.request(module)
    assert reply.ok
    client.send_args(daemon_server_args(opts, push, [module + "/"]))
    hs = ClientHandshake.from_options(opts, push, daemon_protocol=client.protocol,
                                      remote_protocol=32)
    neg = run_client_handshake(client.conn, hs)
    client.conn.close()
    assert neg.protocol == protocol
    if protocol >= 30:
        assert neg.checksum == "xxh128"
    else:
        assert neg.checksum == "md4_old"


def test_daemon_over_ssh(sshd_server: SshServer, rsyncd: RsyncDaemon) -> None:  # noqa: F811
    # "-e ssh host::module": the remote runs "rsync --server --daemon ." with the
    # daemon's config found via --config on the rsync path.
    opts = parse_args(["-e", sshd_server.rsh, "--rsync-path",
                       f"rsync --config={rsyncd.dir / 'rsyncd.conf'}",
                       f"{sshd_server.login}::", "dst"])
    cmd = build_rsh_command(opts, sshd_server.host, sshd_server.user, [], daemon=True)
    assert cmd[-3:] == ["--server", "--daemon", "."]
    conn = spawn(cmd, who="Receiver", env={"RSYNC_PORT": "0"})
    client = DaemonClient(conn, 32)
    reply = client.list_modules()
    conn.close(timeout=5)
    assert [m[0] for m in reply.modules] == ["open", "ro", "auth"]
    assert os.environ.get("RSYNC_PORT") is None
