"""rsync 3.x command-line parsing: popt's syntax plus options.c's semantics.

``parse_args(argv)`` turns a command line (without the program name) into an
:class:`Options`.  The grammar follows popt exactly as rsync uses it: long
options need their full name (no unique-prefix abbreviation), ``--opt=val`` or
``--opt val``, bundled short options where an argument-taking letter eats the
rest of the bundle (``-essh``, ``-e=ssh``) or the next word, ``--`` ends
options, and ``-`` alone is an argument.  After the options are read, the same
consistency checks and implied settings as rsync's parse_arguments() apply.

Help, ``--version`` and ``--info=help`` do not print: they raise
:class:`PrintAndExit` carrying the text, which the CLI writes to stdout.
"""

from __future__ import annotations

import os
import re
import time

from netsync import PROTOCOL_VERSION
from netsync.errors import RERR_SYNTAX, RERR_TIMEOUT, RERR_UNSUPPORTED, RsyncError, UsageError

TYPE_CHECKING = False  # (typing costs ~3 ms at start-up; only the type checker needs it)
if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = [
    "NOT_IMPLEMENTED",
    "OptionError",
    "StopAtLimit",
    "Options",
    "PrintAndExit",
    "apply_process_options",
    "limit_output_verbosity",
    "make_output_option",
    "parse_args",
    "parse_server_args",
    "parse_size_arg",
    "server_flag_string",
    "server_options",
    "split_hostspec",
]

# Canonical long names that parse successfully but that netsync refuses, the
# way an rsync built without a feature refuses it ("This rsync does not
# support --xattrs (-X)").  The lead trims this as features land.
NOT_IMPLEMENTED: set[str] = {
    "crtimes",
}

MAX_BASIS_DIRS = 20
MAX_BLOCK_SIZE = 1 << 17  # protocol >= 30
OLD_MAX_BLOCK_SIZE = 1 << 29
BACKUP_SUFFIX = "~"
_SIZE_MAX_HALF = (1 << 63) - 1  # SIZE_MAX / 2 on a 64-bit build
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1

# Compression numbers as in rsync.h (CPRES_*); the name lists match what a
# stock rsync 3.x built with zstd and lz4 accepts.
CPRES_AUTO, CPRES_NONE, CPRES_ZLIB, CPRES_ZLIBX, CPRES_LZ4, CPRES_ZSTD = -1, 0, 1, 2, 3, 4
COMPRESS_NAMES = {"zstd": CPRES_ZSTD, "lz4": CPRES_LZ4, "zlibx": CPRES_ZLIBX, "zlib": CPRES_ZLIB, "none": CPRES_NONE}
CHECKSUM_NAMES = ("xxh128", "xxh3", "xxh64", "xxhash", "md5", "md4", "sha1", "none")

# The capability letters a stock rsync 3.x client puts after "-e." (minus the
# 'i' for incremental recursion, which depends on the options).
DEFAULT_CLIENT_CAPS = "LsfxCIvu"


class OptionError(UsageError):
    """A command-line error, with presentation hints for the CLI.

    ``bare``: rsync prints this message without its "rsync: " prefix.
    ``show_usage``: rsync prints the full usage text to stderr (``message``
    is then empty) before exiting with ``code``.
    """

    def __init__(self, message: str, code: int = RERR_SYNTAX, *, bare: bool = False,
                 show_usage: bool = False) -> None:
        super().__init__(message, code)
        self.bare = bare
        self.show_usage = show_usage


class PrintAndExit(Exception):
    """Parsing ended in output rather than a run (help, version, --info=help)."""

    def __init__(self, text: str, code: int = 0) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


# --------------------------------------------------------------------------
# info/debug output levels (set_output_verbosity & friends)

_DIGITS = "0123456789"
W_CLI, W_SRV, W_SND, W_REC = 1, 2, 4, 8
DEFAULT_PRIORITY, HELP_PRIORITY, USER_PRIORITY, LIMIT_PRIORITY = 0, 1, 2, 3
MAX_OUT_LEVEL = 4

INFO_WORDS: tuple[tuple[str, int, str], ...] = (
    ("BACKUP", W_REC, "Mention files backed up"),
    ("COPY", W_REC, "Mention files copied locally on the receiving side"),
    ("DEL", W_REC, "Mention deletions on the receiving side"),
    ("FLIST", W_CLI, "Mention file-list receiving/sending (levels 1-2)"),
    ("MISC", W_SND | W_REC, "Mention miscellaneous information (levels 1-2)"),
    ("MOUNT", W_SND | W_REC, "Mention mounts that were found or skipped"),
    ("NAME", W_SND | W_REC, "Mention 1) updated file/dir names, 2) unchanged names"),
    ("NONREG", W_REC, "Mention skipped non-regular files (default 1, 0 disables)"),
    ("PROGRESS", W_CLI, "Mention 1) per-file progress or 2) total transfer progress"),
    ("REMOVE", W_SND, "Mention files removed on the sending side"),
    ("SKIP", W_REC, "Mention files skipped due to transfer overrides (levels 1-2)"),
    ("STATS", W_CLI | W_SRV, "Mention statistics at end of run (levels 1-3)"),
    ("SYMSAFE", W_SND | W_REC, "Mention symlinks that are unsafe"),
)
DEBUG_WORDS: tuple[tuple[str, int, str], ...] = (
    ("ACL", W_SND | W_REC, "Debug extra ACL info"),
    ("BACKUP", W_REC, "Debug backup actions (levels 1-2)"),
    ("BIND", W_CLI, "Debug socket bind actions"),
    ("CHDIR", W_CLI | W_SRV, "Debug when the current directory changes"),
    ("CONNECT", W_CLI, "Debug connection events (levels 1-2)"),
    ("CMD", W_CLI, "Debug commands+options that are issued (levels 1-2)"),
    ("DEL", W_REC, "Debug delete actions (levels 1-3)"),
    ("DELTASUM", W_SND | W_REC, "Debug delta-transfer checksumming (levels 1-4)"),
    ("DUP", W_REC, "Debug weeding of duplicate names"),
    ("EXIT", W_CLI | W_SRV, "Debug exit events (levels 1-3)"),
    ("FILTER", W_SND | W_REC, "Debug filter actions (levels 1-3)"),
    ("FLIST", W_SND | W_REC, "Debug file-list operations (levels 1-4)"),
    ("FUZZY", W_REC, "Debug fuzzy scoring (levels 1-2)"),
    ("GENR", W_REC, "Debug generator functions"),
    ("HASH", W_SND | W_REC, "Debug hashtable code"),
    ("HLINK", W_SND | W_REC, "Debug hard-link actions (levels 1-3)"),
    ("ICONV", W_CLI | W_SRV, "Debug iconv character conversions (levels 1-2)"),
    ("IO", W_CLI | W_SRV, "Debug I/O routines (levels 1-4)"),
    ("NSTR", W_CLI | W_SRV, "Debug negotiation strings"),
    ("OWN", W_REC, "Debug ownership changes in users & groups (levels 1-2)"),
    ("PROTO", W_CLI | W_SRV, "Debug protocol information"),
    ("RECV", W_REC, "Debug receiver functions"),
    ("SEND", W_SND, "Debug sender functions"),
    ("TIME", W_REC, "Debug setting of modified times (levels 1-2)"),
)
# What each -v level adds (index = verbosity level).
INFO_VERBOSITY = ("NONREG", "COPY,DEL,FLIST,MISC,NAME,STATS,SYMSAFE",
                  "BACKUP,MISC2,MOUNT,NAME2,REMOVE,SKIP", None, None, None)
DEBUG_VERBOSITY = (None, None,
                   "BIND,CMD,CONNECT,DEL,DELTASUM,DUP,FILTER,FLIST,ICONV",
                   "ACL,BACKUP,CONNECT2,DELTASUM2,DEL2,EXIT,FILTER2,FLIST2,FUZZY,GENR,OWN,RECV,SEND,TIME",
                   "CMD2,DELTASUM3,DEL3,EXIT2,FLIST3,ICONV2,OWN2,PROTO,TIME2",
                   "CHDIR,DELTASUM4,FLIST4,FUZZY2,HASH,HLINK")
MAX_VERBOSITY = len(DEBUG_VERBOSITY) - 1


class _Levels:
    """One of rsync's info_levels/debug_levels arrays plus per-word priority."""

    def __init__(self, words: tuple[tuple[str, int, str], ...], opt: str) -> None:
        self.words = words
        self.opt = opt  # "--info" or "--debug"
        self.levels = [0] * len(words)
        self.prio = [DEFAULT_PRIORITY] * len(words)

    def reset(self) -> None:
        self.levels = [0] * len(self.words)
        self.prio = [DEFAULT_PRIORITY] * len(self.words)

    def parse(self, text: str | None, priority: int, am_server: bool = False) -> None:
        """rsync's parse_output_words(): "NAME", "NAME2", "ALL", "NONE", "help"."""
        if not text:
            return
        for piece in text.split(","):
            if not piece:
                continue
            n = len(piece)
            if piece[0] not in _DIGITS:
                while n and piece[n - 1] in _DIGITS:
                    n -= 1
            digits = piece[n:]
            lev = int(digits) if digits else 1
            lev = min(lev, MAX_OUT_LEVEL)
            name = piece[:n].lower()
            if name == "help":
                raise PrintAndExit(self.help_text())
            if name == "none":
                name, lev = "", 0
            elif name == "all":
                name = ""
            matched = False
            for j, (word, _where, _help) in enumerate(self.words):
                if not name or name == word.lower():
                    if priority >= self.prio[j]:
                        self.prio[j] = priority
                        self.levels[j] = lev
                    if name:
                        matched = True
                        break
            if name and not matched and not am_server:
                raise OptionError(f'Unknown {self.opt} item: "{piece[:n]}"', bare=True)

    def as_dict(self) -> dict[str, int]:
        return {w[0].lower(): lev for w, lev in zip(self.words, self.levels, strict=True)}

    def make_option(self, where: int) -> str | None:
        """rsync's make_output_option(): the non-implied settings as one option."""
        prefix = self.opt + "="
        counts = [0] * (MAX_OUT_LEVEL + 1)
        skipped = mx = 0
        lev = -1
        any_item = False
        for j, (_word, wh, _h) in enumerate(self.words):
            if not wh & where:
                continue
            if self.prio[j] == DEFAULT_PRIORITY:
                skipped += 1
                continue
            any_item = True
            if self.prio[j] == HELP_PRIORITY:
                continue
            counts[self.levels[j]] += 1
            if counts[self.levels[j]] > mx:
                lev = self.levels[j]
                mx = counts[lev]
        if not any_item:
            return None
        parts: list[str] = []
        if skipped or mx < 5:
            lev = -1
        else:
            parts.append("NONE" if lev == 0 else "ALL" if lev == 1 else f"ALL{lev}")
        for j, (word, wh, _h) in enumerate(self.words):
            if self.prio[j] == DEFAULT_PRIORITY or self.levels[j] == lev or not wh & where:
                continue
            parts.append(word if self.levels[j] == 1 else f"{word}{self.levels[j]}")
        return prefix + ",".join(parts)

    def help_text(self) -> str:
        verbosity = INFO_VERBOSITY if self.opt == "--info" else DEBUG_VERBOSITY
        out = ["Use OPT or OPT1 for level 1 output, OPT2 for level 2, etc.; OPT0 silences.\n", "\n"]
        out += [f"{w:<10} {h}\n" for w, _wh, h in self.words]
        out.append("\n")
        out.append(f"{'ALL':<10} Set all {self.opt} options (e.g. all{MAX_OUT_LEVEL})\n")
        out.append(f"{'NONE':<10} Silence all {self.opt} options (same as all0)\n")
        out.append(f"{'HELP':<10} Output this help message\n")
        out.append("\n")
        out.append("Options added at each level of verbosity:\n")
        scratch = _Levels(self.words, self.opt)
        for j, words in enumerate(verbosity):
            scratch.reset()
            scratch.parse(words, HELP_PRIORITY)
            opt = scratch.make_option(W_CLI | W_SRV | W_SND | W_REC)
            if opt:
                out.append(f"{j}) {opt.split('=', 1)[1]}\n")
        return "".join(out)


# --------------------------------------------------------------------------
# The result


class Options:
    """Every rsync option, named after its long form (dashes -> underscores).

    Booleans are False unless given; a few tri-states use None for "not
    given, let the engine decide" (whole_file, relative, blocking_io).
    Integer-valued flags keep rsync's own encoding where it carries meaning;
    the comment on each says so.
    """

    # Non-option arguments and bookkeeping.
    args: list[str]
    given: list[str]
    filter_args: list[tuple[str, str]]

    # Output.
    verbose: int = 0
    quiet: int = 0
    info: dict[str, int]
    debug: dict[str, int]
    stderr: str = "errors"  # --stderr mode: errors | all | client
    msgs2stderr: int = 2  # rsync's encoding: 2 errors, 1 all, 0 client
    motd: bool = True
    stats: bool = False
    human_readable: int = 1  # rsync's: 1 default, +1 per -h, 0 with --no-h
    itemize_changes: int = 0
    out_format: str | None = None  # --out-format / --log-format as given
    log_file: str | None = None
    log_file_format: str | None = None
    progress: bool = False
    eight_bit_output: bool = False  # --8-bit-output, -8
    outbuf: str | None = None
    list_only: int = 0  # 2 = --list-only given; |1 when implied by a lone source arg

    # What to transfer.
    archive: bool = False
    recursive: bool = False
    prune_empty_dirs: bool = False
    recurse: int = 0  # rsync's: 2 from -r, 1 from -a (files-from drops only 1)
    inc_recursive: bool = True
    dirs: bool = False  # final: directories are transferred (rsync's xfer_dirs != 0)
    xfer_dirs: int = -1  # rsync's: -1 unset, 0 no, 1 yes (implied), 2 -d, 4 --old-dirs
    old_dirs: bool = False
    relative: bool | None = None  # None until files-from decides; False/True after parse
    implied_dirs: bool = True
    mkpath: bool = False
    files_from: str | None = None  # as given
    files_from_host: str | None = None  # "[USER@]HOST" when the list lives remotely
    files_from_path: str | None = None  # the list's path (host part removed)
    from0: bool = False
    existing: bool = False  # also --ignore-non-existing
    ignore_existing: bool = False
    update: bool = False
    max_size: int | None = None
    min_size: int | None = None
    max_alloc: int | None = None
    max_alloc_arg: str | None = None  # as given (rsync forwards the text)
    ignore_missing_args: bool = False
    delete_missing_args: bool = False
    one_file_system: int = 0
    cvs_exclude: bool = False
    size_only: bool = False
    ignore_times: bool = False
    checksum: bool = False
    checksum_choice: str | None = None  # validated; None for auto
    modify_window: int | None = None

    # Attributes.
    links: bool = False
    copy_links: bool = False
    copy_unsafe_links: bool = False
    safe_links: bool = False
    insecure_links: bool = False
    munge_links: bool = False
    copy_dirlinks: bool = False
    keep_dirlinks: bool = False
    hard_links: int = 0
    perms: bool = False
    executability: bool = False
    chmod: list[str]
    acls: bool = False
    xattrs: int = 0
    owner: bool = False
    group: bool = False
    devices: bool = False
    specials: bool = False
    copy_devices: bool = False
    write_devices: bool = False
    drop_D: bool = False
    times: bool = False
    atimes: int = 0
    open_noatime: bool = False
    crtimes: bool = False
    omit_dir_times: int = 0  # rsync's: 1 given, -1 implied by --backup w/o --backup-dir
    omit_link_times: bool = False
    am_root: int = 0  # rsync's: 2 --super, -1 --fake-super, 0 neither
    numeric_ids: bool = False
    usermap: str | None = None
    groupmap: str | None = None
    chown: str | None = None
    confine_root: str | None = None

    # Transfer mechanics.
    whole_file: bool | None = None
    block_size: int = 0
    sparse: bool = False
    preallocate: bool = False
    inplace: bool = False  # final: also set by --append / --write-devices
    append: int = 0  # 1 --append, 2 --append-verify
    partial: bool = False  # final keep_partial (cleared for --inplace, like rsync)
    partial_dir: str | None = None  # final (".~tmp~" implied by --delay-updates)
    delay_updates: bool = False
    temp_dir: str | None = None
    compare_dest: list[str]
    copy_dest: list[str]
    link_dest: list[str]
    fuzzy: int = 0
    compress: bool = False
    do_compression: int = 0  # rsync's CPRES_* number after choice parsing
    compress_choice: str | None = None
    compress_level: int | None = None
    compress_threads: int = 0
    skip_compress: str | None = None
    bwlimit: int = 0  # KiB/s as rsync sends it; 0 = unlimited
    bwlimit_bytes: int = 0  # the parsed byte rate
    timeout: int = 0
    contimeout: int = 0
    checksum_seed: int = 0
    protocol: int = PROTOCOL_VERSION
    stop_after: int | None = None  # minutes
    stop_at: str | None = None
    stop_at_utime: float | None = None
    fsync: bool = False
    dry_run: bool = False
    qsort: bool = False

    # Deletion.
    delete: bool = False  # final delete_mode: any --delete* given (or --delete-excluded)
    delete_mode: str | None = None  # "before"/"during"/"delay"/"after" if one was named
    delete_before: bool = False
    delete_during: int = 0  # rsync's: 1 --delete-during/--del, 2 --delete-delay
    delete_after: bool = False
    delete_excluded: bool = False
    force: bool = False
    ignore_errors: bool = False
    max_delete: int | None = None  # negative values become 0 (no deletions)
    remove_source_files: int = 0  # 1 --remove-source-files, 2 --remove-sent-files

    # Backups.
    backup: bool = False
    backup_dir: str | None = None
    suffix: str = BACKUP_SUFFIX  # final (empty with --backup-dir)

    # Batch (netsync.batch).
    write_batch: str | None = None
    only_write_batch: str | None = None
    server_notice: str | None = None  # said on stderr when the server starts
    read_batch: str | None = None

    # Remote shell / network.
    rsh: str | None = None
    rsync_path: str = "rsync"
    remote_option: list[str]
    old_args: int = 0
    secluded_args: bool = False
    trust_sender: bool = False
    blocking_io: bool | None = None
    iconv: str | None = None
    af_hint: int = 0  # 4 --ipv4, 6 --ipv6, 0 neither
    address: str | None = None
    port: int = 0
    sockopts: str | None = None
    password_file: str | None = None
    early_input: str | None = None
    copy_as: str | None = None

    # Server / daemon.
    server: bool = False
    sender: bool = False
    server_caps: str | None = None  # capability letters from -e.FLAGS in --server mode
    daemon: bool = False
    config: str | None = None
    dparam: list[str]
    detach: bool = True
    daemon_bwlimit: int = 0

    # Derived output settings (rsync computes these in parse_arguments()).
    stdout_format: str | None = None
    log_before_transfer: bool = False
    stdout_format_has_i: int = 0
    stdout_format_has_o_or_i: bool = False
    logfile_format_has_i: bool = False
    logfile_format_has_o_or_i: bool = False

    # Internal: priorities for make_output_option().
    info_levels: _Levels
    debug_levels: _Levels

    def __init__(self) -> None:
        # Fresh containers per instance; everything else is a class-level default.
        self.args = []
        self.given = []
        self.filter_args = []
        self.info = {}
        self.debug = {}
        self.chmod = []
        self.compare_dest = []
        self.copy_dest = []
        self.link_dest = []
        self.remote_option = []
        self.raw_argv: list[str] = []
        self.dparam = []
        self.info_levels = _Levels(INFO_WORDS, "--info")
        self.debug_levels = _Levels(DEBUG_WORDS, "--debug")

    def __repr__(self) -> str:
        changed = {k: v for k, v in vars(self).items()
                   if not k.endswith("_levels") and getattr(type(self), k, None) != v}
        return f"Options({changed!r})"

    @property
    def super(self) -> bool:
        return self.am_root == 2

    @property
    def fake_super(self) -> bool:
        return self.am_root == -1

    @property
    def ipv4(self) -> bool:
        return self.af_hint == 4

    @property
    def ipv6(self) -> bool:
        return self.af_hint == 6

    def settle_protocol(self, protocol: int) -> None:
        """compat.c setup_protocol(): before protocol 30, --append is --append-verify
        (both ends checksum the whole file)."""
        if protocol < 30 and self.append == 1:
            self.append = 2

    def protocol_error(self, protocol: int, local: bool = False) -> str | None:
        """compat.c setup_protocol(): options an older protocol cannot carry (exit 2).
        A local copy's own server (local_server) may keep -A and -X."""
        if protocol < 30 and self.acls and not local:
            return f"--acls requires protocol 30 or higher (negotiated {protocol})."
        if protocol < 30 and self.xattrs and not local:
            return f"--xattrs requires protocol 30 or higher (negotiated {protocol})."
        if protocol >= 29:
            return None
        alt = self.alt_dest
        if self.fuzzy:
            what = "--fuzzy"
        elif alt and self.inplace:
            what = f"--{alt[0]} with --inplace"
        elif alt and len(alt[1]) > 1:
            what = f"Using more than one --{alt[0]} option"
        elif self.prune_empty_dirs:
            what = "--prune-empty-dirs"
        else:
            return None
        return f"{what} requires protocol 29 or higher (negotiated {protocol})."

    @property
    def alt_dest(self) -> tuple[str, list[str]] | None:
        """('compare-dest'|'copy-dest'|'link-dest', dirs), or None."""
        for kind in ("compare_dest", "copy_dest", "link_dest"):
            dirs = getattr(self, kind)
            if dirs:
                return kind.replace("_", "-"), dirs
        return None


# --------------------------------------------------------------------------
# The option table (rsync's long_options[]), in rsync's order.
#
# kind: "set"  no argument, store `val` into `dest`
#       "act"  no argument, handled by _action()
#       "str"  string argument stored into `dest`
#       "int"  popt integer argument stored into `dest`
#       "sact" string argument handled by _action()
#       "iact" integer argument handled by _action()
#       "bit"  no argument, OR `val` into `dest`


class _Opt:
    __slots__ = ("long", "short", "kind", "dest", "val")

    def __init__(self, long: str | None, short: str | None, kind: str, dest: str | None,
                 val: Any) -> None:
        self.long = long
        self.short = short
        self.kind = kind
        self.dest = dest
        self.val = val

    @property
    def takes_arg(self) -> bool:
        return self.kind in ("str", "int", "sact", "iact")


def _o(long: str | None, short: str | None, kind: str, dest: str | None = None, val: Any = True) -> _Opt:
    return _Opt(long, short, kind, dest, val)


_TABLE: tuple[_Opt, ...] = (
    _o("help", None, "act", "help"),
    _o("version", "V", "act", "version"),
    _o("verbose", "v", "act", "v"),
    _o("no-verbose", None, "set", "verbose", 0),
    _o("no-v", None, "set", "verbose", 0),
    _o("info", None, "sact", "info"),
    _o("debug", None, "sact", "debug"),
    _o("stderr", None, "sact", "stderr"),
    _o("msgs2stderr", None, "set", "msgs2stderr", 1),
    _o("no-msgs2stderr", None, "set", "msgs2stderr", 0),
    _o("quiet", "q", "act", "q"),
    _o("motd", None, "set", "motd", True),
    _o("no-motd", None, "set", "motd", False),
    _o("stats", None, "set", "stats", True),
    _o("human-readable", "h", "act", "h"),
    _o("no-human-readable", None, "set", "human_readable", 0),
    _o("no-h", None, "set", "human_readable", 0),
    _o("dry-run", "n", "set", "dry_run", True),
    _o("archive", "a", "act", "a"),
    _o("recursive", "r", "set", "recurse", 2),
    _o("no-recursive", None, "set", "recurse", 0),
    _o("no-r", None, "set", "recurse", 0),
    _o("inc-recursive", None, "set", "inc_recursive", True),
    _o("no-inc-recursive", None, "set", "inc_recursive", False),
    _o("i-r", None, "set", "inc_recursive", True),
    _o("no-i-r", None, "set", "inc_recursive", False),
    _o("dirs", "d", "set", "xfer_dirs", 2),
    _o("no-dirs", None, "set", "xfer_dirs", 0),
    _o("no-d", None, "set", "xfer_dirs", 0),
    _o("old-dirs", None, "set", "xfer_dirs", 4),
    _o("old-d", None, "set", "xfer_dirs", 4),
    _o("perms", "p", "set", "perms", True),
    _o("no-perms", None, "set", "perms", False),
    _o("no-p", None, "set", "perms", False),
    _o("executability", "E", "set", "executability", True),
    _o("acls", "A", "act", "A"),
    _o("no-acls", None, "set", "acls", False),
    _o("no-A", None, "set", "acls", False),
    _o("xattrs", "X", "act", "X"),
    _o("no-xattrs", None, "set", "xattrs", 0),
    _o("no-X", None, "set", "xattrs", 0),
    _o("times", "t", "set", "times", True),
    _o("no-times", None, "set", "times", False),
    _o("no-t", None, "set", "times", False),
    _o("atimes", "U", "act", "U"),
    _o("no-atimes", None, "set", "atimes", 0),
    _o("no-U", None, "set", "atimes", 0),
    _o("open-noatime", None, "set", "open_noatime", True),
    _o("no-open-noatime", None, "set", "open_noatime", False),
    _o("crtimes", "N", "set", "crtimes", True),
    _o("no-crtimes", None, "set", "crtimes", False),
    _o("no-N", None, "set", "crtimes", False),
    _o("omit-dir-times", "O", "set", "omit_dir_times", 1),
    _o("no-omit-dir-times", None, "set", "omit_dir_times", 0),
    _o("no-O", None, "set", "omit_dir_times", 0),
    _o("omit-link-times", "J", "set", "omit_link_times", True),
    _o("no-omit-link-times", None, "set", "omit_link_times", False),
    _o("no-J", None, "set", "omit_link_times", False),
    _o("modify-window", "@", "int", "modify_window"),
    _o("super", None, "set", "am_root", 2),
    _o("no-super", None, "set", "am_root", 0),
    _o("fake-super", None, "set", "am_root", -1),
    _o("owner", "o", "set", "owner", True),
    _o("no-owner", None, "set", "owner", False),
    _o("no-o", None, "set", "owner", False),
    _o("group", "g", "set", "group", True),
    _o("no-group", None, "set", "group", False),
    _o("no-g", None, "set", "group", False),
    _o(None, "D", "act", "D"),
    _o("no-D", None, "act", "no-D"),
    _o("devices", None, "set", "devices", True),
    _o("no-devices", None, "set", "devices", False),
    _o("copy-devices", None, "set", "copy_devices", True),
    _o("write-devices", None, "set", "write_devices", True),
    _o("no-write-devices", None, "set", "write_devices", False),
    _o("specials", None, "set", "specials", True),
    _o("no-specials", None, "set", "specials", False),
    _o("drop-D", None, "set", "drop_D", True),
    _o("no-drop-D", None, "set", "drop_D", False),
    _o("confine-root", None, "str", "confine_root"),
    _o("links", "l", "set", "links", True),
    _o("no-links", None, "set", "links", False),
    _o("no-l", None, "set", "links", False),
    _o("copy-links", "L", "set", "copy_links", True),
    _o("copy-unsafe-links", None, "set", "copy_unsafe_links", True),
    _o("safe-links", None, "set", "safe_links", True),
    _o("insecure-links", None, "set", "insecure_links", True),
    _o("no-insecure-links", None, "set", "insecure_links", False),
    _o("munge-links", None, "set", "munge_links", True),
    _o("no-munge-links", None, "set", "munge_links", False),
    _o("copy-dirlinks", "k", "set", "copy_dirlinks", True),
    _o("keep-dirlinks", "K", "set", "keep_dirlinks", True),
    _o("hard-links", "H", "act", "H"),
    _o("no-hard-links", None, "set", "hard_links", 0),
    _o("no-H", None, "set", "hard_links", 0),
    _o("relative", "R", "set", "relative", True),
    _o("no-relative", None, "set", "relative", False),
    _o("no-R", None, "set", "relative", False),
    _o("implied-dirs", None, "set", "implied_dirs", True),
    _o("no-implied-dirs", None, "set", "implied_dirs", False),
    _o("i-d", None, "set", "implied_dirs", True),
    _o("no-i-d", None, "set", "implied_dirs", False),
    _o("chmod", None, "sact", "chmod"),
    _o("ignore-times", "I", "set", "ignore_times", True),
    _o("size-only", None, "set", "size_only", True),
    _o("one-file-system", "x", "act", "x"),
    _o("no-one-file-system", None, "set", "one_file_system", 0),
    _o("no-x", None, "set", "one_file_system", 0),
    _o("update", "u", "set", "update", True),
    _o("existing", None, "set", "existing", True),
    _o("ignore-non-existing", None, "set", "existing", True),
    _o("ignore-existing", None, "set", "ignore_existing", True),
    _o("max-size", None, "sact", "max-size"),
    _o("min-size", None, "sact", "min-size"),
    _o("max-alloc", None, "str", "max_alloc_arg"),
    _o("sparse", "S", "set", "sparse", True),
    _o("no-sparse", None, "set", "sparse", False),
    _o("no-S", None, "set", "sparse", False),
    _o("preallocate", None, "set", "preallocate", True),
    _o("inplace", None, "set", "inplace", True),
    _o("no-inplace", None, "set", "inplace", False),
    _o("append", None, "act", "append"),
    _o("append-verify", None, "set", "append", 2),
    _o("no-append", None, "set", "append", 0),
    _o("del", None, "set", "delete_during", 1),
    _o("delete", None, "set", "delete", True),
    _o("delete-before", None, "set", "delete_before", True),
    _o("delete-during", None, "set", "delete_during", 1),
    _o("delete-delay", None, "set", "delete_during", 2),
    _o("delete-after", None, "set", "delete_after", True),
    _o("delete-excluded", None, "set", "delete_excluded", True),
    _o("delete-missing-args", None, "bit", "_missing_args", 2),
    _o("ignore-missing-args", None, "bit", "_missing_args", 1),
    _o("remove-sent-files", None, "set", "remove_source_files", 2),
    _o("remove-source-files", None, "set", "remove_source_files", 1),
    _o("force", None, "set", "force", True),
    _o("no-force", None, "set", "force", False),
    _o("ignore-errors", None, "set", "ignore_errors", True),
    _o("no-ignore-errors", None, "set", "ignore_errors", False),
    _o("max-delete", None, "int", "max_delete"),
    _o(None, "F", "act", "F"),
    _o("filter", "f", "sact", "filter"),
    _o("exclude", None, "sact", "exclude"),
    _o("include", None, "sact", "include"),
    _o("exclude-from", None, "sact", "exclude-from"),
    _o("include-from", None, "sact", "include-from"),
    _o("cvs-exclude", "C", "set", "cvs_exclude", True),
    _o("whole-file", "W", "set", "whole_file", True),
    _o("no-whole-file", None, "set", "whole_file", False),
    _o("no-W", None, "set", "whole_file", False),
    _o("checksum", "c", "set", "checksum", True),
    _o("no-checksum", None, "set", "checksum", False),
    _o("no-c", None, "set", "checksum", False),
    _o("checksum-choice", None, "str", "checksum_choice"),
    _o("cc", None, "str", "checksum_choice"),
    _o("block-size", "B", "sact", "block-size"),
    _o("compare-dest", None, "sact", "compare-dest"),
    _o("copy-dest", None, "sact", "copy-dest"),
    _o("link-dest", None, "sact", "link-dest"),
    _o("fuzzy", "y", "act", "y"),
    _o("no-fuzzy", None, "set", "fuzzy", 0),
    _o("no-y", None, "set", "fuzzy", 0),
    _o("compress", "z", "act", "z"),
    _o("old-compress", None, "act", "old-compress"),
    _o("new-compress", None, "act", "new-compress"),
    _o("no-compress", None, "act", "no-compress"),
    _o("no-z", None, "act", "no-compress"),
    _o("compress-choice", None, "str", "compress_choice"),
    _o("zc", None, "str", "compress_choice"),
    _o("skip-compress", None, "str", "skip_compress"),
    _o("compress-level", None, "int", "compress_level"),
    _o("zl", None, "int", "compress_level"),
    _o("compress-threads", None, "int", "compress_threads"),
    _o("zt", None, "int", "compress_threads"),
    _o(None, "P", "act", "P"),
    _o("progress", None, "set", "progress", True),
    _o("no-progress", None, "set", "progress", False),
    _o("partial", None, "set", "partial", True),
    _o("no-partial", None, "set", "partial", False),
    _o("partial-dir", None, "str", "partial_dir"),
    _o("delay-updates", None, "set", "delay_updates", True),
    _o("no-delay-updates", None, "set", "delay_updates", False),
    _o("prune-empty-dirs", "m", "set", "prune_empty_dirs", True),
    _o("no-prune-empty-dirs", None, "set", "prune_empty_dirs", False),
    _o("no-m", None, "set", "prune_empty_dirs", False),
    _o("log-file", None, "str", "log_file"),
    _o("log-file-format", None, "str", "log_file_format"),
    _o("out-format", None, "str", "out_format"),
    _o("log-format", None, "str", "out_format"),
    _o("itemize-changes", "i", "act", "i"),
    _o("no-itemize-changes", None, "set", "itemize_changes", 0),
    _o("no-i", None, "set", "itemize_changes", 0),
    _o("bwlimit", None, "sact", "bwlimit"),
    _o("no-bwlimit", None, "set", "bwlimit", 0),
    _o("backup", "b", "set", "backup", True),
    _o("no-backup", None, "set", "backup", False),
    _o("backup-dir", None, "str", "backup_dir"),
    _o("suffix", None, "str", "_suffix_arg"),
    _o("list-only", None, "set", "list_only", 2),
    _o("read-batch", None, "str", "read_batch"),
    _o("write-batch", None, "str", "write_batch"),
    _o("only-write-batch", None, "str", "only_write_batch"),
    _o("files-from", None, "str", "files_from"),
    _o("from0", "0", "set", "from0", True),
    _o("no-from0", None, "set", "from0", False),
    _o("old-args", None, "act", "old-args"),
    _o("no-old-args", None, "set", "old_args", 0),
    _o("secluded-args", "s", "set", "secluded_args", True),
    _o("no-secluded-args", None, "set", "secluded_args", False),
    _o("protect-args", None, "set", "secluded_args", True),
    _o("no-protect-args", None, "set", "secluded_args", False),
    _o("no-s", None, "set", "secluded_args", False),
    _o("trust-sender", None, "set", "trust_sender", True),
    _o("numeric-ids", None, "set", "numeric_ids", True),
    _o("no-numeric-ids", None, "set", "numeric_ids", False),
    _o("usermap", None, "sact", "usermap"),
    _o("groupmap", None, "sact", "groupmap"),
    _o("chown", None, "sact", "chown"),
    _o("timeout", None, "int", "timeout"),
    _o("no-timeout", None, "set", "timeout", 0),
    _o("contimeout", None, "int", "contimeout"),
    _o("no-contimeout", None, "set", "contimeout", 0),
    _o("fsync", None, "set", "fsync", True),
    _o("stop-after", None, "sact", "stop-after"),
    _o("time-limit", None, "sact", "stop-after"),
    _o("stop-at", None, "sact", "stop-at"),
    _o("rsh", "e", "str", "rsh"),
    _o("rsync-path", None, "str", "rsync_path"),
    _o("temp-dir", "T", "str", "temp_dir"),
    _o("iconv", None, "str", "iconv"),
    _o("no-iconv", None, "set", "iconv", None),
    _o("ipv4", "4", "set", "af_hint", 4),
    _o("ipv6", "6", "set", "af_hint", 6),
    _o("8-bit-output", "8", "set", "eight_bit_output", True),
    _o("no-8-bit-output", None, "set", "eight_bit_output", False),
    _o("no-8", None, "set", "eight_bit_output", False),
    _o("mkpath", None, "set", "mkpath", True),
    _o("no-mkpath", None, "set", "mkpath", False),
    _o("qsort", None, "set", "qsort", True),
    _o("copy-as", None, "str", "copy_as"),
    _o("address", None, "str", "address"),
    _o("port", None, "int", "port"),
    _o("sockopts", None, "str", "sockopts"),
    _o("password-file", None, "str", "password_file"),
    _o("early-input", None, "str", "early_input"),
    _o("blocking-io", None, "set", "blocking_io", True),
    _o("no-blocking-io", None, "set", "blocking_io", False),
    _o("outbuf", None, "str", "outbuf"),
    _o("remote-option", "M", "sact", "M"),
    _o("protocol", None, "int", "protocol"),
    _o("checksum-seed", None, "int", "checksum_seed"),
    _o("server", None, "act", "server"),
    _o("sender", None, "act", "sender"),
    # Any of these switches rsync into daemon-mode parsing.
    _o("config", None, "sact", "daemon"),
    _o("daemon", None, "act", "daemon"),
    _o("dparam", None, "sact", "daemon"),
    _o("detach", None, "act", "daemon"),
    _o("no-detach", None, "act", "daemon"),
)

# rsync's long_daemon_options[].
_DAEMON_TABLE: tuple[_Opt, ...] = (
    _o("address", None, "str", "address"),
    _o("bwlimit", None, "int", "daemon_bwlimit"),
    _o("config", None, "str", "config"),
    _o("daemon", None, "set", "daemon", True),
    _o("dparam", "M", "sact", "dparam"),
    _o("ipv4", "4", "set", "af_hint", 4),
    _o("ipv6", "6", "set", "af_hint", 6),
    _o("detach", None, "set", "detach", True),
    _o("no-detach", None, "set", "detach", False),
    _o("log-file", None, "str", "log_file"),
    _o("log-file-format", None, "str", "log_file_format"),
    _o("port", None, "int", "port"),
    _o("sockopts", None, "str", "sockopts"),
    _o("protocol", None, "int", "protocol"),
    _o("server", None, "set", "server", True),
    _o("temp-dir", "T", "str", "temp_dir"),
    _o("verbose", "v", "act", "v"),
    _o("no-verbose", None, "set", "verbose", 0),
    _o("no-v", None, "set", "verbose", 0),
    _o("help", "h", "act", "daemon-help"),
)

_ALIASES = {
    "i-r": "inc-recursive", "no-i-r": "no-inc-recursive", "old-d": "old-dirs",
    "i-d": "implied-dirs", "no-i-d": "no-implied-dirs", "del": "delete-during",
    "cc": "checksum-choice", "zc": "compress-choice", "zl": "compress-level",
    "zt": "compress-threads", "log-format": "out-format", "time-limit": "stop-after",
    "protect-args": "secluded-args", "no-protect-args": "no-secluded-args",
    "ignore-non-existing": "existing", "no-z": "no-compress",
}
_SHORT_ONLY = {"D": ("devices", "specials"), "no-D": ("no-devices", "no-specials"),
               "P": ("partial", "progress"), "F": ("filter",)}


def _index(table: tuple[_Opt, ...]) -> tuple[dict[str, _Opt], dict[str, _Opt]]:
    return ({o.long: o for o in table if o.long}, {o.short: o for o in table if o.short})


_LONG, _SHORT = _index(_TABLE)
_DLONG, _DSHORT = _index(_DAEMON_TABLE)
_SHORT_TO_LONG = {o.short: o.long for o in _TABLE if o.short and o.long}


def canonical_names(opt: _Opt) -> tuple[str, ...]:
    """The long name(s) an option row stands for, after alias resolution."""
    key = opt.long or opt.short or ""
    if key in _SHORT_ONLY:
        return _SHORT_ONLY[key]
    if key in _ALIASES:
        return (_ALIASES[key],)
    if key.startswith("no-") and len(key) == 4 and key[3] in _SHORT_TO_LONG:
        return ("no-" + _SHORT_TO_LONG[key[3]],)
    return (key,)


def _display_name(opt: _Opt) -> str:
    """How rsync's create_refuse_error() names a row: --long (-s)."""
    if opt.long:
        return f"--{opt.long} (-{opt.short})" if opt.short else f"--{opt.long}"
    return "-" + (opt.short or "")


# --------------------------------------------------------------------------
# Value parsers


def _c_strtoll_full(text: str) -> int | None:
    """strtoll(text, &end, 0) that must consume everything (popt's integer rule).

    Base 0 means "0x" hex and leading-0 octal; leading whitespace and a sign
    are allowed; the empty string is 0.  Returns None on trailing junk.
    """
    s = text.lstrip(" \t\n\v\f\r")
    if s == "" and text == "":
        return 0
    if s == "":
        return None  # strtoll consumed nothing: end == text, which is not empty
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s[:2].lower() == "0x" and len(s) > 2 and s[2] in "0123456789abcdefABCDEF":
        digits, base = s[2:], 16
    elif s.startswith("0"):
        digits, base = s, 8
    else:
        digits, base = s, 10
    try:
        value = int(digits, base) if digits else None
    except ValueError:
        return None
    if value is None or not digits.isascii() or digits.strip() != digits or "_" in digits:
        return None
    value *= sign
    # strtoll saturates; popt then reports the overflow against INT range.
    return max(min(value, (1 << 63) - 1), -(1 << 63))


def _big_num_human(num: int) -> str:
    """do_big_num(num, 3, NULL) for the non-negative limits in size errors."""
    if num >= 1024:
        d = num / 1024
        for unit in "KMGT":
            if d < 1024:
                return f"{d:.2f}{unit}"
            d /= 1024
        return f"{d:.2f}P"
    return str(num)


_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf(?:inity)?|nan)",
                       re.IGNORECASE)


def _strtod_prefix(text: str) -> float:
    """C strtod() of the longest numeric prefix (0.0 when there is none)."""
    m = _FLOAT_RE.match(text)
    return float(m.group(0)) if m else 0.0


def parse_size_arg(arg: str, def_suf: str, opt_name: str, min_value: int = 0,
                   max_value: int = -1, unlimited_0: bool = False) -> int:
    """rsync's parse_size_arg(): "1.5K", "10MB", "2GiB", "1k+1", ...

    Suffix letters B/K/M/G/T/P (any case) scale by 1024, unless followed by
    "B" (1000) or "iB" (1024); a bare number uses `def_suf`.  A trailing
    "+1"/"-1" adjusts the result by one byte.  Raises OptionError with rsync's
    message ("--max-size=5X is invalid") on failure.
    """
    err, limit, min_max = "invalid", -1, ""
    size_max = max_value if max_value >= 0 else _SIZE_MAX_HALF

    def fail() -> OptionError:
        msg = f"--{opt_name}={arg} is {err}"
        if min_max and limit >= 0:
            tail = " or 0 for unlimited" if unlimited_0 and min_max == "min" else ""
            msg += f" ({min_max}: {_big_num_human(limit)}{tail})"
        return OptionError(msg)

    i = 0
    n = len(arg)
    while i < n and arg[i].isdigit() and arg[i].isascii():
        i += 1
    if i < n and arg[i] == ".":
        i += 1
        while i < n and arg[i].isdigit() and arg[i].isascii():
            i += 1
    number = arg[:i]
    if i < n and arg[i] not in "+-":
        suffix = arg[i]
        i += 1
    else:
        suffix = def_suf
    reps = {"b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}.get(suffix.lower())
    if reps is None:
        raise fail()
    if i < n and arg[i] in "bB":
        mult = 1000
        i += 1
    elif i >= n or arg[i] in "+-":
        mult = 1024
    elif arg[i:i + 2].lower() == "ib":
        mult = 1024
        i += 2
    else:
        raise fail()
    size = 1
    for _ in range(reps):
        if size > size_max // mult:
            err, min_max, limit = "too large", "max", max_value
            raise fail()
        size *= mult
    # strtod() reads the whole text: only a leading sign makes that differ from the scan.
    if arg[:1] in ("+", "-"):
        dsize = _strtod_prefix(arg)
    else:
        dsize = float(number) if number not in ("", ".") else 0.0
    if dsize != dsize or dsize < 0 or dsize > size_max / size or (max_value < 0 and dsize >= size_max / size):
        err, min_max, limit = "too large", "max", max_value
        raise fail()
    size = int(dsize * size)
    if i < n and arg[i] in "+-" and arg[i + 1:i + 2] == "1" and i != 0:
        if arg[i] == "+":
            if size == size_max:
                err, min_max, limit = "too large", "max", max_value
                raise fail()
            size += 1
        else:
            size -= 1
        i += 2
    if i < n:
        raise fail()
    if size < 0 or (max_value >= 0 and size > max_value):
        err, min_max, limit = "too large", "max", max_value
        raise fail()
    if size < min_value and (not unlimited_0 or size != 0):
        err, min_max, limit = "too small", "min", min_value
        raise fail()
    return size


def _chmod_valid(modestr: str) -> bool:
    """Syntax check of a --chmod spec, following chmod.c's parse_chmod() states."""
    for clause in modestr.split(","):
        state, where, what, op, topoct, copybits, flags = 1, 0, 0, "", 0, 0, ""
        for ch in clause:
            if state == 1:
                if ch == "D":
                    if "F" in flags:
                        return False
                    flags += "D"
                elif ch == "F":
                    if "D" in flags:
                        return False
                    flags += "F"
                elif ch in "ugoa":
                    where |= {"u": 0o100, "g": 0o010, "o": 0o001, "a": 0o111}[ch]
                elif ch in "+-=":
                    op, state = ch, 2
                elif ch in "01234567" and not where:
                    op, state, what = "#", 3, int(ch)
                else:
                    return False
            elif state == 2:
                if ch in "rwxXst":
                    if copybits:
                        return False
                    if ch in "st":
                        topoct = 1
                    else:
                        what = 1
                elif ch in "ugo":
                    if what or topoct or copybits:
                        return False
                    copybits = 1
                else:
                    return False
            else:
                if ch not in "01234567":
                    return False
                what = what * 8 + int(ch)
                if what > 0o7777:
                    return False
        if not op:
            return False
    return True


def log_format_has(fmt: str | None, esc: str) -> bool:
    """rsync's log_format_has(): does the format use the %-escape `esc`?"""
    if not fmt:
        return False
    i, n = 0, len(fmt)
    while True:
        i = fmt.find("%", i)
        if i < 0:
            return False
        i += 1
        while i < n and fmt[i] == "'":
            i += 1
        width = 1
        if i < n and fmt[i] == "-":
            i += 1
            width += 1
        while i < n and fmt[i].isdigit() and width < 24:
            i += 1
            width += 1
        while i < n and fmt[i] == "'":
            i += 1
        if i >= n:
            return False
        if fmt[i] == esc:
            return True
        if fmt[i] == "%":
            i += 1


def _check_csum_name(name: str) -> None:
    if name and (name.lower() == "auto" or name.lower() in CHECKSUM_NAMES):
        return
    raise OptionError(f"unknown checksum name: {name}", RERR_UNSUPPORTED, bare=True)


# --------------------------------------------------------------------------
# The parser


class _Parser:
    def __init__(self, argv: list[str], am_server: bool) -> None:
        self.argv = argv
        self.o = Options()
        self.o.server = am_server
        self.am_server = am_server
        self.version_cnt = 0
        self.f_cnt = 0
        self.alt_dest_type: str | None = None
        self.usermap_via_chown = self.groupmap_via_chown = False
        self.missing_args = 0
        self.suffix_arg: str | None = None

    # -- popt-level scanning ------------------------------------------------

    def run(self, long_tab: dict[str, _Opt], short_tab: dict[str, _Opt]) -> None:
        argv = self.argv
        i = 0
        rest = False
        while i < len(argv):
            word = argv[i]
            i += 1
            if rest or not word.startswith("-") or word == "-":
                self.o.args.append(word)
                continue
            if word == "--":
                rest = True
                continue
            if word.startswith("--"):
                name, eq, value = word[2:].partition("=")
                opt = long_tab.get(name)
                if opt is None:
                    self._popt_error(word, "unknown option")
                if not opt.takes_arg:
                    if eq:
                        self._popt_error(word, "option does not take an argument")
                    self._apply(opt, None, word)
                    continue
                if not eq:
                    if i >= len(argv):
                        self._popt_error(word, "missing argument")
                    value = argv[i]
                    i += 1
                    word = value  # popt's poptBadOption() names the last word read
                self._apply(opt, value, word)
                continue
            # A bundle of short options.
            j = 1
            while j < len(word):
                opt = short_tab.get(word[j])
                if opt is None:
                    self._popt_error(word, "unknown option")
                j += 1
                tail = word[j:]
                if not opt.takes_arg:
                    if tail.startswith("="):
                        self._popt_error(word, "option does not take an argument")
                    self._apply(opt, None, word)
                    continue
                bad = word
                if tail:
                    value = tail[1:] if tail[0] == "=" else tail
                else:
                    if i >= len(argv):
                        self._popt_error(word, "missing argument")
                    value = argv[i]
                    i += 1
                    bad = value
                self._apply(opt, value, bad)
                break

    def _popt_error(self, bad: str, what: str) -> NoReturn:
        prefix = "on remote machine: " if self.am_server else ""
        raise OptionError(f"{prefix}{bad}: {what}")

    def _apply(self, opt: _Opt, value: str | None, bad: str) -> None:
        o = self.o
        for name in canonical_names(opt):
            if name not in o.given:
                o.given.append(name)
        if opt.kind != "act" or opt.dest not in ("server", "daemon"):
            self._check_refused(opt)
        kind = opt.kind
        if kind == "set":
            setattr(o, opt.dest, opt.val)
        elif kind == "bit":
            self.missing_args |= opt.val
        elif kind == "str":
            assert value is not None
            if opt.dest == "_suffix_arg":
                self.suffix_arg = value
            else:
                setattr(o, opt.dest, value)
        elif kind == "int":
            assert value is not None
            num = _c_strtoll_full(value)
            if num is None:
                self._popt_error(bad, "invalid numeric value")
            if num < _INT_MIN or num > _INT_MAX:
                self._popt_error(bad, "number too large or too small")
            setattr(o, opt.dest, num)
        else:
            self._action(opt.dest or "", value)

    def _check_refused(self, opt: _Opt) -> None:
        names = canonical_names(opt)
        if any(n in NOT_IMPLEMENTED for n in names):
            who = "The server does not support" if self.am_server else "This netsync does not support"
            raise OptionError(f"{who} {_display_name(opt)}")

    # -- options.c's switch ---------------------------------------------------

    def _action(self, key: str, arg: str | None) -> None:
        o = self.o
        if key == "help":
            from netsync.helptext import usage_text
            raise PrintAndExit(usage_text())
        if key == "daemon-help":
            from netsync.helptext import daemon_usage_text
            raise PrintAndExit(daemon_usage_text())
        if key == "version":
            self.version_cnt += 1
        elif key == "v":
            o.verbose += 1
        elif key == "q":
            o.quiet += 1
        elif key == "h":
            o.human_readable += 1
        elif key == "i":
            o.itemize_changes += 1
        elif key == "x":
            o.one_file_system += 1
        elif key == "H":
            o.hard_links += 1
        elif key == "y":
            o.fuzzy += 1
        elif key == "z":
            o.do_compression += 1
        elif key == "X":
            o.xattrs += 1
        elif key == "A":
            o.acls = True
            o.perms = True
        elif key == "U":
            o.atimes += 1
            if o.atimes > 1:
                o.open_noatime = True
        elif key == "a":
            o.archive = True
            if not o.recurse:  # keep -r's 2
                o.recurse = 1
            o.links = o.perms = o.times = o.group = o.owner = True
            o.devices = o.specials = True
        elif key == "D":
            o.devices = o.specials = True
        elif key == "no-D":
            o.devices = o.specials = False
        elif key == "P":
            o.progress = True
            o.partial = True
        elif key == "F":
            self.f_cnt += 1
            if self.f_cnt == 1:
                o.filter_args.append(("filter", ": /.rsync-filter"))
            elif self.f_cnt == 2:
                o.filter_args.append(("filter", "- .rsync-filter"))
        elif key in ("filter", "exclude", "include", "exclude-from", "include-from"):
            assert arg is not None
            o.filter_args.append((key, arg))
        elif key == "old-compress":
            o.compress_choice = "zlib"
        elif key == "new-compress":
            o.compress_choice = "zlibx"
        elif key == "no-compress":
            o.do_compression = 0
            o.compress_choice = None
        elif key == "old-args":
            o.old_args = 1 if o.old_args <= 0 else o.old_args + 1
        elif key == "M":
            assert arg is not None
            if not arg.startswith("-"):
                raise OptionError(f"Remote option must start with a dash: {arg}")
            o.remote_option.append(arg)
        elif key == "append":
            o.append = o.append + 1 if self.am_server else 1
        elif key == "block-size":
            assert arg is not None
            limit = OLD_MAX_BLOCK_SIZE if o.protocol < 30 else MAX_BLOCK_SIZE
            o.block_size = parse_size_arg(arg, "b", "block-size", 0, limit)
        elif key == "max-size":
            assert arg is not None
            o.max_size = parse_size_arg(arg, "b", "max-size")
        elif key == "min-size":
            assert arg is not None
            o.min_size = parse_size_arg(arg, "b", "min-size")
        elif key == "bwlimit":
            assert arg is not None
            size = parse_size_arg(arg, "K", "bwlimit", 512, -1, True)
            o.bwlimit_bytes = size
            o.bwlimit = (size + 512) // 1024
        elif key in ("compare-dest", "copy-dest", "link-dest"):
            assert arg is not None
            if self.alt_dest_type and self.alt_dest_type != key:
                raise OptionError(f"ERROR: the --{key} option conflicts with the "
                                  f"--{self.alt_dest_type} option")
            self.alt_dest_type = key
            dirs: list[str] = getattr(o, key.replace("-", "_"))
            if len(dirs) >= MAX_BASIS_DIRS:
                raise OptionError(f"ERROR: at most {MAX_BASIS_DIRS} --{key} args may be specified")
            dirs.append(arg)
        elif key == "chmod":
            assert arg is not None
            if not _chmod_valid(arg):
                raise OptionError(f"Invalid argument passed to --chmod ({arg})")
            o.chmod.append(arg)
        elif key == "info":
            o.info_levels.parse(arg, USER_PRIORITY, self.am_server)
        elif key == "debug":
            o.debug_levels.parse(arg, USER_PRIORITY, self.am_server)
        elif key == "usermap":
            assert arg is not None
            if o.usermap is not None:
                if self.usermap_via_chown:
                    raise OptionError("--usermap conflicts with prior --chown.")
                raise OptionError("You can only specify --usermap once.")
            o.usermap, self.usermap_via_chown, o.owner = arg, False, True
        elif key == "groupmap":
            assert arg is not None
            if o.groupmap is not None:
                if self.groupmap_via_chown:
                    raise OptionError("--groupmap conflicts with prior --chown.")
                raise OptionError("You can only specify --groupmap once.")
            o.groupmap, self.groupmap_via_chown, o.group = arg, False, True
        elif key == "chown":
            assert arg is not None
            o.chown = arg
            user, colon, grp = arg.partition(":")
            if user:
                if o.usermap is not None:
                    if not self.usermap_via_chown:
                        raise OptionError("--chown conflicts with prior --usermap.")
                    raise OptionError("You can only specify a user-affecting --chown once.")
                o.usermap, self.usermap_via_chown, o.owner = f"*:{user}", True, True
            if colon and grp:
                if o.groupmap is not None:
                    if not self.groupmap_via_chown:
                        raise OptionError("--chown conflicts with prior --groupmap.")
                    raise OptionError("You can only specify a group-affecting --chown once.")
                o.groupmap, self.groupmap_via_chown, o.group = f"*:{grp}", True, True
        elif key == "stop-after":
            assert arg is not None
            minutes = _atol(arg)
            now = int(time.time())
            if minutes * 60 <= 0 or minutes * 60 > _SIZE_MAX_HALF - now:
                raise OptionError(f"invalid --stop-after value: {arg}")
            o.stop_after = minutes
            o.stop_at_utime = now + minutes * 60
        elif key == "stop-at":
            assert arg is not None
            when = _parse_time(arg)
            if when is None:
                raise OptionError(f"invalid --stop-at format: {arg}")
            if when <= int(time.time()):
                raise OptionError(f"--stop-at time is not in the future: {arg}")
            o.stop_at = arg
            o.stop_at_utime = when
        elif key == "stderr":
            assert arg is not None
            for mode, num in (("errors", 2), ("all", 1), ("client", 0)):
                if arg and mode.startswith(arg):
                    o.stderr, o.msgs2stderr = mode, num
                    break
            else:
                raise OptionError(f'--stderr mode "{arg}" is not one of errors, all, or client')
        elif key == "server":
            if not self.am_server:
                raise _Restart("server")
            o.iconv = None
        elif key == "daemon":
            raise _Restart("daemon")
        elif key == "dparam":
            assert arg is not None
            o.dparam.append(arg)
        elif key == "sender":
            if not self.am_server:
                raise OptionError("", show_usage=True)
            o.sender = True
        else:  # pragma: no cover - every "act"/"sact" key is handled above
            raise AssertionError(key)


def _parse_time(arg: str) -> int | None:
    """options.c parse_time(): --stop-at's [y-]m-dTh:m, h:m, :m or a date (local time).

    A part left out is filled from today and, if that lands in the past, the
    next such day/month/year (or hour, for ":m") is taken.  None: malformed.
    """
    now = int(time.time())
    today = time.localtime(now)
    year = mon = mday = hour = minute = -1
    i, end = 0, len(arg)
    if arg[:1] in ("T", "t", ":") and arg:
        in_date = 0 if arg[0] == ":" else -1
        i = 1
    else:
        in_date = 1

    def digit(k: int) -> bool:
        return k < end and "0" <= arg[k] <= "9"

    while True:
        if not digit(i):
            return None
        n = 0
        while digit(i):
            n = n * 10 + ord(arg[i]) - 48
            i += 1
        c = arg[i] if i < end else ""
        if c == ":":
            in_date = 0
        if in_date > 0:
            if year != -1:
                return None
            year, mon, mday = mon, mday, n
            if not c:
                break
            if c in ("T", "t"):
                if i + 1 >= end:
                    break
                in_date = -1
            elif c not in ("-", "/"):
                return None
            i += 1
            continue
        if hour != -1:
            return None
        hour, minute = minute, n
        if not c:
            if in_date < 0:
                return None
            break
        if c != ":":
            return None
        in_date = 0
        i += 1
    # struct tm style from here: years since 1900, months from 0.
    in_date = 0
    if year < 0:
        year, in_date = today.tm_year - 1900, 1
    elif year < 100:
        while year < today.tm_year - 1900:
            year += 100
    else:
        year -= 1900
    if mon < 0:
        mon, in_date = today.tm_mon - 1, 2
    else:
        mon -= 1
    if mday < 0:
        mday, in_date = today.tm_mday, 3
    step = 0
    if minute < 0:
        hour = minute = 0
    elif hour < 0:
        if in_date != 3:
            return None
        in_date, hour, step = 0, today.tm_hour, 3600
    old_mday = mday
    if hour > 23 or minute > 59 or not 0 <= mon < 12 or not 1 <= mday <= 31:
        return None

    def mktime(y: int, mo: int, d: int) -> tuple[int, tuple[int, int, int]] | None:
        try:
            v = int(time.mktime((y + 1900, mo + 1, d, hour, minute, 0, 0, 0, -1)))
        except (OverflowError, ValueError):
            return None
        lt = time.localtime(v)  # mktime()'s normalised struct tm
        return v, (lt.tm_year - 1900, lt.tm_mon - 1, lt.tm_mday)

    got = mktime(year, mon, mday)
    if got is None:
        return None
    val, (year, mon, mday) = got
    while in_date and (val <= now or mday < old_mday):
        if in_date == 3:
            mday += 1
            old_mday = mday
        elif in_date == 2:
            if mday < old_mday:
                mday = old_mday  # the month already got bumped forward
            else:
                mon += 1
                if mon == 12:
                    mon, year = 0, year + 1
        else:
            if mday < old_mday:
                if mon != 2 or old_mday != 29:  # only Feb 29 may roll into March
                    return None
                mon, mday = 1, 29
            year += 1
        got = mktime(year, mon, mday)
        if got is None:
            if in_date != 3 or mday <= 28:
                return None
            mday = old_mday = 1
            in_date = 2
            continue
        val, (year, mon, mday) = got
    if step:
        while val <= now:
            val += step
    return val


def _atol(text: str) -> int:
    """C's atol(): leading whitespace, optional sign, digits; junk ends it."""
    s = text.lstrip(" \t\n\v\f\r")
    j = 1 if s[:1] in ("+", "-") else 0
    while j < len(s) and s[j].isdigit() and s[j].isascii():
        j += 1
    try:
        return int(s[:j])
    except ValueError:
        return 0


def _set_output_verbosity(o: Options, level: int, priority: int) -> None:
    level = min(level, MAX_VERBOSITY)
    for j in range(level + 1):
        o.info_levels.parse(INFO_VERBOSITY[j], priority)
        o.debug_levels.parse(DEBUG_VERBOSITY[j], priority)


def limit_output_verbosity(opts: Options, level: int) -> None:
    """Cap info/debug levels at what -v x `level` gives (a daemon's "max verbosity")."""
    if level > MAX_VERBOSITY:
        return
    info = _Levels(INFO_WORDS, "--info")
    dbg = _Levels(DEBUG_WORDS, "--debug")
    for j in range(level + 1):
        info.parse(INFO_VERBOSITY[j], LIMIT_PRIORITY)
        dbg.parse(DEBUG_VERBOSITY[j], LIMIT_PRIORITY)
    for mine, lim in ((opts.info_levels, info), (opts.debug_levels, dbg)):
        mine.levels = [min(a, b) for a, b in zip(mine.levels, lim.levels, strict=True)]
    opts.info = opts.info_levels.as_dict()
    opts.debug = opts.debug_levels.as_dict()


def make_output_option(opts: Options, which: str, where: int) -> str | None:
    """The --info=... / --debug=... string rsync forwards to the other side."""
    levels = opts.info_levels if which == "info" else opts.debug_levels
    return levels.make_option(where)


def parse_args(argv: list[str]) -> Options:
    """Parse an rsync-style command line (argv without the program name)."""
    am_server = False
    while True:
        p = _Parser(list(argv), am_server)
        try:
            p.run(_LONG, _SHORT)
            break
        except _Restart as restart:
            if restart.mode == "daemon":  # also "--server --daemon" (daemon over a remote shell)
                return _parse_daemon(list(argv))
            am_server = True
    opts = _finish(p, len(argv))
    opts.raw_argv = list(argv)  # batch.c write_batch_shell_file() rebuilds the command
    if not opts.args and opts.server and not opts.secluded_args:
        # main.c: nothing to copy means print the usage to stderr, exit 1 (a client
        # checks this after reading its filter files: cli.run_client()).
        raise OptionError("", show_usage=True)
    return opts


class _Restart(Exception):
    """--server or a daemon option: rsync re-parses the whole line in that mode."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.mode = mode


def _parse_daemon(argv: list[str]) -> Options:
    p = _Parser(argv, am_server=False)
    hint = '\n(Type "netsync --daemon --help" for assistance with daemon mode.)'
    try:
        p.run(_DLONG, _DSHORT)
    except OptionError as e:
        if e.show_usage or e.bare:
            raise
        raise OptionError(f"{e.message} (in daemon mode){hint}") from None
    o = p.o
    for item in o.dparam:
        if "=" not in item:
            raise OptionError(f"--dparam value is missing an '=': {item}{hint}", bare=True)
    if not o.daemon:
        raise OptionError(f"Daemon option(s) used without --daemon.{hint}", bare=True)
    o.info = o.info_levels.as_dict()
    o.debug = o.debug_levels.as_dict()
    return o


def parse_server_args(argv: list[str]) -> Options:
    """Parse what an rsync client runs remotely: ``--server [--sender] -flags . paths``.

    ``argv`` excludes the program name.  In server mode the ``-e`` value is
    the client's capability string (".iLsfxCIvu", or "32.0iLsfx..." for a
    pre-release protocol); its letters are stored in ``opts.server_caps``.
    """
    return parse_args(argv)


def _finish(p: _Parser, argc: int) -> Options:
    """The checks and implications after rsync's popt loop."""
    o = p.o
    am_server = p.am_server

    if p.version_cnt:
        from netsync.helptext import version_json, version_text
        raise PrintAndExit(version_json() if p.version_cnt > 1 and not am_server else version_text())

    max_alloc_arg = o.max_alloc_arg
    if max_alloc_arg is None:
        max_alloc_arg = o.max_alloc_arg = os.environ.get("RSYNC_MAX_ALLOC") or None
    if max_alloc_arg is not None:
        size = parse_size_arg(max_alloc_arg, "B", "max-alloc", 1024 * 1024, -1, True)
        if size == 0:
            raise OptionError("max-alloc must be greater than zero")
        o.max_alloc = size

    if not am_server and "iconv" not in o.given and "no-iconv" not in o.given:
        o.iconv = os.environ.get("RSYNC_ICONV") or None  # options.c: the default

    if "old-args" not in o.given and "no-old-args" not in o.given:
        # options.c: RSYNC_OLD_ARGS counts when neither --[no-]old-args nor -s was given.
        env = os.environ.get("RSYNC_OLD_ARGS")
        o.old_args = _atol(env) if env and not am_server and not o.secluded_args else 0
    elif o.old_args:
        if o.secluded_args:
            raise OptionError("--secluded-args conflicts with --old-args.")
        o.secluded_args = False

    if o.checksum_choice and o.checksum_choice.lower() not in ("auto", "auto,auto"):
        xfer, comma, filesum = o.checksum_choice.partition(",")
        _check_csum_name(xfer)
        if comma:
            _check_csum_name(filesum)
        if xfer.lower() == "none":
            o.whole_file = True
    else:
        o.checksum_choice = None

    if o.human_readable > 1 and argc == 1 and not am_server:
        from netsync.helptext import usage_text
        raise PrintAndExit(usage_text())

    if not o.compress_choice and o.do_compression > 1:
        o.compress_choice = "zlibx"
    if o.compress_choice and o.compress_choice.lower() != "auto":
        num = COMPRESS_NAMES.get(o.compress_choice.lower())
        if num is None:
            raise OptionError(f"unknown compress name: {o.compress_choice}", RERR_UNSUPPORTED,
                              bare=True)
        o.do_compression = num
        if num == CPRES_NONE:
            o.compress_choice = None
    else:
        o.compress_choice = None
    if o.do_compression or o.compress_level is not None:
        if not o.do_compression:
            o.do_compression = CPRES_AUTO
        o.compress_threads = max(o.compress_threads, 0)
    o.compress = o.do_compression != CPRES_NONE

    if o.outbuf is not None and not am_server:
        if o.outbuf[:1].upper() not in ("N", "U", "L", "B", "F") or not o.outbuf:
            raise OptionError("Invalid --outbuf setting -- specify N, L, or B.")

    _set_output_verbosity(o, o.verbose, DEFAULT_PRIORITY)
    if o.stats:
        o.info_levels.parse("stats3" if o.verbose > 1 else "stats2", DEFAULT_PRIORITY)

    if o.iconv is not None and not am_server and o.iconv == "-":
        o.iconv = None

    if o.fuzzy > 1:
        o.fuzzy = len(o.compare_dest or o.copy_dest or o.link_dest) + 1

    if o.am_root < 0 and o.xattrs > 1:
        raise OptionError("--fake-super conflicts with -XX")

    write_batch = 1 if o.write_batch is not None else -1 if o.only_write_batch is not None else 0
    if write_batch and o.read_batch is not None:
        raise OptionError("--write-batch and --read-batch can not be used together")
    if o.read_batch is not None and o.files_from is not None:
        raise OptionError("--read-batch cannot be used with --files-from")
    if o.read_batch is not None and o.remove_source_files:
        kind = "source" if o.remove_source_files == 1 else "sent"
        raise OptionError(f"--read-batch cannot be used with --remove-{kind}-files")
    if am_server and (o.write_batch is not None or o.read_batch is not None):
        # options.c: an old client may send them; the server goes on without.
        o.server_notice = (f"ignoring --{'write' if o.write_batch is not None else 'read'}"
                           "-batch option sent to server")
        o.write_batch = o.read_batch = None
    if am_server and o.only_write_batch is not None:
        # options.c: -n drops it; main.c: else a dry run whose generator still asks for
        # the files (do_xfers stays 1) -- their data goes to the client's batch alone.
        # A client never sends it to a sender, whose data must reach the wire.
        if o.dry_run or o.sender:
            o.only_write_batch = None
        else:
            o.dry_run = True
    batch_name = o.write_batch or o.only_write_batch or o.read_batch
    if batch_name and len(batch_name) > 256:
        raise OptionError("the batch-file name must be 256 characters or less.")
    if o.temp_dir is not None and len(o.temp_dir.encode()) >= 4096 - 10:
        raise OptionError("the --temp-dir path is WAY too long.")

    if o.max_delete is not None and o.max_delete < 0 and o.max_delete != _INT_MIN:
        o.max_delete = 0  # negative means "no deletions"

    if o.files_from is not None:
        if o.recurse == 1:  # -a's implied -r goes; an explicit -r stays
            o.recurse = 0
        if o.xfer_dirs < 0:
            o.xfer_dirs = 1

    nargs = len(o.args)
    if nargs < 2 and o.read_batch is None and not am_server:
        o.list_only |= 1

    if o.xfer_dirs >= 4:
        o.old_dirs = True
        o.filter_args.append(("filter", "- /*/*"))
        o.recurse = o.xfer_dirs = 1
    elif o.recurse:
        o.xfer_dirs = 1
    elif o.xfer_dirs < 0:
        o.xfer_dirs = 1 if o.list_only else 0
    o.recursive = bool(o.recurse)
    o.dirs = bool(o.xfer_dirs)

    if o.relative is None:
        o.relative = o.files_from is not None
    if not o.relative:
        o.implied_dirs = False

    whens = int(o.delete_before) + int(bool(o.delete_during)) + int(o.delete_after)
    if whens > 1:
        raise OptionError("You may not combine multiple --delete-WHEN options.")
    if o.delete_before:
        o.delete_mode = "before"
    elif o.delete_during == 2:
        o.delete_mode = "delay"
    elif o.delete_during:
        o.delete_mode = "during"
    elif o.delete_after:
        o.delete_mode = "after"
    o.delete = bool(whens or o.delete or o.delete_excluded)
    if not o.xfer_dirs and o.delete:
        raise OptionError("--delete does not work without --recursive (-r) or --dirs (-d).")

    if p.missing_args == 3:
        p.missing_args = 2
    o.delete_missing_args = p.missing_args == 2
    o.ignore_missing_args = p.missing_args == 1

    if o.confine_root is not None:
        if not o.confine_root.startswith("/"):
            raise OptionError("--confine-root must be an absolute path")
        if o.insecure_links:
            raise OptionError("--insecure-links cannot be combined with --confine-root")

    # Backup suffix and directory.
    if p.suffix_arg is not None:
        o.suffix = p.suffix_arg
    else:
        o.suffix = "" if o.backup_dir is not None else BACKUP_SUFFIX
    if "/" in o.suffix:
        raise OptionError(f"--suffix cannot contain slashes: {o.suffix}")
    backup_dir_same_as_dest = False
    if o.backup_dir is not None:
        o.backup = True
        bdir = o.backup_dir
        while bdir.startswith("./"):
            bdir = bdir[2:]
        if bdir == ".":
            bdir = ""
        if len(bdir.encode()) > 4096 - 128:
            raise OptionError("the --backup-dir path is WAY too long.")
        if not bdir:
            backup_dir_same_as_dest = True
            o.backup_dir = None
        else:
            o.backup_dir = bdir  # rsync adds the trailing '/' only to its private buffer
    if o.backup_dir is not None:
        pass
    elif not o.suffix and (not am_server or not o.sender):
        how = ("when --backup-dir is the same as the dest dir" if backup_dir_same_as_dest
               else "without a --backup-dir")
        raise OptionError(f"--suffix cannot be empty {how}")
    elif o.backup and o.delete and not o.delete_excluded and not am_server:
        o.filter_args.append(("filter", f"P *{o.suffix}"))
    if o.backup and o.backup_dir is None:
        o.omit_dir_times = -1  # implied, so not sent to the server as -O

    # Output formats (log.c's view of them).
    if o.out_format is not None:
        o.stdout_format = o.out_format
        if am_server and log_format_has(o.out_format, "I"):
            o.stdout_format_has_i = 2
        elif log_format_has(o.out_format, "i"):
            o.stdout_format_has_i = o.itemize_changes | 1
        if not any(log_format_has(o.out_format, c) for c in "bcC"):
            o.log_before_transfer = not am_server
    elif o.itemize_changes:
        o.stdout_format = "%i %n%L"
        o.stdout_format_has_i = o.itemize_changes
        o.log_before_transfer = not am_server

    if o.progress and not am_server:
        name = [w[0] for w in INFO_WORDS].index("NAME")
        if not o.log_before_transfer and o.info_levels.levels[name] == 0:
            o.info_levels.parse("name", DEFAULT_PRIORITY)
        o.info_levels.parse("FLIST2,PROGRESS", DEFAULT_PRIORITY)

    o.info = o.info_levels.as_dict()
    o.debug = o.debug_levels.as_dict()

    if o.info["name"] >= 1 and o.stdout_format is None:
        o.stdout_format = "%n%L"
        o.log_before_transfer = not am_server
    o.stdout_format_has_o_or_i = bool(o.stdout_format_has_i or log_format_has(o.stdout_format, "o"))

    if o.log_file is not None:
        if o.log_file_format is None:
            o.log_file_format = "%i %n%L"
            o.logfile_format_has_i = o.logfile_format_has_o_or_i = True
        else:
            o.logfile_format_has_i = log_format_has(o.log_file_format, "i")
            o.logfile_format_has_o_or_i = (o.logfile_format_has_i
                                           or log_format_has(o.log_file_format, "o"))
    else:
        o.log_file_format = None

    if o.append:
        if o.whole_file:
            raise OptionError("--append cannot be used with --whole-file")
        o.inplace = True
    if o.write_devices:
        o.inplace = True

    if o.delay_updates and o.partial_dir is None:
        o.partial_dir = ".~tmp~"

    if o.inplace:
        if o.partial_dir is not None:
            first = "append" if o.append else "inplace"
            second = "delay-updates" if o.delay_updates else "partial-dir"
            raise OptionError(f"--{first} cannot be used with --{second}")
        o.partial = False
    else:
        if o.partial and o.partial_dir is None and not am_server:
            env = os.environ.get("RSYNC_PARTIAL_DIR")
            if env:
                o.partial_dir = env
        if o.partial_dir is not None:
            cleaned = _clean_fname(o.partial_dir)
            o.partial_dir = None if cleaned in ("", ".") else cleaned
            if o.partial_dir is not None:
                o.partial = True

    if o.files_from is not None:
        if nargs > 2 or (not am_server and nargs == 1):
            raise OptionError("", show_usage=True)
        hostspec = split_hostspec(o.files_from) if o.files_from != "-" else None
        if hostspec:
            if am_server:
                raise OptionError("The --files-from sent to the server cannot specify a host.")
            o.files_from_host, o.files_from_path = hostspec
            if o.files_from_path == "-":
                raise OptionError("Invalid --files-from remote filename")
        else:
            o.files_from_path = o.files_from

    if o.server and o.rsh is not None:
        o.server_caps = _caps_letters(o.rsh)

    return o


def apply_process_options(opts: Options) -> None:
    """Set what rsync keeps in globals every role of this process reads.

    Called once the options are final: by the CLI after parsing, and by the
    server after a daemon module had its say ("open noatime").
    """
    from netsync import metadata, receiver, sender

    metadata.fake_super = opts.am_root < 0
    metadata.recv_fake_super = None
    if not (opts.server or opts.daemon) and len(opts.args) > 1 \
            and not any(split_hostspec(a) for a in opts.args):
        # A local copy: rsync's forked receiver also parses the -M options.
        for ro in opts.remote_option:
            if ro in ("--super", "--no-super", "--fake-super"):
                metadata.recv_fake_super = ro == "--fake-super"
        if opts.copy_as is not None:
            copy_as(opts.copy_as, "sender")
    # --munge-links: a sending process unmunges the links it reads (a daemon module's
    # "munge symlinks" sets the option too); a receiver munges (generator.py).
    sender.unmunge_links = bool(opts.munge_links)
    sender.open_noatime = bool(opts.open_noatime)
    sender.copy_devices = bool(opts.copy_devices)
    receiver.do_fsync = bool(opts.fsync)
    receiver.preallocate = bool(opts.preallocate)
    receiver.write_devices = bool(opts.write_devices)
    if opts.stop_at_utime:
        _arm_stop_at(opts.stop_at_utime)


def copy_as(spec: str, role: str) -> None:
    """--copy-as: become USER[:GROUP] (both sides of a local copy do, before any
    file is touched); a failure ends the run as rsync's does (exit 1)."""
    from netsync import metadata

    failed = metadata.become_copy_as_user(spec)
    if failed is None:
        return
    text, bare = failed
    from netsync.errors import print_error, print_exit_line

    print_error(text if bare else f"netsync: [{role}] {text}")
    print_exit_line(RERR_SYNTAX)
    raise SystemExit(RERR_SYNTAX)


class StopAtLimit(RsyncError):
    """--stop-after / --stop-at: the time is up (io.c: exit_cleanup(RERR_TIMEOUT))."""


def _arm_stop_at(when: float) -> None:
    import signal
    import sys

    def stop(_sig: int, _frame: object) -> None:
        # io.c prints this bare (no "rsync:" prefix) before the exit line.
        sys.stdout.flush()
        sys.stderr.write("stopping at requested limit\n")
        sys.stderr.flush()
        raise StopAtLimit(RERR_TIMEOUT, None)

    signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(when - time.time(), 0.001))


def _caps_letters(value: str) -> str:
    """The letters of a "-e" capability value: ".iLsfx" or "32.0iLsfx" -> "iLsfx"."""
    i = 0
    while i < len(value) and value[i].isdigit():
        i += 1
    if i < len(value) and value[i] == ".":
        i += 1
        while i < len(value) and value[i].isdigit():
            i += 1
    return value[i:]


def _clean_fname(name: str) -> str:
    """A light version of rsync's clean_fname(): collapse "//", "./" and trailing "/"."""
    absolute = name.startswith("/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    out: list[str] = []
    for part in parts:
        if part == ".." and out and out[-1] != "..":
            out.pop()
        else:
            out.append(part)
    joined = "/".join(out)
    if absolute:
        return "/" + joined
    return joined or ("." if name else "")


# --------------------------------------------------------------------------
# What the client tells the server (rsync's server_options())


def _allow_inc_recurse(o: Options, am_sender: bool) -> bool:
    if not o.recurse or o.qsort or not o.inc_recursive:
        return False
    if not am_sender and (o.delete_before or o.delete_after or o.delay_updates
                          or o.prune_empty_dirs):
        return False
    return True


def server_flag_string(opts: Options, am_sender: bool, *, with_caps: bool = True,
                       caps: str = DEFAULT_CLIENT_CAPS) -> str:
    """The bundled "-vlogDtpre.iLsfxCIvu" argument rsync's client sends.

    `am_sender` is the client's role (True for a push).  The "e.CAPS" part is
    only added for protocol >= 30 (and when `with_caps`); `caps` lists the
    capability letters after the optional 'i' for incremental recursion.
    """
    o = opts
    f = ["-"]
    if o.secluded_args:
        f.append("s")
    f.append("v" * min(o.verbose, 9))
    if o.quiet and o.msgs2stderr:
        f.append("q")
    if o.backup:
        f.append("b")
    if o.update:
        f.append("u")
    if o.dry_run and o.only_write_batch is None:  # options.c: !do_xfers, not dry_run
        f.append("n")
    if o.links:
        f.append("l")
    if (2 <= o.xfer_dirs < 4) or (o.xfer_dirs and not o.recurse
                                 and (o.list_only or (o.delete and am_sender))):
        f.append("d")
    if am_sender:
        if o.keep_dirlinks:
            f.append("K")
        if o.prune_empty_dirs:
            f.append("m")
        if o.omit_dir_times > 0:
            f.append("O")
        if o.omit_link_times:
            f.append("J")
        if o.fuzzy:
            f.append("yy" if o.fuzzy > 1 else "y")
    else:
        if o.copy_links:
            f.append("L")
        if o.copy_dirlinks:
            f.append("k")
    if o.whole_file:
        f.append("W")
    if o.hard_links:
        f.append("HH" if o.hard_links > 1 else "H")
    if o.owner:
        f.append("o")
    if o.group:
        f.append("g")
    if o.devices:
        f.append("D")
    if o.times:
        f.append("t")
    if o.atimes:
        f.append("UU" if o.atimes > 1 else "U")
    if o.perms:
        f.append("p")
    elif o.executability and am_sender:
        f.append("E")
    if o.acls:
        f.append("A")
    if o.xattrs:
        f.append("XX" if o.xattrs > 1 else "X")
    if o.recurse:
        f.append("r")
    if o.checksum:
        f.append("c")
    if o.cvs_exclude:
        f.append("C")
    if o.ignore_times:
        f.append("I")
    if o.relative:
        f.append("R")
    if o.one_file_system:
        f.append("xx" if o.one_file_system > 1 else "x")
    if o.sparse:
        f.append("S")
    if o.do_compression == CPRES_ZLIB:
        f.append("z")
    if with_caps and o.protocol >= 30:
        f.append("e.")
        if _allow_inc_recurse(o, am_sender):
            f.append("i")
        f.append(caps)
    s = "".join(f)
    return s if len(s) > 1 else ""


def _safe_arg(opt: str | None, arg: str, escape: bool = True) -> str:
    """rsync's safe_arg(): backslash what the remote shell would interpret.

    opt None: a file name (wildcards kept, a leading '-' becomes './-').
    opt "": an option value sent as its own word.  Otherwise "opt=value".
    ``escape`` False: no backslashes (secluded args, --old-args).
    """
    if not escape:
        return (opt + "=" if opt else "") + ("./" if opt is None and arg.startswith("-") else "") + arg
    shell = "!#$&;|<>(){}\"'` \t\n\r\\"
    escapes = shell if opt is None else "*?[]" + shell
    out = []
    if opt:
        out.append(opt + "=")
    body = arg
    if opt is None and body.startswith("-"):
        out.append("./")
    for k, ch in enumerate(body):
        if ch == "\\":
            nxt = body[k + 1:k + 2]
            if opt is not None or not (nxt and nxt in "*?[]"):
                out.append("\\")
        elif ch in escapes:
            out.append("\\")
        out.append(ch)
    return "".join(out)


def server_options(opts: Options, am_sender: bool, *,
                   caps: str = DEFAULT_CLIENT_CAPS) -> tuple[list[str], list[str]]:
    """rsync's server_options(): the arguments that follow the remote program name.

    Returns (command-line words, secluded words).  With --secluded-args the
    words after the flag string travel over the protocol instead of the
    command line and land in the second list.  The caller appends "." and the
    remote paths (rsync's main.c does that part).
    """
    o = opts
    # safe_arg(): secluded words and --old-args=2+ go as they are; plain --old-args
    # leaves only -M values for the remote shell to split.
    esc = not (o.secluded_args or o.old_args >= 2)
    head = ["--server"]
    if not am_sender:
        head.append("--sender")
    flags = server_flag_string(o, am_sender, caps=caps)
    if flags:
        head.append(flags)
    if o.iconv:
        # (before the secluded part: the server sets up its charset from its command line)
        head.append(_safe_arg("--iconv", o.iconv.partition(",")[2] or o.iconv, esc))
    a: list[str] = []
    if o.list_only > 1:
        a.append("--list-only")
    if o.xfer_dirs and not o.recurse and o.delete and am_sender:
        a.append("--no-r")
    if o.do_compression and o.compress_level is not None:
        a.append(f"--compress-level={o.compress_level}")
    if o.devices:
        if not o.specials:
            a.append("--no-specials")
    elif o.specials:
        a.append("--specials")
    if o.stdout_format and am_sender:
        if o.stdout_format_has_i > 1:
            a.append("--log-format=%i%I")
        elif o.stdout_format_has_i:
            a.append("--log-format=%i")
        elif o.stdout_format_has_o_or_i:
            a.append("--log-format=%o")
        elif not o.verbose:
            a.append("--log-format=X")
    if o.msgs2stderr == 1:
        a.append("--msgs2stderr")
    elif o.msgs2stderr == 0:
        a.append("--no-msgs2stderr")
    if o.block_size:
        a.append(f"-B{o.block_size}")
    if o.timeout:
        a.append(f"--timeout={o.timeout}")
    if o.bwlimit:
        a.append(f"--bwlimit={o.bwlimit}")
    if o.backup_dir:
        a += ["--backup-dir", _safe_arg("", o.backup_dir, esc)]
    if o.suffix != ("" if o.backup_dir else BACKUP_SUFFIX):
        a.append(_safe_arg("--suffix", o.suffix, esc))
    if o.checksum_choice:
        a.append(_safe_arg("--checksum-choice", o.checksum_choice, esc))
    if o.do_compression == CPRES_ZLIBX:
        a.append("--new-compress")
    elif o.compress_choice and o.do_compression == CPRES_ZLIB:
        a.append("--old-compress")
    elif o.compress_choice:
        a.append(_safe_arg("--compress-choice", o.compress_choice, esc))
    if am_sender:
        if o.max_delete is not None and o.max_delete > 0:
            a.append(f"--max-delete={o.max_delete}")
        elif o.max_delete == 0:
            a.append("--max-delete=-1")
        if o.min_size is not None:
            a.append(f"--min-size={o.min_size}")
        if o.max_size is not None:
            a.append(f"--max-size={o.max_size}")
        if o.delete_before:
            a.append("--delete-before")
        elif o.delete_during == 2:
            a.append("--delete-delay")
        elif o.delete_during:
            a.append("--delete-during")
        elif o.delete_after:
            a.append("--delete-after")
        elif o.delete and not o.delete_excluded:
            a.append("--delete")
        if o.delete_excluded:
            a.append("--delete-excluded")
        if o.force:
            a.append("--force")
        if o.only_write_batch is not None:
            a.append("--only-write-batch=X")
        if o.am_root > 1:
            a.append("--super")
        if o.size_only:
            a.append("--size-only")
        if o.stats:
            a.append("--stats")
    elif o.skip_compress:
        a.append(_safe_arg("--skip-compress", o.skip_compress, esc))
    if o.max_alloc_arg and o.max_alloc != 1024 * 1024 * 1024:
        a.append(_safe_arg("--max-alloc", o.max_alloc_arg, esc))
    if o.delete_missing_args:
        a.append("--delete-missing-args")
    elif o.ignore_missing_args and not am_sender:
        a.append("--ignore-missing-args")
    if o.modify_window is not None and am_sender:
        a.append(f"-@{o.modify_window}" if o.modify_window < 0
                 else f"--modify-window={o.modify_window}")
    if o.checksum_seed:
        a.append(f"--checksum-seed={o.checksum_seed}")
    if o.partial_dir and am_sender:
        if o.partial_dir != ".~tmp~" or not o.delay_updates:
            a += ["--partial-dir", _safe_arg("", o.partial_dir, esc)]
        if o.delay_updates:
            a.append("--delay-updates")
    elif o.partial and am_sender:
        a.append("--partial")
    if o.ignore_errors:
        a.append("--ignore-errors")
    if o.copy_unsafe_links:
        a.append("--copy-unsafe-links")
    if o.safe_links:
        a.append("--safe-links")
    if o.numeric_ids:
        a.append("--numeric-ids")
    if o.qsort:
        a.append("--use-qsort")
    if am_sender:
        if o.usermap:
            a.append(_safe_arg("--usermap", o.usermap, esc))
        if o.groupmap:
            a.append(_safe_arg("--groupmap", o.groupmap, esc))
        if o.ignore_existing:
            a.append("--ignore-existing")
        if o.existing:
            a.append("--existing")
        if o.temp_dir:
            a += ["--temp-dir", _safe_arg("", o.temp_dir, esc)]
        if o.fsync:
            a.append("--fsync")
        alt = o.alt_dest
        if alt:
            for d in alt[1]:
                a += [f"--{alt[0]}", _safe_arg("", d, esc)]
    where = W_CLI if o.server else W_SRV
    where |= W_REC if am_sender else W_SND
    info = make_output_option(o, "info", where)
    if info:
        a.append(info)
    if o.append:
        if o.append > 1:
            a.append("--append")
        a.append("--append")
    elif o.inplace:
        a.append("--inplace")
        # rsync's whole_file is -1 (true) unless --no-W was given.
        if o.sparse and o.whole_file is False and am_sender:
            a.append("--no-W")
    # An empty host (--files-from=:PATH) still means the list is on the remote side.
    if o.files_from is not None and (not am_sender or o.files_from_host is not None):
        if o.files_from_host is not None:
            a += ["--files-from", _safe_arg("", o.files_from_path or "", esc)]
            if o.from0:
                a.append("--from0")
        else:
            a += ["--files-from=-", "--from0"]
        if not o.relative:
            a.append("--no-relative")
    if o.relative and not o.implied_dirs and (not am_sender or o.protocol >= 30):
        a.append("--no-implied-dirs")
    if o.write_devices and am_sender:
        a.append("--write-devices")
    if o.remove_source_files == 1:
        a.append("--remove-source-files")
    elif o.remove_source_files:
        a.append("--remove-sent-files")
    if o.copy_devices and not am_sender:
        a.append("--copy-devices")
    if o.preallocate and am_sender:
        a.append("--preallocate")
    if o.open_noatime and o.atimes <= 1:
        a.append("--open-noatime")
    if o.mkpath and am_sender:
        a.append("--mkpath")
    # safe_arg(SPLIT_ARG_WHEN_OLD, ...) escapes like an option value.
    a += [_safe_arg("", ro, esc and not o.old_args) for ro in o.remote_option]
    if o.secluded_args:
        return head, a
    return head + a, []


def split_hostspec(spec: str) -> tuple[str, str] | None:
    """rsync's check_for_hostspec() without the port: ("[USER@]HOST", PATH) or None.

    Recognises HOST:PATH, HOST::PATH and rsync://HOST[:PORT]/PATH; an IPv6
    literal in brackets loses its brackets, as in rsync.
    """
    if spec[:8].lower() == "rsync://":
        rest = spec[8:]
        hostpart, _slash, path = rest.partition("/")
        host = hostpart.split(":", 1)[0] if not hostpart.startswith("[") else hostpart
        host = host.replace("[", "").split("]", 1)[0] if "[" in host else host
        return (host, path) if host else None
    host_start = 0
    k = 0
    while k < len(spec):
        ch = spec[k]
        if ch == "/":
            return None
        if ch == ":":
            # parse_hostspec(): an empty host is fine (":PATH" = the transfer's host).
            host = spec[:host_start] + spec[host_start:k].strip("[]")
            path = spec[k + 1:]
            return host, path[1:] if path.startswith(":") else path
        if ch == "@":
            host_start = k + 1
        elif ch == "[" and k == host_start:
            close = spec.find("]", k)
            if close < 0 or spec[k + 1:close] == "" or "/" in spec[k:close]:
                return None
            if close + 1 < len(spec) and spec[close + 1] not in ":/":
                return None
            k = close
        k += 1
    return None
