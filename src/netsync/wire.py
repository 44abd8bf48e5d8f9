"""Sans-I/O codecs for rsync's wire format (io.c, token.c): bytes in, typed values out.

Nothing here touches a socket.  Encoders return ``bytes``; decoders take a
buffer and a position and return ``(value, new_position)``, raising
:class:`TruncatedError` when the buffer ends early and :class:`WireError` when
the bytes are invalid.  :class:`Reader` wraps that for incremental use, and
:class:`FrameDecoder` turns the multiplexed stream into events.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from enum import IntEnum
from typing import NamedTuple

from .checksum import SumHead
from .errors import RERR_PROTOCOL, RERR_STREAMIO, RsyncError

Buffer = bytes | bytearray | memoryview


class WireError(RsyncError):
    """Malformed data from the peer (exit code 12 unless told otherwise)."""

    def __init__(self, message: str, code: int = RERR_STREAMIO) -> None:
        super().__init__(code, message)


class TruncatedError(WireError):
    """The buffer ended in the middle of a value."""


def _need(buf: Buffer, pos: int, n: int) -> None:
    if pos < 0 or pos + n > len(buf):
        raise TruncatedError(f"need {n} bytes at offset {pos}, have {max(0, len(buf) - pos)}")


# ---------------------------------------------------------------------------
# Fixed-size integers

_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U16 = struct.Struct("<H")


def encode_int32(x: int) -> bytes:
    """write_int(): 4 bytes little-endian; accepts -2**31..2**32-1 (C's cast)."""
    if not -(1 << 31) <= x < (1 << 32):
        raise ValueError(f"int32 out of range: {x}")
    return _U32.pack(x & 0xFFFFFFFF)


def decode_int32(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    _need(buf, pos, 4)
    return _I32.unpack_from(buf, pos)[0], pos + 4


def encode_uint32(x: int) -> bytes:
    return _U32.pack(x)


def decode_uint32(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    _need(buf, pos, 4)
    return _U32.unpack_from(buf, pos)[0], pos + 4


def encode_int64(x: int) -> bytes:
    return _I64.pack(x)


def decode_int64(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    _need(buf, pos, 8)
    return _I64.unpack_from(buf, pos)[0], pos + 8


def encode_shortint(x: int) -> bytes:
    """write_shortint(): unsigned 16-bit little-endian (item flags from 29)."""
    return _U16.pack(x & 0xFFFF)


def decode_shortint(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    _need(buf, pos, 2)
    return _U16.unpack_from(buf, pos)[0], pos + 2


def encode_byte(x: int) -> bytes:
    return bytes((x & 0xFF,))


def decode_byte(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    _need(buf, pos, 1)
    return buf[pos], pos + 1


# ---------------------------------------------------------------------------
# Variable-length integers (write_varint / write_varlong / longint)

# io.c int_byte_extra[]: extra bytes that follow, indexed by first byte / 4.
_INT_BYTE_EXTRA = bytes([0] * 32 + [1] * 16 + [2] * 8 + [3] * 4 + [4, 4, 5, 6])


def encode_varint(x: int) -> bytes:
    """write_varint(): a signed 32-bit value in 1-5 bytes."""
    if 0 <= x < 0x4000:  # the common cases, without the byte loop below
        return bytes((x,)) if x < 0x80 else bytes((0x80 | x >> 8, x & 0xFF))
    if not -(1 << 31) <= x < (1 << 32):
        raise ValueError(f"varint out of range: {x}")
    b = bytearray(5)
    b[1:5] = _U32.pack(x & 0xFFFFFFFF)
    cnt = 4
    while cnt > 1 and b[cnt] == 0:
        cnt -= 1
    bit = 1 << (7 - cnt + 1)
    if b[cnt] >= bit:
        cnt += 1
        b[0] = ~(bit - 1) & 0xFF
    elif cnt > 1:
        b[0] = (b[cnt] | ~(bit * 2 - 1)) & 0xFF
    else:
        b[0] = b[1]
    return bytes(b[:cnt])


def decode_varint(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    _need(buf, pos, 1)
    ch = buf[pos]
    pos += 1
    extra = _INT_BYTE_EXTRA[ch // 4]
    if extra:
        if extra >= 5:
            raise WireError("Overflow in read_varint()")
        _need(buf, pos, extra)
        bit = 1 << (8 - extra)
        raw = bytes(buf[pos : pos + extra]) + bytes((ch & (bit - 1),))
        pos += extra
        raw = raw.ljust(4, b"\0")[:4]
    else:
        raw = bytes((ch, 0, 0, 0))
    return _I32.unpack(raw)[0], pos


def encode_varlong(x: int, min_bytes: int) -> bytes:
    """write_varlong(): a signed 64-bit value in at least ``min_bytes`` bytes."""
    if not -(1 << 63) <= x < (1 << 64):
        raise ValueError(f"varlong out of range: {x}")
    b = bytearray(9)
    b[1:9] = struct.pack("<Q", x & 0xFFFFFFFFFFFFFFFF)
    cnt = 8
    while cnt > min_bytes and b[cnt] == 0:
        cnt -= 1
    bit = 1 << (7 - cnt + min_bytes)
    if b[cnt] >= bit:
        cnt += 1
        b[0] = ~(bit - 1) & 0xFF
    elif cnt > min_bytes:
        b[0] = (b[cnt] | ~(bit * 2 - 1)) & 0xFF
    else:
        b[0] = b[cnt]
    if cnt - min_bytes > 6:
        # rsync would emit this, but no reader (its own included) can decode it.
        raise ValueError(f"varlong {x} does not fit with min_bytes={min_bytes}")
    return bytes(b[:cnt])


def decode_varlong(buf: Buffer, pos: int = 0, min_bytes: int = 1) -> tuple[int, int]:
    _need(buf, pos, min_bytes)
    first = buf[pos]
    u = bytearray(9)
    u[: min_bytes - 1] = buf[pos + 1 : pos + min_bytes]
    pos += min_bytes
    extra = _INT_BYTE_EXTRA[first // 4]
    if extra:
        if min_bytes + extra > 9:
            raise WireError("Overflow in read_varlong()")
        _need(buf, pos, extra)
        bit = 1 << (8 - extra)
        u[min_bytes - 1 : min_bytes - 1 + extra] = buf[pos : pos + extra]
        pos += extra
        u[min_bytes + extra - 1] = first & (bit - 1)
    else:
        u[min_bytes - 1] = first
    return struct.unpack_from("<q", u)[0], pos


def encode_longint(x: int) -> bytes:
    """write_longint() (protocol < 30 file sizes): int32, or -1 + int64."""
    if 0 <= x <= 0x7FFFFFFF:
        return _U32.pack(x)
    return b"\xff\xff\xff\xff" + _I64.pack(x)


def decode_longint(buf: Buffer, pos: int = 0) -> tuple[int, int]:
    num, pos = decode_int32(buf, pos)
    if num != -1:
        return num, pos
    return decode_int64(buf, pos)


def encode_varint30(x: int, protocol: int) -> bytes:
    return encode_int32(x) if protocol < 30 else encode_varint(x)


def decode_varint30(buf: Buffer, pos: int, protocol: int) -> tuple[int, int]:
    return decode_int32(buf, pos) if protocol < 30 else decode_varint(buf, pos)


def encode_varlong30(x: int, min_bytes: int, protocol: int) -> bytes:
    return encode_longint(x) if protocol < 30 else encode_varlong(x, min_bytes)


def decode_varlong30(buf: Buffer, pos: int, min_bytes: int, protocol: int) -> tuple[int, int]:
    return decode_longint(buf, pos) if protocol < 30 else decode_varlong(buf, pos, min_bytes)


def encode_vstring(s: bytes) -> bytes:
    """write_vstring(): 1 or 2 length bytes (high bit flags the 2-byte form)."""
    n = len(s)
    if n > 0x7FFF:
        raise ValueError(f"attempting to send over-long vstring ({n} > {0x7FFF})")
    if n > 0x7F:
        return bytes((n // 0x100 + 0x80, n & 0xFF)) + s
    return bytes((n,)) + s


def decode_vstring(buf: Buffer, pos: int = 0, max_len: int = 0x7FFF) -> tuple[bytes, int]:
    n, pos = decode_byte(buf, pos)
    if n & 0x80:
        lo, pos = decode_byte(buf, pos)
        n = (n & 0x7F) * 0x100 + lo
    if n > max_len:
        raise WireError(f"over-long vstring received ({n} > {max_len})")
    _need(buf, pos, n)
    return bytes(buf[pos : pos + n]), pos + n


# ---------------------------------------------------------------------------
# File-list indexes (write_ndx / read_ndx)

NDX_DONE = -1
NDX_FLIST_EOF = -2
NDX_DEL_STATS = -3
NDX_FLIST_OFFSET = -101


class NdxEncoder:
    """write_ndx(): delta-coded indexes from protocol 30, int32 before.

    One instance per direction; it remembers the previous index like rsync's
    static prev_positive/prev_negative.
    """

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.prev_positive = -1
        self.prev_negative = 1

    def encode(self, ndx: int) -> bytes:
        if self.protocol < 30:
            return encode_int32(ndx)
        out = bytearray()
        if ndx >= 0:
            diff = ndx - self.prev_positive
            self.prev_positive = ndx
        elif ndx == NDX_DONE:
            return b"\0"
        else:
            out.append(0xFF)
            ndx = -ndx
            diff = ndx - self.prev_negative
            self.prev_negative = ndx
        if 0 < diff < 0xFE:
            out.append(diff)
        elif diff < 0 or diff > 0x7FFF:
            out += bytes(
                (0xFE, (ndx >> 24) | 0x80, ndx & 0xFF, (ndx >> 8) & 0xFF, (ndx >> 16) & 0xFF)
            )
        else:
            out += bytes((0xFE, diff >> 8, diff & 0xFF))
        return bytes(out)


class NdxDecoder:
    """read_ndx(): the receiving half of :class:`NdxEncoder`.

    ``decode`` only commits its state change when the whole index was present,
    so a TruncatedError can be retried with more data.
    """

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.prev_positive = -1
        self.prev_negative = 1

    def decode(self, buf: Buffer, pos: int = 0) -> tuple[int, int]:
        if self.protocol < 30:
            return decode_int32(buf, pos)
        b, pos = decode_byte(buf, pos)
        if 0 < b < 0xFE:  # the usual case: the next file, one byte
            unum = b + self.prev_positive
            if unum > 0x7FFFFFFF:
                raise WireError(f"Invalid file index: {unum}", RERR_PROTOCOL)
            self.prev_positive = unum
            return unum, pos
        negative = False
        if b == 0xFF:
            b, pos = decode_byte(buf, pos)
            negative = True
        elif b == 0:
            return NDX_DONE, pos
        prev = self.prev_negative if negative else self.prev_positive
        if b == 0xFE:
            _need(buf, pos, 2)
            b0, b1 = buf[pos], buf[pos + 1]
            pos += 2
            if b0 & 0x80:
                _need(buf, pos, 2)
                unum = b1 | (buf[pos] << 8) | (buf[pos + 1] << 16) | ((b0 & 0x7F) << 24)
                pos += 2
            else:
                unum = ((b0 << 8) + b1 + prev) & 0xFFFFFFFF
        else:
            unum = (b + prev) & 0xFFFFFFFF
        if unum > 0x7FFFFFFF:
            raise WireError(f"Invalid file index: {unum}", RERR_PROTOCOL)
        if negative:
            self.prev_negative = unum
            return -unum, pos
        self.prev_positive = unum
        return unum, pos


# ---------------------------------------------------------------------------
# Multiplexed frames (io.c mplex_write / read_a_msg)

MPLEX_BASE = 7
MAX_FRAME_LEN = 0xFFFFFF  # 24-bit length field
BIGPATHBUFLEN = 4096 + 1024  # rsync's buffer for text messages (MAXPATHLEN 4096)


class Msg(IntEnum):
    DATA = 0
    ERROR_XFER = 1
    INFO = 2
    ERROR = 3
    WARNING = 4
    ERROR_SOCKET = 5
    LOG = 6
    CLIENT = 7
    ERROR_UTF8 = 8
    REDO = 9
    STATS = 10
    IO_ERROR = 22
    IO_TIMEOUT = 33
    NOOP = 42
    ERROR_EXIT = 86
    SUCCESS = 100
    DELETED = 101
    NO_SEND = 102


# Payload sizes rsync insists on (read_a_msg); STATS is an int64, SUCCESS may
# carry dev/ino (20 bytes) between local siblings.
_FIXED_LEN: dict[Msg, tuple[int, ...]] = {
    Msg.REDO: (4,),
    Msg.STATS: (8,),
    Msg.IO_ERROR: (4,),
    Msg.IO_TIMEOUT: (4,),
    Msg.NOOP: (0,),
    Msg.ERROR_EXIT: (0, 4),
    Msg.SUCCESS: (4, 20),
    Msg.NO_SEND: (4,),
}
TEXT_MSGS = frozenset(
    {Msg.ERROR_XFER, Msg.INFO, Msg.ERROR, Msg.WARNING, Msg.ERROR_SOCKET, Msg.LOG, Msg.CLIENT,
     Msg.ERROR_UTF8}
)


def encode_frame(code: int, payload: Buffer = b"") -> bytes:
    """One multiplexed frame: header ((MPLEX_BASE + code) << 24 | len) + payload."""
    n = len(payload)
    if n > MAX_FRAME_LEN:
        raise ValueError(f"frame payload too long: {n}")
    return _U32.pack(((MPLEX_BASE + int(code)) << 24) | n) + bytes(payload)


def encode_data(payload: Buffer, max_frame: int = MAX_FRAME_LEN) -> bytes:
    """Wrap a byte stream in as many MSG_DATA frames as needed."""
    out = bytearray()
    view = memoryview(payload)
    for i in range(0, len(view), max_frame):
        out += encode_frame(Msg.DATA, view[i : i + max_frame])
    return bytes(out)


def encode_msg_int(code: int, value: int) -> bytes:
    return encode_frame(code, encode_int32(value))


class DataEvent(NamedTuple):
    """Bytes of the in-band stream (possibly part of a MSG_DATA frame)."""

    data: bytes


class MessageEvent(NamedTuple):
    """An out-of-band message; ``value`` is the decoded int for int-carrying codes."""

    code: Msg
    payload: bytes

    @property
    def value(self) -> int | None:
        if len(self.payload) >= 4 and self.code not in TEXT_MSGS and self.code != Msg.DELETED:
            if self.code == Msg.STATS:
                return _I64.unpack_from(self.payload)[0]
            return _I32.unpack_from(self.payload)[0]
        return None

    @property
    def text(self) -> bytes:
        return self.payload


FrameEvent = DataEvent | MessageEvent


class FrameDecoder:
    """Incremental demultiplexer: ``feed(bytes)``, then iterate events.

    DATA payload is emitted as it arrives (a frame may come out as several
    DataEvents); other messages are buffered whole.  A hostile peer cannot make
    us buffer more than ``max_msg_len`` bytes for a message, nor send a DATA
    frame longer than ``max_data_len``; empty DATA frames (keep-alives) are
    skipped.  Invalid input raises :class:`WireError`.
    """

    def __init__(
        self,
        max_data_len: int = MAX_FRAME_LEN,
        max_msg_len: int = BIGPATHBUFLEN - 1,
        allowed: frozenset[Msg] | None = None,
    ) -> None:
        self._buf = bytearray()
        self._data_left = 0  # bytes of the current DATA frame still to come
        self.max_data_len = max_data_len
        self.max_msg_len = max_msg_len
        self.allowed = allowed
        self.frames = 0

    def feed(self, data: Buffer) -> None:
        self._buf += data

    def __iter__(self) -> Iterator[FrameEvent]:
        return self.events()

    def events(self) -> Iterator[FrameEvent]:
        while True:
            ev = self.next_event()
            if ev is None:
                return
            yield ev

    def next_event(self) -> FrameEvent | None:
        """The next complete event, or None if more bytes are needed."""
        buf = self._buf
        while True:
            if self._data_left:
                if not buf:
                    return None
                n = min(self._data_left, len(buf))
                chunk = bytes(buf[:n])
                del buf[:n]
                self._data_left -= n
                return DataEvent(chunk)
            if len(buf) < 4:
                return None
            hdr = _U32.unpack_from(buf)[0]
            length = hdr & 0xFFFFFF
            tag = (hdr >> 24) - MPLEX_BASE
            try:
                code = Msg(tag)
            except ValueError:
                raise WireError(f"unexpected tag {tag}") from None
            if self.allowed is not None and code not in self.allowed:
                raise WireError(f"unexpected tag {tag}")
            if code == Msg.DATA:
                if length > self.max_data_len:
                    raise WireError(f"multiplexing overflow {tag}:{length}")
                del buf[:4]
                self.frames += 1
                self._data_left = length
                continue  # empty frame = keep-alive
            fixed = _FIXED_LEN.get(code)
            if fixed is not None and length not in fixed:
                raise WireError(f"invalid multi-message {tag}:{length}")
            if length > self.max_msg_len:
                raise WireError(f"multiplexing overflow {tag}:{length}")
            if len(buf) < 4 + length:
                return None
            payload = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            self.frames += 1
            return MessageEvent(code, payload)

    @property
    def pending(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf)

    def close(self) -> None:
        """Declare end of input; raises TruncatedError inside a frame."""
        if self._data_left or self._buf:
            raise TruncatedError("connection closed in the middle of a multiplexed frame")


# ---------------------------------------------------------------------------
# Sum head, block sums, simple tokens


def encode_sum_head(head: SumHead, protocol: int) -> bytes:
    """write_sum_head(): s2length is only sent from protocol 27."""
    parts = [encode_int32(head.count), encode_int32(head.blength)]
    if protocol >= 27:
        parts.append(encode_int32(head.s2length))
    parts.append(encode_int32(head.remainder))
    return b"".join(parts)


def decode_sum_head(
    buf: Buffer,
    pos: int,
    protocol: int,
    *,
    xfer_sum_len: int = 16,
    csum_length: int = 2,
) -> tuple[SumHead, int]:
    """read_sum_head() with rsync's validation of every field."""
    max_blength = (1 << 29) if protocol < 30 else (1 << 17)
    count, pos = decode_int32(buf, pos)
    if count < 0:
        raise WireError(f"Invalid checksum count {count}", RERR_PROTOCOL)
    blength, pos = decode_int32(buf, pos)
    if blength < 0 or blength > max_blength:
        raise WireError(f"Invalid block length {blength}", RERR_PROTOCOL)
    if count and blength == 0:
        raise WireError("Invalid zero block length", RERR_PROTOCOL)
    if protocol >= 27:
        s2length, pos = decode_int32(buf, pos)
    else:
        s2length = csum_length
    if s2length < 0 or s2length > xfer_sum_len:
        raise WireError(f"Invalid checksum length {s2length}", RERR_PROTOCOL)
    remainder, pos = decode_int32(buf, pos)
    if remainder < 0 or remainder > blength:
        raise WireError(f"Invalid remainder length {remainder}", RERR_PROTOCOL)
    return SumHead(count, blength, s2length, remainder), pos


def encode_block_sums(sum1: Sequence[int], strong: Buffer, s2length: int) -> bytes:
    """count x (int32 weak sum + s2length bytes of strong sum)."""
    out = bytearray()
    for i, s in enumerate(sum1):
        out += _U32.pack(int(s) & 0xFFFFFFFF)
        out += strong[i * s2length : (i + 1) * s2length]
    return bytes(out)


def decode_block_sums(
    buf: Buffer, pos: int, count: int, s2length: int
) -> tuple[list[int], bytes, int]:
    """Inverse of encode_block_sums: (weak sums as uint32, strong sums concatenated, pos)."""
    _need(buf, pos, count * (4 + s2length))
    sum1: list[int] = []
    strong = bytearray()
    for _ in range(count):
        sum1.append(_U32.unpack_from(buf, pos)[0])
        strong += buf[pos + 4 : pos + 4 + s2length]
        pos += 4 + s2length
    return sum1, bytes(strong), pos


class TokenEnd:
    """Marker returned by decode_token for the terminating 0 token."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = TokenEnd()
Token = bytes | int | TokenEnd


def encode_token(token: bytes | int | None) -> bytes:
    """simple_send_token(): bytes -> literal run(s) of <= 32 KiB; int k -> block k; None -> end."""
    if token is None:
        return b"\0\0\0\0"
    if isinstance(token, int):
        if token < 0:
            raise ValueError("block index must be >= 0")
        return encode_int32(-(token + 1))
    out = bytearray()
    view = memoryview(token)
    for i in range(0, len(view), 32 * 1024):
        chunk = view[i : i + 32 * 1024]
        out += _U32.pack(len(chunk))
        out += chunk
    return bytes(out)


def decode_token(buf: Buffer, pos: int = 0, max_literal: int = 1 << 24) -> tuple[Token, int]:
    """simple_recv_token(): a literal run (bytes), a block index (int) or END."""
    n, pos = decode_int32(buf, pos)
    if n == 0:
        return END, pos
    if n < 0:
        return -(n + 1), pos
    if n > max_literal:
        raise WireError(f"literal token too long: {n}", RERR_PROTOCOL)
    _need(buf, pos, n)
    return bytes(buf[pos : pos + n]), pos + n


# ---------------------------------------------------------------------------
# A cursor over an in-memory stream


class Reader:
    """Read typed values from a growing buffer.

    Every read either succeeds and advances, or raises TruncatedError and
    leaves the position unchanged, so a caller can ``feed`` more and retry.
    """

    def __init__(self, data: Buffer = b"", protocol: int = 32) -> None:
        self.buf = bytearray(data)
        self.pos = 0
        self.protocol = protocol

    def feed(self, data: Buffer) -> None:
        if self.pos > 65536 and self.pos * 2 > len(self.buf):
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self.buf)

    def bytes(self, n: int) -> bytes:
        _need(self.buf, self.pos, n)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def byte(self) -> int:
        v, self.pos = decode_byte(self.buf, self.pos)
        return v

    def int32(self) -> int:
        v, self.pos = decode_int32(self.buf, self.pos)
        return v

    def uint32(self) -> int:
        v, self.pos = decode_uint32(self.buf, self.pos)
        return v

    def int64(self) -> int:
        v, self.pos = decode_int64(self.buf, self.pos)
        return v

    def shortint(self) -> int:
        v, self.pos = decode_shortint(self.buf, self.pos)
        return v

    def varint(self) -> int:
        v, self.pos = decode_varint(self.buf, self.pos)
        return v

    def varlong(self, min_bytes: int) -> int:
        v, self.pos = decode_varlong(self.buf, self.pos, min_bytes)
        return v

    def longint(self) -> int:
        v, self.pos = decode_longint(self.buf, self.pos)
        return v

    def varint30(self) -> int:
        v, self.pos = decode_varint30(self.buf, self.pos, self.protocol)
        return v

    def varlong30(self, min_bytes: int) -> int:
        v, self.pos = decode_varlong30(self.buf, self.pos, min_bytes, self.protocol)
        return v

    def vstring(self, max_len: int = 0x7FFF) -> bytes:
        v, self.pos = decode_vstring(self.buf, self.pos, max_len)
        return v

    def ndx(self, decoder: NdxDecoder) -> int:
        v, self.pos = decoder.decode(self.buf, self.pos)
        return v

    def sum_head(self, **kw: int) -> SumHead:
        v, self.pos = decode_sum_head(self.buf, self.pos, self.protocol, **kw)
        return v

    def token(self) -> Token:
        v, self.pos = decode_token(self.buf, self.pos)
        return v
