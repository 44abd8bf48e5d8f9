"""rsync's io.c for a client: multiplexed protocol I/O over a transport Connection.

Inbound, the server's stream is demultiplexed (from protocol 23): MSG_DATA
payload goes to an in-band buffer the typed readers consume, every other
message is acted on at once (text printed as rsync prints it, io_error and
xfer-error bits remembered, MSG_DELETED / MSG_SUCCESS / MSG_NO_SEND handed
to callbacks).  Outbound bytes are buffered and sent as MSG_DATA frames when
multiplexing out (protocol >= 30).

Writes never block while the peer is blocked writing to us: when the output
does not drain, input is read (and demultiplexed) meanwhile, as perform_io()
does.  Each wait is bounded by ``timeout`` (--timeout) when one is set.
"""

from __future__ import annotations

import os
import select
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from netsync.errors import RERR_PROTOCOL, RERR_STREAMIO, RERR_TIMEOUT
from netsync.transport import Connection, TransportError
from netsync.wire import (
    MPLEX_BASE,
    DataEvent,
    FrameDecoder,
    Msg,
    NdxDecoder,
    NdxEncoder,
    TruncatedError,
    WireError,
    decode_varint,
    decode_varlong,
    encode_frame,
    encode_int32,
    encode_shortint,
    encode_varint,
    encode_varlong,
    encode_vstring,
)

__all__ = ["ProtocolIO", "RemoteExit"]

_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")
OUT_FRAME = 32 * 1024  # payload per outbound MSG_DATA frame (rsync's buffer size)
_U32 = struct.Struct("<I")
_DATA_TAG = (MPLEX_BASE + Msg.DATA) << 24
_DATA_FRAME_HEAD = _U32.pack(_DATA_TAG | OUT_FRAME)
_HOLE = bytes(4)  # an open frame's header, filled in when the frame is closed
_FRAME_END = 4 + OUT_FRAME  # a frame's end, from its header's offset
READ_SIZE = 256 * 1024
IOERR_VALID_MASK = 0x7


class RemoteExit(TransportError):
    """The server sent MSG_ERROR_EXIT: it is exiting with ``code``."""


class ProtocolIO:
    """Typed, multiplex-aware reads and writes on one Connection."""

    def __init__(self, conn: Connection, protocol: int, *, who: str = "sender",
                 timeout: float | None = None) -> None:
        self.conn = conn
        self.protocol = protocol
        self.who = who
        self.timeout = timeout or None
        self.mplex_in = False
        self.mplex_out = False
        self._frames = FrameDecoder()
        self._data = bytearray()
        self._pos = 0
        # Bytes to send; when multiplexing out, the last MSG_DATA frame may still be open:
        # its header (4 bytes at _fh, -1 if none) is filled in when it is closed, so data
        # is copied once, straight into its frame (rsync's iobuf.out keeps such a hole).
        self._out = bytearray()
        self._fh = -1
        self._eof = False
        #: --bwlimit in KiB/s (0: none): writes are capped and paced as io.c's
        #: writefd_unbuffered() and sleep_for_bwlimit() do.
        self.bwlimit = 0
        self._bw_owed = 0  # bytes written and not yet paid for by time
        self._bw_prior = 0.0
        self.ndx_in = NdxDecoder(protocol)
        self.ndx_out = NdxEncoder(protocol)
        self.io_error = 0
        self.got_xfer_error = False
        self.remote_exit: int | None = None
        # Callbacks for messages that concern the engine.
        self.on_deleted: Callable[[bytes, bool], None] | None = None
        self.on_success: Callable[[int], None] | None = None
        self.on_no_send: Callable[[int], None] | None = None
        self.on_redo: Callable[[int], None] | None = None
        self.on_stats: Callable[[int], None] | None = None
        self.on_text: Callable[[int, bytes], None] | None = None
        self.log_text: Callable[[bytes], None] | None = None  # a client's --log-file
        #: -8/--8-bit-output: a message from the peer is printed with high-bit bytes raw.
        self.eight_bit = False
        # --iconv: a client's view of a server's texts (UTF-8 on the wire) in its own
        # charset, and a receiver's file indexes from the sender's order (see
        # client._map_wire_order()).
        self.text_in: Callable[[bytes], bytes] | None = None
        self.ndx_from_wire: Callable[[int], int] | None = None
        #: Number of file-list entries, once known: indexes in messages are checked against it.
        self.ndx_limit: int | None = None
        os.set_blocking(conn.rfd, False)
        if conn.wfd != conn.rfd:
            os.set_blocking(conn.wfd, False)

    # ------------------------------------------------------------------ raw
    def start_multiplex_in(self, leftover: bytes = b"") -> None:
        """Frames from here on; ``leftover`` = bytes already read past the handshake."""
        rest = bytes(self._data[self._pos:]) + leftover
        self._data = bytearray()
        self._pos = 0
        self.mplex_in = True
        if rest:
            self._frames.feed(rest)
            self._drain_frames()

    def add_leftover(self, data: bytes) -> None:
        if not data:
            return
        if self.mplex_in:
            self._frames.feed(data)
            self._drain_frames()
        else:
            self._data += data

    def _wait(self, want_read: bool, want_write: bool) -> tuple[bool, bool]:
        rl = [self.conn.rfd] if want_read else []
        wl = [self.conn.wfd] if want_write else []
        deadline = time.monotonic() + self.timeout if self.timeout else None
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                r, w, _ = select.select(rl, wl, [], left)
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
            if r or w:
                return bool(r), bool(w)
            if deadline is not None and time.monotonic() >= deadline:
                raise TransportError(RERR_TIMEOUT, f"[{self.who}] io timeout after "
                                     f"{int(self.timeout or 0)} seconds -- exiting")

    def _read_raw(self) -> bool:
        """Read what is there (False at EOF) and demultiplex it."""
        arm = self.conn.before_read
        if arm is not None:
            arm()
        try:
            chunk = os.read(self.conn.rfd, READ_SIZE)
        except BlockingIOError:
            return True
        except OSError as exc:
            raise TransportError(RERR_STREAMIO, f"read error: {exc.strerror} ({exc.errno}) "
                                 f"[{self.who}]") from None
        if not chunk:
            self._eof = True
            return False
        self.conn.bytes_read += len(chunk)
        if self.mplex_in:
            self._frames.feed(chunk)
            self._drain_frames()
        else:
            self._data += chunk
        return True

    def _drain_frames(self) -> None:
        while True:
            ev = self._frames.next_event()
            if ev is None:
                return
            if isinstance(ev, DataEvent):
                self._data += ev.data
            else:
                self._message(ev.code, ev.payload)

    def _pump(self) -> None:
        """Block until more in-band data (or a message) arrives."""
        if self._eof:
            raise self._closed()
        self._frame_output()  # what we wrote may be what the peer is waiting for
        self._flush_out(wait=False)
        while True:
            r, w = self._wait(True, bool(self._out))
            if w:
                self._write_some()
            if r:
                if not self._read_raw():
                    raise self._closed()
                return

    def _closed(self) -> TransportError:
        if self.remote_exit is not None:
            return RemoteExit(self.remote_exit, None)
        try:
            self._frames.close()
        except TruncatedError:
            pass
        return self.conn.unexpected_close()

    # -------------------------------------------------------------- messages
    def _message(self, code: Msg, payload: bytes) -> None:
        if code in (Msg.INFO, Msg.ERROR, Msg.ERROR_XFER, Msg.WARNING, Msg.LOG, Msg.CLIENT,
                    Msg.ERROR_SOCKET, Msg.ERROR_UTF8):
            if code in (Msg.LOG, Msg.CLIENT, Msg.ERROR_SOCKET, Msg.ERROR_UTF8):
                raise WireError(f"unexpected tag {int(code)} [{self.who}]")
            if code == Msg.ERROR_XFER:
                self.got_xfer_error = True
            if self.on_text is not None:
                self.on_text(int(code), payload)
            else:
                from netsync.log import escape_output

                stream = sys.stdout if code == Msg.INFO else sys.stderr
                sys.stdout.flush()
                # log.c rwrite(): the client escapes what it prints, a server's text too
                # (a server sends names raw); a name's control bytes never reach the tty.
                # With --iconv the text is converted instead of checked (ic_recv, not
                # ic_chck): only control bytes are escaped after that.
                text = escape_output(payload, eight_bit=self.eight_bit,
                                     convert=self.text_in)
                stream.buffer.write(text.encode("utf-8", "surrogateescape"))
                stream.flush()
                if self.log_text is not None:  # log.c rwrite(): logged as well
                    self.log_text(payload)
        elif code == Msg.IO_ERROR:
            self.io_error |= _I32.unpack(payload)[0] & IOERR_VALID_MASK
        elif code == Msg.NOOP:
            pass
        elif code == Msg.IO_TIMEOUT:
            val = _I32.unpack(payload)[0]
            if 0 < val <= 86400 and (not self.timeout or self.timeout > val):
                self.timeout = val
        elif code == Msg.DELETED:
            if self.on_deleted is None:
                raise WireError(f"unexpected tag {int(code)} [{self.who}]")
            is_dir = payload.endswith(b"\0")
            self.on_deleted(payload.rstrip(b"\0") if is_dir else payload, is_dir)
        elif code == Msg.SUCCESS:
            if self.on_success is not None:
                self.on_success(self._msg_ndx(_I32.unpack_from(payload)[0]))
        elif code == Msg.NO_SEND:
            if self.on_no_send is not None:
                self.on_no_send(self._msg_ndx(_I32.unpack(payload)[0]))
        elif code == Msg.REDO:
            if self.on_redo is None:
                raise WireError(f"invalid multi-message {int(code)}:4 [{self.who}]")
            self.on_redo(self._msg_ndx(_I32.unpack(payload)[0]))
        elif code == Msg.STATS:
            if self.on_stats is None:
                raise WireError(f"invalid multi-message {int(code)}:8 [{self.who}]")
            self.on_stats(struct.unpack("<q", payload)[0])
        elif code == Msg.ERROR_EXIT:
            val = _I32.unpack(payload)[0] if len(payload) == 4 else 0
            if self.protocol >= 31 and self.mplex_out:
                try:  # rsync acknowledges with an empty MSG_ERROR_EXIT
                    self.send_msg(Msg.ERROR_EXIT, b"")
                    self.flush()
                except (TransportError, OSError):
                    pass
            self.remote_exit = val
            raise RemoteExit(val, None)
        else:  # pragma: no cover - FrameDecoder only yields known codes
            raise WireError(f"unexpected tag {int(code)} [{self.who}]")

    def _msg_ndx(self, ndx: int) -> int:
        """flist_for_ndx(): a file index in a message must name a file of the list (a
        negative one would pick a file from the end of a Python list)."""
        limit = self.ndx_limit
        if ndx < 0 or (limit is not None and ndx >= limit):
            top = "?" if limit is None else str(limit - 1)
            raise WireError(f"File-list index {ndx} not in 0 - {top} [{self.who}]",
                            RERR_PROTOCOL)
        return ndx if self.ndx_from_wire is None else self.ndx_from_wire(ndx)

    # ----------------------------------------------------------------- reads
    def _need(self, n: int) -> None:
        while len(self._data) - self._pos < n:
            if self._pos and self._pos > (1 << 20):
                del self._data[:self._pos]
                self._pos = 0
            self._pump()

    def read(self, n: int) -> bytes:
        self._need(n)
        out = bytes(self._data[self._pos:self._pos + n])
        self._advance(n)
        return out

    def _advance(self, n: int) -> None:
        self._pos += n
        if self._pos == len(self._data):
            self._data.clear()
            self._pos = 0

    def read_some(self, limit: int = 1 << 20) -> bytes:
        """At least one byte of in-band data: whatever is buffered (up to ``limit``)."""
        self._need(1)
        n = min(limit, len(self._data) - self._pos)
        out = bytes(self._data[self._pos:self._pos + n])
        self._advance(n)
        return out

    def unread(self, data: bytes) -> None:
        """Give back bytes a sans-I/O decoder took but did not consume."""
        if data:
            self._data[self._pos:self._pos] = data

    def read_int(self) -> int:
        self._need(4)
        v = _I32.unpack_from(self._data, self._pos)[0]
        self._advance(4)
        return v

    def read_byte(self) -> int:
        self._need(1)
        v = self._data[self._pos]
        self._advance(1)
        return v

    def read_shortint(self) -> int:
        self._need(2)
        v = _U16.unpack_from(self._data, self._pos)[0]
        self._advance(2)
        return v

    def _read_var(self, decode: Callable[[bytes], tuple[int, int]], maxlen: int) -> int:
        while True:
            avail = bytes(self._data[self._pos:self._pos + maxlen])
            try:
                v, used = decode(avail)
            except TruncatedError:
                if len(avail) >= maxlen:
                    raise
                self._need(len(avail) + 1)
                continue
            self._advance(used)
            return v

    def read_varint(self) -> int:
        return self._read_var(lambda b: decode_varint(b, 0), 5)

    def read_varlong(self, min_bytes: int) -> int:
        return self._read_var(lambda b: decode_varlong(b, 0, min_bytes), 9)

    def read_varint30(self) -> int:
        return self.read_varint() if self.protocol >= 30 else self.read_int()

    def read_longint(self) -> int:
        v = self.read_int()
        if v != -1:
            return v
        return struct.unpack("<q", self.read(8))[0]

    def read_varlong30(self, min_bytes: int) -> int:
        return self.read_varlong(min_bytes) if self.protocol >= 30 else self.read_longint()

    def read_vstring(self, max_len: int = 4096) -> bytes:
        n = self.read_byte()
        if n & 0x80:
            n = (n & 0x7F) * 0x100 + self.read_byte()
        if n >= max_len:
            raise WireError(f"over-long vstring received ({n} > {max_len})", RERR_PROTOCOL)
        return self.read(n)

    def read_ndx(self) -> int:
        while True:
            pos = self._pos
            try:  # decoded in place: an index is at most 6 bytes
                v, end = self.ndx_in.decode(self._data, pos)
            except TruncatedError:
                have = len(self._data) - pos
                if have >= 6:
                    raise
                self._need(have + 1)
                continue
            self._advance(end - pos)
            return v

    def read_struct(self, st: struct.Struct) -> tuple[Any, ...]:
        """``st``'s fields, unpacked in place from the in-band data."""
        self._need(st.size)
        v = st.unpack_from(self._data, self._pos)
        self._advance(st.size)
        return v

    # ---------------------------------------------------------------- writes
    def write(self, data: bytes | bytearray | memoryview) -> None:
        out = self._out
        if not self.mplex_out:
            out += data
        elif data:
            # Output goes out in full frames, as rsync's buffer does: a frame per write
            # would cost 4 header bytes per token.
            fh = self._fh
            if fh < 0:
                fh = self._fh = len(out)
                out += _HOLE
            if len(data) < fh + _FRAME_END - len(out):
                out += data
            else:
                self._write_frames(data)
        if len(out) >= (1 << 18):
            self._flush_out(wait=True, keep=1 << 16)

    def write3(self, a: bytes, b: bytes, c: bytes) -> None:
        """write(a), write(b), write(c) in one call (a small file's token header, data
        and end): the same bytes in the same frames."""
        out = self._out
        fh = self._fh
        if fh >= 0 and self.mplex_out and len(a) + len(b) + len(c) < fh + _FRAME_END - len(out):
            out += a
            out += b
            out += c
            if len(out) >= (1 << 18):
                self._flush_out(wait=True, keep=1 << 16)
            return
        write = self.write
        write(a)
        write(b)
        write(c)

    def _write_frames(self, data: bytes | bytearray | memoryview) -> None:
        """Fill the open frame, add whole frames, open one for the rest (if any)."""
        out = self._out
        fh = self._fh
        with memoryview(data) as view:
            n = len(view)
            pos = fh + _FRAME_END - len(out)
            out += view[:pos]
            out[fh:fh + 4] = _DATA_FRAME_HEAD
            while n - pos >= OUT_FRAME:
                out += _DATA_FRAME_HEAD
                out += view[pos:pos + OUT_FRAME]
                pos += OUT_FRAME
            if pos < n:
                self._fh = len(out)
                out += _HOLE
                out += view[pos:]
            else:
                self._fh = -1

    def discard_output(self) -> None:
        """Drop whatever is not sent yet (a peer that gave up reading)."""
        self._out.clear()
        self._fh = -1

    def _frame_output(self) -> None:
        """Close the open frame: what was written so far can be sent."""
        fh = self._fh
        if fh >= 0:
            out = self._out
            n = len(out) - fh - 4
            if n:
                _U32.pack_into(out, fh, _DATA_TAG | n)
            else:
                del out[fh:]
            self._fh = -1

    def write_int(self, v: int) -> None:
        self.write(encode_int32(v))

    def write_byte(self, v: int) -> None:
        self.write(bytes((v & 0xFF,)))

    def write_shortint(self, v: int) -> None:
        self.write(encode_shortint(v))

    def write_varint(self, v: int) -> None:
        self.write(encode_varint(v))

    def write_varlong(self, v: int, min_bytes: int) -> None:
        self.write(encode_varlong(v, min_bytes))

    def write_vstring(self, s: bytes) -> None:
        self.write(encode_vstring(s))

    def write_ndx(self, ndx: int) -> None:
        self.write(self.ndx_out.encode(ndx))

    def send_msg(self, code: int, payload: bytes) -> None:
        if not self.mplex_out:
            return
        self._frame_output()  # data and messages leave in the order they were written
        self._out += encode_frame(code, payload)

    def flush(self) -> None:
        self._frame_output()
        self._flush_out(wait=True)

    def _sendable(self) -> int:
        """Bytes of output that can go now (not the open frame)."""
        fh = self._fh
        return fh if fh >= 0 else len(self._out)

    def _write_some(self) -> None:
        end = min(self._sendable(), 1 << 20)
        if not end:
            return
        if self.bwlimit:
            end = min(end, max(self.bwlimit * 128, 512))  # options.c bwlimit_writemax
        try:
            with memoryview(self._out) as view:
                done = os.write(self.conn.wfd, view[:end])
        except BlockingIOError:
            return
        except OSError as exc:
            if self.remote_exit is not None:
                raise RemoteExit(self.remote_exit, None) from None
            code = max(RERR_STREAMIO, self.conn.exit_status(timeout=2.0) or 0)
            raise TransportError(code, f"[{self.who}] write error: {exc.strerror} "
                                 f"({exc.errno})") from None
        self.conn.bytes_written += done
        del self._out[:done]
        if self._fh >= 0:
            self._fh -= done
        if self.bwlimit:
            self._sleep_for_bwlimit(done)

    def _sleep_for_bwlimit(self, written: int) -> None:
        """io.c sleep_for_bwlimit(): pay for what was written with time, in sleeps of
        at least a tenth of a second (shorter ones the kernel rounds up)."""
        rate = self.bwlimit * 1024  # bytes per second
        owed = self._bw_owed + written
        now = time.monotonic()
        if self._bw_prior:
            owed = max(0, owed - int((now - self._bw_prior) * rate))
        pause = owed / rate
        if pause < 0.1:
            self._bw_owed, self._bw_prior = owed, now
            return
        time.sleep(pause)
        self._bw_prior = time.monotonic()
        self._bw_owed = int((pause - (self._bw_prior - now)) * rate)

    def _flush_out(self, wait: bool, keep: int = 0) -> None:
        while self._sendable() > keep:
            if not wait:
                self._write_some()
                return
            r, w = self._wait(not self._eof, True)
            if w:
                self._write_some()
            if r and not self._read_raw():
                pass  # EOF: keep trying to write; a broken pipe reports itself
