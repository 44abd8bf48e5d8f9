"""Cases found by rsync's own test suite: each runs rsync and netsync on identical setups."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import treecompare as tc

RSYNC = ["/usr/bin/rsync"]
NETSYNC = [sys.executable, "-m", "netsync"]


def both(tmp_path: Path, setup: Callable[[Path], None], *args: str, umask: int | None = None,
         extra: Callable[[Path], None] | None = None) -> tuple[subprocess.CompletedProcess[bytes], ...]:
    """Run rsync in tmp/rsync and netsync in tmp/netsync; trees must end up equal."""
    runs = []
    # mtimes from the setups or the runs compare as "now" (file times use a coarse clock)
    t0 = time.time_ns() - 100_000_000
    for who, cmd in (("rsync", RSYNC), ("netsync", NETSYNC)):
        work = tmp_path / who
        work.mkdir()
        setup(work)
        pre = (lambda: os.umask(umask)) if umask is not None else None
        runs.append(subprocess.run([*cmd, *args], cwd=work, capture_output=True, timeout=120,
                                   preexec_fn=pre))
        if extra is not None:
            extra(work)
    r, n = runs
    assert n.returncode == r.returncode, (r.stderr, n.stderr)
    tc.assert_same(tc.snapshot(tmp_path / "rsync", t0), tc.snapshot(tmp_path / "netsync", t0))
    return r, n


def test_destination_symlink_to_dir_is_followed(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "sd").mkdir()
        (w / "sd" / "f").write_bytes(b"x")
        (w / "real").mkdir()
        os.symlink("real", w / "lnk")
    both(tmp_path, setup, "-a", "sd/", "lnk/")
    assert (tmp_path / "netsync" / "real" / "f").exists()


def test_append_with_delta(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "as").mkdir()
        (w / "ad").mkdir()
        (w / "as" / "f").write_bytes(b"".join(b"%d\n" % i for i in range(5000)))
        (w / "ad" / "f").write_bytes(b"".join(b"%d\n" % i for i in range(3000)))
    both(tmp_path, setup, "-a", "--append", "--no-whole-file", "as/", "ad/")


@pytest.mark.parametrize("spec", ["g=u", "o=u", "u=g", "g-o", "g=o,o=", "D755,F644", "a+X"])
def test_chmod_clauses(tmp_path: Path, spec: str) -> None:
    def setup(w: Path) -> None:
        (w / "s" / "d").mkdir(parents=True)
        (w / "s" / "f").write_bytes(b"x")
        os.chmod(w / "s" / "f", 0o640)
        os.chmod(w / "s" / "d", 0o751)
    both(tmp_path, setup, "-r", "-p", f"--chmod={spec}", "s/", "d/")


def test_new_dirs_keep_inherited_setgid(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "src" / "dir").mkdir(parents=True)
        (w / "d").mkdir()
        os.chmod(w / "d", 0o2700)
    both(tmp_path, setup, "-r", "src/", "d/to", umask=0o077)


def test_files_from_dot_dir_split(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "from" / "dir").mkdir(parents=True)
        (w / "from" / "dir" / "x").write_bytes(b"x")
        (w / "list").write_bytes(b"from/./dir/x\n")
    both(tmp_path, setup, "-a", "--files-from=list", ".", "dst/")
    assert (tmp_path / "netsync" / "dst" / "dir" / "x").exists()


def test_safe_links_rejects_inner_dotdot(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "s").mkdir()
        os.symlink("a/a/a/../../../x", w / "s" / "l1")
        os.symlink("../s/x", w / "s" / "l2")
        os.symlink("x/..", w / "s" / "l3")
    both(tmp_path, setup, "-rl", "--safe-links", "s/", "d/")


def test_list_only_ignores_destination(tmp_path: Path) -> None:
    def setup(w: Path) -> None:
        (w / "s").mkdir()
        (w / "s" / "f").write_bytes(b"x")
    r, n = both(tmp_path, setup, "--list-only", "s/", "nod")
    assert [ln.split()[-1] for ln in r.stdout.splitlines()] == \
        [ln.split()[-1] for ln in n.stdout.splitlines()]


def _other_filesystem(tmp_path: Path) -> Path:
    """/dev/shm, which these tests need on a filesystem other than the temp dir's."""
    shm = Path("/dev/shm")
    if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.fail("this test needs /dev/shm on a filesystem other than the temp dir")
    return shm


def test_backup_dir_on_another_filesystem(tmp_path: Path) -> None:
    shm = _other_filesystem(tmp_path)
    bak = {}

    def setup(w: Path) -> None:
        (w / "s").mkdir()
        (w / "d").mkdir()
        (w / "s" / "reg").write_bytes(b"new")
        (w / "d" / "reg").write_bytes(b"old!")
        bak[w.name] = shm / f"netsync-test-bak-{os.getpid()}-{w.name}"

    def collect(w: Path) -> None:
        shutil.move(str(bak[w.name]), w / "bak")

    # Each run gets its own absolute backup dir on /dev/shm, moved back for comparison.
    t0 = time.time_ns() - 100_000_000
    for who, cmd in (("rsync", RSYNC), ("netsync", NETSYNC)):
        w = tmp_path / who
        w.mkdir()
        setup(w)
        p = subprocess.run([*cmd, "-a", "-b", f"--backup-dir={bak[who]}", "s/", "d/"], cwd=w,
                           capture_output=True, timeout=120)
        assert p.returncode == 0, p.stderr
        collect(w)
    tc.assert_same(tc.snapshot(tmp_path / "rsync", t0), tc.snapshot(tmp_path / "netsync", t0))
    assert (tmp_path / "netsync" / "bak" / "reg").read_bytes() == b"old!"


def _missing_args_tree(w: Path) -> None:
    (w / "src" / "keep").mkdir(parents=True)
    (w / "src" / "f").write_bytes(b"a\n")
    (w / "src" / "keep" / "k").write_bytes(b"k\n")
    (w / "dst" / "gone").mkdir(parents=True)
    (w / "dst" / "keep").mkdir()
    (w / "dst" / "g").write_bytes(b"b\n")
    (w / "dst" / "gone" / "x").write_bytes(b"c\n")


@pytest.mark.parametrize("args", [
    ("-ai", "src/g", "src/gone", "src/nothere"),  # a non-empty dir needs --force
    ("-ai", "--force", "src/g", "src/gone"),
    ("-ai", "--delete", "src/gone"),
    ("-ai", "-n", "--force", "src/gone", "src/g"),
    ("-iR", "src/./g", "src/./keep"),
])
def test_delete_missing_args(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A missing source argument deletes the destination's name (itemized *deleting)."""
    r, n = both(tmp_path, _missing_args_tree, *args, "--delete-missing-args", "dst/")
    assert (n.stdout, n.stderr) == (r.stdout, r.stderr)
    assert b"*deleting" in n.stdout


def test_delete_missing_args_with_transfers(tmp_path: Path) -> None:
    """Present arguments are copied as usual.  rsync's generator runs ahead of its
    sender, so its lines may come in another order: compare them as sets."""
    r, n = both(tmp_path, _missing_args_tree, "-ai", "--force", "--delete-missing-args",
                "src/f", "src/g", "src/gone", "src/keep", "dst/")
    assert sorted(n.stdout.splitlines()) == sorted(r.stdout.splitlines())
    assert n.stderr == r.stderr == b""
    assert (tmp_path / "netsync" / "dst" / "keep" / "k").read_bytes() == b"k\n"
    assert not (tmp_path / "netsync" / "dst" / "gone").exists()


@pytest.mark.parametrize("shift", ["insert", "delete", "replace"])
def test_inplace_delta_never_reads_overwritten_blocks(tmp_path: Path, shift: str) -> None:
    # --inplace rewrites the basis while reading it: a block the write position has
    # passed must not be referenced (rsync's updating_basis_file).
    lines = [b"line %06d of the old file\n" % i for i in range(40000)]
    new = {"insert": [b"inserted\n" * 3000] + lines[:30000] + lines[35000:],
           "delete": lines[5000:] + lines[:100],
           "replace": lines[20000:] + lines[:20000]}[shift]

    def setup(w: Path) -> None:
        (w / "s").mkdir()
        (w / "d").mkdir()
        (w / "s" / "f").write_bytes(b"".join(new))
        (w / "d" / "f").write_bytes(b"".join(lines))
        os.utime(w / "d" / "f", (1_000_000_000, 1_000_000_000))  # not skipped as unchanged
    both(tmp_path, setup, "-a", "--inplace", "--no-whole-file", "s/", "d/")
    assert (tmp_path / "netsync" / "d" / "f").read_bytes() == b"".join(new)


def _out(p: subprocess.CompletedProcess[bytes]) -> list[bytes]:
    """stdout without the byte counts and rsync's -vv debug lines (not compared)."""
    skip = (b"sent ", b"total size ", b"delta-transmission ", b"total: ")
    return [ln for ln in p.stdout.splitlines() if not ln.startswith(skip)]


def _vv_tree(w: Path) -> None:
    (w / "s" / "sub").mkdir(parents=True)
    for name in ("f", "g", "sub/h"):
        (w / "s" / name).write_bytes(name.encode() * 100)
    os.link(w / "s" / "f", w / "s" / "f2")
    os.symlink("f", w / "s" / "lnk")
    os.mkfifo(w / "s" / "fifo")
    subprocess.run([*RSYNC, "-aH", "--specials", "s/", "d/"], cwd=w, check=True)
    os.chmod(w / "d" / "g", 0o600)  # an attribute-only change: "g", not "g is uptodate"
    (w / "s" / "new").write_bytes(b"new")  # transferred: its name comes after the rest
    os.utime(w / "s", (1_000_000_000, 1_000_000_000))  # "./" always changes (-t)


@pytest.mark.parametrize("opts", [("-vv", "-rlpH", "--specials"), ("-vv", "-rlptH"),
                                  ("-ii", "-rlptH", "--specials"),
                                  ("-ivv", "-rlptH", "--specials")])
def test_vv_reports_uptodate_entries(tmp_path: Path, opts: tuple[str, ...]) -> None:
    # rsync.c set_file_attrs(ATTRS_REPORT), hlink.c maybe_hard_link(); the transfer
    # names follow the generator's own messages (as rsync's sender prints them).
    r, n = both(tmp_path, _vv_tree, *opts, "s/", "d/")
    if "-rlptH" in opts:
        # A changed dir time makes rsync's sender print "./" whenever its stream
        # flushes (racy): compare the lines, and the generator's own in order.
        assert sorted(_out(n)) == sorted(_out(r))
        assert [x for x in _out(n) if x.endswith(b" is uptodate")] == \
            [x for x in _out(r) if x.endswith(b" is uptodate")]
    else:
        assert _out(n) == _out(r)
    if "-vv" in opts and "-ivv" not in opts:
        assert b"f2 is uptodate" in n.stdout


def _alt_tree(w: Path) -> None:
    (w / "from" / "foo").mkdir(parents=True)
    (w / "from" / "bar").mkdir()
    (w / "from" / "foo" / "config1").write_bytes(b"one\n" * 500)
    (w / "from" / "foo" / "config2").write_bytes(b"two\n" * 500)
    (w / "from" / "bar" / "data").write_bytes(b"data\n" * 500)
    os.link(w / "from" / "foo" / "config1", w / "from" / "foo" / "extra")
    os.symlink("../bar/data", w / "from" / "foo" / "sym")
    subprocess.run([*RSYNC, "-aH", "from/", "to/"], cwd=w, check=True)


@pytest.mark.parametrize("alt", ["--copy-dest=../to", "--link-dest=../to", "--compare-dest=../to"])
@pytest.mark.parametrize("opts", [("-ivv",), ("-i",), ("-vv",), ("-ii",), ("-nvv",), ("-nii",)])
def test_alt_dest_matches_are_itemized_as_rsync(tmp_path: Path, alt: str,
                                                opts: tuple[str, ...]) -> None:
    # try_dests_reg/try_dests_non at match level 3 and hard_link_check's alt-dest
    # match: "cd ./", "hf extra => config1", "NAME is uptodate"; a dry run drops one
    # leading "../" of the alt dir (the dest it could not create).
    r, n = both(tmp_path, _alt_tree, *opts, "-plrtH", alt, "from/", "to2/")
    assert _out(n) == _out(r)
    assert n.stderr == r.stderr == b""


def test_hardlinked_specials_link_to_the_first(tmp_path: Path) -> None:
    # Non-regular members need no data: the first is made and the rest link to it at
    # once; regular files wait for the last member's data, then link newest-first.
    def setup(w: Path) -> None:
        (w / "s").mkdir()
        os.mkfifo(w / "s" / "p1")
        for i in (2, 3):
            os.link(w / "s" / "p1", w / "s" / f"p{i}")
        for name in ("a", "z"):
            (w / "s" / f"{name}1").write_bytes(name.encode())
            for i in (2, 3):
                os.link(w / "s" / f"{name}1", w / "s" / f"{name}{i}")
    r, n = both(tmp_path, setup, "-aiH", "--specials", "s/", "d/")
    assert _out(n) == _out(r)
    assert b"hS+++++++++ p2 => p1" in n.stdout


@pytest.mark.parametrize("pdir", [".rsync-partial", "PARTIAL"])
def test_partial_dir_file_is_the_basis_and_then_removed(tmp_path: Path, pdir: str) -> None:
    data = b"".join(b"%08d\n" % i for i in range(60000))

    def setup(w: Path) -> None:
        (w / "src" / "a").mkdir(parents=True)
        (w / "src" / "a" / "f").write_bytes(data)
        (w / "src" / "a" / "same").write_bytes(b"x")
        d = w / "dst" / "a"
        d.mkdir(parents=True)
        shutil.copy2(w / "src" / "a" / "same", d / "same")
        pd = Path(pdir) if pdir.startswith("/") else d / pdir
        pd.mkdir()
        (pd / "f").write_bytes(data[:200000])
        (pd / "same").write_bytes(b"stale")  # dest is up to date: the partial just goes
        # The dirs' times fixed, as a second boundary between making src and dst would
        # add a ".d..t" line to one run only.
        for sub in ("src", "src/a", "dst", "dst/a"):
            os.utime(w / sub, (1_600_000_000, 1_600_000_000))
    r, n = both(tmp_path, setup, "-ai", f"--partial-dir={pdir}", "--no-whole-file",
                "src/", "dst/")
    assert _out(n) == _out(r)
    assert not (tmp_path / "netsync" / "dst" / "a" / pdir).exists()


@pytest.mark.parametrize("args", [("./down/deep",), ("./down/deep/",), ("./down", "./down/deep"),
                                  ("down/deep",), ("--no-implied-dirs", "./down/deep")])
def test_relative_leading_dot_slash_sends_the_dot_dir(tmp_path: Path,
                                                      args: tuple[str, ...]) -> None:
    # flist.c: with -R, a leading "./" lists "." (implied) so the dest dir gets its
    # attributes too.
    def setup(w: Path) -> None:
        (w / "src" / "down" / "deep").mkdir(parents=True)
        (w / "src" / "down" / "deep" / "f").write_bytes(b"f")
        for d in ("src/down/deep/f", "src/down/deep", "src/down", "src"):
            os.utime(w / d, (1_000_000_000, 1_000_000_000))
    t0 = time.time_ns() - 100_000_000
    runs = []
    for who, cmd in (("rsync", RSYNC), ("netsync", NETSYNC)):
        w = tmp_path / who
        w.mkdir()
        setup(w)
        runs.append(subprocess.run([*cmd, "-aiR", *args, str(w / "dst")], cwd=w / "src",
                                   capture_output=True, timeout=120))
    r, n = runs
    assert n.returncode == r.returncode == 0, (r.stderr, n.stderr)
    assert _out(n) == [ln.replace(b"/rsync/", b"/netsync/") for ln in _out(r)]
    tc.assert_same(tc.snapshot(tmp_path / "rsync" / "dst", t0),
                   tc.snapshot(tmp_path / "netsync" / "dst", t0))


@pytest.mark.parametrize("target", ["../../sensitive", "keep.txt"])
def test_safe_links_backup_drops_only_unsafe_symlinks(tmp_path: Path, target: str) -> None:
    # backup.c: with --safe-links an unsafe symlink being replaced is not backed up.
    def setup(w: Path) -> None:
        (w / "s").mkdir()
        (w / "d").mkdir()
        (w / "s" / "keep.txt").write_bytes(b"k\n")
        (w / "s" / "link").write_bytes(b"regular now\n")
        os.symlink(target, w / "d" / "link")
    r, n = both(tmp_path, setup, "-a", "--backup", "--suffix=.bak", "--safe-links",
                "--info=symsafe", "s/", "d/")
    assert (n.stdout, n.stderr) == (r.stdout, r.stderr)
    assert os.path.islink(tmp_path / "netsync" / "d" / "link.bak") == (target == "keep.txt")


@pytest.mark.parametrize("implied", [True, False])
def test_relative_no_implied_dirs_follows_dest_symlink(tmp_path: Path, implied: bool) -> None:
    # -R --no-implied-dirs uses existing dest path elements as they are (a symlink is
    # followed); with implied dirs the symlink is replaced by a real dir.
    def setup(w: Path) -> None:
        (w / "src" / "path").mkdir(parents=True)
        (w / "src" / "path" / "file").write_bytes(b"NEW\n")
        (w / "dst" / "real").mkdir(parents=True)
        os.symlink("real", w / "dst" / "path")
    opts = () if implied else ("--no-implied-dirs",)
    r, n = both(tmp_path, setup, "-aiR", *opts, "src/./path/file", "dst/")
    assert (n.stdout, n.stderr) == (r.stdout, r.stderr)
    assert (tmp_path / "netsync" / "dst" / "real" / "file").exists() == (not implied)


def test_groupmap_empty_name_matches_every_id_with_numeric_ids(tmp_path: Path) -> None:
    # uidlist.c: --numeric-ids sends no names, so an empty FROM matches every id.
    target = 1 if os.geteuid() == 0 else os.getgid()

    def setup(w: Path) -> None:
        (w / "s" / "d1").mkdir(parents=True)
        (w / "s" / "d1" / "f").write_bytes(b"f")
    both(tmp_path, setup, "-a", "--numeric-ids", f"--groupmap=:{target}", "s/", "d/")
    assert os.stat(tmp_path / "netsync" / "d" / "d1" / "f").st_gid == target


def test_backup_dir_on_another_filesystem_keeps_fifo_and_symlink(tmp_path: Path) -> None:
    # backup.c copy fallback (EXDEV): a fifo is recreated with mknod, never opened.
    shm = _other_filesystem(tmp_path)
    bak = {}

    def setup(w: Path) -> None:
        (w / "s").mkdir()
        (w / "d").mkdir()
        (w / "s" / "fifo").write_bytes(b"replaces the fifo\n")
        os.symlink("gen2", w / "s" / "lnk")
        os.mkfifo(w / "d" / "fifo", 0o640)
        os.symlink("gen1", w / "d" / "lnk")
        bak[w.name] = shm / f"netsync-test-bakx-{os.getpid()}-{w.name}"

    t0 = time.time_ns() - 100_000_000
    for who, cmd in (("rsync", RSYNC), ("netsync", NETSYNC)):
        w = tmp_path / who
        w.mkdir()
        setup(w)
        p = subprocess.run([*cmd, "-rlpD", "-b", f"--backup-dir={bak[who]}", "s/", "d/"],
                           cwd=w, capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
    try:
        tc.assert_same(tc.snapshot(tmp_path / "rsync", t0),
                       tc.snapshot(tmp_path / "netsync", t0))
        tc.assert_same(tc.snapshot(bak["rsync"], t0), tc.snapshot(bak["netsync"], t0))
        assert (bak["netsync"] / "fifo").is_fifo()
    finally:
        for d in bak.values():
            shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("opts", [("-av",), ("-ai", "--no-whole-file"), ("-a", "--inplace")])
def test_append_verify_redoes_a_file_whose_prefix_differs(tmp_path: Path,
                                                          opts: tuple[str, ...]) -> None:
    # receiver.c: a failed --append-verify warns and sends the file again (no append).
    data = b"".join(b"%07d\n" % i for i in range(5000))

    def setup(w: Path) -> None:
        (w / "s").mkdir()
        (w / "d").mkdir()
        (w / "s" / "f").write_bytes(data)
        (w / "s" / "ok").write_bytes(data)
        (w / "d" / "f").write_bytes(b"\0" * 64 + data[64:20000])
        (w / "d" / "ok").write_bytes(data[:20000])
    r, n = both(tmp_path, setup, *opts, "--append-verify", "s/", "d/")
    assert sorted(_out(n)) == sorted(_out(r))
    assert n.stderr == r.stderr
    assert (tmp_path / "netsync" / "d" / "f").read_bytes() == data


def test_delta_input_that_shrinks_reads_as_zeros_not_sigbus(tmp_path: Path) -> None:
    # fileio.c map_ptr(): a source/basis cut short mid-transfer reads as zeros (and is
    # reported); a mapped file would kill the process with SIGBUS instead.
    code = r"""
import errno, os, sys
from netsync import match
p = sys.argv[1]
data = bytes(range(256)) * 4000
open(p, "wb").write(data)
sums = match.generate_sums(data, len(data), "md5", 0, 32)
fd = os.open(p, os.O_RDONLY)
win = match.FileWindow(fd, len(data))
win.FILL = 65536
toks = match.match_tokens(win, sums, "md5", 0, 32)
first = next(toks)
os.truncate(p, 100000)
rest = list(toks)
assert win.status == errno.ENODATA, win.status
print("survived", len(rest) > 0)
"""
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert p.stdout.strip() == "survived True"


_SECRET = "TOP-SECRET-abc123"


@pytest.mark.parametrize("case", ["per-dir", "argument", "named-by-file", "after-nested"])
def test_filter_errors_locate_merge_file_rules_without_echoing_them(tmp_path: Path,
                                                                    case: str) -> None:
    # exclude.c rule_text(): a bad rule read from a file is reported by where it was
    # (its file and line, or where that file was named), never by what it says.
    def setup(w: Path) -> None:
        (w / "src").mkdir()
        (w / "src" / "f").write_bytes(b"hi\n")
        (w / "secret").write_text(_SECRET + "\n")
        (w / "outer").write_text(f". {w}/secret\n")
        (w / "child").write_text("- harmless\n")
        (w / "parent").write_text(f". {w}/child\nZbad-in-parent\n")
        (w / "src" / ".rsync-filter").write_text(": ../secret\n")
    args = {"per-dir": ("-F",), "argument": (f"--filter=. {tmp_path}/W/secret",),
            "named-by-file": (f"--filter=. {tmp_path}/W/outer",),
            "after-nested": (f"--filter=. {tmp_path}/W/parent",)}[case]
    outs = []
    for who, cmd in (("rsync", RSYNC), ("netsync", NETSYNC)):
        w = tmp_path / who
        w.mkdir()
        setup(w)
        argv = [a.replace(f"{tmp_path}/W", str(w)) for a in args]
        p = subprocess.run([*cmd, "-r", *argv, "src/", "dst/"], cwd=w, capture_output=True,
                           text=True, timeout=60)
        outs.append((p.returncode, p.stdout + p.stderr, w))
    (rc_r, out_r, w_r), (rc_n, out_n, w_n) = outs
    assert rc_n == rc_r != 0
    assert _SECRET not in out_n
    where = {"per-dir": "<rule from a file read earlier>",
             "argument": f"<rule from {w_n}/secret line 1>",
             "named-by-file": f"<rule from a file named at {w_n}/outer line 1>",
             "after-nested": f"<rule from {w_n}/parent line 2>"}[case]
    assert where in out_n
    assert where.replace(str(w_n), str(w_r)) in out_r  # (what rsync says too)


def test_self_including_merge_file_hits_the_depth_limit(tmp_path: Path) -> None:
    # ". .merge" inside a dir-merge file names .merge relative to the transfer root
    # (rsync's cwd), so it includes itself until MAX_MERGE_DEPTH.
    def setup(w: Path) -> None:
        (w / "s").mkdir()
        (w / "s" / ".merge").write_text(". .merge\n")
        (w / "s" / "f").write_text("hello\n")
    r, n = both(tmp_path, setup, "-a", "--filter=: .merge", "s/", "d/")
    assert n.returncode == 11
    assert b"merge-file include depth limit (32) exceeded at <rule from a file named at" \
        in n.stderr


def test_merge_named_inside_a_subdir_merge_file_is_relative_to_the_transfer_root(
        tmp_path: Path) -> None:
    # parse_merge_name(): a slash-less "." name is relative to rsync's cwd (the
    # transfer root), a new ":" rule starts in the dir that named it (no parent scan).
    def setup(w: Path) -> None:
        for d in ("s", "s/sub", "s/sub/deep"):
            (w / d).mkdir()
            for f in ("a", "b", "c"):
                (w / d / f).write_text(f)
        (w / "s" / "sub" / ".rsync-filter").write_text(". rules-x\n: .extra\n")
        (w / "s" / "rules-x").write_text("- a\n")
        (w / "s" / "sub" / "rules-x").write_text("- c\n")
        (w / "s" / ".extra").write_text("- b\n")
        (w / "s" / "sub" / "deep" / ".extra").write_text("- b\n")
    r, n = both(tmp_path, setup, "-ai", "-F", "s/", "d/")
    assert (n.stdout, n.stderr) == (r.stdout, r.stderr)
    assert not (tmp_path / "netsync" / "d" / "sub" / "a").exists()


@pytest.mark.parametrize("state", ["file", "dir", "missing"])
@pytest.mark.parametrize("dry", [[], ["-n"]])
def test_backup_dir_checked_first(tmp_path: Path, state: str, dry: list[str]) -> None:
    # main.c do_recv(): a --backup-dir that exists but is not a directory ends the run
    # before any file (exit 1, "The backup-dir is not a directory"; a dry run too); -vv
    # says whether it is "(new)".
    def setup(w: Path) -> None:
        (w / "src").mkdir()
        (w / "src" / "f").write_bytes(b"new\n")
        (w / "dst").mkdir()
        (w / "dst" / "f").write_bytes(b"old\n")
        if state == "file":
            (w / "dst" / "bk").write_bytes(b"x\n")
        elif state == "dir":
            (w / "dst" / "bk").mkdir()
    r, n = both(tmp_path, setup, "-rI", "-vv", *dry, "-b", "--backup-dir=bk", "src/", "dst/")
    if state == "file":
        assert r.returncode == 1
        assert b"The backup-dir is not a directory: bk\n" in n.stderr
        assert (tmp_path / "netsync" / "dst" / "f").read_bytes() == b"old\n"
    else:
        assert r.returncode == 0
    pick = [ln for ln in r.stdout.split(b"\n") if b"backup_dir is" in ln]
    assert pick == [ln for ln in n.stdout.split(b"\n") if b"backup_dir is" in ln]
    assert pick or state == "file"


@pytest.mark.parametrize("copy_links", [[], ["-L"]])
def test_fuzzy_skips_symlink_candidates_even_with_copy_links(tmp_path: Path,
                                                              copy_links: list[str]) -> None:
    # main.c do_recv() clears copy_links on the receiving side, so get_dirlist() of the
    # dest dir lstat()s: a symlink to a similar file is never a --fuzzy basis, -L or
    # not; a regular one beside it is (the control that shows fuzzy is at work).
    body = b"".join(b"line %d\n" % i for i in range(3000))

    def setup(w: Path) -> None:
        for d in ("s", "d", "other"):
            (w / d).mkdir()
        (w / "s" / "file-v2.txt").write_bytes(body)
        (w / "s" / "data-v2.bin").write_bytes(body)
        (w / "other" / "file-v1.txt").write_bytes(body[:-200])
        os.symlink("../other/file-v1.txt", w / "d" / "file-v1.txt")
        (w / "d" / "data-v1.bin").write_bytes(body[:-300])
    r, n = both(tmp_path, setup, "-ai", *copy_links, "--fuzzy", "--no-whole-file", "--stats",
                "--debug=fuzzy", "s/", "d/")
    keep = (b">f", b"fuzzy", b"Literal data", b"Matched data")
    lines = [ln for ln in r.stdout.split(b"\n") if ln.startswith(keep)]
    assert lines == [ln for ln in n.stdout.split(b"\n") if ln.startswith(keep)]
    assert b"fuzzy basis selected for data-v2.bin: data-v1.bin" in lines
    assert not any(b"file-v1.txt" in ln for ln in lines)


@pytest.mark.parametrize("order", [("s1/", "s2/"), ("s2/", "s1/")])
def test_dir_and_file_of_one_name_from_two_sources(tmp_path: Path,
                                                   order: tuple[str, str]) -> None:
    """One source has a dir "a", the other a file "a" (and "a.b", which sorts between
    them): the dir is kept, whichever source comes first (rsync's merge test)."""
    def setup(w: Path) -> None:
        (w / "s1" / "a").mkdir(parents=True)
        (w / "s1" / "a" / "in").write_bytes(b"x")
        (w / "s2").mkdir()
        (w / "s2" / "a").write_bytes(b"file")
        (w / "s2" / "a.b").write_bytes(b"z")
    r, n = both(tmp_path, setup, "-ai", *order, "dst/")
    assert n.returncode == 0, n.stderr
    assert n.stdout == r.stdout
    assert (tmp_path / "netsync" / "dst" / "a" / "in").is_file()


def test_backup_of_a_backup_named_file_is_not_made(tmp_path: Path) -> None:
    # delete.c delete_item(): replacing a non-file whose name ends in the backup suffix
    # (no --backup-dir) removes it without a backup; netsync left "name~~" behind.
    def setup(work: Path) -> None:
        (work / "src").mkdir()
        (work / "dst").mkdir()
        (work / "src" / "old~").write_bytes(b"now a file\n")
        (work / "src" / "keep").write_bytes(b"k\n")
        os.symlink("somewhere", work / "dst" / "old~")
        os.symlink("elsewhere", work / "dst" / "keep")

    r, n = both(tmp_path, setup, "-a", "-b", "src/", "dst/")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "rsync" / "dst")) == ["keep", "keep~", "old~"]


def test_remove_source_files_onto_itself_keeps_the_files(tmp_path: Path) -> None:
    # sender.c remove_source_file(): in a local copy, a source that is the file the
    # receiver just made (a dir synced onto itself) is not removed, "ERROR: Skipping
    # sender remove of destination file", exit 23. netsync removed both copies: the
    # files were gone.
    def setup(work: Path) -> None:
        (work / "d").mkdir()
        (work / "d" / "a").write_bytes(b"hello\n")
        (work / "d" / "b").write_bytes(b"b\n")

    r, n = both(tmp_path, setup, "-a", "--remove-source-files", "d/", "d/")
    assert r.returncode == 23
    assert sorted(os.listdir(tmp_path / "netsync" / "d")) == ["a", "b"]
    lines = [b"ERROR: Skipping sender remove of destination file: a",
             b"ERROR: Skipping sender remove of destination file: b"]
    assert [ln for ln in r.stderr.splitlines() if ln.startswith(b"ERROR")] == lines
    assert [ln for ln in n.stderr.splitlines() if ln.startswith(b"ERROR")] == lines


def test_remove_source_files_skips_a_changed_source_as_an_error(tmp_path: Path) -> None:
    # "ERROR: Skipping sender remove for changed file" is an error line on stderr that
    # makes the exit 23 (netsync said it on stdout): --copy-unsafe-links copies the file
    # an unsafe symlink names, and the source lstat()ed at removal time (the symlink)
    # differs from the list. (With -L the link is followed and removed, exit 0.)
    def setup(work: Path) -> None:
        (work / "src").mkdir()
        (work / "target").write_bytes(b"twelve bytes")
        os.symlink("../target", work / "src" / "link")

    r, n = both(tmp_path, setup, "-a", "--copy-unsafe-links", "--remove-source-files",
                "src/", "dst/")
    assert r.returncode == 23
    line = [b"ERROR: Skipping sender remove for changed file: link"]
    assert [ln for ln in r.stderr.splitlines() if ln.startswith(b"ERROR")] == line
    assert [ln for ln in n.stderr.splitlines() if ln.startswith(b"ERROR")] == line
    assert os.path.islink(tmp_path / "netsync" / "src" / "link")

    (tmp_path / "L").mkdir()
    r, n = both(tmp_path / "L", setup, "-a", "-L", "--remove-source-files", "src/", "dst/")
    assert r.returncode == n.returncode == 0, (r.stderr, n.stderr)
    assert not os.path.lexists(tmp_path / "L" / "netsync" / "src" / "link")


@pytest.mark.parametrize("opts", [["-r"], ["-rog"], ["-a"]])
def test_backup_dir_parents_keep_owner_only_with_o_g(tmp_path: Path, opts: list[str]) -> None:
    # backup.c: a dir made in --backup-dir gets set_file_attrs() of the dest dir it
    # mirrors, so its owner and group only with -o/-g (and its times only with -t);
    # netsync copied them always.
    def setup(work: Path) -> None:
        (work / "src" / "d").mkdir(parents=True)
        (work / "src" / "d" / "f").write_bytes(b"new\n")
        os.chown(work / "src" / "d", 1111, 2222)
        (work / "dst" / "d").mkdir(parents=True)
        (work / "dst" / "d" / "f").write_bytes(b"old, longer\n")
        os.chown(work / "dst" / "d", 4321, 8765)
        os.utime(work / "dst" / "d", (1_000_000_000, 1_000_000_000))

    both(tmp_path, setup, *opts, "-b", "--backup-dir=../bk", "src/", "dst/")
    want = os.stat(tmp_path / "rsync" / "bk" / "d")
    got = os.stat(tmp_path / "netsync" / "bk" / "d")
    assert (got.st_uid, got.st_gid) == (want.st_uid, want.st_gid)
    assert (want.st_uid == 0) == ("-r" in opts)  # (with -o the dest dir got src's owner)
    assert (got.st_mtime == 1_000_000_000) == (want.st_mtime == 1_000_000_000)


@pytest.mark.parametrize("opts", [["-rt"], ["-a"]])
def test_inplace_backup_copy(tmp_path: Path, opts: list[str]) -> None:
    # --inplace -b copies the old file aside: netsync put the copy's temp name in a
    # wrong dir (".dst/f~.xxxxxx", a traceback) when the destination was a relative
    # path; and the copy takes the owner only with -o/-g (backup.c set_file_attrs()).
    def setup(work: Path) -> None:
        (work / "src").mkdir()
        (work / "dst").mkdir()
        (work / "src" / "f").write_bytes(b"new contents\n")
        (work / "dst" / "f").write_bytes(b"old\n")
        os.chown(work / "dst" / "f", 1234, 5678)

    r, n = both(tmp_path, setup, *opts, "--inplace", "-b", "src/", "dst/")
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in n.stderr, n.stderr
    want = os.stat(tmp_path / "rsync" / "dst" / "f~")
    got = os.stat(tmp_path / "netsync" / "dst" / "f~")
    assert (got.st_uid, got.st_gid) == (want.st_uid, want.st_gid)
    assert (tmp_path / "netsync" / "dst" / "f~").read_bytes() == b"old\n"


@pytest.mark.parametrize("opt", ["--compare-dest=../nope", "--link-dest=../afile"])
def test_alt_dest_arg_is_checked_locally(tmp_path: Path, opt: str) -> None:
    # main.c check_alt_basis_dirs(): a missing (or non-dir) --*-dest arg is warned
    # about; netsync said it only as a client.
    def setup(work: Path) -> None:
        (work / "src").mkdir()
        (work / "src" / "f").write_bytes(b"f\n")
        (work / "afile").write_bytes(b"not a dir\n")

    r, n = both(tmp_path, setup, "-a", opt, "src/", "dst/")
    want = [ln.replace(b"/rsync/", b"/W/") for ln in r.stderr.splitlines() if b" arg " in ln]
    got = [ln.replace(b"/netsync/", b"/W/") for ln in n.stderr.splitlines() if b" arg " in ln]
    assert len(want) == 1 and got == want


def test_append_with_fuzzy_sends_a_new_file_whole(tmp_path: Path) -> None:
    """--append -y: a missing file is sent whole, not appended to a similar file's
    length (rsync writes zeros where that file's length was, or skips the file
    when the similar one is as long; netsync skipped it too)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "report-2024.txt").write_bytes(b"new data for 2024\n" * 3)
    (dst / "report-2023.txt").write_bytes(b"last year\n")  # shorter than the new file
    (src / "notes-b.txt").write_bytes(b"b" * 20)
    (dst / "notes-a.txt").write_bytes(b"a" * 40)  # as long: rsync skips notes-b.txt
    r = subprocess.run([*NETSYNC, "-ri", "--append", "-y", "src/", "dst/"], cwd=tmp_path,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("report-2024.txt", "notes-b.txt"):
        assert (dst / name).read_bytes() == (src / name).read_bytes()
    assert (dst / "report-2023.txt").read_bytes() == b"last year\n"
    assert sorted(r.stdout.splitlines()) == [b">f+++++++++ notes-b.txt",
                                             b">f+++++++++ report-2024.txt"]
