"""An "evil peer" toolkit: speak enough of rsync's protocol to reach a stage, then lie.

The well-formed parts (handshakes, multiplexing, file-list records) reuse netsync's own
sans-I/O codecs; the lies are raw bytes written where the honest value would go.

Three ways to aim it:

- :func:`start_server` runs ``netsync --server [--sender] ...`` on pipes, exactly what
  ssh would start, and :class:`EvilClient` talks to it;
- :class:`EvilClient` on a socket talks to a real ``netsync --daemon``;
- run as a program (``python hostile_peer.py serve ATTACK host netsync --server ...``)
  it is an evil *server* on stdin/stdout, for ``netsync -e`` to talk to: the attack
  functions are in :data:`SERVER_ATTACKS`.

:func:`finish` waits for a child with a deadline and returns its exit code and peak
memory (the child's own VmHWM, sampled while it runs; see :func:`finish`).
"""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_SRC = str(_HERE.parent / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from netsync.flist import FileEntry  # noqa: E402
from netsync.flist_codec import FlistEncoder  # noqa: E402
from netsync.io import ProtocolIO  # noqa: E402
from netsync.log import ITEM_BASIS_TYPE_FOLLOWS, ITEM_TRANSFER, ITEM_XNAME_FOLLOWS  # noqa: E402
from netsync.transport import Connection  # noqa: E402
from netsync.wire import NDX_DEL_STATS, NDX_DONE, Msg, encode_int32, encode_varint  # noqa: E402

#: Address-space limit for every netsync child: a runaway allocation fails fast (and
#: must fail cleanly) instead of taking the machine down.
AS_LIMIT = 2 << 30
#: What "bounded memory" means in these tests: far above netsync's normal footprint
#: (~40-60 MB), far below what any of the attacks would make it allocate unchecked.
MAX_RSS_KB = 250 * 1024
MTIME = 1_600_000_000 * 10**9


def netsync_cmd() -> list[str]:
    cmd = os.environ.get("NETSYNC_TEST_CMD")
    return cmd.split() if cmd else [sys.executable, "-m", "netsync"]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TZ="UTC", LC_ALL="C.UTF-8")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, str(_HERE),
                                                    env.get("PYTHONPATH")) if p)
    env.pop("RSYNC_RSH", None)
    env.pop("NETSYNC_DEBUG", None)
    env.update(extra)
    return env


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


# ---------------------------------------------------------------------------
# children: start, and finish with exit code + peak memory


@dataclass
class Child:
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    returncode: int | None = None
    maxrss_kb: int = 0
    spawner_rss_kb: int = 0  # our RSS when it was forked (see finish())

    @property
    def stderr(self) -> bytes:
        return self.stderr_path.read_bytes()


def spawn(argv: list[str], cwd: Path, *, pipes: bool = True, env: dict | None = None,
          stdout=None) -> Child:
    fd, name = tempfile.mkstemp(prefix="hostile-stderr-", dir=cwd)
    rss = _proc_status_kb("self", b"VmRSS:")
    proc = subprocess.Popen(argv, cwd=cwd, env=env or child_env(),
                            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                            stdout=subprocess.PIPE if pipes else (stdout or subprocess.DEVNULL),
                            stderr=fd, preexec_fn=_limit_memory)
    os.close(fd)
    return Child(proc, Path(name), spawner_rss_kb=rss)


def _proc_status_kb(pid: int | str, field: bytes) -> int:
    """A kB field of /proc/PID/status (0 once the process has no memory)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def finish(child: Child, timeout: float = 60.0) -> Child:
    """Wait (at most ``timeout``; then kill and fail) and record exit code and peak RSS."""
    pid = child.proc.pid
    deadline = time.monotonic() + timeout
    hwm = 0
    while True:
        hwm = max(hwm, _proc_status_kb(pid, b"VmHWM:"))
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None:
            break
        if time.monotonic() > deadline:
            child.proc.kill()
            child.proc.wait()
            raise AssertionError(f"{child.proc.args!r} still running after {timeout}s")
        time.sleep(0.05)
    _, status, usage = os.wait4(pid, 0)
    child.proc.returncode = child.returncode = os.waitstatus_to_exitcode(status)
    # wait4's ru_maxrss starts at the RSS of the forked copy of this process (Linux
    # carries the old mm's high-water mark over exec), so a test process that grew
    # big makes every child look big. Above our RSS at the fork it is the child's
    # own peak; at or below it, the child's VmHWM sampled while it ran is.
    own = usage.ru_maxrss > child.spawner_rss_kb
    child.maxrss_kb = usage.ru_maxrss if own else max(hwm, 1)
    for f in (child.proc.stdin, child.proc.stdout):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
    return child


def start_server(cwd: Path, *args: str, env: dict | None = None) -> Child:
    """``netsync --server ARGS`` on pipes (what ``ssh host netsync --server ...`` runs)."""
    return spawn([*netsync_cmd(), "--server", *args], cwd, env=env)


# ---------------------------------------------------------------------------
# the evil client


@dataclass
class EvilClient:
    """The client half of a connection to a netsync server, under the test's control."""

    conn: Connection
    protocol: int = 31
    am_sender: bool = True
    texts: list[tuple[int, bytes]] = field(default_factory=list)
    io: ProtocolIO | None = None
    neg: object = None

    @classmethod
    def on_child(cls, child: Child, **kw) -> EvilClient:
        p = child.proc
        assert p.stdin is not None and p.stdout is not None
        return cls(Connection(p.stdout.fileno(), p.stdin.fileno(), who="evil"), **kw)

    def handshake(self, *, daemon_protocol: int | None = None,
                  checksum_choice: str | None = None, compress: bool = False,
                  inc_recurse: bool = False) -> ProtocolIO:
        from netsync.transport.handshake import ClientHandshake, run_client_handshake

        hs = ClientHandshake(self.protocol if daemon_protocol is None else daemon_protocol,
                             am_sender=self.am_sender, daemon_protocol=daemon_protocol,
                             remote_protocol=daemon_protocol, checksum_choice=checksum_choice,
                             compress=compress, allow_inc_recurse=inc_recurse)
        neg = run_client_handshake(self.conn, hs)
        self.neg = neg
        io = ProtocolIO(self.conn, neg.protocol, who="evil", timeout=30)
        io.mplex_out = neg.mplex_out
        if neg.mplex_in:
            io.start_multiplex_in(hs.leftover)
        else:
            io.add_leftover(hs.leftover)
        io.on_text = lambda code, text: self.texts.append((code, text))
        io.on_deleted = lambda name, is_dir: None
        io.on_success = io.on_no_send = io.on_redo = io.on_stats = lambda v: None
        self.io = io
        return io

    def encoder(self, **kw) -> FlistEncoder:
        assert self.neg is not None
        return FlistEncoder(self.neg.protocol, compat_flags=self.neg.compat_flags,  # type: ignore[attr-defined]
                            **kw)

    def send(self, data: bytes) -> None:
        assert self.io is not None
        self.io.write(data)

    def flush(self) -> None:
        """Send what is buffered; a peer that already hung up is not our problem."""
        assert self.io is not None
        try:
            self.io.flush()
        except Exception:  # noqa: BLE001 - the server may be gone: that is the point
            pass

    def drain(self) -> bytes:
        """Read (and discard) the server's stream until it hangs up; returns its text."""
        assert self.io is not None
        # What we could not send stays unsent: reading must not first retry the write.
        self.io.discard_output()
        try:
            while True:
                self.io.read_some()
        except Exception:  # noqa: BLE001 - EOF, MSG_ERROR_EXIT, ...: all end the run
            pass
        return self.text()

    def hang_up(self) -> None:
        """Close our sending side only (the server sees EOF; we can still read it)."""
        os.close(self.conn.wfd)
        self.conn.wfd = os.open(os.devnull, os.O_WRONLY)

    def text(self) -> bytes:
        return b"".join(t for _, t in self.texts)


def push_to_server(cwd: Path, flags: str, payload: Callable[[FlistEncoder], bytes], *,
                   hang_up: bool = False) -> tuple[Child, bytes]:
    """A hostile sender pushing into ``netsync --server FLAGS`` (receiving into cwd/dst):
    the handshake, then ``payload(encoder)``; (the finished child, all it said)."""
    (cwd / "dst").mkdir()
    child = start_server(cwd, flags, "-e.LsfxCIvu", "--timeout=20", ".", "dst/")
    client = EvilClient.on_child(child, am_sender=True)
    try:
        client.handshake()
        client.send(payload(client.encoder()))
        client.flush()
        if hang_up:
            client.hang_up()
    except Exception:  # noqa: BLE001 - the server hanging up on the lie is the point
        pass
    text = client.drain() if client.io is not None else b""
    finish(child, 60)
    return child, text + child.stderr


def empty_filter_list() -> bytes:
    return encode_int32(0)


def entry(name: bytes, mode: int = stat.S_IFREG | 0o644, size: int = 0,
          link: bytes | None = None) -> FileEntry:
    return FileEntry(name, mode, size, MTIME, link=link)


def read_flist(io: ProtocolIO, dec) -> list[bytes]:
    """Read one file list off ``io`` with ``dec`` (a FlistDecoder); what follows it
    stays in ``io``.  The names, in rsync's file-index order (sorted)."""
    from netsync.flist_codec import EndOfList

    while True:
        item = dec.next_entry()
        if item is None:
            dec.feed(io.read_some())
        elif isinstance(item, EndOfList):
            break
    io.unread(bytes(dec.reader.buf[dec.reader.pos:]))
    return sorted(e.name for e in dec.entries)


def flist_bytes(enc: FlistEncoder, entries: list[FileEntry]) -> bytes:
    out = b"".join(enc.encode_entry(e, i) for i, e in enumerate(entries))
    return out + enc.end()


def long_name_record(enc: FlistEncoder, length: int) -> bytes:
    """The start of a record claiming a name of ``length`` bytes (XMIT_LONG_NAME)."""
    flags = 1 << 6  # XMIT_LONG_NAME
    if enc.varint_flags:
        head = encode_varint(flags)
    else:
        head = bytes((flags,))
    n = encode_varint(length) if enc.protocol >= 30 else encode_int32(length)
    return head + n + b"A" * 64


def flood_records(enc: FlistEncoder, count: int) -> bytes:
    """``count`` minimal records (same name, mode and time as the first): a cheap flood."""
    first = enc.encode_entry(entry(b"f"), 0)
    # XMIT_SAME_NAME | XMIT_SAME_MODE | XMIT_SAME_TIME, l1=1, l2=0, size 0 (varlong 3 bytes).
    flags = (1 << 5) | (1 << 1) | (1 << 7)
    head = encode_varint(flags) if enc.varint_flags else bytes((flags,))
    size = b"\0\0\0" if enc.protocol >= 30 else b"\0\0\0\0"
    rec = head + b"\x01" + b"\x00" + size
    # l2 = 0 makes the name b"f" + b"" again: a duplicate, which the decoder must count.
    return first + rec * (count - 1)


# ---------------------------------------------------------------------------
# the evil server (run as a program by netsync -e)


def _serve(attack: str, argv: list[str]) -> int:  # pragma: no cover - runs as -e program
    from netsync.server_handshake import ServerHandshake, run_server_handshake

    sender = "--sender" in argv
    caps = ""
    for a in argv:
        if a.startswith("-") and not a.startswith("--") and "e." in a:
            caps = a.split("e.", 1)[1]
    conn = Connection(sys.stdin.fileno(), sys.stdout.fileno(), who="evil")
    if attack == "stall-handshake":
        time.sleep(120)
        return 0
    hs = ServerHandshake(31, caps=caps, am_sender=sender)
    neg = run_server_handshake(conn, hs)
    io = ProtocolIO(conn, neg.protocol, who="evil", timeout=60)
    io.mplex_out = neg.mplex_out
    if neg.mplex_in:
        io.start_multiplex_in(hs.leftover)
    else:
        io.add_leftover(hs.leftover)
    peer = EvilServer(io, neg, sender)
    SERVER_ATTACKS[attack](peer)
    try:
        io.flush()
    except Exception:  # noqa: BLE001
        pass
    time.sleep(float(os.environ.get("HOSTILE_LINGER", "0")))
    return 0


@dataclass
class EvilServer:
    io: ProtocolIO
    neg: object
    sender: bool

    def encoder(self, **kw) -> FlistEncoder:
        return FlistEncoder(self.neg.protocol, compat_flags=self.neg.compat_flags,  # type: ignore[attr-defined]
                            **kw)

    def file_sum(self, body: bytes) -> bytes:
        from netsync.checksum import FileSum

        neg = self.neg
        fsum = FileSum(neg.checksum, neg.checksum_seed, neg.protocol)  # type: ignore[attr-defined]
        fsum.update(body)
        return fsum.digest()

    def read_filters(self) -> None:
        while True:
            n = self.io.read_int()
            if n == 0:
                return
            self.io.read(n)

    def send_flist(self, entries: list[FileEntry], **kw) -> None:
        self.read_filters()
        self.io.write(flist_bytes(self.encoder(**kw), entries))
        self.io.flush()

    def next_item(self) -> tuple[int, int]:
        """The client's next (ndx, iflags) that is not an item its generator only
        reports (protocol >= 29): those are echoed back, as rsync's sender does."""
        io = self.io
        while True:
            ndx = io.read_ndx()
            if ndx < 0:
                return ndx, 0
            iflags = io.read_shortint()
            if iflags & ITEM_TRANSFER:
                return ndx, iflags
            if iflags & ITEM_BASIS_TYPE_FOLLOWS:
                io.read_byte()
            xname = io.read_vstring() if iflags & ITEM_XNAME_FOLLOWS else None
            io.write_ndx(ndx)
            io.write_shortint(iflags)
            if xname is not None:
                io.write_vstring(xname)

    def file_request(self) -> tuple[int, int]:
        """Read the client's request for a file: (ndx, iflags); the sum head is skipped."""
        io = self.io
        ndx, iflags = self.next_item()
        count = io.read_int()
        io.read_int()
        s2 = io.read_int()
        io.read_int()
        io.read(count * (4 + s2))
        return ndx, iflags

    def echo(self, ndx: int, iflags: int) -> None:
        io = self.io
        io.write_ndx(ndx)
        io.write_shortint(iflags)
        io.write(b"\0" * 16)  # empty sum head


def _attack_unsafe_name(name: bytes) -> Callable[[EvilServer], None]:
    def run(s: EvilServer) -> None:
        s.send_flist([entry(b".", stat.S_IFDIR | 0o755), entry(name, size=5)])
        s.io.read_some()
    return run


def _attack_bad_mode(s: EvilServer) -> None:
    """An entry of no file type, its name with a control byte and one not UTF-8."""
    s.send_flist([entry(b".", stat.S_IFDIR | 0o755), entry(b"bad\x01\xffname", 0o170644)])
    s.io.read_some()


def _attack_symlink_escape(s: EvilServer) -> None:
    """CVE-2024-12087: a symlink to outside, then a file "through" it."""
    target = os.environ["HOSTILE_OUTSIDE"].encode()
    s.send_flist([entry(b".", stat.S_IFDIR | 0o755),
                  entry(b"d", stat.S_IFLNK | 0o777, link=target),
                  entry(b"d/pwned", size=5)], preserve_links=True)
    _serve_files(s, {2: b"EVIL\n"})


def _serve_files(s: EvilServer, data: dict[int, bytes]) -> None:
    """Play an honest sender from here on (sender.c send_files, then the stats and
    read_final_goodbye), sending ``data`` for each requested file."""
    io = s.io
    phase = 0
    while True:
        ndx, iflags = s.next_item()
        if ndx == NDX_DEL_STATS:
            for _ in range(5):
                io.read_varint()
            continue
        if ndx == NDX_DONE:
            phase += 1
            if phase > 2:
                break
            io.write_ndx(NDX_DONE)
            continue
        count = io.read_int()
        io.read_int()
        s2 = io.read_int()
        io.read_int()
        io.read(count * (4 + s2))
        s.echo(ndx, iflags)
        body = data.get(ndx, b"")
        io.write((encode_int32(len(body)) + body if body else b"") + encode_int32(0))
        io.write(s.file_sum(body))
    io.write_ndx(NDX_DONE)
    for _ in range(5):
        io.write_varlong(0, 3)
    io.flush()
    while True:  # the goodbye: DEL_STATS may come first, then NDX_DONE (echoed from 31)
        ndx = io.read_ndx()
        if ndx == NDX_DEL_STATS:
            for _ in range(5):
                io.read_varint()
            continue
        break
    io.write_ndx(NDX_DONE)
    io.flush()
    io.read_ndx()


def _attack_huge_literal(s: EvilServer) -> None:
    s.send_flist([entry(b".", stat.S_IFDIR | 0o755), entry(b"big", size=10)])
    ndx, iflags = s.file_request()
    s.echo(ndx, iflags)
    s.io.write(encode_int32(0x7FFFFFFF))
    chunk = b"x" * (1 << 20)
    try:
        for _ in range(64):  # far more than the 10 bytes announced
            s.io.write(chunk)
        s.io.flush()
    except Exception:  # noqa: BLE001 - the client hung up, as it should
        pass


def _attack_half_file(s: EvilServer) -> None:
    """Half of a file, then the connection drops: nothing half-written may remain."""
    s.send_flist([entry(b".", stat.S_IFDIR | 0o755), entry(b"half", size=1 << 20)])
    ndx, iflags = s.file_request()
    s.echo(ndx, iflags)
    s.io.write(encode_int32(1 << 19) + b"h" * (1 << 19))
    s.io.flush()
    time.sleep(0.5)
    os._exit(0)


def _attack_bad_tag(s: EvilServer) -> None:
    s.read_filters()
    s.io._out += (0x7F << 24 | 4).to_bytes(4, "little") + b"abcd"
    s.io.flush()


def _attack_stall(s: EvilServer) -> None:
    s.read_filters()
    time.sleep(120)


def _attack_bad_ndx(s: EvilServer) -> None:
    s.send_flist([entry(b".", stat.S_IFDIR | 0o755), entry(b"f", size=3)])
    s.file_request()
    s.io.write_ndx(5000)
    s.io.write_shortint(0x8000)
    s.io.flush()


def _attack_cleared_ndx(s: EvilServer) -> None:
    """The same name twice (the list's cleaning drops one), then the data of the
    dropped one in answer to the request for the kept one."""
    s.send_flist([entry(b".", stat.S_IFDIR | 0o755), entry(b"dup", size=3),
                  entry(b"dup", size=3)])
    ndx, iflags = s.file_request()
    s.echo(3 - ndx, iflags)
    s.io.write(encode_int32(3) + b"bad" + encode_int32(0) + s.file_sum(b"bad"))
    s.io.flush()
    s.io.read_some()


def _attack_sum_head(values: tuple[int, int, int, int]) -> Callable[[EvilServer], None]:
    def run(s: EvilServer) -> None:
        s.send_flist([entry(b".", stat.S_IFDIR | 0o755), entry(b"f", size=3)])
        ndx, iflags = s.file_request()
        s.io.write_ndx(ndx)
        s.io.write_shortint(iflags)
        s.io.write(b"".join(encode_int32(v) for v in values))
        s.io.flush()
    return run


def _attack_flist_flood(s: EvilServer) -> None:
    s.read_filters()
    enc = s.encoder()
    s.io.write(flood_records(enc, 300_000))
    s.io.flush()


def _attack_long_name(s: EvilServer) -> None:
    s.read_filters()
    s.io.write(long_name_record(s.encoder(), 1 << 30))
    s.io.flush()


def _attack_id_flood(s: EvilServer) -> None:
    s.read_filters()
    enc = s.encoder(preserve_uid=True)
    body = enc.encode_entry(entry(b"f"), 0) + enc.end_marker()
    # then a user list far longer than the one id the list used
    names = b"".join(encode_varint(i) + b"\xff" + b"n" * 255 for i in range(1, 200_000))
    s.io.write(body + names)
    s.io.flush()


def _attack_deleted_outside(s: EvilServer) -> None:
    """A push: the remote generator reports deletions it never could have made."""
    io = s.io
    enc_peer = s  # noqa: F841 - symmetric naming with the client side
    io.read_int()  # the (empty) filter list is only sent when the receiver wants it
    io.send_msg(Msg.DELETED, b"../../etc/passwd")
    io.flush()


def _attack_dot_content_dir(s: EvilServer) -> None:
    """A single-file pull answered with "." as a top content directory: --delete must
    not sweep the destination (rsync's malicious-dot-dir-delete-scope)."""
    from netsync.flist import FLAG_CONTENT_DIR, FLAG_TOP_DIR

    dot = entry(b".", stat.S_IFDIR | 0o755)
    dot.flags = FLAG_TOP_DIR | FLAG_CONTENT_DIR
    s.send_flist([dot, entry(b"requested")])
    _serve_files(s, {})


def _attack_push_sum_head(s: EvilServer) -> None:
    """A push: the remote generator asks for a file with a strong-sum length beyond the
    digest (CVE-2024-12084 aimed at the client's sender)."""
    from netsync.flist_codec import FlistDecoder

    io = s.io
    names = read_flist(io, FlistDecoder(s.neg.protocol, compat_flags=s.neg.compat_flags,  # type: ignore[attr-defined]
                                        recurse=True))
    io.write_ndx(names.index(b"f"))
    io.write_shortint(1 << 15)
    io.write(b"".join(encode_int32(v) for v in (1, 700, 17, 3)) + b"\0" * 21)
    io.flush()
    io.read_some()


SERVER_ATTACKS: dict[str, Callable[[EvilServer], None]] = {
    "push-sum-head": _attack_push_sum_head,
    "dot-content-dir": _attack_dot_content_dir,
    "dotdot-name": _attack_unsafe_name(b"../escaped"),
    "inner-dotdot-name": _attack_unsafe_name(b"sub/../../escaped"),
    "absolute-name": _attack_unsafe_name(b"/tmp/absolute-escape"),
    "escape-seq-name": _attack_unsafe_name(b"../\x1b[31mred\\#123"),
    "bad-mode": _attack_bad_mode,
    "symlink-escape": _attack_symlink_escape,
    "huge-literal": _attack_huge_literal,
    "half-file": _attack_half_file,
    "bad-tag": _attack_bad_tag,
    "stall": _attack_stall,
    "bad-ndx": _attack_bad_ndx,
    "cleared-ndx": _attack_cleared_ndx,
    "sum-head-s2length": _attack_sum_head((1, 700, 17, 3)),
    "sum-head-blength": _attack_sum_head((1, 1 << 20, 16, 3)),
    "flist-flood": _attack_flist_flood,
    "long-name": _attack_long_name,
    "id-flood": _attack_id_flood,
}


def main(argv: list[str]) -> int:  # pragma: no cover - the -e program
    if len(argv) >= 2 and argv[0] == "serve":
        attack = argv[1]
        rest = argv[2:]
        if attack == "stall-handshake":
            time.sleep(120)
            return 0
        try:
            return _serve(attack, rest)
        except Exception:  # noqa: BLE001 - the client hung up on us: expected
            return 0
    sys.stderr.write("usage: hostile_peer.py serve ATTACK HOST COMMAND...\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
