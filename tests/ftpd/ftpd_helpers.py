"""Helpers shared by the netsync-ftpd tests (clients, skip policy)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAM_FILE = REPO / "packaging" / "pam.d" / "netsync-ftpd"
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing -- but in CI a skip would hide a
    regression, so there it is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"netsync-ftpd exited early: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("netsync-ftpd did not start listening")


def lftp(script: str, timeout: float = 30) -> subprocess.CompletedProcess:
    need(shutil.which("lftp") is not None, "lftp not installed")
    settings = ("set net:max-retries 1; set net:reconnect-interval-base 1; "
                "set net:timeout 10; set cmd:fail-exit true; ")
    return subprocess.run(["lftp", "-c", settings + script], capture_output=True, text=True,
                          timeout=timeout)


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    need(shutil.which("curl") is not None, "curl not installed")
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True,
                          timeout=timeout)
