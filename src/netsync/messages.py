"""Typed messages the three roles exchange.

These mirror what rsync puts on its wire between generator, sender and
receiver; a transport either hands them over in-process or encodes them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator

from netsync.record import Record, factory

TYPE_CHECKING = False  # (typing costs ~3 ms at start-up; only the type checker needs it)
if TYPE_CHECKING:
    from typing import Any


class FatalError(Exception):
    """A role hit a condition that ends the whole transfer (rsync's exit_cleanup)."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message or f"exit {code}")
        self.code = code
        self.message = message


class SendRequest:
    """Generator -> sender: send file ``ndx`` (rsync: ndx, iflags, sum head + sums).

    One per file, so a slotted class with its own ``__init__`` (see netsync.record)."""

    __slots__ = ("ndx", "iflags", "sums", "checksum_name", "seed", "protocol", "basis",
                 "fuzzy_type", "fuzzy_name")

    def __init__(self, ndx: int, iflags: int, sums: Any = None, checksum_name: str = "md5",
                 seed: int = 0, protocol: int = 32, basis: bytes | None = None,
                 fuzzy_type: int = 0, fuzzy_name: bytes | None = None) -> None:
        self.ndx = ndx
        self.iflags = iflags
        self.sums = sums  # netsync.match.BlockSums or None for a whole-file send
        self.checksum_name = checksum_name
        self.seed = seed
        self.protocol = protocol
        self.basis = basis  # the basis file the sums describe (a wire client reads it)
        # A --fuzzy basis: its fnamecmp type (0x83 + basis dir) and name, which a wire
        # generator sends on (the sender's --inplace matching depends on the type).
        self.fuzzy_type = fuzzy_type
        self.fuzzy_name = fuzzy_name

    def __repr__(self) -> str:
        return f"SendRequest(ndx={self.ndx}, iflags={self.iflags:#x}, sums={self.sums!r})"


class DiscardFile(Exception):
    """Raised by a token stream: drop this file's new data (e.g. it failed verification)."""


class SourceFd:
    """The sender's open source file: closed exactly once, by whoever finishes first
    (the token stream when consumed, or the receiver when it copied the fd directly)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class FileData:
    """Sender -> receiver: the echoed request and the file's token stream.

    ``tokens`` yields literal ``bytes`` (<= 32 KiB each) or ``int`` block
    indexes into the basis file. An in-process transport may also set
    ``source_fd`` so the receiver can copy with copy_file_range instead of
    consuming the tokens; it must then close the tokens iterator.
    """

    __slots__ = ("ndx", "iflags", "sums", "tokens", "source_fd", "size", "failed", "closer",
                 "file_sum")

    def __init__(self, ndx: int, iflags: int, sums: Any, tokens: Iterator[bytes | int],
                 source_fd: int | None = None, size: int = 0, failed: bool = False,
                 closer: Callable[[], None] | None = None,
                 file_sum: list[bytes] | None = None) -> None:
        self.ndx = ndx
        self.iflags = iflags
        self.sums = sums
        self.tokens = tokens
        self.source_fd = source_fd
        self.size = size
        self.failed = failed
        self.closer = closer
        # Delta tokens hash the file as they go: its checksum lands here once they
        # are done, so the wire sender need not read the matched blocks again.
        self.file_sum = file_sum

    def __repr__(self) -> str:
        return f"FileData(ndx={self.ndx}, size={self.size}, failed={self.failed})"

    def close(self) -> None:
        """Release a local source: stop its token stream and close the file (idempotent).

        Data arriving over a wire has no closer: its transport reads past whatever the
        receiver did not consume, so the stream stays in step."""
        if self.closer is None:
            return
        close = getattr(self.tokens, "close", None)
        if close is not None:
            close()
        self.closer()


class Done:
    """NDX_DONE: end of a phase."""

    __slots__ = ("phase",)

    def __init__(self, phase: int) -> None:
        self.phase = phase

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Done) and other.phase == self.phase

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Done(phase={self.phase})"


class Stats(Record):
    """Transfer counters (rsync's struct stats) kept by the roles."""

    num_files: int = 0
    num_reg: int = 0
    num_dirs: int = 0
    num_links: int = 0
    num_devs: int = 0
    num_specials: int = 0
    created_files: int = 0
    created_reg: int = 0
    created_dirs: int = 0
    created_links: int = 0
    created_devs: int = 0
    created_specials: int = 0
    deleted_files: int = 0
    deleted_reg: int = 0
    deleted_dirs: int = 0
    deleted_links: int = 0
    deleted_devs: int = 0
    deleted_specials: int = 0
    xferred_files: int = 0
    total_size: int = 0
    total_transferred_size: int = 0
    literal_data: int = 0
    matched_data: int = 0
    flist_size: int = 0
    flist_buildtime: float = 0.0
    flist_xfertime: float = 0.0
    total_written: int = 0
    total_read: int = 0
    extra: dict[str, int] = factory(dict)

    def count(self, prefix: str, mode: int) -> None:
        """One more item in ``<prefix>_files`` and in its kind's subset
        (``prefix`` is num, created or deleted; regular files are the remainder)."""
        kind = _kind(mode)
        setattr(self, f"{prefix}_files", getattr(self, f"{prefix}_files") + 1)
        if kind:
            name = f"{prefix}_{kind}"
            setattr(self, name, getattr(self, name) + 1)

    def count_listed(self, entries: Iterable[Any]) -> None:
        """Number of files and total size of a file list (what --stats reports)."""
        # By file type in bulk: this is the hot path of a no-op over a big tree.
        entries = entries if isinstance(entries, list) else list(entries)
        fmts = [e.mode & 0o170000 for e in entries]
        self.num_files += len(fmts)
        dirs, links = fmts.count(stat.S_IFDIR), fmts.count(stat.S_IFLNK)
        regs = fmts.count(stat.S_IFREG)
        if dirs or links or regs != len(fmts):
            devs = fmts.count(stat.S_IFCHR) + fmts.count(stat.S_IFBLK)
            self.num_dirs += dirs
            self.num_links += links
            self.num_devs += devs
            self.num_specials += len(fmts) - dirs - links - regs - devs
            self.total_size += sum(e.size for e in entries
                                   if e.mode & 0o170000 in (stat.S_IFREG, stat.S_IFLNK))
        else:
            self.total_size += sum(e.size for e in entries)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "dirs"
    if stat.S_ISLNK(mode):
        return "links"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "devs"
    return "specials"
