"""rsyncd.conf ``pre-xfer exec`` / ``post-xfer exec``: ``netsync --daemon`` against
``rsync --daemon`` from the same config (hooks' environment, refusal, client output)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_daemon_filters import Daemon, both, daemon_pair, errors

USER = "alice.b-1_x"
HOSTILE = "$(touch${IFS}pwned)x"
PASSWORD = "pw"

MODULES = """
[hook]
path = {root}/hook
read only = no
pre-xfer exec = env | grep ^RSYNC_ | sort > {root}/pre.env; echo ignored output
post-xfer exec = env | grep ^RSYNC_ | sort > {root}/post.tmp; mv {root}/post.tmp {root}/post.env
[fail]
path = {root}/fail
read only = no
pre-xfer exec = echo "no entry for %RSYNC_MODULE_NAME%"; echo second line; exit 3
post-xfer exec = echo "$RSYNC_EXIT_STATUS $RSYNC_RAW_STATUS" > {root}/fail.tmp; mv {root}/fail.tmp {root}/fail.status
[quiet]
path = {root}/fail
read only = no
pre-xfer exec = exit 1
[auth]
path = {root}/auth
read only = no
auth users = *
secrets file = {root}/secrets
pre-xfer exec = sh -c 'printf %s %RSYNC_USER_NAME% > {root}/user.out'
"""


def _prepare(root: Path) -> None:
    for d in ("hook", "fail", "auth"):
        (root / d).mkdir()
    secrets = root / "secrets"
    secrets.write_text(f"{USER}:{PASSWORD}\n{HOSTILE}:{PASSWORD}\n")
    secrets.chmod(0o600)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    yield from daemon_pair(tmp_path_factory.mktemp("dexec"), MODULES, _prepare)


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    src = tmp_path / "tree"
    (src / "d").mkdir(parents=True)
    (src / "f").write_text("f\n")
    (src / "d" / "g").write_text("g\n")
    return src


def _wait_for(path: Path) -> str:
    """post-xfer exec runs once the client is gone: wait (bounded) for its file."""
    for _ in range(200):
        if path.exists():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def _env(text: str, root: Path) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition("=")
        out[k] = v.replace(str(root), "ROOT")
    return out


def test_hooks_run_with_rsyncs_environment(pair, tmp_path: Path, source: Path) -> None:
    for d in pair:
        for name in ("pre.env", "post.env"):
            (d.root / name).unlink(missing_ok=True)
    want, got = both(pair, tmp_path, lambda d, w: ["-rt", "--delete", f"{source}/",
                                                   d.url("hook/sub/")])
    assert got.returncode == want.returncode == 0, got.describe()
    assert got.stdout == want.stdout == b""
    envs = []
    for d in pair:
        pre = _env((d.root / "pre.env").read_text(), d.root)
        post = _env(_wait_for(d.root / "post.env"), d.root)
        assert pre["RSYNC_PID"] == post["RSYNC_PID"] and pre["RSYNC_PID"].isdigit()
        for env in (pre, post):
            env["RSYNC_PID"] = "PID"
        envs.append((pre, post))
    (want_pre, want_post), (pre, post) = envs
    assert pre == want_pre
    assert post == want_post
    assert pre["RSYNC_REQUEST"] == "hook/sub/"
    assert pre["RSYNC_ARG0"] == "rsyncd" and pre["RSYNC_ARG1"] == "--server"
    assert pre["RSYNC_MODULE_PATH"] == "ROOT/hook"
    assert post["RSYNC_EXIT_STATUS"] == "0" and post["RSYNC_RAW_STATUS"] == "0"
    assert (pair[1].root / "hook" / "sub" / "d" / "g").read_text() == "g\n"


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_failing_pre_xfer_refuses_with_its_output(pair, tmp_path: Path, source: Path,
                                                  direction: str) -> None:
    for d in pair:
        (d.root / "fail.status").unlink(missing_ok=True)

    def args(d: Daemon, w: Path) -> list[str]:
        if direction == "push":
            return ["-a", f"{source}/", d.url("fail/")]
        return ["-a", d.url("fail/"), f"{w}/dst/"]

    want, got = both(pair, tmp_path, args)
    assert got.returncode == 4, got.describe()
    lines = errors(got, pair[1].root)
    assert lines[:3] == errors(want, pair[0].root)[:3] == [
        b"pre-xfer exec returned failure (768):", b"no entry for 'fail'", b"second line"]
    assert lines[3] == b"PROG error: requested action not supported (code 4)"
    assert not os.listdir(pair[1].root / "fail")
    assert not (tmp_path / "netsync" / "dst").exists()
    # post-xfer exec still runs, with the transfer's exit status (4 = 1024 raw).
    assert _wait_for(pair[1].root / "fail.status") == \
        _wait_for(pair[0].root / "fail.status") == "4 1024\n"


def test_silent_failing_pre_xfer(pair, tmp_path: Path, source: Path) -> None:
    want, got = both(pair, tmp_path, lambda d, w: ["-a", f"{source}/", d.url("quiet/")])
    assert got.returncode == want.returncode == 4, got.describe()
    assert errors(got, pair[1].root)[:2] == [
        b"pre-xfer exec returned failure (256)",
        b"PROG error: requested action not supported (code 4)"]


def _auth_push(pair, tmp_path: Path, source: Path, user: str):
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSWORD + "\n")
    pwfile.chmod(0o600)
    return both(pair, tmp_path, lambda d, w: [
        "-r", f"--password-file={pwfile}", f"{source}/",
        d.url("auth/").replace("rsync://", f"rsync://{user}@", 1)])


def test_hook_gets_plain_value_quoted(pair, tmp_path: Path, source: Path) -> None:
    want, got = _auth_push(pair, tmp_path, source, USER)
    assert got.returncode == want.returncode == 0, got.describe()
    for d in pair:
        assert (d.root / "user.out").read_text() == USER


def test_shell_metacharacter_in_peer_value_is_refused(pair, tmp_path: Path,
                                                      source: Path) -> None:
    """daemon-exec-metachar-refused: the hook never runs with a hostile user name."""
    for d in pair:
        (d.root / "user.out").unlink(missing_ok=True)
    want, got = _auth_push(pair, tmp_path, source, HOSTILE)
    assert got.returncode != 0 and want.returncode != 0, got.describe()
    for d in pair:
        assert not (d.root / "user.out").exists(), d.name
        assert not (tmp_path / d.name / "pwned").exists()
        assert re.search(r"refusing to run shell hook: %RSYNC_USER_NAME% holds a shell "
                         r"metacharacter", d.log()), d.name
    assert not list(Path.cwd().glob("pwned"))
