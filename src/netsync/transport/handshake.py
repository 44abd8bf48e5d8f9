"""Sans-I/O start of rsync's binary protocol, client side (compat.c setup_protocol).

Order on the wire, client view:

1. (remote shell only) both sides write a 4-byte LE protocol version; the
   smaller one is used.  Over a daemon the versions came with the
   ``@RSYNCD:`` greeting and this step is skipped.
2. protocol >= 30: the server sends a varint of compat flags.
3. With CF_VARINT_FLIST_FLAGS both sides send their checksum-name list (unless
   --checksum-choice was given) and, with -z, their compression-name list
   (unless --compress-choice), as vstrings, strongest first; each side picks
   its own best name the peer also listed.
4. The server sends the 4-byte checksum seed.

:class:`ClientHandshake` is fed the server's bytes and hands back the bytes
to send; :func:`run_client_handshake` drives it over a Connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from netsync.errors import RERR_PROTOCOL, RERR_STREAMIO, RERR_SYNTAX, RERR_UNSUPPORTED
from netsync.transport import TransportError

if TYPE_CHECKING:
    from netsync.options import Options
    from netsync.transport import Connection

__all__ = [
    "MIN_PROTOCOL", "MAX_PROTOCOL", "CF_INC_RECURSE", "CF_SYMLINK_TIMES", "CF_SYMLINK_ICONV",
    "CF_SAFE_FLIST", "CF_AVOID_XATTR_OPTIM", "CF_CHKSUM_SEED_FIX", "CF_INPLACE_PARTIAL_DIR",
    "CF_VARINT_FLIST_FLAGS", "CF_ID0_NAMES", "COMPRESS_NAMES", "Negotiated", "ClientHandshake",
    "run_client_handshake", "client_name_list", "take_vstring",
]

MIN_PROTOCOL = 27  # oldest protocol netsync speaks
MAX_PROTOCOL = 32
# rsync.h: anything outside this range is garbage, not an old/new rsync.
RSYNC_MIN_PROTOCOL = 20
RSYNC_MAX_PROTOCOL = 40
RSYNC_OLD_PROTOCOL = 25

CF_INC_RECURSE = 1 << 0
CF_SYMLINK_TIMES = 1 << 1
CF_SYMLINK_ICONV = 1 << 2
CF_SAFE_FLIST = 1 << 3
CF_AVOID_XATTR_OPTIM = 1 << 4
CF_CHKSUM_SEED_FIX = 1 << 5
CF_INPLACE_PARTIAL_DIR = 1 << 6
CF_VARINT_FLIST_FLAGS = 1 << 7
CF_ID0_NAMES = 1 << 8

# compat.c valid_compressions_items, strongest first; a client leaves out "none".
COMPRESS_NAMES: tuple[str, ...] = ("zstd", "lz4", "zlibx", "zlib")
_MAX_NSTR = 256  # MAX_NSTR_STRLEN: longest negotiation string rsync reads


class Negotiated(NamedTuple):
    """Everything the start of the protocol settled."""

    protocol: int
    remote_protocol: int
    compat_flags: int  # 0 below protocol 30
    checksum: str  # netsync.checksum name: xxh128 ... md5, md4_old for 27-29 ...
    checksum_negotiated: bool  # chosen by name exchange (vs. implied or --checksum-choice)
    compress: str | None  # None without -z; else zstd, lz4, zlibx, zlib
    checksum_seed: int
    # Multiplexing: server->client frames from the start (protocol >= 23,
    # except a push with a remote --files-from below 31, which starts after the
    # file list); client->server frames from protocol 30.
    mplex_in: bool
    mplex_out: bool

    @property
    def inc_recurse(self) -> bool:
        return bool(self.compat_flags & CF_INC_RECURSE)

    @property
    def varint_flist_flags(self) -> bool:
        return bool(self.compat_flags & CF_VARINT_FLIST_FLAGS)

    @property
    def safe_flist(self) -> bool:
        return bool(self.compat_flags & CF_SAFE_FLIST) or self.protocol >= 31

    @property
    def proper_seed_order(self) -> bool:
        return bool(self.compat_flags & CF_CHKSUM_SEED_FIX)

    @property
    def id0_names(self) -> bool:
        return bool(self.compat_flags & CF_ID0_NAMES)

    @property
    def inplace_partial(self) -> bool:
        return bool(self.compat_flags & CF_INPLACE_PARTIAL_DIR)

    @property
    def symlink_times(self) -> bool:
        """The remote receiver can set symlink times (matters when we send)."""
        return bool(self.compat_flags & CF_SYMLINK_TIMES)

    @property
    def want_xattr_optim(self) -> bool:
        return self.protocol >= 31 and not self.compat_flags & CF_AVOID_XATTR_OPTIM


def take_vstring(buf: bytearray) -> bytes | None:
    """Consume one vstring (io.c read_vstring) from ``buf``; None while incomplete."""
    if not buf:
        return None
    n = buf[0]
    head = 1
    if n & 0x80:
        if len(buf) < 2:
            return None
        n = (n & 0x7F) * 0x100 + buf[1]
        head = 2
    if n >= _MAX_NSTR:
        raise TransportError(RERR_STREAMIO,
                             f"overflow in read_vstring() (len={n}, size={_MAX_NSTR})")
    if len(buf) < head + n:
        return None
    out = bytes(buf[head:head + n])
    del buf[:head + n]
    return out


def client_name_list(env_value: str | None, known: tuple[str, ...]) -> list[str]:
    """Our list to send: $RSYNC_CHECKSUM_LIST / $RSYNC_COMPRESS_LIST if set, else ``known``.

    As in rsync's parse_nni_str on the client: the list ends at '&' (the
    part after it is for the server), unknown names and duplicates drop out.
    """
    if env_value and env_value.strip():
        out: list[str] = []
        for word in env_value.split("&", 1)[0].split():
            low = word.lower()
            low = "xxh64" if low == "xxhash" else low
            if low in known and low not in out:
                out.append(low)
        return out
    return [n for n in known if n != "none"]


class _StringNegotiation:
    """compat.c negotiate_the_strings(), the same at both ends: each side sends its
    checksum and compression lists (unless a choice was forced), then takes the first
    of its own names that the peer also lists.  Subclasses set ``_negotiated_strings``
    in their compat step and name themselves in ``_side``/``_peer`` for the error."""

    _side = "Client"
    _peer = "Server"
    _empty_list = "INVALID"  # what the error shows for an empty list of ours

    def _take_vstring(self) -> bytes | None:
        return take_vstring(self._buf)

    def _send_lists(self) -> None:
        from netsync.wire import encode_vstring

        if not self._negotiated_strings:
            return
        if self.checksum_choice is None:
            self._out += encode_vstring(" ".join(self.checksum_names).encode())
        if self.compress and self.compress_choice is None:
            self._out += encode_vstring(" ".join(self.compress_names).encode())

    def _step_checksum_list(self) -> bool:
        from netsync import checksum as cs

        if self.checksum_choice is not None:
            self._checksum = cs.resolve_checksum(_first_choice(self.checksum_choice),
                                                 self.protocol)
        elif self._negotiated_strings:
            raw = self._take_vstring()
            if raw is None:
                return False
            self._checksum = self._pick("checksum", self.checksum_names, raw)
            self._checksum_negotiated = True
        else:
            self._checksum = cs.implied_checksum(self.protocol)
        self._state = "compress_list"
        return True

    def _forced_compress(self, choice: str) -> str | None:
        return choice

    def _step_compress_list(self) -> bool:
        if not self.compress:
            self._compress = None
        elif self.compress_choice is not None:
            self._compress = self._forced_compress(self.compress_choice)
        elif self._negotiated_strings:
            raw = self._take_vstring()
            if raw is None:
                return False
            self._compress = self._pick("compress", self.compress_names, raw)
        else:
            self._compress = "zlib"
        self._state = "seed"
        return True

    def _pick(self, kind: str, ours: list[str], raw: bytes) -> str:
        from netsync.checksum import parse_name_list

        theirs = {("xxh64" if n.lower() == "xxhash" else n.lower())
                  for n in parse_name_list(raw)}
        for name in ours:
            if name in theirs:
                return name
        raise TransportError(RERR_UNSUPPORTED, "\n".join([
            f"Failed to negotiate a {kind} choice.",
            f"{self._peer} list: {raw.decode('ascii', 'replace')}",
            f"{self._side} list: {' '.join(ours) or self._empty_list}"]), bare=True)


def _check_max(protocol: int) -> None:
    """compat.c: the settled protocol above ours (both ends asked for more)."""
    if protocol > MAX_PROTOCOL:
        raise TransportError(RERR_PROTOCOL,
                             f"--protocol must be no more than {MAX_PROTOCOL} on the Client.",
                             bare=True)


class ClientHandshake(_StringNegotiation):
    """The client side of setup_protocol(), fed with bytes from the server.

    Parameters mirror the client's options: ``protocol`` (--protocol),
    ``checksum_choice`` (--checksum-choice, or None to negotiate),
    ``compress`` (-z given), ``compress_choice`` (--compress-choice/--old-compress/
    --new-compress resolved to a name, or None to negotiate), ``daemon_protocol``
    (the protocol settled by the @RSYNCD greeting; skips the binary version
    exchange), ``allow_inc_recurse``, ``am_sender`` and ``files_from_remote``
    (only for the multiplexing rule).
    """

    def __init__(self, protocol: int = MAX_PROTOCOL, *, checksum_choice: str | None = None,
                 compress: bool = False, compress_choice: str | None = None,
                 daemon_protocol: int | None = None, remote_protocol: int | None = None,
                 allow_inc_recurse: bool = True, am_sender: bool = True,
                 files_from_remote: bool = False,
                 checksum_names: list[str] | None = None,
                 compress_names: list[str] | None = None) -> None:
        from netsync import checksum as cs

        if protocol < MIN_PROTOCOL:
            raise TransportError(RERR_PROTOCOL,
                                 f"--protocol must be at least {MIN_PROTOCOL} on the Client.",
                                 bare=True)
        # (A higher --protocol is sent as it is: compat.c setup_protocol() takes the
        # lower of the two and checks the range of what was settled.)
        self.our_protocol = protocol
        if checksum_choice is not None and checksum_choice.lower() in ("auto", "auto,auto"):
            checksum_choice = None
        if compress_choice is not None and compress_choice.lower() == "auto":
            compress_choice = None
        if compress_choice is not None and compress_choice.lower() == "none":
            compress, compress_choice = False, None
        self.checksum_choice = checksum_choice
        self.compress = compress
        self.compress_choice = compress_choice
        self.allow_inc_recurse = allow_inc_recurse
        self.am_sender = am_sender
        self.files_from_remote = files_from_remote
        self.checksum_names = checksum_names if checksum_names is not None else client_name_list(
            os.environ.get("RSYNC_CHECKSUM_LIST"), cs.CHECKSUM_NAMES)
        self.compress_names = compress_names if compress_names is not None else client_name_list(
            os.environ.get("RSYNC_COMPRESS_LIST"), COMPRESS_NAMES)
        self._buf = bytearray()
        self._out = bytearray()
        self.result: Negotiated | None = None
        self.infos: list[str] = []  # informational lines rsync would print
        self.protocol = protocol
        self.remote_protocol = 0
        self._daemon = daemon_protocol is not None
        if daemon_protocol is not None:
            _check_max(daemon_protocol)
            self.protocol = daemon_protocol
            self.remote_protocol = remote_protocol or daemon_protocol
            self._state = "compat"
        else:
            self._out += protocol.to_bytes(4, "little")
            self._state = "version"
        self.compat_flags = 0
        self._negotiated_strings = False
        self._checksum: str | None = None
        # compat.c: options the negotiated protocol cannot carry end the run there, before
        # anything else is read (Options.protocol_error; None: no check).
        self.option_check: Callable[[int], str | None] | None = None
        self._checksum_negotiated = False
        self._compress: str | None = None
        self._advance()

    @classmethod
    def from_options(cls, opts: Options, am_sender: bool, *,
                     daemon_protocol: int | None = None,
                     remote_protocol: int | None = None) -> ClientHandshake:
        """A handshake for the client described by ``opts`` (netsync.options.Options)."""
        from netsync.options import _allow_inc_recurse

        return cls(opts.protocol, checksum_choice=opts.checksum_choice,
                   compress=bool(opts.do_compression), compress_choice=opts.compress_choice,
                   daemon_protocol=daemon_protocol, remote_protocol=remote_protocol,
                   allow_inc_recurse=_allow_inc_recurse(opts, am_sender), am_sender=am_sender,
                   files_from_remote=bool(opts.files_from is not None and opts.files_from_host
                                          is not None))

    # -- driving -----------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.result is not None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server.  Bytes past the handshake stay in :attr:`leftover`."""
        self._buf += data
        self._advance()

    @property
    def leftover(self) -> bytes:
        """Bytes received after the handshake (the start of the multiplexed stream)."""
        return bytes(self._buf) if self.done else b""

    # -- steps -------------------------------------------------------------

    def _take(self, n: int) -> bytes | None:
        if len(self._buf) < n:
            return None
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _take_varint(self) -> int | None:
        from netsync.wire import TruncatedError, decode_varint

        try:
            value, used = decode_varint(bytes(self._buf[:5]))
        except TruncatedError:
            return None
        del self._buf[:used]
        return value

    def _advance(self) -> None:
        while self.result is None:
            step = getattr(self, "_step_" + self._state)
            if not step():
                return

    def _step_version(self) -> bool:
        raw = self._take(4)
        if raw is None:
            return False
        remote = int.from_bytes(raw, "little", signed=True)
        self.remote_protocol = remote
        if remote < RSYNC_MIN_PROTOCOL or remote > RSYNC_MAX_PROTOCOL:
            # Typically a login script printing text before rsync starts.
            raise TransportError(RERR_PROTOCOL, "\n".join([
                "protocol version mismatch -- is your shell clean?",
                "(see the rsync manpage for an explanation)"]), bare=True)
        if remote < RSYNC_OLD_PROTOCOL:
            self.infos.append("Server is very old version of rsync, upgrade recommended.")
        self.protocol = min(self.our_protocol, remote)
        if self.protocol < MIN_PROTOCOL:
            raise TransportError(RERR_PROTOCOL,
                                 f"the server speaks protocol {remote}; netsync needs "
                                 f"{MIN_PROTOCOL} or newer (rsync 2.6.0+)")
        _check_max(self.protocol)
        self._state = "compat"
        self._check_options()
        return True

    def _check_options(self) -> None:
        check, self.option_check = self.option_check, None
        msg = check(self.protocol) if check is not None else None
        if msg:  # exit 2 whatever the far end's status (it stops too)
            raise TransportError(RERR_PROTOCOL, msg, bare=True, own_code=True)

    def _step_compat(self) -> bool:
        self._check_options()  # (a daemon's protocol was settled before this handshake)
        if self.protocol >= 30:
            flags = self._take_varint()
            if flags is None:
                return False
            self.compat_flags = flags
            self._negotiated_strings = bool(flags & CF_VARINT_FLIST_FLAGS)
            if flags & CF_INC_RECURSE and not self.allow_inc_recurse:
                raise TransportError(RERR_SYNTAX,
                                     "Incompatible options specified for inc-recursive "
                                     "connection.", bare=True)
        self._send_lists()
        self._state = "checksum_list"
        return True

    def _step_seed(self) -> bool:
        raw = self._take(4)
        if raw is None:
            return False
        seed = int.from_bytes(raw, "little", signed=True)
        p = self.protocol
        mplex_in = p >= 23 and (self.am_sender is False or p >= 31 or not self.files_from_remote)
        assert self._checksum is not None
        self.result = Negotiated(
            protocol=p, remote_protocol=self.remote_protocol, compat_flags=self.compat_flags,
            checksum=self._checksum, checksum_negotiated=self._checksum_negotiated,
            compress=self._compress, checksum_seed=seed, mplex_in=mplex_in, mplex_out=p >= 30)
        return True


def _first_choice(choice: str) -> str:
    """--checksum-choice=XFER[,FILE]: the transfer checksum is the first name."""
    return choice.split(",", 1)[0]


def run_client_handshake(conn: Connection, hs: ClientHandshake) -> Negotiated:
    """Drive ``hs`` over ``conn``; bytes received past the handshake are in ``hs.leftover``.

    Reads only as much as each step needs, so normally nothing is left over.
    """
    while True:
        out = hs.data_to_send()
        if out:
            conn.write(out)
        if hs.result is not None:
            return hs.result
        need = _bytes_wanted(hs)
        data = conn.read(need)
        if not data:
            raise conn.unexpected_close()
        hs.receive_data(data)


def _bytes_wanted(hs: ClientHandshake) -> int:
    """How many more bytes the current step needs at least (never over-read the stream)."""
    have = len(hs._buf)
    state = hs._state
    if state in ("version", "seed"):
        return max(1, 4 - have)
    return 1
