"""rsync's server side over a remote shell: ``netsync --server [--sender] -flags . PATH...``.

A stock rsync client starts this through ssh (``--rsync-path=netsync``) and
talks to it on stdin/stdout.  The roles are the client's, mirrored
(main.c start_server):

- ``--sender`` (the client pulls): read the client's filter list, walk the
  paths with the engine's Sender, send the file list, answer the client's
  generator (sender.c send_files), write the server sender's stats and
  take the goodbye (do_server_sender).
- otherwise (the client pushes): read the filter list when the receiver
  wants it, read the file list, run the engine's Generator and Receiver
  against the client's sender (do_server_recv / do_recv); unchanged items are
  itemized back to the client's sender, which prints them.

Nothing but protocol bytes goes to stdout: once multiplexing is on, messages
travel as MSG_INFO / MSG_ERROR / MSG_ERROR_XFER / MSG_WARNING / MSG_DELETED
frames, as rsync's rprintf() does on a server; before that, to stderr.

Incremental recursion is declined in the compat flags.  Under ``netsync
--daemon`` (netsync.daemon.server) the same code runs on the accepted
socket with a :class:`DaemonLink`: no binary version exchange, the module's
read-only/write-only rules, and an option error reported after the
handshake as rsync's rsync_module() does.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable

from netsync import errors as E
from netsync import log
from netsync import messages as m
from netsync.client import (
    ITEM_IS_NEW,
    ITEM_TRANSFER,
    PROG,
    ItemNdx,
    WireIO,
    _acls_need_30,
    _Client,
    inc_options_supported,
    read_files_from_file,
)
from netsync.io import ProtocolIO, RemoteExit
from netsync.record import Record
from netsync.report import Reporter
from netsync.transport import Connection, TransportError
from netsync.wire import DataEvent, Msg, WireError, encode_int32

__all__ = ["DaemonLink", "dont_compress_level", "run_server"]

MAX_RULE_LEN = 4096 + 3  # exclude.c recv_rules(): a rule longer than MAXPATHLEN+3 is fatal
RULE_COST = 1024  # what one parsed rule costs us, counted against --max-alloc


class DaemonLink(Record):
    """What a daemon connection settled before the binary protocol starts."""

    protocol: int  # negotiated from the @RSYNCD greetings
    remote_protocol: int
    read_only: bool = False
    write_only: bool = False
    error: str | None = None  # an option error to report once multiplexing (exit 4)
    files_from: bool = False  # the refused args held --files-from (a raw 0 byte is due)
    sanitize: bool = True  # sanitize_paths: the module is not a chroot of its own top
    pre_exec_error: str | None = None  # a failed pre-xfer exec's text (exit 4)
    incoming_chmod: list | None = None  # parsed "incoming chmod" rules (rsync.c set_file_attrs)
    module: str = ""  # the module's name, for messages
    charset: str = ""  # the module's "charset" (for a client's --iconv)
    dont_compress: str | None = None  # the module's "dont compress" list


def _no_item(*_args) -> None:
    pass


class ServerReporter(Reporter):
    """A Reporter whose text goes to the client as multiplexed messages.

    Per-file lines are the client's business (its sender or generator prints
    them); the server only forwards what rsync's server would rprintf().
    Under ``netsync --daemon`` (netsync.daemon.xferlog.current is set) every
    text message is also logged, and with ``transfer logging`` each
    transferred or deleted file gets a ``log format`` line, as rsync's daemon
    logs them (log.c rwrite()/log_item()/log_delete()).
    """

    def __init__(self, io: ProtocolIO, protocol: int, **kw) -> None:
        super().__init__(**kw)
        self.io = io
        self.protocol = protocol
        self.stats = None
        from netsync.daemon import xferlog

        self.xlog = xferlog.current
        if self.xlog is not None:
            self.xlog.reporter = self
            self._hook_io(io)
        if self.xlog is None or self.xlog.fmt is None:
            # No transfer logging: nothing to note or log per file (they run per file).
            self.log_item_transfer_start = _no_item  # type: ignore[method-assign]
            self.xfer_started = _no_item  # type: ignore[method-assign]
            self.log_item_transfer_end = _no_item  # type: ignore[method-assign]
            self.logs_transfers = False  # the wire sender's loop then skips both calls

    def _hook_io(self, io: ProtocolIO) -> None:
        """Log what goes to the client as text; count in-band bytes for %b/%c."""
        xlog = self.xlog
        assert xlog is not None
        send_msg = io.send_msg

        def logged_send_msg(code: int, payload: bytes) -> None:
            if code in (Msg.INFO, Msg.ERROR, Msg.ERROR_XFER, Msg.WARNING):
                xlog.message(code, payload)
            send_msg(code, payload)

        io.send_msg = logged_send_msg  # type: ignore[method-assign]
        self.count_io(io, xlog.wants_bytes and hasattr(io, "_advance"))

    # --iconv: a server's texts go in UTF-8 (io.c send_msg(..., convert)).
    text_out: Callable[[bytes], bytes] | None = None

    def _send(self, code: Msg, text: str) -> None:
        payload = os.fsencode(text + "\n")
        if self.text_out is not None:
            payload = self.text_out(payload)
        self.io.send_msg(code, payload)

    def safe(self, name: bytes) -> str:
        # log.c rwrite(): a server sends its messages raw; the client escapes the names
        # as it prints them (escaping here too, rsync's client showed "\#134#001").
        return os.fsdecode(name)

    def _delete_line(self, name: bytes, mode: int) -> str:
        # (before protocol 29 the line travels as text: raw, as safe())
        fmt = log.delete_format(self.stdout_format if self.has_o_or_i else None)
        return os.fsdecode(log.expand_log_format(fmt, log.LogItem.deletion(name, mode),
                                                 self.ctx))

    def _holding(self) -> bool:
        # Nothing is held back on a server: every line is a message to the client (a
        # line written to stdout here would land in the protocol stream).
        return False

    def _emit(self, line: str, stream=None) -> None:
        self._send(Msg.ERROR if stream is self.err else Msg.INFO, line)

    def error_xfer(self, msg: str, role: str | None = None, fatal_io: bool = False,
                   bare: bool = False) -> None:
        self.got_xfer_error = True
        self.saw_error = True
        tag = f" [{role}]" if role else ""
        self._send(Msg.ERROR_XFER, msg if bare else f"{self.prog}:{tag} {msg}")

    def warning(self, msg: str, role: str | None = None) -> None:
        self.got_vanished = True
        self._send(Msg.WARNING, msg)

    def warn_msg(self, msg: str) -> None:
        self._send(Msg.WARNING, msg)

    def attach_stats(self, stats) -> None:
        self.stats = stats  # no progress lines from a server; the daemon log's total size

    def flog(self, text: str) -> None:
        """rprintf(FLOG): a line for the daemon's log only."""
        if self.xlog is not None:
            self.xlog.out(text)

    def _xfer_item(self, e, iflags: int, hlink: bytes | None = None) -> None:
        xlog = self.xlog
        if xlog is None or xlog.fmt is None:
            return
        item = self._item(e, iflags, hlink)
        if not xlog.preserve_uid:
            item.uid = None  # %U prints 0 when uids are not preserved
        if not xlog.preserve_gid:
            item.gid = None  # %G prints DEFAULT
        if xlog.munge and item.link is not None and not self.ctx.am_sender:
            item.link = b"/rsyncd-munged/" + item.link  # the receiver's F_SYMLINK is munged
        if xlog.wants_bytes:
            item.written, item.read = self._moved_counts()
        xlog.item(item)

    def log_item(self, e, iflags: int, *, to_stdout: bool = True, to_logfile: bool = True,
                 hlink: bytes | None = None, written: int = 0) -> None:
        pass  # only a dry run's items come here: rsync logs them to the client alone

    def maybe_log_item(self, e, iflags: int, hlink: bytes | None = None) -> None:
        """log.c maybe_log_item() on a server: only a log format with %i sees these."""
        xlog = self.xlog
        if xlog is None or not xlog.has_i:
            return
        if iflags & log.SIGNIFICANT_ITEM_FLAGS & 0xFFFF or hlink:
            self._xfer_item(e, iflags, hlink)

    def log_item_transfer_start(self, e, iflags: int) -> None:
        self._mark_moved()  # (the line itself is the client's)

    def log_item_transfer_end(self, e, iflags: int, written: int) -> None:
        if not self.dry_run:
            self._xfer_item(e, iflags)

    def deleted(self, name: bytes, mode: int) -> None:
        """log.c log_delete(): from protocol 29 the client formats the line itself."""
        if self.protocol >= 29:
            self.io.send_msg(Msg.DELETED, name + (b"\0" if stat.S_ISDIR(mode) else b""))
        else:
            super().deleted(name, mode)
        if self.xlog is not None:
            self.xlog.deleted(name, mode)


class _Server(_Client):
    """The server half of a transfer; reuses the client's role loops."""

    def __init__(self, opts, daemon: DaemonLink | None = None) -> None:
        super().__init__(opts, [])
        self.daemon = daemon
        self.am_server = True
        self.am_sender = bool(opts.sender)
        self.who = "sender" if self.am_sender else "receiver"
        self.ndx_of: dict[int, int] = {}
        self.wire_filters = None
        self.remote_read = self.remote_written = 0  # only a client shows these
        self._ff_data: bytes | None = None
        self._sum_len: int | None = None  # _xfer_sum_len()'s, once negotiated

    # ------------------------------------------------------------------ setup
    def run(self) -> int:
        from netsync.options import _allow_inc_recurse
        from netsync.server_handshake import ServerHandshake, run_server_handshake

        opts = self.opts
        # what rsync in our place would negotiate (the lists' filter timing follows it)
        self._rsync_inc_opt = _allow_inc_recurse(opts, self.am_sender) \
            and "i" in (opts.server_caps or "")
        # compat.c set_allow_inc_recurse() for a server: the options, and an 'i' offered
        # (and, as a client, only the option sets our incremental lists support; a
        # sender walks one source a directory at a time).
        opts.inc_recursive = self._rsync_inc_opt and inc_options_supported(opts, self.am_sender) \
            and (not self.am_sender or len(opts.args) <= 2) \
            and not (opts.iconv and not self.am_sender)  # (see client._map_wire_order())
        d = self.daemon
        # rsync.c setup_iconv(): a daemon converts with its module's charset, and only
        # when the client asked for --iconv (refused where the module has none).
        self._iconv_open(opts.iconv, d.charset if d is not None else None)
        self._load_server_files_from()
        self.conn = Connection(sys.stdin.fileno(), sys.stdout.fileno(), who=self.who)
        self.conn.timeout = opts.timeout or None  # a client stalling the handshake times out
        hs = ServerHandshake(d.protocol if d else opts.protocol, caps=opts.server_caps,
                             checksum_choice=opts.checksum_choice,
                             compress=bool(opts.do_compression),
                             compress_choice=opts.compress_choice,
                             checksum_seed=opts.checksum_seed or None,
                             daemon_protocol=d.protocol if d else None,
                             remote_protocol=d.remote_protocol if d else None,
                             am_sender=self.am_sender, inc_recurse=opts.inc_recursive)
        neg = run_server_handshake(self.conn, hs)
        if d is not None and d.error is not None and d.files_from and not self.am_sender:
            self.conn.write(b"\0")  # rsync_module(): the files-from end, before multiplexing
        self.conn.count_from_here(hs.leftover)
        self.neg = neg
        opts.settle_protocol(neg.protocol)
        _acls_need_30(opts, neg.protocol)
        self._xa_init()
        io = _ServerIO(self.conn, neg.protocol, who=self.who, timeout=opts.timeout or None)
        self.io = io
        self._iconv_negotiated()
        io.bwlimit = opts.bwlimit
        io.mplex_out = neg.mplex_out
        # main.c start_server(): a sender reads the generator's messages (multiplexed)
        # from protocol 30, or for --remove-source-files at any protocol.
        mplex_in = neg.mplex_in or (self.am_sender and bool(opts.remove_source_files))
        # flist.c send_file_list(): below protocol 31 the client's --files-from names
        # follow its (framed) filter list unframed: stop demultiplexing at that point.
        io.hold = bool(mplex_in and neg.protocol < 31 and self.am_sender
                       and opts.files_from == "-")
        if mplex_in:
            io.start_multiplex_in(hs.leftover)
        else:
            io.add_leftover(hs.leftover)
        self.rep = self._reporter()
        if self.iconv is not None:
            self.rep.text_out = self.iconv.text_to_wire
        if d is not None and getattr(d, "module", None):
            self.rep.module = (d.module, os.getcwdb().rstrip(b"/") or b"/")
        from netsync import filters as F

        # The filter traces (-vv) and messages go to the client, as rsync's server's.
        F.set_output(self.rep.info, self.rep.warn_msg, opts.debug.get("filter", 0),
                     am_server=True)
        args = [os.fsencode(a) for a in opts.args]
        if d is not None:
            self._daemon_checks(d)
        self._refuse_server_unsupported()
        if opts.copy_as is not None:  # main.c become_copy_as_user(), as the roles start
            from netsync.metadata import become_copy_as_user

            failed = become_copy_as_user(opts.copy_as)
            if failed is not None:
                raise (_Bare if failed[1] else E.RsyncError)(E.RERR_SYNTAX, failed[0])
        if self.am_sender:
            return self._serve_sender(args)
        return self._serve_receiver(args)

    def _daemon_checks(self, d: DaemonLink) -> None:
        """rsync_module()'s option error, then do_server_sender/recv()'s module rules."""
        if d.pre_exec_error is not None:
            # rsync_module(): the hook's text as written, one error line at a time.
            *lines, last = d.pre_exec_error.rstrip("\n").split("\n")
            assert self.io is not None
            for line in lines:
                self.io.send_msg(Msg.ERROR, os.fsencode(line + "\n"))
            raise _Bare(E.RERR_UNSUPPORTED, last)
        if d.error is not None:
            raise E.RsyncError(E.RERR_UNSUPPORTED, d.error)
        if self.am_sender and d.write_only:
            raise _Bare(E.RERR_SYNTAX, "ERROR: module is write only")
        if self.am_sender and d.read_only and self.opts.remove_source_files:
            which = "sent" if self.opts.remove_source_files > 1 else "source"
            raise _Bare(E.RERR_SYNTAX,
                        f"ERROR: --remove-{which}-files cannot be used with a read-only module")
        if not self.am_sender and d.read_only:
            raise _Bare(E.RERR_SYNTAX, "ERROR: module is read only")
        if not self.am_sender:
            self._daemon_dest_check()

    def _daemon_dest_check(self) -> None:
        """main.c get_local_name(): a destination the module's own rules exclude."""
        from netsync import filters as F

        args = self.opts.args
        if F.daemon_excluded is None or len(args) < 2 or self.opts.list_only:
            return
        dest = os.fsencode(args[1]) or b"."
        cleaned = os.path.normpath(dest)
        if cleaned != b"." and (F.daemon_excluded(cleaned, False)
                                or F.daemon_excluded(cleaned, True)):
            raise _Bare(E.RERR_FILESELECT,
                        f'ERROR: daemon has excluded destination "{args[1]}"')

    def _xfer_sum_len(self) -> int:
        """The negotiated transfer digest's length, looked up once: every file's sum
        head is checked against it (the client's version imports per call)."""
        n = self._sum_len
        if n is None:
            n = self._sum_len = super()._xfer_sum_len()
        return n

    def _refuse_server_unsupported(self) -> None:
        """Options this server cannot yet serve (none at the moment)."""

    def _load_server_files_from(self) -> None:
        """options.c: ``--files-from=PATH`` names a list on this side, opened at startup
        (before any chdir); "-" means the client sends it over the connection."""
        opts = self.opts
        path = opts.files_from
        if path is None or path == "-":
            return
        if self.daemon is not None and self.daemon.sanitize:
            from netsync.daemon.server import sanitize_path

            path = os.fsdecode(sanitize_path(os.fsencode(path)))
        self._ff_data = read_files_from_file(path)

    def _reporter(self):
        opts = self.opts
        assert self.io is not None
        rep = ServerReporter(
            self.io, self.neg.protocol, prog=PROG, info=dict(opts.info), quiet=opts.quiet,
            itemize=opts.itemize_changes, out_format=opts.out_format, dry_run=opts.dry_run,
            eight_bit=opts.eight_bit_output, human=opts.human_readable,
            preserve_mtimes=opts.times,
        )
        rep.ctx = log.LogContext(am_sender=self.am_sender, local_server=False,
                                 preserve_mtimes=bool(opts.times))
        if log.log_format_has(opts.out_format, "I"):
            # options.c: a client's -ii arrives as --log-format=%i%I, and a server's
            # generator then reports unchanged items to the sender too.
            rep.has_i = 2
        return rep

    def _recv_filter_list(self):
        """exclude.c recv_filter_list(): the client's rules, parsed as a server does."""
        from netsync import filters as F

        io = self.io
        assert io is not None
        opts = self.opts
        rules: list[bytes] = []
        budget = opts.max_alloc or 1 << 30  # each rule is a my_alloc() in rsync
        while True:
            n = io.read_int()
            if n == 0:
                break
            if n < 0 or n >= MAX_RULE_LEN:
                raise WireError(f"overflow: filter rule of {n} bytes [{self.who}]",
                                E.RERR_PROTOCOL)
            budget -= n + RULE_COST
            if budget < 0:
                raise WireError(f"ERROR: out of memory in recv_filter_list [{self.who}]",
                                E.RERR_MALLOC)
            rules.append(io.read(n))
        if not rules and not opts.cvs_exclude:
            return None
        return F.FilterList.from_wire_rules(rules, self.neg.protocol,
                                            cvs_exclude=bool(opts.cvs_exclude),
                                            am_sender=self.am_sender,
                                            delete_excluded=bool(opts.delete_excluded))

    # ------------------------------------------------------------- the sender
    def _serve_sender(self, args: list[bytes]) -> int:
        """main.c do_server_sender()."""
        opts = self.opts
        io = self.io
        assert io is not None
        self.stats = stats = m.Stats()
        self.rep.attach_stats(stats)
        filters = self._recv_filter_list()
        if not args:
            raise E.RsyncError(E.RERR_SYNTAX, "ERROR: do_server_sender called without args")
        if not opts.relative:
            self._chdir(args[0], "change_dir#3")
        paths = args[1:]
        if not paths and (opts.recursive or opts.recurse or opts.dirs or opts.list_only):
            paths = [b"."]
        names = None
        if opts.files_from == "-":
            held = io.hold
            if held:
                io.end_multiplex_in()
            names = self._read_wire_files_from()
            if held:
                io.start_multiplex_in()
        elif opts.files_from is not None:
            names = self._read_local_files_from(opts.files_from)
        self.rep.flog("building file list")
        sender, flist, io_error = self._send_flist(paths, filters, names)
        lists = self._lists  # incremental recursion: the lists go out as they are asked for
        if not (flist.entries if lists is None else lists.file_total):
            io.flush()  # main.c do_server_sender(): an empty (first) list ends the run
            return 0
        io.ndx_limit = len(flist.entries) if lists is None else None
        if opts.remove_source_files:
            io.on_success = sender.remove_source if lists is None else lists.remove_source
        self._send_files(sender, flist.entries)
        # main.c handle_stats() for a server sender, then read_final_goodbye().
        proto = self.neg.protocol
        self._heap_stats()
        values = [self.conn.bytes_read, self.conn.bytes_written, stats.total_size]  # type: ignore[union-attr]
        if proto >= 29:
            values += [int(stats.flist_buildtime * 1000), int(stats.flist_xfertime * 1000)]
        for v in values:
            if proto >= 30:
                io.write_varlong(v, 3)
            else:
                _write_longint(io, v)
        io.flush()
        self._goodbye()
        io.flush()
        sender.close()  # (removals come up to the goodbye)
        return self.rep.exit_code(io_error | sender.io_error)

    def _chdir(self, path: bytes, what: str) -> None:
        from netsync import safepath

        root = (safepath.confine_root or b"").rstrip(b"/") if self.daemon is not None else b""
        try:
            if not root or path in (b"", b"."):
                os.chdir(path)
            else:
                # util1.c change_dir() in a daemon: walked from the module's top (the
                # cwd), a link on the way followed only while it stays inside.
                if path.startswith(b"/"):
                    if not path.startswith(root + b"/"):
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
                    path = path[len(root) + 1:]
                anchor = os.open(root, safepath.DIR_FLAGS)
                try:
                    fd = safepath.walk_beneath(anchor, path)
                finally:
                    os.close(anchor)
                try:
                    os.fchdir(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise E.RsyncError(E.RERR_FILESELECT,
                               f'{what} "{os.fsdecode(path)}" failed: {exc.strerror} '
                               f"({exc.errno})") from None

    # ----------------------------------------------------------- the receiver
    def _serve_receiver(self, args: list[bytes]) -> int:
        """main.c do_server_recv() + do_recv()."""
        opts = self.opts
        proto = self.neg.protocol
        self.stats = m.Stats()
        self.peer_sends_stats = False
        if args:
            self._chdir(args[0], "change_dir#4")
            args = args[1:]
        wants = opts.prune_empty_dirs or (opts.delete and (not opts.delete_excluded
                                                           or proto >= 29))
        if wants:
            self.wire_filters = self._recv_filter_list()
            if self._xa is not None:
                self._xa.set_filter(self.wire_filters, "receiver")
        if self._ff_data is not None:
            # do_server_recv(): forward our list while the client's file list comes in.
            self._forward_files_from(self._ff_data, bool(opts.from0))
        flist = self._recv_flist()
        self.ndx_of = {id(e): i for i, e in enumerate(flist.entries)}
        if opts.list_only:
            return self._list_only(flist)  # recv_generator(): list_file_entry() only
        dest = args[0] if args else b"."
        if self.daemon is not None:
            self._confined_dest(dest)
            dest = self._followed_dest(dest)
            self.rep.dest_root = dest
        return self._receive(flist, dest)

    @staticmethod
    def _followed_dest(dest: bytes) -> bytes:
        """A module with "insecure links": main.c get_local_name() changes into an
        existing destination dir with a plain chdir(), so a symlink on the way is
        followed (the 3.2.7 behaviour the option restores)."""
        from netsync import safepath

        if not safepath.insecure_links or dest in (b"", b"."):
            return dest
        try:
            if not os.path.isdir(dest) or os.path.realpath(dest) == os.path.abspath(dest):
                return dest
            os.chdir(dest)
        except OSError:
            return dest
        return b"."

    def _confined_dest(self, dest: bytes) -> None:
        """A daemon's destination is a path in the module (util1.c change_dir():
        secure_relative_open() from the module's top): a symlink on the way is
        followed, whoever owns it, only while it stays in the module; an absolute
        one, or one that climbs out, is refused."""
        from netsync import safepath

        if safepath.insecure_links:
            return
        comps = [c for c in dest.split(b"/") if c not in (b"", b".")]
        try:
            os.close(safepath.dir_following_beneath(None, b"/".join(comps)))
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise E.RsyncError(E.RERR_FILESELECT,
                                   f'change_dir#1 "{os.fsdecode(dest)}" (in {self.daemon.module}) '
                                   f"failed: {exc.strerror} ({exc.errno})") from None

    def _check_module_dirs(self) -> None:
        """main.c do_server_recv(): a --*-dest dir, or an absolute --partial-dir,
        that the module's own rules exclude rejects the client's options."""
        from netsync import filters as F

        if self.daemon is None or F.daemon_excluded is None:
            return
        from netsync.daemon.server import OPTIONS_REJECTED, sanitize_path

        opts = self.opts
        alt = opts.alt_dest
        dirs = list(alt[1]) if alt else []
        if opts.partial_dir and opts.partial_dir.startswith("/"):
            dirs.append(opts.partial_dir)
        for d in dirs:
            if F.daemon_excluded(sanitize_path(os.fsencode(d), b"/", 0), True):
                raise _Bare(E.RERR_SYNTAX, OPTIONS_REJECTED)

    def _compress_level(self) -> int | None:
        d = self.daemon
        return dont_compress_level(d.dont_compress if d else None,
                                   self.neg.compress or "none", self.opts.compress_level)

    def _list_emit(self, raw: bytes) -> None:
        # rprintf(FINFO): a MSG_INFO line to the client, raw (the client escapes it)
        self.rep.info(os.fsdecode(raw))

    def _recv_flist(self):
        self.rep.flog("receiving file list")
        flist = super()._recv_flist()
        self._received(flist.entries)  # (with incremental recursion: each list as it comes)
        return flist

    def _received(self, entries: list) -> None:
        """A daemon's say on a received list: symlinks sanitized, "incoming chmod"."""
        if self.daemon is not None and self.daemon.sanitize:
            from netsync.daemon.server import sanitize_path

            # flist.c recv_file_entry(): a symlink may not point above the module.
            for e in entries:
                if e.link:
                    parent = e.name.rpartition(b"/")[0]
                    depth = len([c for c in parent.split(b"/") if c not in (b"", b".")])
                    e.link = sanitize_path(e.link.lstrip(b"/"), b"", depth)
        if self.daemon is not None and self.daemon.incoming_chmod:
            from netsync.chmod import tweak_mode

            for e in entries:  # the module's modes win over the sender's
                if not stat.S_ISLNK(e.mode):
                    e.mode = tweak_mode(e.mode, self.daemon.incoming_chmod)

    def _receiver_filters(self):
        return self.wire_filters

    def _generator_cls(self, base: type) -> type:
        server = self
        # Items go to the sender (protocol >= 29), which echoes them: with incremental
        # recursion an echo may name a list already dropped, and is read past.
        self._send_items = self.neg.protocol >= 29
        self._dry_items = bool(self.opts.dry_run)

        class ServerGenerator(ItemNdx, base):  # type: ignore[misc, valid-type]
            """generator.c itemize() on a server: unchanged items go to the sender."""

            def report_item(self, e, iflags: int, xname: bytes | None = None) -> int:
                if not iflags & ITEM_TRANSFER and self.rep.should_send_itemize(iflags, xname):
                    server._send_item(e, iflags, xname, self._item_ndx)
                    self.rep.maybe_log_item(e, iflags, xname)  # the daemon's log (%i)
                    if iflags & ITEM_IS_NEW:
                        self._count_created(e)
                return iflags

            def _transfer(self, ndx, e, path, basis, dest_st, new_mode, iflags_extra=0,
                          basis_st=None, xname=None) -> None:
                if not self.g.dry_run or self.g.batch_only:  # (--only-write-batch asks)
                    return super()._transfer(ndx, e, path, basis, dest_st, new_mode,
                                             iflags_extra, basis_st, xname)
                # Dry run: the sender only logs the item (sender.c, !do_xfers).
                extra = log.ITEM_REPORT_CHANGE if self.g.checksum else 0
                iflags = self.itemize(e, basis_st, ITEM_TRANSFER | iflags_extra | extra)
                server._send_item(e, iflags, None, ndx)
                self._count_transfer(e, iflags)
                if self.g.hard_links and e.hlink is not None:
                    self._hl_finish(e)  # generator.c: !do_xfers finishes it now
                return None

        return ServerGenerator

    def _send_item(self, e, iflags: int, xname: bytes | None, ndx: int = -1) -> None:
        if self.neg.protocol >= 29:
            self._write_item(ndx if ndx >= 0 else self.ndx_of[id(e)], iflags, xname, e)

    def _expect_done(self) -> None:
        if self.opts.dry_run:
            # Dry-run echoes carry ITEM_TRANSFER but no data: skip them.
            nfiles = len(self.flist.entries) if self.flist is not None else 0
            while self._read_ndx_and_attrs(nfiles)[0] >= 0:
                pass
            return
        super()._expect_done()

    # ------------------------------------------------------------- endings
    def _summary(self, sent: int, received: int, total_size: int) -> None:
        pass  # the client prints the summary

    def _final_code(self, io_error: int) -> int:
        io = self.io
        assert io is not None
        if io.got_xfer_error:
            self.rep.got_xfer_error = True
        return self.rep.exit_code(io_error | io.io_error)


def dont_compress_level(dont_compress: str | None, codec: str,
                        level: int | None) -> int | None:
    """token.c init_set_compression() for a daemon module's "dont compress" list.

    rsync 3.5.0 matches names against the list but no codec can change its level
    mid-stream, so per-file suffixes never change the bytes sent; only a bare "*" word
    does: the deflate stream (zlib, zlibx) is then made at level 0 (stored blocks) for
    the whole session.  zstd and lz4 ignore the list.  ``level`` is --compress-level.
    """
    if dont_compress is None or codec not in ("zlib", "zlibx"):
        return level
    if "*" in dont_compress.split():
        return 0
    return level


class _ServerIO(WireIO):
    """ProtocolIO that can stop demultiplexing at a frame boundary (``hold``), for the
    unframed --files-from names a protocol-30 client sends after its filter list."""

    hold = False

    def _drain_frames(self) -> None:
        if not self.hold:
            return super()._drain_frames()
        frames = self._frames
        # Decode only while no in-band data waits (or inside a frame): what follows the
        # frame that ends the filter list may be raw names, not a frame header.
        while self._pos >= len(self._data) or frames._data_left:
            ev = frames.next_event()
            if ev is None:
                return None
            if isinstance(ev, DataEvent):
                self._data += ev.data
            else:
                self._message(ev.code, ev.payload)
        return None

    def _pump(self) -> None:
        if self.hold and self._frames.pending:
            before = len(self._data) - self._pos
            self._drain_frames()
            if len(self._data) - self._pos > before:
                return
        super()._pump()

    def end_multiplex_in(self) -> None:
        """io_end_multiplex_in(MPLX_TO_BUFFERED): undecoded bytes become plain data."""
        frames = self._frames
        if frames._data_left:
            raise WireError(f"files-from data inside a multiplexed frame [{self.who}]",
                            E.RERR_PROTOCOL)
        self.hold = False
        self.mplex_in = False
        self._data += frames._buf
        frames._buf.clear()


class _Bare(E.RsyncError):
    """An error whose text goes out as is (no program-name prefix)."""

    bare = True


def _write_longint(io: ProtocolIO, v: int) -> None:
    """io.c write_longint(): an int32, or -1 and an int64 for big values."""
    if 0 <= v <= 0x7FFFFFFF:
        io.write_int(v)
    else:
        io.write_int(-1)
        io.write(v.to_bytes(8, "little", signed=True))


def run_server(opts, daemon: DaemonLink | None = None) -> int:
    """Serve one stock rsync client on stdin/stdout; returns the exit code.

    ``daemon`` is given by netsync.daemon.server for a module connection (the
    process already sits in the module directory with sanitized arguments).
    """
    if opts.daemon and daemon is None:
        from netsync.daemon.server import run_daemon

        return run_daemon(opts)  # --server --daemon: the daemon protocol over a remote shell
    from netsync.options import apply_process_options

    apply_process_options(opts)  # again: a daemon module may have changed some
    server = _Server(opts, daemon)
    code = 0
    fatal = False
    try:
        code = server.run()
    except RemoteExit as rx:
        code = rx.code or E.RERR_PARTIAL
    except (TransportError, WireError, m.FatalError, E.RsyncError) as exc:
        code = exc.code or E.RERR_PROTOCOL
        fatal = True
        _report_fatal(server, exc.message, bool(getattr(exc, "bare", False)))
    except BrokenPipeError:
        code = E.RERR_STREAMIO
    except Exception as exc:  # a bug: tell the client rather than die silently
        if os.environ.get("NETSYNC_DEBUG"):
            import traceback

            traceback.print_exc()
        code = E.RERR_PROTOCOL
        fatal = True
        _report_fatal(server, f"internal error in the server: {exc!r}", False)
    if code and code not in (E.RERR_STREAMIO, E.RERR_SOCKETIO):
        _log_exit(server, code, fatal)
    try:
        if server.io is not None:
            server.io.flush()
    except (OSError, TransportError):
        pass
    if server.conn is not None:
        server.conn.close()
    return code


def _write_escaped(text: str) -> None:
    sys.stderr.flush()
    raw = os.fsencode(text)
    sys.stderr.buffer.write(log.escape_output(raw).encode("utf-8", "surrogateescape"))
    sys.stderr.flush()


def _report_fatal(server: _Server, message: str | None, bare: bool) -> None:
    """rprintf(FERROR): an error frame once multiplexing, else stderr."""
    if not message:
        return
    text = message if bare else f"{PROG}: {message}"
    io = server.io
    if io is None or not io.mplex_out:
        # rwrite() printing it itself: escaped as it goes out (a name in it is raw).
        _write_escaped(text + "\n")
        return
    try:
        io.send_msg(Msg.ERROR, os.fsencode(text + "\n"))
        io.flush()
    except (OSError, TransportError):
        pass


def _log_exit(server: _Server, code: int, fatal: bool) -> None:
    """cleanup.c: log_exit()'s "error ... (code N)" line, and after a fatal error (not at
    the normal end, when rsync is already shutting down) MSG_ERROR_EXIT from protocol 31."""
    io = server.io
    if server._exit_said and not fatal:
        return  # (said before the end: an --iconv name, see client._receive())
    text = f"{E.exit_message(code, PROG)} [{server.who}={_version()}]\n"
    if io is None or not io.mplex_out:
        sys.stderr.write(text)
        return
    try:
        io.send_msg(Msg.WARNING if code == E.RERR_VANISHED else Msg.ERROR, text.encode())
        if fatal and server.neg.protocol >= 31 and code != E.RERR_TIMEOUT:
            io.send_msg(Msg.ERROR_EXIT, encode_int32(code))
        io.flush()
    except (OSError, TransportError):
        pass


def _version() -> str:
    from netsync import __version__

    return __version__
