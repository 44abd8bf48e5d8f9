"""Regressions from rsync 3.5.0's own suite (remote-shell, daemon and filter groups),
each checked against Debian's rsync doing the same thing: ``--daemon --help``,
``--chmod`` copy clauses, RSYNC_CONNECT_PROG's host check, ``--drop-D``,
``--confine-root`` for merge files, ``-R --no-implied-dirs`` and ``-m`` over ssh,
``--early-input`` with ``early exec``, ``name converter``, and the ``-vv`` filter
traces ("[sender] hiding file X because of pattern P").
"""

from __future__ import annotations

import os
import pwd
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import treecompare as tc
from interop import peers
from interop.peers import SshServer
from test_daemon_filters import Daemon, both, daemon_pair

sshd_server = peers.sshd_server  # the session fixture

_SRC = str(Path(__file__).resolve().parent.parent / "src")
# sshd does not pass our environment on: PYTHONPATH goes in the remote command.
NETSYNC_PATH = f"env PYTHONPATH={shlex.quote(_SRC)} {shlex.quote(sys.executable)} -m netsync"
PROGRAMS = (("rsync", [tc.RSYNC]), ("netsync", tc.program_under_test()))


def _need_rsync() -> None:
    if not Path(tc.RSYNC).exists():
        peers.missing("rsync is not installed")


def _run(cmd: list[str], args: list[str], cwd: Path, env: dict[str, str] | None = None
         ) -> tc.Run:
    argv = [*cmd, *args]
    p = subprocess.run(argv, cwd=cwd, env=env or tc.sync_env(), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=120)
    return tc.Run(argv, p.returncode, p.stdout, p.stderr)


def _tree(root: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """Names below ``root`` with their kind and content (file data, link target)."""
    out: dict[str, tuple[str, bytes | str | None]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", None)
        elif stat.S_ISREG(st.st_mode):
            out[rel] = ("file", p.read_bytes())
        else:
            out[rel] = ("other", None)
    return out


# ---------------------------------------------------------------- help, --chmod


def test_daemon_help_lists_rsyncs_daemon_options(tmp_path: Path) -> None:
    """misc-coverage: ``--daemon --help`` prints rsync's daemon option rows and says
    they are rsync --daemon's."""
    _need_rsync()
    rows = {}
    for who, cmd in PROGRAMS:
        r = _run(cmd, ["--daemon", "--help"], tmp_path)
        assert r.returncode == 0, r.describe()
        rows[who] = [ln for ln in r.stdout.decode().splitlines() if ln.startswith("--")]
        text = r.stdout.decode()
    assert rows["netsync"] == rows["rsync"]
    assert "--no-detach" in text and "rsync --daemon" in text


@pytest.mark.parametrize(("spec", "start", "is_dir"), [
    ("g=o,o=", 0o647, False), ("g=u", 0o741, False), ("g-o", 0o775, False),
    ("u=g", 0o4755, False), ("g=u", 0o2755, False), ("o=u", 0o1750, True),
])
def test_chmod_copy_clause_clears_special_bits(tmp_path: Path, spec: str, start: int,
                                               is_dir: bool) -> None:
    """chmod-option: "u=g" on a setuid file clears setuid (chmod.c's copy clauses)."""
    _need_rsync()
    modes = {}
    for who, cmd in PROGRAMS:
        src = tmp_path / who / "src"
        src.mkdir(parents=True)
        item = src / "permcopy"
        if is_dir:
            item.mkdir()
        else:
            item.write_text("permcopy\n")
        os.chmod(item, start)
        r = _run(cmd, ["-a", f"--chmod={spec}", f"{src}/", f"{tmp_path / who / 'dst'}/"],
                 tmp_path)
        assert r.returncode == 0, r.describe()
        modes[who] = stat.S_IMODE((tmp_path / who / "dst" / "permcopy").stat().st_mode)
    assert oct(modes["netsync"]) == oct(modes["rsync"])


# ------------------------------------------------------- RSYNC_CONNECT_PROG


@pytest.mark.parametrize("host", ["localhost;touch${IFS}pwned;#", "-c", "+x", "~root",
                                  "%self"])
def test_connect_prog_refuses_shell_active_host(tmp_path: Path, host: str) -> None:
    """connect-prog-nested-singlequote-host-injection: a host a nested shell would
    re-parse is refused before the program runs (exit 10), as rsync does."""
    _need_rsync()
    got = {}
    for who, cmd in PROGRAMS:
        work = tmp_path / who
        work.mkdir()
        env = {**tc.sync_env(), "RSYNC_CONNECT_PROG": "sh -c 'printf %H >/dev/null'"}
        r = _run(cmd, [f"rsync://{host}/m/", str(work / "out")], work, env)
        assert not (work / "pwned").exists(), r.describe()
        got[who] = (r.returncode, r.stderr.splitlines()[:1])
    assert got["netsync"] == got["rsync"]
    assert got["rsync"] == (10, [b"unsafe host characters for RSYNC_CONNECT_PROG"])


@pytest.mark.parametrize(("host", "seen"), [("host_name", "host_name"),
                                            ("host+alias", "host+alias"),
                                            ("[fe80::1%eth0]", "fe80::1%eth0")])
def test_connect_prog_passes_plain_host_quoted(tmp_path: Path, host: str, seen: str) -> None:
    _need_rsync()
    for who, cmd in PROGRAMS:
        work = tmp_path / who
        work.mkdir()
        probe = work / "probe.sh"
        probe.write_text(f'#!/bin/sh\nprintf %s "$1" > {shlex.quote(str(work / "seen"))}\n')
        probe.chmod(0o755)
        env = {**tc.sync_env(), "RSYNC_CONNECT_PROG": f"{probe} %H"}
        r = _run(cmd, [f"rsync://{host}/m/", str(work / "out")], work, env)
        assert b"unsafe host" not in r.stderr, r.describe()
        assert (work / "seen").read_text() == seen, (who, r.describe())


# ------------------------------------------------------------------ over ssh


def _ssh_pair(ssh: SshServer, tmp_path: Path, setup, make_args
              ) -> dict[str, tuple[tc.Run, Path]]:
    """Run ``make_args(rsync_path, work)`` with the stock client once against each
    server (``rsync`` and netsync as --rsync-path); ``setup(work)`` builds the trees."""
    _need_rsync()
    out = {}
    for who, rpath in (("rsync", "rsync"), ("netsync", NETSYNC_PATH)):
        work = tmp_path / who
        work.mkdir(parents=True)
        setup(work)
        out[who] = (_run([tc.RSYNC], make_args(rpath, work), work), work)
    return out


def test_drop_D_receiver_creates_no_fifo(sshd_server: SshServer, tmp_path: Path) -> None:
    """rrsync-specials-denied: a --drop-D server receives -D's list but makes no FIFO."""
    def setup(work: Path) -> None:
        (work / "src").mkdir()
        os.mkfifo(work / "src" / "fifo")
        (work / "src" / "ordinary").write_text("PLAIN\n")
        (work / "dst").mkdir()

    runs = _ssh_pair(sshd_server, tmp_path, setup, lambda rpath, work: [
        "-rlptgoD", "--specials", "-e", sshd_server.rsh, f"--rsync-path={rpath} --drop-D",
        "src/", f"{sshd_server.login}:{work}/dst/"])
    for who, (r, work) in runs.items():
        assert r.returncode == 0, (who, r.describe())
        assert (work / "dst" / "ordinary").read_text() == "PLAIN\n"
        assert not (work / "dst" / "fifo").exists(), who


def test_drop_D_local(tmp_path: Path) -> None:
    _need_rsync()
    for who, cmd in PROGRAMS:
        src = tmp_path / who / "src"
        src.mkdir(parents=True)
        os.mkfifo(src / "fifo")
        (src / "f").write_text("x\n")
        r = _run(cmd, ["-a", "--drop-D", f"{src}/", f"{tmp_path / who / 'dst'}/"], tmp_path)
        assert r.returncode == 0, r.describe()
        assert sorted(os.listdir(tmp_path / who / "dst")) == ["f"], who


def test_confine_root_bounds_dir_merge_file(sshd_server: SshServer, tmp_path: Path) -> None:
    """rrsync-merge-file-confine: with --confine-root a dir-merge file outside the root
    is read as absent (the "secretword" it lists is not excluded); inside, it works."""
    def setup(work: Path) -> None:
        root = work / "root"
        (root / "sub").mkdir(parents=True)
        (work / "outside-secret").write_text("secretword\n")
        (root / "secretword").write_bytes(b"X")
        (root / "keep").write_bytes(b"X")
        (root / "sub" / "intree-dropped").write_bytes(b"X")
        (root / "sub" / ".rsync-filter").write_text("intree-dropped\n")

    for n, filt in enumerate((":-s ../outside-secret", ":-s .rsync-filter")):
        runs = _ssh_pair(sshd_server, tmp_path / str(n), setup, lambda rpath, work, filt=filt: [
            "-r", f"--filter={filt}", "-e", sshd_server.rsh,
            f"--rsync-path=cd {work / 'root'} && {rpath} --confine-root={work / 'root'}",
            f"{sshd_server.login}:.", "dst/"])
        trees = {}
        for who, (r, work) in runs.items():
            assert r.returncode == 0, (who, r.describe())
            trees[who] = _tree(work / "dst")
        assert trees["netsync"] == trees["rsync"]
        assert "secretword" in trees["rsync"]
        assert ("sub/intree-dropped" in trees["rsync"]) == (n == 0)


def test_confine_root_local_symlinked_source(tmp_path: Path) -> None:
    """--confine-root judges a merge file by where it really is, even reached through a
    symlinked source argument."""
    _need_rsync()
    results: dict[str, list] = {}
    for who, cmd in PROGRAMS:
        base = tmp_path / who
        root = base / "aliased"
        root.mkdir(parents=True)
        (base / "aliased-secret").write_text("aliased-word\n")
        (root / "aliased-word").write_bytes(b"X")
        (root / "plain").write_bytes(b"X")
        os.symlink(".", root / "self-alias")
        os.symlink("../aliased-secret", root / "outside-link")
        (root / "intree-list").write_text("plain\n")
        for rule, dst in (("merge,- outside-link", "esc"), ("merge,- intree-list", "ctl")):
            (root / ".rsync-filter").write_text(rule + "\n")
            r = _run(cmd, ["-r", f"--confine-root={root}", "--filter=:s .rsync-filter",
                           f"{root}/self-alias/", f"{base / dst}/"], base)
            results.setdefault(who, []).append(
                (r.returncode, _tree(base / dst) if (base / dst).exists() else None))
    assert results["netsync"] == results["rsync"]
    (esc_rc, _), (ctl_rc, ctl_tree) = results["rsync"]
    assert esc_rc == 11  # the outside merge file is refused: a fatal "merge"
    assert ctl_rc == 0 and ctl_tree is not None and "plain" not in ctl_tree


def test_pull_relative_no_implied_dirs(sshd_server: SshServer, tmp_path: Path) -> None:
    """rrsync-pull-arg-shapes: ``-R --no-implied-dirs host:sub/deep/f2`` from a netsync
    server (no incremental recursion) delivers sub/deep/f2, as from rsync."""
    def setup(work: Path) -> None:
        (work / "r" / "sub" / "deep").mkdir(parents=True)
        (work / "r" / "sub" / "deep" / "f2").write_text("DEEP\n")
        (work / "dst").mkdir()

    runs = _ssh_pair(sshd_server, tmp_path, setup, lambda rpath, work: [
        "-a", "-i", "-R", "--no-implied-dirs", "-e", sshd_server.rsh,
        f"--rsync-path=cd {work / 'r'} && {rpath}", f"{sshd_server.login}:sub/deep/f2",
        "dst/"])
    (want, a), (got, b) = runs["rsync"], runs["netsync"]
    assert want.returncode == got.returncode == 0, got.describe()
    assert _tree(b / "dst") == _tree(a / "dst") != {}
    assert tc.output_lines(got.stdout) == tc.output_lines(want.stdout)


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_prune_empty_dirs_over_ssh(sshd_server: SshServer, tmp_path: Path,
                                   direction: str) -> None:
    """exclude-lsh: -m drops directory chains with no file below them in a pull
    (netsync client receiving) and a push (netsync server receiving)."""
    _need_rsync()

    def setup(work: Path) -> None:
        for d in ("keep/this", "lose/this/too", "a/b/c"):
            (work / "src" / d).mkdir(parents=True)
        (work / "src" / "keep" / "this" / "f").write_text("f\n")
        (work / "src" / "a" / "g").write_text("g\n")
        (work / "dst").mkdir()

    trees = {}
    for who in ("rsync", "netsync"):
        work = tmp_path / who
        work.mkdir()
        setup(work)
        ssh = ["-e", sshd_server.rsh]
        if direction == "push":
            rpath = "rsync" if who == "rsync" else NETSYNC_PATH
            r = _run([tc.RSYNC], ["-a", "-m", *ssh, f"--rsync-path={rpath}", "src/",
                                  f"{sshd_server.login}:{work}/dst/"], work)
        else:
            cmd = [tc.RSYNC] if who == "rsync" else tc.program_under_test()
            r = _run(cmd, ["-a", "-m", *ssh, "--rsync-path=rsync",
                           f"{sshd_server.login}:{work}/src/", "dst/"], work)
        assert r.returncode == 0, (who, r.describe())
        trees[who] = _tree(work / "dst")
    assert trees["netsync"] == trees["rsync"]
    assert "lose" not in trees["rsync"] and "a/b" not in trees["rsync"]


# --------------------------------------------------- early exec, name converter

HOOK_MODULES = """
[early]
path = {root}/early
read only = no
early exec = {root}/early.sh
[conv]
path = {root}/conv
read only = no
name converter = {root}/nameconv.sh
numeric ids = no
[failing]
path = {root}/early
read only = no
early exec = exit 3
[map42]
path = {root}/map42
read only = no
name converter = {root}/conv42.sh
numeric ids = no
[num]
path = {root}/num
read only = no
name converter = {root}/conv42.sh
numeric ids = yes
"""


def _prepare_hooks(root: Path) -> None:
    for d in ("early", "conv", "map42", "num"):
        (root / d).mkdir()
    conv42 = root / "conv42.sh"
    # Every name is id 4242: where the daemon maps by name, the files show it.
    conv42.write_text(f"#!/bin/sh\nwhile read -r req arg; do echo \"$req $arg\" >> {root}/c42.log\n"
                      "  echo 4242\ndone\n")
    conv42.chmod(0o755)
    early = root / "early.sh"
    early.write_text(f'#!/bin/sh\nprintf "%s|" "$RSYNC_MODULE_NAME" > {root}/early.out\n'
                     f"cat >> {root}/early.out\n")
    conv = root / "nameconv.sh"
    # Logs each request, answers from the passwd/group files.
    conv.write_text(f"#!/bin/sh\nwhile read -r req arg; do echo \"$req $arg\" >> {root}/conv.log\n"
                    '  case $req in\n'
                    '  usr) getent passwd "$arg" | cut -d: -f3 ;;\n'
                    '  grp) getent group "$arg" | cut -d: -f3 ;;\n'
                    '  uid) getent passwd "$arg" | cut -d: -f1 ;;\n'
                    '  gid) getent group "$arg" | cut -d: -f1 ;;\n'
                    '  *) echo ;;\n  esac\ndone\n')
    for p in (early, conv):
        p.chmod(0o755)


@pytest.fixture(scope="module")
def hook_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    yield from daemon_pair(tmp_path_factory.mktemp("hooks"), HOOK_MODULES, _prepare_hooks)


def test_early_exec_gets_early_input(hook_pair: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    """daemon-early-exec-nameconv: the hook runs with the module's environment and
    the client's --early-input on its stdin; netsync as client and as daemon."""
    payload = tmp_path / "payload"
    payload.write_bytes(b"EARLY-PAYLOAD\n\0binary")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f\n")
    for d in hook_pair:
        for _who, cmd in PROGRAMS:
            out = d.root / "early.out"
            out.unlink(missing_ok=True)
            r = _run(cmd, ["-r", f"--early-input={payload}", f"{src}/", d.url("early/")],
                     tmp_path)
            assert r.returncode == 0, (d.name, r.describe())
            assert out.read_bytes() == b"early|" + payload.read_bytes(), (d.name, cmd)


def test_early_exec_failure_refuses(hook_pair: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    runs = both(hook_pair, tmp_path, lambda d, w: [d.url("failing/")])
    for r in runs:
        assert r.returncode == 5, r.describe()
        assert b"@ERROR: early exec failed" in r.stderr, r.describe()


def test_early_input_errors(hook_pair: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    """A missing or too-big (> 5 KiB) --early-input ends the run as rsync's does."""
    big = tmp_path / "big"
    big.write_bytes(b"x" * 6000)
    ref = hook_pair[0]
    results = {}
    for who, cmd in PROGRAMS:
        lines = []
        for arg in (str(tmp_path / "missing"), str(big)):
            r = _run(cmd, [f"--early-input={arg}", ref.url("early/")], tmp_path)
            first = r.stderr.splitlines()[0].replace(b"netsync:", b"rsync:")
            lines.append((r.returncode, first))
        results[who] = lines
    assert results["netsync"] == results["rsync"]
    assert results["rsync"][1] == (5, f"{big} is > 5120 bytes.".encode())


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files a non-root owner needs root")
def test_name_converter_maps_ids(hook_pair: tuple[Daemon, Daemon], tmp_path: Path) -> None:
    """The daemon asks the converter ("usr NAME", "grp NAME") and owns the files by
    the ids it answers."""
    user = next(p for p in pwd.getpwall() if p.pw_uid != 0 and p.pw_gid != 0)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f\n")
    os.chown(src / "f", user.pw_uid, user.pw_gid)
    got = {}
    for d in hook_pair:
        (d.root / "conv.log").unlink(missing_ok=True)
        r = _run([tc.RSYNC], ["-rog", f"{src}/", d.url("conv/")], tmp_path)
        assert r.returncode == 0, (d.name, r.describe())
        st = (d.root / "conv" / "f").stat()
        log = sorted(set((d.root / "conv.log").read_text().splitlines()))
        # A pull asks for each id's name once ("uid N", "gid N"), in list order.
        (d.root / "conv.log").unlink()
        r = _run([tc.RSYNC], ["-rog", d.url("conv/"), f"{tmp_path / d.name}/"], tmp_path)
        assert r.returncode == 0, (d.name, r.describe())
        pulled = (d.root / "conv.log").read_text().splitlines()
        got[d.name] = (st.st_uid, st.st_gid, log, pulled)
    assert got["netsync"] == got["rsync"]
    assert got["rsync"][0] == user.pw_uid
    assert any(ln.startswith("usr ") for ln in got["rsync"][2])
    assert f"uid {user.pw_uid}" in got["rsync"][3]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files a non-root owner needs root")
@pytest.mark.parametrize(("module", "mapped"), [("map42", True), ("num", False)])
def test_numeric_ids_module_maps_no_names(hook_pair: tuple[Daemon, Daemon], tmp_path: Path,
                                          module: str, mapped: bool) -> None:
    """A module's "numeric ids = yes" maps no name, even with a converter; with
    "no" the converter's answer (4242 for every name) owns the files."""
    user = next(p for p in pwd.getpwall() if p.pw_uid != 0 and p.pw_gid != 0)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f\n")
    os.chown(src / "f", user.pw_uid, user.pw_gid)
    got = {}
    for d in hook_pair:
        (d.root / "c42.log").unlink(missing_ok=True)
        r = _run([tc.RSYNC], ["-rog", f"{src}/", d.url(f"{module}/")], tmp_path)
        assert r.returncode == 0, (d.name, r.describe())
        st = (d.root / module / "f").stat()
        asked = (d.root / "c42.log").exists()
        got[d.name] = (st.st_uid, st.st_gid, asked)
    assert got["netsync"] == got["rsync"]
    want = (4242, 4242, True) if mapped else (user.pw_uid, user.pw_gid, False)
    assert got["rsync"] == want


# ---------------------------------------------------------- filter traces


def _traces(out: bytes) -> list[bytes]:
    return [ln for ln in out.splitlines() if b"because of pattern" in ln]


def test_vv_filter_traces_local(tmp_path: Path) -> None:
    """filter-merge-content-echo: -vv reports each filter match; a rule read from a
    file is not quoted ("<rule from a file read earlier>")."""
    _need_rsync()
    outs = {}
    for who, cmd in PROGRAMS:
        src = tmp_path / who / "src"
        (src / "sub").mkdir(parents=True)
        for name in ("f", "secret-marker-9x", "sub/keep", "sub/skip.o"):
            (src / name).write_text("x\n")
        (src / ".rsync-filter").write_text("- sec[r]et-marker-9x\n")
        dst = tmp_path / who / "dst"
        (dst / "x").mkdir(parents=True)
        (dst / "keep").write_text("k\n")
        r = _run(cmd, ["-r", "-F", "-vv", "--exclude=*.o", "--delete", "--filter=P keep",
                       f"{src}/", f"{dst}/"], tmp_path)
        assert r.returncode == 0, r.describe()
        lines = _traces(r.stdout)
        # The generator's lines interleave with the receiver's output differently.
        outs[who] = ([ln for ln in lines if ln.startswith(b"[sender]")],
                     sorted(ln for ln in lines if ln.startswith(b"[generator]")))
    assert outs["netsync"] == outs["rsync"]
    assert outs["rsync"][0][0] == (b"[sender] hiding file secret-marker-9x because of pattern "
                                   b"<rule from a file read earlier> [per-dir .rsync-filter]")


def test_vv_filter_traces_from_server(sshd_server: SshServer, tmp_path: Path) -> None:
    """A pulling client shows the server sender's traces."""
    def setup(work: Path) -> None:
        (work / "src").mkdir()
        for name in ("a.o", "b", ".hidden"):
            (work / "src" / name).write_text("x\n")

    runs = _ssh_pair(sshd_server, tmp_path, setup, lambda rpath, work: [
        "-r", "-vv", "--exclude=*.o", "--filter=- .*", "-e", sshd_server.rsh,
        f"--rsync-path={rpath}", f"{sshd_server.login}:{work}/src/", "dst/"])
    (want, _), (got, _) = runs["rsync"], runs["netsync"]
    assert want.returncode == got.returncode == 0, got.describe()
    assert sorted(_traces(got.stdout)) == sorted(_traces(want.stdout)) != []


@pytest.mark.parametrize("args", [
    ["--debug=FILTER1", "--filter=- my-own-rule "],
    ["--filter=- " + "Q" * 4200],
])
def test_filter_rule_messages(tmp_path: Path, args: list[str]) -> None:
    """add_rule()'s trailing-whitespace CAUTION (for the user's own rule) and the
    over-long rule that is dropped with a message."""
    _need_rsync()
    outs = {}
    for who, cmd in PROGRAMS:
        src = tmp_path / who / "src"
        src.mkdir(parents=True)
        (src / "f").write_text("x\n")
        r = _run(cmd, ["-r", *args, f"{src}/", f"{tmp_path / who / 'dst'}/"], tmp_path)
        outs[who] = (r.returncode, [ln for ln in (r.stdout + r.stderr).splitlines()
                                    if b"CAUTION" in ln or b"over-long" in ln])
    assert outs["netsync"] == outs["rsync"]
    assert outs["rsync"][1], outs


def test_name_converter_refuses_control_characters(tmp_path: Path) -> None:
    """namecvt_safe_token(): a name with a newline never reaches the converter (it
    could forge a second request); the refusal is logged, the name stays unmapped."""
    from netsync.daemon import namecvt, xfer_exec

    log = tmp_path / "asked"
    conv = tmp_path / "conv.sh"
    conv.write_text(f'#!/bin/sh\nwhile read -r line; do echo "$line" >> {log}; echo 7; done\n')
    conv.chmod(0o755)
    pid, req, ans = xfer_exec.start_pre_exec(str(conv))
    xfer_exec.write_pre_exec_args(req, None, [b"rsyncd"], keep_open=True)
    c = namecvt.NameConverter(pid, req, ans)
    errors: list[str] = []
    c.on_error = errors.append
    try:
        assert c.name_to_id("usr", b"bad\nname") is None
        assert c.name_to_id("usr", b"good") == 7
        assert c.name_to_id("usr", b"good") == 7  # asked once
    finally:
        os.close(req)
        os.close(ans)
        xfer_exec.wait_status(pid)
    assert log.read_text().splitlines() == ["usr good"]
    assert errors == ["invalid name-converter token: bad\nname"]
