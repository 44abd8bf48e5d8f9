"""``refuse options``: which client option a module refuses, as rsync 3.5 decides.

rsync marks entries of its popt option table (options.c long_options), not
option strings, so the table below is that table: long name, short name, kind
(N none, V store-a-value, S string, I int, B bit-set), destination variable
and value.  Refusing one spelling refuses every row that does the same thing
(``del`` and ``delete-during`` both set delete_during to 1), wildcards match
long and single-letter names, ``a``/``archive`` means ``[ardlptgoD]``, ``!x``
accepts again, and implied options are caught after parsing: refusing
``delete`` stops every ``--delete-*`` mode, ``--delete-missing-args`` and (for
a pull) ``--remove-source-files``; refusing ``compress`` stops ``-z``,
``--compress-choice``/``--zc`` and ``--compress-level``; a refused part of
``-a`` stops ``-a``; ``partial``/``progress`` stop ``-P``; ``inplace`` stops
``--append`` and ``--write-devices``.

The client's arguments are walked with popt's rules (bundled short flags, an
argument taking the rest of the bundle or the next word, ``--opt=value``,
``--`` ending the options), so the compact string ``-vlogDtpre.iLsfxCIvu``
cannot hide a refused letter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from netsync.record import Record
from netsync.wildmatch import wildmatch

__all__ = ["Refusal", "RefuseTable", "refused"]

# (long name or None, short name or "", kind, destination, value)
_ROWS: tuple[tuple[str | None, str, str, str, str], ...] = (
    ('help', '', 'N', '', 'OPT_HELP'),
    ('version', 'V', 'N', '', 'V'),
    ('verbose', 'v', 'N', '', 'v'),
    ('no-verbose', '', 'V', 'verbose', '0'),
    ('no-v', '', 'V', 'verbose', '0'),
    ('info', '', 'S', '', 'OPT_INFO'),
    ('debug', '', 'S', '', 'OPT_DEBUG'),
    ('stderr', '', 'S', '', 'OPT_STDERR'),
    ('msgs2stderr', '', 'V', 'msgs2stderr', '1'),
    ('no-msgs2stderr', '', 'V', 'msgs2stderr', '0'),
    ('quiet', 'q', 'N', '', 'q'),
    ('motd', '', 'V', 'output_motd', '1'),
    ('no-motd', '', 'V', 'output_motd', '0'),
    ('stats', '', 'N', 'do_stats', '0'),
    ('human-readable', 'h', 'N', '', 'h'),
    ('no-human-readable', '', 'V', 'human_readable', '0'),
    ('no-h', '', 'V', 'human_readable', '0'),
    ('dry-run', 'n', 'N', 'dry_run', '0'),
    ('archive', 'a', 'N', '', 'a'),
    ('recursive', 'r', 'V', 'recurse', '2'),
    ('no-recursive', '', 'V', 'recurse', '0'),
    ('no-r', '', 'V', 'recurse', '0'),
    ('inc-recursive', '', 'V', 'allow_inc_recurse', '1'),
    ('no-inc-recursive', '', 'V', 'allow_inc_recurse', '0'),
    ('i-r', '', 'V', 'allow_inc_recurse', '1'),
    ('no-i-r', '', 'V', 'allow_inc_recurse', '0'),
    ('dirs', 'd', 'V', 'xfer_dirs', '2'),
    ('no-dirs', '', 'V', 'xfer_dirs', '0'),
    ('no-d', '', 'V', 'xfer_dirs', '0'),
    ('old-dirs', '', 'V', 'xfer_dirs', '4'),
    ('old-d', '', 'V', 'xfer_dirs', '4'),
    ('perms', 'p', 'V', 'preserve_perms', '1'),
    ('no-perms', '', 'V', 'preserve_perms', '0'),
    ('no-p', '', 'V', 'preserve_perms', '0'),
    ('executability', 'E', 'N', 'preserve_executability', '0'),
    ('acls', 'A', 'N', '', 'A'),
    ('no-acls', '', 'V', 'preserve_acls', '0'),
    ('no-A', '', 'V', 'preserve_acls', '0'),
    ('xattrs', 'X', 'N', '', 'X'),
    ('no-xattrs', '', 'V', 'preserve_xattrs', '0'),
    ('no-X', '', 'V', 'preserve_xattrs', '0'),
    ('times', 't', 'V', 'preserve_mtimes', '1'),
    ('no-times', '', 'V', 'preserve_mtimes', '0'),
    ('no-t', '', 'V', 'preserve_mtimes', '0'),
    ('atimes', 'U', 'N', '', 'U'),
    ('no-atimes', '', 'V', 'preserve_atimes', '0'),
    ('no-U', '', 'V', 'preserve_atimes', '0'),
    ('open-noatime', '', 'V', 'open_noatime', '1'),
    ('no-open-noatime', '', 'V', 'open_noatime', '0'),
    ('crtimes', 'N', 'V', 'preserve_crtimes', '1'),
    ('no-crtimes', '', 'V', 'preserve_crtimes', '0'),
    ('no-N', '', 'V', 'preserve_crtimes', '0'),
    ('omit-dir-times', 'O', 'V', 'omit_dir_times', '1'),
    ('no-omit-dir-times', '', 'V', 'omit_dir_times', '0'),
    ('no-O', '', 'V', 'omit_dir_times', '0'),
    ('omit-link-times', 'J', 'V', 'omit_link_times', '1'),
    ('no-omit-link-times', '', 'V', 'omit_link_times', '0'),
    ('no-J', '', 'V', 'omit_link_times', '0'),
    ('modify-window', '@', 'I', 'modify_window', 'OPT_MODIFY_WINDOW'),
    ('super', '', 'V', 'am_root', '2'),
    ('no-super', '', 'V', 'am_root', '0'),
    ('fake-super', '', 'V', 'am_root', '-1'),
    ('owner', 'o', 'V', 'preserve_uid', '1'),
    ('no-owner', '', 'V', 'preserve_uid', '0'),
    ('no-o', '', 'V', 'preserve_uid', '0'),
    ('group', 'g', 'V', 'preserve_gid', '1'),
    ('no-group', '', 'V', 'preserve_gid', '0'),
    ('no-g', '', 'V', 'preserve_gid', '0'),
    (None, 'D', 'N', '', 'D'),
    ('no-D', '', 'N', '', 'OPT_NO_D'),
    ('devices', '', 'V', 'preserve_devices', '1'),
    ('no-devices', '', 'V', 'preserve_devices', '0'),
    ('copy-devices', '', 'N', 'copy_devices', '0'),
    ('write-devices', '', 'V', 'write_devices', '1'),
    ('no-write-devices', '', 'V', 'write_devices', '0'),
    ('specials', '', 'V', 'preserve_specials', '1'),
    ('no-specials', '', 'V', 'preserve_specials', '0'),
    ('drop-D', '', 'V', 'drop_devices', '1'),
    ('no-drop-D', '', 'V', 'drop_devices', '0'),
    ('confine-root', '', 'S', 'confine_root', '0'),
    ('links', 'l', 'V', 'preserve_links', '1'),
    ('no-links', '', 'V', 'preserve_links', '0'),
    ('no-l', '', 'V', 'preserve_links', '0'),
    ('copy-links', 'L', 'N', 'copy_links', '0'),
    ('copy-unsafe-links', '', 'N', 'copy_unsafe_links', '0'),
    ('safe-links', '', 'N', 'safe_symlinks', '0'),
    ('insecure-links', '', 'V', 'insecure_links', '1'),
    ('no-insecure-links', '', 'V', 'insecure_links', '0'),
    ('munge-links', '', 'V', 'munge_symlinks', '1'),
    ('no-munge-links', '', 'V', 'munge_symlinks', '0'),
    ('copy-dirlinks', 'k', 'N', 'copy_dirlinks', '0'),
    ('keep-dirlinks', 'K', 'N', 'keep_dirlinks', '0'),
    ('hard-links', 'H', 'N', '', 'H'),
    ('no-hard-links', '', 'V', 'preserve_hard_links', '0'),
    ('no-H', '', 'V', 'preserve_hard_links', '0'),
    ('relative', 'R', 'V', 'relative_paths', '1'),
    ('no-relative', '', 'V', 'relative_paths', '0'),
    ('no-R', '', 'V', 'relative_paths', '0'),
    ('implied-dirs', '', 'V', 'implied_dirs', '1'),
    ('no-implied-dirs', '', 'V', 'implied_dirs', '0'),
    ('i-d', '', 'V', 'implied_dirs', '1'),
    ('no-i-d', '', 'V', 'implied_dirs', '0'),
    ('chmod', '', 'S', '', 'OPT_CHMOD'),
    ('ignore-times', 'I', 'N', 'ignore_times', '0'),
    ('size-only', '', 'N', 'size_only', '0'),
    ('one-file-system', 'x', 'N', '', 'x'),
    ('no-one-file-system', '', 'V', 'one_file_system', '0'),
    ('no-x', '', 'V', 'one_file_system', '0'),
    ('update', 'u', 'N', 'update_only', '0'),
    ('existing', '', 'N', 'ignore_non_existing', '0'),
    ('ignore-non-existing', '', 'N', 'ignore_non_existing', '0'),
    ('ignore-existing', '', 'N', 'ignore_existing', '0'),
    ('max-size', '', 'S', 'max_size_arg', 'OPT_MAX_SIZE'),
    ('min-size', '', 'S', 'min_size_arg', 'OPT_MIN_SIZE'),
    ('max-alloc', '', 'S', 'max_alloc_arg', '0'),
    ('sparse', 'S', 'V', 'sparse_files', '1'),
    ('no-sparse', '', 'V', 'sparse_files', '0'),
    ('no-S', '', 'V', 'sparse_files', '0'),
    ('preallocate', '', 'N', 'preallocate_files', '0'),
    ('inplace', '', 'V', 'inplace', '1'),
    ('no-inplace', '', 'V', 'inplace', '0'),
    ('append', '', 'N', '', 'OPT_APPEND'),
    ('append-verify', '', 'V', 'append_mode', '2'),
    ('no-append', '', 'V', 'append_mode', '0'),
    ('del', '', 'N', 'delete_during', '0'),
    ('delete', '', 'N', 'delete_mode', '0'),
    ('delete-before', '', 'N', 'delete_before', '0'),
    ('delete-during', '', 'V', 'delete_during', '1'),
    ('delete-delay', '', 'V', 'delete_during', '2'),
    ('delete-after', '', 'N', 'delete_after', '0'),
    ('delete-excluded', '', 'N', 'delete_excluded', '0'),
    ('delete-missing-args', '', 'B', 'missing_args', '2'),
    ('ignore-missing-args', '', 'B', 'missing_args', '1'),
    ('remove-sent-files', '', 'V', 'remove_source_files', '2'),
    ('remove-source-files', '', 'V', 'remove_source_files', '1'),
    ('force', '', 'V', 'force_delete', '1'),
    ('no-force', '', 'V', 'force_delete', '0'),
    ('ignore-errors', '', 'V', 'ignore_errors', '1'),
    ('no-ignore-errors', '', 'V', 'ignore_errors', '0'),
    ('max-delete', '', 'I', 'max_delete', '0'),
    (None, 'F', 'N', '', 'F'),
    ('filter', 'f', 'S', '', 'OPT_FILTER'),
    ('exclude', '', 'S', '', 'OPT_EXCLUDE'),
    ('include', '', 'S', '', 'OPT_INCLUDE'),
    ('exclude-from', '', 'S', '', 'OPT_EXCLUDE_FROM'),
    ('include-from', '', 'S', '', 'OPT_INCLUDE_FROM'),
    ('cvs-exclude', 'C', 'N', 'cvs_exclude', '0'),
    ('whole-file', 'W', 'V', 'whole_file', '1'),
    ('no-whole-file', '', 'V', 'whole_file', '0'),
    ('no-W', '', 'V', 'whole_file', '0'),
    ('checksum', 'c', 'V', 'always_checksum', '1'),
    ('no-checksum', '', 'V', 'always_checksum', '0'),
    ('no-c', '', 'V', 'always_checksum', '0'),
    ('checksum-choice', '', 'S', 'checksum_choice', '0'),
    ('cc', '', 'S', 'checksum_choice', '0'),
    ('block-size', 'B', 'S', '', 'OPT_BLOCK_SIZE'),
    ('compare-dest', '', 'S', '', 'OPT_COMPARE_DEST'),
    ('copy-dest', '', 'S', '', 'OPT_COPY_DEST'),
    ('link-dest', '', 'S', '', 'OPT_LINK_DEST'),
    ('fuzzy', 'y', 'N', '', 'y'),
    ('no-fuzzy', '', 'V', 'fuzzy_basis', '0'),
    ('no-y', '', 'V', 'fuzzy_basis', '0'),
    ('compress', 'z', 'N', '', 'z'),
    ('old-compress', '', 'N', '', 'OPT_OLD_COMPRESS'),
    ('new-compress', '', 'N', '', 'OPT_NEW_COMPRESS'),
    ('no-compress', '', 'N', '', 'OPT_NO_COMPRESS'),
    ('no-z', '', 'N', '', 'OPT_NO_COMPRESS'),
    ('compress-choice', '', 'S', 'compress_choice', '0'),
    ('zc', '', 'S', 'compress_choice', '0'),
    ('skip-compress', '', 'S', 'skip_compress', '0'),
    ('compress-level', '', 'I', 'do_compression_level', '0'),
    ('zl', '', 'I', 'do_compression_level', '0'),
    ('compress-threads', '', 'I', 'do_compression_threads', '0'),
    ('zt', '', 'I', 'do_compression_threads', '0'),
    (None, 'P', 'N', '', 'P'),
    ('progress', '', 'V', 'do_progress', '1'),
    ('no-progress', '', 'V', 'do_progress', '0'),
    ('partial', '', 'V', 'keep_partial', '1'),
    ('no-partial', '', 'V', 'keep_partial', '0'),
    ('partial-dir', '', 'S', 'partial_dir', '0'),
    ('delay-updates', '', 'V', 'delay_updates', '1'),
    ('no-delay-updates', '', 'V', 'delay_updates', '0'),
    ('prune-empty-dirs', 'm', 'V', 'prune_empty_dirs', '1'),
    ('no-prune-empty-dirs', '', 'V', 'prune_empty_dirs', '0'),
    ('no-m', '', 'V', 'prune_empty_dirs', '0'),
    ('log-file', '', 'S', 'logfile_name', '0'),
    ('log-file-format', '', 'S', 'logfile_format', '0'),
    ('out-format', '', 'S', 'stdout_format', '0'),
    ('log-format', '', 'S', 'stdout_format', '0'),
    ('itemize-changes', 'i', 'N', '', 'i'),
    ('no-itemize-changes', '', 'V', 'itemize_changes', '0'),
    ('no-i', '', 'V', 'itemize_changes', '0'),
    ('bwlimit', '', 'S', 'bwlimit_arg', 'OPT_BWLIMIT'),
    ('no-bwlimit', '', 'V', 'bwlimit', '0'),
    ('backup', 'b', 'V', 'make_backups', '1'),
    ('no-backup', '', 'V', 'make_backups', '0'),
    ('backup-dir', '', 'S', 'backup_dir', '0'),
    ('suffix', '', 'S', 'backup_suffix', '0'),
    ('list-only', '', 'V', 'list_only', '2'),
    ('read-batch', '', 'S', 'batch_name', 'OPT_READ_BATCH'),
    ('write-batch', '', 'S', 'batch_name', 'OPT_WRITE_BATCH'),
    ('only-write-batch', '', 'S', 'batch_name', 'OPT_ONLY_WRITE_BATCH'),
    ('files-from', '', 'S', 'files_from', '0'),
    ('from0', '0', 'V', 'eol_nulls', '1'),
    ('no-from0', '', 'V', 'eol_nulls', '0'),
    ('old-args', '', 'N', '', 'OPT_OLD_ARGS'),
    ('no-old-args', '', 'V', 'old_style_args', '0'),
    ('secluded-args', 's', 'V', 'protect_args', '1'),
    ('no-secluded-args', '', 'V', 'protect_args', '0'),
    ('protect-args', '', 'V', 'protect_args', '1'),
    ('no-protect-args', '', 'V', 'protect_args', '0'),
    ('no-s', '', 'V', 'protect_args', '0'),
    ('trust-sender', '', 'V', 'trust_sender', '1'),
    ('numeric-ids', '', 'V', 'numeric_ids', '1'),
    ('no-numeric-ids', '', 'V', 'numeric_ids', '0'),
    ('usermap', '', 'S', '', 'OPT_USERMAP'),
    ('groupmap', '', 'S', '', 'OPT_GROUPMAP'),
    ('chown', '', 'S', '', 'OPT_CHOWN'),
    ('timeout', '', 'I', 'io_timeout', '0'),
    ('no-timeout', '', 'V', 'io_timeout', '0'),
    ('contimeout', '', 'I', 'connect_timeout', '0'),
    ('no-contimeout', '', 'V', 'connect_timeout', '0'),
    ('fsync', '', 'N', 'do_fsync', '0'),
    ('stop-after', '', 'S', '', 'OPT_STOP_AFTER'),
    ('time-limit', '', 'S', '', 'OPT_STOP_AFTER'),
    ('stop-at', '', 'S', '', 'OPT_STOP_AT'),
    ('rsh', 'e', 'S', 'shell_cmd', '0'),
    ('rsync-path', '', 'S', 'rsync_path', '0'),
    ('temp-dir', 'T', 'S', 'tmpdir', '0'),
    ('iconv', '', 'S', 'iconv_opt', '0'),
    ('no-iconv', '', 'N', '', 'OPT_NO_ICONV'),
    ('ipv4', '4', 'V', 'default_af_hint', 'AF_INET'),
    ('ipv6', '6', 'V', 'default_af_hint', 'AF_INET6'),
    ('8-bit-output', '8', 'V', 'allow_8bit_chars', '1'),
    ('no-8-bit-output', '', 'V', 'allow_8bit_chars', '0'),
    ('no-8', '', 'V', 'allow_8bit_chars', '0'),
    ('mkpath', '', 'V', 'mkpath_dest_arg', '1'),
    ('no-mkpath', '', 'V', 'mkpath_dest_arg', '0'),
    ('qsort', '', 'N', 'use_qsort', '0'),
    ('copy-as', '', 'S', 'copy_as', '0'),
    ('address', '', 'S', 'bind_address', '0'),
    ('port', '', 'I', 'rsync_port', '0'),
    ('sockopts', '', 'S', 'sockopts', '0'),
    ('password-file', '', 'S', 'password_file', '0'),
    ('early-input', '', 'S', 'early_input_file', '0'),
    ('blocking-io', '', 'V', 'blocking_io', '1'),
    ('no-blocking-io', '', 'V', 'blocking_io', '0'),
    ('outbuf', '', 'S', 'outbuf_mode', '0'),
    ('remote-option', 'M', 'S', '', 'M'),
    ('protocol', '', 'I', 'protocol_version', '0'),
    ('checksum-seed', '', 'I', 'checksum_seed', '0'),
    ('server', '', 'N', '', 'OPT_SERVER'),
    ('sender', '', 'N', '', 'OPT_SENDER'),
    ('config', '', 'S', '', 'OPT_DAEMON'),
    ('daemon', '', 'N', '', 'OPT_DAEMON'),
    ('dparam', '', 'S', '', 'OPT_DAEMON'),
    ('detach', '', 'N', '', 'OPT_DAEMON'),
    ('no-detach', '', 'N', '', 'OPT_DAEMON'),
)

# Never wild-matched: only an exact rule refuses them.
_EXACT_SHORT = frozenset("e0sn")
_EXACT_LONG = frozenset({"iconv", "no-iconv", "checksum-seed", "copy-devices", "write-devices",
                         "log-format", "sender", "server"})
# Options Debian's rsync 3.5 was built without (refused on every daemon).
_UNSUPPORTED = ("crtimes",)
_ARCHIVE_PARTS = "rdlptgoD"


class Refusal(NamedTuple):
    option: str  # the long name rsync reports ("(null)" for rows without one)
    short: str  # the short letter, "" if none
    message: str  # "The server is configured to refuse --delete"


def _const(row: tuple[str | None, str, str, str, str]) -> str | None:
    """refuse_const_assign(): the constant a row stores, if it only stores one."""
    _, _, kind, dest, val = row
    if not dest:
        return None
    if kind == "V":
        return val
    if kind == "N" and val == "0":
        return "1"
    return None


def _same_action(a: tuple[str | None, str, str, str, str],
                 b: tuple[str | None, str, str, str, str]) -> bool:
    ca, cb = _const(a), _const(b)
    if ca is not None and cb is not None:
        return a[3] == b[3] and ca == cb
    if a[2] != b[2] or a[4] != b[4]:
        return False
    return a[3] == b[3] if a[3] else not b[3] and a[4] != "0"


class RefuseTable:
    """set_refuse_options() for one module: which table rows are refused."""

    def __init__(self, spec: str, *, charset: str = "",
                 log: Callable[[str], None] | None = None) -> None:
        self.log = log
        self.mark = ["a=" if (r[1] in _EXACT_SHORT and r[1]) or r[0] in _EXACT_LONG else "a*"
                     for r in _ROWS]
        self._one(False, "copy-devices")
        self._one(False, "write-devices")
        for ref in spec.split(" "):
            if not ref:
                continue
            negated = ref.startswith("!")
            if negated and len(ref) > 1:
                ref = ref[1:]
            self._one(negated, ref)
        if not charset:
            self._one(False, "iconv")
        self._one(False, "log-file*")
        self._one(False, "insecure-links")
        for name in _UNSUPPORTED:
            self._one(False, name)
        self.refused = [m[0] == "r" for m in self.mark]

        def find(long: str) -> int | None:
            i = next(i for i, r in enumerate(_ROWS) if r[0] == long)
            return i if self.refused[i] else None

        self.archive_part: int | None = None
        for i, r in enumerate(_ROWS):
            if self.refused[i] and r[1] and r[1] in _ARCHIVE_PARTS:
                self.archive_part = i  # the last one wins, as in rsync
        self.compress = next((i for i, r in enumerate(_ROWS)
                              if r[1] == "z" and self.refused[i]), None)
        self.delete = find("delete")
        self.delete_before = find("delete-before")
        self.delete_during = find("delete-during")
        self.partial = find("partial")
        self.progress = find("progress")
        self.inplace = find("inplace")
        self.no_iconv = find("no-iconv")

    def _one(self, negated: bool, ref: str) -> None:
        is_wild = any(ch in ref for ch in "*?[")
        if ref in ("a", "archive"):
            ref, is_wild = "[ardlptgoD]", True
        pat = ref.encode("utf-8", "surrogateescape")
        found = False
        matched: int | None = None
        for i, (long, short, _, _, _) in enumerate(_ROWS):
            if (long and wildmatch(pat, long.encode())) or (short and wildmatch(pat, short.encode())):
                if self.mark[i][1] == "*":
                    self.mark[i] = "a*" if negated else "r*"
                elif not is_wild:
                    self.mark[i] = "a=" if negated else "r="
                found = True
                if not is_wild:
                    matched = i
                    break
        if matched is not None:
            for i, row in enumerate(_ROWS):
                if i == matched or not _same_action(row, _ROWS[matched]):
                    continue
                self.mark[i] = ("a" if negated else "r") + self.mark[i][1]
        if not found and self.log:
            self.log(f'No match for refuse-options string "{ref}"')

    def refusal(self, i: int) -> Refusal:
        long, short = _ROWS[i][0] or "(null)", _ROWS[i][1]
        msg = f"The server is configured to refuse --{long}"
        if short:
            msg += f" (-{short})"
        return Refusal(long, short, msg)

    def check(self, argv: Sequence[str]) -> Refusal | None:
        """The first refusal rsync would report for the client's ``argv``, or None."""
        st = _State()
        by_long = _BY_LONG
        by_short = _BY_SHORT
        args = list(argv)
        k = 0
        while k < len(args):
            arg = args[k]
            k += 1
            if arg == "--":
                break
            if arg.startswith("--"):
                name, eq, value = arg[2:].partition("=")
                i = by_long.get(name)
                if i is None:
                    return None  # popt fails on it before anything else matters
                if self.refused[i]:
                    return self.refusal(i)
                if _ROWS[i][2] in "SI" and not eq:
                    value = args[k] if k < len(args) else ""
                    k += 1
                hit = self._apply(i, value, st)
                if hit is not None:
                    return self.refusal(hit)
            elif arg.startswith("-") and len(arg) > 1:
                j = 1
                while j < len(arg):
                    i = by_short.get(arg[j])
                    if i is None:
                        return None
                    if self.refused[i]:
                        return self.refusal(i)
                    value = ""
                    if _ROWS[i][2] in "SI":
                        value = arg[j + 1:]
                        if not value:
                            value = args[k] if k < len(args) else ""
                            k += 1
                        j = len(arg)
                    hit = self._apply(i, value, st)
                    if hit is not None:
                        return self.refusal(hit)
                    j += 1
        hit = self._finish(st)
        return None if hit is None else self.refusal(hit)

    def _apply(self, i: int, value: str, st: _State) -> int | None:
        """The effect of one accepted option; a row index if an implied refusal fires."""
        long, short, kind, dest, val = _ROWS[i]
        if short == "a" and long == "archive":
            return self.archive_part
        if short == "P" and long is None:
            if self.partial is not None or self.progress is not None:
                return self.partial if self.partial is not None else self.progress
            return None
        if short == "z":
            st.compress += 1
        elif long in ("old-compress", "new-compress"):
            st.choice = "zlib" if long == "old-compress" else "zlibx"
        elif long in ("no-compress", "no-z"):
            st.compress, st.choice = 0, None
        elif dest == "compress_choice":
            st.choice = value
        elif dest == "do_compression_level":
            st.level = True
        elif long == "iconv":
            st.iconv = value
        elif long == "no-iconv":
            st.iconv = None
        elif long == "append":
            st.append += 1
        elif dest == "append_mode":
            st.append = int(val)
        elif long == "sender":
            st.sender = True
        elif kind == "B":
            st.vars[dest] = st.vars.get(dest, 0) | int(val)
        elif dest:
            st.vars[dest] = 1 if kind == "N" else (int(val) if kind == "V" and
                                                     val.lstrip("-").isdigit() else 1)
        return None

    def _finish(self, st: _State) -> int | None:
        v = st.vars
        choice = st.choice
        if choice is None and st.compress > 1:
            choice = "zlibx"
        compressing = (choice.lower() != "none" if choice and choice.lower() != "auto"
                       else st.compress > 0)
        if (compressing or st.level) and self.compress is not None:
            return self.compress
        if self.no_iconv is not None and not st.iconv:
            return self.no_iconv
        delete_mode = v.get("delete_mode", 0)
        if v.get("delete_before") or v.get("delete_during") or v.get("delete_after"):
            delete_mode = 1
        elif delete_mode or v.get("delete_excluded"):
            if self.delete_before is not None and self.delete_during is not None:
                return self.delete_before
            delete_mode = 1
        missing = v.get("missing_args", 0)
        if missing == 3:
            missing = 2
        if self.delete is not None and (delete_mode or missing == 2):
            return self.delete
        if v.get("remove_source_files") and self.delete is not None and st.sender:
            return self.delete
        if (st.append or v.get("write_devices")) and self.inplace is not None:
            return self.inplace
        return None


class _State(Record):
    compress: int = 0
    choice: str | None = None
    level: bool = False
    iconv: str | None = None
    append: int = 0
    sender: bool = False

    def __post_init__(self) -> None:
        self.vars: dict[str, int] = {}


_BY_LONG = {r[0]: i for i, r in enumerate(_ROWS) if r[0]}
_BY_SHORT = {r[1]: i for i, r in enumerate(_ROWS) if r[1]}

# Built tables by (spec, charset), with the lines building them logged. A table costs
# ~1 ms of wild matching (~200 rows against each rule); the daemon's listener builds
# each module's before it forks (table()), so a connection finds its table ready.
_TABLES: dict[tuple[str, str], tuple[RefuseTable, tuple[str, ...]]] = {}


def table(refuse_spec: str, charset: str = "") -> tuple[RefuseTable, tuple[str, ...]]:
    """The table for a module's ``refuse options`` and the lines its build logs."""
    key = (refuse_spec, charset)
    hit = _TABLES.get(key)
    if hit is None:
        notes: list[str] = []
        hit = (RefuseTable(refuse_spec, charset=charset, log=notes.append), tuple(notes))
        if len(_TABLES) >= 64:  # specs with a per-connection %VAR%: keep it bounded
            _TABLES.clear()
        _TABLES[key] = hit
    return hit


def refused(argv: Sequence[str], refuse_spec: str, *, charset: str = "",
            log: Callable[[str], None] | None = None) -> Refusal | None:
    """What a module with ``refuse options = refuse_spec`` says about the client's ``argv``.

    ``argv`` is what the client sent after "@RSYNCD: OK" (``--server``,
    ``--sender``, the compact flags, long options, ".", the paths).  Returns
    None when rsync would accept it, else the option rsync names (send
    ``"rsync: " + message`` as the error and exit with code 4).
    """
    tab, notes = table(refuse_spec, charset)
    if log is not None:
        for line in notes:
            log(line)
    return tab.check(argv)
