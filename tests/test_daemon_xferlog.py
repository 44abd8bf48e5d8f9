"""rsyncd.conf ``transfer logging``/``log format`` and the per-session log lines:
``netsync --daemon`` against ``rsync --daemon``, both from the same config.

Each case runs the same stock rsync client command against both daemons and
compares the lines each daemon wrote to its ``log file`` for that connection,
with the timestamp, the pid, the daemon's own directory and the wire byte
counts (netsync's stream is not byte-for-byte rsync's) normalised.
``syslog facility``/``syslog tag`` are checked where they are computed.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import syslog
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsync.daemon import xferlog
from netsync.daemon.config import load_config
from test_daemon_filters import Daemon, both, daemon_pair

MTIME_NS = 1_600_000_000_000_000_000

MODULES = """
[mod]
path = {root}/src
transfer logging = yes
[push]
path = {root}/push
read only = no
transfer logging = yes
[fmt]
path = {root}/fmtdst
read only = no
transfer logging = yes
log format = %o|%h|%a|%m|%u|%f|%n|%l|%'l|%L|%p|%P|%M|%B|%i|%t|%-8n|%10l|%U|%G|%%|%Z
[quiet]
path = {root}/src
[bytes]
path = {root}/bytesdst
read only = no
transfer logging = yes
log format = %o %n %l %b %c
"""

_STAMP = re.compile(rb"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\d+)\] ")


def _prepare(root: Path) -> None:
    src = root / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    (src / "d" / "b.txt").write_text("world!!\n")
    (src / "d" / "e" / "big").write_bytes(b"x" * 12345)
    os.symlink("a.txt", src / "lnk")
    for name in ("push", "fmtdst", "bytesdst"):
        (root / name).mkdir()
    (root / "push" / "old").write_text("old\n")
    (root / "push" / "olddir").mkdir()
    for p in [root, *root.rglob("*")]:
        os.utime(p, ns=(MTIME_NS,) * 2, follow_symlinks=False)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    yield from daemon_pair(tmp_path_factory.mktemp("xferlog"), MODULES, _prepare)


@pytest.fixture()
def upload(tmp_path: Path) -> Path:
    up = tmp_path / "up"
    (up / "sub").mkdir(parents=True)
    (up / "u.txt").write_text("up\n")
    (up / "sub" / "v.txt").write_text("up two\n")
    os.symlink("u.txt", up / "ul")
    for p in [up, *up.rglob("*")]:
        os.utime(p, ns=(MTIME_NS,) * 2, follow_symlinks=False)
    return up


def _raw_log(d: Daemon) -> list[bytes]:
    p = d.root / "log"
    return p.read_bytes().splitlines() if p.exists() else []


def _session(d: Daemon, before: int) -> list[bytes]:
    """The log lines of the connection made after line ``before``, once it has ended
    (its last line, log_exit()'s, may come a moment after the client has exited)."""
    deadline = time.monotonic() + 20
    while True:
        lines = _raw_log(d)[before:]
        if any(b"] sent " in ln for ln in lines) or time.monotonic() > deadline:
            time.sleep(0.2)
            break
        time.sleep(0.05)
    lines = _raw_log(d)[before:]
    # The port probe that found the daemon up may log a late "connect from" first.
    start = next((i for i, ln in enumerate(lines) if b"] rsync allowed access" in ln), 1)
    return lines[max(start - 1, 0):]


def _normalise(lines: list[bytes], d: Daemon) -> list[bytes]:
    root = os.fsencode(d.root)
    out = []
    for line in lines:
        m = _STAMP.match(line)
        assert m, line  # every line is "YYYY/MM/DD HH:MM:SS [pid] text"
        # (the byte counts first, and the pid only as a whole number: a count may
        # hold the pid's digits)
        text = re.sub(rb"^sent \d+ bytes  received \d+ bytes", b"sent N bytes  received N bytes",
                      line[m.end():])
        text = text.replace(root, b"ROOT")
        text = re.sub(rb"(?<!\d)" + re.escape(m.group(1)) + rb"(?!\d)", b"PID", text)
        text = re.sub(rb"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d", b"NOW", text)
        text = re.sub(rb"\|\d+\|ROOT", b"|PID|ROOT", text)  # %p: rsync's receiver is a child
        out.append(text)
    return out


def _run_both(pair, tmp_path: Path, make_args) -> tuple[list[bytes], list[bytes]]:
    logs = []
    marks = [len(_raw_log(d)) for d in pair]
    runs = both(pair, tmp_path, make_args)
    assert runs[1].returncode == runs[0].returncode == 0, runs[1].describe()
    for d, mark in zip(pair, marks, strict=True):
        logs.append(_normalise(_session(d, mark), d))
    return logs[0], logs[1]


def test_pull_logs_each_sent_file(pair, tmp_path: Path) -> None:
    want, got = _run_both(pair, tmp_path, lambda d, w: ["-a", d.url("mod/"), "dst/"])
    assert got == want
    assert got == [
        b"connect from localhost (127.0.0.1)",
        b"rsync allowed access on module mod from localhost (127.0.0.1)",
        b"rsync on mod/ from localhost (127.0.0.1)",
        b"building file list",
        b"send localhost [127.0.0.1] mod () a.txt 6",
        b"send localhost [127.0.0.1] mod () d/b.txt 8",
        b"send localhost [127.0.0.1] mod () d/e/big 12345",
        b"sent N bytes  received N bytes  total size 12364",
    ]


def test_pull_of_a_subdirectory(pair, tmp_path: Path) -> None:
    want, got = _run_both(pair, tmp_path, lambda d, w: ["-a", d.url("mod/d"), "dst/"])
    assert got == want
    assert b"send localhost [127.0.0.1] mod () d/e/big 12345" in got


def test_push_logs_each_received_file_and_deletion(pair, tmp_path: Path, upload: Path) -> None:
    want, got = _run_both(pair, tmp_path,
                          lambda d, w: ["-a", "--delete", f"{upload}/", d.url("push/sub2/")])
    assert got == want
    assert b"recv localhost [127.0.0.1] push () sub2/sub/v.txt 7" in got
    want, got = _run_both(pair, tmp_path,
                          lambda d, w: ["-a", "--delete", f"{upload}/", d.url("push/")])
    assert got == want
    assert b"rsync to push/ from localhost (127.0.0.1)" in got
    assert b"receiving file list" in got
    assert b"recv localhost [127.0.0.1] push () u.txt 3" in got
    assert b"del. localhost [127.0.0.1] push () old 0" in got
    assert b"del. localhost [127.0.0.1] push () olddir/ 4096" not in got
    assert any(ln.startswith(b"del. localhost [127.0.0.1] push () olddir") for ln in got)


def test_log_format_escapes(pair, tmp_path: Path, upload: Path) -> None:
    want, got = _run_both(pair, tmp_path,
                          lambda d, w: ["-rlt", f"{upload}/", d.url("fmt/")])
    assert got == want
    line = next(ln for ln in got if ln.startswith(b"recv|"))
    assert line.startswith(b"recv|localhost|127.0.0.1|fmt||")
    assert b"|PID|ROOT/fmtdst|" in line


def test_dry_run_and_no_transfer_logging(pair, tmp_path: Path, upload: Path) -> None:
    want, got = _run_both(pair, tmp_path,
                          lambda d, w: ["-an", f"{upload}/", d.url("push/dry/")])
    assert got == want
    assert not any(ln.startswith(b"recv ") for ln in got)
    want, got = _run_both(pair, tmp_path, lambda d, w: ["-a", d.url("quiet/"), "dst/"])
    assert got == want
    assert not any(ln.startswith(b"send ") for ln in got)
    assert got[-1].startswith(b"sent N bytes  received N bytes  total size ")


def test_syslog_settings(tmp_path: Path) -> None:
    conf = tmp_path / "rsyncd.conf"
    conf.write_text("syslog facility = local3\n[a]\npath = /tmp\n"
                    "[b]\npath = /tmp\nsyslog facility = mail\n"
                    "syslog tag = rsyncd.%RSYNC_MODULE_NAME%\n")
    cfg = load_config(str(conf))
    assert xferlog.syslog_settings(cfg.globals) == ("rsyncd", syslog.LOG_LOCAL3)
    a, b = cfg.module("a"), cfg.module("b")
    assert a is not None and b is not None
    assert xferlog.syslog_settings(a) == ("rsyncd", syslog.LOG_LOCAL3)
    os.environ["RSYNC_MODULE_NAME"] = "b"
    try:
        assert xferlog.syslog_settings(b) == ("rsyncd.b", syslog.LOG_MAIL)
    finally:
        del os.environ["RSYNC_MODULE_NAME"]


def test_log_file_escapes_control_bytes(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = xferlog.DaemonLog(str(path))
    assert log.fd >= 0 and log.syslog is None
    log(b"recv evil\x1b[31m\x85name")
    text = path.read_bytes()
    assert _STAMP.match(text)
    assert text.endswith(b"recv evil\\#033[31m\\#205name\n")


def test_bytes_per_file(pair, tmp_path: Path) -> None:
    """%b and %c of each file are rsync's (from its sum head on: the data and checksum a
    receiver reads, the echo and data a sender writes and the sums it reads) while the
    daemon keeps many requests in flight: whole files, deltas, -z; pushed, then pulled."""
    rnd = random.Random(11)
    up = tmp_path / "many"
    up.mkdir()
    for i in range(40):
        (up / f"f{i:02d}").write_bytes(rnd.randbytes(rnd.choice([10, 1000, 70000, 300000])))
    want, got = _run_both(pair, tmp_path, lambda d, w: ["-a", f"{up}/", d.url("bytes/d/")])
    assert got == want
    assert sum(ln.startswith(b"recv ") for ln in got) == 40
    for i in range(0, 40, 3):
        p = up / f"f{i:02d}"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 1
        p.write_bytes(data)
        os.utime(p, (2_000_000_000, 2_000_000_000))
    for opts in (["-a", "--no-W"], ["-az", "--no-W"]):
        want, got = _run_both(pair, tmp_path, lambda d, w, o=opts: [*o, f"{up}/", d.url("bytes/d/")])
        assert got == want
        if opts == ["-a", "--no-W"]:
            assert sum(ln.startswith(b"recv ") for ln in got) == 14
        for p in up.iterdir():
            os.utime(p, (2_000_000_100, 2_000_000_100))
    for opts in (["-a", "--no-W"], ["-az", "--no-W"]):
        dst = tmp_path / f"pulled{len(opts[0])}"
        for name in ("rsync", "netsync"):  # (both clients start from the same basis)
            shutil.copytree(up, dst / name)
            for p in sorted((dst / name).iterdir())[::4]:
                data = bytearray(p.read_bytes())
                data[len(data) // 3] ^= 1
                p.write_bytes(data)
                os.utime(p, (1_000_000_000, 1_000_000_000))
        want, got = _run_both(pair, tmp_path,
                              lambda d, w, o=opts, t=dst: [*o, d.url("bytes/d/"), f"{t / d.name}/"])
        assert got == want
        assert sum(ln.startswith(b"send ") for ln in got) == 10

