"""rsync's batch mode (batch.c): --write-batch, --only-write-batch, --read-batch.

A batch file is what a receiver reads from its sender, recorded: an int of
stream-affecting option bits, the protocol version, the compat flags (>= 30),
the checksum seed, then the sender's demultiplexed data stream (file list,
each file's echo, sum head, tokens and checksum, the phase ends, and the
stats a client receiver reads), up to the final NDX_DONE.

Writing: the client runs the transfer over the wire codec -- a local copy
against a ``netsync --server`` child, exactly as rsync's local_child() does --
and tees the sender's output (push) or the receiver's demultiplexed input
(pull) into the file, written under a temporary name and renamed into place
once the stream ended; FILE.sh (write_batch_shell_file()) replays it.
--only-write-batch is a dry run whose files are still asked for: the server (or this
client's generator, on a pull) sends the sums of its destination's files and leaves
it alone; the sender writes each file's echo to the wire and the batch, and its
delta to the batch alone (sender.c f_xfer = batch_fd).
Reading: the wire receiver runs with the file as its input and the generator's
requests thrown away; what the generator asks for is matched against what the
batch holds, as receiver.c gen_wants_ndx() does.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import sys
from collections import deque

from netsync import errors as E
from netsync import log
from netsync import messages as m
from netsync.client import (
    ITEM_BASIS_TYPE_FOLLOWS,
    ITEM_IS_NEW,
    ITEM_TRANSFER,
    ITEM_XNAME_FOLLOWS,
    NDX_DEL_STATS,
    NDX_DONE,
    NDX_FLIST_OFFSET,
    PROG,
    WireIO,
    _Client,
    _exit_line,
    _skipped,
    drive,
)
from netsync.transport import Connection, TransportError
from netsync.wire import (
    TruncatedError,
    WireError,
    decode_varint,
    encode_varint,
    encode_varlong,
)

__all__ = ["run_batch", "shell_script", "stream_flags"]

_I32 = struct.Struct("<i")

# batch.c flag_name[]: bit i of the stream flags (7-8 from protocol 29, 9-14 from 30).
_FLAG_NAMES = (
    "--recurse (-r)", "--owner (-o)", "--group (-g)", "--links (-l)", "--devices (-D)",
    "--hard-links (-H)", "--checksum (-c)", "--dirs (-d)", "--compress (-z)", "--iconv",
    "--acls (-A)", "--xattrs (-X)", "--inplace", "--append", "--append-verify",
)
_BIT_DIRS, _BIT_COMPRESS, _BIT_ICONV, _BIT_ACLS, _BIT_XATTRS = 7, 8, 9, 10, 11


def _flag_count(protocol: int) -> int:
    """How many bits check_batch_flags() compares at ``protocol``."""
    if protocol < 29:
        return 7
    if protocol < 30:
        return 9
    return len(_FLAG_NAMES)


def _flag_values(opts) -> list[bool]:
    return [
        bool(opts.recursive or opts.recurse), bool(opts.owner), bool(opts.group),
        bool(opts.links), bool(opts.devices), bool(opts.hard_links), bool(opts.checksum),
        bool(opts.xfer_dirs > 0 or opts.dirs), bool(opts.do_compression),
        opts.iconv is not None, bool(opts.acls), bool(opts.xattrs), bool(opts.inplace),
        opts.append == 1, opts.append == 2,
    ]


def stream_flags(opts) -> int:
    """write_stream_flags(): the bitmap that starts a batch file."""
    return sum(1 << i for i, on in enumerate(_flag_values(opts)) if on)


def _apply_stream_flags(opts, flags: int, protocol: int, say) -> None:
    """check_batch_flags(): options that shape the data stream follow the batch."""
    have = _flag_values(opts)
    for i in range(_flag_count(protocol)):
        want = bool(flags & (1 << i))
        if have[i] == want:
            continue
        if i == _BIT_ICONV:
            raise _bare(E.RERR_SYNTAX, f"{'Please' if want else 'Do not'} specify the "
                        "--iconv option to use this batch file.")
        if opts.info.get("misc", 0) >= 1:
            say(f"{'Sett' if want else 'Clear'}ing the {_FLAG_NAMES[i]} option to match "
                "the batchfile.")
        if i == 0:
            opts.recurse = 2 if want else 0
            opts.recursive = want
        elif i == 1:
            opts.owner = want
        elif i == 2:
            opts.group = want
        elif i == 3:
            opts.links = want
        elif i == 4:
            opts.devices = want
        elif i == 5:
            opts.hard_links = 1 if want else 0
        elif i == 6:
            opts.checksum = want
        elif i == _BIT_DIRS:
            opts.xfer_dirs = 1 if want else 0
            opts.dirs = want
        elif i == _BIT_COMPRESS:
            opts.do_compression = 1 if want else 0  # (stream is zlib: the batch writer's)
        elif i == _BIT_XATTRS:
            opts.xattrs = (opts.xattrs or 1) if want else 0
        elif i == _BIT_ACLS:
            opts.acls = want
            if want:
                opts.perms = True  # (-A implies -p)
        elif i == 12:
            opts.inplace = want
        elif i == 13:
            opts.append = 1 if want else (0 if opts.append == 1 else opts.append)
        elif i == 14:
            opts.append = 2 if want else (0 if opts.append == 2 else opts.append)
    if protocol < 29:
        if opts.recurse:
            opts.xfer_dirs |= 1
        elif opts.xfer_dirs < 2:
            opts.xfer_dirs = 0
        opts.dirs = bool(opts.xfer_dirs)
    if opts.append:
        opts.inplace = True


# ------------------------------------------------------------------ the .sh file
def _quote(arg: str) -> str:
    """batch.c write_arg(): a plain "--opt=" prefix stays bare, the rest is single-quoted."""
    out = ""
    if arg.startswith("-") and "=" in arg:
        key, _, rest = arg.partition("=")
        if all(c == "-" or c == "_" or c.isascii() and c.isalnum() for c in key):
            out, arg = key + "=", rest
    return out + "'" + arg.replace("'", "'\\''") + "'"


def _program_words() -> list[str]:
    """raw_argv[0]: how this netsync was started (``python -m netsync`` kept whole)."""
    arg0 = sys.argv[0] if sys.argv and sys.argv[0] else PROG
    if arg0.endswith("__main__.py") or arg0 == "-m":
        return [sys.executable, "-m", "netsync"]
    return [arg0]


def shell_script(opts, raw_args: list[str], cooked_args: list[str], protocol: int,
                 rules: list[bytes]) -> bytes:
    """write_batch_shell_file(): the command that replays the batch, options as given
    minus the file names, filters (which go in a here-doc) and --write-batch (which
    becomes --read-batch); the destination is "${1:-DEST}"."""
    words = [_quote(w) for w in _program_words()]
    if rules:
        words.append("--filter=" + _quote("._-") if protocol >= 29
                     else "--exclude-from=" + _quote("-"))
    raw = list(raw_args)
    j = len(cooked_args) - 1
    for i in range(len(raw) - 1, -1, -1):  # elide the file names, found from the end
        if j < 0:
            break
        if raw[i] == cooked_args[j]:
            raw[i] = None  # type: ignore[call-overload]
            j -= 1
    i = 0
    while i < len(raw):
        p = raw[i]
        i += 1
        if p is None:
            continue
        if p.startswith(("--files-from", "--filter", "--include", "--exclude")):
            if "=" not in p:
                i += 1
            continue
        if p == "-f":
            i += 1
            continue
        for name in ("--write-batch", "--only-write-batch"):
            if p.startswith(name):
                rest = p[len(name):]
                words.append("--read-batch" + ("=" + _quote(rest[1:]) if rest[:1] == "=" else ""))
                break
        else:
            words.append(_quote(p))
    dest = cooked_args[-1] if cooked_args else "."
    from netsync.transport.remote import check_for_hostspec

    try:
        spec = check_for_hostspec(dest, opts.port)
    except Exception:  # noqa: BLE001 - an unparsable spec is taken as a local name
        spec = None
    if spec is not None:
        dest = spec[1]
    text = " ".join(words) + " ${1:-" + _quote(dest) + "}"
    out = os.fsencode(text)
    if rules:
        eol = b"\0" if opts.from0 else b"\n"
        out += b" <<'#E#'\n" + b"".join(r + eol for r in rules)
        if opts.from0:
            out += b";\n"
        out += b"#E#"
    return out + b"\n"


def _script_rules(opts, protocol: int) -> list[bytes]:
    """The filter rules the .sh feeds back through --filter=._- (get_rule_prefix, not
    for transfer); a newline in one could end the here-doc early, so it is refused."""
    if not (opts.filter_args or opts.cvs_exclude):
        return []
    from netsync import filters as F

    fl = F.build_filter_list(opts.filter_args, opts.cvs_exclude, opts.delete_excluded,
                             opts.from0)
    out = []
    for r in fl.rules.local:
        if b"\n" in r.pattern:
            raise _bare(E.RERR_SYNTAX, "cannot write a filter rule containing a newline "
                        "to the batch replay script")
        prefix = F._rule_prefix(r.rflags, r.pattern, False, protocol) or b"- "
        out.append(prefix + r.pattern + (b"/" if r.rflags & F.DIRECTORY else b""))
    return out


# ------------------------------------------------------------------ batch files
def _open_error(path: str, exc: OSError, code: int) -> E.RsyncError:
    full = os.path.abspath(path)
    return E.RsyncError(code, f'[Receiver] Batch file "{full}" open error: {exc.strerror} '
                        f'({exc.errno})')


class _NewFile:
    """A batch file (or its .sh) being written: under a temporary name beside it,
    renamed over FILE once complete, so a failed run leaves no half-written batch.

    The directories leading to it follow open_no_attacker_symlinks(): a symlink not
    ours or root's is refused (ELOOP).  FILE itself being such a symlink is refused
    too; one of ours is written through, in place, as rsync does."""

    def __init__(self, path: str, mode: int, code: int) -> None:
        from netsync import safepath

        self.path = path
        self.dfd: int | None = None
        self.tmp: bytes | None = None
        try:
            dfd, leaf = safepath.owner_walk_parent(os.fsencode(path))
        except OSError as exc:
            raise _open_error(path, exc, code) from None
        try:
            try:
                st = os.lstat(leaf, dir_fd=dfd)
            except FileNotFoundError:
                st = None
            if leaf in (b".", b"..") or st is not None and stat.S_ISDIR(st.st_mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
            if st is not None and stat.S_ISLNK(st.st_mode):
                os.close(dfd)
                dfd = -1
                self.fd = safepath.owner_open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                return
            for _ in range(100):
                tmp = b"." + leaf[:200] + b"." + os.urandom(4).hex().encode()
                try:
                    self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                      | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
                except FileExistsError:
                    continue
                self.dfd, self.tmp, self.leaf = dfd, tmp, leaf
                dfd = -1
                return
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        except OSError as exc:
            raise _open_error(path, exc, code) from None
        finally:
            if dfd >= 0:
                os.close(dfd)

    def write_all(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise E.RsyncError(E.RERR_FILEIO, f'write failed on "{os.path.abspath(self.path)}"'
                               f": {exc.strerror} ({exc.errno})", own_code=True) from None
        finally:
            view.release()

    def finish(self, keep: bool) -> None:
        """Close; rename into place (``keep``) or remove the temporary file."""
        os.close(self.fd)
        if self.dfd is None:
            return
        try:
            if keep:
                os.rename(self.tmp, self.leaf, src_dir_fd=self.dfd, dst_dir_fd=self.dfd)
            else:
                os.unlink(self.tmp, dir_fd=self.dfd)  # type: ignore[arg-type]
        except OSError as exc:
            raise E.RsyncError(E.RERR_FILEIO, f'rename failed for "{os.path.abspath(self.path)}"'
                               f": {exc.strerror} ({exc.errno})", own_code=True) from None
        finally:
            os.close(self.dfd)


class _BatchOut:
    """The batch file being written, its appends buffered."""

    def __init__(self, file: _NewFile) -> None:
        self.file = file
        self.buf = bytearray()

    def add(self, data) -> None:
        self.buf += data
        if len(self.buf) >= 1 << 18:
            self.flush()

    def flush(self) -> None:
        self.file.write_all(self.buf)
        self.buf.clear()


# ------------------------------------------------------------------ writing
class _BatchWriter(_Client):
    """A client that records the sender's stream as it goes."""

    def __init__(self, opts, args: list[bytes], out: _BatchOut, sh: _NewFile,
                 only: bool) -> None:
        super().__init__(opts, args)
        self.batch = out
        self.sh = sh
        self.sh_done = False
        self.only = only
        self._tee_on = False
        self._divert = False  # output for the batch alone (--only-write-batch's data)

    # -- connecting: a local copy runs against our own server, as local_child() does
    def _start_daemon(self, plan):
        from netsync.transport.remote import Mode

        if plan.mode != Mode.LOCAL:
            return super()._start_daemon(plan)
        import copy

        from netsync.transport.rsh import server_args, spawn

        sopts = copy.copy(self.opts)
        sopts.old_args = 2  # main.c: no remote shell, so nothing is escaped for one
        # (--only-write-batch goes to the child as to any server: it asks for the files
        # against its destination, which it leaves alone, and the deltas go to the batch.)
        sa = server_args(sopts, True, plan.remote_paths)
        cmd = [sys.executable, "-m", "netsync", *sa.argv]
        self.conn = spawn(cmd, who=self.who)
        if sa.secluded:
            from netsync.transport.rsh import encode_secluded

            self.conn.write(encode_secluded(sa.secluded))
        return self._handshake()

    def _reporter(self):
        from netsync.transport.remote import Mode

        rep = super()._reporter()
        if self.plan.mode == Mode.LOCAL:  # log.c: a local transfer itemizes with '>'
            rep.ctx.local_server = True
        return rep

    def _handshake(self, daemon_protocol: int | None = None,
                   remote_protocol: int | None = None):
        from netsync.transport.handshake import ClientHandshake, run_client_handshake

        hs = ClientHandshake.from_options(self.opts, self.am_sender,
                                          daemon_protocol=daemon_protocol,
                                          remote_protocol=remote_protocol)
        # compat.c getenv_nstr(): a batch always negotiates the old-style choices, which
        # are what its reader assumes (it negotiates nothing).
        hs.checksum_names = ["md5" if hs.our_protocol >= 30 else "md4"]
        hs.compress_names = ["zlib"]
        hs.option_check = self.opts.protocol_error
        neg = run_client_handshake(self.conn, hs)  # type: ignore[arg-type]
        return neg, hs

    # -- recording starts after the filter list (main.c start_write_batch())
    def _send_filter_list(self) -> None:
        super()._send_filter_list()
        if self._tee_on:
            return
        self._tee_on = True
        neg = self.neg
        opts = self.opts
        rules = _script_rules(opts, neg.protocol)
        script = shell_script(opts, opts.raw_argv, list(opts.args), neg.protocol, rules)
        self.sh.write_all(script)
        self.sh.finish(keep=True)  # (kept whatever the transfer does next, as rsync's)
        self.sh_done = True
        head = _I32.pack(neg.protocol)
        if neg.protocol >= 30:
            head += encode_varint(neg.compat_flags)
        head += _I32.pack(neg.checksum_seed)
        self.batch.add(head)
        io = self.io
        assert io is not None
        out = self.batch
        if self.am_sender:
            write = io.write

            def tee_write(data) -> None:
                out.add(data)
                if not self._divert:
                    write(data)

            io.write = tee_write  # type: ignore[method-assign]
        else:
            from netsync.wire import DataEvent

            out.add(io._data[io._pos:])
            frames = io._frames

            def tee_drain() -> None:
                while True:
                    ev = frames.next_event()
                    if ev is None:
                        return
                    if isinstance(ev, DataEvent):
                        out.add(ev.data)
                        io._data += ev.data
                    else:
                        io._message(ev.code, ev.payload)

            io._drain_frames = tee_drain  # type: ignore[method-assign]

    # -- --only-write-batch's sender (sender.c f_xfer = batch_fd): the echo goes out and
    # into the batch, the sum head, tokens and checksum into the batch alone.
    def _write_sum_head(self, head) -> None:
        if self.only and self.am_sender:
            self._divert = True
        super()._write_sum_head(head)

    def _send_data(self, *args) -> None:
        try:
            super()._send_data(*args)
        finally:
            self._divert = False

    # -- the stats a --read-batch client receiver reads (main.c handle_stats())
    def _goodbye(self) -> None:
        if self.am_sender and self._tee_on:
            proto = self.neg.protocol
            s = self.stats
            vals = [self.conn.bytes_read, self.conn.bytes_written,  # type: ignore[union-attr]
                    s.total_size]
            if proto >= 29:
                vals += [int(s.flist_buildtime * 1000), int(s.flist_xfertime * 1000)]
            for v in vals:
                self.batch.add(encode_varlong(v, 3) if proto >= 30 else _longint(v))
        super()._goodbye()

    def _summary(self, sent: int, received: int, total_size: int,
                 batch_only: bool = False) -> None:
        super()._summary(sent, received, total_size, batch_only=self.only)


def _longint(v: int) -> bytes:
    if 0 <= v <= 0x7FFFFFFF:
        return _I32.pack(v)
    return _I32.pack(-1) + struct.pack("<q", v)


# ------------------------------------------------------------------ reading
class _BatchConn(Connection):
    """The batch file as the connection: reads from it, writes go nowhere."""

    def __init__(self, rfd: int, owned: bool) -> None:
        super().__init__(rfd, os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC), who="Receiver")
        self.owned = owned
        self.was_blocking = os.get_blocking(rfd)  # stdin is shared: give it back as it was

    def close(self) -> int | None:
        if not self.closed:
            self.closed = True
            if not self.owned:
                try:
                    os.set_blocking(self.rfd, self.was_blocking)
                except OSError:
                    pass
            for fd in (self.rfd, self.wfd) if self.owned else (self.wfd,):
                try:
                    os.close(fd)
                except OSError:
                    pass
        return None


def _read_exact(fd: int, n: int) -> bytes:
    """The header's fields, read before the connection machinery (whose byte count is
    still 0 in rsync's "connection unexpectedly closed" message then)."""
    out = b""
    while len(out) < n:
        try:
            chunk = os.read(fd, n - len(out))
        except BlockingIOError:
            import select

            select.select([fd], [], [])
            continue
        except OSError as exc:
            raise TransportError(E.RERR_STREAMIO, f"read error: {exc.strerror} "
                                 f"({exc.errno}) [Receiver]") from None
        if not chunk:
            raise TransportError(E.RERR_STREAMIO, "connection unexpectedly closed "
                                 "(0 bytes received so far) [Receiver]")
        out += chunk
    return out


class _BatchReader(_Client):
    """The wire receiver fed from a batch file (main.c do_cmd() with read_batch)."""

    def __init__(self, opts, args: list[bytes], fd: int, owned: bool) -> None:
        super().__init__(opts, args)
        self.batch_fd = fd
        self.owned = owned
        self.who = "receiver"
        self.am_sender = False
        # receiver.c: a file the batch holds but the generator did not ask for.
        self._open_lists = 0  # lists of the stream not yet ended by its NDX_DONEs
        self._hi = 0  # one past the highest file index listed so far
        self._held: _HeldEntries | None = None
        # The lists the stream has not yet ended (base, entries, their dir): its items
        # are logged by name even once the generator, running ahead, dropped the list.
        self._stream_lists: deque[tuple[int, list, object]] = deque()

    def run(self) -> int:
        from netsync import filters as _filters
        from netsync.checksum import implied_checksum
        from netsync.options import _allow_inc_recurse
        from netsync.transport.handshake import CF_INC_RECURSE, Negotiated
        from netsync.transport.remote import Mode, TransferPlan

        opts = self.opts
        fd = self.batch_fd
        flags = _I32.unpack(_read_exact(fd, 4))[0]
        remote = _I32.unpack(_read_exact(fd, 4))[0]
        proto = min(opts.protocol, remote) if remote >= 0 else remote
        if remote > proto:
            raise _bare(E.RERR_PROTOCOL, "The protocol version in the batch file is too new "
                        f"({remote} > {proto}).")
        if remote < 20 or remote > 40:
            raise _bare(E.RERR_PROTOCOL, "protocol version mismatch -- is your shell clean?\n"
                        "(see the rsync manpage for an explanation)")
        if proto < 27:
            raise E.RsyncError(E.RERR_PROTOCOL, f"the batch file is protocol {proto}; "
                               "netsync reads batches of protocol 27 or newer")
        allow_inc = _allow_inc_recurse(opts, False)  # main.c: before the batch's flags
        _apply_stream_flags(opts, flags, proto, print)
        compat = 0
        if proto >= 30:
            raw = b""
            while True:  # read_varint(): the first byte says how many follow
                raw += _read_exact(fd, 1)
                try:
                    compat = decode_varint(raw)[0]
                    break
                except TruncatedError:
                    if len(raw) >= 5:
                        raise WireError("invalid compat flags in batch file",
                                        E.RERR_PROTOCOL) from None
        seed = _I32.unpack(_read_exact(fd, 4))[0]
        opts.trust_sender = True  # options.c: a batch is trusted as a local list is
        opts.whole_file = False  # the generator keeps its basis for the batch's deltas
        self._open_lists = 1 if compat & CF_INC_RECURSE else 0
        if compat & CF_INC_RECURSE and not allow_inc:
            raise _bare(E.RERR_SYNTAX, "Incompatible options specified for inc-recursive "
                        "batch file.")
        opts.inc_recursive = bool(compat & CF_INC_RECURSE)
        self.neg = Negotiated(
            protocol=proto, remote_protocol=remote, compat_flags=compat,
            checksum=implied_checksum(proto), checksum_negotiated=False,
            compress="zlib" if opts.do_compression else None, checksum_seed=seed,
            mplex_in=False, mplex_out=False)
        self._xa_init()
        dest = os.fsdecode(self.args[-1])
        self.plan = TransferPlan(Mode.LOCAL, False, remote_paths=["."], local_paths=[dest])
        self.conn = _BatchConn(fd, self.owned)
        self.io = WireIO(self.conn, proto, who=self.who)
        self.rep = self._reporter()
        _filters.set_output(self.rep.info, self.rep.warn_msg, opts.debug.get("filter", 0))
        self._load_files_from()
        return self._pull()

    def _summary(self, sent: int, received: int, total_size: int,
                 batch_only: bool = False) -> None:
        self.stats.flist_size = 0  # (rsync counts no list bytes read from a batch)
        super()._summary(sent, received, total_size, batch_only)

    def _send_filter_list(self) -> None:
        """send_filter_list(-1): the batch reader sends no rules."""

    # -- the stream's own structure (receiver.c recv_files()): its NDX_DONEs end the
    # oldest list while more are open, else a phase; items the writing run's generator
    # only reported are passed over; a file nobody asked for is skipped.
    def _stream_done(self) -> bool:
        """An NDX_DONE read: True if it only ended a list (not the phase)."""
        if self._open_lists > 1:
            self._open_lists -= 1
            if self._stream_lists:
                self._stream_lists.popleft()
            return True
        self._open_lists = 0
        return False

    def _attrs(self) -> tuple[int, int, bytes | None]:
        io = self.io
        assert io is not None
        if self.neg.protocol < 29:
            return ITEM_TRANSFER, 0x80, None
        iflags = io.read_shortint()
        ftype = io.read_byte() if iflags & ITEM_BASIS_TYPE_FOLLOWS else 0x80
        xname = io.read_vstring(4096) if iflags & ITEM_XNAME_FOLLOWS else None
        return iflags, ftype, xname

    def _lookup(self, ndx: int):
        """(known, entry): the entry of ``ndx``; known but None for a list dropped."""
        feed = self._feed
        if feed is None:
            entries = self.flist.entries if self.flist is not None else []
            return ndx < len(entries), entries[ndx] if ndx < len(entries) else None
        e = feed.entry(ndx)
        if e is not None:
            return True, e
        for base, entries, d in self._stream_lists:
            if ndx == base - 1:  # a list's dir (receiver.c: dir_flist, its parent_ndx)
                return True, d
            if 0 <= ndx - base < len(entries):
                return True, entries[ndx - base]
        hi = max((base + len(ents) for base, ents, _n in feed.active), default=0)
        return ndx < max(hi, self._hi), None

    def _file_header(self, ndx: int):
        """A file's header after its ndx: (iflags, ftype, xname), or None when it was
        passed over (a reported item, or a file of a list already done)."""
        iflags, ftype, xname = self._attrs()
        known, e = self._lookup(ndx)
        if not known:
            raise WireError(f"Invalid file index: {ndx} [{self.who}]", E.RERR_PROTOCOL)
        if self._xa is not None and iflags & log.ITEM_REPORT_XATTR:
            self._xa.batch_values(iflags, e)  # (-X: the values the writing run sent)
        if not iflags & ITEM_TRANSFER:
            if e is not None:  # receiver.c: the item as the writing run's generator saw it
                self.rep.maybe_log_item(e, iflags, xname)
                if iflags & ITEM_IS_NEW:
                    self.stats.count("created", e.mode)
            return None
        if e is None:
            self._skip(f"file index {ndx}", ndx)
            return None
        return iflags, ftype, xname

    def _read_ndx_and_attrs(self, nfiles: int) -> tuple[int, int, int, bytes | None]:
        io = self.io
        assert io is not None
        del nfiles
        while True:
            ndx = io.read_ndx()
            if ndx == NDX_DONE:
                if self._stream_done():
                    continue
                return ndx, 0, 0, None
            if ndx < 0:
                self._read_list_ndx(ndx)
                continue
            got = self._file_header(ndx)
            if got is not None:
                return (ndx, *got)

    def _first_inc_list(self, dec, raw_entries: list, io_error: int):
        flist = super()._first_inc_list(dec, raw_entries, io_error)
        feed = self._feed
        assert feed is not None
        for base, ents, _n in feed.active:
            self._hi = max(self._hi, base + len(ents))
        flist.entries = self._held = _HeldEntries(feed)
        self._note_lists()
        return flist

    def _note_lists(self) -> None:
        """Remember the lists the feed took in since last time (with their dirs)."""
        feed = self._feed
        assert feed is not None
        last = self._stream_lists[-1][0] if self._stream_lists else -1
        for d, _slot, base, entries, _io_error in feed.queue:
            if base > last:
                self._stream_lists.append((base, entries, d))

    def _read_list_ndx(self, ndx: int) -> None:
        """Whatever comes while the generator waits for a list (next_chunk())."""
        feed = self._feed
        if ndx == NDX_DONE:
            if not self._stream_done():  # the phase ended with no more lists: stop waiting
                self._next_reply = (NDX_DONE, 0, 0, None)
                if feed is not None:
                    feed.eof = True
            return
        if ndx == NDX_DEL_STATS:
            self._read_del_stats()
            return
        if ndx >= 0:
            got = self._file_header(ndx)
            if got is not None:  # a file of a list the generator is done with
                self._skip(f'"{self._name(ndx)}"', ndx)
            return
        if feed is None:
            raise WireError(f"Invalid file index: {ndx} [{self.who}]", E.RERR_PROTOCOL)
        listing = ndx <= NDX_FLIST_OFFSET and not feed.eof
        super()._read_list_ndx(ndx)
        if listing:
            self._open_lists += 1
            base, ents, _n = feed.active[-1]
            self._hi = max(self._hi, base + len(ents))
            if self._held is not None:
                self._note_lists()

    def _skip(self, what: str, ndx: int) -> None:
        """receiver.c: a file the batch holds but the generator did not want."""
        self.rep.info(f"(Skipping batched update for {what})")
        self._discard(ndx)

    def _generator_cls(self, base: type) -> type:
        class BatchGenerator(base):  # type: ignore[misc, valid-type]
            """generator.c itemize() logs nothing with --read-batch: the items the
            batch recorded are logged as the stream is read, with their flags."""

            def report_item(self, e, iflags: int, xname: bytes | None = None) -> int:
                return iflags

            def _receive_file(self, data, ndx, e, path, basis, dest_st, new_mode,
                              iflags) -> None:
                super()._receive_file(data, ndx, e, path, basis, dest_st, new_mode,
                                      data.iflags)

        return BatchGenerator

    def _discard(self, ndx: int) -> None:
        """receiver.c discard_receive_data(): read past one file's data."""
        from netsync import token
        from netsync.checksum import FileSum

        io = self.io
        assert io is not None
        neg = self.neg
        head = self._read_sum_head()
        dec = getattr(self, "decoder", None)
        if dec is None:
            dec = self.decoder = token.make_decoder(neg.compress or "none", neg.protocol)
        stats = self.stats
        last = head.count - 1
        while True:
            done = False
            for ev in dec:
                # receive_data() counts what it reads past as if it wrote it.
                if isinstance(ev, token.Literal):
                    stats.literal_data += len(ev.data)
                elif isinstance(ev, token.Block):
                    stats.matched_data += head.remainder \
                        if ev.index == last and head.remainder else head.blength
                else:
                    done = True
                    break
            if done:
                break
            dec.feed(io.read_some())
        io.unread(dec.take_unconsumed())
        io.read(len(FileSum(neg.checksum, neg.checksum_seed, neg.protocol).digest()))
        del ndx

    def _next_header(self):
        stashed, self._next_reply = self._next_reply, None
        if stashed is not None:
            return stashed
        return self._read_ndx_and_attrs(len(self.flist.entries))

    def _name(self, ndx: int) -> str:
        e = self._lookup(ndx)[1]
        return self.rep.safe(e.name) if e is not None else f"file index {ndx}"

    def _read_reply(self, req: m.SendRequest, append: int, prefix: int) -> m.FileData:
        """gen_wants_ndx(): the batch's next file against the one the generator wants."""
        rep = self.rep
        while True:
            ndx, iflags, ftype, xname = self._next_header()
            if ndx != NDX_DONE and not iflags & ITEM_TRANSFER:
                continue  # an item the writing run's generator only reported
            if ndx == NDX_DONE or ndx > req.ndx:
                self._next_reply = (ndx, iflags, ftype, xname)
                rep.error_xfer(f'(No batched update for{" resend of" if self.redoing else ""}'
                               f' "{self._name(req.ndx)}")', bare=True)
                return _skipped(req)
            if ndx < req.ndx:
                self._skip(f'{"resend of " if self.redoing else ""}"{self._name(ndx)}"', ndx)
                continue
            break
        if self.opts.dry_run:  # receiver.c, !do_xfers: logged, its data read past
            self._discard(ndx)
            return m.FileData(ndx, iflags, None, iter(()))
        head = self._read_sum_head()
        e = self._entry(ndx)
        self._current_ndx = ndx
        if append:
            self._pending = self._tokens(e, None, req.basis, prefix, verify=append > 1)
            return m.FileData(ndx, iflags, None, self._pending, size=e.size)
        sums = _HeadOnly(head)
        self._pending = self._tokens(e, sums if head.count else None, req.basis)
        # (the batch's iflags: what the receiver logs, as receiver.c does)
        return m.FileData(ndx, iflags, sums if head.count else None, self._pending,
                          size=e.size)

    def _expect_done(self) -> None:
        while True:
            ndx, iflags = self._next_header()[:2]
            if ndx == NDX_DONE:
                return
            if iflags & ITEM_TRANSFER:
                self._skip(f'"{self._name(ndx)}"', ndx)


class _HeldEntries(list):
    """An incremental list's entries by file index, of the lists still held (empty to
    iterate, as before)."""

    def __init__(self, feed) -> None:
        super().__init__()
        self.feed = feed

    def __getitem__(self, ndx):  # type: ignore[override]
        if isinstance(ndx, int) and ndx >= 0:
            e = self.feed.entry(ndx)
            if e is not None:
                return e
        return super().__getitem__(ndx)


class _HeadOnly:
    """The sums of a batch's file: its sum head is all a receiver needs."""

    __slots__ = ("head",)

    def __init__(self, head) -> None:
        self.head = head


# ------------------------------------------------------------------ entry point
def _open_read(name: str) -> tuple[int, bool]:
    from netsync import safepath

    if name == "-":
        return sys.stdin.fileno(), False
    try:
        fd = safepath.owner_open(name, os.O_RDONLY)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise _bare(E.RERR_FILEIO, f'Batch file "{os.path.abspath(name)}" is not a '
                        'regular file') from None
        raise _open_error(name, exc, E.RERR_FILEIO) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _bare(E.RERR_FILEIO, f'Batch file "{os.path.abspath(name)}" is not a regular '
                    'file')
    return fd, True


def _bare(code: int, message: str) -> TransportError:
    """An error rsync prints with rprintf(FERROR): no "rsync: " prefix; the run ends with
    its code whatever the peer then exits with."""
    return TransportError(code, message, bare=True, own_code=True)


def run_batch(opts, args: list[bytes]) -> int:
    """netsync with --write-batch, --only-write-batch or --read-batch."""
    try:
        return _run_batch(opts, args)
    except TransportError as te:
        if te.message:
            E.print_error(te.message if te.bare else f"{PROG}: {te.message}")
        _exit_line(te.code)
        return te.code


def _run_batch(opts, args: list[bytes]) -> int:
    from netsync.cli import is_remote

    if opts.read_batch is not None:
        if not args:
            raise E.RsyncError(E.RERR_SYNTAX, None)
        if is_remote(args[-1]):
            raise _bare(E.RERR_SYNTAX, "remote destination is not allowed with --read-batch")
        fd, owned = _open_read(opts.read_batch)
        reader = _BatchReader(opts, [args[-1]], fd, owned)
        return drive(reader)
    only = opts.only_write_batch is not None
    if opts.dry_run:  # options.c: -n writes no batch at all
        opts.only_write_batch = opts.write_batch = None
        from netsync.cli import run_client

        return run_client(opts)
    name = opts.only_write_batch if only else opts.write_batch
    if only:
        opts.dry_run = True  # main.c: write_batch < 0 is a dry run (do_xfers stays 1)
    # batch.c open_batch_files(): the .sh first (exit 3), then the batch (exit 11).
    sh = _NewFile(name + ".sh", 0o700, E.RERR_FILESELECT)
    try:
        batch = _NewFile(name, 0o600, E.RERR_FILEIO)
    except BaseException:
        sh.finish(keep=False)
        raise
    out = _BatchOut(batch)
    writer = _BatchWriter(opts, args, out, sh, only)
    code = E.RERR_FILEIO
    try:
        out.add(_I32.pack(stream_flags(opts)))
        code = drive(writer)
    finally:
        if not writer.sh_done:
            sh.finish(keep=False)
        # A run that ended its stream (all done, or some files failed) leaves a batch.
        complete = writer._tee_on and code in (0, E.RERR_PARTIAL, E.RERR_VANISHED)
        try:
            if complete:
                out.flush()
            batch.finish(keep=complete)
        except E.RsyncError as exc:
            E.print_error(exc.message if getattr(exc, "bare", False) else f"{PROG}: {exc.message}")
            _exit_line(exc.code)
            code = exc.code
    return code
