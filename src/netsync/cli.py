"""``netsync`` command line: rsync's client, driving the engine's three roles."""

from __future__ import annotations

import errno
import operator
import os
import re
import signal
import stat
import sys
import time

from netsync import errors as E
from netsync import messages as m

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

PROG = "netsync"

# host:path, [user@]host::module, rsync://host/... (not a local path)
_REMOTE_RE = re.compile(rb"^[^/:]*[^/:\\]:")


_err = E.print_error
_exit_line = E.print_exit_line


def is_remote(arg: bytes) -> bool:
    if arg.startswith(b"rsync://"):
        return True
    return bool(_REMOTE_RE.match(arg)) and not arg.startswith(b"./")


class _Signalled(Exception):
    pass


def _on_signal(signum, frame) -> None:  # noqa: ARG001
    raise _Signalled(signum)


_MAX_SECLUDED_ARGS = 16 * 1000  # as the daemon's argument limit
_MAX_ARG_LEN = 4096 + 1024  # BIGPATHBUFLEN


def _read_secluded_args() -> list[str]:
    """io.c read_args(): NUL-terminated words from stdin up to an empty one (bounded)."""
    words: list[str] = []
    cur = bytearray()
    while True:
        ch = os.read(0, 1)
        if not ch:
            raise E.RsyncError(E.RERR_PROTOCOL, "connection unexpectedly closed while "
                               "reading the secluded arguments")
        if ch != b"\0":
            if len(cur) >= _MAX_ARG_LEN:
                raise E.RsyncError(E.RERR_PROTOCOL, "secluded argument too long")
            cur += ch
            continue
        if not cur:
            return words
        if len(words) >= _MAX_SECLUDED_ARGS:
            raise E.RsyncError(E.RERR_PROTOCOL, "too many secluded arguments")
        words.append(os.fsdecode(bytes(cur)))
        cur.clear()


def _secluded_from_utf8(words: list[str], spec: str) -> list[str]:
    from netsync import charset as C

    ic = C.Iconv(C.side_charset(spec, True))
    return [os.fsdecode(ic.name_from_wire_raw(os.fsencode(w))) for w in words]


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command itself (not a caller's in-process run)
        from netsync import report

        report.protect_std_streams()
        code = _main(sys.argv[1:])
        # log.c: a message rsync cannot write to stderr ends it with RERR_MESSAGEIO
        return E.RERR_MESSAGEIO if report.stderr_lost() else code
    return _main(argv)


def _main(argv: list[str]) -> int:
    from netsync import options as O

    try:
        opts = O.parse_args(argv)
        if opts.server and opts.secluded_args and not opts.daemon:
            # main.c: a -s client sends the rest of the arguments over stdin (arg0
            # "rsync", options, ".", paths); parse them after the command line's.
            try:
                extra = _read_secluded_args()
            except E.RsyncError as re_:
                _err(f"{PROG}: {re_.message}")
                _exit_line(re_.code)
                return re_.code
            cmd = argv[:argv.index(".") + 1] if "." in argv else argv
            if opts.iconv:  # io.c read_args(RL_CONVERT): they come in UTF-8
                extra = _secluded_from_utf8(extra, opts.iconv)
            opts = O.parse_args([*cmd, *extra[1:]])
    except O.PrintAndExit as pe:
        sys.stdout.write(pe.text)
        sys.stdout.flush()
        return pe.code
    except O.OptionError as oe:
        if oe.show_usage:
            from netsync import helptext

            sys.stderr.write(helptext.usage_text())
        if oe.message:
            _err(oe.message if oe.bare else f"{PROG}: {oe.message}")
        _exit_line(oe.code)
        return oe.code
    except E.UsageError as ue:
        _err(f"{PROG}: {ue.message}")
        _exit_line(ue.code)
        return ue.code
    if opts.server_notice and not opts.daemon:
        _err(opts.server_notice)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    from netsync import safepath

    safepath.insecure_links = bool(opts.insecure_links)
    if opts.confine_root and not opts.daemon:
        from netsync import filters

        # --confine-root (rrsync passes its restricted dir): a merge file the peer
        # names may not resolve outside it.  A daemon has its module instead.
        filters.merge_confine_root = os.path.realpath(os.fsencode(opts.confine_root))
    O.apply_process_options(opts)
    try:
        return run_client(opts)
    except _Signalled:
        _exit_line(E.RERR_SIGNAL)
        return E.RERR_SIGNAL
    except (m.FatalError, E.RsyncError) as fe:
        if fe.message:
            _err(fe.message if getattr(fe, "bare", False) else f"{PROG}: {fe.message}")
        _exit_line(fe.code)
        return fe.code
    except BrokenPipeError:
        return E.RERR_SOCKETIO


def run_client(opts) -> int:
    if opts.server:
        from netsync.server import run_server

        return run_server(opts)
    if opts.daemon:
        from netsync.daemon.server import run_daemon

        return run_daemon(opts)
    _check_filter_files(opts)
    args = [os.fsencode(a) for a in opts.args]
    if not args:
        from netsync import helptext

        # main.c: nothing to copy means the usage on stderr, exit 1, but only once
        # parse_arguments() has read the filter files (a missing one is code 11).
        sys.stderr.write(helptext.usage_text())
        raise E.RsyncError(E.RERR_SYNTAX, None)
    if opts.read_batch is not None or opts.write_batch is not None \
            or opts.only_write_batch is not None:
        from netsync.batch import run_batch

        return run_batch(opts, args)
    if any(is_remote(a) for a in args):
        try:
            from netsync.client import run_remote
        except ImportError:
            raise E.RsyncError(E.RERR_UNSUPPORTED,
                               "remote transfers (host:path, host::module, rsync://) are not "
                               "implemented yet in this netsync") from None
        return run_remote(opts, args)
    _check_local_protocol(opts)
    if len(args) == 1:
        return local_sync(opts, args, None)
    if opts.iconv and not opts.list_only:
        from netsync.client import run_local_forked

        return run_local_forked(opts, args[:-1], args[-1])
    if opts.list_only:
        # An explicit --list-only lists the sources; a destination is ignored.
        return local_sync(opts, args[:-1], None)
    return local_sync(opts, args[:-1], args[-1])


def _check_local_protocol(opts) -> None:
    """compat.c setup_protocol() on both ends of a local run (rsync forks one): a
    --protocol out of rsync's range fails each, the receiver's exit line between."""
    from netsync.transport.handshake import MAX_PROTOCOL, RSYNC_MIN_PROTOCOL

    p = opts.protocol
    if p is None:
        return
    if RSYNC_MIN_PROTOCOL <= p <= MAX_PROTOCOL:
        opts.settle_protocol(p)
        if p < 29 and opts.cvs_exclude:
            # exclude.c send_rules(): the receiver's own -C rule (":C") has a modifier
            # protocol 28 cannot write; it stops, and its sender with it.
            lines = ["filter rules are too modern for remote rsync.",
                     E.exit_message(E.RERR_PROTOCOL, PROG)]
            raise E.RsyncError(E.RERR_STREAMIO, "\n".join(lines), bare=True)
        msg = opts.protocol_error(p, local=True)
        if msg is None and p < 30 and (opts.filter_args or opts.cvs_exclude):
            from netsync import filters as F

            try:  # the sender's send_filter_list() puts its rules in wire form
                _trial_filter_list(opts).to_wire_rules(True, p)
            except F.FilterError as fe:
                raise E.RsyncError(E.RERR_PROTOCOL, fe.message, bare=True) from None
        if msg is None:
            return
        # Both ends refuse what the protocol cannot carry, the receiver first; --fuzzy
        # is a generator's option, and only the sender's check names it.
        lines = [msg] if opts.fuzzy else [msg, E.exit_message(E.RERR_PROTOCOL, PROG), msg]
        raise E.RsyncError(E.RERR_PROTOCOL, "\n".join(lines), bare=True)
    if p > MAX_PROTOCOL:
        lines = [f"--protocol must be no more than {MAX_PROTOCOL} on the {side}."
                 for side in ("Server", "Client")]
        lines.insert(2, E.exit_message(E.RERR_PROTOCOL, PROG))
    else:  # the server side finds a version it cannot speak, and so does the client
        clean = ["protocol version mismatch -- is your shell clean?",
                 "(see the rsync manpage for an explanation)"]
        lines = [*clean, E.exit_message(E.RERR_PROTOCOL, PROG), *clean]
    raise E.RsyncError(E.RERR_PROTOCOL, "\n".join(lines), bare=True)


def _trial_filter_list(opts):
    """The command line's rules built ahead of the run's own lists, for a check: their
    warnings come when the run builds them (stdin, if merged, is read once for all)."""
    from netsync import filters as F

    with F.muted():
        return F.build_filter_list(opts.filter_args, opts.cvs_exclude, opts.delete_excluded,
                                   opts.from0)


def _check_filter_files(opts) -> None:
    """options.c parse_arguments() reads --exclude-from/--include-from files and the
    command line's merge files as it parses them: a missing one ends the run at once,
    before any connection ("[client] failed to open ...", code 11)."""
    if not opts.filter_args:
        return
    from netsync import filters as F

    try:
        _trial_filter_list(opts)
    except F.FilterError as fe:
        if fe.message and fe.message.startswith("failed to open"):
            raise F.FilterError(fe.code, f"[client] {fe.message}") from None
        raise


def _file_checksum_fn():
    import xxhash

    from netsync import sender

    def fn(path: bytes, size: int) -> bytes:
        h = xxhash.xxh128()
        with open(os.open(path, os.O_RDONLY | os.O_CLOEXEC | sender.read_flags()), "rb",
                  buffering=0) as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
        return h.digest()

    return fn


class IdMap:
    """--usermap/--groupmap (uidlist.c): first matching FROM wins; FROM is a name,
    a wildcard name, a number, a LOW-HIGH range or ``*``."""

    def __init__(self, spec: str, which: str, numeric: bool = False,
                 warn: Callable[[str], None] | None = None) -> None:
        import fnmatch

        self._fnmatch = fnmatch.fnmatchcase
        self.which = which
        self.numeric = numeric  # --numeric-ids: no names are sent, every id is nameless
        items = spec.split(",")
        for item in items:
            if ":" not in item:
                raise E.UsageError(f"No colon found in --{which}: {item}")
        # uidlist.c parse_name_map(): a TO name unknown here is reported (the list is
        # parsed from its end) and its rule left out; the transfer goes on.
        rules: list[tuple[str, int]] = []
        for item in reversed(items):
            frm, to = item.rsplit(":", 1)
            num = self._id(to)
            if num is None:
                if warn is not None:
                    warn(f"Unknown --{which} name on receiver: {to}")
                continue
            rules.append((frm, num))
        self.rules = rules[::-1]
        self._cache: dict[int, int] = {}

    def _id(self, name: str) -> int | None:
        if name.isdigit():
            return int(name)
        import grp
        import pwd

        try:
            return pwd.getpwnam(name).pw_uid if self.which == "usermap" else grp.getgrnam(name).gr_gid
        except KeyError:
            return None

    def _name(self, num: int) -> str | None:
        import grp
        import pwd

        try:
            return pwd.getpwuid(num).pw_name if self.which == "usermap" else grp.getgrgid(num).gr_name
        except KeyError:
            return None

    def get(self, num: int, default: int | None = None) -> int:
        got = self._cache.get(num)
        if got is not None:
            return got
        result = num
        for frm, to in self.rules:
            if frm == "*":
                result = to
                break
            if frm[:1].isdigit():
                lo, _, hi = frm.partition("-")
                if int(lo) <= num <= int(hi or lo):
                    result = to
                    break
                continue
            # uidlist.c recv_add_id(): a missing name is "", which an empty FROM matches.
            name = "" if self.numeric else self._name(num) or ""
            if self._fnmatch(name, frm):
                result = to
                break
        self._cache[num] = result
        return result

    def __bool__(self) -> bool:
        return True


def _parse_ids(spec: str | None, numeric: bool, which: str,
               warn: Callable[[str], None] | None = None) -> IdMap | None:
    if not spec:
        return None
    return IdMap(spec, which, numeric, warn)


def acl_id_maps(opts, inc_recurse: bool, am_root: bool) -> tuple | None:
    """-A: the --usermap/--groupmap (and --chown) rules for the ids of the received
    named ACL entries, (user rules, group rules), None if none apply. rsync maps them
    through the same id lists as the owners: acls.c recv_ida_entries() as they come
    with incremental recursion, where --numeric-ids leaves a user id alone (a group
    id too, when root); match_acl_ids() otherwise, every id after the list."""
    if not opts.acls or not (opts.usermap or opts.groupmap):
        return None
    numeric = bool(opts.numeric_ids)
    try:
        umap = None if inc_recurse and numeric else \
            _parse_ids(opts.usermap, numeric, "usermap")
        gmap = None if inc_recurse and numeric and am_root else \
            _parse_ids(opts.groupmap, numeric, "groupmap")
    except E.UsageError:
        return None  # (reported where the owners' maps are parsed)
    if umap is None and gmap is None:
        return None
    return (umap or {}), (gmap or {})


def map_acl_ids(entries, maps: tuple, memo: dict) -> None:
    """Map the named ACL entries' ids of ``entries`` by ``maps`` (acl_id_maps())."""
    from netsync.acls import map_ids

    umap, gmap = maps
    for e in entries:
        if e.acl is not None:
            e.acl = map_ids(e.acl, umap, gmap, memo)


def alt_basis_dirs(opts, dest_root: bytes) -> list[bytes]:
    """The --link-dest/--copy-dest/--compare-dest dirs, relative ones under the
    destination.  main.c check_alt_basis_dirs(): the dest a dry run could not create
    is left out by dropping one leading "../" (rather than resolving through it)."""
    alt = opts.alt_dest
    if not alt:
        return []
    alt_dirs = [_under(dest_root, d) for d in alt[1]]
    if opts.dry_run and not os.path.isdir(dest_root):
        up = os.path.dirname(dest_root.rstrip(b"/")) or b"."
        alt_dirs = [up + b"/" + os.fsencode(d)[3:].rstrip(b"/") if d.startswith("../")
                    else a_dir for d, a_dir in zip(alt[1], alt_dirs, strict=True)]
    return alt_dirs


def check_alt_basis_dirs(rep, alt: tuple[str, list[str]], alt_dirs: list[bytes],
                         dest_root: bytes, sanitized: bool = False) -> None:
    """main.c check_alt_basis_dirs(): a --*-dest dir that is missing, or not a dir, is
    warned about, named from the destination dir (a daemon's sanitized path as is; a
    dry run's missing destination without it, as alt_basis_dirs() looked)."""
    dest_missing = not os.path.isdir(dest_root)
    for d, path in zip(alt[1], alt_dirs, strict=True):
        try:
            why = None if stat.S_ISDIR(os.stat(path).st_mode) else "is not a dir"
        except OSError:
            why = "does not exist"
        if why is None:
            continue
        shown = os.fsencode(d).rstrip(b"/") or b"/"
        if not shown.startswith(b"/") and not sanitized:
            top = os.path.normpath(os.path.join(os.getcwdb(), dest_root))
            if dest_missing and shown.startswith(b"../"):
                top, shown = os.path.dirname(top), shown[3:]
            shown = top.rstrip(b"/") + b"/" + shown
        rep.warn_msg(f"--{alt[0]} arg {why}: {rep.safe(shown)}")


def _receiver_munges(opts) -> bool:
    """--munge-links acts on one side: a local copy's client is the sender, which
    unmunges (sender.unmunge_links); the receiver munges when -M gave it the option."""
    last = None
    for ro in opts.remote_option:
        if ro in ("--munge-links", "--no-munge-links"):
            last = ro
    return last == "--munge-links"


def local_sync(opts, sources: list[bytes], dest: bytes | None) -> int:
    from netsync.flist import WalkOptions
    from netsync.generator import Generator, GenOptions
    from netsync.metadata import AttrOptions
    from netsync.receiver import ReceiveOptions, Receiver
    from netsync.report import Reporter
    from netsync.sender import Sender

    start = time.time()
    am_root = os.geteuid() == 0
    list_only = dest is None
    rep = Reporter(
        prog=PROG, info=dict(opts.info), quiet=opts.quiet, itemize=opts.itemize_changes,
        out_format=opts.out_format, log_file=opts.log_file,
        log_file_format=opts.log_file_format, dry_run=opts.dry_run,
        eight_bit=opts.eight_bit_output, human=opts.human_readable,
        progress=opts.progress, preserve_mtimes=opts.times, stats=bool(opts.stats),
    )
    filters = rfilters = None
    from netsync import filters as F

    F.set_output(rep.info, rep.warn_msg, opts.debug.get("filter", 0))  # -vv traces
    if opts.filter_args or opts.cvs_exclude:

        # Each side keeps its own per-directory merge state (and its own root).
        filters = F.build_filter_list(opts.filter_args, opts.cvs_exclude, opts.delete_excluded,
                                      opts.from0)
        with F.muted():
            rfilters = F.build_filter_list(opts.filter_args, opts.cvs_exclude,
                                           opts.delete_excluded, opts.from0)
    chmod_rules = None
    if opts.chmod:
        from netsync.chmod import parse_chmod

        chmod_rules = parse_chmod(opts.chmod)
    relative = bool(opts.relative)
    w = WalkOptions(
        recursive=bool(opts.recursive or opts.recurse), dirs=bool(opts.dirs), relative=relative,
        implied_dirs=opts.implied_dirs, links=opts.links, copy_links=opts.copy_links,
        copy_unsafe_links=opts.copy_unsafe_links, copy_dirlinks=opts.copy_dirlinks,
        one_file_system=opts.one_file_system, hard_links=bool(opts.hard_links),
        devices=opts.devices, specials=opts.specials, checksum=opts.checksum,
        # (-A with --chmod: the ACLs take the receiver's form once the mode is tweaked)
        atimes=bool(opts.atimes), acls=(1 if chmod_rules else 2) if opts.acls else 0,
    )
    csum = _file_checksum_fn() if opts.checksum else None
    xa_recv = None
    if opts.xattrs:  # -X: the walk reads each list, as the receiving side keeps it
        from netsync.xattrs import local_setup

        xa_recv = local_setup(opts, w, filters, rfilters, rep)
    gen_cls = Generator
    if opts.delete_missing_args:
        # The wire client's pieces: a missing argument becomes a mode-0 entry, which
        # the generator turns into a deletion (flist.c send_file_name, generator.c).
        from netsync.client import _missing_args_gen, _wire_sender_cls

        sender = _wire_sender_cls(Sender)(w, rep, filters, csum)
        sender.missing_args = 2
        gen_cls = _missing_args_gen(Generator)
    else:
        sender = Sender(w, rep, filters, csum)
        if opts.ignore_missing_args:
            sender.missing_args = 1
    files_from = None
    if opts.files_from:
        files_from = _read_files_from(opts.files_from, opts.from0)
    # flist.c: what the client says while it builds the list.
    # (a --protocol rsync's two local processes would speak counts as on the wire)
    proto = opts.protocol or 32
    inc_recurse = w.recursive and opts.inc_recursive and proto >= 30 \
        and not (opts.delete_before or opts.delete_after or opts.delay_updates
                 or opts.prune_empty_dirs or opts.qsort)
    sender.rsync_inc = inc_recurse
    show_flist = rep.level("flist") >= 1 and w.dirs or w.recursive
    show_flist = show_flist and rep.level("flist") >= 1 and not inc_recurse and not opts.quiet
    _nstr_report(opts, rep)
    rep._log_file_msg("building file list")
    if show_flist:
        rep.flist_start("building file list")
    elif inc_recurse and rep.level("flist") >= 1 and not opts.quiet:
        rep.client_info("sending incremental file list")  # flist.c: FCLIENT
    t0 = time.time()
    import gc

    from netsync.messages import Stats

    stats = Stats()
    # rsync's incremental recursion: list a directory at a time, a little ahead of the
    # generator, and drop each one once generated, so memory stays flat on huge trees.
    # The whole list is built first where rsync disables it (inc_recurse above) and
    # where this engine needs it: several sources, -R, --files-from, -H.
    stream = inc_recurse and not list_only and files_from is None and len(sources) == 1 \
        and not opts.delete_missing_args \
        and not relative and not opts.hard_links \
        and not (opts.delete and opts.delete_mode not in (None, "during", "delay"))
    feed = None
    flist_size = [4]
    acl_maps = acl_id_maps(opts, inc_recurse, am_root or opts.fake_super)  # -A with maps
    acl_memo: dict = {}
    if stream:
        from netsync.flist import ChunkFeed

        tweak = None
        if chmod_rules:
            from netsync.chmod import tweak_mode

            tweak = tweak_mode

        def on_chunk(children: list) -> None:
            if proto < 31:
                _whole_seconds(children)
            if tweak is not None:
                for e in children:
                    if not stat.S_ISLNK(e.mode):
                        e.mode = tweak(e.mode, chmod_rules)
                        if e.acl is not None:
                            e.acl = _acl_received(e)
            if acl_maps is not None:
                map_acl_ids(children, acl_maps, acl_memo)
            stats.count_listed(children)
            flist_size[0] += sum(map(len, map(_name_of, children))) + 8 * len(children)

        def on_eof() -> None:
            if rep.progress is not None:
                rep.progress.flist_eof = True

        feed = ChunkFeed(sender.iter_chunks(sources), sender.flist, on_chunk, on_eof)
        feed.fill()
        flist = sender.flist
    else:
        # The list is millions of small acyclic objects: collecting while it grows only
        # rescans them (~15% of a big no-op), and once built they stay till the end.
        gc.disable()
        counter = rep.list_counter() if show_flist else None
        if counter is not None:
            sender.on_count = counter.sending
        try:
            if files_from is not None:
                flist = sender.build_file_list([], files_from, sources[0])
            else:
                flist = sender.build_file_list(sources)
        finally:
            gc.enable()
        if proto < 31:
            _whole_seconds(flist.entries)
    gc.freeze()
    build_time = time.time() - t0
    rep.roots = flist.roots
    if show_flist:
        rep.flist_done(len(flist.entries))
    if opts.prune_empty_dirs:
        _prune_empty_dirs(flist, rfilters)
    if chmod_rules and feed is None:
        from netsync.chmod import tweak_mode

        for e in flist.entries:
            if not stat.S_ISLNK(e.mode):
                e.mode = tweak_mode(e.mode, chmod_rules)
                if e.acl is not None:
                    e.acl = _acl_received(e)
    if acl_maps is not None and feed is None:
        map_acl_ids(flist.entries, acl_maps, acl_memo)
    if feed is None:
        stats.count_listed(flist.entries)
        flist_size[0] += sum(len(e.name) + 8 for e in flist.entries)
    stats.flist_buildtime = max(build_time, 0.001)  # (flist.c: >= 1 ms)
    if list_only:
        if flist.entries:
            list_only_checks(opts, rep)
        return _list(opts, rep, flist, stats, start)
    assert dest is not None
    if feed is not None:
        # main.c get_local_name() runs on the first list(s): file_total is what has
        # been listed so far (all of it, or more than one entry either way).
        solo, dry_missing = _local_name(opts, rep, feed.first, feed.listed, dest)
    else:
        solo, dry_missing = _get_local_name(opts, rep, flist, dest)
    dest_root = dest.rstrip(b"/") or b"/"
    base = recv_base(dest_root, solo)
    if not solo:
        _check_dest_dir(dest_root)
    dest_root = _into_dest(dest_root, solo)
    if not solo:
        rep.top_dir = dest_root
    umask = os.umask(0)
    os.umask(umask)
    uid_map = _parse_ids(opts.usermap, opts.numeric_ids, "usermap", rep.warn_msg)
    gid_map = _parse_ids(opts.groupmap, opts.numeric_ids, "groupmap", rep.warn_msg)
    cu = cg = None  # options.py turns --chown into --usermap/--groupmap, as rsync does
    a = AttrOptions(
        perms=opts.perms, executability=opts.executability, owner=opts.owner,
        group=opts.group, times=opts.times,
        omit_dir_times=bool(opts.omit_dir_times), omit_link_times=opts.omit_link_times,
        atimes=bool(opts.atimes), am_root=am_root, dry_run=opts.dry_run,
        modify_window=opts.modify_window or 0, uid_map=uid_map, gid_map=gid_map,
        chown_uid=cu if am_root else None, chown_gid=cg, umask=umask, xattrs=xa_recv,
        acls=opts.acls, shown=rep.qpath,
    )
    enc = os.fsencode
    ropts = ReceiveOptions(
        inplace=opts.inplace, append=opts.append, partial=opts.partial,
        partial_dir=enc(opts.partial_dir) if opts.partial_dir and not opts.delay_updates else None,
        temp_dir=_under(base, opts.temp_dir) if opts.temp_dir else None,
        delay_updates=opts.delay_updates, sparse=opts.sparse, backup=opts.backup,
        stage_dir=enc(opts.partial_dir or ".~tmp~") if opts.delay_updates else b".~tmp~",
        backup_dir=_under(base, opts.backup_dir) if opts.backup_dir else None,
        suffix=enc(opts.suffix or ""), dry_run=opts.dry_run,
    )
    alt = opts.alt_dest
    alt_dirs = alt_basis_dirs(opts, base)
    if alt:
        check_alt_basis_dirs(rep, alt, alt_dirs, base)
    delete_mode = None
    if opts.delete:
        delete_mode = opts.delete_mode or "during"
    g = GenOptions(
        recursive=w.recursive, dirs=w.dirs, links=opts.links, safe_links=opts.safe_links,
        munge_links=_receiver_munges(opts), keep_dirlinks=opts.keep_dirlinks,
        hard_links=bool(opts.hard_links), devices=opts.devices and not opts.drop_D,
        specials=opts.specials and not opts.drop_D,  # --drop-D: the generator creates none
        checksum=opts.checksum, size_only=opts.size_only, ignore_times=opts.ignore_times,
        update=opts.update, existing=opts.existing, ignore_existing=opts.ignore_existing,
        max_size=opts.max_size, min_size=opts.min_size,
        whole_file=opts.whole_file is not False, append=opts.append, delete=opts.delete,
        delete_mode=delete_mode, force=opts.force, max_delete=opts.max_delete,
        ignore_errors=opts.ignore_errors, remove_source_files=bool(opts.remove_source_files),
        backup=opts.backup, backup_dir=ropts.backup_dir, suffix=ropts.suffix,
        alt_dest=alt_dirs, alt_dest_type=alt[0].split("-")[0] if alt else None,
        implied_dirs=opts.implied_dirs, relative=relative, dry_run=opts.dry_run,
        am_root=am_root, omit_dir_times=bool(opts.omit_dir_times), mkpath=opts.mkpath,
        inc_recurse=inc_recurse,
        fuzzy=opts.fuzzy, fuzzy_debug=opts.debug.get("fuzzy", 0),
    )
    recv_dir_checks(opts, rep, b"." if dry_missing else base)
    ropts.bwlimit = opts.bwlimit_bytes or 0
    ropts.backup_nsec = proto >= 31
    receiver = Receiver(ropts, a, rep)
    if rfilters is not None:
        rfilters.set_root(os.path.abspath(dest_root))
    def removed(ndx: int) -> None:
        # sender.c remove_source_file(): a local copy's source that is the very file
        # the receiver just made (syncing a dir onto itself) is never removed
        sender.remove_source(ndx, gen.dpath(flist.entry(ndx).name))

    gen = gen_cls(g, a, flist, dest_root, receiver, sender.send_file, rep, rfilters, csum,
                  on_success=removed, solo_file=solo)
    gen.stats = stats
    gen.feed = feed
    if opts.acls:
        from netsync.client import acl_inc_dirs

        gen.acl_inc_dirs = acl_inc_dirs(opts, bool(opts.inc_recursive))
    gen.local_append_verify = True
    if dry_missing:
        gen.dry_missing = b"."
    rep.attach_stats(stats)
    gen.pool_ok = gen.pool_allowed()  # (after attach_stats(): --progress keeps it off)
    if feed is not None and rep.progress is not None:
        rep.progress.flist_eof = feed.eof  # "ir-chk" while the list is still growing
    if opts.debug.get("flist", 0) >= 1:
        # generator.c: append mode always sends deltas
        rep.info("delta-transmission " + ("enabled" if opts.append or opts.whole_file is False
                                          else "disabled for local transfer or --whole-file"))
    try:
        gen.run()
    except _Signalled:
        receiver.abort()
        raise
    finally:
        sender.close()
        if rep.progress is not None:
            rep.progress.newline_if_needed()
    io_error = flist.io_error | sender.io_error
    matched = gen.delta_totals[3]
    stats.literal_data -= matched
    stats.matched_data += matched
    if opts.debug.get("deltasum", 0) >= 1:
        # match.c match_report(), from the sender once all files are sent
        m_, hits, alarms, _ = gen.delta_totals
        rep.info(f"total: matches={m_}  hash_hits={hits}  false_alarms={alarms} "
                 f"data={stats.literal_data}")
    _summary(opts, rep, stats, start, flist_size[0])
    code = rep.exit_code(io_error)
    rep.log_exit(code)
    _exit_line(code)
    rep.close()
    return code


def _nstr_report(opts, rep) -> None:
    """--debug=NSTR: the checksum and compression a local run settles on (checksum.c
    parse_checksum_choice, compat.c parse_compress_choice); a choice not given is
    negotiated with the local server side, which agrees on our first preference."""
    if opts.debug.get("nstr", 0) < 1:
        return
    if opts.checksum_choice:
        rep.info(f"Client checksum: {opts.checksum_choice}")
    else:
        rep.info("Client negotiated checksum: xxh128")
    if not opts.compress and opts.compress_level is None:
        return
    from netsync.token import compression_level

    name = opts.compress_choice.lower() if opts.compress_choice else "zstd"
    level = compression_level(name, opts.compress_level)
    shown = opts.compress_choice or name
    if level is None:  # token.c init_compression_level(): the "off" level
        shown, level = "none", opts.compress_level
    rep.info(f"Client{'' if opts.compress_choice else ' negotiated'} compress: "
             f"{shown} (level {level})")


def _prune_empty_dirs(flist, rfilters) -> None:
    """-m: drop directories with nothing but (empty) directories below them, unless
    the receiver's rules exclude (protect) them."""
    from netsync.filters import receiver_dir_excluder
    from netsync.flist import FLAG_TOP_DIR, dirs_kept_by_prune

    keep = dirs_kept_by_prune(flist.entries, receiver_dir_excluder(rfilters))
    old = flist.entries
    out = [e for e in old if not stat.S_ISDIR(e.mode) or e.name in keep
           or e.flags & FLAG_TOP_DIR]
    if len(out) != len(old):
        remap = {id(e): i for i, e in enumerate(out)}
        for e in out:
            if e.hlink is not None:
                e.hlink = remap.get(id(old[e.hlink]))
        flist.entries = out


_name_of = operator.attrgetter("name")


def _into_dest(dest_root: bytes, solo: bool) -> bytes:
    """main.c get_local_name() chdir()s into the destination dir: one that is a symlink
    to a dir is followed, not replaced."""
    if not solo and os.path.islink(dest_root) and os.path.isdir(dest_root):
        return dest_root + b"/."
    return dest_root


def _get_local_name(opts, rep, flist, dest: bytes) -> tuple[bool, bool]:
    return _local_name(opts, rep, flist.entries, len(flist.entries), dest)


def _acl_received(e) -> tuple:
    """-A --chmod: the raw ACLs read by the walk, as a receiver gets them for the
    tweaked mode (rsync applies --chmod before get_acl()/send_acl())."""
    from netsync.acls import as_received

    return as_received(e.acl[0], e.acl[1], e.mode)


def _local_name(opts, rep, first: list, file_total: int, dest: bytes) -> tuple[bool, bool]:
    """main.c get_local_name(): is the destination one file, and does it exist yet?

    ``first`` is the start of the list, ``file_total`` how many entries it has (so
    far). Returns (solo_file, dest_missing_in_dry_run).
    """
    from netsync.flist import FLAG_DIR_CREATED

    show = rep.level("name") >= 1 or rep.has_i
    trailing = dest.endswith(b"/")
    has_slash = b"/" in dest
    stat_errno = 0
    try:
        st = os.stat(dest)
    except OSError as ex:
        st, stat_errno = None, ex.errno or errno.EIO
    if opts.mkpath and st is None and (has_slash or file_total > 1):
        drop_name = not (file_total > 1 and not trailing)
        cut = dest.rfind(b"/")
        target = dest[:cut] if drop_name and cut >= 0 else dest
        try:
            made = _make_path(target, opts.dry_run)
        except OSError as ex:  # main.c mkdir_error: the destination as given is named
            raise E.RsyncError(E.RERR_FILEIO, f"[Receiver] mkdir {_qdest(rep, dest)} failed: "
                               f"{os.strerror(ex.errno or 0)} ({ex.errno})") from None
        if made and show:
            shown = dest[:cut] if cut >= 0 and (file_total == 1 or trailing) else dest
            rep.info(f"created {made} director{'y' if made == 1 else 'ies'} for {rep.safe(shown)}")
        if made and not opts.dry_run:
            try:
                st = os.stat(dest)
            except OSError as ex:
                st, stat_errno = None, ex.errno or errno.EIO
    if st is None and stat_errno != errno.ENOENT:
        # main.c: "If we don't know what's at the destination, fail."
        raise E.RsyncError(E.RERR_FILESELECT, f"[Receiver] ERROR: cannot stat destination "
                           f"{_qdest(rep, dest)}: {os.strerror(stat_errno)} ({stat_errno})")
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return False, False
        if file_total > 1:
            raise E.RsyncError(E.RERR_FILESELECT, "ERROR: destination must be a directory "
                               "when copying more than 1 file", bare=True)  # (rprintf)
        if file_total == 1 and stat.S_ISDIR(first[0].mode):
            raise E.RsyncError(E.RERR_FILESELECT, "ERROR: cannot overwrite non-directory "
                               "with a directory", bare=True)
    if file_total > 1 or trailing:
        path = dest.rstrip(b"/") or b"/"
        if st is not None:
            raise E.RsyncError(E.RERR_SYNTAX, "ERROR: destination path is not a directory",
                               bare=True)
        if not opts.dry_run:
            try:
                os.mkdir(path, 0o777)
            except OSError as ex:
                # main.c get_local_name(): rsyserr() in the receiver
                raise E.RsyncError(E.RERR_FILEIO, f'[Receiver] mkdir {rep.qpath(path)} '
                                   f"failed: {os.strerror(ex.errno or 0)} ({ex.errno})") from ex
        if first and first[0].name == b".":
            first[0].flags |= FLAG_DIR_CREATED
        if show:
            rep.info(f"created directory {rep.safe(path)}")
        return False, bool(opts.dry_run)
    # A single file: its parent dir is entered (main.c: change_dir#3), if it has one.
    cut = dest.rfind(b"/")
    if cut >= 0 and not (opts.dry_run and opts.mkpath):
        parent = dest[:cut] or b"/"
        try:
            if not stat.S_ISDIR(os.stat(parent).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "")
            if not os.access(parent, os.X_OK):
                raise PermissionError(errno.EACCES, "")
        except OSError as ex:
            raise E.RsyncError(E.RERR_FILESELECT, f"[Receiver] change_dir#3 "
                               f"{rep.qpath(parent)} failed: {os.strerror(ex.errno or 0)} "
                               f"({ex.errno})") from ex
    return True, False


def _qdest(rep, dest: bytes) -> str:
    """util1.c full_fname() of the destination as given (a trailing slash kept)."""
    q = rep.qpath(dest)
    return q[:-1] + '/"' if dest.endswith(b"/") and not q.endswith('/"') else q


def _make_path(path: bytes, dry_run: bool) -> int:
    """Create missing parents of ``path`` (inclusive); return how many were made."""
    missing = []
    p = path.rstrip(b"/")
    while p and not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    if not dry_run:
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                pass
            except OSError:
                raise  # (the caller names the destination, as rsync's mkdir_error)
    return len(missing)


def _check_dest_dir(dest_root: bytes) -> None:
    """util1.c change_dir(): the destination is an operator path, so a symlink
    in it owned by another user is refused (exit 3) instead of followed."""
    from netsync import safepath

    try:
        os.close(safepath.owner_open_dir(dest_root))
    except OSError as ex:
        if ex.errno == errno.ELOOP:
            full = dest_root if dest_root.startswith(b"/") else os.getcwdb() + b"/" + dest_root
            raise E.RsyncError(E.RERR_FILESELECT, f'[Receiver] change_dir#1 "{os.fsdecode(full)}/" '
                               f"failed: {os.strerror(ex.errno)} ({ex.errno})") from None


def _whole_seconds(entries) -> None:
    """Before protocol 31 a list entry's mtime has no nanoseconds (XMIT_MOD_NSEC)."""
    for e in entries:
        e.mtime_ns -= e.mtime_ns % 1_000_000_000


def recv_base(dest_root: bytes, solo: bool) -> bytes:
    """Where main.c get_local_name() leaves the receiver: in the destination dir, or
    for a single file in its parent (where it was, for a name with no dir).  Relative
    --temp-dir, --backup-dir and --*-dest paths start there."""
    if not solo:
        return dest_root
    cut = dest_root.rfind(b"/")
    return b"." if cut < 0 else dest_root[:cut] or b"/"


def recv_dir_checks(opts, rep, base: bytes) -> None:
    """main.c do_recv(): --backup-dir and --temp-dir, relative ones from ``base`` (the
    receiver's dir: where a dry run into a missing destination did not go, it stayed)."""
    if opts.backup_dir:
        from netsync.receiver import check_backup_dir

        check_backup_dir(_under(base, opts.backup_dir),
                         rep.safe(os.fsencode(opts.backup_dir).rstrip(b"/") or b"/"), rep)
    if opts.temp_dir:
        _check_temp_dir(_under(base, opts.temp_dir), opts.temp_dir)


def list_only_checks(opts, rep) -> None:
    """client_run() and do_recv() with --list-only: get_local_name() stays where it
    is, and the --*-dest, --backup-dir and --temp-dir checks are made from there."""
    alt = opts.alt_dest
    if alt:
        check_alt_basis_dirs(rep, alt, alt_basis_dirs(opts, b"."), b".")
    recv_dir_checks(opts, rep, b".")


def _check_temp_dir(tdir: bytes, shown: str) -> None:
    """main.c do_recv(): --temp-dir must be an existing directory."""
    try:
        st = os.stat(tdir)
        msg, code = (None, 0) if stat.S_ISDIR(st.st_mode) else \
            (f"The temp-dir is not a directory: {shown}", E.RERR_SYNTAX)
    except OSError as ex:
        msg, code = ((f"The temp-dir does not exist: {shown}", E.RERR_SYNTAX)
                     if ex.errno == errno.ENOENT else
                     (f"Failed to stat temp-dir {shown}: {os.strerror(ex.errno or 0)}",
                      E.RERR_FILEIO))
    if msg is not None:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()
        raise E.RsyncError(code, None)


def _under(dest_root: bytes, d: str) -> bytes:
    """Relative --backup-dir/--*-dest paths are relative to the destination dir."""
    p = os.fsencode(d)
    if p.startswith(b"/"):
        return p.rstrip(b"/") or b"/"
    return dest_root + b"/" + p.rstrip(b"/")


def _read_files_from(spec: str, from0: bool) -> list[bytes]:
    if spec == "-":
        data = sys.stdin.buffer.read()
    else:
        from netsync import safepath

        try:  # an operator path: no symlink owned by another user is followed
            fd = safepath.owner_open(spec, os.O_RDONLY)
        except OSError as ex:
            raise E.RsyncError(E.RERR_SYNTAX, f"failed to open files-from file {spec}: "
                               f"{os.strerror(ex.errno or 0)}") from None
        with open(fd, "rb") as f:
            data = f.read()
    sep = b"\0" if from0 else b"\n"
    out: list[bytes] = []
    for line in data.split(sep):
        line = line.rstrip(b"\r") if not from0 else line
        if not line or line[:1] in (b"#", b";"):
            continue
        out.append(line)
    return out


def _estimate_wire(stats, flist_size: int) -> tuple[int, int]:
    """Bytes rsync's sender would write / read for a list of ``flist_size`` bytes
    (approximate until the wire lands)."""
    stats.flist_size = flist_size
    sent = flist_size + stats.literal_data + 5 * stats.xferred_files + 20
    received = 4 * stats.xferred_files + 20
    stats.total_written = sent
    stats.total_read = received
    return sent, received


def _summary(opts, rep, stats, start: float, flist_size: int) -> None:
    from netsync import log

    sent, received = _estimate_wire(stats, flist_size)
    lines: list[str] = []
    if rep.level("stats") >= 3:  # rsync's three processes each show their heap
        for role in ("sender", "server receiver", "server generator"):
            lines += log.heap_stats_lines(rep.prog, role)
    if rep.level("stats") >= 2 or opts.stats:
        lines += log.stats_lines(stats, opts.human_readable)
    if rep.level("stats") >= 1 or opts.stats:
        lines += log.summary_lines(sent, received, int(time.time() - start), stats.total_size,
                                   opts.human_readable, opts.dry_run)
    if not opts.quiet:
        for line in lines:
            rep.out.write(line + "\n")
    rep.out.flush()
    rep.log_lines(lines)
    # log.c log_exit() at the end: the log file's plain summary (no digit grouping).
    rep.exit_totals = (sent, received, stats.total_size)


def _list(opts, rep, flist, stats, start: float) -> int:
    from netsync import log

    for e in flist.entries:
        if not opts.implied_dirs and e.flags & 2:
            continue
        rep.out.write(log.list_line(e.mode, e.size, e.mtime, e.name,
                                    e.link if opts.links and e.link is not None else None,
                                    opts.human_readable, eight_bit=opts.eight_bit_output) + "\n")
    _summary(opts, rep, stats, start, sum(len(e.name) + 8 for e in flist.entries) + 4)
    code = rep.exit_code(flist.io_error)
    rep.log_exit(code)
    _exit_line(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
