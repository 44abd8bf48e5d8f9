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

import os
import stat
import sys
import time
from collections.abc import Iterator

from netsync import errors as E
from netsync import log
from netsync import messages as m
from netsync.io import ProtocolIO, RemoteExit
from netsync.transport import Connection, TransportError
from netsync.wire import NDX_DEL_STATS, NDX_DONE, Msg, WireError, encode_int32

PROG = "netsync"
ITEM_TRANSFER = log.ITEM_TRANSFER
ITEM_BASIS_TYPE_FOLLOWS = log.ITEM_BASIS_TYPE_FOLLOWS
ITEM_XNAME_FOLLOWS = log.ITEM_XNAME_FOLLOWS
ITEM_IS_NEW = log.ITEM_IS_NEW
ITEM_MISSING_DATA = 1 << 16
MAX_BLOCK_LEN = 1 << 29
MAX_SUM_COUNT = 1 << 28

__all__ = ["run_remote"]


_err = E.print_error
_exit_line = E.print_exit_line


def run_remote(opts, args: list[bytes]) -> int:
    """Run a transfer (or module listing) with a remote rsync; returns the exit code."""
    client = _Client(opts, args)
    try:
        return client.run()
    except RemoteExit as rx:
        client.close(force=True)
        code = rx.code or E.RERR_PARTIAL
        _exit_line(code)
        return code
    except TransportError as te:
        code = client.close_code(te.code)
        if te.message:
            _err(te.message if te.bare else f"{PROG}: {te.message}")
        _exit_line(code)
        return code
    except WireError as we:
        code = client.close_code(we.code)
        _err(f"{PROG}: {we.message}" if we.message else f"{PROG}: protocol error")
        _exit_line(code)
        return code
    except (m.FatalError, E.RsyncError) as fe:
        code = client.close_code(fe.code)
        if fe.message:
            _err(f"{PROG}: {fe.message}")
        _exit_line(code)
        return code
    except BrokenPipeError:
        code = client.close_code(E.RERR_STREAMIO)
        _exit_line(code)
        return code
    finally:
        client.close(force=True)


class _Client:
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

    # ------------------------------------------------------------------ setup
    def close_code(self, code: int) -> int:
        """The exit code after a failure: the remote shell's status wins when higher."""
        status = None
        if self.conn is not None and not self.conn.closed:
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
        from netsync.transport.remote import Mode, plan_transfer

        opts = self.opts
        # Incremental recursion is not offered yet: no 'i' in the capabilities.
        opts.inc_recursive = False
        plan = plan_transfer([os.fsdecode(a) for a in self.args], port=opts.port,
                             shell_cmd=opts.rsh, password_file=opts.password_file,
                             contimeout=opts.contimeout, files_from_host=opts.files_from_host)
        self.plan = plan
        self.am_sender = plan.am_sender
        self.who = "sender" if plan.am_sender else "receiver"
        self._refuse_unsupported(plan)
        if plan.mode == Mode.SHELL:
            neg, hs = self._start_shell(plan)
        else:
            got = self._start_daemon(plan)
            if got is None:
                return self._finish_listing()
            neg, hs = got
        self.neg = neg
        io = ProtocolIO(self.conn, neg.protocol, who=self.who,  # type: ignore[arg-type]
                        timeout=opts.timeout or None)
        self.io = io
        io.mplex_out = neg.mplex_out
        if neg.mplex_in:
            io.start_multiplex_in(hs.leftover)
        else:
            io.add_leftover(hs.leftover)
        for line in hs.infos:
            print(line)
        self.rep = self._reporter()
        if self.am_sender:
            return self._push()
        return self._pull()

    def _refuse_unsupported(self, plan) -> None:
        opts = self.opts
        what = None
        if opts.files_from:
            what = "--files-from"
        elif opts.list_only and plan.am_sender:
            what = "--list-only of a local source with a remote destination"
        elif opts.inplace or opts.append:
            what = "--inplace/--append"
        elif opts.delete_missing_args:
            what = "--delete-missing-args"
        if what is not None and not (plan.daemon and plan.module == ""):
            raise E.RsyncError(E.RERR_UNSUPPORTED,
                               f"{what} with a remote rsync is not implemented yet in this "
                               f"netsync")

    def _handshake(self, daemon_protocol: int | None = None, remote_protocol: int | None = None):
        from netsync.transport.handshake import ClientHandshake, run_client_handshake

        hs = ClientHandshake.from_options(self.opts, self.am_sender,
                                          daemon_protocol=daemon_protocol,
                                          remote_protocol=remote_protocol)
        neg = run_client_handshake(self.conn, hs)  # type: ignore[arg-type]
        return neg, hs

    def _start_shell(self, plan):
        from netsync.transport.rsh import build_rsh_command, encode_secluded, server_args, spawn

        sa = server_args(self.opts, plan.am_sender, plan.remote_paths)
        cmd = build_rsh_command(self.opts, plan.host, plan.user, sa.argv)
        self.conn = spawn(cmd, who=self.who)
        if sa.secluded:
            self.conn.write(encode_secluded(sa.secluded))
        return self._handshake()

    def _start_daemon(self, plan):
        from netsync.transport.daemon import (
            DaemonClient,
            connect,
            daemon_server_args,
            read_password,
        )
        from netsync.transport.remote import Mode
        from netsync.transport.rsh import build_rsh_command, spawn

        opts = self.opts
        if plan.mode == Mode.DAEMON_SHELL:
            cmd = build_rsh_command(opts, plan.host, plan.user, [], daemon=True)
            self.conn = spawn(cmd, who=self.who)
        else:
            self.conn = connect(plan.host, plan.port, address=opts.address,
                                af_hint=opts.af_hint, contimeout=opts.contimeout,
                                sockopts=opts.sockopts, who=self.who)
        module = plan.module
        listing = module == ""

        def show(line: str) -> None:
            if listing or opts.motd:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

        dc = DaemonClient(self.conn, opts.protocol, on_line=show)
        proto = dc.greet()
        if listing:
            dc.list_modules()
            return None
        reply = dc.request(module, plan.user,
                           password=lambda: read_password(opts.password_file, who=self.who))
        if not reply.ok:
            return None
        dc.send_args(daemon_server_args(opts, plan.am_sender, plan.remote_paths))
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
            progress=opts.progress, preserve_mtimes=opts.times,
        )
        rep.ctx = log.LogContext(am_sender=self.am_sender, local_server=False,
                                 preserve_mtimes=bool(opts.times))
        return rep

    # ------------------------------------------------------------- shared bits
    def _send_filter_list(self) -> None:
        opts = self.opts
        io = self.io
        assert io is not None
        proto = self.neg.protocol
        wants = opts.prune_empty_dirs or (opts.delete and (not opts.delete_excluded
                                                           or proto >= 29))
        if self.am_sender and not wants:
            return
        if opts.filter_args or opts.cvs_exclude:
            from netsync import filters as F

            fl = F.build_filter_list(opts.filter_args, opts.cvs_exclude, opts.delete_excluded,
                                     opts.from0)
            for rule in fl.to_wire_rules(self.am_sender, proto):
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
        while True:
            ndx = io.read_ndx()
            if ndx == NDX_DONE:
                return ndx, 0, 0, None
            if ndx == NDX_DEL_STATS:
                self._read_del_stats()
                continue
            if ndx < 0 or ndx >= nfiles + (1 if proto < 30 else 0):
                raise WireError(f"Invalid file index: {ndx} ({NDX_DONE} - {nfiles - 1}) "
                                f"[{self.who}]", E.RERR_PROTOCOL)
            iflags = io.read_shortint() if proto >= 29 else ITEM_TRANSFER | ITEM_MISSING_DATA
            if proto < 30 and ndx == nfiles and iflags == ITEM_IS_NEW:
                continue  # protocol-29 keep-alive
            if ndx >= nfiles:
                raise WireError(f"Invalid file index: {ndx} [{self.who}]", E.RERR_PROTOCOL)
            ftype = io.read_byte() if iflags & ITEM_BASIS_TYPE_FOLLOWS else 0x80
            xname = None
            if iflags & ITEM_XNAME_FOLLOWS:
                xname = io.read_vstring(4096)
            return ndx, iflags, ftype, xname

    def _write_ndx_and_attrs(self, ndx: int, iflags: int, ftype: int,
                             xname: bytes | None) -> None:
        io = self.io
        assert io is not None
        io.write_ndx(ndx)
        if self.neg.protocol < 29:
            return
        io.write_shortint(iflags)
        if iflags & ITEM_BASIS_TYPE_FOLLOWS:
            io.write_byte(ftype)
        if iflags & ITEM_XNAME_FOLLOWS:
            io.write_vstring(xname or b"")

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
        count = io.read_int()
        blength = io.read_int()
        s2length = io.read_int() if self.neg.protocol >= 27 else 2
        remainder = io.read_int()
        if count < 0 or count > MAX_SUM_COUNT:
            raise WireError(f"Invalid checksum count {count} [{self.who}]", E.RERR_PROTOCOL)
        if blength < 0 or blength > MAX_BLOCK_LEN:
            raise WireError(f"Invalid block length {blength} [{self.who}]", E.RERR_PROTOCOL)
        if s2length < 0 or s2length > 64:
            raise WireError(f"Invalid checksum length {s2length} [{self.who}]",
                            E.RERR_PROTOCOL)
        if remainder < 0 or remainder > blength:
            raise WireError(f"Invalid remainder length {remainder} [{self.who}]",
                            E.RERR_PROTOCOL)
        return SumHead(count, blength, s2length, remainder)

    def _write_sum_head(self, head) -> None:
        io = self.io
        assert io is not None
        io.write_int(head.count)
        io.write_int(head.blength)
        if self.neg.protocol >= 27:
            io.write_int(head.s2length)
        io.write_int(head.remainder)

    def _summary(self, sent: int, received: int, total_size: int) -> None:
        opts = self.opts
        rep = self.rep
        lines: list[str] = []
        if rep.level("stats") >= 2 or opts.stats:
            self.stats.total_written = sent
            self.stats.total_read = received
            lines += log.stats_lines(self.stats, opts.human_readable, self.neg.protocol)
        if rep.level("stats") >= 1 or opts.stats:
            lines += log.summary_lines(sent, received, int(time.time() - self.start),
                                       total_size, opts.human_readable, opts.dry_run)
        if not opts.quiet:
            for line in lines:
                rep.out.write(line + "\n")
        rep.out.flush()

    def _final_code(self, io_error: int) -> int:
        io = self.io
        assert io is not None
        rep = self.rep
        status = self.close() or 0
        if io.got_xfer_error:
            rep.got_xfer_error = True
        code = status or rep.exit_code(io_error | io.io_error)
        rep.close()
        _exit_line(code)
        return code

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
        self._send_filter_list()
        filters = None
        if opts.filter_args or opts.cvs_exclude:
            from netsync import filters as F

            filters = F.build_filter_list(opts.filter_args, opts.cvs_exclude,
                                          opts.delete_excluded, opts.from0)
        sources = [os.fsencode(p) for p in self.plan.local_paths]
        sender, flist, io_error = self._send_flist(sources, filters)
        entries = flist.entries
        io.on_deleted = lambda name, is_dir: rep.deleted(
            name, stat.S_IFDIR if is_dir else stat.S_IFREG)
        if opts.remove_source_files:
            io.on_success = sender.remove_source
        self._send_files(sender, entries)
        self._goodbye()
        io.flush()
        sent = self.conn.bytes_written  # type: ignore[union-attr]
        received = self.conn.bytes_read  # type: ignore[union-attr]
        self._summary(sent, received, stats.total_size)
        return self._final_code(io_error | sender.io_error)

    def _send_flist(self, sources: list[bytes], filters):
        """flist.c send_file_list(): walk ``sources``, send the list; (sender, flist, io_error)."""
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
            relative=bool(opts.relative), implied_dirs=opts.implied_dirs, links=opts.links,
            copy_links=opts.copy_links, copy_unsafe_links=opts.copy_unsafe_links,
            copy_dirlinks=opts.copy_dirlinks, one_file_system=opts.one_file_system,
            hard_links=bool(opts.hard_links), devices=opts.devices, specials=opts.specials,
            checksum=opts.checksum,
        )
        sender = Sender(w, rep, filters, self._file_sum_fn() if opts.checksum else None)
        if opts.ignore_missing_args:
            sender.missing_args = 1
        show_flist = (not self.am_server and rep.level("flist") >= 1
                      and (w.dirs or w.recursive) and not opts.quiet)
        if show_flist:
            rep.out.write("building file list ... ")
            rep.out.flush()
        t0 = time.time()
        flist = sender.build_file_list(sources)
        stats.flist_buildtime = time.time() - t0
        rep.roots = flist.roots
        if show_flist:
            if rep.level("flist") >= 2:
                n = len(flist.entries)
                rep.out.write(f"{n} file{' ' if n == 1 else 's '}to consider\n")
            else:
                rep.out.write("done\n")
            rep.out.flush()
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
        t1 = time.time()
        before = self.conn.bytes_written  # type: ignore[union-attr]
        for ndx, e in enumerate(entries):
            io.write(enc.encode_entry(e, ndx))
        io_error = flist.io_error | sender.io_error
        if enc.needs_io_error_msg(io_error):
            io.send_msg(Msg.IO_ERROR, encode_int32(io_error))
        io.write(enc.end(io_error))
        io.flush()
        stats.flist_xfertime = time.time() - t1
        stats.flist_size = self.conn.bytes_written - before  # type: ignore[union-attr]
        return sender, flist, io_error

    def _send_files(self, sender, entries) -> None:
        """sender.c send_files()."""
        from netsync import token
        from netsync.checksum import FileSum
        from netsync.match import BlockSums

        opts = self.opts
        io = self.io
        rep = self.rep
        neg = self.neg
        assert io is not None
        proto = neg.protocol
        stats = self.stats
        phase = 0
        max_phase = 2 if proto >= 29 else 1
        encoder = token.make_encoder(neg.compress or "none", opts.compress_level, proto)
        nfiles = len(entries)
        while True:
            io.flush()
            ndx, iflags, ftype, xname = self._read_ndx_and_attrs(nfiles)
            if ndx == NDX_DONE:
                phase += 1
                if phase > max_phase:
                    break
                io.write_ndx(NDX_DONE)
                continue
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
            if opts.dry_run:
                # sender.c, !do_xfers: the generator sent no sums; log and echo the item.
                stats.xferred_files += 1
                stats.total_transferred_size += e.size
                if iflags & ITEM_IS_NEW:
                    stats.created_files += 1
                rep.log_item(e, iflags)
                self._write_ndx_and_attrs(ndx, iflags, ftype, xname)
                continue
            head = self._read_sum_head()
            sums = None
            if head.count:
                raw = io.read(head.count * (4 + head.s2length))
                sums = _parse_sums(head, raw, BlockSums)
            stats.xferred_files += 1
            stats.total_transferred_size += e.size
            if iflags & ITEM_IS_NEW:
                stats.created_files += 1
            req = m.SendRequest(ndx, iflags, sums, neg.checksum, neg.checksum_seed, proto)
            data = sender.send_file(req)
            if data.failed:
                if proto >= 30:
                    io.send_msg(Msg.NO_SEND, encode_int32(ndx))
                continue
            self._write_ndx_and_attrs(ndx, iflags, ftype, xname)
            self._write_sum_head(head)
            rep.log_item_transfer_start(e, iflags)
            fsum = FileSum(neg.checksum, neg.checksum_seed, proto)
            if head.count:
                last = head.remainder or head.blength
                encoder.begin_file(block_length=head.blength, last_block_length=last,
                                   file_size=data.size)
            else:
                encoder.begin_file(file_size=data.size)
            offset = 0
            fd = data.source_fd
            literal = matched = 0
            for tok in data.tokens:
                if isinstance(tok, int):
                    blen = head.block_len(tok)
                    block = os.pread(fd, blen, offset) if fd is not None else b""
                    fsum.update(block)
                    io.write(encoder.block(tok, block))
                    offset += blen
                    matched += blen
                else:
                    fsum.update(tok)
                    io.write(encoder.literal(tok))
                    offset += len(tok)
                    literal += len(tok)
            io.write(encoder.end_file())
            io.write(fsum.digest())
            stats.literal_data += literal
            stats.matched_data += matched
            rep.log_item_transfer_end(e, iflags, offset)
        if sender.io_error and proto >= 30:
            io.send_msg(Msg.IO_ERROR, encode_int32(sender.io_error))
        io.write_ndx(NDX_DONE)
        io.flush()


    # -------------------------------------------------------------------- pull
    def _pull(self) -> int:
        self.stats = m.Stats()
        self._send_filter_list()
        assert self.io is not None
        self.io.flush()
        flist = self._recv_flist()
        if not self.plan.local_paths:
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
        if show_flist:
            rep.out.write("receiving file list ... ")
            rep.out.flush()
        dec = FlistDecoder(proto, relative_paths=bool(opts.relative),
                           recurse=bool(opts.recursive or opts.recurse),
                           **self._flist_codec_kwargs())
        before = self.conn.bytes_read  # type: ignore[union-attr]
        raw_entries = []
        while True:
            item = dec.next_entry()
            if item is None:
                dec.feed(io.read_some())
                continue
            from netsync.flist_codec import EndOfList

            if isinstance(item, EndOfList):
                io_error = item.io_error
                break
            raw_entries.append(item)
        reader = dec.reader
        io.unread(bytes(reader.buf[reader.pos:]))
        reader.buf.clear()
        reader.pos = 0
        stats.flist_size = self.conn.bytes_read - before  # type: ignore[union-attr]
        if show_flist:
            if rep.level("flist") >= 2:
                n = len(raw_entries)
                rep.out.write(f"{n} file{' ' if n == 1 else 's '}to consider\n")
            else:
                rep.out.write("done\n")
            rep.out.flush()
        if not opts.numeric_ids:
            _map_ids(raw_entries, dec.uid_names, dec.gid_names)
        entries = sort_and_clean(raw_entries, protocol=proto, am_sender=False,
                                 strip_root=bool(opts.relative))
        flist = FileList(entries=entries, roots=[b"."], io_error=io_error)
        stats.count_listed(entries)
        return flist

    def _list_only(self, flist) -> int:
        """generator.c list_file_entry() for every listed item (no destination)."""
        from netsync.flist import FLAG_DUPLICATE, FLAG_IMPLIED_DIR

        opts = self.opts
        rep = self.rep
        for e in flist.entries:
            if e.flags & FLAG_DUPLICATE:
                continue
            if stat.S_ISDIR(e.mode) and not opts.implied_dirs and e.flags & FLAG_IMPLIED_DIR:
                continue
            link = e.link if stat.S_ISLNK(e.mode) and opts.links else None
            rep.out.write(log.list_line(e.mode, e.size, e.mtime, e.name, link,
                                        opts.human_readable,
                                        eight_bit=opts.eight_bit_output) + "\n")
        rep.out.flush()
        self._pull_phases()
        self._summary(self.remote_read, self.remote_written, self.stats.total_size)
        return self._final_code(flist.io_error)

    def _receive(self, flist, dest: bytes) -> int:
        from netsync.cli import _get_local_name, _parse_ids, _under
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
        if not flist.entries:
            self._pull_phases()
            self._summary(io.conn.bytes_written, io.conn.bytes_read, stats.total_size)
            return self._final_code(flist.io_error)
        solo, dry_missing = _get_local_name(opts, rep, flist, dest)
        dest_root = dest.rstrip(b"/") or b"/"
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
            uid_map=_parse_ids(opts.usermap, opts.numeric_ids, "usermap"),
            gid_map=_parse_ids(opts.groupmap, opts.numeric_ids, "groupmap"),
            chown_uid=None, chown_gid=None, umask=umask,
        )
        enc = os.fsencode
        ropts = ReceiveOptions(
            inplace=False, append=0, partial=opts.partial,
            partial_dir=enc(opts.partial_dir) if opts.partial_dir and not opts.delay_updates
            else None,
            temp_dir=enc(opts.temp_dir) if opts.temp_dir else None,
            delay_updates=opts.delay_updates, sparse=opts.sparse, backup=opts.backup,
            backup_dir=_under(dest_root, opts.backup_dir) if opts.backup_dir else None,
            suffix=enc(opts.suffix or ""), dry_run=opts.dry_run,
        )
        alt = opts.alt_dest
        alt_dirs = [_under(dest_root, d) for d in alt[1]] if alt else []
        recursive = bool(opts.recursive or opts.recurse)
        g = GenOptions(
            recursive=recursive, dirs=bool(opts.dirs), links=opts.links,
            safe_links=opts.safe_links, munge_links=opts.munge_links,
            keep_dirlinks=opts.keep_dirlinks, hard_links=bool(opts.hard_links),
            devices=opts.devices, specials=opts.specials, checksum=bool(opts.checksum),
            size_only=opts.size_only, ignore_times=opts.ignore_times, update=opts.update,
            existing=opts.existing, ignore_existing=opts.ignore_existing,
            max_size=opts.max_size, min_size=opts.min_size,
            whole_file=opts.whole_file is True, append=0, delete=opts.delete,
            delete_mode=(opts.delete_mode or ("during" if proto >= 30 else "before"))
            if opts.delete else None,
            force=opts.force, max_delete=opts.max_delete, ignore_errors=opts.ignore_errors,
            remove_source_files=bool(opts.remove_source_files) and proto >= 30,
            backup=opts.backup, backup_dir=ropts.backup_dir, suffix=ropts.suffix,
            alt_dest=alt_dirs, alt_dest_type=alt[0].split("-")[0] if alt else None,
            implied_dirs=opts.implied_dirs, relative=bool(opts.relative),
            dry_run=opts.dry_run, am_root=am_root, omit_dir_times=bool(opts.omit_dir_times),
            mkpath=opts.mkpath, inc_recurse=False,
        )
        ropts.bwlimit = opts.bwlimit_bytes or 0
        receiver = Receiver(ropts, a, rep)

        def success(ndx: int) -> None:
            io.send_msg(Msg.SUCCESS, encode_int32(ndx))

        gen = self._generator_cls(Generator)(
            g, a, flist, dest_root, receiver, self._request, rep, rfilters,
            self._file_sum_fn() if opts.checksum else None, on_success=success, solo_file=solo)
        gen.sum_params = (neg.checksum, neg.checksum_seed, proto)
        gen.sum_kwargs = {"proper_seed_order": neg.proper_seed_order or proto < 30,
                          "block_size": opts.block_size or 0}
        gen.stats = stats
        if dry_missing:
            gen.dry_missing = b"."
        self.flist = flist
        from netsync import token

        self.decoder = token.make_decoder(neg.compress or "none", proto)
        self.redo: list[int] = []
        self.redoing = False
        gen.after_files = lambda: self._redo_phase(gen)
        rep.attach_stats(stats)
        try:
            gen.run()
        except BaseException:
            receiver.abort()
            raise
        finally:
            if rep.progress is not None:
                rep.progress.newline_if_needed()
        self._pull_phases(first_done=True)
        self._summary(self.remote_read, self.remote_written, stats.total_size)
        return self._final_code(flist.io_error | gen.io_error)

    def _receiver_filters(self):
        """The generator's filter list (for --delete): the client's own rules."""
        opts = self.opts
        if not (opts.filter_args or opts.cvs_exclude):
            return None
        from netsync import filters as F

        return F.build_filter_list(opts.filter_args, opts.cvs_exclude, opts.delete_excluded,
                                   opts.from0)

    def _generator_cls(self, base: type) -> type:
        """The Generator class to run; a server reports items to the remote sender."""
        return base

    def _redo_phase(self, gen) -> None:
        """End phase 0; re-request files that failed verification with full-length sums."""
        from netsync.checksum import SUM_LENGTH

        io = self.io
        assert io is not None
        self._drain_pending()
        io.write_ndx(NDX_DONE)
        io.flush()
        self._expect_done()
        if not self.redo:
            return
        self.redoing = True
        saved = gen.g.ignore_times
        gen.g.ignore_times = True  # generate_files(): the redo phase skips the quick check
        gen.sum_kwargs = {**gen.sum_kwargs, "csum_length": SUM_LENGTH}
        try:
            for ndx in self.redo:
                gen.recv_generator(ndx, self.flist.entries[ndx])
        finally:
            gen.g.ignore_times = saved

    def _request(self, req: m.SendRequest) -> m.FileData:
        """Ask the remote sender for one file; its tokens are read as the receiver wants them."""
        io = self.io
        assert io is not None
        self._drain_pending()
        iflags = req.iflags & ~(ITEM_BASIS_TYPE_FOLLOWS | ITEM_XNAME_FOLLOWS)
        self._write_ndx_and_attrs(req.ndx, iflags, 0, None)
        sums = req.sums
        if sums is None:
            io.write(b"\0" * (16 if self.neg.protocol >= 27 else 12))
        else:
            self._write_sum_head(sums.head)
            s2 = sums.head.s2length
            out = bytearray()
            strong = sums.strong
            for i, weak in enumerate(sums.sum1.tolist()):
                out += encode_int32(weak - (1 << 32) if weak >= 1 << 31 else weak)
                out += strong[i * s2:(i + 1) * s2]
            io.write(out)
        io.flush()
        nfiles = len(self.flist.entries)
        while True:
            ndx, got_iflags, _ftype, _xname = self._read_ndx_and_attrs(nfiles)
            if ndx == NDX_DONE:
                raise WireError(f"unexpected end of phase from sender [{self.who}]",
                                E.RERR_PROTOCOL)
            if got_iflags & ITEM_TRANSFER:
                break
            # A non-transfer echo (not expected since we never send those): ignore it.
        if ndx != req.ndx:
            raise WireError(f"sender sent file {ndx} instead of {req.ndx} [{self.who}]",
                            E.RERR_PROTOCOL)
        head = self._read_sum_head()
        if sums is not None and head != sums.head or sums is None and head.count:
            raise WireError(f"sender echoed a different sum head [{self.who}]",
                            E.RERR_PROTOCOL)
        e = self.flist.entries[ndx]
        self._current_ndx = ndx
        self._pending = self._tokens(e, sums, req.basis)
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

    def _tokens(self, e, sums, basis: bytes | None) -> Iterator[bytes | int]:
        from netsync import token
        from netsync.checksum import FileSum

        io = self.io
        assert io is not None
        neg = self.neg
        dec = self.decoder
        fsum = FileSum(neg.checksum, neg.checksum_seed, neg.protocol)
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
            raise m.DiscardFile()

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
            if proto >= 29:
                io.read_varlong30(3) if proto >= 30 else io.read_longint()
                io.read_varlong30(3) if proto >= 30 else io.read_longint()
        if proto >= 31:
            self._expect_done()
        io.write_ndx(NDX_DONE)
        io.flush()

    def _expect_done(self) -> None:
        flist = getattr(self, "flist", None)
        nfiles = len(flist.entries) if flist is not None else 0
        while True:
            ndx, iflags = self._read_ndx_and_attrs(nfiles)[:2]
            # A server's generator reports unchanged items; the sender echoes them.
            if ndx == NDX_DONE or iflags & ITEM_TRANSFER:
                break
        if ndx != NDX_DONE:
            raise WireError(f"Invalid packet at end of run ({ndx}) [{self.who}]",
                            E.RERR_PROTOCOL)


# ---------------------------------------------------------------------------
# helpers


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

    try:
        return pwd.getpwuid(uid).pw_name.encode()
    except KeyError:
        return None


def _group_name(gid: int) -> bytes | None:
    import grp

    try:
        return grp.getgrgid(gid).gr_name.encode()
    except KeyError:
        return None


def _map_ids(entries, uid_names: dict[int, bytes], gid_names: dict[int, bytes]) -> None:
    """uidlist.c recv_id_list(): a name known here maps to the local id."""
    import grp
    import pwd

    umap: dict[int, int] = {}
    for rid, name in uid_names.items():
        try:
            umap[rid] = pwd.getpwnam(os.fsdecode(name)).pw_uid
        except KeyError:
            pass
    gmap: dict[int, int] = {}
    for rid, name in gid_names.items():
        try:
            gmap[rid] = grp.getgrnam(os.fsdecode(name)).gr_gid
        except KeyError:
            pass
    if not umap and not gmap:
        return
    for e in entries:
        e.uid = umap.get(e.uid, e.uid)
        e.gid = gmap.get(e.gid, e.gid)
