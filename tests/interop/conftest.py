"""Fixtures for interop tests: real sshd and rsync daemon peers (see peers.py)."""

from interop.peers import rsyncd, sshd_server  # noqa: F401
