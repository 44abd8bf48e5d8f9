"""netsync --daemon as root drops to the module's uid (nobody by default) before the
transfer; every module the engine loads lazily must already be imported by then."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from interop.peers import free_port, stop, wait_for_port


def test_default_uid_module_serves_whole_and_delta_pulls(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(tmp_path, 0o755)
    big = os.urandom(300_000)
    (data / "big").write_bytes(big)
    (data / "small").write_bytes(b"hello\n")
    conf = tmp_path / "rsyncd.conf"
    conf.write_text(f"use chroot = no\n[data]\n  path = {data}\n  read only = yes\n"
                    "  munge symlinks = no\n")  # no uid/gid lines: nobody/nogroup as root
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "netsync", "--daemon", "--no-detach",
                             f"--port={port}", f"--config={conf}", "--address=127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for_port(port, proc)
        dst = tmp_path / "dst"
        dst.mkdir()
        (dst / "big").write_bytes(big[:100_000] + b"changed" + big[100_000:])
        r = subprocess.run(["rsync", "-a", "--no-W", f"rsync://127.0.0.1:{port}/data/",
                            f"{dst}/"], capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert (dst / "big").read_bytes() == big
        assert (dst / "small").read_bytes() == b"hello\n"
    finally:
        stop(proc)
