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

import os
import stat
import sys
from dataclasses import dataclass

from netsync import errors as E
from netsync import log
from netsync import messages as m
from netsync.client import (
    ITEM_BASIS_TYPE_FOLLOWS,
    ITEM_IS_NEW,
    ITEM_TRANSFER,
    ITEM_XNAME_FOLLOWS,
    PROG,
    _Client,
)
from netsync.io import ProtocolIO, RemoteExit
from netsync.report import Reporter
from netsync.transport import Connection, TransportError
from netsync.wire import Msg, WireError, encode_int32

__all__ = ["DaemonLink", "run_server"]

MAX_RULE_LEN = 4096 + 3  # exclude.c recv_rules(): a rule longer than MAXPATHLEN+3 is fatal


@dataclass
class DaemonLink:
    """What a daemon connection settled before the binary protocol starts."""

    protocol: int  # negotiated from the @RSYNCD greetings
    remote_protocol: int
    read_only: bool = False
    write_only: bool = False
    error: str | None = None  # an option error to report once multiplexing (exit 4)
    files_from: bool = False  # the refused args held --files-from (a raw 0 byte is due)
    sanitize: bool = True  # sanitize_paths: the module is not a chroot of its own top


class ServerReporter(Reporter):
    """A Reporter whose text goes to the client as multiplexed messages.

    Per-file lines are the client's business (its sender or generator prints
    them); the server only forwards what rsync's server would rprintf().
    """

    def __init__(self, io: ProtocolIO, protocol: int, **kw) -> None:
        super().__init__(**kw)
        self.io = io
        self.protocol = protocol

    def _send(self, code: Msg, text: str) -> None:
        self.io.send_msg(code, os.fsencode(text + "\n"))

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
        pass  # no progress lines from a server

    def log_item(self, e, iflags: int, *, to_stdout: bool = True, to_logfile: bool = True,
                 hlink: bytes | None = None, written: int = 0) -> None:
        pass

    def maybe_log_item(self, e, iflags: int, hlink: bytes | None = None) -> None:
        pass

    def log_item_transfer_start(self, e, iflags: int) -> None:
        pass

    def log_item_transfer_end(self, e, iflags: int, written: int) -> None:
        pass

    def deleted(self, name: bytes, mode: int) -> None:
        """log.c log_delete(): from protocol 29 the client formats the line itself."""
        if self.protocol >= 29:
            self.io.send_msg(Msg.DELETED, name + (b"\0" if stat.S_ISDIR(mode) else b""))
        else:
            super().deleted(name, mode)


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

    # ------------------------------------------------------------------ setup
    def run(self) -> int:
        from netsync.server_handshake import ServerHandshake, run_server_handshake

        opts = self.opts
        opts.inc_recursive = False
        self.conn = Connection(sys.stdin.fileno(), sys.stdout.fileno(), who=self.who)
        d = self.daemon
        hs = ServerHandshake(d.protocol if d else opts.protocol, caps=opts.server_caps,
                             checksum_choice=opts.checksum_choice,
                             compress=bool(opts.do_compression),
                             compress_choice=opts.compress_choice,
                             checksum_seed=opts.checksum_seed or None,
                             daemon_protocol=d.protocol if d else None,
                             remote_protocol=d.remote_protocol if d else None,
                             am_sender=self.am_sender)
        neg = run_server_handshake(self.conn, hs)
        if d is not None and d.error is not None and d.files_from and not self.am_sender:
            self.conn.write(b"\0")  # rsync_module(): the files-from end, before multiplexing
        self.neg = neg
        io = ProtocolIO(self.conn, neg.protocol, who=self.who, timeout=opts.timeout or None)
        self.io = io
        io.mplex_out = neg.mplex_out
        if neg.mplex_in:
            io.start_multiplex_in(hs.leftover)
        else:
            io.add_leftover(hs.leftover)
        self.rep = self._reporter()
        args = [os.fsencode(a) for a in opts.args]
        if d is not None:
            self._daemon_checks(d)
        self._refuse_server_unsupported()
        if self.am_sender:
            return self._serve_sender(args)
        return self._serve_receiver(args)

    def _daemon_checks(self, d: DaemonLink) -> None:
        """rsync_module()'s option error, then do_server_sender/recv()'s module rules."""
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

    def _refuse_server_unsupported(self) -> None:
        opts = self.opts
        what = None
        if opts.files_from:
            what = "--files-from"
        elif opts.inplace or opts.append:
            what = "--inplace/--append"
        elif opts.delete_missing_args:
            what = "--delete-missing-args"
        if what is not None:
            raise E.RsyncError(E.RERR_UNSUPPORTED,
                               f"{what} is not implemented yet in this netsync server")

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
        return rep

    def _recv_filter_list(self):
        """exclude.c recv_filter_list(): the client's rules, parsed as a server does."""
        from netsync import filters as F

        io = self.io
        assert io is not None
        opts = self.opts
        rules: list[bytes] = []
        while True:
            n = io.read_int()
            if n == 0:
                break
            if n < 0 or n >= MAX_RULE_LEN:
                raise WireError(f"overflow: filter rule of {n} bytes [{self.who}]",
                                E.RERR_PROTOCOL)
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
        filters = self._recv_filter_list()
        if not args:
            raise E.RsyncError(E.RERR_SYNTAX, "ERROR: do_server_sender called without args")
        if not opts.relative:
            self._chdir(args[0], "change_dir#3")
        paths = args[1:]
        if not paths and (opts.recursive or opts.recurse or opts.dirs or opts.list_only):
            paths = [b"."]
        sender, flist, io_error = self._send_flist(paths, filters)
        if not flist.entries:
            io.flush()
            return 0
        if opts.remove_source_files:
            io.on_success = sender.remove_source
        self._send_files(sender, flist.entries)
        # main.c handle_stats() for a server sender, then read_final_goodbye().
        proto = self.neg.protocol
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
        return self.rep.exit_code(io_error | sender.io_error)

    def _chdir(self, path: bytes, what: str) -> None:
        try:
            os.chdir(path)
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
        flist = self._recv_flist()
        self.ndx_of = {id(e): i for i, e in enumerate(flist.entries)}
        dest = args[0] if args else b"."
        return self._receive(flist, dest)

    def _recv_flist(self):
        flist = super()._recv_flist()
        if self.daemon is not None and self.daemon.sanitize:
            from netsync.daemon.server import sanitize_path

            # flist.c recv_file_entry(): a symlink may not point above the module.
            for e in flist.entries:
                if e.link:
                    parent = e.name.rpartition(b"/")[0]
                    depth = len([c for c in parent.split(b"/") if c not in (b"", b".")])
                    e.link = sanitize_path(e.link.lstrip(b"/"), b"", depth)
        return flist

    def _receiver_filters(self):
        return self.wire_filters

    def _generator_cls(self, base: type) -> type:
        server = self

        class ServerGenerator(base):  # type: ignore[misc, valid-type]
            """generator.c itemize() on a server: unchanged items go to the sender."""

            def report_item(self, e, iflags: int, xname: bytes | None = None) -> int:
                if not iflags & ITEM_TRANSFER and self.rep.should_send_itemize(iflags, xname):
                    server._send_item(e, iflags, xname)
                    if iflags & ITEM_IS_NEW:
                        self._count_created(e)
                return iflags

            def _transfer(self, ndx, e, path, basis, dest_st, new_mode, iflags_extra=0,
                          basis_st=None, xname=None) -> None:
                if not self.g.dry_run:
                    return super()._transfer(ndx, e, path, basis, dest_st, new_mode,
                                             iflags_extra, basis_st, xname)
                # Dry run: the sender only logs the item (sender.c, !do_xfers).
                extra = log.ITEM_REPORT_CHANGE if self.g.checksum else 0
                iflags = self.itemize(e, basis_st, ITEM_TRANSFER | iflags_extra | extra)
                server._send_item(e, iflags, None)
                self._count_transfer(e, iflags)
                return None

        return ServerGenerator

    def _send_item(self, e, iflags: int, xname: bytes | None) -> None:
        if self.neg.protocol < 29:
            return
        iflags &= ~(ITEM_BASIS_TYPE_FOLLOWS | ITEM_XNAME_FOLLOWS)
        if xname:
            iflags |= ITEM_XNAME_FOLLOWS
        self._write_ndx_and_attrs(self.ndx_of[id(e)], iflags & 0xFFFF, 0, xname)

    def _expect_done(self) -> None:
        if self.opts.dry_run:
            # Dry-run echoes carry ITEM_TRANSFER but no data: skip them.
            nfiles = len(self.flist.entries) if getattr(self, "flist", None) else 0
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


def _report_fatal(server: _Server, message: str | None, bare: bool) -> None:
    """rprintf(FERROR): an error frame once multiplexing, else stderr."""
    if not message:
        return
    text = message if bare else f"{PROG}: {message}"
    io = server.io
    if io is None or not io.mplex_out:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
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
    text = f"{E.exit_message(code, PROG)} [{server.who}={_version()}]\n"
    if io is None or not io.mplex_out:
        sys.stderr.write(text)
        return
    try:
        io.send_msg(Msg.ERROR, text.encode())
        if fatal and server.neg.protocol >= 31 and code != E.RERR_TIMEOUT:
            io.send_msg(Msg.ERROR_EXIT, encode_int32(code))
        io.flush()
    except (OSError, TransportError):
        pass


def _version() -> str:
    from netsync import __version__

    return __version__
