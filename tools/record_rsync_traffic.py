#!/usr/bin/env python3
"""Record the raw byte streams between a stock rsync client and ``rsync --server``.

Usage (regenerates every fixture in tests/fixtures/)::

    python3 tools/record_rsync_traffic.py [--rsync /usr/bin/rsync] [--out tests/fixtures]

How it works: the client is started with ``-e "python3 THIS --tee PREFIX"``,
so rsync runs this script as its remote shell (``THIS --tee PREFIX host rsync
--server ...``).  In that mode the script starts the server command locally
and copies both directions, teeing them into ``PREFIX.c2s.bin`` (client to
server) and ``PREFIX.s2c.bin`` (server to client).  A ``PREFIX.json``
manifest records the exact client command line and the server command the
client asked for.

The source/destination trees are deterministic (see ``make_tree``): file
contents come from ``content()``, mtimes are fixed, and ``--checksum-seed``
pins the seed, so a re-recording differs only where rsync itself is not
deterministic (e.g. pids, uid/gid names of the recording user).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

SEED = 12345
MTIME_OLD = 1_600_000_000
MTIME_NEW = 1_700_000_000

# name -> (direction, protocol, extra client options)
FIXTURES: dict[str, tuple[str, int, list[str]]] = {
    "push30": ("push", 30, []),
    "pull30": ("pull", 30, []),
    "push31": ("push", 31, []),
    "pull31": ("pull", 31, []),
    # One fixture per strong-sum algorithm, to pin down seed placement.
    "push31-md4": ("push", 31, ["--checksum-choice=md4"]),
    "push31-md5": ("push", 31, ["--checksum-choice=md5"]),
    "push31-sha1": ("push", 31, ["--checksum-choice=sha1"]),
    "push31-xxh64": ("push", 31, ["--checksum-choice=xxh64"]),
    # -A and -X: each entry's ACL and xattr data follow it in the list (the tree gets
    # some, see with_acls_xattrs()), and long values go by checksum and request.
    "push31-ax": ("push", 31, ["-AX"]),
    "pull31-ax": ("pull", 31, ["-AX"]),
    "push29": ("push", 29, []),
    "push27": ("push", 27, []),
}


def content(n: int, salt: int) -> bytes:
    """Deterministic, non-repetitive file content (a simple LCG)."""
    out = bytearray(n)
    x = salt * 2654435761 + 1
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 0xFF
    return bytes(out)


# The sender's "new" version of data.bin and the receiver's basis: same
# content with a few bytes changed in the middle, so the generator sends
# block sums and the sender replies with a real delta.
DATA_LEN = 3000


def new_data() -> bytes:
    return content(DATA_LEN, 1)


def basis_data() -> bytes:
    d = bytearray(new_data())
    d[1500:1510] = b"0123456789"
    return bytes(d)


def make_tree(src: Path, dst: Path) -> None:
    (src / "sub").mkdir(parents=True)
    dst.mkdir(parents=True)
    (src / "data.bin").write_bytes(new_data())
    (src / "hello.txt").write_bytes(b"hello, world\n")
    (src / "sub" / "small.txt").write_bytes(content(100, 2))
    (dst / "data.bin").write_bytes(basis_data())
    for p in (src / "data.bin", src / "hello.txt", src / "sub" / "small.txt", src / "sub", src):
        os.utime(p, (MTIME_NEW, MTIME_NEW))
    os.utime(dst / "data.bin", (MTIME_OLD, MTIME_OLD))


def with_acls_xattrs(src: Path) -> None:
    """ACLs (a named user and group, a default ACL) and xattrs (short, empty, longer
    than the 32 bytes sent whole) on the source, for the -A/-X fixtures."""
    subprocess.run(["setfacl", "-m", "u:nobody:rw,g:daemon:r", str(src / "hello.txt")],
                   check=True)
    subprocess.run(["setfacl", "-d", "-m", "g:daemon:rx", str(src / "sub")], check=True)
    os.setxattr(src / "hello.txt", "user.short", b"v1")
    os.setxattr(src / "hello.txt", "user.empty", b"")
    os.setxattr(src / "data.bin", "user.long", content(60, 3))
    os.setxattr(src / "sub", "user.dir", b"dir value")
    os.setxattr(src / "sub" / "small.txt", "user.short", b"v1")  # the same list again
    os.setxattr(src / "sub" / "small.txt", "user.empty", b"")
    for p in (src / "data.bin", src / "hello.txt", src / "sub" / "small.txt", src / "sub", src):
        os.utime(p, (MTIME_NEW, MTIME_NEW))


def tee_main(prefix: str, argv: list[str]) -> int:
    """Remote-shell mode: argv is [host, command...] as rsync passes it."""
    cmd = argv[1:]  # drop the host name
    with open(prefix + ".server-cmd", "w") as f:
        f.write(shlex.join(cmd) + "\n")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None

    def pump(src_fd: int, dst_fd: int, log_path: str, close_dst: bool) -> None:
        with open(log_path, "wb") as log:
            while True:
                try:
                    chunk = os.read(src_fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                view = memoryview(chunk)
                while view:
                    try:
                        view = view[os.write(dst_fd, view) :]
                    except OSError:
                        return
        if close_dst:
            os.close(dst_fd)

    up = threading.Thread(
        target=pump, args=(0, proc.stdin.fileno(), prefix + ".c2s.bin", True), daemon=True
    )
    up.start()
    pump(proc.stdout.fileno(), 1, prefix + ".s2c.bin", False)
    rc = proc.wait()
    up.join(timeout=5)
    return rc


def record(name: str, rsync: str, out: Path) -> None:
    direction, protocol, extra = FIXTURES[name]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        src, dst = t / "src", t / "dst"
        make_tree(src, dst)
        if "-AX" in extra:
            with_acls_xattrs(src)
        prefix = str(t / name)
        rsh = f"{sys.executable} {Path(__file__).resolve()} --tee {prefix}"
        opts = ["-a", f"--protocol={protocol}", f"--checksum-seed={SEED}", *extra]
        if direction == "push":
            args = [rsync, *opts, "-e", rsh, f"{src}/", f"localhost:{dst}/"]
        else:
            args = [rsync, *opts, "-e", rsh, f"localhost:{src}/", f"{dst}/"]
        subprocess.run(args, check=True, cwd=tmp)
        if (dst / "data.bin").read_bytes() != new_data():
            raise SystemExit(f"{name}: transfer did not produce the new data")
        for suffix in (".c2s.bin", ".s2c.bin"):
            shutil.copyfile(prefix + suffix, out / (name + suffix))
        server_cmd = Path(prefix + ".server-cmd").read_text().strip()
        manifest = {
            "name": name,
            "direction": direction,
            "protocol": protocol,
            "checksum_seed": SEED,
            "client_options": opts,
            "client_command": "rsync " + " ".join(opts) + " -e <tee-wrapper> "
            + ("SRC/ localhost:DST/" if direction == "push" else "localhost:SRC/ DST/"),
            "server_command": server_cmd.replace(str(src), "SRC").replace(str(dst), "DST"),
            "rsync_version": subprocess.run(
                [rsync, "--version"], capture_output=True, text=True
            ).stdout.splitlines()[0],
            "tree": "src: data.bin (3000 B, new_data()), hello.txt, sub/small.txt; "
            "dst: data.bin = basis_data() (older mtime)",
        }
        (out / (name + ".json")).write_text(json.dumps(manifest, indent=1) + "\n")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--tee":
        return tee_main(sys.argv[2], sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rsync", default="/usr/bin/rsync")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
    ap.add_argument("names", nargs="*", default=list(FIXTURES))
    ns = ap.parse_args()
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ns.names:
        record(name, ns.rsync, out)
        print(f"recorded {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
