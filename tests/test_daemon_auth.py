"""Server-side daemon authentication, checked against a real rsync client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading

import pytest

from netsync.daemon.auth import (
    AUTH_DIGESTS,
    DigestError,
    authenticate,
    check_response,
    check_secret,
    conf_strtok,
    digest_floor_error,
    hash_response,
    make_challenge,
    negotiate_auth_digest,
    parse_auth_users,
)
from netsync.transport.daemon import auth_response

RSYNC = shutil.which("rsync")


def secrets_file(tmp_path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "secrets"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.mark.parametrize("digest", ["sha512", "sha256", "sha1", "md5", "md4"])
def test_hash_matches_client_side(digest):
    assert hash_response(b"pw", "chal", digest) == auth_response(b"pw", "chal", digest)


def test_challenge_is_fresh_and_sized_like_rsync():
    seen = {make_challenge("md5") for _ in range(50)}
    assert len(seen) == 50
    assert all(len(c) == 22 and "=" not in c for c in seen)
    assert len(make_challenge("sha512")) == 86


def test_negotiation():
    assert negotiate_auth_digest("sha512 sha256 sha1 md5 md4", 32) == "sha512"
    assert negotiate_auth_digest(["md5", "md4"], 31) == "md5"
    assert negotiate_auth_digest(None, 30) == "md5"
    assert negotiate_auth_digest(None, 29) == "md4_old"
    with pytest.raises(DigestError, match="your client does not support one of our"):
        negotiate_auth_digest("xxh3", 32)
    assert digest_floor_error("", "md4") is None
    assert digest_floor_error("sha256", "sha512") is None
    assert "weaker than" in digest_floor_error("sha256", "md5")
    assert "not a supported digest" in digest_floor_error("blake9", "md5")


def test_auth_users_parsing():
    assert conf_strtok(" alice, bob\tcarol ") == ["alice", "bob", "carol"]
    assert conf_strtok(", my group , x") == ["my group", "x"]
    rules = parse_auth_users("alice:ro bob:RW @staff:deny eve:xyz carl:r")
    assert [(r.pattern, r.is_group, r.access) for r in rules] == [
        ("alice", False, "ro"), ("bob", False, "rw"), ("staff", True, "deny"),
        ("eve", False, None), ("carl", False, None)]


def test_secret_lines_groups_and_errors(tmp_path):
    sf = secrets_file(tmp_path, "# comment\nalice:apw\n@staff:spw\nbob:bpw\nbob:other\n")
    chal = "abcdef"

    def resp(pw: str) -> str:
        return hash_response(pw.encode(), chal, "md5")

    assert check_secret(sf, "alice", None, chal, resp("apw"), "md5") is None
    assert check_secret(sf, "alice", None, chal, resp("bad"), "md5") == "password mismatch"
    # Only the first line for a name counts.
    assert check_secret(sf, "bob", None, chal, resp("other"), "md5") == "password mismatch"
    assert check_secret(sf, "zed", None, chal, resp("x"), "md5") == "secret not found"
    assert check_secret(sf, "zed", "staff", chal, resp("spw"), "md5") is None
    assert check_secret(sf, "#x", None, chal, resp("x"), "md5") == "invalid username"
    assert check_secret(str(tmp_path / "none"), "a", None, chal, "x", "md5") == "no secrets file"
    assert check_response("alice", resp("apw"), chal, sf, True, "md5")
    assert not check_response("alice", resp("apw") + "x", chal, sf, True, "md5")


def test_strict_modes(tmp_path):
    sf = secrets_file(tmp_path, "alice:apw\n", 0o644)
    logged: list[str] = []
    ok = hash_response(b"apw", "c", "md5")
    assert check_secret(sf, "alice", None, "c", ok, "md5", log=logged.append) == \
        "ignoring secrets file"
    assert logged == ["secrets file must not be other-accessible (see strict modes option)"]
    assert check_secret(sf, "alice", None, "c", ok, "md5", strict_modes=False) is None
    os.chmod(sf, 0o600)
    logged.clear()
    if os.geteuid() != 0:
        assert check_secret(sf, "alice", None, "c", ok, "md5", euid=0, log=logged.append) == \
            "ignoring secrets file"
        assert logged == ["secrets file must be owned by root when running as root "
                          "(see strict modes)"]


def test_authenticate_rules(tmp_path):
    sf = secrets_file(tmp_path, "alice:apw\nbob:bpw\n@wheel:gpw\n")
    chal = make_challenge("sha512")

    def line(user: str, pw: str) -> str:
        return f"{user} {hash_response(pw.encode(), chal, 'sha512')}"

    kw = dict(auth_users="alice:ro bob:deny b*:rw @wheel", secrets_file=sf,
              groups_of=lambda u: ["wheel"] if u == "carl" else [])
    res = authenticate(line("alice", "apw"), chal, "sha512", **kw)
    assert (res.user, res.read_only) == ("alice", True)
    assert authenticate(line("bob", "bpw"), chal, "sha512", **kw).error == "denied by rule"
    assert authenticate(line("dave", "x"), chal, "sha512", **kw).error == "no matching rule"
    res = authenticate(line("carl", "gpw"), chal, "sha512", **kw)
    assert (res.user, res.read_only) == ("carl", None)
    assert authenticate("nospace", chal, "sha512", **kw).error == "invalid challenge response"


class TinyServer:
    """Speaks just enough of the daemon protocol to capture a client's auth reply."""

    def __init__(self, greeting: bytes, challenge: str) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.challenge = challenge
        self.client_greeting = ""
        self.reply = ""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rwb") as f:
            f.write(self.greeting)
            f.flush()
            self.client_greeting = f.readline().decode().rstrip("\n")
            f.readline()  # module name
            f.write(f"@RSYNCD: AUTHREQD {self.challenge}\n".encode())
            f.flush()
            self.reply = f.readline().decode().rstrip("\n")
            f.write(b"@ERROR: auth failed on module mod\n")
            f.flush()
        self.sock.close()


def real_client_reply(greeting: bytes, challenge: str, password: str) -> tuple[str, str]:
    srv = TinyServer(greeting, challenge)
    env = dict(os.environ, RSYNC_PASSWORD=password)
    subprocess.run([RSYNC, f"rsync://alice@127.0.0.1:{srv.port}/mod/"], env=env,
                   capture_output=True, timeout=30)
    srv.thread.join(10)
    return srv.client_greeting, srv.reply


@pytest.mark.skipif(RSYNC is None, reason="needs rsync")
@pytest.mark.parametrize("greeting,protocol", [
    (b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n", 32),
    (b"@RSYNCD: 31.0 md5 md4\n", 31),
    (b"@RSYNCD: 30.0\n", 30),
    (b"@RSYNCD: 29\n", 29),
])
def test_real_client_response_is_accepted(tmp_path, greeting, protocol):
    chal = make_challenge("sha512")
    client_greeting, reply = real_client_reply(greeting, chal, "s3cret")
    # The client always sends its list; a server offering only some digests
    # (or none: then md5, or the old md4 below 30) settles as ours would.
    client_list = client_greeting.split(" ", 2)[2].split()
    server_list = greeting.decode().split()[2:]
    if server_list:
        ours = negotiate_auth_digest([d for d in client_list if d in server_list], protocol)
    else:
        ours = negotiate_auth_digest(None, protocol)
    user, _, resp = reply.partition(" ")
    assert user == "alice"
    sf = secrets_file(tmp_path, "bob:x\nalice:s3cret\n")
    assert check_response(user, resp, chal, sf, True, ours)
    res = authenticate(reply, chal, ours, auth_users="alice", secrets_file=sf)
    assert res.user == "alice"
    wrong = secrets_file(tmp_path, "alice:S3cret\n")
    assert not check_response(user, resp, chal, wrong, True, ours)
    assert authenticate(reply, chal, ours, auth_users="alice",
                        secrets_file=wrong).error == "password mismatch"


def test_digest_list_is_rsyncs():
    assert AUTH_DIGESTS == ("sha512", "sha256", "sha1", "md5", "md4")
