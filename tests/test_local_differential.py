"""Differential tests: real rsync vs the program under test on identical local trees.

For every case two identical copies of a work dir (src/, outside/, maybe dst/) are made;
/usr/bin/rsync runs in one, the program under test ($NETSYNC_TEST_CMD, default
`python -m netsync`) in the other, both with the same relative arguments and cwd at the
copy's root.  We then require equal exit codes, equal whole-work-dir snapshots (so the
source side, backup dirs and --link-dest hardlinks count too) and equal stdout lines
(minus the byte-count summary).  With NETSYNC_TEST_CMD=/usr/bin/rsync all must pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import treecompare as tc
import trees


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    dests: tuple[str, ...] = ("none", "diverged")
    tree: str = "mixed"
    output: str = "lines"  # lines | stats | none
    rc: int = 0  # what rsync must return: proves the case tests what it claims
    setup: Callable[[Path], None] | None = None
    as_user: int | None = None
    sparse: bool = False  # compare sparseness of files (only where -S is in play)
    dst_unchanged: bool = False  # e.g. dry runs
    root_only: bool = False
    trees: bool = True  # False where a fatal error makes the partial result timing-dependent
    rc_by_dest: dict[str, int] = field(default_factory=dict)


# --- per-case setup helpers (run identically in both copies) -------------------------

def _ref_dir(work: Path) -> None:
    """ref/: a slightly different copy of src for --link-dest/--compare-dest/--copy-dest."""
    trees.copy_tree(work / "src", work / "ref")
    os.unlink(work / "ref" / "file1.dat")
    (work / "ref" / "sub" / "f00.txt").write_bytes(b"different content")
    os.utime(work / "ref" / "sub" / "f00.txt", ns=(10**18, 10**18))
    os.chmod(work / "ref" / "file0.dat", 0o600)


def _files_from(work: Path) -> None:
    (work / "list").write_bytes(b"file1.dat\nsub/f03.txt\nsub/inner/\n"
                                b"links/rel\n# comment\n; comment\nnames/with space\n"
                                b"deep/d00/d01\n")
    (work / "list0").write_bytes(b"file2.dat\0names/new\nline\0modes/\0")


def _filter_file(work: Path) -> None:
    (work / "rules").write_bytes(b"- *.conf\n+ sub/\n+ sub/**\n- names/\n")


def _exclude_file(work: Path) -> None:
    (work / "excl").write_bytes(b"*.dat\n# comment\nlinks\n/deep/\n")


def _unreadable(work: Path) -> None:
    subprocess.run(["chown", "-R", "65534:65534", "--", os.fspath(work)], check=True)
    os.chmod(work / "src" / "sub" / "f05.txt", 0)
    os.chmod(work / "src" / "sub" / "inner", 0)


def _nobodys(work: Path) -> None:
    """Owned by nobody, with a read-only source dir (its copy is filled before
    it gets its r-x mode)."""
    ro = work / "src" / "ro_dir"
    (ro / "below").mkdir(parents=True)
    (ro / "below" / "f").write_bytes(b"below")
    (ro / "f").write_bytes(b"in a read-only dir")
    subprocess.run(["chown", "-R", "65534:65534", "--", os.fspath(work)], check=True)
    os.chmod(ro / "below", 0o555)
    os.chmod(ro, 0o555)


def _dir_over_file(work: Path) -> None:
    """A non-empty dst dir where src has a file: only --delete/--force replace it."""
    p = work / "dst" / "file0.dat"
    p.unlink()
    (p / "inner").mkdir(parents=True)
    (p / "inner" / "x").write_bytes(b"x")


def _dst_filter(work: Path) -> None:
    """-F also reads .rsync-filter files on the receiving side (they guard deletions)."""
    (work / "dst" / ".rsync-filter").write_bytes(b"P extra_file\n- file0.dat\n")


def _bad_dst_filter(work: Path) -> None:
    (work / "dst" / "sub" / ".rsync-filter").write_bytes(b"x bogus rule\n")


def _jitter(work: Path) -> None:
    """dst files whose mtime is off by less than a second (for --modify-window)."""
    for rel in ("sub/f01.txt", "sub/inner/g01.txt", "file6.dat"):
        p = work / "dst" / rel
        if p.is_file() and not p.is_symlink():
            st = (work / "src" / rel).stat()
            p.write_bytes((work / "src" / rel).read_bytes())
            t = st.st_mtime_ns + 400_000_000
            os.utime(p, ns=(t, t))


S = ("src/", "dst/")
ALL = ("none", "empty", "same", "diverged")
# %b (bytes moved) is left out: it counts protocol overhead, like the summary lines.
OUT_FMT = "--out-format=%i|%n|%L|%l|%o|%M|%B|%U|%G|%f|%C"

CASES: list[Case] = [
    # The seed's option sets.
    Case("av", ("-av", *S), ALL),
    Case("av-exclude-conf", ("-av", "--exclude=*.conf", *S)),
    Case("av-max-size-5M", ("-av", "--max-size=5M", *S), tree="big"),
    Case("av-min-size-3M", ("-av", "--min-size=3M", *S), tree="big"),
    Case("av-progress", ("-av", "--progress", *S), tree="big", output="none"),
    Case("rt-no-links-no-devices", ("-rt", *S)),
    Case("remove-source-files", ("--remove-source-files", "-av", *S)),
    # -k lists links/to_dir (-> ../sub) as a dir: its files are sent, but not removed
    # through that symlink ("sender failed to secure-open-parent", 23), as rsync 3.5's
    # sender confines a removal's parent; netsync removed sub/'s files by the alias
    # and then found them vanished (24)
    Case("remove-source-files-dirlink", ("--remove-source-files", "-ak", *S), ("none",), rc=23),
    Case("av-delete", ("-av", "--delete", *S), ALL),
    # --munge-links acts on the client, a local copy's sender (which unmunges); -M gives
    # it to the receiver, which munges
    Case("munge-links", ("-a", "--munge-links", *S)),
    Case("munge-links-M", ("-a", "-M--munge-links", *S)),
    # the delayed renames come before the --delete-after/-delay pass, which would take
    # the .~tmp~ staging dirs (netsync lost every updated file)
    Case("delay-updates-delete-after", ("-a", "--delay-updates", "--delete-after", *S),
         ("empty", "diverged")),
    Case("delay-updates-delete-delay", ("-a", "--delay-updates", "--delete-delay", *S),
         ("empty", "diverged")),
    # -v's header: "building file list ... done" without incremental recursion
    Case("av-no-i-r", ("-av", "--no-i-r", *S)),
    # a message while the list is built ("copying unsafe symlink ...") starts on a line
    # of its own after "building file list ... " (log.c output_needs_newline)
    Case("av-no-i-r-message-while-listing", ("-av", "--no-i-r", "--copy-unsafe-links", *S),
         rc=23),
    # Itemized output and deletion variants.
    Case("a-i", ("-a", "-i", *S), ALL),
    Case("aii-unchanged-too", ("-aii", *S), ("same", "diverged")),
    Case("ai-delete", ("-ai", "--delete", *S), ALL),
    Case("aiH-hardlinks", ("-aiH", *S)),
    Case("aiH-delete", ("-aiH", "--delete", *S), ("same", "diverged")),
    # a group's members are linked after the delayed renames put its data in place
    # (netsync linked them to names not there yet: "link ... failed", exit 23)
    Case("aiH-delay-updates", ("-aiH", "--delay-updates", *S)),
    Case("delete-before", ("-ai", "--delete-before", *S), ("diverged",)),
    Case("delete-after", ("-ai", "--delete-after", *S), ("diverged",)),
    Case("delete-delay", ("-ai", "--delete-delay", *S), ("diverged",)),
    # --fake-super without -p: a symlink's stand-in file gets dest_mode()'s bits, as any
    # file (netsync gave it the link's 0777, on disk and in its %stat xattr)
    # -J goes by what is on disk: a symlink's fresh --fake-super stand-in is a plain file
    # and gets its time (netsync left it at the time of the run)
    Case("fake-super-omit-link-times", ("-ai", "--fake-super", "-J", *S), ("none", "diverged")),
    Case("fake-super-no-perms", ("-ai", "--fake-super", "--no-perms", *S), ("none", "diverged")),
    # -L meets a symlink loop in links/: an I/O error in that dir's list.  The dirs
    # listed before it still get their deletions, those from it on do not (netsync
    # skipped every deletion: it knew of the error before generating anything)
    Case("delete-io-error-later-dir", ("-ai", "-L", "--delete", *S), ("diverged",), rc=23),
    Case("delete-delay-io-error-later-dir", ("-ai", "-L", "--delete-delay", *S),
         ("diverged", "empty"), rc=23),
    Case("delete-during", ("-ai", "--delete-during", *S), ("diverged",)),
    Case("delete-excluded", ("-ai", "--delete", "--delete-excluded", "--exclude=*.conf",
                             "--exclude=*.o", "--exclude=/deep/", *S), ("diverged",)),
    Case("delete-with-excludes-kept", ("-ai", "--delete", "--exclude=*.conf",
                                       "--exclude=extra_dir/", *S), ("diverged",)),
    Case("nonempty-dir-over-file", ("-ai", *S), ("diverged",), rc=23, setup=_dir_over_file),
    Case("force", ("-ai", "--force", *S), ("diverged",), setup=_dir_over_file),
    Case("delete-dir-over-file", ("-ai", "--delete", *S), ("diverged",),
         setup=_dir_over_file),
    Case("max-delete-1", ("-ai", "--delete", "--max-delete=1", *S), ("diverged",), rc=25),
    # Quick-check variants.
    Case("existing", ("-ai", "--existing", *S), ("empty", "diverged")),
    # diverged has a file where src has the dir sub/inner: rsync fails to stat below it.
    Case("ignore-existing", ("-ai", "--ignore-existing", *S), ("empty", "diverged"),
         rc_by_dest={"diverged": 23}),
    Case("update", ("-ai", "-u", *S), ("diverged",)),
    Case("checksum", ("-ai", "-c", *S), ("same", "diverged")),
    Case("size-only", ("-ai", "--size-only", *S), ("diverged",)),
    Case("ignore-times", ("-ai", "-I", *S), ("same", "diverged")),
    Case("modify-window-1", ("-ai", "--modify-window=1", *S), ("diverged",), setup=_jitter),
    Case("no-modify-window", ("-ai", *S), ("diverged",), setup=_jitter),
    # Update strategies.
    Case("inplace", ("-ai", "--inplace", *S), ("diverged",)),
    Case("append", ("-ai", "--append", *S), ("diverged",)),
    Case("append-verify", ("-ai", "--append-verify", *S), ("diverged",)),
    Case("no-whole-file-delta", ("-ai", "--no-W", *S), ("diverged",)),
    Case("whole-file", ("-ai", "-W", *S), ("diverged",)),
    Case("sparse", ("-aiS", *S), ("none", "diverged"), sparse=True),
    Case("sparse-inplace", ("-aiS", "--inplace", *S), ("none",), sparse=True),
    # in place, a block matched at its own offset is skipped, not rewritten: the
    # dest's sparse image keeps its holes (netsync filled them)
    Case("inplace-delta-keeps-holes", ("-ri", "-I", "--inplace", "--no-W", *S),
         ("diverged",), sparse=True),
    # Backups and alternate basis dirs.
    Case("backup", ("-ai", "-b", *S), ("diverged",)),
    Case("backup-dir-suffix", ("-ai", "-b", "--backup-dir=../bak", "--suffix=.old", *S),
         ("diverged",)),
    Case("backup-delete", ("-ai", "-b", "--delete", *S), ("diverged",)),
    # A backup dir inside the destination: --delete-delay decides what to delete during
    # the walk (before the backups exist); --delete-after sees and deletes into them.
    Case("backup-dir-inside-delete-delay", ("-ai", "--delete-delay", "--backup-dir=bak", *S),
         ("diverged",)),
    Case("backup-dir-inside-delete-after", ("-ai", "--delete-after", "--backup-dir=bak", *S),
         ("diverged",)),
    Case("link-dest", ("-ai", "--link-dest=../ref", *S), ("none",), setup=_ref_dir),
    Case("compare-dest", ("-ai", "--compare-dest=../ref", *S), ("none",), setup=_ref_dir),
    Case("copy-dest", ("-ai", "--copy-dest=../ref", *S), ("none",), setup=_ref_dir),
    # Paths and file selection.
    Case("relative-dot-dir", ("-ai", "-R", "src/./sub", "src/./links", "dst/")),
    Case("relative-full", ("-ai", "-R", "src/sub/inner", "dst/")),
    Case("relative-no-implied-dirs", ("-ai", "-R", "--no-implied-dirs", "src/./sub/inner",
                                      "dst/")),
    Case("several-sources", ("-ai", "src/sub", "src/links", "src/file1.dat",
                             "src/deep/", "dst/")),
    Case("source-without-slash", ("-ai", "src", "dst/")),
    Case("file-to-file", ("-ai", "src/file1.dat", "dst/renamed.dat"), ("empty", "diverged")),
    Case("file-to-missing-dir-slash", ("-ai", "src/file1.dat", "newdir/"), ("none",)),
    Case("file-to-missing-name", ("-ai", "src/file1.dat", "newname"), ("none",)),
    Case("file-onto-existing-file", ("-ai", "src/file1.dat", "dst/file1.dat"), ("diverged",)),
    Case("mkpath", ("-ai", "--mkpath", "src/", "dst/new/deep/path/"), ("none", "empty")),
    Case("missing-parent-without-mkpath", ("-ai", "src/", "dst/a/b/"), ("none",), rc=11),
    Case("nonexistent-source", ("-ai", "src/nope", "src/sub", "dst/"), rc=23),
    Case("ignore-missing-args", ("-ai", "--ignore-missing-args", "src/nope", "src/sub",
                                 "dst/")),
    Case("dirs-only", ("-d", *S)),
    Case("dirs-itemized", ("-dit", *S)),
    Case("files-from", ("-ai", "--files-from=list", *S), setup=_files_from),
    Case("files-from-recursive", ("-ai", "-r", "--files-from=list", *S), setup=_files_from),
    Case("files-from0", ("-ai", "--from0", "--files-from=list0", *S), setup=_files_from),
    # Filters.
    Case("filter-exclude-protect", ("-ai", "--delete", "--filter=- *.o", "--filter=P keep",
                                    *S), ("diverged",)),
    Case("filter-exclude-no-delete", ("-ai", "--filter=- *.o", "--filter=P keep", *S)),
    Case("include-exclude-prune", ("-ai", "-m", "--include=*/", "--include=*.txt",
                                   "--exclude=*", *S)),
    # -m keeps a dir the receiver's rules exclude ("protect"), and the dirs above it
    # (flist.c: is_excluded() in the pruning pass); netsync pruned it
    Case("prune-keeps-protected-dirs", ("-ai", "-m", "--exclude=precious", "--filter=P keep/",
                                        "--filter=P emptydir/", *S)),
    Case("prune-keeps-protected-dirs-d", ("-di", "-m", "--filter=P keep/", *S)),
    Case("include-exclude-no-prune", ("-ai", "--include=*/", "--include=*.txt",
                                      "--exclude=*", *S)),
    Case("anchored-and-wildcards", ("-ai", "--exclude=/file?.dat", "--exclude=sub/**/g0*",
                                    "--exclude=[a-c]*", "--exclude=names/*\\**", *S)),
    Case("filter-merge-file", ("-ai", "--filter=merge rules", *S), setup=_filter_file),
    Case("exclude-from", ("-ai", "--exclude-from=excl", *S), setup=_exclude_file),
    Case("cvs-exclude", ("-ai", "-C", *S)),
    Case("F-rsync-filter", ("-ai", "-F", *S)),
    Case("FF-rsync-filter", ("-ai", "-FF", "--delete", *S), ("diverged",)),
    Case("F-dst-side-filter", ("-ai", "-F", "--delete", *S), ("diverged",), setup=_dst_filter),
    Case("F-bad-dst-filter", ("-ai", "-F", "--delete", *S), ("diverged",), rc=1,
         setup=_bad_dst_filter, trees=False, output="none"),
    # Symlink handling.
    Case("copy-links", ("-ai", "-L", *S), rc=23),
    # links/abs is absolute (so unsafe) and dangling: "symlink has no referent".
    Case("copy-unsafe-links", ("-ai", "--copy-unsafe-links", *S), rc=23),
    # -v: flist.c readlink_stat()'s "copying unsafe symlink" lines
    Case("copy-unsafe-links-v", ("-av", "--copy-unsafe-links", *S), rc=23),
    Case("safe-links", ("-ai", "--safe-links", *S)),
    Case("copy-dirlinks", ("-ai", "-k", *S)),
    Case("keep-dirlinks", ("-ai", "-K", *S), ("diverged",)),
    Case("no-keep-dirlinks", ("-ai", *S), ("diverged",)),
    # Attributes.
    Case("rlpti", ("-rlpti", *S), ("none", "diverged")),
    Case("rlptgoDi-no-times-dirs", ("-rlpgoDi", *S), ("none", "diverged")),
    Case("chmod", ("-ai", "--chmod=D755,F644", *S)),
    Case("chmod-symbolic", ("-ai", "--chmod=Dg+s,ug+w,Fo-w,+X", *S)),
    Case("numeric-ids", ("-ai", "--numeric-ids", *S)),
    Case("chown", ("-ai", "--chown=1:1", *S), root_only=True),
    Case("one-file-system", ("-aix", *S)),
    Case("omit-dir-times", ("-ai", "--omit-dir-times", *S)),
    Case("omit-dir-and-link-times", ("-ai", "-O", "-J", *S)),
    Case("no-perms-executability", ("-rltiE", *S), ("diverged",)),
    # New dirs without -p: made early (inc-recursion) yet given a new dir's mode.
    Case("no-perms-new-dirs", ("-rlti", *S), ("none", "diverged")),
    Case("new-dirs-as-nobody", ("-rlti", *S), ("none", "diverged"), setup=_nobodys,
         as_user=65534, root_only=True),
    # Reporting.
    Case("dry-run", ("-ai", "-n", "--delete", *S), ALL, dst_unchanged=True),
    Case("dry-run-verbose", ("-avn", *S), ("diverged",), dst_unchanged=True),
    Case("list-only-a", ("-a", "--list-only", "src/"), ("none",)),
    Case("list-only-plain", ("--list-only", "src/"), ("none",)),
    Case("list-only-r-single", ("-r", "--list-only", "src/sub"), ("none",)),
    Case("stats", ("-aiv", "--stats", *S), ("none", "diverged"), output="stats"),
    Case("stats-delete", ("-a", "--delete", "--stats", *S), ("diverged",), output="stats"),
    Case("out-format", ("-a", OUT_FMT, *S), ("none", "diverged")),
    Case("verbose-itemize-delete", ("-avi", "--delete", *S), ("diverged",)),
    Case("unreadable-source-as-nobody", ("-ai", *S), ("none",), tree="small", rc=23,
         setup=_unreadable, as_user=65534, root_only=True),
]


def _params() -> list[object]:
    out = []
    for case in CASES:
        for dest in case.dests:
            marks = []
            if case.root_only and not trees.IS_ROOT:
                marks.append(pytest.mark.skip(reason="needs root"))
            out.append(pytest.param(case, dest, id=f"{case.id}[{case.tree}-dst:{dest}]",
                                    marks=marks))
    return out


def _prepare(pristine: Path, target: Path, case: Case) -> None:
    trees.copy_tree(pristine, target)
    if case.setup:
        case.setup(target)


@pytest.mark.parametrize(("case", "dest"), _params())
def test_local(case: Case, dest: str, pristine_workdir: Callable[..., Path],
               sync_cmd: list[str], tmp_path: Path) -> None:
    if case.as_user is None:
        _compare(case, dest, pristine_workdir, sync_cmd, tmp_path)
        return
    # pytest's tmp dirs are root-only (0700); an unprivileged run needs its own.
    base = Path(tempfile.mkdtemp(prefix="netsync-test-"))
    try:
        os.chmod(base, 0o755)
        _compare(case, dest, pristine_workdir, sync_cmd, base)
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", "--", os.fspath(base)], check=False)
        shutil.rmtree(base)


def _compare(case: Case, dest: str, pristine_workdir: Callable[..., Path],
             sync_cmd: list[str], base: Path) -> None:
    pristine = pristine_workdir(case.tree, dest)
    now_ns = time.time_ns() - 10**9  # anything stamped from here on compares as NOW
    ref, test = base / "rsync", base / "test"
    _prepare(pristine, ref, case)
    _prepare(pristine, test, case)
    before = tc.snapshot(ref, now_ns, sparse=case.sparse)
    tc.assert_same(before, tc.snapshot(test, now_ns, sparse=case.sparse), what="inputs")

    args = list(case.args)
    r = tc.run([tc.RSYNC], args, ref, user=case.as_user)
    t = tc.run(sync_cmd, args, test, user=case.as_user)

    expected_rc = case.rc_by_dest.get(dest, case.rc)
    assert r.returncode == expected_rc, f"reference rsync itself:\n{r.describe()}"
    assert t.returncode == r.returncode, f"exit codes differ\n{r.describe()}\n{t.describe()}"
    after = tc.snapshot(ref, now_ns, sparse=case.sparse)
    if case.trees:
        tc.assert_same(after, tc.snapshot(test, now_ns, sparse=case.sparse))
    if case.dst_unchanged:
        tc.assert_same(before, after, ("before", "after"), what="dry run changed the tree:")
    tc.assert_same_output(tc.output_lines(r.stdout, case.output),
                          tc.output_lines(t.stdout, case.output))


# --- a source file that vanishes mid-run (exit 24) -----------------------------------

def _vanish_run(cmd: list[str], work: Path) -> tc.Run:
    """Start a slow transfer of big0 then delete zz_vanish before the sender reaches it."""
    argv = [*cmd, "-ai", "--bwlimit=2000", "src/", "dst/"]
    p = subprocess.Popen(argv, cwd=work, env=tc.sync_env(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    # The transfer of big0 has begun once anything shows up inside dst/.
    while not (os.path.isdir(work / "dst") and os.listdir(work / "dst")):
        if p.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    os.unlink(work / "src" / "zz_vanish")
    out, err = p.communicate(timeout=60)
    return tc.Run(argv, p.returncode, out, err)


def test_vanished_source_file(sync_cmd: list[str], tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "src").mkdir(parents=True)
    (base / "src" / "big0").write_bytes(os.urandom(3 * trees.MiB))
    (base / "src" / "zz_vanish").write_bytes(b"soon gone")
    for p in ("big0", "zz_vanish", ""):
        os.utime(base / "src" / p, ns=(1_500_000_000 * 10**9,) * 2)
    now_ns = time.time_ns() - 10**9
    ref, test = tmp_path / "rsync", tmp_path / "test"
    shutil.copytree(base, ref, symlinks=True)
    shutil.copytree(base, test, symlinks=True)
    r = _vanish_run([tc.RSYNC], ref)
    t = _vanish_run(sync_cmd, test)
    assert r.returncode == 24, r.describe()
    assert t.returncode == 24, t.describe()
    # src/ lost a file mid-run, so its mtime is "now"-ish in both: compare dst only.
    tc.assert_same(tc.snapshot(ref / "dst", now_ns), tc.snapshot(test / "dst", now_ns))
    assert b"file has vanished" in r.stderr
