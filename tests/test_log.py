"""netsync.log against rsync 3.5's real output.

Where rsync can be run, expectations come from /usr/bin/rsync on small
trees; the LogItems are built from os.lstat of the same files.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netsync.log import (
    ITEM_DELETED,
    ITEM_IS_NEW,
    ITEM_LOCAL_CHANGE,
    ITEM_MISSING_DATA,
    ITEM_REPORT_ATIME,
    ITEM_REPORT_CHANGE,
    ITEM_REPORT_CRTIME,
    ITEM_REPORT_PERMS,
    ITEM_REPORT_SIZE,
    ITEM_REPORT_TIME,
    ITEM_REPORT_TIMEFAIL,
    ITEM_TRANSFER,
    ITEM_XNAME_FOLLOWS,
    SIGNIFICANT_ITEM_FLAGS,
    LogContext,
    LogItem,
    Stats,
    clean_fname,
    do_big_dnum,
    do_big_num,
    escape_logfile,
    expand_log_format,
    format_delete,
    format_log,
    human_num,
    itemize_string,
    list_line,
    list_missing_line,
    log_file_line,
    log_format_has,
    permstring,
    safe_name,
    stats_lines,
    summary_lines,
    timestring,
)

RSYNC = shutil.which("rsync")
needs_rsync = pytest.mark.skipif(RSYNC is None, reason="rsync not installed")

REG, DIR, LNK = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777


def run_rsync(*args: str | os.PathLike[str], cwd: Path, locale: str = "C.UTF-8") -> bytes:
    env = dict(os.environ, LC_ALL=locale, LANG=locale)
    res = subprocess.run(
        [RSYNC or "rsync", *map(os.fspath, args)], cwd=cwd, env=env, capture_output=True,
        check=True, timeout=60,
    )
    return res.stdout


def lines_of(out: bytes) -> list[str]:
    # Not splitlines(): an escaped name may hold U+0085, which it splits on.
    text = out.decode("utf-8", "surrogateescape")
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


# Names as rsync sees them under "src/": (relative bytes path, kind).
WEIRD = [b"ctl\x01x", b"inv\xff\xc3\xa9", b"trunc\xe2\x82A", b"c1\xc2\x85", b"lit\\#123x",
         b"tab\tx", b"del\x7f", b"nl\nx", b"caf\xc3\xa9"]


def make_tree(root: Path, weird: bool = False) -> Path:
    src = root / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello")
    (src / "sub" / "big").write_bytes(b"x" * 5000)
    (src / "empty").write_bytes(b"")
    os.symlink("a.txt", src / "lnk")
    os.chmod(src / "sub" / "big", 0o4755)
    if weird:
        for n in WEIRD:
            with open(os.path.join(os.fsencode(src), n), "wb") as f:
                f.write(b"w")
    return src


def walk(src: Path) -> list[tuple[bytes, os.stat_result]]:
    """(rsync-style relative name, lstat) for every entry, "." first."""
    base = os.fsencode(src)
    out = [(b".", os.lstat(base))]
    for dirpath, dirnames, filenames in os.walk(base):
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            out.append((os.path.relpath(full, base), os.lstat(full)))
    return out


def item_for(name: bytes, st: os.stat_result, src: Path, iflags: int) -> LogItem:
    link = os.readlink(os.path.join(os.fsencode(src), name)) if stat.S_ISLNK(st.st_mode) else None
    return LogItem(name, st.st_mode, st.st_size, int(st.st_mtime), link=link, iflags=iflags,
                   pathname=b"src/", uid=st.st_uid, gid=st.st_gid)


def new_item_flags(st: os.stat_result) -> int:
    """What rsync's generator sends for an item the destination lacks."""
    if stat.S_ISREG(st.st_mode):
        return ITEM_TRANSFER | ITEM_IS_NEW
    return ITEM_LOCAL_CHANGE | ITEM_IS_NEW


LOCAL = LogContext(am_sender=True, local_server=True)

# ---------------------------------------------------------------------------
# Pure formatting
# ---------------------------------------------------------------------------


def test_item_constants_match_rsync_h() -> None:
    assert ITEM_TRANSFER == 0x8000 and ITEM_IS_NEW == 0x2000 and ITEM_LOCAL_CHANGE == 0x4000
    assert ITEM_REPORT_SIZE == ITEM_REPORT_TIMEFAIL == 4
    assert ITEM_REPORT_CRTIME == 1 << 10 and ITEM_DELETED == 1 << 17
    assert SIGNIFICANT_ITEM_FLAGS & ITEM_LOCAL_CHANGE == 0
    assert SIGNIFICANT_ITEM_FLAGS & ITEM_TRANSFER


@pytest.mark.parametrize(("iflags", "mode", "kw", "expect"), [
    (ITEM_TRANSFER | ITEM_IS_NEW, REG, {}, ">f+++++++++"),
    (ITEM_TRANSFER | ITEM_IS_NEW, REG, {"sender_side": True}, "<f+++++++++"),
    (ITEM_TRANSFER | ITEM_IS_NEW, REG, {"sender_side": True, "local_server": True}, ">f+++++++++"),
    (ITEM_LOCAL_CHANGE | ITEM_IS_NEW, DIR, {}, "cd+++++++++"),
    (ITEM_LOCAL_CHANGE | ITEM_IS_NEW, LNK, {}, "cL+++++++++"),
    (ITEM_LOCAL_CHANGE | ITEM_IS_NEW, stat.S_IFIFO | 0o644, {}, "cS+++++++++"),
    (ITEM_LOCAL_CHANGE | ITEM_IS_NEW, stat.S_IFCHR | 0o644, {}, "cD+++++++++"),
    (ITEM_REPORT_TIME, DIR, {}, ".d..t......"),
    (ITEM_REPORT_TIME, DIR, {"preserve_mtimes": False}, ".d..T......"),
    (ITEM_TRANSFER | ITEM_REPORT_TIME | ITEM_REPORT_PERMS, REG, {}, ">f..tp....."),
    (ITEM_TRANSFER | ITEM_REPORT_SIZE | ITEM_REPORT_CHANGE, REG, {}, ">fcs......."),
    (ITEM_REPORT_TIME, LNK, {}, ".L..t......"),
    (ITEM_REPORT_TIME | ITEM_REPORT_TIMEFAIL, LNK, {}, ".L..T......"),
    (ITEM_REPORT_TIME, LNK, {"receiver_symlink_times": False}, ".L..T......"),
    (0, REG, {}, ".f         "),
    (0, DIR, {}, ".d         "),
    (ITEM_LOCAL_CHANGE | ITEM_XNAME_FOLLOWS, REG, {}, "hf         "),
    (ITEM_LOCAL_CHANGE | ITEM_XNAME_FOLLOWS | ITEM_IS_NEW, REG, {}, "hf+++++++++"),
    (ITEM_TRANSFER, REG, {}, ">f.........") ,
    (ITEM_MISSING_DATA, REG, {}, ".f?????????"),
    (ITEM_REPORT_ATIME, REG, {}, ".f......u.."),
    (ITEM_REPORT_CRTIME, REG, {}, ".f......n.."),
    (ITEM_REPORT_ATIME | ITEM_REPORT_CRTIME, REG, {}, ".f......b.."),
    (ITEM_DELETED, DIR, {}, "*deleting  "),
])
def test_itemize_string(iflags: int, mode: int, kw: dict[str, bool], expect: str) -> None:
    assert itemize_string(iflags, mode, **kw) == expect


def test_permstring_all_types() -> None:
    assert permstring(stat.S_IFREG | 0o644) == "-rw-r--r--"
    assert permstring(stat.S_IFDIR | 0o1777) == "drwxrwxrwt"
    assert permstring(stat.S_IFDIR | 0o1776) == "drwxrwxrwT"
    assert permstring(stat.S_IFREG | 0o6755) == "-rwsr-sr-x"
    assert permstring(stat.S_IFREG | 0o6644) == "-rwSr-Sr--"
    assert permstring(stat.S_IFLNK | 0o777) == "lrwxrwxrwx"
    assert permstring(stat.S_IFBLK | 0o660) == "brw-rw----"
    assert permstring(stat.S_IFCHR | 0o600) == "crw-------"
    assert permstring(stat.S_IFSOCK | 0o755) == "srwxr-xr-x"
    assert permstring(stat.S_IFIFO | 0o644) == "prw-r--r--"


@pytest.mark.parametrize(("num", "flag", "expect"), [
    (0, 0, "0"), (0, 1, "0"), (999, 1, "999"), (1000, 1, "1,000"), (1234567, 0, "1234567"),
    (1234567, 1, "1,234,567"), (-1234567, 1, "-1,234,567"), (999, 2, "999"), (1000, 2, "1.00K"),
    (3077011, 2, "3.08M"), (3077011, 3, "2.93M"), (1023, 3, "1,023"), (1024, 3, "1.00K"),
    (-2048, 3, "-2.00K"), (5 * 10**12, 2, "5.00T"), (7 * 10**15, 2, "7.00P"),
    (2**63 - 1, 1, "9,223,372,036,854,775,807"),
])
def test_do_big_num(num: int, flag: int, expect: str) -> None:
    assert do_big_num(num, flag) == expect


def test_do_big_dnum() -> None:
    assert do_big_dnum(13923.125, 1, 2) == "13,923.12"
    assert do_big_dnum(10806.0, 1, 2) == "10,806.00"
    assert do_big_dnum(10806.0, 0, 2) == "10806.00"
    assert do_big_dnum(6160000.0, 2, 2) == "6.16M"
    assert do_big_dnum(999.999, 2, 2) == "1000.00"  # the K switch looks at the unrounded value
    assert do_big_dnum(0.001, 1, 3) == "0.001"
    assert do_big_dnum(1234.5, 1, 2, sep=".") == "1.234,50"


def test_clean_fname() -> None:
    assert clean_fname(b"src/.") == b"src/."
    assert clean_fname(b"src//./sub/") == b"src/sub"
    assert clean_fname(b"./a") == b"a"
    assert clean_fname(b"/tmp/x") == b"/tmp/x"
    assert clean_fname(b"") == b"."
    assert clean_fname(b"a/../b") == b"a/../b"


def test_log_format_has() -> None:
    assert log_format_has("%i %n%L", "i")
    assert not log_format_has("%%i", "i")
    assert log_format_has("%'-10b", "b")
    assert not log_format_has(None, "i")


def test_expand_escapes_and_widths() -> None:
    ctx = LogContext(am_sender=False, pid=4242, now=0)
    item = LogItem(b"dir/file", REG, 1234567, 0, iflags=ITEM_TRANSFER | ITEM_IS_NEW,
                   written=33, read=1234, checksum="ab" * 16)
    got = expand_log_format("%o|%l|%'l|%''l|%'''l|%-10l|%10'l|%b|%c|%'b|%p|%-6p|%C|%5%|", item, ctx)
    assert got == (b"recv|1234567|1,234,567|1.23M|1.18M|1234567   | 1,234,567|1234|33|1,234|4242"
                   b"|4242  |" + b"ab" * 16 + b"|    %|")
    assert expand_log_format("%U|%G|%5U|%-9G|", item, ctx) == b"0|DEFAULT|    0|DEFAULT  |"
    item.uid, item.gid = 1000, 100
    assert expand_log_format("%U|%G|%-5G|", item, ctx) == b"1000|100|100  |"
    # Escapes rsync cannot fill outside a daemon are left as they are.
    assert expand_log_format("%h %a %P %u %z %-4h %m|%", item, ctx) == b"%h %a %P %u %z %-4h |%"
    daemon = LogContext(am_daemon=True, host=b"client.example", addr=b"10.0.0.1",
                        module_name=b"mod", module_path=b"/srv/mod", auth_user=b"bob")
    assert expand_log_format("%h %a %m %P %u", item, daemon) == b"client.example 10.0.0.1 mod /srv/mod bob"
    # Without ITEM_TRANSFER nothing moved, and %C is blank (and width-less).
    item.iflags = ITEM_REPORT_TIME
    assert expand_log_format("%b %c [%-3C]", item, ctx) == b"0 0 [" + b" " * 32 + b"]"
    assert expand_log_format("%C", item, LogContext(sum_len=8)) == b" " * 16
    assert expand_log_format("%C", item, LogContext(always_checksum=True)) == b"ab" * 16


def test_expand_L_and_n() -> None:
    lnk = LogItem(b"lnk", LNK, 5, link=b"a.txt")
    assert expand_log_format("%n%L", lnk) == b"lnk -> a.txt"
    assert expand_log_format("%n%-7L|", lnk) == b"lnk -> a.txt  |"
    hard = LogItem(b"b", REG, 2, hlink=b"a")
    assert expand_log_format("%n%L", hard) == b"b => a"
    d = LogItem(b"sub", DIR)
    assert expand_log_format("%n%L|%3L|", d) == b"sub/|       |"
    assert expand_log_format("%f", LogItem(b".", DIR, pathname=b"/tmp/src/"), LOCAL) == b"tmp/src/."


def test_deletion_lines() -> None:
    assert format_delete(b"xdir", DIR, "%i %n%L") == "*deleting   xdir/"
    assert format_delete(b"extra", REG, "%n%L") == "deleting extra"
    assert format_delete(b"extra", REG, None) == "deleting extra"
    assert format_delete(b"e", REG, "%o %n") == "del. e"
    assert format_delete(b"lnk", LNK, "%i %n%L|%l") == "*deleting   lnk|0"


def test_escaping_rules() -> None:
    assert safe_name(b"plain") == "plain"
    assert safe_name(b"a\x01b\tc") == "a\\#001b\tc"
    assert safe_name(b"lit\\#123x") == "lit\\#134#123x"
    assert safe_name(b"lit\\#12") == "lit\\#12"
    assert safe_name(b"inv\xff\xc3\xa9") == "inv\\#377\u00e9"
    assert safe_name(b"caf\xc3\xa9", utf8=False) == "caf\\#303\\#251"
    raw8 = safe_name(b"inv\xff\x01", eight_bit=True)
    assert raw8.encode("utf-8", "surrogateescape") == b"inv\xff\\#001"
    assert escape_logfile(b"c1\xc2\x85 \xff\x01\n") == b"c1\xc2\\#205 \xff\\#001\n"


def test_log_file_line_prefix() -> None:
    when = time.mktime((2024, 1, 2, 3, 4, 5, 0, 0, -1))
    assert log_file_line(">f+++++++++ a\x01", when=when, pid=77) == (
        b"2024/01/02 03:04:05 [77] >f+++++++++ a\\#001\n")


def test_summary_and_stats_text() -> None:
    assert summary_lines(5316, 87, 0, 5011, 1) == [
        "", "sent 5,316 bytes  received 87 bytes  10,806.00 bytes/sec",
        "total size is 5,011  speedup is 0.93"]
    assert summary_lines(195, 26, 0, 3077011, 3, dry_run=True)[1:] == [
        "sent 195 bytes  received 26 bytes  442.00 bytes/sec",
        "total size is 2.93M  speedup is 13,923.13 (DRY RUN)"]
    assert summary_lines(1, 1, None, 0, 0)[1] == "sent 1 bytes  received 1 bytes  UNKNOWN bytes/sec"
    st = Stats(num_files=7, num_dirs=2, num_links=1, created_files=1, xferred_files=1,
               total_size=3077011, total_transferred_size=3072000, flist_buildtime=0.001,
               total_written=195, total_read=19)
    assert stats_lines(st, 0) == [
        "",
        "Number of files: 7 (reg: 4, dir: 2, link: 1)",
        "Number of created files: 1 (reg: 1)",
        "Number of deleted files: 0",
        "Number of regular files transferred: 1",
        "Total file size: 3077011 bytes",
        "Total transferred file size: 3072000 bytes",
        "Literal data: 0 bytes",
        "Matched data: 0 bytes",
        "File list size: 0",
        "File list generation time: 0.001 seconds",
        "File list transfer time: 0.000 seconds",
        "Total bytes sent: 195",
        "Total bytes received: 19",
    ]
    st.flist_buildtime = 0
    assert not any("File list generation" in x for x in stats_lines(st))
    assert stats_lines(st, protocol_version=30)[2] == "Number of created files: 1 (reg: 1)"
    assert len(stats_lines(st, protocol_version=28)) == len(stats_lines(st)) - 2


def test_list_lines_pure() -> None:
    mt = time.mktime((2024, 1, 1, 12, 0, 0, 0, 0, -1))
    assert list_line(DIR, 4096, int(mt), b"name") == (
        "drwxr-xr-x          4,096 2024/01/01 12:00:00 name")
    assert list_line(REG, 4096, int(mt), b"f", human=0) == (
        "-rw-r--r--        4096 2024/01/01 12:00:00 f")
    assert list_line(LNK, 5, int(mt), b"l", b"a") == (
        "lrwxrwxrwx              5 2024/01/01 12:00:00 l -> a")
    assert list_line(REG, 1, int(mt), b"f", atimes=True, atime=int(mt)) == (
        "-rw-r--r--              1 2024/01/01 12:00:00 2024/01/01 12:00:00 f")
    assert list_line(DIR, 1, int(mt), b"d", atimes=True, atime=int(mt)) == (
        "drwxr-xr-x              1 2024/01/01 12:00:00                     d")
    assert list_missing_line(b"gone") == "*missing" + " " * 37 + " gone"
    assert timestring(2**62) == "(time out of range)"


# ---------------------------------------------------------------------------
# Against the real rsync
# ---------------------------------------------------------------------------


@needs_rsync
def test_itemize_new_tree_matches_rsync(tmp_path: Path) -> None:
    src = make_tree(tmp_path, weird=True)
    out = run_rsync("-ai", "src/", "dst/", cwd=tmp_path)
    got = [x for x in lines_of(out) if not x.startswith("created directory")]
    want = [format_log("%i %n%L", item_for(n, st, src, new_item_flags(st)), LOCAL)
            for n, st in walk(src)]
    # Names with a newline print on one line with \#012, so splitlines is safe.
    assert sorted(got) == sorted(want)


@needs_rsync
@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
@pytest.mark.parametrize("eight_bit", [False, True])
def test_name_escaping_matches_rsync(tmp_path: Path, locale: str, eight_bit: bool) -> None:
    src = make_tree(tmp_path, weird=True)
    args = ["-rl", "--out-format=%n|%-12n|", *(["-8"] if eight_bit else []), "src/", "dst/"]
    got = sorted(run_rsync(*args, cwd=tmp_path, locale=locale).split(b"\n"))
    utf8 = locale != "C"
    want = [format_log("%n|%-12n|", item_for(n, st, src, 0), LOCAL, eight_bit=eight_bit, utf8=utf8)
            for n, st in walk(src)]
    want_b = sorted([w.encode("utf-8", "surrogateescape") for w in want] + [b""])
    assert got == want_b


@needs_rsync
def test_out_format_escapes_match_rsync(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    fmt = "[%o|%n|%f|%l|%'l|%-12n|%12l|%L|%B|%M|%i|%U|%G|%-8B|%15M|%%|%m|%h|%5i]"
    out = run_rsync("-a", "--out-format=" + fmt, "src/", "dst/", cwd=tmp_path)
    want = [format_log(fmt, item_for(n, st, src, new_item_flags(st)), LOCAL)
            for n, st in walk(src)]
    assert sorted(lines_of(out)[1:]) == sorted(want)  # [0] is "created directory dst"


@needs_rsync
def test_changed_and_deleted_items_match_rsync(tmp_path: Path) -> None:
    src = make_tree(tmp_path)
    run_rsync("-a", "src/", "dst/", cwd=tmp_path)
    old = time.time() - 86400
    os.utime(src / "a.txt", (old, old))
    (tmp_path / "dst" / "xdir").mkdir()
    (tmp_path / "dst" / "extra").write_bytes(b"e")
    os.utime(tmp_path / "dst" / "sub", (old, old))
    # Adding xdir/extra stamped dst itself; put its time back, or whether rsync lists
    # "./" depends on whether a second boundary passed since the first run.
    st_src = os.lstat(src)
    os.utime(tmp_path / "dst", ns=(st_src.st_atime_ns, st_src.st_mtime_ns))
    out = run_rsync("-ai", "--delete", "src/", "dst/", cwd=tmp_path)
    st_a = os.lstat(src / "a.txt")
    st_sub = os.lstat(src / "sub")
    want = {
        format_delete(b"xdir", DIR, "%i %n%L", LOCAL),
        format_delete(b"extra", REG, "%i %n%L", LOCAL),
        format_log("%i %n%L", item_for(b"a.txt", st_a, src, ITEM_TRANSFER | ITEM_REPORT_TIME), LOCAL),
        format_log("%i %n%L", item_for(b"sub", st_sub, src, ITEM_REPORT_TIME), LOCAL),
    }
    assert set(lines_of(out)) == want
    assert "*deleting   xdir/" in want and ">f..t...... a.txt" in want

    (tmp_path / "dst" / "extra2").write_bytes(b"e")
    out = run_rsync("-rv", "--delete", "src/", "dst/", cwd=tmp_path)
    assert format_delete(b"extra2", REG, "%n%L") in lines_of(out)
    (tmp_path / "dst" / "extra3").write_bytes(b"e")
    out = run_rsync("-r", "--delete", "--out-format=%o %n", "src/", "dst/", cwd=tmp_path)
    assert format_delete(b"extra3", REG, "%o %n") in lines_of(out)


@needs_rsync
def test_log_file_lines_match_rsync(tmp_path: Path) -> None:
    src = make_tree(tmp_path, weird=True)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "gone").write_bytes(b"")
    logf = tmp_path / "log.txt"
    run_rsync("-a", "--delete", f"--log-file={logf}", "src/", "dst/", cwd=tmp_path)
    recs = logf.read_bytes().split(b"\n")
    assert recs[-1] == b""
    head = re.compile(rb"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(\d+)\] (.*)$", re.S)
    got: dict[bytes, bytes] = {}
    for rec in recs[:-1]:
        m = head.match(rec)
        assert m, rec
        when = time.mktime(time.strptime(m[1].decode(), "%Y/%m/%d %H:%M:%S"))
        # The prefix is rebuilt exactly from the time and pid rsync used.
        prefix = rec[: len(rec) - len(m[3])]
        assert log_file_line(b"", when=when, pid=int(m[2])) == prefix + b"\n"
        got[m[3]] = rec
    for n, st in walk(src)[1:]:  # dst/ existed, so "./" is not new
        item = item_for(n, st, src, new_item_flags(st))
        body = escape_logfile(expand_log_format("%i %n%L", item, LOCAL))
        assert body in got, body
    assert escape_logfile(expand_log_format("%i %n%L", LogItem.deletion(b"gone", REG))) in got


@needs_rsync
def test_list_only_matches_rsync(tmp_path: Path) -> None:
    src = make_tree(tmp_path, weird=True)
    with open(src / "sparse", "wb") as f:
        f.truncate(3077011)
    entries = walk(src)
    for args, human in ((["-r"], 1), (["-rl", "-h"], 2), (["-rl", "-hh"], 3), (["-rl", "--no-h"], 0)):
        out = run_rsync(*args, "--list-only", "src/", cwd=tmp_path)
        links = "-rl" in args
        want = []
        for n, st in entries:
            target = os.readlink(os.path.join(os.fsencode(src), n)) if stat.S_ISLNK(st.st_mode) else None
            want.append(list_line(st.st_mode, st.st_size, int(st.st_mtime), n,
                                  target if links else None, human))
        assert sorted(lines_of(out)) == sorted(want), args


def _parse_stats(out: str) -> tuple[Stats, float, float, int, int]:
    """Numbers from an rsync --no-h --stats run."""
    def num(label: str) -> int:
        m = re.search(rf"^{re.escape(label)}: (\d+)", out, re.M)
        assert m, label
        return int(m[1])

    def kinds(label: str) -> dict[str, int]:
        m = re.search(rf"^{re.escape(label)}: \d+(?: \((.*)\))?$", out, re.M)
        assert m, label
        return {k: int(v) for k, v in re.findall(r"(\w+): (\d+)", m[1] or "")}

    st = Stats()
    for kind, label in (("num", "Number of files"), ("created", "Number of created files"),
                        ("deleted", "Number of deleted files")):
        setattr(st, f"{kind}_files", num(label))
        k = kinds(label)
        for short, attr in (("dir", "dirs"), ("link", "links"), ("dev", "devs"),
                            ("special", "specials")):
            setattr(st, f"{kind}_{attr}", k.get(short, 0))
    st.xferred_files = num("Number of regular files transferred")
    st.total_size = num("Total file size")
    st.total_transferred_size = num("Total transferred file size")
    st.literal_data = num("Literal data")
    st.matched_data = num("Matched data")
    st.flist_size = num("File list size")
    st.total_written = num("Total bytes sent")
    st.total_read = num("Total bytes received")
    m = re.search(r"File list generation time: ([\d.]+) seconds\nFile list transfer time: ([\d.]+)", out)
    gen, xfer = (float(m[1]), float(m[2])) if m else (0.0, 0.0)
    m = re.search(r"bytes  ([\d.]+) bytes/sec", out)
    assert m
    return st, gen, xfer, st.total_written, st.total_read


@needs_rsync
@pytest.mark.parametrize(("flag", "human"), [("--no-h", 0), ("", 1), ("-h", 2), ("-hh", 3)])
def test_stats_block_matches_rsync(tmp_path: Path, flag: str, human: int) -> None:
    src = make_tree(tmp_path)
    with open(src / "sparse", "wb") as f:
        f.truncate(3077011)
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "old").mkdir()
    (tmp_path / "dst" / "old" / "f").write_bytes(b"")
    args = ["-a", "--delete", "--stats", "-n", "src/", "dst/"]
    raw = run_rsync("--no-h", *args, cwd=tmp_path).decode()
    st, _, _, _, _ = _parse_stats(raw)
    assert st.deleted_files == 2 and st.deleted_dirs == 1
    out = run_rsync(*filter(None, [flag]), *args, cwd=tmp_path).decode()
    # Times differ from run to run: take them from this run's own text.
    m = re.search(r"File list generation time: ([\d.,]+) seconds\nFile list transfer time: ([\d.,]+)", out)
    st.flist_buildtime = float(m[1].replace(",", "")) if m else 0.0
    st.flist_xfertime = float(m[2].replace(",", "")) if m else 0.0
    # The byte counts vary a little with the options; small ones print exactly.
    for attr, label in (("total_written", "Total bytes sent"), ("total_read", "Total bytes received")):
        m = re.search(rf"^{label}: ([\d,]+)$", out, re.M)
        if m:
            setattr(st, attr, int(m[1].replace(",", "")))
    assert out.startswith("\n")
    block = out[1:].split("\n\n")
    assert len(block) == 2
    assert block[0].split("\n") == stats_lines(st, human)[1:]
    summary = block[1].rstrip("\n").split("\n")
    # Whole seconds elapsed are not observable; a fast local dry run takes 0 or 1.
    candidates = [summary_lines(st.total_written, st.total_read, e, st.total_size, human, True)[1:]
                  for e in (0, 1)]
    assert summary in candidates


def test_human_num_default_level() -> None:
    assert human_num(5011) == "5,011"
    assert human_num(5011, 0) == "5011"


# ---------------------------------------------------------------------------
# Debug/stat lines of a whole local run, netsync's CLI against rsync's
# ---------------------------------------------------------------------------


def _cli_lines(cmd: list[str], tmp: Path, who: str, args: tuple[str, ...]) -> list[str]:
    work = tmp / who
    shutil.copytree(tmp / "seed", work, symlinks=True)
    p = subprocess.run([*cmd, *args, "s/", "d/"], cwd=work, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    noise = ("sent ", "total size ", "File list ", "Total bytes ")  # timings, wire bytes
    # hash_hits counts rsync's hash-table bucket hits, which depend on its table layout
    return [re.sub(r"hash_hits=\d+", "hash_hits=N", x) for x in p.stdout.splitlines()
            if not x.startswith(noise)]


@needs_rsync
@pytest.mark.parametrize("args", [
    ("-a", "--debug=NSTR"), ("-az", "--debug=NSTR"), ("-a", "--zc=lz4", "--cc=md5,xxh64",
                                                      "--debug=NSTR"),
    ("-a", "--compress-level=5", "--debug=NSTR"), ("-azz", "--debug=NSTR"),
    ("-a", "--zc=zlib", "--zl=0", "--debug=NSTR"),
    ("-vv",), ("-vv", "--no-W"), ("-a", "--no-W", "--stats", "--debug=deltasum"),
])
def test_local_run_debug_and_stats_lines_match_rsync(tmp_path: Path,
                                                     args: tuple[str, ...]) -> None:
    # compat.c/checksum.c NSTR lines, generator.c "delta-transmission ...", match.c
    # "total: matches=...", and --stats literal/matched data of a delta transfer.
    seed = tmp_path / "seed"
    (seed / "s").mkdir(parents=True)
    (seed / "d").mkdir()
    old = b"".join(b"line %06d\n" % i for i in range(20000))
    (seed / "d" / "f").write_bytes(old)
    (seed / "s" / "f").write_bytes(old[:50000] + b"inserted\n" + old[50000:150000])
    (seed / "s" / "new").write_bytes(b"new\n")
    netsync = [sys.executable, "-m", "netsync"]
    assert _cli_lines(netsync, tmp_path, "n", args) == _cli_lines([RSYNC], tmp_path, "r", args)
