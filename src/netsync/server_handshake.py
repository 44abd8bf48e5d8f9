"""Sans-I/O start of rsync's binary protocol, server side (compat.c setup_protocol, am_server).

Order on the wire, server view:

1. (remote shell only) write our 4-byte LE protocol version, read the
   client's; the smaller one is used.  Over a daemon the versions came with
   the ``@RSYNCD:`` greeting and this step is skipped.
2. protocol >= 30: write the compat flags as a varint, built from the
   client's ``-e.LETTERS`` capabilities as rsync's server does, incremental
   recursion ('i') included when the options allow it.
3. With CF_VARINT_FLIST_FLAGS ('v'): write our checksum-name list (unless
   --checksum-choice) and, with -z, our compression list (unless
   --compress-choice), strongest first and including "none" as a server
   does; then read the client's and pick our best name it also listed.
4. Write the 4-byte checksum seed.

:class:`ServerHandshake` is fed the client's bytes and hands back the bytes to
send; :func:`run_server_handshake` drives it over a Connection.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from netsync.errors import RERR_PROTOCOL
from netsync.transport import TransportError
from netsync.transport.handshake import (
    CF_AVOID_XATTR_OPTIM,
    CF_CHKSUM_SEED_FIX,
    CF_ID0_NAMES,
    CF_INC_RECURSE,
    CF_INPLACE_PARTIAL_DIR,
    CF_SAFE_FLIST,
    CF_SYMLINK_ICONV,
    CF_SYMLINK_TIMES,
    CF_VARINT_FLIST_FLAGS,
    COMPRESS_NAMES,
    MAX_PROTOCOL,
    MIN_PROTOCOL,
    RSYNC_MAX_PROTOCOL,
    RSYNC_MIN_PROTOCOL,
    Negotiated,
    _StringNegotiation,
)

if TYPE_CHECKING:
    from netsync.transport import Connection

__all__ = ["ServerHandshake", "run_server_handshake", "server_compat_flags",
           "server_name_list"]


# compat.c: capability letter -> compat flag a server sets when the client offers it.
_CAP_FLAGS = {
    "f": CF_SAFE_FLIST, "x": CF_AVOID_XATTR_OPTIM, "C": CF_CHKSUM_SEED_FIX,
    "I": CF_INPLACE_PARTIAL_DIR, "u": CF_ID0_NAMES, "v": CF_VARINT_FLIST_FLAGS,
}


def server_compat_flags(caps: str, inc_recurse: bool = False) -> int:
    """The compat flags rsync's server sends for client capabilities ``caps``.

    ``inc_recurse``: the options allow incremental recursion (set_allow_inc_recurse());
    it is used when the client offers 'i'.  Symlink times and symlink iconv are
    always offered, as a Linux rsync does.
    """
    flags = CF_SYMLINK_TIMES | CF_SYMLINK_ICONV
    if inc_recurse and "i" in caps:
        flags |= CF_INC_RECURSE
    for letter, bit in _CAP_FLAGS.items():
        if letter in caps:
            flags |= bit
    if "V" in caps:  # pre-release 3.2.0 spelling of 'v'
        flags |= CF_VARINT_FLIST_FLAGS
    return flags


def server_name_list(env_value: str | None, known: tuple[str, ...]) -> list[str]:
    """Our list as a server: the part of $RSYNC_*_LIST after '&' if any, else ``known``.

    A server keeps "none" in its default list (get_default_nno_list with am_server).
    """
    if env_value and env_value.strip():
        part = env_value.split("&", 1)[1] if "&" in env_value else env_value
        out: list[str] = []
        for word in part.split():
            low = word.lower()
            low = "xxh64" if low == "xxhash" else low
            if low in known and low not in out:
                out.append(low)
        if out:
            return out
    return list(known)


class ServerHandshake(_StringNegotiation):
    """The server side of setup_protocol(), fed with bytes from the client.

    ``caps`` are the letters after "e." in the client's compact flags (None
    when the client sent none, as rsync < 3.0 and openrsync do).
    ``daemon_protocol`` skips the binary version exchange (the @RSYNCD
    greeting settled it; ``remote_protocol`` is then the client's).
    """

    _side, _peer, _empty_list = "Server", "Client", ""  # the negotiation error's labels

    def __init__(self, protocol: int = MAX_PROTOCOL, *, caps: str | None = None,
                 checksum_choice: str | None = None, compress: bool = False,
                 compress_choice: str | None = None, checksum_seed: int | None = None,
                 daemon_protocol: int | None = None, remote_protocol: int | None = None,
                 am_sender: bool = False, inc_recurse: bool = False) -> None:
        from netsync import checksum as cs

        self.our_protocol = min(max(protocol, MIN_PROTOCOL), MAX_PROTOCOL)
        if checksum_choice is not None and checksum_choice.lower() in ("auto", "auto,auto"):
            checksum_choice = None
        if compress_choice is not None and compress_choice.lower() == "auto":
            compress_choice = None
        if compress_choice is not None and compress_choice.lower() == "none":
            compress, compress_choice = False, None
        self.caps = caps or ""
        self.checksum_choice = checksum_choice
        self.compress = compress
        self.compress_choice = compress_choice
        self.am_sender = am_sender
        self.inc_recurse = inc_recurse
        self.seed = checksum_seed if checksum_seed else _fresh_seed()
        self.checksum_names = server_name_list(os.environ.get("RSYNC_CHECKSUM_LIST"),
                                               cs.CHECKSUM_NAMES)
        self.compress_names = server_name_list(os.environ.get("RSYNC_COMPRESS_LIST"),
                                               (*COMPRESS_NAMES, "none"))
        self._buf = bytearray()
        self._out = bytearray()
        self.result: Negotiated | None = None
        self.compat_flags = 0
        self._negotiated_strings = False
        self._checksum: str | None = None
        self._checksum_negotiated = False
        self._compress: str | None = None
        if daemon_protocol is not None:
            self.protocol = min(self.our_protocol, daemon_protocol)
            self.remote_protocol = remote_protocol or daemon_protocol
            self._state = "compat"
        else:
            self.protocol = self.our_protocol
            self.remote_protocol = 0
            self._out += self.our_protocol.to_bytes(4, "little")
            self._state = "version"
        self._advance()

    # -- driving -----------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        self._buf += data
        self._advance()

    @property
    def leftover(self) -> bytes:
        return bytes(self._buf) if self.result is not None else b""

    def bytes_wanted(self) -> int:
        if self._state == "version":
            return max(1, 4 - len(self._buf))
        return 1

    def _advance(self) -> None:
        while self.result is None:
            if not getattr(self, "_step_" + self._state)():
                return

    # -- steps -------------------------------------------------------------

    def _step_version(self) -> bool:
        if len(self._buf) < 4:
            return False
        remote = int.from_bytes(self._buf[:4], "little", signed=True)
        del self._buf[:4]
        self.remote_protocol = remote
        if remote < RSYNC_MIN_PROTOCOL or remote > RSYNC_MAX_PROTOCOL:
            raise TransportError(RERR_PROTOCOL, "protocol version mismatch -- is your shell "
                                 "clean?\n(see the rsync manpage for an explanation)",
                                 bare=True)
        self.protocol = min(self.our_protocol, remote)
        if self.protocol < MIN_PROTOCOL:
            raise TransportError(RERR_PROTOCOL,
                                 f"--protocol must be at least {MIN_PROTOCOL} on the Server.",
                                 bare=True)
        self._state = "compat"
        return True

    def _step_compat(self) -> bool:
        if self.protocol >= 30:
            flags = server_compat_flags(self.caps, self.inc_recurse)
            self.compat_flags = flags
            self._negotiated_strings = bool(flags & CF_VARINT_FLIST_FLAGS)
            if "V" in self.caps and "v" not in self.caps:
                self._out.append(flags & 0xFF)  # the pre-release wrote a single byte
            else:
                from netsync.wire import encode_varint

                self._out += encode_varint(flags)
        self._send_lists()  # negotiate_the_strings(): all ours before reading theirs
        self._state = "checksum_list"
        return True

    def _forced_compress(self, choice: str) -> str | None:
        return choice.lower()

    def _step_compress_list(self) -> bool:
        if not super()._step_compress_list():
            return False
        if self._compress == "none":  # chosen or negotiated: no compression
            self._compress = None
        return True

    def _step_seed(self) -> bool:
        self._out += (self.seed & 0xFFFFFFFF).to_bytes(4, "little")
        p = self.protocol
        seed = self.seed & 0xFFFFFFFF
        seed = seed - (1 << 32) if seed >= 1 << 31 else seed
        assert self._checksum is not None
        self.result = Negotiated(
            protocol=p, remote_protocol=self.remote_protocol, compat_flags=self.compat_flags,
            checksum=self._checksum, checksum_negotiated=self._checksum_negotiated,
            compress=self._compress, checksum_seed=seed, mplex_in=p >= 30, mplex_out=p >= 23)
        return True


def _fresh_seed() -> int:
    """compat.c: time(NULL) ^ (getpid() << 6); we add randomness and never return 0."""
    seed = (int(time.time()) ^ (os.getpid() << 6) ^ int.from_bytes(os.urandom(4), "little"))
    return (seed & 0x7FFFFFFF) or 1


def run_server_handshake(conn: Connection, hs: ServerHandshake) -> Negotiated:
    """Drive ``hs`` over ``conn``, never reading past the handshake."""
    while True:
        out = hs.data_to_send()
        if out:
            conn.write(out)
        if hs.result is not None:
            return hs.result
        data = conn.read(hs.bytes_wanted())
        if not data:
            raise conn.unexpected_close()
        hs.receive_data(data)
