"""Filter rules: our FilterList must select exactly what rsync 3.5 selects.

Each case builds a small tree, asks the real /usr/bin/rsync which names it
would send (``-r -n --out-format=%n``), walks the same tree applying
``FilterList.check(..., 'sender')`` the way rsync's sender does (an excluded
directory is not descended into; per-dir merge files are read on entering a
directory), and compares the two sets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netsync.filters import FilterError, FilterList, build_filter_list

RSYNC = shutil.which("rsync") or "/usr/bin/rsync"
needs_rsync = pytest.mark.skipif(not os.path.exists(RSYNC), reason="rsync not installed")

Tree = dict[str, str | None]  # relative path -> file content, or None for a dir


def make_tree(root: Path, spec: Tree) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in spec.items():
        p = root / rel
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)


def rsync_names(src: Path, args: list[str], env: dict[str, str] | None = None,
                stdin: bytes | None = None) -> set[bytes]:
    dst = src.parent / "rsync-dst-never-created"
    proc = subprocess.run(
        [RSYNC, "-r", "-n", "-8", "--out-format=%n", *args, f"{src}/", f"{dst}/"],
        capture_output=True, env=env, input=stdin, check=True,
    )
    return {line for line in proc.stdout.split(b"\n") if line and line != b"./"}


def our_names(src: Path, fl: FilterList) -> set[bytes]:
    out: set[bytes] = set()
    root = os.fsencode(src)

    def walk(rel: bytes, absdir: bytes) -> None:
        token = fl.enter_dir(rel or b".", absdir)
        try:
            for name in sorted(os.listdir(absdir)):
                path = rel + b"/" + name if rel else name
                full = absdir + b"/" + name
                is_dir = os.path.isdir(full) and not os.path.islink(full)
                if fl.check(path, is_dir, "sender") < 0:
                    continue
                out.add(path + b"/" if is_dir else path)
                if is_dir:
                    walk(path, full)
        finally:
            fl.leave_dir(token)

    walk(b"", root)
    return out


def to_cli(filter_args: list[tuple[str, str]]) -> list[str]:
    flags = []
    for kind, value in filter_args:
        flags.append("-F" if kind == "F" else f"--{kind}={value}")
    return flags


def compare(src: Path, filter_args: list[tuple[str, str]], *, cvs: bool = False,
            extra_cli: list[str] | None = None, env: dict[str, str] | None = None,
            stdin: bytes | None = None) -> set[bytes]:
    cli = to_cli(filter_args) + (["-C"] if cvs else []) + (extra_cli or [])
    expected = rsync_names(src, cli, env=env, stdin=stdin)
    fl = build_filter_list(filter_args, cvs_exclude=cvs, delete_excluded=False)
    assert our_names(src, fl) == expected
    return expected


BASIC: Tree = {
    "x.o": "o", "x.c": "c", "foo": None, "foo/bar.c": "c", "foo/baz.o": "o",
    "foo/q/bar": "b", "foo/q/r/bar": "b", "sub/foo": "file-named-foo", "sub/x.c": "c",
    "sub/deep/foo/bar": "b", "some/path/this-file-is-found": "y",
    "some/path/other": "n", "dir/a": "a", "dir/b/c": "c", "dirx/a": "a",
    "a b/c_d": "s", "[x]": "lit", "x": "plain",
}


@needs_rsync
@pytest.mark.parametrize(
    "filter_args",
    [
        [("filter", "- *.o")],
        [("filter", "- /foo")],
        [("filter", "- foo/")],
        [("filter", "- foo/*/bar")],
        [("filter", "- /foo/**/bar")],
        [("filter", "- **/foo")],
        [("filter", "- foo**bar")],
        [("filter", "+ */"), ("filter", "+ *.c"), ("filter", "- *")],
        [("filter", "+ foo/"), ("filter", "+ foo/bar.c"), ("filter", "- *")],
        [("filter", "+ /some/"), ("filter", "+ /some/path/"),
         ("filter", "+ /some/path/this-file-is-found"), ("filter", "- /some/**")],
        [("include", "dir/***"), ("exclude", "*")],
        [("include", "dir/**"), ("exclude", "*")],
        [("exclude", "sub/foo"), ("exclude", "q/r")],
        [("filter", "-! */")],
        [("filter", "exclude,! */")],
        [("filter", "-_*.c"), ("filter", "include x.o"), ("filter", "-,p *.o")],
        [("exclude", "\\[x]"), ("exclude", "a?b")],
        [("exclude", "[x]")],
        [("filter", "- [[:alpha:]].[co]")],
        [("include", "*.c"), ("exclude", "*.c"), ("exclude", "foo")],
        [("filter", "- *"), ("filter", "!"), ("filter", "- x*")],
        [("filter", "hide *.c"), ("filter", "protect x"), ("filter", "-r foo")],
        [("filter", "show *.c"), ("filter", "H *")],
        [("filter", "-/ " + "*/dir/b")],
    ],
    ids=lambda a: " ".join(f"{k}={v}" for k, v in a),
)
def test_patterns_match_rsync(tmp_path: Path, filter_args: list[tuple[str, str]]) -> None:
    src = tmp_path / "src"
    make_tree(src, BASIC)
    compare(src, filter_args)


@needs_rsync
def test_abs_path_modifier(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, BASIC)
    selected = compare(src, [("filter", f"-/ {src}/foo/bar.c"), ("filter", "-/ sub/x.c")])
    assert b"foo/bar.c" not in selected and b"x.c" in selected


@needs_rsync
def test_non_utf8_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in (b"caf\xe9.o", b"caf\xe9.c", b"\xff\xfe", b"d\xe9j\xe0"):
        (Path(os.fsdecode(os.fsencode(src) + b"/" + name))).write_bytes(b"x")
    os.mkdir(os.fsencode(src) + b"/d\xe9j\xe0dir")
    selected = compare(src, [("exclude", os.fsdecode(b"*\xe9.o")), ("exclude", os.fsdecode(b"\xff*"))])
    assert b"caf\xe9.c" in selected and b"caf\xe9.o" not in selected


@needs_rsync
def test_cvs_exclude(tmp_path: Path) -> None:
    src = tmp_path / "src"
    home = tmp_path / "home"
    make_tree(src, {
        "a.o": "", "core": "", "keep.c": "", "x~": "", "CVS/Entries": "", ".git/config": "",
        ".gitx": "", "sub/.cvsignore": "*.tmp\n!\nlocal-only", "sub/y.tmp": "", "sub/local-only": "",
        "sub/z.o": "", "sub/deeper/local-only": "", "sub/deeper/w.tmp": "", "home-listed": "",
        "env-listed.q": "", ".cvsignore": "top-listed", "top-listed": "", "sub/top-listed": "",
    })
    make_tree(home, {".cvsignore": "home-listed"})
    env = {**os.environ, "HOME": str(home), "CVSIGNORE": "*.q"}
    old = dict(os.environ)
    os.environ.update(env)
    try:
        selected = compare(src, [], cvs=True, env=env)
        assert b"sub/local-only" not in selected and b"sub/deeper/local-only" in selected
        assert b"sub/y.tmp" in selected  # cleared by the "!" in the same file
        compare(src, [("include", "*.o"), ("filter", ":C"), ("exclude", "keep.c")], cvs=True, env=env)
        compare(src, [("filter", "-C"), ("filter", "+ core")], env=env)
    finally:
        os.environ.clear()
        os.environ.update(old)


@needs_rsync
def test_rsync_filter_files(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    src = outer / "src"
    make_tree(outer, {
        ".rsync-filter": "- /src/never-matches\n- from-parent\n",
        "src/.rsync-filter": "- *.log\n- /top-only\n+ keep.log\n",
        "src/a.log": "", "src/top-only": "", "src/from-parent": "",
        "src/sub/top-only": "", "src/sub/keep.log": "", "src/sub/b.log": "",
        "src/sub/.rsync-filter": "+ *.log\n- /anchored\n",
        "src/sub/anchored": "", "src/sub/deep/anchored": "", "src/sub/deep/c.log": "",
        "src/other/.rsync-filter": "!\n- x\n", "src/other/x": "", "src/other/a.log": "",
        "src/other/from-parent": "", "src/never-matches": "",
    })
    selected = compare(src, [("F", "")])
    assert b"sub/b.log" in selected and b"a.log" not in selected
    assert b"from-parent" not in selected and b"other/from-parent" in selected
    selected = compare(src, [("F", ""), ("F", "")])
    assert b".rsync-filter" not in selected and b"sub/.rsync-filter" not in selected
    compare(src, [("filter", ":e .rsync-filter")])
    compare(src, [("filter", "dir-merge,n- .rsync-filter")])
    compare(src, [("filter", ":n .rsync-filter")])
    compare(src, [("filter", ": ../.rsync-filter")])


@needs_rsync
def test_merge_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, BASIC)
    rules = tmp_path / "rules.txt"
    rules.write_bytes(b"# comment\n; other comment\n\n- x.o\r\n+ *.c\r\n- foo/\n")
    words = tmp_path / "words.txt"
    words.write_text("x.c  sub\tdirx\n")
    inner = tmp_path / "inner.txt"
    inner.write_text("- dir\n")
    outer = tmp_path / "outer.txt"
    outer.write_text(f"merge {inner}\n- x\n")
    compare(src, [("filter", f"merge {rules}")])
    compare(src, [("filter", f". {rules}"), ("filter", "- *")])
    compare(src, [("filter", f".w- {words}")])
    compare(src, [("filter", f"merge,+ {words}"), ("filter", "- *.c")])
    compare(src, [("filter", f". {outer}")])
    compare(src, [("exclude-from", str(rules))])
    compare(src, [("include-from", str(words)), ("exclude", "*")])


@needs_rsync
def test_exclude_from_stdin_and_from0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    src = tmp_path / "src"
    make_tree(src, BASIC)
    data = b"x.c\0- dirx\0+ sub\0*.o\0"
    expected = rsync_names(src, ["--from0", "--exclude-from=-"], stdin=data)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    fl = build_filter_list([("exclude-from", "-")], cvs_exclude=False, delete_excluded=False,
                           from0=True)
    assert our_names(src, fl) == expected
    # Old-style lists still honour "+ " and "- " prefixes.
    assert b"sub/" in expected and b"dirx/" not in expected and b"x.o" not in expected


def _filt_scenario(root: Path) -> Path:
    """The tree of rsync's testsuite/exclude_test.py (built independently)."""
    src = root / "from"
    make_tree(src, {
        "foo/down/to/you": None, "foo/sub": None, "bar/down/to/foo/too": None,
        "bar/down/to/bar/baz": None, "mid/for/foo/and/that/is/who": None,
        "new/keep/this": None, "new/lose/this": None,
        ".filt": "exclude down\n: .filt-temp\nclear\n- .filt\n- *.bak\n- *.old\n",
        "foo/file1": "", "foo/file2": "", "foo/file2.old": "", "foo/.filt": "include .filt\n- /file1\n",
        "foo/sub/file1": "", "bar/.filt": "- home-cvs-exclude\ndir-merge .filt2\n+ to\n",
        "bar/down/to/home-cvs-exclude": "", "bar/down/to/.filt2": "- .filt2\n",
        "bar/down/to/foo/.filt2": "+ *.junk\n", "bar/down/to/foo/file1": "",
        "bar/down/to/foo/file1.bak": "", "bar/down/to/foo/file3": "", "bar/down/to/foo/file4": "",
        "bar/down/to/foo/+ file3": "", "bar/down/to/foo/file4.junk": "", "bar/down/to/foo/to": "",
        "bar/down/to/bar/.filt2": "- *.deep\n", "bar/down/to/bar/baz/file5.deep": "",
        "mid/.filt2": "- extra\n", "mid/one-in-one-out": "", "mid/.cvsignore": "one-in-one-out\n",
        "mid/one-for-all": "", "mid/.filt": ":C\n", "mid/for/one-in-one-out": "",
        "mid/for/foo/extra": "", "mid/for/foo/keep": "",
    })
    (root / "exclude-from").write_text(
        "!\n# comment\n+ **/bar\n- /bar\n+ foo**too\n+ foo/s?b/\n- foo/*/\n- new/keep/**\n"
        "- new/lose/***\n+ t[o]/\n- to\n+ file4\n- file[2-9]\n- /mid/for/foo/extra\n"
    )
    (root / "home").mkdir()
    (root / "home" / ".cvsignore").write_text("home-cvs-exclude\n")
    return src


@needs_rsync
def test_rsync_testsuite_scenario(tmp_path: Path) -> None:
    src = _filt_scenario(tmp_path)
    excl = tmp_path / "exclude-from"
    env = {**os.environ, "HOME": str(tmp_path / "home"), "CVSIGNORE": "*.junk"}
    old = dict(os.environ)
    os.environ.update(env)
    try:
        compare(src, [("exclude-from", str(excl))], env=env)
        compare(src, [("filter", f"merge {excl}"), ("filter", ":C"), ("filter", "-C")], env=env)
        compare(src, [("filter", "dir-merge_.filt"), ("filter", f"merge {excl}")], env=env)
        compare(src, [("filter", "dir-merge .filt"), ("exclude", "to")], env=env)
    finally:
        os.environ.clear()
        os.environ.update(old)


def _receiver_survivors(dst: Path, sent: set[bytes], fl: FilterList) -> set[bytes]:
    """What rsync --delete leaves in dst: extraneous items are removed unless
    protected; a deleted dir's contents are checked with perishable rules off."""
    keep: set[bytes] = set()

    def keep_tree(path: bytes, full: bytes, is_dir: bool) -> None:
        keep.add(path)
        if is_dir:
            for name in os.listdir(full):
                sub = full + b"/" + name
                keep_tree(path + b"/" + name, sub, os.path.isdir(sub) and not os.path.islink(sub))

    def protected_inside(rel: bytes, absdir: bytes) -> bool:
        any_kept = False
        for name in os.listdir(absdir):
            path = rel + b"/" + name
            full = absdir + b"/" + name
            is_dir = os.path.isdir(full) and not os.path.islink(full)
            if fl.check(path, is_dir, "receiver", ignore_perishable=True) < 0:
                keep_tree(path, full, is_dir)
                any_kept = True
            elif is_dir and protected_inside(path, full):
                keep.add(path)
                any_kept = True
        return any_kept

    def walk(rel: bytes, absdir: bytes) -> None:
        for name in os.listdir(absdir):
            path = rel + b"/" + name if rel else name
            full = absdir + b"/" + name
            is_dir = os.path.isdir(full) and not os.path.islink(full)
            if (path + b"/" if is_dir else path) in sent:
                keep.add(path)
                if is_dir:
                    walk(path, full)
            elif fl.check(path, is_dir, "receiver") < 0:
                keep_tree(path, full, is_dir)
            elif is_dir and protected_inside(path, full):
                keep.add(path)

    walk(b"", os.fsencode(dst))
    return keep


def _listing(root: Path) -> set[bytes]:
    base = os.fsencode(root)
    out = set()
    for d, dirs, files in os.walk(base):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), base))
    return out


@needs_rsync
@pytest.mark.parametrize(
    ("filter_args", "delete_excluded"),
    [
        ([("filter", "- *.o"), ("filter", "P keep*")], True),
        ([("filter", "- *.o"), ("filter", "P keep*")], False),
        ([("filter", "-p *.o"), ("filter", "- cache/")], False),
        ([("exclude", "*.o"), ("filter", "R keep-not*"), ("filter", "P keep*")], False),
        ([("filter", "H *.c"), ("filter", "protect *.log")], False),
    ],
)
def test_delete_protection(tmp_path: Path, filter_args: list[tuple[str, str]],
                           delete_excluded: bool) -> None:
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    make_tree(src, {"a.c": "", "a.o": "", "sub/b.c": "", "cache": None})
    make_tree(dst, {
        "a.o": "", "keep-me": "", "keep-not-me": "", "gone": "", "x.log": "",
        "olddir/keep-x": "", "olddir/y.o": "", "gonedir/y.o": "", "gonedir/z": "",
        "sub/extra": "", "sub/keep1": "", "sub/c.o": "", "cache/stuff": "",
    })
    cli = to_cli(filter_args) + ["--delete"] + (["--delete-excluded"] if delete_excluded else [])
    fl = build_filter_list(filter_args, cvs_exclude=False, delete_excluded=delete_excluded)
    sent = our_names(src, fl)
    predicted = _receiver_survivors(dst, sent, fl) | {
        n.rstrip(b"/") for n in sent
    }
    subprocess.run([RSYNC, "-r", *cli, f"{src}/", f"{dst}/"], check=True, capture_output=True)
    assert _listing(dst) == predicted


# --------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("z foo", "Unknown filter rule: z foo"),
        ("!x", "'!' rule has trailing characters: !x"),
        ("-", "unexpected end of filter rule: -"),
        ("merge", "unexpected end of filter rule: merge"),
        ("+,e foo", "invalid modifier 'e' at position 2 in filter rule: +,e foo"),
        ("Hs foo", "invalid modifier 's' at position 1 in filter rule: Hs foo"),
        ("exclud foo", "Unknown filter rule: exclud foo"),
    ],
)
def test_bad_rules(rule: str, message: str) -> None:
    with pytest.raises(FilterError) as info:
        build_filter_list([("filter", rule)])
    assert info.value.code == 1
    assert info.value.message == message


@needs_rsync
@pytest.mark.parametrize("rule", ["z foo", "!x", "-", "+,e foo", "Hs foo"])
def test_bad_rule_messages_match_rsync(tmp_path: Path, rule: str) -> None:
    (tmp_path / "s").mkdir()
    proc = subprocess.run([RSYNC, "-r", "-n", "-f", rule, f"{tmp_path}/s/", f"{tmp_path}/d/"],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    with pytest.raises(FilterError) as info:
        build_filter_list([("filter", rule)])
    assert proc.stderr.splitlines()[0] == info.value.message


def test_bad_rule_from_file_hides_text(tmp_path: Path) -> None:
    f = tmp_path / "r.txt"
    f.write_text("- ok\nbogus rule\n")
    with pytest.raises(FilterError) as info:
        build_filter_list([("filter", f"merge {f}")])
    assert info.value.message == f"Unknown filter rule: <rule from {f} line 2>"
    side = tmp_path / "side.txt"
    side.write_text("-s foo\n")
    with pytest.raises(FilterError) as info:
        build_filter_list([("filter", f".s {side}")])
    assert "specified-side merge file contains specified-side filter" in info.value.message


def test_missing_exclude_file() -> None:
    with pytest.raises(FilterError) as info:
        build_filter_list([("exclude-from", "/nonexistent/x")])
    assert info.value.code == 11
    assert info.value.message == (
        "failed to open exclude file /nonexistent/x: No such file or directory (2)")


def test_long_names_and_separators() -> None:
    fl = build_filter_list([("filter", "exclude,s *.o"), ("filter", "include_x.o"),
                            ("filter", "-_ spaced"), ("filter", "hide,p y"),
                            ("filter", "dir-merge,-n .ex"), ("filter", "merge,-n /dev/null")])
    assert [str(r) for r in fl.rules.local] == ["-s *.o", "+ x.o", "-  spaced", "-sp y", ":n- .ex"]
    assert fl.check(b"a/x.o", False, "sender") == -1
    assert fl.check(b"a/x.o", False, "receiver") == 1  # "-s" skipped, "+ x.o" hits
    assert fl.check(b"a/y.o", False, "receiver") == 0
    assert fl.check(b" spaced", False) == -1


def test_sides_and_perishable() -> None:
    fl = build_filter_list([("filter", "P /keep"), ("filter", "-p *.tmp"), ("filter", "S show"),
                            ("filter", "- *")])
    assert fl.check(b"keep", False, "sender") == -1  # by "- *", P is receiver-only
    assert fl.check(b"keep", False, "receiver") == -1
    assert fl.check(b"show", False, "sender") == 1
    assert fl.check(b"show", False, "receiver") == -1
    assert fl.check(b"a.tmp", False, "receiver") == -1
    assert fl.check(b"a.tmp", False, "receiver", ignore_perishable=True) == -1  # "- *"
    fl2 = build_filter_list([("filter", "-p *.tmp")])
    assert fl2.check(b"a.tmp", False, "receiver", ignore_perishable=True) == 0
    assert fl2.excluded(b"d/a.tmp", False)


def test_delete_excluded_makes_plain_rules_sender_only() -> None:
    fl = build_filter_list([("exclude", "*.o"), ("filter", "P keep")], delete_excluded=True)
    assert fl.check(b"x.o", False, "sender") == -1
    assert fl.check(b"x.o", False, "receiver") == 0
    assert fl.check(b"keep", False, "receiver") == -1
    # Pushing: sender-only rules stay local; pulling: they go to the remote sender.
    assert fl.to_wire_rules(am_sender=True) == [b"P keep"] or fl.to_wire_rules(am_sender=True) == [
        b"-r keep"]
    assert fl.to_wire_rules(am_sender=False) == [b"-s *.o"]


def test_wire_rules_roundtrip() -> None:
    args = [("filter", "- *.o"), ("include", "foo/"), ("filter", "-! /bar/**"),
            ("filter", ":n- .ex"), ("filter", "-p tmp"), ("F", "")]
    fl = build_filter_list(args, cvs_exclude=True)
    wire = fl.to_wire_rules(am_sender=True, protocol=31)
    assert wire[:6] == [b"- *.o", b"+ foo/", b"-! /bar/**", b":n- .ex", b"-p tmp",
                        b": /.rsync-filter"]
    assert wire[6] == b":C .cvsignore"
    assert b"-p *.o" in wire[7:] and b"-p core" in wire[7:]  # -C sent expanded
    back = FilterList.from_wire_rules(wire[:6], protocol=31)
    for path, is_dir in [(b"a.o", False), (b"foo", True), (b"bar/x", False), (b"tmp", False)]:
        assert back.check(path, is_dir) == fl.check(path, is_dir)
    old = build_filter_list(args[:2] + [("filter", "- - x")]).to_wire_rules(am_sender=False,
                                                                             protocol=28)
    assert old == [b"*.o", b"+ foo/", b"- - x"]
    with pytest.raises(FilterError):
        fl.to_wire_rules(am_sender=False, protocol=28)  # "!" can't be said before 29
    with pytest.raises(FilterError):
        build_filter_list([("filter", "-p x")]).to_wire_rules(am_sender=True, protocol=29)
