"""Tests for netsync.options: rsync's command-line grammar and semantics.

Where a stock rsync is installed, several tables are checked against it: what
it accepts, the exact error text it prints, and the argument vector it sends
to the remote side (captured with a fake remote shell that records its argv).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from netsync import PROTOCOL_VERSION, __version__
from netsync.options import (
    NOT_IMPLEMENTED,
    OptionError,
    Options,
    PrintAndExit,
    limit_output_verbosity,
    parse_args,
    parse_server_args,
    parse_size_arg,
    server_flag_string,
    server_options,
)

RSYNC = shutil.which("rsync")
needs_rsync = pytest.mark.skipif(RSYNC is None, reason="stock rsync not installed")


def err(argv: list[str]) -> OptionError:
    with pytest.raises(OptionError) as info:
        parse_args(argv)
    return info.value


# --------------------------------------------------------------------------
# Grammar and simple attributes

ATTR_TABLE: list[tuple[list[str], dict[str, object]]] = [
    (["-v", "a", "b"], {"verbose": 1, "args": ["a", "b"]}),
    (["-vvv", "a", "b"], {"verbose": 3}),
    (["-v", "--no-v", "a", "b"], {"verbose": 0}),
    (["-a", "a", "b"], {"archive": True, "recursive": True, "links": True, "perms": True,
                        "times": True, "group": True, "owner": True, "devices": True,
                        "specials": True, "hard_links": 0, "acls": False}),
    (["-a", "--no-o", "a", "b"], {"owner": False, "group": True}),
    (["--no-o", "-a", "a", "b"], {"owner": True}),
    (["-a", "--no-r", "a", "b"], {"recursive": False, "dirs": False}),
    (["--no-r", "-a", "a", "b"], {"recursive": True}),
    (["-a", "--no-D", "a", "b"], {"devices": False, "specials": False}),
    (["-D", "--no-devices", "a", "b"], {"devices": False, "specials": True}),
    (["-avzP", "a", "b"], {"verbose": 1, "compress": True, "progress": True, "partial": True}),
    (["-e", "ssh -p 22", "a", "b"], {"rsh": "ssh -p 22"}),
    (["-essh", "a", "b"], {"rsh": "ssh"}),
    (["-e=ssh", "a", "b"], {"rsh": "ssh"}),
    (["-ve", "ssh", "a", "b"], {"rsh": "ssh", "verbose": 1}),
    (["--rsh=ssh", "a", "b"], {"rsh": "ssh"}),
    (["--rsh", "ssh", "a", "b"], {"rsh": "ssh"}),
    (["--rsh", "--foo", "a", "b"], {"rsh": "--foo"}),  # popt takes the next word as-is
    (["-B1024", "a", "b"], {"block_size": 1024}),
    (["-B", "1k", "a", "b"], {"block_size": 1024}),
    (["--rsync-path=/opt/rsync", "a", "b"], {"rsync_path": "/opt/rsync"}),
    (["-M--fake-super", "-M", "-x", "a", "b"], {"remote_option": ["--fake-super", "-x"]}),
    (["--", "-v", "--x"], {"args": ["-v", "--x"], "verbose": 0}),
    (["-", "b"], {"args": ["-", "b"]}),
    (["a", "-v", "b"], {"args": ["a", "b"], "verbose": 1}),  # options anywhere
    (["-i", "a", "b"], {"itemize_changes": 1, "stdout_format": "%i %n%L"}),
    (["-ii", "a", "b"], {"itemize_changes": 2}),
    (["-xx", "a", "b"], {"one_file_system": 2}),
    (["-HH", "a", "b"], {"hard_links": 2}),
    (["-hh", "a", "b"], {"human_readable": 3}),
    (["--no-h", "a", "b"], {"human_readable": 0}),
    (["-W", "a", "b"], {"whole_file": True}),
    (["--no-W", "a", "b"], {"whole_file": False}),
    (["a", "b"], {"whole_file": None, "relative": False, "max_size": None,
                  "delete": False, "delete_mode": None, "protocol": PROTOCOL_VERSION,
                  "list_only": 0, "suffix": "~", "human_readable": 1}),
    (["a"], {"list_only": 1, "dirs": True}),
    (["--list-only", "a", "b"], {"list_only": 2}),
    (["--append", "a", "b"], {"append": 1, "inplace": True}),
    (["--append", "--append", "a", "b"], {"append": 1}),  # client side: not a counter
    (["--append-verify", "a", "b"], {"append": 2, "inplace": True}),
    (["--append", "--inplace", "a", "b"], {"append": 1}),
    (["--delete", "-r", "a", "b"], {"delete": True, "delete_mode": None}),
    (["--del", "-r", "a", "b"], {"delete": True, "delete_mode": "during"}),
    (["--delete-delay", "-r", "a", "b"], {"delete_mode": "delay", "delete_during": 2}),
    (["--delete-after", "-r", "a", "b"], {"delete_mode": "after"}),
    (["--delete-before", "-r", "a", "b"], {"delete_mode": "before"}),
    (["--delete-excluded", "-r", "a", "b"], {"delete": True, "delete_excluded": True}),
    (["--max-delete=-3", "a", "b"], {"max_delete": 0}),
    (["--max-delete=7", "a", "b"], {"max_delete": 7}),
    (["--timeout=0x10", "a", "b"], {"timeout": 16}),
    (["--timeout=010", "a", "b"], {"timeout": 8}),
    (["--timeout=", "a", "b"], {"timeout": 0}),
    (["--modify-window=-1", "a", "b"], {"modify_window": -1}),
    (["-@", "2", "a", "b"], {"modify_window": 2}),
    (["--port=8730", "a", "b"], {"port": 8730}),
    (["--protocol=29", "a", "b"], {"protocol": 29}),
    (["--compress-level=9", "a", "b"], {"compress_level": 9, "compress": True}),
    (["--zl=3", "-z", "a", "b"], {"compress_level": 3, "do_compression": 1}),
    (["-zz", "a", "b"], {"compress_choice": "zlibx", "do_compression": 2}),
    (["--zc=zstd", "a", "b"], {"compress_choice": "zstd", "compress": True}),
    (["-z", "--no-z", "a", "b"], {"compress": False}),
    (["--cc=xxh3", "a", "b"], {"checksum_choice": "xxh3"}),
    (["--checksum-choice=auto", "a", "b"], {"checksum_choice": None}),
    (["--checksum-choice=none", "a", "b"], {"whole_file": True}),
    (["--link-dest=/x", "--link-dest", "/y", "a", "b"], {"link_dest": ["/x", "/y"]}),
    (["--compare-dest=/x", "a", "b"], {"compare_dest": ["/x"], "copy_dest": []}),
    (["--chmod=Du+rwx,Fgo-w", "--chmod=644", "a", "b"], {"chmod": ["Du+rwx,Fgo-w", "644"]}),
    (["--usermap=a:b", "a", "b"], {"usermap": "a:b", "owner": True}),
    (["--chown=u:g", "a", "b"], {"usermap": "*:u", "groupmap": "*:g", "owner": True,
                                 "group": True}),
    (["--chown=:g", "a", "b"], {"usermap": None, "groupmap": "*:g", "owner": False}),
    (["--partial-dir=.p//x/", "a", "b"], {"partial_dir": ".p/x", "partial": True}),
    (["--delay-updates", "a", "b"], {"partial_dir": ".~tmp~", "partial": True}),
    (["--inplace", "--partial", "a", "b"], {"partial": False, "inplace": True}),
    (["-b", "a", "b"], {"backup": True, "suffix": "~", "omit_dir_times": -1}),
    (["--backup-dir=./old", "a", "b"], {"backup": True, "backup_dir": "old", "suffix": ""}),
    (["-b", "--suffix=.bak", "a", "b"], {"suffix": ".bak"}),
    (["--files-from=list", "-a", "src", "dst"], {"recursive": False, "relative": True,
                                                  "dirs": True, "implied_dirs": True}),
    (["--files-from=list", "-r", "src", "dst"], {"recursive": True}),
    (["--files-from=list", "--no-R", "src", "dst"], {"relative": False, "implied_dirs": False}),
    (["-R", "--no-implied-dirs", "a", "b"], {"relative": True, "implied_dirs": False}),
    (["--old-dirs", "a", "b"], {"recursive": True, "dirs": True, "old_dirs": True,
                                "filter_args": [("filter", "- /*/*")]}),
    (["--stderr=a", "a", "b"], {"stderr": "all", "msgs2stderr": 1}),
    (["--stderr=c", "a", "b"], {"stderr": "client", "msgs2stderr": 0}),
    (["--ignore-missing-args", "--delete-missing-args", "a", "b"],
     {"delete_missing_args": True, "ignore_missing_args": False}),
    (["--ignore-non-existing", "a", "b"], {"existing": True, "given": ["existing"]}),
    (["-4", "a", "b"], {"af_hint": 4}),
    (["-8", "--no-8", "a", "b"], {"eight_bit_output": False, "given": ["8-bit-output",
                                                                       "no-8-bit-output"]}),
    (["--bwlimit=100", "a", "b"], {"bwlimit": 100}),
    (["--bwlimit=1m", "a", "b"], {"bwlimit": 1024}),
    (["--bwlimit=0", "a", "b"], {"bwlimit": 0}),
    (["--bwlimit=1.5", "a", "b"], {"bwlimit": 2}),
    (["--super", "a", "b"], {"super": True, "fake_super": False}),
    (["--no-motd", "--no-blocking-io", "a", "b"], {"motd": False, "blocking_io": False}),
    (["-0", "--files-from=-", "a", "b"], {"from0": True, "files_from": "-"}),
    (["--out-format=%n %b", "a", "b"], {"stdout_format": "%n %b", "log_before_transfer": False}),
    (["--out-format=%i %n", "a", "b"], {"stdout_format_has_i": 1, "log_before_transfer": True}),
    (["--log-file=/tmp/l", "a", "b"], {"log_file_format": "%i %n%L"}),
    (["--log-file-format=%n", "a", "b"], {"log_file_format": None}),
]


@pytest.mark.parametrize(("argv", "expected"), ATTR_TABLE, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_attribute_table(argv: list[str], expected: dict[str, object]) -> None:
    opts = parse_args(argv)
    for name, value in expected.items():
        assert getattr(opts, name) == value, name


def test_given_records_canonical_names_in_order() -> None:
    opts = parse_args(["-avP", "--del", "--cc=md5", "--log-format=%n", "-D", "--no-i-r",
                       "--no-R", "a", "b"])
    assert opts.given == ["archive", "verbose", "partial", "progress", "delete-during",
                          "checksum-choice", "out-format", "devices", "specials",
                          "no-inc-recursive", "no-relative"]


def test_filter_args_keep_command_line_order_and_convert_F() -> None:
    opts = parse_args(["-F", "--exclude=*.o", "-f", "+ *.c", "--include", "x",
                       "--exclude-from=ex", "-FF", "--include-from=in", "-C", "a", "b"])
    assert opts.filter_args == [
        ("filter", ": /.rsync-filter"), ("exclude", "*.o"), ("filter", "+ *.c"),
        ("include", "x"), ("exclude-from", "ex"), ("filter", "- .rsync-filter"),
        ("include-from", "in"),
    ]
    assert opts.cvs_exclude


def test_backup_with_delete_adds_protect_rule() -> None:
    opts = parse_args(["-rb", "--delete", "--exclude=x", "a", "b"])
    assert opts.filter_args == [("exclude", "x"), ("filter", "P *~")]


def test_every_option_row_parses() -> None:
    """Each long name and short letter rsync has is accepted by the grammar."""
    from netsync.options import _TABLE

    for opt in _TABLE:
        if opt.long in ("help", "version", "server", "sender", "daemon", "config", "dparam",
                        "detach", "no-detach", "info", "debug"):
            continue
        forms = []
        if opt.long:
            forms.append(f"--{opt.long}")
        if opt.short:
            forms.append(f"-{opt.short}")
        for form in forms:
            value = {"stderr": "all", "chmod": "644", "block-size": "1k", "stop-at": "23:59",
                     "stop-after": "5", "remote-option": "-v", "chown": "u", "max-alloc": "2m",
                     "confine-root": "/x", "checksum-choice": "md5", "cc": "md5",
                     "compress-choice": "zlib", "zc": "zlib", "outbuf": "L"}.get(opt.long or "", "1")
            argv = [form, value] if opt.takes_arg else [form]
            try:
                parse_args([*argv, "-r", "a", "b"])
            except OptionError as e:
                assert "does not support" in e.message, (form, e.message)


# --------------------------------------------------------------------------
# Errors (messages are the text after rsync's "rsync: " prefix)

ERROR_TABLE: list[tuple[list[str], str]] = [
    (["--fake"], "--fake: unknown option"),
    (["--verb"], "--verb: unknown option"),  # popt has no prefix abbreviation
    (["--no-a"], "--no-a: unknown option"),
    (["--no-P"], "--no-P: unknown option"),
    (["--verbose=3"], "--verbose=3: option does not take an argument"),
    (["-v="], "-v=: option does not take an argument"),
    (["-av=x"], "-av=x: option does not take an argument"),
    (["-vQ"], "-vQ: unknown option"),
    (["---x"], "---x: unknown option"),
    (["--=x"], "--=x: unknown option"),
    (["--rsh"], "--rsh: missing argument"),
    (["-e"], "-e: missing argument"),
    (["--timeout=abc"], "--timeout=abc: invalid numeric value"),
    (["--timeout", "abc"], "abc: invalid numeric value"),
    (["--timeout", "08"], "08: invalid numeric value"),
    (["-@x"], "-@x: invalid numeric value"),
    (["--timeout=99999999999"], "--timeout=99999999999: number too large or too small"),
    (["--compress-level=x"], "--compress-level=x: invalid numeric value"),
    (["--max-size=5X"], "--max-size=5X is invalid"),
    (["--max-size", "5X"], "--max-size=5X is invalid"),
    (["-B", "5X"], "--block-size=5X is invalid"),
    (["--max-size=-1"], "--max-size=-1 is too large"),
    (["--max-size=99999P"], "--max-size=99999P is too large"),
    (["--block-size=100000000"], "--block-size=100000000 is too large (max: 128.00K)"),
    (["--protocol=29", "--block-size=1g"], "--block-size=1g is too large (max: 512.00M)"),
    (["--bwlimit=100b"], "--bwlimit=100b is too small (min: 512 or 0 for unlimited)"),
    (["--max-alloc=1k"], "--max-alloc=1k is too small (min: 1.00M or 0 for unlimited)"),
    (["--inplace", "--delay-updates"], "--inplace cannot be used with --delay-updates"),
    (["--inplace", "--partial-dir=x"], "--inplace cannot be used with --partial-dir"),
    (["--append", "--delay-updates"], "--append cannot be used with --delay-updates"),
    (["--append", "-W"], "--append cannot be used with --whole-file"),
    (["-r", "--delete-before", "--delete-after"],
     "You may not combine multiple --delete-WHEN options."),
    (["--delete"], "--delete does not work without --recursive (-r) or --dirs (-d)."),
    (["--link-dest=a", "--copy-dest=b"],
     "ERROR: the --copy-dest option conflicts with the --link-dest option"),
    (["--chmod=xyz"], "Invalid argument passed to --chmod (xyz)"),
    (["--chmod=u+"], None),  # valid: an empty permission list
    (["--stderr=x"], '--stderr mode "x" is not one of errors, all, or client'),
    (["--outbuf=x"], "Invalid --outbuf setting -- specify N, L, or B."),
    (["--suffix=a/b"], "--suffix cannot contain slashes: a/b"),
    (["-b", "--suffix="], "--suffix cannot be empty without a --backup-dir"),
    (["--remote-option=x"], "Remote option must start with a dash: x"),
    (["--usermap=a:b", "--usermap=c:d"], "You can only specify --usermap once."),
    (["--chown=a", "--usermap=c:d"], "--usermap conflicts with prior --chown."),
    (["--usermap=c:d", "--chown=a"], "--chown conflicts with prior --usermap."),
    (["--confine-root=rel"], "--confine-root must be an absolute path"),
]


@pytest.mark.parametrize(("argv", "message"), ERROR_TABLE, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_error_table(argv: list[str], message: str | None) -> None:
    if not (message or "").endswith("missing argument"):
        argv = [*argv, "src", "dst"]
    if message is None:
        parse_args(argv)
        return
    e = err(argv)
    assert e.message == message
    assert e.code == 1


@needs_rsync
@pytest.mark.parametrize(("argv", "message"), [row for row in ERROR_TABLE if row[1]],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_error_text_matches_real_rsync(tmp_path: Path, argv: list[str], message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ends = [] if message.endswith("missing argument") else [f"{src}/", str(tmp_path / "dst")]
    proc = subprocess.run([RSYNC, "-n", *argv, *ends],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == f"rsync: {message}"


def test_unknown_info_and_compress_names_are_bare_messages() -> None:
    e = err(["--info=foo", "a", "b"])
    assert (e.message, e.code, e.bare) == ('Unknown --info item: "foo"', 1, True)
    e = err(["--debug=del2,bar3", "a", "b"])
    assert e.message == 'Unknown --debug item: "bar"'
    e = err(["--compress-choice=foo", "a", "b"])
    assert (e.message, e.code, e.bare) == ("unknown compress name: foo", 4, True)
    e = err(["--checksum-choice=md5,foo", "a", "b"])
    assert (e.message, e.code) == ("unknown checksum name: foo", 4)
    assert err(["--cc=md5,", "a", "b"]).message == "unknown checksum name: "
    assert parse_args(["--cc=auto,MD5", "a", "b"]).checksum_choice == "auto,MD5"


def test_at_most_twenty_basis_dirs() -> None:
    ok = [f"--link-dest=/d{i}" for i in range(20)]
    assert len(parse_args([*ok, "a", "b"]).link_dest) == 20
    e = err([*ok, "--link-dest=/d20", "a", "b"])
    assert e.message == "ERROR: at most 20 --link-dest args may be specified"


def test_sender_without_server_and_files_from_arg_count_show_usage() -> None:
    e = err(["--sender", "a", "b"])
    assert e.show_usage and e.code == 1
    e = err(["--files-from=x", "a", "b", "c"])
    assert e.show_usage
    e = err(["--files-from=x", "a"])
    assert e.show_usage


# --------------------------------------------------------------------------
# Refused (not yet implemented) options


@pytest.mark.parametrize(("argv", "shown"), [
    (["-N"], "--crtimes (-N)"),
    (["-vaN"], "--crtimes (-N)"),
])
def test_not_implemented_options_are_refused(argv: list[str], shown: str) -> None:
    e = err([*argv, "a", "b"])
    assert e.message == f"This netsync does not support {shown}"
    assert e.code == 1


def test_negations_of_refused_options_are_fine() -> None:
    opts = parse_args(["--no-X", "--no-A", "--no-y", "--no-m", "-U", "a", "b"])
    assert opts.xattrs == 0 and opts.atimes == 1
    assert "fuzzy" not in NOT_IMPLEMENTED and parse_args(["-XX", "a", "b"]).xattrs == 2
    assert "acls" not in NOT_IMPLEMENTED and parse_args(["-A", "a", "b"]).perms


def test_refusal_follows_the_module_level_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("netsync.options.NOT_IMPLEMENTED", {"whole-file"})
    assert parse_args(["-X", "a", "b"]).xattrs == 1
    assert err(["-W", "a", "b"]).message == "This netsync does not support --whole-file (-W)"


# --------------------------------------------------------------------------
# Sizes

SIZE_TABLE: list[tuple[str, int | None]] = [
    ("0", 0), ("", 0), ("100", 100), ("1k", 1024), ("1K", 1024), ("1kb", 1000),
    ("1KB", 1000), ("1KiB", 1024), ("1kib", 1024), ("1.5k", 1536), (".5k", 512),
    ("1.5", 1), ("1m", 1 << 20), ("1MB", 10**6), ("2g", 2 << 30), ("1GB", 10**9),
    ("1t", 1 << 40), ("1p", 1 << 50), ("1PB", 10**15), ("1b", 1), ("1bb", 1),
    ("1k+1", 1025), ("1k-1", 1023), ("1+1", 2), ("1kb-1", 999), ("1.5m+1", 1572865),
    ("0-1", None), ("+1", None), ("-1", None), ("5X", None), ("1e3", None), ("1k+2", None),
    ("1kx", None), ("1,5k", None), (" 1", None), ("1 ", None), ("1kiB2", None),
    ("0x10", None), ("99999P", None), ("8191P", 8191 << 50), ("8192P", None),
]


@pytest.mark.parametrize(("text", "value"), SIZE_TABLE)
def test_size_table(text: str, value: int | None) -> None:
    if value is None:
        with pytest.raises(OptionError) as info:
            parse_size_arg(text, "b", "max-size")
        assert info.value.message.startswith(f"--max-size={text} is ")
    else:
        assert parse_size_arg(text, "b", "max-size") == value
        assert parse_args([f"--max-size={text}", "a", "b"]).max_size == value


def _capture_script(tmp_path: Path) -> tuple[Path, Path]:
    """A fake remote shell that records its argv (NUL-separated) and fails."""
    out = tmp_path / "argv.out"
    script = tmp_path / "fake-rsh"
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done > {out}\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, out


def _real_remote_argv(tmp_path: Path, opts: list[str], push: bool) -> list[str] | None:
    """The words real rsync puts after "HOST rsync" for `opts`, or None if it refused."""
    script, out = _capture_script(tmp_path)
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    if out.exists():
        out.unlink()
    ends = [f"{src}/", "localhost:dst"] if push else ["localhost:src/", str(tmp_path / "d")]
    proc = subprocess.run([RSYNC, *opts, "-e", str(script), *ends],
                          capture_output=True, timeout=30, env={**os.environ, "LC_ALL": "C"})
    if not out.exists():
        assert proc.returncode != 0
        return None
    words = out.read_bytes().split(b"\0")[:-1]
    assert words[0] == b"localhost" and words[1] == b"rsync"
    return [w.decode() for w in words[2:]]


@needs_rsync
def test_size_table_against_real_rsync(tmp_path: Path) -> None:
    """rsync forwards the parsed --max-size in bytes: compare value and acceptance."""
    for text, value in SIZE_TABLE:
        real = _real_remote_argv(tmp_path, ["-r", f"--max-size={text}"], push=True)
        if value is None:
            assert real is None, text
        else:
            assert real is not None, text
            assert f"--max-size={value}" in real, (text, real)


@needs_rsync
@pytest.mark.parametrize("text", ["100", "1m", "1.5", "600b", "1000kb", "0", "2g", "1k-1"])
def test_bwlimit_against_real_rsync(tmp_path: Path, text: str) -> None:
    real = _real_remote_argv(tmp_path, ["-r", f"--bwlimit={text}"], push=True)
    assert real is not None
    ours = server_options(parse_args(["-r", f"--bwlimit={text}", "a", "h:b"]), True)[0]
    assert [w for w in real if w.startswith("--bwlimit")] == [
        w for w in ours if w.startswith("--bwlimit")]


# --------------------------------------------------------------------------
# -h, --help, --version, --info=help


def test_h_alone_is_help_otherwise_human_readable() -> None:
    for argv in (["-h"], ["-hh"], ["--human-readable"], ["-hv"]):
        with pytest.raises(PrintAndExit) as info:
            parse_args(argv)
        assert "Usage: netsync [OPTION]... SRC [SRC]... DEST" in info.value.text
        assert info.value.code == 0
    assert parse_args(["-h", "a", "b"]).human_readable == 2
    assert parse_args(["-h", "-v", "a"]).human_readable == 2
    assert parse_args(["--no-h", "-h", "a"]).human_readable == 1


def test_no_arguments_is_left_to_the_client() -> None:
    """main.c prints the usage for a client without paths after parse_arguments()
    (which reads the filter files: tests/test_client_fatal.py); a server checks here."""
    for argv in ([], ["-v"], ["-a", "--delete"]):
        assert parse_args(argv).args == []
    e = err(["--server", "-v"])
    assert e.show_usage and e.code == 1 and e.message == ""


def test_vv_version_is_json() -> None:
    import json

    with pytest.raises(PrintAndExit) as info:
        parse_args(["-VV"])
    data = json.loads(info.value.text)
    assert data["program"] == "netsync" and data["version"] == __version__


def test_help_lists_options_in_rsync_layout() -> None:
    with pytest.raises(PrintAndExit) as info:
        parse_args(["--help", "--bogus"])  # help is acted on immediately
    text = info.value.text
    assert text.startswith(f"netsync  version {__version__}  protocol version 32\n")
    assert "\nOptions\n--verbose, -v            increase verbosity\n" in text
    for needle in ("--delete-delay ", "--max-size=SIZE ", "--rsh=COMMAND, -e ", "-P  "):
        assert needle in text
    assert err(["--bogus", "--help"]).message == "--bogus: unknown option"


def test_version_first_line() -> None:
    with pytest.raises(PrintAndExit) as info:
        parse_args(["--version"])
    first = info.value.text.splitlines()[0]
    assert first == f"netsync  version {__version__}  protocol version {PROTOCOL_VERSION}"
    assert first == "netsync  version 0.1.0  protocol version 32"
    # --version is acted on after the whole line parsed, so errors win.
    assert err(["-V", "--bogus"]).message == "--bogus: unknown option"


@needs_rsync
@pytest.mark.parametrize("which", ["info", "debug"])
def test_info_and_debug_help_match_real_rsync(which: str) -> None:
    real = subprocess.run([RSYNC, f"--{which}=help"], capture_output=True, text=True,
                          timeout=30)
    with pytest.raises(PrintAndExit) as info:
        parse_args([f"--{which}=help"])
    assert info.value.text == real.stdout


# --------------------------------------------------------------------------
# info/debug levels


def levels(argv: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    opts = parse_args([*argv, "a", "b"])
    return opts.info, opts.debug


def test_default_levels() -> None:
    info, debug = levels([])
    assert info == {k: 0 for k in info} | {"nonreg": 1}
    assert set(info) == {"backup", "copy", "del", "flist", "misc", "mount", "name", "nonreg",
                         "progress", "remove", "skip", "stats", "symsafe"}
    assert all(v == 0 for v in debug.values())
    assert "deltasum" in debug and "nstr" in debug


def test_verbose_levels() -> None:
    info, debug = levels(["-v"])
    assert {k for k, v in info.items() if v} == {"nonreg", "copy", "del", "flist", "misc",
                                                 "name", "stats", "symsafe"}
    assert all(v == 0 for v in debug.values())
    info, debug = levels(["-vv"])
    assert info["name"] == 2 and info["misc"] == 2 and info["skip"] == 1
    assert debug["deltasum"] == 1 and debug["bind"] == 1 and debug["exit"] == 0
    info, debug = levels(["-vvvvvv"])
    assert debug["deltasum"] == 4 and debug["hlink"] == 1 and debug["io"] == 0


def test_user_levels_beat_verbosity_and_all_none() -> None:
    info, _ = levels(["--info=name0", "-vv"])
    assert info["name"] == 0 and info["misc"] == 2
    info, _ = levels(["--info=progress2,NAME", "--info=ALL3", "--info=stats0"])
    assert info["progress"] == 3 and info["name"] == 3 and info["stats"] == 0
    info, _ = levels(["--info=NONE"])
    assert all(v == 0 for v in info.values())
    info, debug = levels(["--info=flist9", "--debug=ALL"])
    assert info["flist"] == 4 and all(v == 1 for v in debug.values())


def test_progress_stats_and_itemize_levels() -> None:
    info, _ = levels(["--progress"])
    assert (info["progress"], info["flist"], info["name"]) == (1, 2, 1)
    info, _ = levels(["-P", "-i"])  # itemize logs names itself, so NAME stays 0
    assert (info["progress"], info["name"]) == (1, 0)
    info, _ = levels(["--info=progress2"])
    assert (info["progress"], info["name"]) == (2, 0)
    info, _ = levels(["--stats"])
    assert info["stats"] == 2
    info, _ = levels(["--stats", "-vv"])
    assert info["stats"] == 3
    opts = parse_args(["-v", "a", "b"])
    assert opts.stdout_format == "%n%L" and opts.log_before_transfer


def test_quiet_is_a_counter_not_a_level_change() -> None:
    opts = parse_args(["-qq", "-v", "a", "b"])
    assert opts.quiet == 2 and opts.info["name"] == 1


def test_limit_output_verbosity() -> None:
    opts = parse_args(["-vvv", "--info=progress2", "a", "b"])
    limit_output_verbosity(opts, 1)
    assert opts.info["name"] == 1 and opts.info["progress"] == 0 and opts.debug["deltasum"] == 0


# --------------------------------------------------------------------------
# Daemon-mode parsing


def test_daemon_mode_options() -> None:
    opts = parse_args(["--daemon", "--no-detach", "--port=8730", "--config=/etc/x.conf",
                       "-M", "a=b", "-v"])
    assert opts.daemon and not opts.detach and opts.port == 8730
    assert opts.config == "/etc/x.conf" and opts.dparam == ["a=b"] and opts.verbose == 1
    e = err(["--daemon", "-a"])
    assert e.message.startswith("-a: unknown option (in daemon mode)\n")
    e = err(["--config=x"])
    assert e.message.startswith("Daemon option(s) used without --daemon.")
    e = err(["--daemon", "--dparam=x"])
    assert e.message.startswith("--dparam value is missing an '=': x")
    srv = parse_args(["--server", "--daemon", "."])
    assert srv.daemon and srv.server and srv.args == ["."]
    with pytest.raises(PrintAndExit) as info:
        parse_args(["--daemon", "-h"])
    assert "Usage: netsync --daemon [OPTION]..." in info.value.text


# --------------------------------------------------------------------------
# What the client sends to the server, checked against stock rsync

SERVER_CASES: list[list[str]] = [
    ["-av"],
    ["-avz", "--delete"],
    ["-c", "-H", "-r"],
    ["-a", "--protocol=29"],
    ["-avP", "--bwlimit=1m", "--max-size=1.5k", "-i"],
    ["-r", "--info=progress2", "--stats"],
    ["-r", "--info=del2,name0,skip", "--stats", "-v"],
    ["-rlt", "--inplace", "--sparse"],
    ["-r", "--append-verify"],
    ["-a", "--link-dest=/x", "--link-dest=/y", "-M--fake-super", "-M--x=a b"],
    ["-r", "--delete", "-d", "--no-r"],
    ["-rvvn", "--delete-delay", "--max-delete=0", "--force", "--existing", "-u"],
    ["-r", "--delete-before", "--delete-excluded", "-b", "--suffix=.old"],
    ["-rHH", "-xx", "-KkLS", "-O", "-J", "-I", "-C", "-E"],
    ["-rR", "--no-implied-dirs", "--partial-dir=.p", "--delay-updates"],
    ["-r", "--delay-updates"],
    ["-r", "--timeout=30", "-B", "2048", "--temp-dir=/t t", "--backup-dir=../b", "-q"],
    ["-rzz"], ["-r", "--zc=zstd", "--zl=5"], ["-r", "--zc=zlib"], ["-r", "--old-compress"],
    ["-r", "--cc=xxh3", "--modify-window=2", "--size-only", "--numeric-ids", "--safe-links"],
    ["-r", "--chown=u:g", "--ignore-existing", "--remove-source-files", "--mkpath"],
    ["-r", "--out-format=%n%o", "--min-size=1", "--copy-unsafe-links"],
    ["-r", "--files-from=/dev/null", "--from0", "-0"],
    ["-r", "--delete-missing-args", "--ignore-errors", "--super", "--max-alloc=2g"],
    ["-d", "--delete"], ["-rpgo", "--no-D", "--specials"], ["-rD", "--no-specials"],
    ["-r", "--list-only"], ["-r", "--msgs2stderr"], ["-r", "--stderr=client"],
    ["-r", "--qsort"], ["-r", "--no-inc-recursive"], ["--old-dirs"],
]


@needs_rsync
@pytest.mark.parametrize("push", [True, False], ids=["push", "pull"])
@pytest.mark.parametrize("case", SERVER_CASES, ids=lambda c: " ".join(c))
def test_server_options_match_real_rsync(tmp_path: Path, case: list[str], push: bool) -> None:
    real = _real_remote_argv(tmp_path, case, push)
    assert real is not None
    src = f"{tmp_path}/src/"
    dest = str(tmp_path / "d")
    ends = [src, "localhost:dst"] if push else ["localhost:src/", dest]
    opts = parse_args([*case, "-e", "x", *ends])
    words, secluded = server_options(opts, am_sender=push)
    assert secluded == []
    assert [*words, ".", "dst" if push else "src/"] == real


@needs_rsync
@pytest.mark.parametrize("push", [True, False], ids=["push", "pull"])
# -M options are for the remote program, not its parser: those cases do not apply here.
@pytest.mark.parametrize("case", [c for c in SERVER_CASES if not any(w.startswith("-M") for w in c)],
                         ids=lambda c: " ".join(c))
def test_parse_server_args_of_real_client_vectors(tmp_path: Path, case: list[str],
                                                   push: bool) -> None:
    real = _real_remote_argv(tmp_path, case, push)
    assert real is not None
    client = parse_args([*case, "-e", "x", "a", "h:b"])
    if "--qsort" in case:
        # rsync 3.5 sends --use-qsort, which its own server rejects too.
        assert "--use-qsort" in real
        with pytest.raises(OptionError, match="--use-qsort: unknown option"):
            parse_server_args(real)
        return
    srv = parse_server_args(real)
    assert srv.server and srv.sender == (not push)
    assert srv.args[0] == "."
    for name in ("recursive", "links", "perms", "times", "owner", "group", "devices",
                 "checksum", "hard_links", "verbose", "one_file_system", "sparse",
                 "inplace", "append", "whole_file", "update", "dry_run"):
        assert getattr(srv, name) == getattr(client, name), name
    if client.protocol >= 30:
        assert srv.server_caps == ("i" if "i" in srv.server_caps[:1] else "") + "LsfxCIvu"
        assert server_flag_string(client, push).endswith(srv.rsh)
    else:
        assert srv.server_caps is None
    if push:  # the receiving server learns the deletion and size settings
        assert srv.delete == client.delete
        assert srv.max_size == client.max_size


@needs_rsync
@pytest.mark.parametrize("extra", [[], ["-0"]])
def test_remote_files_from_pull_matches_real_rsync(tmp_path: Path, extra: list[str]) -> None:
    case = ["-r", "--files-from=localhost:the list", *extra]
    real = _real_remote_argv(tmp_path, case, push=False)
    opts = parse_args([*case, "-e", "x", "localhost:src/", "d"])
    assert opts.files_from_host == "localhost"
    assert [*server_options(opts, am_sender=False)[0], ".", "src/"] == real


def test_server_flag_string_examples() -> None:
    opts = parse_args(["-av", "a", "h:b"])
    assert server_flag_string(opts, True) == "-vlogDtpre.iLsfxCIvu"
    assert server_flag_string(opts, True, with_caps=False) == "-vlogDtpr"
    assert server_flag_string(parse_args(["-a", "--protocol=29", "a", "h:b"]), True) == "-logDtpr"
    assert server_flag_string(parse_args(["--delete-after", "-r", "a", "h:b"]), False) == "-re.LsfxCIvu"
    assert server_flag_string(parse_args(["a", "h:b"]), True, with_caps=False) == ""


def test_server_mode_specifics() -> None:
    opts = parse_server_args(["--server", "-vlogDtpre32.0iLsfxCIvu", "--append", "--append",
                              "--info=bogus", ".", "dst"])
    assert opts.server_caps == "iLsfxCIvu" and opts.rsh == "32.0iLsfxCIvu"
    assert opts.append == 2  # a server counts --append
    assert opts.args == [".", "dst"]
    assert not opts.log_before_transfer and opts.list_only == 0
    e = err(["--server", "--bogus", ".", "x"])
    assert e.message == "on remote machine: --bogus: unknown option"
    e = err(["--server", "-N", ".", "x"])
    assert e.message == "The server does not support --crtimes (-N)"


def test_secluded_args_split() -> None:
    opts = parse_args(["-rs", "--delete", "a", "h:b"])
    words, rest = server_options(opts, True)
    assert words == ["--server", "-sre.iLsfxCIvu"]
    assert rest == ["--delete"]


@pytest.mark.parametrize(("value", "host", "path"), [
    ("list.txt", None, "list.txt"),
    ("-", None, "-"),
    ("host:lists/a", "host", "lists/a"),
    ("me@host:/a", "me@host", "/a"),
    ("host::mod/a", "host", "mod/a"),
    ("[::1]:a", "::1", "a"),
    ("dir/with:colon", None, "dir/with:colon"),
    ("rsync://host:873/mod/a", "host", "mod/a"),
])
def test_files_from_host_split(value: str, host: str | None, path: str) -> None:
    opts = parse_args([f"--files-from={value}", "src", "dst"])
    assert (opts.files_from, opts.files_from_host, opts.files_from_path) == (value, host, path)


def test_remote_files_from_errors() -> None:
    assert err(["--files-from=h:-", "a", "b"]).message == "Invalid --files-from remote filename"
    e = err(["--server", "--files-from=h:x", ".", "d"])
    assert e.message == "The --files-from sent to the server cannot specify a host."


def test_options_defaults_are_independent() -> None:
    a, b = Options(), Options()
    a.chmod.append("x")
    assert b.chmod == [] and a.info_levels is not b.info_levels
