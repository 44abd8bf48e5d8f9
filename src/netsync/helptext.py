"""Usage, daemon-usage and version text, laid out the way rsync prints them."""

from __future__ import annotations

from netsync import PROTOCOL_VERSION, __version__

PROG = "netsync"

# (left column, description); rsync pads the left column to 24 characters.
_OPTION_ROWS: tuple[tuple[str, str], ...] = (
    ("--verbose, -v", "increase verbosity"),
    ("--info=FLAGS", "fine-grained informational verbosity"),
    ("--debug=FLAGS", "fine-grained debug verbosity"),
    ("--stderr=e|a|c", "change stderr output mode (default: errors)"),
    ("--quiet, -q", "suppress non-error messages"),
    ("--no-motd", "suppress daemon-mode MOTD"),
    ("--checksum, -c", "skip based on checksum, not mod-time & size"),
    ("--archive, -a", "archive mode is -rlptgoD (no -A,-X,-U,-N,-H)"),
    ("--no-OPTION", "turn off an implied OPTION (e.g. --no-D)"),
    ("--recursive, -r", "recurse into directories"),
    ("--inc-recursive, --i-r", "enable incremental recursion"),
    ("--no-inc-recursive", "disable incremental recursion"),
    ("--no-i-r", "same as --no-inc-recursive"),
    ("--relative, -R", "use relative path names"),
    ("--no-implied-dirs", "don't send implied directories with --relative"),
    ("--backup, -b", "make backups (see --suffix & --backup-dir)"),
    ("--backup-dir=DIR", "make backups into hierarchy based in DIR"),
    ("--suffix=SUFFIX", "backup suffix (default ~ w/o --backup-dir)"),
    ("--update, -u", "skip files that are newer on the receiver"),
    ("--inplace", "update destination files in-place"),
    ("--append", "append data onto shorter files"),
    ("--append-verify", "like --append, but check the old data too"),
    ("--dirs, -d", "transfer directories without recursing"),
    ("--old-dirs", "works like --dirs when talking to old rsync"),
    ("--old-d", "same as --old-dirs"),
    ("--mkpath", "create missing path components of the destination"),
    ("--links, -l", "copy symlinks as symlinks"),
    ("--copy-links, -L", "transform symlink into referent file/directory"),
    ("--copy-unsafe-links", "only \"unsafe\" symlinks are transformed"),
    ("--safe-links", "ignore symlinks that point outside the tree"),
    ("--insecure-links", "follow attacker-owned symlinks in operator paths"),
    ("--confine-root=DIR", "refuse operator paths resolving outside DIR"),
    ("--munge-links", "munge symlinks to make them safe & unusable"),
    ("--copy-dirlinks, -k", "transform symlink to directory into referent directory"),
    ("--keep-dirlinks, -K", "treat symlinked directory on receiver as directory"),
    ("--hard-links, -H", "preserve hard links"),
    ("--perms, -p", "preserve permissions"),
    ("--executability, -E", "preserve executability"),
    ("--chmod=CHMOD", "affect file and/or directory permissions"),
    ("--acls, -A", "preserve ACLs (implies --perms)"),
    ("--xattrs, -X", "preserve extended attributes"),
    ("--owner, -o", "preserve owner (super-user only)"),
    ("--group, -g", "preserve group"),
    ("--devices", "preserve device files (super-user only)"),
    ("--copy-devices", "copy device contents as a regular file"),
    ("--write-devices", "write to devices as files (implies --inplace)"),
    ("--specials", "preserve special files"),
    ("--drop-D", "receiver refuses to create devices/specials"),
    ("-D", "same as --devices --specials"),
    ("--times, -t", "preserve modification times"),
    ("--atimes, -U", "preserve access (use) times"),
    ("--open-noatime", "avoid changing the atime on opened files"),
    ("--crtimes, -N", "preserve create times (newness)"),
    ("--omit-dir-times, -O", "omit directories from --times"),
    ("--omit-link-times, -J", "omit symlinks from --times"),
    ("--super", "receiver attempts super-user activities"),
    ("--fake-super", "store/recover privileged attrs using xattrs"),
    ("--sparse, -S", "turn sequences of nulls into sparse blocks"),
    ("--preallocate", "allocate dest files before writing them"),
    ("--dry-run, -n", "perform a trial run with no changes made"),
    ("--whole-file, -W", "copy files whole (w/o delta-xfer algorithm)"),
    ("--no-whole-file, --no-W", "use the delta-xfer algorithm"),
    ("--checksum-choice=STR", "choose the checksum algorithm (aka --cc)"),
    ("--one-file-system, -x", "don't cross filesystem boundaries"),
    ("--block-size=SIZE, -B", "force a fixed checksum block-size"),
    ("--rsh=COMMAND, -e", "specify the remote shell to use"),
    ("--rsync-path=PROGRAM", "specify the program to run on the remote machine"),
    ("--existing", "skip creating new files on receiver"),
    ("--ignore-non-existing", "skip creating new files on receiver"),
    ("--ignore-existing", "skip updating files that exist on receiver"),
    ("--remove-source-files", "sender removes synchronized files (non-directory)"),
    ("--del", "an alias for --delete-during"),
    ("--delete", "delete extraneous files from dest directories"),
    ("--delete-before", "receiver deletes before xfer, not during"),
    ("--delete-during", "receiver deletes during the transfer"),
    ("--delete-delay", "find deletions during, delete after"),
    ("--delete-after", "receiver deletes after transfer, not during"),
    ("--delete-excluded", "also delete excluded files from dest directories"),
    ("--ignore-missing-args", "ignore missing source arguments without error"),
    ("--delete-missing-args", "delete missing source arguments from destination"),
    ("--ignore-errors", "delete even if there are I/O errors"),
    ("--force", "force deletion of directories even if not empty"),
    ("--max-delete=NUM", "don't delete more than NUM files"),
    ("--max-size=SIZE", "don't transfer any file larger than SIZE"),
    ("--min-size=SIZE", "don't transfer any file smaller than SIZE"),
    ("--max-alloc=SIZE", "change a limit relating to memory alloc"),
    ("--partial", "keep partially transferred files"),
    ("--partial-dir=DIR", "put a partially transferred file into DIR"),
    ("--delay-updates", "put all updated files into place at end"),
    ("--prune-empty-dirs, -m", "prune empty directory chains from file-list"),
    ("--numeric-ids", "don't map uid/gid values by user/group name"),
    ("--usermap=STRING", "custom username mapping"),
    ("--groupmap=STRING", "custom groupname mapping"),
    ("--chown=USER:GROUP", "simple username/groupname mapping"),
    ("--timeout=SECONDS", "set I/O timeout in seconds"),
    ("--contimeout=SECONDS", "set daemon connection timeout in seconds"),
    ("--ignore-times, -I", "don't skip files that match size and time"),
    ("--size-only", "skip files that match in size"),
    ("--modify-window=NUM, -@", "set the accuracy for mod-time comparisons"),
    ("--temp-dir=DIR, -T", "create temporary files in directory DIR"),
    ("--fuzzy, -y", "find similar file for basis if no dest file"),
    ("--compare-dest=DIR", "also compare destination files relative to DIR"),
    ("--copy-dest=DIR", "... and include copies of unchanged files"),
    ("--link-dest=DIR", "hardlink to files in DIR when unchanged"),
    ("--compress, -z", "compress file data during the transfer"),
    ("--compress-choice=STR", "choose the compression algorithm (aka --zc)"),
    ("--compress-level=NUM", "explicitly set compression level (aka --zl)"),
    ("--compress-threads=NUM", "explicitly set compression threads (aka --zt)"),
    ("--skip-compress=LIST", "skip compressing files with suffix in LIST"),
    ("--cvs-exclude, -C", "auto-ignore files in the same way CVS does"),
    ("--filter=RULE, -f", "add a file-filtering RULE"),
    ("-F", "same as --filter='dir-merge /.rsync-filter'"),
    ("", "repeated: --filter='- .rsync-filter'"),
    ("--exclude=PATTERN", "exclude files matching PATTERN"),
    ("--exclude-from=FILE", "read exclude patterns from FILE"),
    ("--include=PATTERN", "don't exclude files matching PATTERN"),
    ("--include-from=FILE", "read include patterns from FILE"),
    ("--files-from=FILE", "read list of source-file names from FILE"),
    ("--from0, -0", "all *-from/filter files are delimited by 0s"),
    ("--old-args", "disable the modern argument-protection idiom"),
    ("--secluded-args, -s", "use the protocol to safely send the arguments"),
    ("--trust-sender", "trust the remote sender's file list"),
    ("--copy-as=USER[:GROUP]", "specify user & optional group for the copy"),
    ("--address=ADDRESS", "bind address for outgoing socket to daemon"),
    ("--port=PORT", "specify double-colon alternate port number"),
    ("--sockopts=OPTIONS", "specify custom TCP options"),
    ("--blocking-io", "use blocking I/O for the remote shell"),
    ("--outbuf=N|L|B", "set out buffering to None, Line, or Block"),
    ("--stats", "give some file-transfer stats"),
    ("--8-bit-output, -8", "leave high-bit chars unescaped in output"),
    ("--human-readable, -h", "output numbers in a human-readable format"),
    ("--progress", "show progress during transfer"),
    ("-P", "same as --partial --progress"),
    ("--itemize-changes, -i", "output a change-summary for all updates"),
    ("--remote-option=OPT, -M", "send OPTION to the remote side only"),
    ("--out-format=FORMAT", "output updates using the specified FORMAT"),
    ("--log-file=FILE", "log what we're doing to the specified FILE"),
    ("--log-file-format=FMT", "log updates using the specified FMT"),
    ("--password-file=FILE", "read daemon-access password from FILE"),
    ("--early-input=FILE", "use FILE for daemon's early exec input"),
    ("--list-only", "list the files instead of copying them"),
    ("--bwlimit=RATE", "limit socket I/O bandwidth"),
    ("--stop-after=MINS", "Stop after MINS minutes have elapsed"),
    ("--stop-at=y-m-dTh:m", "Stop at the specified point in time"),
    ("--fsync", "fsync every written file"),
    ("--write-batch=FILE", "write a batched update to FILE"),
    ("--only-write-batch=FILE", "like --write-batch but w/o updating dest"),
    ("--read-batch=FILE", "read a batched update from FILE"),
    ("--protocol=NUM", "force an older protocol version to be used"),
    ("--iconv=CONVERT_SPEC", "request charset conversion of filenames"),
    ("--checksum-seed=NUM", "set block/file checksum seed (advanced)"),
    ("--ipv4, -4", "prefer IPv4"),
    ("--ipv6, -6", "prefer IPv6"),
    ("--version, -V", "print the version + other info and exit"),
    ("--help, -h (*)", "show this help (* -h is help only on its own)"),
)

_DAEMON_ROWS: tuple[tuple[str, str], ...] = (
    ("--daemon", "run as an rsync daemon"),
    ("--address=ADDRESS", "bind to the specified address"),
    ("--bwlimit=RATE", "limit socket I/O bandwidth"),
    ("--config=FILE", "specify alternate rsyncd.conf file"),
    ("--dparam=OVERRIDE, -M", "override global daemon config parameter"),
    ("--no-detach", "do not detach from the parent"),
    ("--port=PORT", "listen on alternate port number"),
    ("--log-file=FILE", "override the \"log file\" setting"),
    ("--log-file-format=FMT", "override the \"log format\" setting"),
    ("--sockopts=OPTIONS", "specify custom TCP options"),
    ("--verbose, -v", "increase verbosity"),
    ("--ipv4, -4", "prefer IPv4"),
    ("--ipv6, -6", "prefer IPv6"),
    ("--help, -h", "show this help (when used with --daemon)"),
)


def _rows(rows: tuple[tuple[str, str], ...]) -> str:
    return "".join(f"{left:<24} {right}\n" for left, right in rows)


def version_text() -> str:
    """The block printed by --version (and at the top of --help)."""
    return (
        f"{PROG}  version {__version__}  protocol version {PROTOCOL_VERSION}\n"
        "A Python reimplementation of rsync's command line and wire protocol.\n"
        "Capabilities:\n"
        "    64-bit files, 64-bit inums, 64-bit timestamps, 64-bit long ints,\n"
        "    socketpairs, symlinks, symtimes, hardlinks, hardlink-specials,\n"
        "    hardlink-symlinks, IPv6, atimes, batchfiles, inplace, append, ACLs,\n"
        "    ACL-at, xattrs, optional secluded-args, iconv, prealloc, stop-at,\n"
        "    no crtimes\n"
        "Checksum list:\n"
        "    xxh128 xxh3 xxh64 (xxhash) md5 md4 sha1 none\n"
        "Compress list:\n"
        "    zstd lz4 zlibx zlib none\n"
        "\n"
        f"{PROG} comes with ABSOLUTELY NO WARRANTY.  It is free software; see its\n"
        "licence for the conditions of redistribution.\n"
    )


def usage_text() -> str:
    """The full --help output (rsync's usage(): version block, then options)."""
    return (
        version_text()
        + "\n"
        + f"{PROG} is a file transfer program capable of efficient remote update\n"
        "via a fast differencing algorithm; it speaks rsync's protocol.\n"
        "\n"
        f"Usage: {PROG} [OPTION]... SRC [SRC]... DEST\n"
        f"  or   {PROG} [OPTION]... SRC [SRC]... [USER@]HOST:DEST\n"
        f"  or   {PROG} [OPTION]... SRC [SRC]... [USER@]HOST::DEST\n"
        f"  or   {PROG} [OPTION]... SRC [SRC]... rsync://[USER@]HOST[:PORT]/DEST\n"
        f"  or   {PROG} [OPTION]... [USER@]HOST:SRC [DEST]\n"
        f"  or   {PROG} [OPTION]... [USER@]HOST::SRC [DEST]\n"
        f"  or   {PROG} [OPTION]... rsync://[USER@]HOST[:PORT]/SRC [DEST]\n"
        "The ':' usages connect via remote shell, while '::' & 'rsync://' usages connect\n"
        "to an rsync daemon, and require SRC or DEST to start with a module name.\n"
        "\n"
        "Options\n"
        + _rows(_OPTION_ROWS)
        + "\n"
        f"Use \"{PROG} --daemon --help\" to see the daemon-mode command-line options.\n"
        "See the rsync(1) and rsyncd.conf(5) manpages for full documentation.\n"
    )


def daemon_usage_text() -> str:
    """The output of --daemon --help."""
    return (
        version_text()
        + "\n"
        + f"Usage: {PROG} --daemon [OPTION]...\n"
        + _rows(_DAEMON_ROWS)
        + "\n"
        "If you were not trying to invoke netsync as a daemon, avoid using any of the\n"
        "daemon-specific options.  They are those of rsync --daemon; see also the\n"
        "rsyncd.conf(5) manpage.\n"
    )


def version_json() -> str:
    """What -VV prints: the version facts as JSON (rsync 3.4+ does the same)."""
    import json

    info = {
        "program": PROG,
        "version": __version__,
        "protocol": f"{PROTOCOL_VERSION}.0",
        # rsync's capability names; each says what this netsync really does.
        "capabilities": {
            "file_bits": 64, "inum_bits": 64, "timestamp_bits": 64, "long_int_bits": 64,
            "socketpairs": True, "symlinks": True, "symtimes": True, "hardlinks": True,
            "hardlink_specials": True, "hardlink_symlinks": True, "IPv6": True,
            "atimes": True, "batchfiles": True, "inplace": True, "append": True,
            "ACLs": True, "ACL_at": True, "xattrs": True, "secluded_args": "optional",
            "iconv": True, "prealloc": True, "stop_at": True, "crtimes": False,
        },
        "checksum_list": ["xxh128", "xxh3", "xxh64", "md5", "md4", "sha1", "none"],
        "compress_list": ["zstd", "lz4", "zlibx", "zlib", "none"],
        "daemon_auth_list": ["sha512", "sha256", "sha1", "md5", "md4"],
        "caveat": f"{PROG} comes with ABSOLUTELY NO WARRANTY",
    }
    return json.dumps(info, indent=2) + "\n"
