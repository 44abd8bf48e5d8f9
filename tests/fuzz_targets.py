"""Fuzz targets for the sans-I/O wire decoders: bytes a hostile peer could send in,
an outcome string out.

Each target feeds its input to one decoder the way the engine does and returns
``"ok ..."`` (what was decoded) or ``"error <exit code> <message>"`` for a clean
refusal (an :class:`~netsync.errors.RsyncError`, which the engine turns into
rsync's message and exit code).  Any other exception escapes: that is the bug a
fuzzer looks for (a traceback instead of rsync's error, or memory without bound).

The seeds are real traffic: the streams in ``tests/fixtures`` that two stock rsyncs
sent each other.  ``tests/test_fuzz_decoders.py`` mutates them with hypothesis, and
``tests/fixtures/fuzz/`` keeps inputs worth replaying (``tools/fuzz_corpus.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from netsync import token, wire
from netsync.errors import RsyncError
from netsync.flist_codec import EndOfList, FlistDecoder
from netsync.server_handshake import ServerHandshake
from netsync.transport.handshake import ClientHandshake

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "fuzz"

# Nothing one decoder call may build from a few KiB of input should be larger.
MAX_OUTPUT = 64 << 20


def _error(ex: RsyncError) -> str:
    return f"error {getattr(ex, 'code', '?')} {ex}"


# -- the file list ---------------------------------------------------------------


@cache
def _flist_setup(name: str) -> tuple[dict[str, object], bytes]:
    """A recording's decoder options and its demultiplexed sender stream."""
    from test_flist_codec import Recording  # the fixtures' reader lives with its tests

    rec = Recording(name)
    opts: dict[str, object] = {"protocol": rec.protocol, "compat_flags": rec.compat,
                               **rec.options}
    return opts, rec.data


FLIST_SEEDS = ("push27", "push29", "pull30", "push31", "flist27-c", "flist29", "flist30",
               "flist31", "flist31-c", "flist31-noinc", "push31-ax", "pull31-ax")


def acl_xattr_hooks(dec: FlistDecoder) -> None:
    """-A and -X as a receiver has them: each entry's ACL data, then its xattr list."""
    from netsync import acls, xattrs

    dec.acls = acls.AclDecoder(max_names=1 << 16)
    table = xattrs.XaTable()
    ctx = xattrs.XaCtx(1, 1)  # -X once, as root
    dec.xattr_parse = lambda buf, pos, name: table.parse(buf, pos, ctx, lambda: repr(name))
    dec.xattr_commit = table.commit


def flist_target(seed: str) -> Callable[[bytes], str]:
    """recv_file_list() and, with incremental recursion, the sub-lists after it."""

    def run(data: bytes) -> str:
        opts, _ = _flist_setup(seed)
        protocol = int(opts["protocol"])  # type: ignore[call-overload]
        dec = FlistDecoder(**opts, max_entries=1 << 16)  # type: ignore[arg-type]
        if seed.endswith("-ax"):
            acl_xattr_hooks(dec)
        ndxs = wire.NdxDecoder(protocol)
        dec.feed(data)
        lists = entries = 0
        try:
            while True:
                item = dec.next_entry()
                if item is None:
                    return f"ok short after {lists} lists {entries} entries"
                if not isinstance(item, EndOfList):
                    entries += 1
                    assert len(item.name) <= 4096 and (item.link is None or len(item.link) <= 4096)
                    continue
                lists += 1
                if not dec.inc_recurse:
                    return f"ok {lists} lists {entries} entries"
                try:
                    ndx = dec.reader.ndx(ndxs)
                except wire.TruncatedError:
                    return f"ok short after {lists} lists {entries} entries"
                if ndx == wire.NDX_FLIST_EOF:
                    return f"ok {lists} lists {entries} entries"
                dec.begin_sublist(ndx)
        except RsyncError as ex:
            return _error(ex)

    return run


def flist_seed(seed: str) -> bytes:
    return _flist_setup(seed)[1]


# -- multiplexed frames ------------------------------------------------------------


def frames(data: bytes) -> str:
    dec = wire.FrameDecoder()
    n = size = 0
    try:
        dec.feed(data)
        for ev in dec:
            n += 1
            size += len(ev.data) if isinstance(ev, wire.DataEvent) else len(ev.payload)
            if isinstance(ev, wire.MessageEvent):
                ev.value, ev.text  # noqa: B018 - the accessors the engine calls
        dec.close()
    except RsyncError as ex:
        return _error(ex)
    assert size <= len(data)
    return f"ok {n} events"


def frames_seed() -> bytes:
    """A server's multiplexed output: what follows the 4-byte version and the
    compat flags in a protocol-31 push recording."""
    raw = (FIXTURES / "push31.s2c.bin").read_bytes()
    r = wire.Reader(raw)
    r.int32()
    r.varint()
    r.vstring()
    r.int32()
    return bytes(raw[r.pos:])


# -- sum heads, block sums, file indexes -------------------------------------------


def sums(data: bytes) -> str:
    try:
        head, pos = wire.decode_sum_head(data, 0, 31)
        # The engine reads only what the head announces, and reads it as it comes.
        if head.count * (4 + head.s2length) > len(data) - pos:
            return f"ok head {head.count} short"
        weak, strong, pos = wire.decode_block_sums(data, pos, head.count, head.s2length)
    except RsyncError as ex:
        return _error(ex)
    return f"ok {len(weak)} sums"


def ndx(data: bytes) -> str:
    for protocol in (29, 30, 31):
        dec = wire.NdxDecoder(protocol)
        pos = 0
        try:
            while pos < len(data):
                _, pos = dec.decode(data, pos)
        except wire.TruncatedError:
            pass
        except RsyncError as ex:
            return _error(ex)
    return "ok"


# -- tokens: the data of one file -----------------------------------------------------


def token_target(codec: str) -> Callable[[bytes], str]:
    def run(data: bytes) -> str:
        dec = token.make_decoder(codec, 31, max_literal=1 << 20)
        literal = blocks = 0
        try:
            dec.feed(data)
            for ev in dec:
                if isinstance(ev, token.Literal):
                    literal += len(ev.data)
                    assert literal <= (1 << 20) + (1 << 17)
                elif isinstance(ev, token.Block):
                    blocks += 1
                    if blocks > 4096:  # a run token repeats a block; the receiver checks each
                        return f"ok {literal} literal, a block run"
                    dec.see_block(_BLOCK)  # legacy zlib needs the matched data
            dec.close()
        except RsyncError as ex:
            return _error(ex)
        return f"ok {literal} literal {blocks} blocks"

    return run


_BLOCK = bytes(700)
TOKEN_CODECS = ("none", "zlib", "zlibx", "zstd", "lz4")


def token_seed(codec: str) -> bytes:
    """Two files as the encoder writes them: literal runs and matched blocks."""
    enc = token.make_encoder(codec, None, 31)
    out = bytearray()
    for f in range(2):
        enc.begin_file()
        out += enc.literal(bytes(range(256)) * (3 + f))
        out += enc.block(0, bytes(700))
        out += enc.block(1, bytes(700))
        out += enc.literal(b"tail" * 50)
        out += enc.end_file()
    return bytes(out)


# -- the handshakes ---------------------------------------------------------------


def client_handshake(data: bytes) -> str:
    """What a client reads from a server: version, compat flags, name lists, seed."""
    hs = ClientHandshake(31)
    try:
        hs.data_to_send()
        hs.receive_data(data)
    except RsyncError as ex:
        return _error(ex)
    return "ok done" if hs.done else "ok short"


def server_handshake(data: bytes) -> str:
    """What a server reads from a client after ``-e.LsfxCIvu``."""
    hs = ServerHandshake(31, caps="LsfxCIvu")
    try:
        hs.data_to_send()
        hs.receive_data(data)
    except RsyncError as ex:
        return _error(ex)
    return "ok"


def _handshake_seed(name: str, side: str) -> bytes:
    raw = (FIXTURES / f"{name}.{side}.bin").read_bytes()
    return raw[:64]


# -- the registry -------------------------------------------------------------------


def targets() -> dict[str, tuple[Callable[[bytes], str], Callable[[], bytes]]]:
    """name -> (target, seed)."""
    t: dict[str, tuple[Callable[[bytes], str], Callable[[], bytes]]] = {}
    for s in FLIST_SEEDS:
        t[f"flist-{s}"] = (flist_target(s), lambda s=s: flist_seed(s))  # type: ignore[misc]
    t["frames"] = (frames, frames_seed)
    t["sums"] = (sums, lambda: wire.encode_sum_head(wire.SumHead(3, 700, 16, 5), 31)
                 + bytes(3 * 20))
    t["ndx"] = (ndx, lambda: b"".join(wire.NdxEncoder(31).encode(i) for i in (0, 1, 5, 300, -1)))
    for c in TOKEN_CODECS:
        t[f"token-{c}"] = (token_target(c), lambda c=c: token_seed(c))  # type: ignore[misc]
    t["client-handshake"] = (client_handshake, lambda: _handshake_seed("push31", "s2c"))
    t["server-handshake"] = (server_handshake, lambda: _handshake_seed("push31", "c2s"))
    return t


def manifest() -> dict[str, str]:
    """The corpus's recorded outcomes: "target/file" -> outcome."""
    path = CORPUS / "outcomes.json"
    return json.loads(path.read_text()) if path.exists() else {}
