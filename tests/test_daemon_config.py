"""rsyncd.conf parsing, compared with what a real rsync daemon lists for the same file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from netsync.daemon.config import PARAMS, ConfigError, load_config

RSYNC = shutil.which("rsync")

# (config text, modules listed as "name<TAB>comment" or None when loading fails)
CASES = [
    ("[a]\npath=/tmp\ncomment = hello  \n", ["a\thello"]),
    ("[a]\npath=/tmp\nread_only = no\ncomment=x\n", ["a\tx"]),  # unknown: ignored
    ("[a]\npath=/tmp\nREAD  ONLY=no\nL i S t = no\n[b]\npath=/tmp\n", ["b\t"]),
    ("[ a  b ]\npath=/tmp\ncomment=two \\\n   lines # kept\n", ["a b\ttwo    lines # kept"]),
    ("# c\n; c\n  [a]  trailing\n\tpath=/tmp\n\tcomment = %HOME%/%NOPE%/%lower%\n",
     ["a\t%HOME%/%NOPE%/%lower%".replace("%HOME%", os.environ.get("HOME", "%HOME%"))]),
    ("comment = dflt\nlist = no\n[a]\npath=/tmp\n[b]\nlist = yes\n", ["b\tdflt"]),
    ("[a]\npath=/tmp\n[A]\ncomment=merged\n", ["a\tmerged"]),
    ("[a]\npath=/tmp\nlist = maybe\n", ["a\t"]),  # bad boolean: keeps the default
    ("[a]\npath=/tmp\nport = 5\ncomment=c\n", ["a\tc"]),  # global in a module: ignored
    ("[a]\npath=/tmp\nno equals sign\ncomment=c\n", ["a\tc"]),
    ("[mo/d]\npath=/tmp\n", None),
    ("[]\npath=/tmp\n", None),
    ("[a\npath=/tmp\n", None),
    ("= x\n[a]\n", None),
    ("&bogus x\n[a]\n", None),
    ("&include /nonexistent/x.conf\n[a]\n", None),
    ("[a]\npath=/tmp\ncomment=\\\n", ["a\t"]),
]


def listing(text: str, path) -> list[str] | None:
    path.write_text(text)
    try:
        cfg = load_config(str(path))
    except ConfigError:
        return None
    return [f"{n}\t{c}" for n, c in cfg.listing()]


@pytest.mark.parametrize("text,want", CASES)
def test_table(tmp_path, text, want):
    assert listing(text, tmp_path / "rsyncd.conf") == want


def test_messages_name_file_and_line(tmp_path):
    p = tmp_path / "c.conf"
    p.write_text("[a]\npath = /tmp\nbogus = 1\nread only = perhaps\n")
    cfg = load_config(str(p))
    texts = [(m.line, m.text) for m in cfg.messages]
    assert texts == [(3, 'Unknown Parameter encountered: "bogus"'),
                     (3, 'IGNORING unknown parameter "bogus"'),
                     (4, 'Badly formed boolean in configuration file: "perhaps".')]
    assert str(cfg.messages[0]).startswith(f"{p}:3: ")
    p.write_text("[a]\npath=/x\n[b/c]\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(p))
    assert exc.value.messages[0].line == 3
    assert "invalid section name in configuration file: b/c" in exc.value.messages[0].text


def test_defaults_and_types(tmp_path, monkeypatch):
    p = tmp_path / "c.conf"
    p.write_text("port = 8873\nuid = %TUSER%\ntimeout = 30x\n[m]\npath = /srv/%TUSER%//\n"
                 "use chroot = no\nmax connections = 4\nsyslog facility = local3\n"
                 "numeric ids = unset\nfake super = yes\n")
    monkeypatch.setenv("TUSER", "alice")
    cfg = load_config(str(p))
    m = cfg.module("m")
    assert cfg.globals.port == 8873
    assert (m.path, m.uid, m.timeout, m.max_connections) == ("/srv/alice", "alice", 30, 4)
    assert (m.use_chroot, m.numeric_ids, m.munge_symlinks, m.fake_super) == \
        (False, None, None, True)
    assert (m.read_only, m.write_only, m.list, m.strict_modes) == (True, False, True, True)
    assert m.lock_file == "/var/run/rsyncd.lock"
    assert m.log_format == "%o %h [%a] %m (%u) %f %l"
    assert m.max_verbosity == 1 and "*.gz" in m.dont_compress
    import syslog
    assert m.syslog_facility == syslog.LOG_LOCAL3
    assert m.raw("path") == "/srv/%TUSER%"
    monkeypatch.setenv("TUSER", "bob")  # strings expand when read, as rsync does
    assert m.path == "/srv/bob"
    assert cfg.module("M") is None
    assert len(PARAMS) == 59


def test_dparam_include_merge(tmp_path):
    inc = tmp_path / "conf.d"
    inc.mkdir()
    (inc / "b.conf").write_text("comment = from-b\n[b]\npath=/tmp\n")
    (inc / "a.conf").write_text("[a]\npath=/tmp\n")
    (inc / "skip.txt").write_text("[skip]\n")
    (tmp_path / "x.inc").write_text("comment = merged\n")
    p = tmp_path / "c.conf"
    p.write_text(f"&include {inc}\n[c]\npath=/tmp\n&merge {tmp_path / 'x.inc'}\n[d]\npath=/tmp\n")
    cfg = load_config(str(p))
    # &include runs in a pushed copy of the globals; &merge in the current section.
    assert [(m.name, m.comment) for m in cfg.modules] == [
        ("a", ""), ("b", "from-b"), ("c", "merged"), ("d", "")]
    p2 = tmp_path / "d.conf"
    p2.write_text("comment = file\n[m]\npath=/tmp\n")
    cfg = load_config(str(p2), ["read only = no", "comment= dp"])
    assert (cfg.module("m").comment, cfg.module("m").read_only) == ("dp", False)
    with pytest.raises(ConfigError, match="Unknown parameter"):
        load_config(str(p), ["nosuch=1"])
    glob = load_config(str(p), ["port=99"], globals_only=True)
    assert glob.globals.port == 99 and glob.modules == []


def test_hook_values_are_shell_quoted(tmp_path, monkeypatch):
    p = tmp_path / "c.conf"
    p.write_text("[m]\npath=/tmp\npre-xfer exec = echo %RSYNC_USER_NAME% \"%RSYNC_USER_NAME%\"\n")
    cfg = load_config(str(p))
    monkeypatch.setenv("RSYNC_USER_NAME", "al")
    assert cfg.module("m").pre_xfer_exec == "echo 'al' \"'al'\""
    monkeypatch.setenv("RSYNC_USER_NAME", "a;rm")
    with pytest.raises(ConfigError, match="shell metacharacter"):
        _ = cfg.module("m").pre_xfer_exec


@pytest.mark.skipif(RSYNC is None, reason="needs rsync")
def test_same_listing_as_rsyncd(tmp_path):
    conf = tmp_path / "rsyncd.conf"
    conf.write_text("")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # rsyncd re-reads the whole file for each connection, so one daemon serves every case.
    proc = subprocess.Popen([RSYNC, "--daemon", "--no-detach", f"--config={conf}",
                             f"--port={port}", "--address=127.0.0.1",
                             f"--log-file={tmp_path / 'log'}"])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        mine = tmp_path / "mine.conf"
        for text, _want in CASES:
            conf.write_text(text)
            got = subprocess.run([RSYNC, f"rsync://127.0.0.1:{port}/"], capture_output=True,
                                 text=True, timeout=30)
            theirs = None if got.returncode else [
                "\t".join(part.rstrip(" ") if i == 0 else part
                          for i, part in enumerate(line.split("\t", 1)))
                for line in got.stdout.splitlines()]
            assert listing(text, mine) == theirs, text
    finally:
        proc.terminate()
        proc.wait()


def _list_modules(port: int) -> tuple[int, list[str]]:
    got = subprocess.run([RSYNC, f"rsync://127.0.0.1:{port}/"], capture_output=True,
                         text=True, timeout=30)
    lines = ["\t".join(part.rstrip(" ") if i == 0 else part
                       for i, part in enumerate(line.split("\t", 1)))
             for line in got.stdout.splitlines()]
    return got.returncode, lines


@pytest.mark.skipif(RSYNC is None, reason="needs rsync")
def test_edits_seen_by_the_next_connection(tmp_path):
    """Each connection serves the configuration as the files say at that moment, as
    rsyncd (which re-reads them per connection) does: an edit right after a connection
    (same size, so within the file system's time stamp granularity only the bytes
    differ), an edit in an &include'd file, a file that goes missing, and back."""
    import treecompare as tc
    from interop import peers

    conf, inc, confd = tmp_path / "rsyncd.conf", tmp_path / "inc.conf", tmp_path / "conf.d"
    confd.mkdir()
    conf.write_text(f"&include {inc}\n[m]\npath=/tmp\ncomment = aaa\n")
    inc.write_text("[x]\npath=/tmp\ncomment = inc\n")
    ref, ref_port = peers.start_daemon([RSYNC], conf)
    ours, our_port = peers.start_daemon(tc.program_under_test(), conf)
    steps = [
        lambda: None,
        lambda: conf.write_text(f"&include {inc}\n[m]\npath=/tmp\ncomment = bbb\n"),
        lambda: inc.write_text("[x]\npath=/tmp\ncomment = inc\n[y]\npath=/tmp\n"),
        lambda: inc.unlink(),
        lambda: inc.write_text("[z]\npath=/tmp\ncomment = back\n"),
        lambda: conf.write_text(f"&include {confd}\n[m]\npath=/tmp\n"),
        lambda: (confd / "d.conf").write_text("[d]\npath=/tmp\n"),
    ]
    try:
        seen = []
        for step in steps:
            step()
            want, got = _list_modules(ref_port), _list_modules(our_port)
            if want[0]:  # the connection just ends (the client's code depends on when)
                assert got[0] and not got[1] and not want[1]
            else:
                assert got == want
            seen.append(want)
    finally:
        peers.stop(ref)
        peers.stop(ours)
    assert seen[0] == (0, ["x\tinc", "m\taaa"])
    assert seen[1] == (0, ["x\tinc", "m\tbbb"])
    assert seen[3][0] != 0
    assert seen[-1] == (0, ["d\t", "m\t"])
