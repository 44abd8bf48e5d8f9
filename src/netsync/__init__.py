"""netsync: rsync-compatible file synchronization in Python."""

__version__ = "0.1.0"
# The newest rsync protocol version we speak.
PROTOCOL_VERSION = 32
