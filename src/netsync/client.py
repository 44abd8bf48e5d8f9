"""rsync's client_run over the wire: push to and pull from a stock rsync.

The transport (remote shell, daemon, daemon over a remote shell) gives a
Connection and the handshake's :class:`~netsync.transport.handshake.Negotiated`;
from there a push runs the engine's :class:`~netsync.sender.Sender` against the
remote generator (sender.c send_files), and a pull runs the engine's
:class:`~netsync.generator.Generator` and :class:`~netsync.receiver.Receiver`
with a ``request`` callable that asks the remote sender for each file and
streams its tokens back (generator.c / receiver.c).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator

from netsync import errors as E
from netsync import log
from netsync import messages as m
from netsync.flist import FLAG_DUPLICATE, FLAG_HLINK_FIRST, FLAG_HLINK_FOLLOWER
from netsync.io import ProtocolIO, RemoteExit
from netsync.report import FinishFirst
from netsync.transport import Connection, TransportError, pre_fork_who
from netsync.wire import (
    NDX_DEL_STATS,
    NDX_DONE,
    NDX_FLIST_EOF,
    NDX_FLIST_OFFSET,
    Msg,
    WireError,
    encode_int32,
    encode_shortint,
    encode_vstring,
)

PROG = "netsync"
ITEM_TRANSFER = log.ITEM_TRANSFER
ITEM_BASIS_TYPE_FOLLOWS = log.ITEM_BASIS_TYPE_FOLLOWS
ITEM_XNAME_FOLLOWS = log.ITEM_XNAME_FOLLOWS
ITEM_IS_NEW = log.ITEM_IS_NEW
ITEM_MISSING_DATA = 1 << 16
FNAMECMP_FNAME = 0x80  # rsync.h: the basis is the file itself (no basis type sent)
MAX_BLOCK_LEN = 1 << 29
MAX_SUM_COUNT = 1 << 28
MAX_BLOCK_SIZE = 1 << 17  # rsync.h: the block-length limit from protocol 30
FLIST_ENTRY_SIZE = 256  # what a received file-list entry costs us, for --max-alloc
SUM_BUF_SIZE = 24  # rsync's struct sum_buf, what --max-alloc is counted against
_SUM_HEAD = struct.Struct("<iiii")  # count, block length, strong-sum length, remainder
_SUM_HEAD_26 = struct.Struct("<iii")  # below protocol 27 there is no strong-sum length
_I32 = struct.Struct("<i")
# A file request as it usually comes from protocol 30: a one-byte index step, iflags, the
# sum head (count, block length, strong-sum length, remainder).
_REQUEST = struct.Struct("<BHiiii")
_FAST_IFLAGS_MASK = ITEM_TRANSFER | ITEM_BASIS_TYPE_FOLLOWS | ITEM_XNAME_FOLLOWS
_END_TOKEN = bytes(4)

__all__ = ["run_remote"]


_err = E.print_error
_exit_line = E.print_exit_line


def run_remote(opts, args: list[bytes]) -> int:
    """Run a transfer (or module listing) with a remote rsync; returns the exit code."""
    return drive(_Client(opts, args))


def run_local_forked(opts, sources: list[bytes], dest: bytes) -> int:
    """A local copy with --iconv=SRC,DEST: a server started here sends (converting
    from the charset before the comma) and this side receives (into the one after
    it), which is what rsync's forked local server and its client do between them
    (main.c local_child()), with the received side's lines shown as rsync shows a
    local copy's."""
    from netsync import charset as C

    if opts.whole_file is None:
        opts.whole_file = True  # main.c: a local copy sends whole files unless told
    src_cs, comma, dest_cs = opts.iconv.partition(",")
    for cs in (src_cs, dest_cs) if comma else (src_cs,):  # (both ends' setup_iconv())
        C.Iconv(C.side_charset(cs, False))
    opts.iconv = f"{dest_cs},{src_cs}" if comma else opts.iconv
    args = [b"localhost:" + sources[0], *(b":" + s for s in sources[1:]), dest]
    client = _LocalServer(opts, args)
    client.src_charset = src_cs
    return drive(client)


def drive(client: _Client) -> int:
    """Run ``client`` to its end: the exit code, the error and exit lines printed as
    rsync's client prints them."""
    def exit_line(code: int, via_peer: bool = False) -> None:
        rep = getattr(client, "rep", None)
        if rep is not None:
            conn, stats = getattr(client, "conn", None), getattr(client, "stats", None)
            if rep.exit_totals is None and conn is not None and stats is not None:
                rep.exit_totals = (conn.bytes_written, conn.bytes_read, stats.total_size)
            if not rep.log_exit(code, via_peer):
                return
        elif via_peer:
            return
        _exit_line(code)

    try:
        return client.run()
    except RemoteExit as rx:
        client.close(force=True)
        code = rx.code or E.RERR_PARTIAL
        # io.c MSG_ERROR_EXIT: "a negative linenum so that we don't end up with a
        # duplicate exit message" (the peer's own line has been shown).
        exit_line(code, via_peer=True)
        return code
    except TransportError as te:
        code = te.code if te.own_code else client.close_code(te.code)
        if te.message:
            _err(te.message if te.bare else f"{PROG}: {te.message}")
        exit_line(code)
        return code
    except WireError as we:
        _err(f"{PROG}: {we.message}" if we.message else f"{PROG}: protocol error")
        code = client.close_code(we.code, ours=True)
        exit_line(code)
        return code
    except (m.FatalError, E.RsyncError) as fe:
        if fe.message:
            _err(fe.message if getattr(fe, "bare", False) else f"{PROG}: {fe.message}")
        code = fe.code if getattr(fe, "own_code", False) \
            else client.close_code(fe.code, ours=True)
        exit_line(code)
        return code
    except BrokenPipeError:
        code = client.close_code(E.RERR_STREAMIO)
        exit_line(code)
        return code
    finally:
        client.close(force=True)
        reap = getattr(client.conn, "reap", None)
        if reap is not None:
            reap()


class _NoSend(WireError):
    """The remote sender skipped a file (MSG_NO_SEND); no data for it will come.
    Only a file request expects this; anywhere else it is a protocol error."""

    def __init__(self) -> None:
        super().__init__("unexpected MSG_NO_SEND", E.RERR_PROTOCOL)


class WireIO(ProtocolIO):
    """ProtocolIO whose blocking read gives up once MSG_NO_SEND arrived: the sender
    then waits for our next request instead of sending the file we wait for."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.no_send: set[int] = set()
        self._no_send_new = False

    def note_no_send(self, ndx: int) -> None:
        self.no_send.add(ndx)
        self._no_send_new = True

    def take_no_send(self, ndx: int) -> bool:
        """Was ``ndx`` skipped by the sender? (The skip is then dealt with.)"""
        if ndx not in self.no_send:
            return False
        self.no_send.discard(ndx)
        self._no_send_new = False
        return True

    #: io.c extra_flist_sending_enabled: called while nothing is there to read; it
    #: may write more (an incremental push sends one more file list) and says so.
    on_idle = None

    def _pump(self) -> None:
        if self._no_send_new:
            self._no_send_new = False
            raise _NoSend()
        idle = self.on_idle
        if idle is not None and not self._eof:
            import select

            while not select.select([self.conn.rfd], [], [], 0)[0] and idle():
                self._frame_output()
                self._flush_out(wait=False)
        super()._pump()


class _Client:
    # --iconv: this side's converters (netsync.charset.Iconv), and whether a sender
    # converts symlink targets too (compat.c sender_symlink_iconv).
    iconv = None
    symlink_iconv = False

    def __init__(self, opts, args: list[bytes]) -> None:
        self.opts = opts
        self.args = args
        self.start = time.time()
        self.conn: Connection | None = None
        self.io: ProtocolIO | None = None
        self.who = "client"
        self.rep = None
        #: The remote side is a server sender, which writes its stats after the transfer.
        self.peer_sends_stats = True
        self.am_server = False
        self.flist = None  # the (whole) file list, once sent or received
        self._feed: _WireFeed | None = None  # an incremental pull's file lists
        self._match_totals = [0, 0, 0]  # matches, hash hits, false alarms (-vv: match_report)
        self._lists: _PushLists | None = None  # ... and an incremental push's
        self._done_echoes = 0
        # A pull reports its generator's items to the sender (_generator_cls()).
        self._send_items = False
        self._rsync_inc_opt = False  # (set in run(): Sender.rsync_inc)
        self._dry_items = False
        # A file header read while looking for an earlier, skipped file's (_read_reply).
        self._next_reply: tuple[int, int, int, bytes | None] | None = None

    # ------------------------------------------------------------------ setup
    def close_code(self, code: int, ours: bool = False) -> int:
        """The exit code after a failure: the remote shell's status wins when higher.
        A failure of ``ours`` (not the connection's) takes that status only if the
        child has already exited, and stops it (cleanup.c: WNOHANG, then SIGUSR1)."""
        status = None
        conn = self.conn
        if conn is not None and not conn.closed:
            if ours and hasattr(conn, "abandon"):
                status = conn.abandon()
            else:
                status = self.close(force=True)
        return max(code, status or 0)

    def close(self, force: bool = False) -> int | None:
        conn = self.conn
        if conn is None or conn.closed:
            return None
        if force and hasattr(conn, "proc"):
            try:
                return conn.close(timeout=5.0)  # type: ignore[call-arg]
            except TypeError:  # pragma: no cover
                return conn.close()
        return conn.close()

    def run(self) -> int:
        from netsync.options import _allow_inc_recurse
        from netsync.transport.remote import Mode, plan_transfer

        opts = self.opts
        plan = plan_transfer([os.fsdecode(a) for a in self.args], port=opts.port,
                             shell_cmd=opts.rsh, password_file=opts.password_file,
                             contimeout=opts.contimeout, files_from_host=opts.files_from_host)
        self.plan = plan
        # options.c: 'i' goes into the capabilities only where rsync's client would offer
        # it and this client can run the option set incrementally (a client may decline).
        self._inc_wanted = bool(opts.inc_recursive)  # (-A: what rsync itself would do)
        # What rsync here would negotiate (both ends' conditions; the receiver's are
        # the stricter): the -R lists' filter timing follows it (Sender.rsync_inc).
        self._rsync_inc_opt = _allow_inc_recurse(opts, False)
        # (--iconv: a receiver takes the whole list at once, see _map_wire_order())
        opts.inc_recursive = bool(opts.inc_recursive) and self._inc_supported(plan) \
            and not (opts.iconv and not plan.am_sender)
        self.am_sender = plan.am_sender
        self._iconv_open(opts.iconv)
        Connection.timeout = opts.timeout or None  # rsync's io_timeout covers the handshakes
        self.who = "sender" if plan.am_sender else "receiver"
        self._refuse_unsupported(plan)
        self._load_files_from()
        if plan.mode == Mode.SHELL:
            neg, hs = self._start_shell(plan)
        else:
            got = self._start_daemon(plan)
            if got is None:
                return self._finish_listing()
            neg, hs = got
        self.neg = neg
        opts.settle_protocol(neg.protocol)
        self._xa_init()
        io = WireIO(self.conn, neg.protocol, who=self.who,  # type: ignore[arg-type]
                    timeout=opts.timeout or None)
        self.io = io
        self._iconv_negotiated()
        io.bwlimit = opts.bwlimit
        io.eight_bit = opts.eight_bit_output
        # main.c client_run(): a receiving client multiplexes what it sends when its
        # generator has messages for the sender: from protocol 30, or (any protocol)
        # for --remove-source-files' MSG_SUCCESS (options.c need_messages_from_generator)
        io.mplex_out = neg.mplex_out or (not self.am_sender and bool(opts.remove_source_files))
        if neg.mplex_in:
            io.start_multiplex_in(hs.leftover)
        else:
            io.add_leftover(hs.leftover)
        for line in hs.infos:
            print(line)
        self.rep = self._reporter()
        self.rep.count_io(io)  # (%b/%c in a log format)
        if self.rep.logfile is not None:
            io.log_text = self.rep._log_file_msg  # log.c rwrite(): one record each
        from netsync import filters as _filters  # the filter traces (-vv) go to our output

        _filters.set_output(self.rep.info, self.rep.warn_msg, opts.debug.get("filter", 0))
        if opts.copy_as is not None:  # main.c become_copy_as_user(): once connected
            from netsync.metadata import become_copy_as_user

            failed = become_copy_as_user(opts.copy_as)
            if failed is not None:
                _err(failed[0] if failed[1] else f"{PROG}: [{self.who}] {failed[0]}")
                self.close(force=True)  # rsync exits 1 whatever the remote end says then
                _exit_line(E.RERR_SYNTAX)
                return E.RERR_SYNTAX
        if self.am_sender:
            return self._push()
        return self._pull()

    def _iconv_open(self, spec: str | None, charset: str | None = None) -> None:
        """rsync.c setup_iconv(): this side's charset (``charset``, a daemon module's,
        in place of its part of ``spec``); an unknown one ends the run (code 4)."""
        if not spec:
            return
        from netsync import charset as C

        self.iconv = C.Iconv(charset or C.side_charset(spec, self.am_server))
        if not self.am_server and self.opts.debug.get("iconv", 0) >= 1:
            who = "sender" if self.am_sender else "Receiver"
            print(f"[{who}] charset: {self.iconv.charset}", flush=True)

    def _iconv_negotiated(self) -> None:
        """compat.c: a sender converts symlink targets when the other side can (a
        server: the client offered 's'; a client: the server set CF_SYMLINK_ICONV);
        a client shows a server's messages in its own charset (log.c rwrite())."""
        from netsync.transport.handshake import CF_SYMLINK_ICONV

        ic = self.iconv
        if ic is None:
            return
        neg = self.neg
        if self.am_server:
            self.symlink_iconv = "s" in (self.opts.server_caps or "")
        else:
            self.symlink_iconv = bool(neg.compat_flags & CF_SYMLINK_ICONV)
            self.io.text_in = ic.text_from_wire  # type: ignore[union-attr]

    def _iconv_codec(self, codec) -> None:
        codec.iconv = self.iconv
        codec.symlink_iconv = self.symlink_iconv

    def _inc_supported(self, plan) -> bool:
        """Option sets this client runs with incremental recursion: one plain recursive
        source, pushed or pulled (-H pushed only).  Everything else (-H pulled, -R,
        --files-from, several sources, --list-only, --delete-missing-args,
        --delete-before/after, ...) gets the whole list at once, as before."""
        if plan.am_sender:
            # sender.iter_chunks(): one plain source walked a directory at a time.
            if len(plan.local_paths) != 1:
                return False
        elif len(plan.remote_paths) != 1 or not plan.local_paths:
            return False
        return inc_options_supported(self.opts, plan.am_sender)

    def _refuse_unsupported(self, plan) -> None:
        """Options this client cannot yet carry over the wire (none at the moment)."""
        del plan

    def _handshake(self, daemon_protocol: int | None = None, remote_protocol: int | None = None):
        from netsync.transport.handshake import ClientHandshake, run_client_handshake

        hs = ClientHandshake.from_options(self.opts, self.am_sender,
                                          daemon_protocol=daemon_protocol,
                                          remote_protocol=remote_protocol)
        hs.option_check = self.opts.protocol_error
        neg = run_client_handshake(self.conn, hs)  # type: ignore[arg-type]
        self.conn.count_from_here(hs.leftover)  # type: ignore[union-attr]
        return neg, hs

    def _start_shell(self, plan):
        from netsync.transport.rsh import build_rsh_command, encode_secluded, server_args, spawn

        sa = server_args(self.opts, plan.am_sender, plan.remote_paths)
        cmd = build_rsh_command(self.opts, plan.host, plan.user, sa.argv)
        self._show_argv("opening connection using:", cmd)
        self.conn = spawn(cmd, who=self.who)
        if sa.secluded:
            self._show_argv("protected args:", sa.secluded[1:])
            self.conn.write(encode_secluded(self._secluded_to_utf8(sa.secluded)))
        return self._handshake()

    def _secluded_to_utf8(self, words: list[str]) -> list[str]:
        """rsync.c send_protected_args(): with --iconv the words go in UTF-8."""
        ic = self.iconv
        if ic is None:
            return words
        return [os.fsdecode(ic.text_to_wire(os.fsencode(w))) for w in words]

    def _show_argv(self, prefix: str, argv: list[str]) -> None:
        """What rsync prints at --debug=cmd (-vv) of a command it runs or sends."""
        if self.opts.debug.get("cmd", 0) >= 1:
            from netsync.transport.rsh import child_argv_line

            sys.stdout.write(child_argv_line(prefix, argv) + "\n")
            sys.stdout.flush()

    def _start_daemon(self, plan):
        from netsync.transport.daemon import (
            DaemonClient,
            connect,
            daemon_server_args,
            read_early_input,
            read_password,
        )
        from netsync.transport.remote import Mode
        from netsync.transport.rsh import ExecFailed, build_rsh_command, spawn

        opts = self.opts
        if plan.mode == Mode.DAEMON_SHELL:
            cmd = build_rsh_command(opts, plan.host, plan.user, [], daemon=True)
            self._show_argv("opening connection using:", cmd)
            try:
                self.conn = spawn(cmd, who=self.who)
            except ExecFailed as ef:  # clientserver.c: the child's lines, then no greeting
                raise TransportError(E.RERR_STARTCLIENT, f"{ef.child_lines}\n{PROG}: did "
                                     "not see server greeting", bare=True) from None
        else:
            if opts.debug.get("connect", 0) >= 1:  # socket.c open_socket_out()
                prog = "Using RSYNC_CONNECT_PROG instead of " \
                    if os.environ.get("RSYNC_CONNECT_PROG") else ""
                sys.stdout.write(f"{prog}opening tcp connection to {plan.host} port "
                                 f"{plan.port}\n")
                sys.stdout.flush()
            self.conn = connect(plan.host, plan.port, address=opts.address,
                                af_hint=opts.af_hint, contimeout=opts.contimeout,
                                sockopts=opts.sockopts, who=self.who,
                                debug_connect=opts.debug.get("connect", 0))
        module = plan.module
        listing = module == ""

        def show(line: str) -> None:
            if listing or opts.motd:
                # rprintf(FINFO): the daemon's motd/listing line, escaped as rwrite() does
                raw = line.encode("utf-8", "surrogateescape")
                text = log.escape_output(raw, eight_bit=opts.eight_bit_output)
                sys.stdout.flush()
                sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape") + b"\n")
                sys.stdout.flush()

        dc = DaemonClient(self.conn, opts.protocol, on_line=show)
        dc.eight_bit = opts.eight_bit_output
        proto = dc.greet()
        who = pre_fork_who(self.who)
        early = read_early_input(opts.early_input, who=who) if opts.early_input else b""
        if listing:
            dc.list_modules(early)
            return None
        reply = dc.request(module, plan.user,
                           password=lambda: read_password(opts.password_file, who=self.who),
                           early_input=early)
        if not reply.ok:
            return None
        sargs = daemon_server_args(opts, plan.am_sender, plan.remote_paths)
        self._show_argv("sending daemon args:", sargs.argv)
        if sargs.secluded:
            self._show_argv("protected args:", sargs.secluded[1:])
        dc.send_args(sargs)
        assert dc.greeting is not None
        return self._handshake(daemon_protocol=proto,
                               remote_protocol=dc.greeting.remote_protocol)

    def _finish_listing(self) -> int:
        self.close()
        return 0

    def _reporter(self):
        from netsync.report import Reporter

        opts = self.opts
        rep = Reporter(
            prog=PROG, info=dict(opts.info), quiet=opts.quiet, itemize=opts.itemize_changes,
            out_format=opts.out_format, log_file=opts.log_file,
            log_file_format=opts.log_file_format, dry_run=opts.dry_run,
            eight_bit=opts.eight_bit_output, human=opts.human_readable,
            progress=opts.progress, preserve_mtimes=opts.times, stats=bool(opts.stats),
        )
        rep.ctx = log.LogContext(am_sender=self.am_sender, local_server=False,
                                 preserve_mtimes=bool(opts.times))
        rep.exit_sender = bool(self.am_sender)
        return rep

    # ------------------------------------------------------------ --files-from
    def _load_files_from(self) -> None:
        """options.c: a local --files-from list is opened before connecting."""
        opts = self.opts
        self._ff_data: bytes | None = None
        if opts.files_from is None or opts.files_from_host is not None:
            return
        path = opts.files_from_path or opts.files_from
        self._ff_data = read_files_from_file(path)

    def _read_local_files_from(self, path: str) -> list[bytes]:
        data = self._ff_data if self._ff_data is not None else read_files_from_file(path)
        return [self._ff_sanitize(n) for n in split_files_from(data, bool(self.opts.from0))]

    def _ff_sanitize(self, name: bytes) -> bytes:
        """flist.c send_file_list(): sanitize_path(fbuf, fbuf, "", 0, SP_KEEP_DOT_DIRS)."""
        from netsync.daemon.server import sanitize_path

        return sanitize_path(name, b"", 0, keep_dot_dirs=bool(self.opts.relative))

    def _read_wire_files_from(self) -> list[bytes]:
        """read_line(RL_EOL_NULLS) on the socket until the empty name that ends the list."""
        io = self.io
        assert io is not None
        names: list[bytes] = []
        cur = bytearray()
        while True:
            chunk = io.read_some()
            start = 0
            while True:
                z = chunk.find(b"\0", start)
                if z < 0:
                    cur += chunk[start:start + MAX_FF_NAME]
                    del cur[MAX_FF_NAME:]  # read_line() silently truncates a long line
                    break
                cur += chunk[start:min(z, start + MAX_FF_NAME)]
                del cur[MAX_FF_NAME:]
                start = z + 1
                if not cur:
                    io.unread(chunk[start:])
                    return [self._ff_sanitize(n) for n in names]
                if len(names) >= MAX_FF_NAMES:
                    raise WireError(f"too many --files-from names [{self.who}]",
                                    E.RERR_PROTOCOL)
                names.append(bytes(cur))
                cur.clear()

    def _forward_files_from(self, data: bytes, eol_nulls: bool) -> None:
        """io.c forward_filesfrom_data(): the list as NUL-ended names, then an empty one.

        Below protocol 31 the names travel outside the multiplexed framing
        (start_filesfrom_forwarding() drops to buffered output meanwhile).
        """
        io = self.io
        assert io is not None
        payload = encode_files_from(data, eol_nulls)
        if io.mplex_out and self.neg.protocol < 31:
            io._frame_output()  # what is queued stays framed; the list goes raw after it
            io._out += payload
        else:
            io.write(payload)

    # ------------------------------------------------------------- shared bits
    def _send_filter_list(self) -> None:
        opts = self.opts
        io = self.io
        assert io is not None
        proto = self.neg.protocol
        wants = opts.prune_empty_dirs or (opts.delete and (not opts.delete_excluded
                                                           or proto >= 29))
        rules: list[bytes] = []
        if opts.filter_args or opts.cvs_exclude:
            from netsync import filters as F

            # (a sender's own list, built for its walk, has told of what the rules say)
            with F.muted() if self.am_sender else contextlib.nullcontext():
                fl = F.build_filter_list(opts.filter_args, opts.cvs_exclude,
                                         opts.delete_excluded, opts.from0)
            # exclude.c send_filter_list(): the rules are put in wire form (and one the
            # protocol cannot carry refused) even when the receiver does not want them.
            rules = fl.to_wire_rules(self.am_sender, proto)
        if self.am_sender and not wants:
            return
        for rule in rules:
            io.write_int(len(rule))
            io.write(rule)
        io.write_int(0)

    def _flist_codec_kwargs(self) -> dict:
        opts = self.opts
        return dict(
            compat_flags=self.neg.compat_flags, preserve_uid=bool(opts.owner),
            preserve_gid=bool(opts.group), preserve_links=bool(opts.links),
            preserve_devices=bool(opts.devices), preserve_specials=bool(opts.specials),
            preserve_hard_links=bool(opts.hard_links), always_checksum=bool(opts.checksum),
            preserve_atimes=bool(opts.atimes), numeric_ids=bool(opts.numeric_ids),
            checksum_len=self._file_sum_len(),
        )

    def _acl_codec(self, codec) -> None:
        """-A: the ACL half of a file-list encoder or decoder (acls.c)."""
        from netsync import acls
        from netsync import metadata as _md
        from netsync.flist_codec import FlistEncoder

        if isinstance(codec, FlistEncoder):
            codec.acls = acls.AclEncoder(
                numeric_ids=bool(self.opts.numeric_ids), inc_recurse=codec.inc_recurse,
                add_uid=codec.acl_add_uid, add_gid=codec.acl_add_gid)
        else:
            codec.acls = acls.AclDecoder(check_values=not _md.fake_super,
                                         max_names=(self.opts.max_alloc or 1 << 30) // 128)

    def _file_sum_name(self) -> str:
        """checksum.c: the -c sum is the negotiated one, or --checksum-choice's second name."""
        choice = self.opts.checksum_choice
        if choice and "," in choice:
            from netsync.checksum import resolve_checksum

            return resolve_checksum(choice.split(",", 1)[1], self.neg.protocol)
        return self.neg.checksum

    def _file_sum_len(self) -> int:
        from netsync.checksum import digest_len, resolve_checksum

        name = resolve_checksum(self._file_sum_name(), self.neg.protocol)
        return digest_len("md4" if name == "md4_old" else name) if name != "none" else 1

    def _file_sum_fn(self):
        from netsync.checksum import file_checksum

        name = self._file_sum_name()
        proto = self.neg.protocol

        def fn(path: bytes, size: int) -> bytes:  # noqa: ARG001
            return file_checksum(path, name, proto)

        return fn

    def _read_ndx_and_attrs(self, nfiles: int) -> tuple[int, int, int, bytes | None]:
        """rsync.c read_ndx_and_attrs(): (ndx, iflags, fnamecmp_type, xname)."""
        io = self.io
        assert io is not None
        proto = self.neg.protocol
        feed = self._feed
        while True:
            ndx = io.read_ndx()
            if ndx == NDX_DONE and not self._done_echoes:
                return ndx, 0, 0, None
            if ndx == NDX_DEL_STATS:
                self._read_del_stats()
                continue
            if self._lists is not None and ndx >= 0:
                if self._lists.entry(ndx) is None:
                    raise WireError(f"Invalid file index: {ndx} [{self.who}]",
                                    E.RERR_PROTOCOL)
                nfiles = ndx + 1
            elif feed is not None:
                # rsync.c read_ndx_and_attrs(): sub-lists and list-done echoes come
                # between the files; a file index must be in a list not yet finished.
                if ndx < 0:
                    self._read_list_ndx(ndx)
                    continue
                if feed.entry(ndx) is None:
                    self._skip_echo(ndx)  # (or refuse the index)
                    continue
                nfiles = ndx + 1
            if ndx < 0 or ndx >= nfiles + (1 if proto < 30 else 0):
                raise WireError(f"Invalid file index: {ndx} ({NDX_DONE} - {nfiles - 1}) "
                                f"[{self.who}]", E.RERR_PROTOCOL)
            iflags = io.read_shortint() if proto >= 29 else ITEM_TRANSFER | ITEM_MISSING_DATA
            if proto < 30 and ndx == nfiles and iflags == ITEM_IS_NEW:
                continue  # protocol-29 keep-alive
            if ndx >= nfiles:
                raise WireError(f"Invalid file index: {ndx} [{self.who}]", E.RERR_PROTOCOL)
            if self._cleared(ndx):
                # A duplicate the list's cleaning dropped: no honest peer names it.
                raise WireError(f"refusing transfer of cleared file index {ndx} "
                                f"[{self.who}]", E.RERR_PROTOCOL)
            ftype = io.read_byte() if iflags & ITEM_BASIS_TYPE_FOLLOWS else FNAMECMP_FNAME
            xname = None
            if iflags & ITEM_XNAME_FOLLOWS:
                xname = io.read_vstring(4096)
            if self._xa is not None and iflags & log.ITEM_REPORT_XATTR:
                self._xa.read(ndx, iflags)
            return ndx, iflags, ftype, xname

    def _cleared(self, ndx: int) -> bool:
        if self._lists is not None:
            e = self._lists.entry(ndx)
        elif self._feed is not None:
            e = self._feed.entry(ndx)
        else:
            entries = self.flist.entries if self.flist is not None else ()
            e = entries[ndx] if ndx < len(entries) else None
        return e is not None and bool(e.flags & FLAG_DUPLICATE)

    def _write_ndx_and_attrs(self, ndx: int, iflags: int, ftype: int,
                             xname: bytes | None) -> None:
        assert self.io is not None
        self.io.write(self._ndx_and_attrs(ndx, iflags, ftype, xname))  # one write per file

    def _ndx_and_attrs(self, ndx: int, iflags: int, ftype: int, xname: bytes | None) -> bytes:
        """rsync.c write_ndx_and_attrs()'s bytes."""
        io = self.io
        assert io is not None
        if self.neg.protocol < 29:
            return io.ndx_out.encode(ndx)
        out = io.ndx_out.encode(ndx) + encode_shortint(iflags)
        if iflags & ITEM_BASIS_TYPE_FOLLOWS:
            out += bytes((ftype & 0xFF,))
        if iflags & ITEM_XNAME_FOLLOWS:
            out += encode_vstring(xname or b"")
        if self._xa is not None:  # -X: the request, or the values asked for
            out += self._xa.write(ndx, iflags)
        return out

    # -X on the wire (netsync.xattrs.WireXa), made once the protocol is known.
    _xa = None

    def _xa_init(self) -> None:
        if self.opts.xattrs:
            from netsync.xattrs import WireXa

            self._xa = WireXa(self)
            if not self.am_sender and not self.am_server:  # (a server's come later)
                self._xa.set_filter(self._receiver_filters(), "receiver")

    def _send_whole(self, sender, ndx: int, fd: int, st: os.stat_result, echo: bytes | bytearray,
                    fsum) -> int:
        """match.c match_sums() without sums, plain tokens: the file as literal data in
        CHUNK_SIZE pieces, each after its length, then the end token and the file's sum.
        ``echo`` goes before the data. Exactly the size fstat() gave at open is sent, as
        rsync's map_file(); what cannot be read goes as zeros and is reported. Each piece
        is copied once, into its frame in the output buffer."""
        io = self.io
        assert io is not None
        write = io.write
        update = fsum.update
        size = left = st.st_size
        status = 0
        try:
            while left > 0:
                want = min(left, 1 << 18)
                try:
                    chunk = os.read(fd, want)
                except OSError as exc:
                    chunk, status = b"", exc.errno or errno.EIO
                if not chunk:  # shrank, or a read error: map_ptr() fills with zeros
                    status = status or errno.ENODATA
                    chunk = bytes(want)
                update(chunk)
                n = len(chunk)
                left -= n
                if n <= CHUNK_SIZE:
                    write(echo + _I32.pack(n))
                    write(chunk)
                else:
                    write(echo)
                    _write_literal(write, chunk)
                echo = b""
        finally:
            os.close(fd)
        write(echo + _END_TOKEN + fsum.digest())  # the end token (-1 goes as 0)
        if status:
            sender.read_errors(ndx, status)
        return size

    def _read_del_stats(self) -> None:
        io = self.io
        assert io is not None
        files = io.read_varint()
        dirs = io.read_varint()
        links = io.read_varint()
        devs = io.read_varint()
        specials = io.read_varint()
        s = self.stats
        s.deleted_files = files + dirs + links + devs + specials
        s.deleted_dirs, s.deleted_links, s.deleted_devs, s.deleted_specials = \
            dirs, links, devs, specials

    def _read_sum_head(self):
        from netsync.checksum import SumHead

        io = self.io
        assert io is not None
        proto = self.neg.protocol
        # io.c read_sum_head(): every field is bounded before anything is sized by it.
        if proto >= 27:  # the four ints at once (one per file on a push)
            count, blength, s2length, remainder = io.read_struct(_SUM_HEAD)
        else:
            count, blength, remainder = io.read_struct(_SUM_HEAD_26)
            s2length = 2
        if count < 0:
            raise WireError(f"Invalid checksum count {count} [{self.who}]", E.RERR_PROTOCOL)
        if count > MAX_SUM_COUNT or count * SUM_BUF_SIZE > (self.opts.max_alloc or 1 << 30):
            # my_alloc() of count sum_bufs past --max-alloc (default 1G).
            raise WireError(f"ERROR: out of memory in receive_sums [{self.who}]",
                            E.RERR_MALLOC)
        if blength < 0 or blength > (MAX_BLOCK_LEN if proto < 30 else MAX_BLOCK_SIZE):
            raise WireError(f"Invalid block length {blength} [{self.who}]", E.RERR_PROTOCOL)
        if count and blength == 0:
            raise WireError(f"Invalid zero block length [{self.who}]", E.RERR_PROTOCOL)
        if s2length < 0 or s2length > self._xfer_sum_len():  # CVE-2024-12084
            raise WireError(f"Invalid checksum length {s2length} [{self.who}]",
                            E.RERR_PROTOCOL)
        if remainder < 0 or remainder > blength:
            raise WireError(f"Invalid remainder length {remainder} [{self.who}]",
                            E.RERR_PROTOCOL)
        return SumHead(count, blength, s2length, remainder)

    def _xfer_sum_len(self) -> int:
        """checksum.c xfer_sum_len: the negotiated transfer digest's length."""
        from netsync.checksum import digest_len, resolve_checksum

        return digest_len(resolve_checksum(self.neg.checksum, self.neg.protocol))  # (cached)

    def _write_sum_head(self, head) -> None:
        assert self.io is not None
        self.io.write(self._sum_head_bytes(head))

    def _sum_head_bytes(self, head) -> bytes:
        if self.neg.protocol >= 27:
            return _SUM_HEAD.pack(head.count, head.blength, head.s2length, head.remainder)
        return _SUM_HEAD_26.pack(head.count, head.blength, head.remainder)

    def _summary(self, sent: int, received: int, total_size: int,
                 batch_only: bool = False) -> None:
        """The --stats lines and the closing summary; ``batch_only``: the summary of an
        --only-write-batch run (main.c: "(BATCH ONLY)", never "(DRY RUN)")."""
        opts = self.opts
        rep = self.rep
        lines: list[str] = []
        if rep.level("stats") >= 2 or opts.stats:
            self.stats.total_written = sent
            self.stats.total_read = received
            lines += log.stats_lines(self.stats, opts.human_readable, self.neg.protocol)
        if rep.level("stats") >= 1 or opts.stats:
            lines += log.summary_lines(sent, received, int(time.time() - self.start),
                                       total_size, opts.human_readable,
                                       opts.dry_run and not batch_only, batch_only=batch_only)
        if not opts.quiet:
            for line in lines:
                rep.out.write(line + "\n")
        rep.out.flush()
        rep.log_lines(lines)
        rep.exit_totals = (sent, received, total_size)

    def _final_code(self, io_error: int) -> int:
        io = self.io
        assert io is not None
        rep = self.rep
        status = self.close() or 0
        if io.got_xfer_error:
            rep.got_xfer_error = True
        code = status or rep.exit_code(io_error | io.io_error)
        rep.log_exit(code)  # log.c log_exit(): the log file's plain summary
        _exit_line(code)
        rep.close()
        return code

    def _heap_stats(self) -> None:
        """main.c handle_stats(): with --info=stats3 each process shows its heap; this
        one stands for the roles rsync forks (a server's lines go as MSG_INFO)."""
        rep = self.rep
        if rep.level("stats") < 3:
            return
        pre = ("server " if self.am_server else "") + \
            ("daemon " if getattr(self, "daemon", None) is not None else "")
        for role in ("sender",) if self.am_sender else ("receiver", "generator"):
            for line in log.heap_stats_lines(rep.prog, pre + role):
                rep.info(line)

    def _goodbye(self) -> None:
        """main.c read_final_goodbye() for the client sender."""
        io = self.io
        assert io is not None
        proto = self.neg.protocol
        if proto < 29:
            i = io.read_int()
        else:
            i = self._read_ndx_and_attrs(0)[0]
            if proto >= 31 and i == NDX_DONE:
                io.write_ndx(NDX_DONE)
                io.flush()
                i = self._read_ndx_and_attrs(0)[0]
        if i != NDX_DONE:
            raise WireError(f"Invalid packet at end of run ({i}) [{self.who}]",
                            E.RERR_PROTOCOL)

    # -------------------------------------------------------------------- push
    def _push(self) -> int:
        opts = self.opts
        io = self.io
        rep = self.rep
        assert io is not None
        self.stats = stats = m.Stats()
        rep.attach_stats(stats)  # --progress lines come from the sender on a push
        self._send_filter_list()
        filters = None
        if opts.filter_args or opts.cvs_exclude:
            from netsync import filters as F

            filters = F.build_filter_list(opts.filter_args, opts.cvs_exclude,
                                          opts.delete_excluded, opts.from0)
        sources = [os.fsencode(p) for p in self.plan.local_paths]
        names = None
        if opts.files_from is not None:
            if opts.files_from_host is not None:
                # main.c client_run(): the remote receiver forwards the list to us.
                names = self._read_wire_files_from()
            else:
                names = self._read_local_files_from(opts.files_from_path or opts.files_from)
        sender, flist, io_error = self._send_flist(sources, filters, names)
        if opts.files_from_host is not None and 23 <= self.neg.protocol < 31:
            io.start_multiplex_in()  # main.c: demultiplexing starts after the list
        entries = flist.entries
        io.on_deleted = lambda name, is_dir: rep.deleted(
            name, stat.S_IFDIR if is_dir else stat.S_IFREG)
        io.ndx_limit = len(entries) if self._lists is None else None
        if opts.remove_source_files:
            io.on_success = sender.remove_source
            if self._lists is not None:
                io.on_success = self._lists.remove_source
        self._send_files(sender, entries)
        self._heap_stats()
        self._goodbye()
        sender.close()  # (removals come up to the goodbye)
        io.flush()
        sent = self.conn.bytes_written  # type: ignore[union-attr]
        received = self.conn.bytes_read  # type: ignore[union-attr]
        self._summary(sent, received, stats.total_size)
        return self._final_code(io_error | sender.io_error)

    def _send_flist(self, sources: list[bytes], filters, files_from: list[bytes] | None = None):
        """flist.c send_file_list(): walk ``sources``, send the list; (sender, flist, io_error).

        ``files_from``: the --files-from names, relative to ``sources[0]`` (or ".").
        """
        from netsync.flist import WalkOptions
        from netsync.flist_codec import FlistEncoder
        from netsync.sender import Sender

        opts = self.opts
        io = self.io
        rep = self.rep
        assert io is not None
        proto = self.neg.protocol
        stats = self.stats
        w = WalkOptions(
            recursive=bool(opts.recursive or opts.recurse), dirs=bool(opts.dirs),
            relative=bool(opts.relative), links=opts.links,
            # flist.c send_file_list(): from protocol 30 a -R sender always sends the
            # implied dirs, flagged, and a --no-implied-dirs receiver skips them
            # (without them a non-incremental receiver sees parentless names).
            implied_dirs=opts.implied_dirs or (bool(opts.relative) and proto >= 30),
            copy_links=opts.copy_links, copy_unsafe_links=opts.copy_unsafe_links,
            copy_dirlinks=opts.copy_dirlinks, one_file_system=opts.one_file_system,
            hard_links=bool(opts.hard_links), devices=opts.devices, specials=opts.specials,
            checksum=opts.checksum, atimes=bool(opts.atimes), acls=1 if opts.acls else 0,
        )
        sender = _wire_sender_cls(Sender)(w, rep, filters,
                                          self._file_sum_fn() if opts.checksum else None)
        sender.rsync_inc = proto >= 30 and self._rsync_inc_opt
        if self.iconv is not None:
            self._iconv_codec(sender)
        if self._xa is not None:
            self._xa.walk(w, filters, sender)
        if opts.delete_missing_args:
            sender.missing_args = 2
        elif opts.ignore_missing_args:
            sender.missing_args = 1
        show_flist = (not self.am_server and rep.level("flist") >= 1
                      and (w.dirs or w.recursive) and not opts.quiet)
        rep._log_file_msg("building file list")  # flist.c send_file_list(): FLOG
        # The roots as they are added: an argument's error names it from its dir.
        rep.roots = sender.flist.roots
        if self.neg.inc_recurse:
            return self._send_first_inc_list(sender, sources, show_flist)
        if show_flist:
            rep.flist_start("building file list")
            counter = rep.list_counter()
            if counter is not None:
                sender.on_count = counter.sending
        t0 = time.time()
        if files_from is not None and not opts.relative:
            # send_file_list() --no-relative: each name is split at its last slash, as
            # a command-line argument would be.
            from netsync.flist import join

            top = sources[0] if sources else b"."
            flist = sender.build_file_list([join(top, n) for n in files_from])
        elif files_from is not None:
            flist = sender.build_file_list([], files_from, sources[0] if sources else b".")
        else:
            flist = sender.build_file_list(sources)
        # flist.c: a list built within the same millisecond still took one.
        stats.flist_buildtime = max(time.time() - t0, 0.001)
        rep.roots = flist.roots
        if show_flist:
            rep.flist_done(len(flist.entries))
        if opts.chmod:
            from netsync.chmod import parse_chmod, tweak_mode

            rules = parse_chmod(opts.chmod)
            for e in flist.entries:
                if not stat.S_ISLNK(e.mode):
                    e.mode = tweak_mode(e.mode, rules)
        if proto < 29:
            _resort_pre29(flist)
        entries = flist.entries
        stats.count_listed(entries)
        enc = FlistEncoder(proto, user_names=_user_name, group_names=_group_name,
                           **self._flist_codec_kwargs())
        if self.iconv is not None:
            self._iconv_codec(enc)
        if opts.acls:
            self._acl_codec(enc)
        if self._xa is not None:
            self._xa.codec(enc)
        t1 = time.time()
        before = self.conn.bytes_written  # type: ignore[union-attr]
        parts: list[bytes] = []
        try:  # one write for the list (the same bytes, the same frames)
            enc.encode_into(parts, entries)
        finally:
            io.write(b"".join(parts))
        io_error = flist.io_error | sender.io_error
        # flist.c: --ignore-errors keeps them out of the list (they still set our exit).
        told = 0 if self.opts.ignore_errors else io_error
        if enc.needs_io_error_msg(told):
            io.send_msg(Msg.IO_ERROR, encode_int32(told))
        io.write(enc.end(told))
        io.flush()
        stats.flist_xfertime = time.time() - t1
        stats.flist_size = self.conn.bytes_written - before  # type: ignore[union-attr]
        return sender, flist, io_error

    def _send_first_inc_list(self, sender, sources: list[bytes], show_flist: bool):
        """flist.c send_file_list() with incremental recursion: the first list only
        (the top-level items, and the top dir's contents for "src/"); the later ones go
        out from _send_files() as send_extra_file_list() does."""
        from netsync.flist_codec import FlistEncoder

        opts = self.opts
        rep = self.rep
        if show_flist:
            rep.client_info("sending incremental file list")  # flist.c: FCLIENT
        tweak = None
        if opts.chmod:
            from netsync.chmod import parse_chmod, tweak_mode

            rules = parse_chmod(opts.chmod)

            def tweak(entries: list) -> None:
                for e in entries:
                    if not stat.S_ISLNK(e.mode):
                        e.mode = tweak_mode(e.mode, rules)

        enc = FlistEncoder(self.neg.protocol, user_names=_user_name, group_names=_group_name,
                           **self._flist_codec_kwargs())
        if self.iconv is not None:
            self._iconv_codec(enc)
        if opts.acls:
            self._acl_codec(enc)
        if self._xa is not None:
            self._xa.codec(enc)
        t0 = time.time()
        before = self.conn.bytes_written  # type: ignore[union-attr]
        lists = self._lists = _PushLists(self, sender, sender.iter_chunks(sources), enc, tweak)
        lists.send_first()
        rep.roots = sender.flist.roots
        self.stats.flist_buildtime = max(time.time() - t0, 0.001)  # (flist.c: >= 1 ms)
        self.stats.flist_size = self.conn.bytes_written - before  # type: ignore[union-attr]
        return sender, sender.flist, 0

    def _send_files(self, sender, entries) -> None:
        """sender.c send_files()."""
        from netsync import token
        from netsync.checksum import FileSum, SumHead

        opts = self.opts
        io = self.io
        rep = self.rep
        neg = self.neg
        assert io is not None
        proto = neg.protocol
        stats = self.stats
        phase = 0
        max_phase = 2 if proto >= 29 else 1
        encoder = token.make_encoder(neg.compress or "none", self._compress_level(), proto)
        plain = type(encoder) is token.TokenEncoder
        # Whole files go through _send_whole unless something watches each token.
        whole_ok = plain and rep.progress is None and not opts.dry_run
        fsum_proto = FileSum(neg.checksum, neg.checksum_seed, proto)
        sent_once: set[int] = set()
        nfiles = len(entries)
        lists = self._lists
        # The usual request (the index one byte on from the last, iflags asking for the
        # file with no basis type or name, a sum head of no blocks) is parsed in one step
        # from the buffer, and its 19 bytes go back as the echo when the index encoders
        # agree. Anything else, or a hook on the stream (batch tee, %b/%c counts), takes
        # the general path, which re-reads the request and reports what is wrong with it.
        fast = (whole_ok and proto >= 30 and not opts.append and self._feed is None
                and "write" not in vars(io) and "_advance" not in vars(io)
                and type(self)._read_ndx_and_attrs is _Client._read_ndx_and_attrs
                and type(self)._read_sum_head is _Client._read_sum_head and self._xa is None)
        max_s2 = self._xfer_sum_len()
        ndx_in = io.ndx_in
        ndx_out = io.ndx_out
        open_entry = sender.open_entry
        # A small file's sum in one call; its three writes in one (unless write is hooked:
        # then "fast" is off); the per-file log hooks skipped when a server has none.
        file_sum = fsum_proto.oneshot()
        write3 = io.write3 if type(io).write is ProtocolIO.write and "write" not in vars(io) \
            else None
        log_items = getattr(rep, "logs_transfers", True)
        xfer_started = getattr(rep, "xfer_started", None)
        pread = os.pread
        while True:
            if lists is not None and not lists.eof:
                lists.send_extra(MIN_FILECNT_LOOKAHEAD)
            if fast and phase < 2 and len(io._data) - io._pos >= _REQUEST.size:
                data = io._data
                pos = io._pos
                b, iflags, count, blength, s2length, remainder = \
                    _REQUEST.unpack_from(data, pos)
                ndx = ndx_in.prev_positive + b
                e = None
                if 0 < b < 0xFE and iflags & _FAST_IFLAGS_MASK == ITEM_TRANSFER \
                        and count == 0 and 0 <= remainder <= blength <= MAX_BLOCK_SIZE \
                        and 0 <= s2length <= max_s2:
                    if lists is not None:
                        e = lists.entry(ndx)
                    elif ndx < nfiles:
                        e = entries[ndx]
                if e is not None and e.mode & 0o170000 == 0o100000:
                    end = pos + _REQUEST.size
                    # (the echo is written only for a regular file: a skipped file or
                    # a device sent the general way must not have moved ndx_out on)
                    prev_out = ndx_out.prev_positive
                    if ndx_out.prev_positive == ndx_in.prev_positive:
                        echo = data[pos:end]
                        ndx_out.prev_positive = ndx
                    else:
                        echo = ndx_out.encode(ndx) + data[pos + 1:end]
                    ndx_in.prev_positive = ndx
                    if end == len(data):
                        data.clear()
                        end = 0
                    io._pos = end
                    if lists is not None:
                        lists.note_hit()
                        if not lists.eof:
                            lists.send_extra(MIN_FILECNT_LOOKAHEAD)
                    stats.xferred_files += 1
                    stats.total_transferred_size += e.size
                    if iflags & ITEM_IS_NEW:
                        stats.created_files += 1
                    opened = open_entry(e)
                    if opened is None:
                        ndx_out.prev_positive = prev_out
                        io.send_msg(Msg.NO_SEND, encode_int32(ndx))
                        continue
                    fd, st = opened
                    if st.st_mode & 0o170000 == 0o100000:
                        if log_items:
                            rep.log_item_transfer_start(e, iflags)
                        size = st.st_size
                        # The usual small file: one read, one token (a short read or an
                        # error goes the long way, which reports it).
                        chunk = None
                        if 0 < size <= CHUNK_SIZE:
                            try:
                                chunk = pread(fd, size, 0)
                            except OSError:
                                pass
                            else:
                                if len(chunk) != size:
                                    chunk = None
                        if chunk is not None:
                            os.close(fd)
                            if write3 is not None:
                                write3(echo + _I32.pack(size), chunk,
                                       _END_TOKEN + file_sum(chunk))
                            else:
                                write = io.write
                                write(echo + _I32.pack(size))
                                write(chunk)
                                write(_END_TOKEN + file_sum(chunk))
                        else:
                            size = self._send_whole(sender, ndx, fd, st, echo,
                                                    fsum_proto.fresh())
                        stats.literal_data += size
                        if log_items:
                            rep.log_item_transfer_end(e, iflags, size)
                        continue
                    # Not a regular file any more: the general sending code below.
                    ndx_out.prev_positive = prev_out
                    ftype, xname, append, sums = 0x80, None, 0, None
                    head = SumHead(count, blength, s2length, remainder)
                    req = m.SendRequest(ndx, iflags, sums, neg.checksum, neg.checksum_seed,
                                        proto)
                    data = sender.file_data(req, fd, st)
                    self._send_data(sender, e, ndx, iflags, ftype, xname, append, sums, head,
                                    data, encoder, plain)
                    continue
            if lists is not None:
                io.on_idle = lists.idle
            # No flush per file: a read that would block sends what is pending first
            # (WireIO._pump), so queued requests are answered in full buffers as rsync.
            ndx, iflags, ftype, xname = self._read_ndx_and_attrs(nfiles)
            io.on_idle = None
            if ndx == NDX_DONE:
                if lists is not None and lists.active:
                    # sender.c: each list's NDX_DONE frees it (and is echoed); the
                    # last one's is the end of phase 0.
                    lists.free_first()
                    if lists.active:
                        io.write_ndx(NDX_DONE)
                        continue
                phase += 1
                if phase > max_phase:
                    break
                io.write_ndx(NDX_DONE)
                continue
            if lists is not None:
                lists.note_ndx(ndx)
                lists.send_extra(MIN_FILECNT_LOOKAHEAD)
                e = lists.entry(ndx)
            else:
                e = entries[ndx]
            if not iflags & ITEM_TRANSFER:
                rep.maybe_log_item(e, iflags, xname)
                self._write_ndx_and_attrs(ndx, iflags, ftype, xname)
                if iflags & ITEM_IS_NEW:
                    stats.count("created", e.mode)
                continue
            if phase == 2:
                raise WireError(f"got transfer request in phase 2 [{self.who}]",
                                E.RERR_PROTOCOL)
            if not stat.S_ISREG(e.mode):
                raise WireError(f"refusing transfer of non-file index {ndx} [{self.who}]",
                                E.RERR_PROTOCOL)
            if opts.dry_run and opts.only_write_batch is None:
                # sender.c, !do_xfers: the generator sent no sums; log and echo the item.
                # (--only-write-batch is a dry run that still sends: netsync.batch.)
                stats.xferred_files += 1
                stats.total_transferred_size += e.size
                if iflags & ITEM_IS_NEW:
                    stats.created_files += 1
                rep.log_item(e, iflags)
                self._write_ndx_and_attrs(ndx, iflags, ftype, xname)
                continue
            # sender.c: a file sent before (the redo phase) goes without --append.
            append = 0
            if opts.append:
                append = 0 if ndx in sent_once else opts.append
                sent_once.add(ndx)
            if xfer_started is not None:
                xfer_started()  # sender.c remember_initial_stats(): %c counts the sums
            head = self._read_sum_head()
            sums = None
            if head.count and not append:  # receive_sums(): --append gets a head only
                from netsync.match import BlockSums  # numpy: only once there are blocks

                raw = io.read(head.count * (4 + head.s2length))
                sums = _parse_sums(head, raw, BlockSums)
                # sender.c updating_basis_file: --inplace onto the file itself, which
                # the receiver overwrites as it goes (match.c then prefers the block at
                # its own offset, and uses none the write position has passed).
                sums.updating_basis = bool(opts.inplace) and (
                    ftype == 0x80 if proto >= 29 else not opts.backup)
            stats.xferred_files += 1
            stats.total_transferred_size += e.size
            if iflags & ITEM_IS_NEW:
                stats.created_files += 1
            req = m.SendRequest(ndx, iflags, sums, neg.checksum, neg.checksum_seed, proto)
            if whole_ok and sums is None and not append:
                # The common case (a new or changed file, no basis): one tight loop.
                opened = open_entry(e)
                if opened is None:
                    if proto >= 30:
                        io.send_msg(Msg.NO_SEND, encode_int32(ndx))
                    continue
                if stat.S_ISREG(opened[1].st_mode):
                    echo = self._ndx_and_attrs(ndx, iflags, ftype, xname) \
                        + self._sum_head_bytes(head)
                    rep.log_item_transfer_start(e, iflags)
                    size = self._send_whole(sender, ndx, *opened, echo, fsum_proto.fresh())
                    stats.literal_data += size
                    rep.log_item_transfer_end(e, iflags, size)
                    continue
                data = sender.file_data(req, *opened)
            else:
                data = sender.send_file(req)
            self._send_data(sender, e, ndx, iflags, ftype, xname, append, sums, head, data,
                            encoder, plain)
        sender.close_dirs()
        if sender.io_error and proto >= 30:
            io.send_msg(Msg.IO_ERROR, encode_int32(sender.io_error))
        if opts.debug.get("deltasum", 0) >= 1:
            # sender.c send_files() -> match.c match_report(), from whichever end sends
            m_, hits, alarms = self._match_totals
            rep.info(f"total: matches={m_}  hash_hits={hits}  false_alarms={alarms} "
                     f"data={stats.literal_data}")
        io.write_ndx(NDX_DONE)
        io.flush()

    def _send_data(self, sender, e, ndx: int, iflags: int, ftype: int, xname: bytes | None,
                   append: int, sums, head, data, encoder, plain: bool) -> None:
        """sender.c send_files() from the open file on: the echo, the sum head, then
        match_sums()' tokens (delta, --append's tail, --inplace, progress, compression)."""
        from netsync.checksum import FileSum

        io = self.io
        assert io is not None
        rep = self.rep
        neg = self.neg
        proto = neg.protocol
        stats = self.stats
        if data.failed:
            if proto >= 30:
                io.send_msg(Msg.NO_SEND, encode_int32(ndx))
            return
        if append and data.size < e.size:
            data.close()
            rep.warn_msg(f'skipped diminished file: '
                         f'{rep.qpath(sender.flist.source_path(e))}')
            if proto >= 30:
                io.send_msg(Msg.NO_SEND, encode_int32(ndx))
            return
        self._write_ndx_and_attrs(ndx, iflags, ftype, xname)
        self._write_sum_head(head)
        rep.log_item_transfer_start(e, iflags)
        progress = rep.progress
        if progress is not None:  # sender.c: set_current_file_index(), then match_sums()
            lists = self._lists
            progress.flist_eof = lists is None or lists.eof
            rep.progress_start(ndx - (lists.flist_num(ndx) if lists else 0), e)
        fsum = FileSum(neg.checksum, neg.checksum_seed, proto)
        if head.count and not append:
            last = head.remainder or head.blength
            encoder.begin_file(block_length=head.blength, last_block_length=last,
                               file_size=data.size)
        else:  # match_sums(): whole file, or --append's tail, in CHUNK_SIZE pieces
            encoder.begin_file(file_size=data.size - min(head.flength, data.size)
                               if append else data.size)
        offset = 0
        fd = data.source_fd
        literal = matched = 0
        tokens = data.tokens
        if append:
            tokens = _append_tokens(data, head, append > 1, fsum)
            offset = min(head.flength, data.size)
        if plain and sums is None and not append and fd is not None:
            # Whole file, no compression: the token stream is just the data in
            # CHUNK_SIZE pieces, each after its length; read big, write once.
            while chunk := os.read(fd, 1 << 18):
                fsum.update(chunk)
                _write_literal(io.write, chunk)
                if progress is not None:  # match.c: after each CHUNK_SIZE piece
                    for piece_end in range(offset + CHUNK_SIZE, offset + len(chunk),
                                           CHUNK_SIZE):
                        rep.progress_update(piece_end)
                offset += len(chunk)
                if progress is not None:
                    rep.progress_update(offset)
            literal = offset
            tokens = ()
        # Delta tokens bring the file's checksum along (match_tokens() hashes the
        # file as it reads it): then plain tokens need no second read of the blocks.
        own_sum = data.file_sum is not None and not append
        skip_blocks = own_sum and plain
        for tok in tokens:
            if isinstance(tok, int):
                blen = head.block_len(tok)
                if skip_blocks:
                    io.write(encoder.block(tok, length=blen))
                else:
                    block = os.pread(fd, blen, offset) if fd is not None else b""
                    if not own_sum:
                        fsum.update(block)
                    io.write(encoder.block(tok, block))
                offset += blen
                matched += blen
            else:
                if not own_sum:
                    fsum.update(tok)
                io.write(encoder.literal(tok))
                offset += len(tok)
                literal += len(tok)
        data.close()
        io.write(encoder.end_file())
        io.write(data.file_sum[0] if own_sum and data.file_sum else fsum.digest())
        stats.literal_data += literal
        stats.matched_data += matched
        if sums is not None:  # match.c: the totals match_report() gives at -vv
            counts, tot = sums.stats, self._match_totals
            tot[0] += counts[0]
            tot[1] += counts[1]
            tot[2] += counts[2]
        if progress is not None:
            rep.progress_end(e)
        rep.log_item_transfer_end(e, iflags, offset)

    def _compress_level(self) -> int | None:
        """The deflate level for the sender's stream (a daemon module may lower it)."""
        return self.opts.compress_level

    # -------------------------------------------------------------------- pull
    def _pull(self) -> int:
        self.stats = m.Stats()
        self._send_filter_list()
        assert self.io is not None
        if self._ff_data is not None:
            # main.c client_run(): forward the local list while the file list comes in.
            self._forward_files_from(self._ff_data, bool(self.opts.from0))
        else:
            self.io.flush()
        flist = self._recv_flist()
        if not self.plan.local_paths or self.opts.list_only:
            return self._list_only(flist)
        dest = os.fsencode(self.plan.local_paths[0])
        code = self._receive(flist, dest)
        return code

    def _recv_flist(self):
        """flist.c recv_file_list(): read, map ids, sort and clean the sender's list."""
        from netsync.flist import FileList
        from netsync.flist_codec import FlistDecoder, sort_and_clean

        opts = self.opts
        io = self.io
        rep = self.rep
        assert io is not None
        proto = self.neg.protocol
        stats = self.stats
        show_flist = not self.am_server and rep.level("flist") >= 1 and not opts.quiet \
            and bool(opts.recursive or opts.recurse or opts.dirs)
        inc = self.neg.inc_recurse
        rep._log_file_msg("receiving file list")  # flist.c recv_file_list(): FLOG
        # (a local copy's: what its sender would say)
        said_inc = self._inc_wanted if self._local_sender_words else inc
        word = "sending" if self._local_sender_words else "receiving"
        if said_inc and show_flist:
            show_flist = False
            rep.client_info(f"{word} incremental file list")  # flist.c: FCLIENT
        if show_flist:
            rep.flist_start("building file list" if self._local_sender_words
                            else "receiving file list")
        # flist_expand()'s my_alloc() is bounded by --max-alloc; so is our list (an entry
        # costs us about 256 bytes).
        dec = FlistDecoder(proto, relative_paths=bool(opts.relative),
                           recurse=bool(opts.recursive or opts.recurse),
                           max_entries=(opts.max_alloc or 1 << 30) // FLIST_ENTRY_SIZE,
                           **self._flist_codec_kwargs())
        if self._xa is not None:
            self._xa.codec(dec)
        # Names in the decoder's messages: a client prints them (escaped, log.c rwrite());
        # a server sends them raw, for its client to escape as it prints them.
        dec.show_name = os.fsdecode if self.am_server else rep.safe
        if opts.delete_missing_args:
            dec.missing_args = 2
        if opts.acls:
            self._acl_codec(dec)
        before = self.conn.bytes_read  # type: ignore[union-attr]
        counter = rep.list_counter() if show_flist else None
        raw_entries, io_error = self._decode_list(
            dec, None if counter is None else counter.received)
        stats.flist_size = self.conn.bytes_read - before  # type: ignore[union-attr]
        if inc:
            return self._first_inc_list(dec, raw_entries, io_error)
        if not self.am_server:
            bad = _unrequested_name(raw_entries, self.plan, opts)
            if bad is not None:
                raise TransportError(E.RERR_UNSUPPORTED, "ERROR: rejecting unrequested "
                                     f"file-list name: {rep.safe(bad)}", bare=True)
        if show_flist:
            rep.flist_done(len(raw_entries))
        if not opts.numeric_ids:
            _map_ids(raw_entries, dec.uid_names, dec.gid_names)
        self._chmod_received(raw_entries)
        self._munge_received(raw_entries)
        self._map_acl_ids(raw_entries)
        entries = sort_and_clean(raw_entries, protocol=proto, am_sender=False,
                                 strip_root=bool(opts.relative))
        self._map_wire_order(raw_entries, entries)
        if not self.neg.inc_recurse:  # (sub-lists are checked by the decoder)
            _check_parents(entries, bool(opts.delete_missing_args), dec.show_name)
        if not self.am_server and not opts.trust_sender:
            _downgrade_implied_parents(entries, self.plan, bool(opts.relative),
                                       bool(opts.recursive or opts.recurse or opts.dirs))
        flist = FileList(entries=entries, roots=[b"."], io_error=io_error)
        stats.count_listed(entries)
        if opts.prune_empty_dirs:  # (-m turns incremental recursion off)
            _clear_empty_dirs(entries, self._receiver_filters())
        return flist

    def _decode_list(self, dec, counter: Callable[[int], None] | None = None
                     ) -> tuple[list, int]:
        """Read one file list (up to its end marker) off the stream: (entries, io_error);
        ``counter`` sees the count after each entry (-P's "N files...")."""
        from netsync.flist_codec import EndOfList

        io = self.io
        assert io is not None
        raw_entries = []
        try:
            while True:
                item = dec.next_entry()
                if item is None:
                    dec.feed(io.read_some())
                    continue
                if isinstance(item, EndOfList):
                    # flist.c recv_file_list(): --ignore-errors ignores the sender's.
                    io_error = 0 if self.opts.ignore_errors else item.io_error
                    if self._iconv_io_error:
                        io_error |= 1  # IOERR_GENERAL: ours, --ignore-errors or not
                    break
                if self.iconv is not None:
                    self._iconv_received(item)
                raw_entries.append(item)
                if counter is not None:
                    counter(len(raw_entries))
        finally:
            reader = dec.reader
            io.unread(bytes(reader.buf[reader.pos:]))
            reader.buf.clear()
            reader.pos = 0
        return raw_entries, io_error

    # ------------------------------------------------- incremental recursion (pull)
    def _iconv_received(self, e) -> None:
        """flist.c recv_file_entry() with --iconv: the name (and, from a sender that
        converts them, the symlink target) from UTF-8 into this side's charset.  One
        that does not convert is an error, and its entry a cleared slot (it keeps its
        index, as rsync's empty name does)."""
        ic = self.iconv
        name = ic.from_wire(e.name)
        if name is None:
            self._iconv_error(b"[Receiver] cannot convert filename: %s (%s)"
                              % (e.name, ic.error.encode()), utf8=True)
        else:
            e.name = name
            if e.link is None or not self.symlink_iconv or not stat.S_ISLNK(e.mode):
                return
            link = ic.from_wire(e.link)
            if link is not None:
                e.link = link
                return
            self._iconv_error(b"[Receiver] cannot convert symlink data for: %s (%s)"
                              % (os.fsencode(self.rep.qpath(name)), ic.error.encode()),
                              utf8=False)
        e.flags |= FLAG_DUPLICATE
        self._iconv_io_error = True

    _iconv_io_error = False
    _local_sender_words = False  # (_LocalServer)
    _exit_said = False  # a server's exit line went before the end

    @staticmethod
    def _ndx_to_wire(ndx: int) -> int:  # (--iconv replaces it: _map_wire_order())
        return ndx

    def _iconv_error(self, msg: bytes, utf8: bool) -> None:
        """rprintf(FERROR_UTF8 / FERROR_XFER): a UTF-8 name shown in this side's charset,
        each byte that does not convert as \\#ooo (rwrite() with ic_recv); a server
        sends it as it is, for its client to show."""
        if utf8 and self.am_server:
            # io.c send_msg(..., convert=0): already UTF-8, for the client to show
            self.io.send_msg(Msg.ERROR, msg + b"\n")  # type: ignore[union-attr]
            return
        if utf8:
            msg = self.iconv.text_from_wire(msg)
        self.rep.error_xfer(os.fsdecode(msg), bare=True)

    def _map_wire_order(self, raw_entries: list, entries: list) -> None:
        """flist.c need_unsorted_flist: with --iconv both ends number the files in the
        order they were sent (each sorts its own names, which may differ); this side
        works in its sorted order and maps the indexes it reads and writes."""
        if self.iconv is None:
            return
        pos = {id(e): i for i, e in enumerate(raw_entries)}
        wire_of = [pos[id(e)] for e in entries]
        sorted_of = [0] * len(wire_of)
        for i, w in enumerate(wire_of):
            sorted_of[w] = i
        io = self.io
        ndx_in = io.ndx_in = _MappedNdxIn(io.ndx_in, sorted_of)  # type: ignore[union-attr]
        ndx_out = io.ndx_out = _MappedNdxOut(io.ndx_out, wire_of)  # type: ignore[union-attr]
        io.ndx_from_wire = ndx_in.map  # type: ignore[union-attr]  # (MSG_NO_SEND)
        self._ndx_to_wire = ndx_out.map  # (MSG_SUCCESS)

    def _first_inc_list(self, dec, raw_entries: list, io_error: int):
        """The first list of an incremental pull; the feed takes the later ones."""
        from netsync.flist import FileList

        flist = FileList(entries=[], roots=[b"."], io_error=io_error)
        self._dec = dec
        self._dirs: dict[int, object] = {}  # dir_ndx -> entry, until its list comes
        self._ndirs = 0
        self._done_echoes = 0  # per-list NDX_DONEs whose echo is still to come
        feed = self._feed = _WireFeed(
            self, flist, (self.opts.max_alloc or 1 << 30) // FLIST_ENTRY_SIZE)
        entries = self._clean_inc_list(raw_entries, None)
        if entries and entries[0].name == b"." and stat.S_ISDIR(entries[0].mode):
            # The first list holds the top dir's contents: no list of its own may follow
            # (an empty one would make --delete sweep the whole destination).
            dec._dirs_listed.add(0)
            self._dirs.pop(0, None)
            feed.add(entries[0], dec.ndx_start, entries, io_error)
        else:
            feed.add(None, dec.ndx_start, entries, io_error)
        feed.first = entries
        if len(entries) == 1:
            # main.c recv_additional_file_list(): is this a one-file transfer?
            self._read_list_ndx(self.io.read_ndx())  # type: ignore[union-attr]
        if self.rep.progress is not None:
            self.rep.progress.flist_eof = feed.eof
        return flist

    def _received(self, entries: list) -> None:
        """A hook on each received list (a daemon module's rules)."""

    def _chmod_received(self, raw_entries: list) -> None:
        """flist.c recv_file_entry(): a receiver given --chmod (a pulling client, or a
        server told by -M) tweaks each received mode, as a sender does its own."""
        rules = getattr(self, "_recv_chmod", False)  # (parsed on the first list)
        if rules is False:
            rules = None
            if self.opts.chmod:
                from netsync.chmod import parse_chmod

                rules = parse_chmod(self.opts.chmod)
            self._recv_chmod = rules
        if rules is None:
            return
        from netsync.chmod import tweak_mode

        for e in raw_entries:
            if e.mode and not stat.S_ISLNK(e.mode):
                e.mode = tweak_mode(e.mode, rules)

    def _munge_received(self, raw_entries: list) -> None:
        """flist.c recv_file_entry(): a client receiving with --munge-links munges each
        link as it reads it, so what it prints (-v, -i, --list-only) is the munged
        target, as made.  (A server munges where it makes the link, generator.py.)"""
        if self.am_server or not self.opts.munge_links:
            return
        from netsync.sender import SYMLINK_PREFIX

        for e in raw_entries:
            if e.link is not None and stat.S_ISLNK(e.mode):
                e.link = SYMLINK_PREFIX + e.link

    def _map_acl_ids(self, raw_entries: list) -> None:
        """-A: --usermap/--groupmap (--chown) on a received list's ACL ids, as on its
        owners (acls.c recv_ida_entries() / match_acl_ids())."""
        maps = getattr(self, "_acl_maps", False)  # (worked out on the first list)
        if maps is False:
            from netsync import metadata as _md
            from netsync.cli import acl_id_maps

            maps = self._acl_maps = acl_id_maps(self.opts, bool(self.neg.inc_recurse),
                                                os.geteuid() == 0 or _md.fake_super)
        if maps is not None:
            from netsync.cli import map_acl_ids

            map_acl_ids(raw_entries, maps, {})

    def _clean_inc_list(self, raw_entries: list, parent) -> list:
        """recv_file_list()'s tail for one list: the checks, ids, sort; its dirs join
        dir_flist (rsync's numbering for the sub-lists to come)."""
        from netsync.flist_codec import sort_and_clean

        opts = self.opts
        client = not self.am_server  # (a client checks what it asked a server for)
        bad = _unrequested_name(raw_entries, self.plan, opts) if client else None
        if bad is not None:
            raise TransportError(E.RERR_UNSUPPORTED, "ERROR: rejecting unrequested "
                                 f"file-list name: {self.rep.safe(bad)}", bare=True)
        dec = self._dec
        if not opts.numeric_ids:
            _map_ids(raw_entries, dec.uid_names, dec.gid_names)
        self._chmod_received(raw_entries)
        self._munge_received(raw_entries)
        self._map_acl_ids(raw_entries)
        entries = sort_and_clean(raw_entries, protocol=self.neg.protocol, am_sender=False)
        self._received(entries)
        if client and not opts.trust_sender:
            _downgrade_implied_parents(entries, self.plan, False,
                                       bool(opts.recursive or opts.recurse or opts.dirs))
        for e in entries:
            if stat.S_ISDIR(e.mode):
                if not e.flags & FLAG_DUPLICATE:  # a cleared slot takes no list
                    self._dirs[self._ndirs] = e
                self._ndirs += 1
        if self._ndirs != len(dec.dir_names):  # (both sort a list's dirs the same way)
            raise WireError(f"file-list directory count mismatch [{self.who}]",
                            E.RERR_PROTOCOL)
        self.stats.count_listed(entries)
        return entries

    def _read_list_ndx(self, ndx: int) -> None:
        """A negative index the sender interleaves with an incremental transfer: a
        sub-list (NDX_FLIST_OFFSET - dir_ndx), the list's end (NDX_FLIST_EOF), or the
        echo of a per-list NDX_DONE."""
        feed = self._feed
        assert feed is not None
        if ndx >= 0:
            self._skip_echo(ndx)
            return
        if ndx == NDX_DONE and self._done_echoes:
            self._done_echoes -= 1
            return
        if ndx == NDX_FLIST_EOF and not feed.eof:
            feed.eof = True
            if self.rep.progress is not None:
                self.rep.progress.flist_eof = True
            return
        if ndx <= NDX_FLIST_OFFSET and not feed.eof:
            dec = self._dec
            if feed.all_freed and 0 <= NDX_FLIST_OFFSET - ndx < len(dec.dir_names):
                # flist.c recv_file_list(): no list is left for a sub-list to join.
                raise WireError("refusing sub-flist after final flist was freed",
                                E.RERR_PROTOCOL)
            dir_ndx = dec.begin_sublist(ndx)
            parent = self._dirs.pop(dir_ndx, None)
            if parent is None:
                raise WireError(f"refusing flist for cleared dir_ndx {dir_ndx} [{self.who}]",
                                E.RERR_PROTOCOL)
            base = dec.ndx_start
            raw_entries, io_error = self._decode_list(dec)
            entries = self._clean_inc_list(raw_entries, parent)
            feed.flist.io_error |= io_error
            feed.add(parent, base, entries, feed.flist.io_error)
            return
        raise WireError(f"Invalid file index: {ndx} [{self.who}]", E.RERR_PROTOCOL)

    def _list_only(self, flist) -> int:
        """generator.c list_file_entry() for every listed item (no destination)."""
        from netsync.flist import FLAG_DUPLICATE, FLAG_IMPLIED_DIR

        opts = self.opts
        rep = self.rep
        if flist.entries:
            from netsync.cli import list_only_checks

            list_only_checks(opts, rep)
        for e in flist.entries:
            if e.flags & FLAG_DUPLICATE:
                continue
            if stat.S_ISDIR(e.mode) and not opts.implied_dirs and e.flags & FLAG_IMPLIED_DIR:
                continue
            if e.mode == 0 and opts.delete_missing_args:
                # list_file_entry(): "*missing" padded to the permissions+size+time columns.
                width = 10 + 1 + (14 if opts.human_readable else 11) + 20
                self._list_emit(b"%-*s %s" % (width, b"*missing", e.name))
                continue
            link = e.link if stat.S_ISLNK(e.mode) and opts.links else None
            if link is not None and self.am_server and opts.munge_links:
                link = b"/rsyncd-munged/" + link  # (munged as received, flist.c; see above)
            self._list_emit(log.list_line_raw(e.mode, e.size, e.mtime, e.name, link,
                                              opts.human_readable))
        rep.out.flush()
        self._pull_phases()
        self._summary(self.remote_read, self.remote_written, self.stats.total_size)
        return self._final_code(flist.io_error)

    def _list_emit(self, raw: bytes) -> None:
        self.rep.out.write(log.escape_output(raw, eight_bit=self.opts.eight_bit_output) + "\n")

    def _receive(self, flist, dest: bytes) -> int:
        from netsync.cli import (
            _get_local_name,
            _into_dest,
            _local_name,
            _parse_ids,
            _under,
            alt_basis_dirs,
            check_alt_basis_dirs,
            recv_base,
            recv_dir_checks,
        )
        from netsync.generator import Generator, GenOptions
        from netsync.metadata import AttrOptions
        from netsync.receiver import ReceiveOptions, Receiver

        opts = self.opts
        rep = self.rep
        io = self.io
        neg = self.neg
        assert io is not None
        proto = neg.protocol
        stats = self.stats
        am_root = os.geteuid() == 0
        feed = self._feed
        if not flist.entries and (feed is None or not feed.listed):
            if self.am_server:
                self._pull_phases()  # main.c do_server_recv(): do_recv() all the same
            else:
                # main.c: a server sender whose (first) list is empty ends its run
                # there, and the client_run() that got it only shows the summary
                # (writing on meets a closed pipe: "write error: Broken pipe", 12).
                io.flush()
            self._summary(io.conn.bytes_written, io.conn.bytes_read, stats.total_size)
            return self._final_code(flist.io_error)
        if feed is not None:
            # main.c get_local_name() on what the first list(s) held.
            solo, dry_missing = _local_name(opts, rep, feed.first, feed.listed, dest)
        else:
            solo, dry_missing = _get_local_name(opts, rep, flist, dest)
        # (a daemon's destination was checked to stay in its module)
        base = recv_base(dest.rstrip(b"/") or b"/", solo)
        dest_root = _into_dest(dest.rstrip(b"/") or b"/", solo)
        if not solo:
            rep.top_dir = dest_root
        umask = os.umask(0)
        os.umask(umask)
        rfilters = self._receiver_filters()
        if rfilters is not None:
            rfilters.set_root(os.path.abspath(dest_root))
        a = AttrOptions(
            perms=opts.perms, executability=opts.executability, owner=opts.owner,
            group=opts.group, times=opts.times, omit_dir_times=bool(opts.omit_dir_times),
            omit_link_times=opts.omit_link_times, atimes=bool(opts.atimes), am_root=am_root,
            dry_run=opts.dry_run, modify_window=opts.modify_window or 0,
            uid_map=_parse_ids(opts.usermap, opts.numeric_ids, "usermap", rep.warn_msg),
            gid_map=_parse_ids(opts.groupmap, opts.numeric_ids, "groupmap", rep.warn_msg),
            chown_uid=None, chown_gid=None, umask=umask, acls=bool(opts.acls),
            xattrs=self._xa.ctx if self._xa is not None else None, shown=rep.qpath,
        )
        enc = os.fsencode
        ropts = ReceiveOptions(
            inplace=bool(opts.inplace or opts.append), append=opts.append or 0,
            partial=opts.partial,
            partial_dir=enc(opts.partial_dir) if opts.partial_dir and not opts.delay_updates
            else None,
            temp_dir=_under(base, opts.temp_dir) if opts.temp_dir else None,
            delay_updates=opts.delay_updates, sparse=opts.sparse, backup=opts.backup,
            # --delay-updates stages each file in the --partial-dir (default .~tmp~)
            stage_dir=enc(opts.partial_dir or ".~tmp~") if opts.delay_updates else b".~tmp~",
            backup_dir=_under(base, opts.backup_dir) if opts.backup_dir else None,
            suffix=enc(opts.suffix or ""), dry_run=opts.dry_run,
        )
        alt = opts.alt_dest
        alt_dirs = alt_basis_dirs(opts, base)
        if alt:  # (named as the receiver resolves them: a daemon's sanitized path as is)
            check_alt_basis_dirs(rep, alt, alt_dirs, base,
                                 sanitized=getattr(self, "daemon", None) is not None)
        recv_dir_checks(opts, rep, b"." if dry_missing else base)
        self._check_module_dirs()
        recursive = bool(opts.recursive or opts.recurse)
        g = GenOptions(
            recursive=recursive, dirs=bool(opts.dirs), links=opts.links,
            safe_links=opts.safe_links,
            munge_links=opts.munge_links and self.am_server,  # (a client's are munged)
            keep_dirlinks=opts.keep_dirlinks, hard_links=bool(opts.hard_links),
            # --drop-D: the receiver creates no devices/specials; the list's rdev
            # framing (opts.devices/specials) is untouched.
            devices=opts.devices and not opts.drop_D, specials=opts.specials and not opts.drop_D,
            checksum=bool(opts.checksum),
            size_only=opts.size_only, ignore_times=opts.ignore_times, update=opts.update,
            existing=opts.existing, ignore_existing=opts.ignore_existing,
            max_size=opts.max_size, min_size=opts.min_size,
            # generator.c: --append always sends a sum head (the length it has).
            whole_file=opts.whole_file is True and not opts.append, append=opts.append or 0,
            delete=opts.delete,
            delete_mode=(opts.delete_mode or ("during" if proto >= 30 else "before"))
            if opts.delete else None,
            force=opts.force, max_delete=opts.max_delete, ignore_errors=opts.ignore_errors,
            remove_source_files=bool(opts.remove_source_files),
            backup=opts.backup, backup_dir=ropts.backup_dir, suffix=ropts.suffix,
            alt_dest=alt_dirs, alt_dest_type=alt[0].split("-")[0] if alt else None,
            implied_dirs=opts.implied_dirs, relative=bool(opts.relative),
            # (a dry --read-batch, too, asks for each file: its data is read past)
            dry_run=opts.dry_run, batch_only=opts.only_write_batch is not None
            or opts.dry_run and opts.read_batch is not None,
            am_root=am_root, omit_dir_times=bool(opts.omit_dir_times), mkpath=opts.mkpath,
            inc_recurse=feed is not None,
            fuzzy=opts.fuzzy, fuzzy_debug=opts.debug.get("fuzzy", 0),
        )
        ropts.bwlimit = opts.bwlimit_bytes or 0
        ropts.backup_nsec = proto >= 31
        ropts.progress_per_token = True
        receiver = (_inplace_receiver_cls(Receiver, self) if ropts.inplace
                    else Receiver)(ropts, a, rep)

        def success(ndx: int) -> None:
            io.send_msg(Msg.SUCCESS, encode_int32(self._ndx_to_wire(ndx)))

        gen_base = _missing_args_gen(Generator) if opts.delete_missing_args else Generator
        if opts.prune_empty_dirs:
            gen_base = _pruned_dirs_gen(gen_base)
        gen = self._generator_cls(gen_base)(
            g, a, flist, dest_root, receiver, self._request, rep, rfilters,
            self._file_sum_fn() if opts.checksum else None, on_success=success, solo_file=solo)
        gen.sum_params = (neg.checksum, neg.checksum_seed, proto)
        if gen.xag is not None:
            gen.xag.defer = True  # (xattr-only items: set when the sender's reply comes)
        # receiver.c: a daemon that negotiated in-place partial updates refuses a
        # --partial-dir basis out of its module rather than ignore the operand.
        gen.strict_partial = getattr(self, "daemon", None) is not None and neg.inplace_partial
        gen.sum_kwargs = {"proper_seed_order": neg.proper_seed_order or proto < 30,
                          "block_size": opts.block_size or 0}
        gen.stats = stats
        if opts.acls:
            inc = "i" in (opts.server_caps or "") if self.am_server \
                else getattr(self, "_inc_wanted", False)
            gen.acl_inc_dirs = acl_inc_dirs(opts, inc)
        if dry_missing:
            gen.dry_missing = b"."
        self.flist = flist
        from netsync import token

        self.decoder = token.make_decoder(neg.compress or "none", proto)
        self.redo: list[int] = []
        self.redoing = False
        gen.after_files = lambda: self._redo_phase(gen)
        if feed is not None:
            gen.feed = feed  # type: ignore[assignment]
            if feed.hl_last is not None:
                gen.hl_last = feed.hl_last
            self._inc_progress(rep)
        rep.attach_stats(stats)
        if feed is not None and rep.progress is not None:
            rep.progress.flist_eof = feed.eof  # "ir-chk" while lists still arrive
        # Pipelined requests.  What the generator prints of later items must follow the
        # lines of the files still in flight, so any output (stdout, --progress, the
        # --log-file) first receives those.  A server's text goes to the client as
        # messages, and a daemon's lines to its log: each first receives the files in
        # flight, as the client's lines do.  (A file's %b still counts what its own
        # receive consumed of the input.)
        saved_out = rep.out, rep.err
        saved_logfile = rep.logfile
        saved_send = None
        xlog = getattr(rep, "xlog", None) if self.am_server else None
        saved_xout = None if xlog is None else xlog.out
        self._gen = gen
        if proto < 29 and not self.am_server:
            gen.xfer_log_iflags = log.ITEM_TRANSFER | log.ITEM_MISSING_DATA
        self._inflight: deque[int] = deque()
        self._inflight_bytes = 0
        gen.request_later = self._request_later
        rep.out = FinishFirst(rep.out, gen.finish_requests)
        rep.err = FinishFirst(rep.err, gen.finish_requests)
        if rep.logfile is not None:
            rep.logfile = FinishFirst(rep.logfile, gen.finish_requests)
        if self.am_server:
            saved_send = self.io.send_msg
            self.io.send_msg = _texts_finish_first(  # type: ignore[method-assign]
                saved_send, gen.finish_requests)
            if xlog is not None:
                xlog.out = FinishFirst(xlog.out, gen.finish_requests)
        if opts.debug.get("flist", 0) >= 1:  # generator.c generate_files(), at -vv
            rep.info("delta-transmission " + ("disabled for local transfer or --whole-file"
                                              if opts.whole_file and not opts.append
                                              else "enabled"))
        try:
            gen.run()
        except BaseException:
            receiver.abort()
            raise
        finally:
            rep.out, rep.err = saved_out
            if rep.logfile is not None:  # (closed meanwhile: left closed)
                rep.logfile = saved_logfile
            if saved_send is not None:
                self.io.send_msg = saved_send  # type: ignore[method-assign]
            if xlog is not None:
                xlog.out = saved_xout
            gen.request_later = None
            if rep.progress is not None:
                rep.progress.newline_if_needed()
        if self.am_server and self._iconv_io_error:
            # cleanup.c: a server's own I/O error (a name --iconv could not convert)
            # ends its generator with code 23, which says so to the client.
            self.rep.error_xfer(E.exit_message(E.RERR_PARTIAL, self.rep.prog), bare=True)
            self._exit_said = True
        self._pull_phases(first_done=True)
        self._summary(self.remote_read, self.remote_written, stats.total_size)
        return self._final_code(flist.io_error | gen.io_error)

    def _check_module_dirs(self) -> None:
        """A daemon's check of the basis and partial dirs against its module."""

    def _receiver_filters(self):
        """The generator's filter list (for --delete): the client's own rules."""
        opts = self.opts
        if not (opts.filter_args or opts.cvs_exclude):
            return None
        from netsync import filters as F

        fl = F.build_filter_list(opts.filter_args, opts.cvs_exclude, opts.delete_excluded,
                                 opts.from0)
        fl.cvs_after_send = True  # exclude.c send_filter_list(): -C's rules come after
        return fl

    def _generator_cls(self, base: type) -> type:
        """The Generator class to run; a server reports items to the remote sender, and
        so does a pulling client from protocol 29 on (generator.c itemize() writes every
        significant item to the sender, which logs it -- a daemon's transfer log -- and
        echoes it; in a dry run the transfers too).  Ours are logged as reported, so
        the echoes are only read past (_skip_echo())."""
        if self.am_server or self.neg.protocol < 29:
            return base
        client = self
        self._send_items = True
        self._dry_items = bool(self.opts.dry_run)

        class PullGenerator(ItemNdx, base):  # type: ignore[misc, valid-type]
            def report_item(self, e, iflags: int, xname: bytes | None = None) -> int:
                if self._item_ndx >= 0 and self.rep.should_send_itemize(iflags, xname) \
                        and (not iflags & ITEM_TRANSFER
                             or self.g.dry_run and not self.g.batch_only):
                    client._write_item(self._item_ndx, iflags, xname, e)
                return super().report_item(e, iflags, xname)

        return PullGenerator

    def _write_item(self, ndx: int, iflags: int, xname: bytes | None, e=None) -> None:
        """generator.c itemize(): an item reported to the remote sender (no basis
        type; the xname follows when there is one).  ``e``: the entry the item is of,
        for -X's request (its list may be gone by now)."""
        named = xname is not None and iflags & ITEM_XNAME_FOLLOWS  # (even "": a link here)
        iflags &= ~(ITEM_BASIS_TYPE_FOLLOWS | ITEM_XNAME_FOLLOWS)
        if xname or named:
            iflags |= ITEM_XNAME_FOLLOWS
        xa = self._xa
        if xa is None:
            self._write_ndx_and_attrs(ndx, iflags & 0xFFFF, 0, xname)
            return
        xa.item_e = e
        try:
            self._write_ndx_and_attrs(ndx, iflags & 0xFFFF, 0, xname)
        finally:
            xa.item_e = None

    def _skip_echo(self, ndx: int) -> None:
        """The sender's echo of an item our generator reported (of a list perhaps
        dropped since): checked and read past."""
        io = self.io
        assert io is not None
        feed = self._feed
        high = feed.high if feed is not None else len(self.flist.entries)
        if not self._send_items or not 0 <= ndx < high:
            raise WireError(f"Invalid file index: {ndx} [{self.who}]", E.RERR_PROTOCOL)
        iflags = io.read_shortint()
        if iflags & ITEM_TRANSFER and not self._dry_items:
            raise WireError(f"Invalid file index: {ndx} [{self.who}]", E.RERR_PROTOCOL)
        if iflags & ITEM_BASIS_TYPE_FOLLOWS:
            io.read_byte()
        if iflags & ITEM_XNAME_FOLLOWS:
            io.read_vstring(4096)
        if self._xa is not None and iflags & log.ITEM_REPORT_XATTR:
            self._xa.read(ndx, iflags)

    def _redo_phase(self, gen) -> None:
        """End phase 0; re-request files that failed verification with full-length sums."""
        io = self.io
        assert io is not None
        gen.finish_requests()
        gen.request_later = None  # (the few redone files are asked for one by one)
        self._drain_pending()
        feed = self._feed
        if feed is not None and feed.active:
            # Every list but the last ends with its own NDX_DONE; the last one's is
            # the end of phase 0.  A list's failed files are redone before its NDX_DONE
            # (check_for_finished_files(): the sender frees a list on it).
            self._retire(feed.active[-1][0], finish=True)
            if self.redo:
                redo, self.redo = self.redo, []
                self._redo_now(gen, redo)
        io.write_ndx(NDX_DONE)
        io.flush()
        self._expect_done()
        if not self.redo:
            return
        self.redoing = True
        self._redo_files(gen, self.redo)

    def _redo_now(self, gen, ndxs: list[int]) -> None:
        """The redo pass of one list (or of all) before its NDX_DONE goes out."""
        self.redoing = True
        try:
            self._redo_files(gen, ndxs)
        finally:
            self.redoing = False

    def _redo_files(self, gen, ndxs: list[int]) -> None:
        from netsync.checksum import SUM_LENGTH

        saved = (gen.g.ignore_times, gen.g.append, gen.recv.r.append, gen.sum_kwargs,
                 gen.request_later)
        gen.g.ignore_times = True  # generate_files(): the redo phase skips the quick check
        # ... and turns --append off: the file is sent whole (delta against what is there).
        gen.g.append = gen.recv.r.append = 0
        gen.sum_kwargs = {**gen.sum_kwargs, "csum_length": SUM_LENGTH}
        gen.request_later = None
        try:
            for ndx in ndxs:
                gen.recv_generator(ndx, self._entry(ndx))
        finally:
            (gen.g.ignore_times, gen.g.append, gen.recv.r.append, gen.sum_kwargs,
             gen.request_later) = saved

    def _retire(self, before: int, finish: bool) -> None:
        """generator.c check_for_finished_files(): NDX_DONE for each list (oldest first)
        that starts before ``before`` and is done -- all its files received (waiting for
        them with ``finish``) and redone -- so the sender frees it and lists further
        ahead, and we drop it.  The list being generated is never finished this way:
        the sender would take that for the end of phase 0."""
        feed = self._feed
        gen = self._gen
        io = self.io
        assert feed is not None and io is not None
        while feed.active and feed.active[0][0] < before:
            base, entries, _num = feed.active[0]
            end = base + len(entries)
            if gen.hl_pending_from is not None and gen.hl_pending_from < end:
                # Hard-linked members of this list wait for their group's data: linked
                # once every list received is generated (the groups' last members too).
                if not finish:
                    return
                gen.finish_requests()
                self._drain_pending()
                feed.see()
                gen.finish_hard_links()
            later = gen._later
            if later and later[0][1] < end:
                if not finish:
                    return
                gen.finish_requests()
            if self.redo and any(base <= r < end for r in self.redo):
                # (rare: a file that failed verification) asked for again, whole-sum.
                gen.finish_requests()
                self._drain_pending()
                redo = [r for r in self.redo if base <= r < end]
                self.redo = [r for r in self.redo if not base <= r < end]
                self._redo_now(gen, redo)
            io.write_ndx(NDX_DONE)
            self._done_echoes += 1
            feed.dropped(feed.active.popleft())

    def _inc_progress(self, rep) -> None:
        """progress.c: a file's index shown is its ndx minus its list's number."""
        feed = self._feed
        start = rep.progress_start

        def progress_start(ndx: int, e) -> None:
            start(ndx - feed.flist_num(ndx), e)

        rep.progress_start = progress_start

    def _entry(self, ndx: int):
        if self._feed is not None:
            e = self._feed.entry(ndx)
            if e is None:
                raise WireError(f"Invalid file index: {ndx} [{self.who}]", E.RERR_PROTOCOL)
            return e
        return self.flist.entries[ndx]

    def _request(self, req: m.SendRequest) -> m.FileData:
        """Ask the remote sender for one file; its tokens are read as the receiver wants them."""
        io = self.io
        assert io is not None
        self._drain_pending()
        state = self._write_request(req)
        io.flush()
        return self._read_reply(req, *state)

    def _request_later(self, req: m.SendRequest):
        """Write a request now and read its reply later (the sender answers in order),
        as rsync's generator writes requests ahead of its receiver: a pull then does
        not wait a round trip per file.  In flight at most PIPE_FILES requests or
        PIPE_BYTES of them, so what we write never waits for the sender to read it.
        The requests go out together, in full frames, when a reply must be waited for
        (io._pump() flushes first), as rsync's buffered generator sends them: a frame
        and a write() per request cost 4 bytes and ~20 us each (a 3,000-file pull:
        0.41 -> 0.35 s)."""
        gen = self._gen
        assert self.io is not None and gen is not None
        inflight = self._inflight
        sums = req.sums
        size = 32
        if sums is not None and not (self.opts.append or 0) and not self.redoing:
            size += sums.head.count * (4 + sums.head.s2length)
        while inflight and (len(inflight) >= PIPE_FILES
                            or self._inflight_bytes + size > PIPE_BYTES):
            n = len(inflight)
            gen.finish_requests(n - 1)
            if len(inflight) >= n:  # cannot happen: finish_requests is not re-entered here
                raise WireError("pipelined request not finished", E.RERR_PROTOCOL)
        state = self._write_request(req)
        inflight.append(size)
        self._inflight_bytes += size

        def fetch() -> m.FileData:
            self._inflight_bytes -= inflight.popleft()
            self._drain_pending()
            return self._read_reply(req, *state)

        return fetch

    def _write_request(self, req: m.SendRequest) -> tuple[int, int]:
        """Write one file's ndx, iflags and sum head (+ block sums); (append, prefix)."""
        io = self.io
        assert io is not None
        if req.fuzzy_type:  # generator.c: FNAMECMP_FUZZY(+i) and the basis name follow
            self._write_ndx_and_attrs(req.ndx, req.iflags, req.fuzzy_type, req.fuzzy_name)
        else:
            iflags = req.iflags & ~(ITEM_BASIS_TYPE_FOLLOWS | ITEM_XNAME_FOLLOWS)
            self._write_ndx_and_attrs(req.ndx, iflags, 0, None)
        sums = req.sums
        append = 0 if self.redoing else (self.opts.append or 0)
        prefix = 0
        if sums is None:
            io.write(b"\0" * (16 if self.neg.protocol >= 27 else 12))
        elif append:
            # generate_and_send_sums(): --append sends the head (the length we have), no sums.
            self._write_sum_head(sums.head)
            prefix = sums.head.flength
        else:
            self._write_sum_head(sums.head)
            s2 = sums.head.s2length
            out = bytearray()
            strong = sums.strong
            for i, weak in enumerate(sums.sum1.tolist()):
                out += encode_int32(weak - (1 << 32) if weak >= 1 << 31 else weak)
                out += strong[i * s2:(i + 1) * s2]
            io.write(out)
        return append, prefix

    def _read_reply(self, req: m.SendRequest, append: int, prefix: int) -> m.FileData:
        """Read the sender's answer to ``req``: its echo and sum head; the tokens follow
        as the receiver reads the returned FileData."""
        io = self.io
        assert io is not None
        sums = req.sums
        nfiles = len(self.flist.entries)
        io.on_no_send = io.note_no_send
        while True:
            stashed, self._next_reply = self._next_reply, None
            # sender.c: MSG_NO_SEND, the sender could not open it and skips it. It may
            # have come before we read (a later skip, if any, waits in the set for its
            # turn), while we waited (_NoSend), or with the next file's header.
            if stashed is None and io.take_no_send(req.ndx):
                return _skipped(req)
            try:
                ndx, got_iflags, _ftype, _xname = stashed or self._read_ndx_and_attrs(nfiles)
            except _NoSend:
                if io.take_no_send(req.ndx):
                    return _skipped(req)
                continue
            if ndx == NDX_DONE:
                raise WireError(f"unexpected end of phase from sender [{self.who}]",
                                E.RERR_PROTOCOL)
            if ndx != req.ndx and io.take_no_send(req.ndx):
                # What we read answers a later request: keep it for that one.
                self._next_reply = (ndx, got_iflags, _ftype, _xname)
                return _skipped(req)
            if got_iflags & ITEM_TRANSFER:
                break
            # A non-transfer echo (not expected since we never send those): ignore it.
        if ndx != req.ndx:
            raise WireError(f"sender sent file {ndx} instead of {req.ndx} [{self.who}]",
                            E.RERR_PROTOCOL)
        if self.am_server and self.opts.only_write_batch is not None:
            # receiver.c, write_batch < 0: the client sender put the data in its batch;
            # only the echo came (and no data to count).
            return m.FileData(ndx, req.iflags, None, iter(()), size=0)
        xfer_started = getattr(self.rep, "xfer_started", None)
        if xfer_started is not None:
            xfer_started()  # receiver.c remember_initial_stats(): %b counts the sum head
        head = self._read_sum_head()
        if sums is not None and head != sums.head or sums is None and head.count:
            raise WireError(f"sender echoed a different sum head [{self.who}]",
                            E.RERR_PROTOCOL)
        e = self._entry(ndx)
        self._current_ndx = ndx
        basis = req.basis
        want_type = req.fuzzy_type or FNAMECMP_FNAME
        if _ftype != want_type or (want_type > FNAMECMP_FNAME and _xname != req.fuzzy_name):
            # The sender echoes the basis the generator named; one it names itself
            # instead is never opened (receiver.c: a basis its confined open refuses
            # is no basis), so a block match against it ends the transfer.
            basis = None
        if append:
            self._pending = self._tokens(e, None, basis, prefix, verify=append > 1)
            return m.FileData(ndx, req.iflags, None, self._pending, size=e.size)
        self._pending = self._tokens(e, sums, basis)
        return m.FileData(ndx, req.iflags, sums, self._pending, size=e.size)

    def _drain_pending(self) -> None:
        """receiver.c discard_receive_data(): a file the receiver gave up on (say its
        temp file could not be made) still has its tokens on the wire; read past them."""
        tokens = getattr(self, "_pending", None)
        self._pending = None
        if tokens is None:
            return
        try:
            for _ in tokens:
                pass
        except m.DiscardFile:
            pass

    def _tokens(self, e, sums, basis: bytes | None, prefix: int = 0,
                verify: bool = False) -> Iterator[bytes | int]:
        """The sender's tokens for one file; ``prefix``: --append's length kept from the
        basis (yielded first, since the receiver skips that much; in the file sum only
        for --append-verify, as receiver.c receive_data() does)."""
        from netsync import token
        from netsync.checksum import FileSum

        io = self.io
        assert io is not None
        neg = self.neg
        dec = self.decoder
        fsum = FileSum(neg.checksum, neg.checksum_seed, neg.protocol)
        if prefix and basis is not None:
            pfd = os.open(basis, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                off = 0
                while off < prefix:
                    chunk = os.pread(pfd, min(1 << 18, prefix - off), off)
                    if not chunk:
                        break
                    off += len(chunk)
                    if verify:
                        fsum.update(chunk)
                    yield chunk
            finally:
                os.close(pfd)
        bfd = None
        if sums is not None and basis is not None:
            try:
                bfd = os.open(basis, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                bfd = None
        limit = max(e.size, 0) + (1 << 20)
        total = matched = 0
        try:
            done = False
            while not done:
                for ev in dec:
                    if isinstance(ev, token.Literal):
                        data = ev.data
                        total += len(data)
                        if total > limit:
                            raise WireError(f"sender sent more data than the file size "
                                            f"[{self.who}]", E.RERR_PROTOCOL)
                        fsum.update(data)
                        yield data
                    elif isinstance(ev, token.Block):
                        i = ev.index
                        if basis is None and sums is not None:
                            raise WireError(f"got a block match with no basis file for "
                                            f"{self.rep.safe(e.name)} [{self.who}]",
                                            E.RERR_PROTOCOL)
                        if sums is None or bfd is None or not 0 <= i < sums.head.count:
                            raise WireError(f"invalid block index {i} from sender "
                                            f"[{self.who}]", E.RERR_PROTOCOL)
                        block = os.pread(bfd, sums.head.block_len(i), i * sums.head.blength)
                        dec.see_block(block)
                        fsum.update(block)
                        total += len(block)
                        matched += len(block)
                        yield i
                    else:
                        done = True
                        break
                if not done:
                    dec.feed(io.read_some())
            io.unread(dec.take_unconsumed())
            # The generator counted the whole size as literal data; correct it.
            self.stats.literal_data += total - matched - e.size
            self.stats.matched_data += matched
            want = fsum.digest()
            got = io.read(len(want))
        finally:
            if bfd is not None:
                os.close(bfd)
        if got != want:
            rep = self.rep
            if self.redoing:
                rep.error_xfer(f"ERROR: {rep.safe(e.name)} failed verification -- "
                               f"update discarded.", bare=True)
            else:
                if rep.level("name") >= 1 or rep.has_i:
                    rep.warn_msg(f"WARNING: {rep.safe(e.name)} failed verification -- "
                                 f"update discarded (will try again).")
                self.redo.append(self._current_ndx)
            if not (self.opts.inplace or self.opts.append):
                raise m.DiscardFile()
            self._verify_failed = True
            # receiver.c: written in place, the data cannot be taken back; the redo
            # phase (or the error above) is what puts it right.

    def _pull_phases(self, first_done: bool = False) -> None:
        """generate_files()' phase ends, then the receiver's reads and the goodbye.

        ``first_done``: phase 0 was already ended (and its echo read) by the redo step.
        """
        io = self.io
        assert io is not None
        opts = self.opts
        proto = self.neg.protocol
        self._drain_pending()
        if not first_done:
            io.write_ndx(NDX_DONE)
        io.write_ndx(NDX_DONE)
        if proto >= 29:
            io.write_ndx(NDX_DONE)
        if proto >= 31:
            if opts.delete or opts.force:
                s = self.stats
                io.write_ndx(NDX_DEL_STATS)
                io.write_varint(s.deleted_files - s.deleted_dirs - s.deleted_links
                                - s.deleted_devs - s.deleted_specials)
                io.write_varint(s.deleted_dirs)
                io.write_varint(s.deleted_links)
                io.write_varint(s.deleted_devs)
                io.write_varint(s.deleted_specials)
            io.write_ndx(NDX_DONE)
        io.flush()
        # The sender echoes each phase end it takes part in, then ends its loop with one more.
        for _ in range((3 if proto >= 29 else 2) - first_done):
            self._expect_done()
        if self.peer_sends_stats:
            self.remote_read = io.read_varlong30(3) if proto >= 30 else io.read_longint()
            self.remote_written = io.read_varlong30(3) if proto >= 30 else io.read_longint()
            self.stats.total_size = io.read_varlong30(3) if proto >= 30 else io.read_longint()
            if proto >= 29:  # the sender's list times (ms), shown by --stats
                self.stats.flist_buildtime = (
                    io.read_varlong30(3) if proto >= 30 else io.read_longint()) / 1000
                self.stats.flist_xfertime = (
                    io.read_varlong30(3) if proto >= 30 else io.read_longint()) / 1000
        if proto >= 31:
            self._expect_done()
        self._heap_stats()
        io.write_ndx(NDX_DONE)
        io.flush()

    def _expect_done(self) -> None:
        nfiles = len(self.flist.entries) if self.flist is not None else 0
        while True:
            ndx, iflags = self._read_ndx_and_attrs(nfiles)[:2]
            # A server's generator reports unchanged items; the sender echoes them
            # (and a pulling client's dry-run transfers).
            if ndx == NDX_DONE or iflags & ITEM_TRANSFER and not self._dry_items:
                break
        if ndx != NDX_DONE:
            raise WireError(f"Invalid packet at end of run ({ndx}) [{self.who}]",
                            E.RERR_PROTOCOL)


class _PushLists:
    """flist.c send_extra_file_list() for an incremental push: the sender.iter_chunks()
    walk goes out a directory list at a time, a lookahead ahead of the remote
    generator; a list is dropped once the generator is done with it (NDX_DONE)."""

    def __init__(self, client: _Client, sender, chunks, enc, tweak) -> None:
        self.c = client
        self.sender = sender
        self.it = chunks
        self.enc = enc
        self.tweak = tweak
        self.active: deque[tuple[int, list, object]] = deque()  # (ndx_start, entries, dir)
        self.dir_ndx: dict[object, int] = {}  # listed dirs whose own list is still to go
        self.ndirs = 0  # dir_flist->used
        self.next_start = 1  # the first list starts at 1 with incremental recursion
        # flist.c file_total (entries in lists not yet freed) and file_old_total (those
        # in lists up to the one the generator last asked about): the lookahead is
        # their difference.
        self.file_total = 0
        self.file_old_total = 0
        self.cur: tuple[int, list, object] | None = None
        self.eof = False
        self._ahead = None  # the next chunk, walked already (to know when it is the last)
        self._hit: tuple[int, list, object] | None = None
        self._io_error = 0
        self.nums: dict[int, int] = {}  # ndx_start -> flist_num, for --progress
        self.sent_lists = 0
        # -H: (dev, ino) -> the index it was first sent at, in whichever list
        self._idev: dict[tuple[int, int], int] | None = {} if sender.w.hard_links else None

    def _next(self):
        """The next chunk walked: (dir, entries, the I/O errors so far).  The errors
        go with the chunk: a list's end carries those of its own walk, not those of
        the chunk walked ahead of it (which would end dirs' deletions one list early)."""
        try:
            d, entries = next(self.it)
        except StopIteration:
            return None
        return d, entries, self._io_errors()

    def _io_errors(self) -> int:
        # (what the lists tell: send_extra_file_list() tells none under --ignore-errors)
        if self.c.opts.ignore_errors:
            return 0
        return self.sender.io_error | self.sender.flist.io_error

    def send_first(self) -> None:
        chunk = self._next()
        tops = list(chunk[1]) if chunk is not None else []
        err = chunk[2] if chunk is not None else self._io_errors()
        parent = None
        ahead = self._next()
        if len(tops) == 1 and tops[0].name == b"." and ahead is not None \
                and ahead[0] is tops[0]:
            # send_directory() inline: the top dir's contents are in the first list.
            parent = tops[0]
            tops += ahead[1]
            err = ahead[2]
            ahead = self._next()
        self._ahead = ahead
        self._send(tops, parent, True, err)
        if self._ahead is None:
            self._eof()
        elif len(tops) == 1:
            self.send_extra(1)  # flist.c: is this a one-file transfer?

    def _eof(self) -> None:
        io = self.c.io
        assert io is not None
        io.write_ndx(NDX_FLIST_EOF)
        self.eof = True

    def _send(self, entries: list, parent, first: bool, err: int) -> None:
        c = self.c
        io = c.io
        assert io is not None
        enc = self.enc
        base = self.next_start
        enc.start_list(base)
        if not first:
            io.write_ndx(NDX_FLIST_OFFSET - self.dir_ndx.pop(parent))
        if self.tweak is not None:
            self.tweak(entries)
        if self._idev is not None:
            self._link_groups(entries, base)
        parts: list[bytes] = []
        try:  # one write for the list (the same bytes, the same frames)
            # (the index only invents hard-link dev/inos below protocol 30: never here)
            enc.encode_into(parts, entries)
        finally:
            io.write(b"".join(parts))
        if first:
            if enc.needs_io_error_msg(err):
                io.send_msg(Msg.IO_ERROR, encode_int32(err))
            io.write(enc.end(err))
        else:
            # write_end_of_flist(): an io_error new since the last list goes with it.
            io.write(enc.end_marker(err if err != self._io_error else 0))
        self._io_error = err
        for e in entries:
            if e.mode & 0o170000 == 0o040000:
                if e.name != b"." or not first:  # "." is in dir_flist, never listed again
                    self.dir_ndx[e] = self.ndirs
                self.ndirs += 1
        t = (base, entries, parent)
        self.active.append(t)
        self.sent_lists += 1
        self.nums[base] = self.sent_lists  # flist.c: the first list is number 1 too
        self.next_start = base + len(entries) + 1
        self.file_total += len(entries)
        if first:
            self.file_old_total += len(entries)
            self.cur = t
        c.stats.count_listed(entries)

    def _link_groups(self, entries: list, base: int) -> None:
        """flist.c send_file_entry() with -H: the walk left each multiply-linked
        non-dir's (dev, ino) in ``hlink``.  The first one sent, in any list, goes as
        XMIT_HLINK_FIRST (a lone one too: later lists may hold the rest); each later
        one names that index, and carries its own attributes when it is in an
        earlier list."""
        idev = self._idev
        assert idev is not None
        for i, e in enumerate(entries):
            key = e.hlink
            if key is None:
                continue
            first = idev.get(key)
            if first is None:
                idev[key] = e.hlink = base + i
                e.flags |= FLAG_HLINK_FIRST
            else:
                e.hlink = first
                e.flags |= FLAG_HLINK_FOLLOWER

    def send_extra(self, at_least: int) -> bool:
        """Send lists until ``at_least`` entries wait in lists not yet freed."""
        sent = False
        while not self.eof and self.file_total - self.file_old_total < at_least:
            chunk = self._ahead
            self._ahead = self._next()
            if chunk is not None and chunk[0] in self.dir_ndx:
                self._send(list(chunk[1]), chunk[0], False, chunk[2])
                sent = True
            if self._ahead is None:
                self._eof()
        return sent

    def idle(self) -> bool:
        """io.c: with nothing to read, one more list (up to the big lookahead)."""
        ahead = self.file_total - self.file_old_total
        if self.eof or ahead >= MAX_FILECNT_LOOKAHEAD:
            return False
        return self.send_extra(ahead + 1)

    def remove_source(self, ndx: int) -> None:
        """MSG_SUCCESS (--remove-source-files): the file's list is still active (the
        remote generator frees a list only once all its files are done)."""
        fl = self.sender.flist
        saved = fl.cur, fl.cur_base, self._hit  # (a message may come mid-file)
        try:
            e = self.entry(ndx)
            if e is None or ndx < self._hit[0]:  # type: ignore[index]
                raise WireError(f"File-list index {ndx} not in an active list "
                                f"[{self.c.who}]", E.RERR_PROTOCOL)
            self.sender.remove_source(ndx)
        finally:
            fl.cur, fl.cur_base, self._hit = saved

    def free_first(self) -> None:
        """sender.c on NDX_DONE: the oldest list is freed."""
        t = self.active.popleft()
        self.nums.pop(t[0], None)
        n = len(t[1])
        self.file_old_total -= n
        self.file_total -= n
        if t is self.cur:
            self.cur = self.active[0] if self.active else None
        if self.active and self.active[0] is self.cur:
            self.file_old_total = len(self.active[0][1])
        self._hit = None

    def flist_num(self, ndx: int) -> int:
        """The number of the list holding ``ndx`` (progress.c shows ndx minus it)."""
        if self.entry(ndx) is None or self._hit is None:
            return 0
        return self.nums.get(self._hit[0], 0)

    def note_ndx(self, ndx: int) -> None:
        """rsync.c read_ndx_and_attrs(): the list the generator asks about becomes the
        current one; the lists up to it count as soon gone."""
        if self.entry(ndx) is not None:
            self.note_hit()

    def note_hit(self) -> None:
        """note_ndx() for the index entry() last found."""
        t = self._hit
        if t is self.cur:
            return
        self.cur = t
        old = 0
        for a in self.active:
            old += len(a[1])
            if a is t:
                break
        self.file_old_total = old

    def entry(self, ndx: int):
        """flist_for_ndx(): the entry ``ndx`` names (a list's dir is ndx_start - 1),
        or None; the sender's view is pointed at its list."""
        hit = self._hit
        if hit is None or not -1 <= ndx - hit[0] < len(hit[1]):
            hit = None
            for t in self.active:
                if -1 <= ndx - t[0] < len(t[1]):
                    hit = self._hit = t
                    break
            if hit is None:
                return None
        base, entries, d = hit
        if ndx < base:
            return d
        fl = self.sender.flist
        fl.cur, fl.cur_base = entries, base
        return entries[ndx - base]


class ItemNdx:
    """A generator mixin: recv_generator() keeps the index it works on, which an item
    reported to the remote sender is sent with (its list may be dropped by then)."""

    _item_ndx = -1

    def recv_generator(self, ndx, e, hl_retry=False) -> None:
        saved, self._item_ndx = self._item_ndx, ndx
        try:
            super().recv_generator(ndx, e, hl_retry)  # type: ignore[misc]
        finally:
            self._item_ndx = saved

    def _hl_link_late(self, ndx, e) -> None:
        # (a member linked after its group's data came is reported like the others)
        saved, self._item_ndx = self._item_ndx, ndx
        try:
            super()._hl_link_late(ndx, e)  # type: ignore[misc]
        finally:
            self._item_ndx = saved


def inc_options_supported(o, am_sender: bool) -> bool:
    """The options netsync runs incremental recursion with, as client or server (the
    sources counted apart): not -R, --files-from, --list-only on the receiving side,
    --delete-missing-args, --delete-before/after, --delay-updates, -m or batches."""
    if o.relative or o.files_from is not None or (o.list_only and not am_sender) \
            or o.delete_missing_args:
        return False
    if o.delete and o.delete_mode not in (None, "during", "delay"):
        return False
    return not (o.delay_updates or o.prune_empty_dirs or o.write_batch or o.only_write_batch)


class _WireFeed:
    """flist.ChunkFeed's role for an incremental pull: the remote sender's lists as
    chunks for Generator._run_feed(), each list being one directory's contents.

    Lists arrive interleaved with the files (the client reads them wherever they
    come); a list stays in ``active`` until its NDX_DONE went out, then it is dropped,
    so memory follows the sender's lookahead, not the tree."""

    def __init__(self, client: _Client, flist, max_held: int) -> None:
        self.c = client
        self.flist = flist
        # --max-alloc bounds each list in the decoder, and this bounds them together: a
        # sender may list ahead of the generator, but not without limit.
        self.max_held = max_held
        self.held = 0
        self.queue: deque[tuple] = deque()  # (dir, its ndx, ndx_start, entries) to generate
        self.active: deque[tuple[int, list, int]] = deque()  # (ndx_start, entries, flist_num)
        self.eof = False
        self.first: list = []
        self.listed = 0
        self._num = 0
        self._gen_start = -1  # ndx_start of the list being generated
        self._hit: tuple[int, list, int] | None = None
        self.high = 0
        self.all_freed = False  # the sender's NDX_DONE freed the last list (receiver.c)
        # -H: hard-link group (its first member's ndx) -> its last member received so
        # far; the generator's hl_last, which decides the member that gets the data.
        self.hl_last: dict[int, int] | None = {} if client.opts.hard_links else None
        # ... and what lists read while a list is generated (with the replies) add to
        # it, seen when the generator next asks for a list: rsync's generator takes in
        # the lists its receiver forwards between lists (wait_for_receiver()), so a
        # group's member in a list that came meanwhile does not take the data away.
        self.hl_unseen: dict[int, int] = {}

    def add(self, d, base: int, entries: list, io_error: int) -> None:
        """A list received; ``io_error``: the sender's I/O errors up to its end."""
        self.held += len(entries)
        if self.held > self.max_held:
            raise WireError(f"ERROR: out of memory in flist_expand (over {self.max_held} "
                            f"entries in the lists not yet done) [{self.c.who}]",
                            E.RERR_MALLOC)
        last = self.hl_last
        if last is not None:
            unseen = self.hl_unseen
            for i, e in enumerate(entries):
                group = e.hlink
                if group is None or e.flags & FLAG_DUPLICATE:
                    continue
                if group < base and group not in last and group not in unseen:
                    # hlink.c match_gnums(): a member of an earlier list's group that
                    # no earlier list declared (a hostile sender).
                    raise WireError(f"hard-link gnum {group} precedes flist start {base}",
                                    E.RERR_PROTOCOL)
                unseen[group] = base + i
        self._num += 1
        self.high = max(self.high, base + len(entries))  # (echoes may name a dropped list)
        self.active.append((base, entries, self._num))
        # generate_files(): a list's dir goes first, as index ndx_start - 1.
        self.queue.append((d, base - 1, base, entries, io_error))
        self.listed += len(entries)

    def see(self) -> None:
        """The generator takes in the lists received so far (their groups' members)."""
        if self.hl_unseen:
            self.hl_last.update(self.hl_unseen)  # type: ignore[union-attr]
            self.hl_unseen.clear()

    def dropped(self, t: tuple[int, list, int]) -> None:
        self.held -= len(t[1])
        self._hit = None

    def _find(self, ndx: int) -> tuple[int, list, int] | None:
        hit = self._hit
        if hit is not None and 0 <= ndx - hit[0] < len(hit[1]):
            return hit
        for t in self.active:  # requests come in list order: usually the first ones
            if 0 <= ndx - t[0] < len(t[1]):
                self._hit = t
                return t
        return None

    def entry(self, ndx: int):
        t = self._find(ndx)
        return None if t is None else t[1][ndx - t[0]]

    def flist_num(self, ndx: int) -> int:
        t = self._find(ndx)
        return 0 if t is None else t[2]

    def next_chunk(self):
        c = self.c
        io = c.io
        assert io is not None
        if not self.queue and not self.eof:
            # generate_files(): wait_for_receiver() until the next list is in.
            c._gen.finish_requests()
            c._drain_pending()
            c._retire(self._gen_start, finish=True)
            io.flush()
            while not self.queue and not self.eof:
                self._read_one()
        self.see()
        if not self.queue:
            return None
        chunk = self.queue.popleft()
        self._gen_start = chunk[2]
        c._retire(self._gen_start, finish=False)
        if self.hl_last is not None and not self.eof and self.held < MIN_FILECNT_LOOKAHEAD // 2:
            # generator.c generate_files(): with -H, lists are read ahead to 500 files
            # before one is generated, so the group members they hold are known (the
            # last one received gets the data, the others link to it).
            io.flush()
            while not self.eof and self.held < MIN_FILECNT_LOOKAHEAD // 2:
                self._read_one()
            self.see()
        self.flist.cur, self.flist.cur_base = chunk[3], chunk[2]
        return chunk

    def _read_one(self) -> None:
        ndx = self.c.io.read_ndx()
        if ndx == NDX_DONE and not self.c._done_echoes and len(self.active) <= 1:
            # receiver.c recv_files(): an NDX_DONE from the sender frees the oldest
            # list, echoed or not; with the last one gone, a sub-list that follows
            # is refused (a hostile sender: an honest one sends no unechoed NDX_DONE
            # before the lists' end).
            self.all_freed = True
            return
        self.c._read_list_ndx(ndx)


# ---------------------------------------------------------------------------
# helpers

MAX_FF_NAME = 4095  # read_line() into a MAXPATHLEN buffer
MAX_FF_NAMES = 1 << 24  # as many as a file list may hold, and then some
CHUNK_SIZE = 32 * 1024


MIN_FILECNT_LOOKAHEAD = 1000  # rsync.h: how far an incremental sender lists ahead
MAX_FILECNT_LOOKAHEAD = 10000  # ... and at most, when idle
PIPE_FILES = 64  # file requests in flight at most
PIPE_BYTES = 1 << 15  # ... and bytes of them (below any pipe's or socket's buffer)
_TEXT_MSGS = frozenset((Msg.INFO, Msg.ERROR, Msg.ERROR_XFER, Msg.WARNING, Msg.LOG,
                        Msg.DELETED))


def _texts_finish_first(send_msg, finish):
    """A server's send_msg() whose text and deletion messages first receive the files in
    flight (the server's FinishFirst): its lines keep the order of the file list."""
    def send(code: int, payload: bytes) -> None:
        if code in _TEXT_MSGS:
            finish()
        send_msg(code, payload)
    return send


def _append_tokens(data, head, verify: bool, fsum) -> Iterator[bytes]:
    """match.c match_sums() for --append: what the receiver has (the sum head's length)
    is skipped, in the file sum only with --append-verify; the rest goes as data."""
    fd = data.source_fd
    flength = min(head.flength, data.size)
    off = 0
    while verify and off < flength:
        chunk = os.pread(fd, min(CHUNK_SIZE, flength - off), off)
        if not chunk:
            break
        fsum.update(chunk)
        off += len(chunk)
    off = flength
    while True:
        chunk = os.pread(fd, CHUNK_SIZE, off)
        if not chunk:
            return
        off += len(chunk)
        yield chunk


def read_files_from_file(path: str) -> bytes:
    """The raw --files-from list ("-" is stdin); rsync's open error on failure."""
    if path == "-":
        return sys.stdin.buffer.read()
    from netsync import safepath

    try:
        # options.c open_no_attacker_symlinks(): an operator path, no untrusted symlinks.
        fd = safepath.owner_open(path, os.O_RDONLY)
    except OSError as exc:
        raise E.RsyncError(E.RERR_SYNTAX, f"failed to open files-from file {path}: "
                           f"{exc.strerror}") from None
    try:
        chunks = []
        while True:
            got = os.read(fd, 1 << 20)
            if not got:
                break
            chunks.append(got)
        return b"".join(chunks)
    finally:
        os.close(fd)


def split_files_from(data: bytes, eol_nulls: bool) -> list[bytes]:
    """io.c read_line(RL_DUMP_COMMENTS): a local list's names.

    Lines end at NUL with --from0, else at CR or LF; empty lines and lines
    starting with '#' or ';' are skipped; a long line is cut to MAXPATHLEN-1.
    """
    if not eol_nulls:
        data = data.replace(b"\r", b"\n")
    out = []
    for line in data.split(b"\0" if eol_nulls else b"\n"):
        if not line or line[:1] in (b"#", b";"):
            continue
        out.append(line[:MAX_FF_NAME])
    return out


def encode_files_from(data: bytes, eol_nulls: bool) -> bytes:
    """forward_filesfrom_data(): CR/LF become NUL (unless --from0), NUL runs collapse,
    and the list ends with an empty name.  Comments are forwarded as names, as in rsync."""
    if not eol_nulls:
        data = data.replace(b"\r", b"\0").replace(b"\n", b"\0")
    return b"".join(n + b"\0" for n in data.split(b"\0") if n) + b"\0"


def _inplace_receiver_cls(base: type, client: _Client) -> type:
    """A Receiver that, when a file written in place fails verification, leaves it as
    the writes left it (receiver.c: no finish_transfer() without recv_ok): modified now,
    old permissions.  The redo then itemizes the time change as rsync's does."""

    class InplaceReceiver(base):  # type: ignore[misc, valid-type]
        def receive(self, e, data, dest: bytes, dest_rel: bytes, basis, dest_st,
                    new_mode: int) -> bool:
            client._verify_failed = False
            ok = super().receive(e, data, dest, dest_rel, basis, dest_st, new_mode)
            if client._verify_failed and dest_st is not None:
                try:
                    os.utime(dest, follow_symlinks=False)
                    os.chmod(dest, stat.S_IMODE(dest_st.st_mode))
                except OSError:
                    pass
            return ok

    return InplaceReceiver


def _skipped(req: m.SendRequest) -> m.FileData:
    """No data will come for ``req``: the sender could not open the file."""
    return m.FileData(req.ndx, req.iflags, None, iter(()), failed=True)


def _write_literal(write, chunk: bytes) -> None:
    """Plain tokens for literal data: CHUNK_SIZE pieces, each after its length."""
    if len(chunk) <= CHUNK_SIZE:
        write(_I32.pack(len(chunk)))
        write(chunk)
        return
    with memoryview(chunk) as view:
        for i in range(0, len(chunk), CHUNK_SIZE):
            piece = view[i:i + CHUNK_SIZE]
            write(_I32.pack(len(piece)))
            write(piece)


def _clear_empty_dirs(entries, rfilters) -> None:
    """flist.c recv_file_list() with -m: a directory with no non-directory below it
    (and not excluded by the receiver's rules) is cleared as clear_file() does
    (FLAG_DUPLICATE); indexes stay as the sender's."""
    from netsync.filters import receiver_dir_excluder
    from netsync.flist import FLAG_DUPLICATE, FLAG_TOP_DIR, dirs_kept_by_prune

    keep = dirs_kept_by_prune(entries, receiver_dir_excluder(rfilters))
    for e in entries:
        if stat.S_ISDIR(e.mode) and e.name not in keep and not e.flags & FLAG_TOP_DIR:
            e.flags |= FLAG_DUPLICATE


def _pruned_dirs_gen(base: type) -> type:
    """generate_files(): an entry clear_file() emptied is not active, so it is skipped."""
    from netsync.flist import FLAG_DUPLICATE

    class PrunedDirsGenerator(base):  # type: ignore[misc, valid-type]
        def recv_generator(self, ndx: int, e, hl_retry: bool = False) -> None:
            if e.flags & FLAG_DUPLICATE and stat.S_ISDIR(e.mode):
                return None
            return super().recv_generator(ndx, e, hl_retry)

    return PrunedDirsGenerator


def _missing_args_gen(base: type) -> type:
    """generator.c recv_generator() for --delete-missing-args' mode-0 entries."""
    from netsync.generator import DEL_RECURSE

    class MissingArgsGenerator(base):  # type: ignore[misc, valid-type]
        def recv_generator(self, ndx: int, e, hl_retry: bool = False) -> None:
            if e.mode != 0:
                return super().recv_generator(ndx, e, hl_retry)
            if self.filters is not None and self.filters.excluded(e.name, False, "receiver"):
                return None
            path = self.dpath(e.name)
            try:
                st = os.lstat(path)
            except OSError:
                return None
            g = self.g
            self.delete_item(e.name, path, st.st_mode,
                             DEL_RECURSE if g.delete or g.force else 0)
            return None

    return MissingArgsGenerator


def _wire_sender_cls(base: type) -> type:
    """The engine's Sender plus --delete-missing-args (flist.c: a missing argument is
    sent as a mode-0 entry, which tells the generator to delete it)."""

    class WireSender(base):  # type: ignore[misc, valid-type]
        def _add_arg(self, root_idx: int, base_dir: bytes, name: bytes, *, relative: bool,
                     dotdir: bool = False, from_files: bool = False) -> None:
            if self.missing_args == 2:
                from netsync.flist import FileEntry, join

                path = join(base_dir, name)
                try:
                    # In a daemon's module the name is looked up inside it: a link
                    # leading out would tell whether a file exists out there.
                    dfd, leaf, owned = self._at(path)
                    try:
                        os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
                    finally:
                        if owned:
                            os.close(dfd)
                except FileNotFoundError:
                    self._entries.append(FileEntry(name, 0, root=root_idx))
                    self._hl_keys.append(None)
                    return
                except OSError:
                    pass
            super()._add_arg(root_idx, base_dir, name, relative=relative, dotdir=dotdir,
                             from_files=from_files)

    return WireSender



def _check_parents(entries, missing_args: bool, show=os.fsdecode) -> None:
    """generator.c recv_generator(): each entry's parent must be a directory of the list,
    or a hostile sender could send a symlink "d" and then "d/file" (CVE-2024-12087)."""
    dirs = {e.name for e in entries if stat.S_ISDIR(e.mode)}
    for e in entries:
        parent = e.name.rpartition(b"/")[0]
        if not parent or parent == b"." or parent in dirs:
            continue
        if missing_args and e.mode == 0:
            continue  # --delete-missing-args entries may lack their parent
        raise WireError(f"ABORTING due to invalid path from sender: {show(e.name)}",
                        E.RERR_PROTOCOL)


def _unrequested_name(entries, plan, opts) -> bytes | None:
    """flist.c recv_file_entry() against exclude.c add_implied_include(): the first name
    of the sender's list that none of our source arguments asked for (None: all fine).

    Each argument allows its own name (the part after "/./" with -R, else the last
    component; wildcards kept), with -R its parent dirs, and with -r everything
    below it (-d: one level).  --trust-sender, --old-args and --files-from lift the
    check (rsync trusts a remote list, and checks a local one line by line).
    """
    from netsync.wildmatch import wildmatch

    if opts.trust_sender or opts.old_args or opts.files_from or getattr(opts, "read_batch", None):
        return None
    relative = bool(opts.relative)
    recurse = bool(opts.recursive or opts.recurse)
    one_level = not recurse and (bool(opts.dirs) or opts.xfer_dirs > 0)
    rules: list[tuple[bytes, bool, bool]] = []  # (pattern, wild, dirs only); no "/" prefix
    below: list[tuple[bytes, bool]] = []  # (prefix, wild): -r anything under it, -d one level
    for arg in plan.remote_paths or ["."]:
        a = os.fsencode(arg) or b"."
        if plan.daemon:
            a = a.partition(b"/")[2]
        if relative:
            cut = a.find(b"/./")
            a = a[cut + 3:] if cut >= 0 else a
        else:
            a = a.rpartition(b"/")[2]
        wild = any(c in a for c in b"*?[")
        comps = [c for c in a.split(b"/") if c not in (b"", b".")]
        pat = b"/".join(comps)
        if pat:
            rules.append((pat, wild, False))
            if relative:
                rules.extend((b"/".join(comps[:i]), wild, True) for i in range(1, len(comps)))
        if recurse or one_level:
            below.append((pat, wild))
    if not rules and not below:
        # flist.c checks only against the rules add_implied_include() made: an
        # argument naming the transfer root itself, without -r or -d, makes none.
        return None

    def matches(pat: bytes, wild: bool, name: bytes) -> bool:
        return pat == name or (wild and wildmatch(pat, name))

    def allowed(name: bytes, is_dir: bool) -> bool:
        if any(matches(p, w, name) for p, w, d in rules if is_dir or not d):
            return True
        for pat, wild in below:
            parent, _, base = name.rpartition(b"/")
            if not pat:  # the transfer root's content
                if recurse or not parent:
                    return True
            elif recurse:
                if name.startswith(pat + b"/") or (wild and wildmatch(pat + b"/**", name)):
                    return True
            elif matches(pat, wild, parent) and base:
                return True
        return False

    for e in entries:
        name = e.name[1:] if e.name.startswith(b"/") else e.name
        if name in (b".", b""):
            continue  # the synthetic transfer root
        if not allowed(name, stat.S_ISDIR(e.mode)):
            return e.name
    return None


def _downgrade_implied_parents(entries, plan, relative: bool, recurse: bool) -> None:
    """flist.c recv_file_entry() with exclude.c is_implied_parent_dir(): a directory we
    only asked for as the parent of a requested path (the synthetic "." of a single-file
    pull, or an implied dir of a -R path) is never a content dir, whatever the sender's
    flags say, so --delete cannot sweep its other contents."""
    from netsync.flist import FLAG_CONTENT_DIR, FLAG_IMPLIED_DIR, FLAG_TOP_DIR

    leaves: set[bytes] = set()
    parents: set[bytes] = set()
    root_content = False
    for arg in plan.remote_paths:
        a = os.fsencode(arg)
        if plan.daemon:
            a = a.partition(b"/")[2]  # the module name is not part of the paths
        if relative:
            cut = a.find(b"/./")
            a = a[cut + 3:] if cut >= 0 else a
        else:
            a = a.rpartition(b"/")[2]
        if any(c in a for c in b"*?["):
            return  # a wildcard could name anything: leave the sender's flags alone
        comps = [c for c in a.split(b"/") if c not in (b"", b".")]
        if not comps:
            root_content = root_content or recurse  # add_implied_include()'s "/**"
            continue
        leaves.add(b"/".join(comps))
        if relative:
            parents.update(b"/".join(comps[:i]) for i in range(1, len(comps)))
    for e in entries:
        if not e.flags & FLAG_CONTENT_DIR or not stat.S_ISDIR(e.mode):
            continue
        name = e.name.strip(b"/")
        if name in (b".", b""):
            parent_only = not root_content
        else:
            parent_only = name in parents and name not in leaves
        if parent_only:
            e.flags = (e.flags & ~(FLAG_CONTENT_DIR | FLAG_TOP_DIR)) | FLAG_IMPLIED_DIR


def _parse_sums(head, raw: bytes, block_sums_cls):
    import numpy as np

    s2 = head.s2length
    rec = 4 + s2
    arr = np.frombuffer(raw, dtype=np.uint8).reshape(head.count, rec)
    sum1 = arr[:, :4].copy().view("<u4").reshape(head.count).astype(np.uint32)
    strong = arr[:, 4:].tobytes()
    return block_sums_cls(head, sum1, strong)


def _resort_pre29(flist) -> None:
    """Below protocol 29 both sides sort by plain name: reorder and remap hard links."""
    old = flist.entries
    order = sorted(range(len(old)), key=lambda i: old[i].name)
    pos = {o: n for n, o in enumerate(order)}
    new = [old[i] for i in order]
    for e in new:
        if e.hlink is not None:
            e.hlink = pos[e.hlink]
    flist.entries = new


def _user_name(uid: int) -> bytes | None:
    import pwd

    from netsync.daemon import namecvt  # a daemon module's "name converter" answers

    if namecvt.active is not None:
        return namecvt.active.id_to_name("uid", uid)
    try:
        return pwd.getpwuid(uid).pw_name.encode()
    except KeyError:
        return None


def _group_name(gid: int) -> bytes | None:
    import grp

    from netsync.daemon import namecvt

    if namecvt.active is not None:
        return namecvt.active.id_to_name("gid", gid)
    try:
        return grp.getgrgid(gid).gr_name.encode()
    except KeyError:
        return None


def acl_inc_dirs(opts, inc_wanted: bool) -> bool:
    """-A: would a receiving rsync make a new subdir owner-only first (generator.c,
    is_dir < 0: incremental recursion keeping dir times) and set its ACL and mode on
    that? Its access ACL is then written with group and other shut (change_sacl_perms()
    with a sticky bit going on), which netsync reproduces even where it cannot run the
    transfer incrementally itself."""
    return bool(opts.acls and inc_wanted and (opts.recurse or opts.recursive)
                and not opts.qsort
                and opts.times and not opts.omit_dir_times
                and not (opts.delete_before or opts.delete_after or opts.delay_updates
                         or opts.prune_empty_dirs))


def _acls_need_30(opts, protocol: int) -> None:
    """compat.c setup_protocol(): -A has no wire form below protocol 30."""
    if opts.acls and protocol < 30:
        raise TransportError(E.RERR_PROTOCOL, "--acls requires protocol 30 or higher "
                             f"(negotiated {protocol}).", bare=True)


def _map_ids(entries, uid_names: dict[int, bytes], gid_names: dict[int, bytes]) -> None:
    """uidlist.c recv_id_list(): a name known here maps to the local id."""
    import grp
    import pwd

    from netsync.daemon import namecvt

    umap: dict[int, int] = {}
    gmap: dict[int, int] = {}
    conv = namecvt.active  # a daemon module's "name converter" answers instead
    for rid, name in uid_names.items():
        if rid == 0:
            continue  # uidlist.c recv_add_id(): id 0 is never mapped by name
        try:
            num = conv.name_to_id("usr", name) if conv else pwd.getpwnam(os.fsdecode(name)).pw_uid
        except KeyError:
            continue
        if num is not None:
            umap[rid] = num
    for rid, name in gid_names.items():
        if rid == 0:
            continue
        try:
            num = conv.name_to_id("grp", name) if conv else grp.getgrnam(os.fsdecode(name)).gr_gid
        except KeyError:
            continue
        if num is not None:
            gmap[rid] = num
    if not umap and not gmap:
        return
    for e in entries:
        e.uid = umap.get(e.uid, e.uid)
        e.gid = gmap.get(e.gid, e.gid)
    if entries and any(e.acl is not None for e in entries):  # acls.c match_acl_ids()
        from netsync.acls import map_ids

        memo: dict = {}
        for e in entries:
            e.acl = map_ids(e.acl, umap, gmap, memo)


class _NdxMap:
    """A file-index codec wrapped with a permutation (--iconv, _map_wire_order()):
    indexes inside the list are mapped, anything else (NDX_DONE, a keep-alive's count,
    an index out of range for the checks to refuse) passes as it is."""

    def __init__(self, codec, perm: list[int]) -> None:
        self._codec = codec
        self._perm = perm

    def __getattr__(self, name: str):
        return getattr(self._codec, name)

    def map(self, ndx: int) -> int:
        return self._perm[ndx] if 0 <= ndx < len(self._perm) else ndx


class _MappedNdxIn(_NdxMap):
    """An NdxDecoder whose file indexes come out in this side's order."""

    def decode(self, buf, pos: int = 0) -> tuple[int, int]:
        v, end = self._codec.decode(buf, pos)
        return self.map(v), end


class _MappedNdxOut(_NdxMap):
    """An NdxEncoder that writes this side's file indexes in the sender's order; the
    delta coding runs on the indexes as sent."""

    def encode(self, ndx: int) -> bytes:
        return self._codec.encode(self.map(ndx))


class _LocalServer(_Client):
    """The client side of run_local_forked(): the "remote shell" is a netsync server
    started directly, in this directory.  What it prints is in the source's charset,
    as rsync's local client (the sender) prints: the sender's texts, and the
    received names (converted back through UTF-8)."""

    src_charset = ""
    _local_sender_words = True

    def _summary(self, sent: int, received: int, total_size: int) -> None:
        super()._summary(received, sent, total_size)  # the sender's view, as rsync's

    def _iconv_negotiated(self) -> None:
        from netsync import charset as C

        super()._iconv_negotiated()
        self._src_ic = C.Iconv(C.side_charset(self.src_charset, False))
        self.io.text_in = self._src_ic.text_from_wire  # type: ignore[union-attr]

    def _reporter(self):
        rep = super()._reporter()
        ours, src = self.iconv, self._src_ic
        rep.name_out = lambda name: src.name_from_wire_raw(ours.text_to_wire(name))
        return rep

    def _start_shell(self, plan):
        from netsync.transport.rsh import encode_secluded, server_args, spawn

        sa = server_args(self.opts, plan.am_sender, plan.remote_paths)
        cmd = [sys.executable, "-m", "netsync", *sa.argv]
        self._show_argv("opening connection using:", cmd)
        self.conn = spawn(cmd, who=self.who)
        if sa.secluded:
            self.conn.write(encode_secluded(self._secluded_to_utf8(sa.secluded)))
        return self._handshake()
