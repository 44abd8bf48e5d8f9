"""The file list: compact per-file records, rsync's sort order, and the sender's walk.

Names are bytes relative to the transfer root (``b"."`` is the top directory,
``b"dir/sub/file"`` below it), exactly the names rsync puts on the wire.
"""

from __future__ import annotations

import stat
from collections import deque
from collections.abc import Callable, Iterator

from netsync.record import Record, factory

# FileEntry.flags bits (rsync.h FLAG_* where one exists).
FLAG_TOP_DIR = 1 << 0
FLAG_IMPLIED_DIR = 1 << 1  # a parent added by -R, not named by the user
FLAG_CONTENT_DIR = 1 << 2  # a directory whose contents are in the list (recursion/-d)
FLAG_HLINK_FIRST = 1 << 3
FLAG_HLINK_FOLLOWER = 1 << 4
FLAG_MOUNT_DIR = 1 << 5  # -x: a directory on another filesystem (contents not listed)
FLAG_DUPLICATE = 1 << 6  # deactivated duplicate
FLAG_MISSING_DIR = 1 << 7  # receiver: dir could not be made; skip its contents
FLAG_DIR_CREATED = 1 << 8  # the destination dir was made by get_local_name


class FileEntry:
    """One file-list record. Slots keep a million of these near rsync's footprint."""

    __slots__ = (
        "name", "mode", "size", "mtime_ns", "uid", "gid", "rdev", "link",
        "flags", "root", "hlink", "checksum", "atime_ns", "xattr", "acl",
    )

    def __init__(
        self,
        name: bytes,
        mode: int,
        size: int = 0,
        mtime_ns: int = 0,
        uid: int = 0,
        gid: int = 0,
        rdev: int = 0,
        link: bytes | None = None,
        flags: int = 0,
        root: int = 0,
    ) -> None:
        self.name = name
        self.mode = mode
        self.size = size
        self.mtime_ns = mtime_ns
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.link = link
        self.flags = flags
        self.root = root
        # -H: for a follower, the flist index of its group's first member; for the
        # first member, a (dev, ino) key is not kept once groups are built.
        self.hlink: int | None = None
        self.checksum: bytes | None = None
        self.atime_ns = 0
        # -X / -A: the entry's xattr list and ACLs (netsync.xattrs / netsync.acls);
        # None when not preserved, so a run without them carries no extra data.
        self.xattr: object = None
        self.acl: object = None

    @property
    def mtime(self) -> int:
        return self.mtime_ns // 1_000_000_000

    @property
    def mtime_nsec(self) -> int:
        return self.mtime_ns % 1_000_000_000

    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"FileEntry({self.name!r}, {oct(self.mode)}, size={self.size})"


def sort_key(name: bytes, is_dir: bool) -> bytes:
    """A bytes key that orders like rsync's f_name_cmp for protocol >= 29.

    At each directory level, non-directories sort before directories, and a
    directory compares as ``name/``. Each path component is prefixed with a type
    byte (0 = leaf item, 1 = path) so a plain bytes comparison does the job.
    """
    if name == b".":
        return b"\x00"
    parts = name.split(b"/")
    out = bytearray()
    for comp in parts[:-1]:
        out += b"\x01" + comp + b"/"
    last = parts[-1]
    if is_dir:
        out += b"\x01" + last + b"/"
    else:
        out += b"\x00" + last
    return bytes(out)


def entry_key(e: FileEntry) -> bytes:
    return sort_key(e.name, stat.S_ISDIR(e.mode))


def parent_of(name: bytes) -> bytes:
    i = name.rfind(b"/")
    return b"." if i < 0 else name[:i]


def dirs_kept_by_prune(entries, excluded: Callable[[bytes], bool] | None = None) -> set[bytes]:
    """flist.c recv_file_list() with -m: the dirs that are not pruned.  A dir stays
    when a non-dir lies somewhere below it, or when the receiver's filters exclude
    it or a dir below it (a "protect" rule keeps an empty dir, as the manual
    says: is_excluded() keeps the chain of dirs through it)."""
    keep: set[bytes] = {b"."}

    def up(name: bytes) -> None:
        while name not in keep:
            keep.add(name)
            i = name.rfind(b"/")
            if i < 0:
                return
            name = name[:i]

    for e in entries:
        if e.flags & FLAG_DUPLICATE:
            continue
        name = e.name
        if stat.S_ISDIR(e.mode):
            if excluded is not None and name != b"." and excluded(name):
                up(name)
        else:
            i = name.rfind(b"/")
            if i >= 0:
                up(name[:i])
    return keep


def join(base: bytes, name: bytes) -> bytes:
    if name == b".":
        return base
    if not base:
        return name
    if base.endswith(b"/"):
        return base + name
    return base + b"/" + name


class FileList(Record):
    """The sorted file list plus the source roots the sender reads from.

    When it is streamed a directory at a time (:class:`ChunkFeed`), ``entries`` stays
    empty and ``cur`` holds the chunk being generated, whose first entry is ``cur_base``.
    """

    entries: list[FileEntry] = factory(list)
    roots: list[bytes] = factory(list)
    io_error: int = 0
    cur: list[FileEntry] | None = None
    cur_base: int = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self.entries)

    def entry(self, ndx: int) -> FileEntry:
        if self.cur is None:
            return self.entries[ndx]
        return self.cur[ndx - self.cur_base]

    def source_path(self, e: FileEntry) -> bytes:
        return join(self.roots[e.root], e.name)


# One directory's part of the list: (its entry or None for the top level, its children).
Chunk = tuple[FileEntry | None, list[FileEntry]]

# rsync.h MIN_FILECNT_LOOKAHEAD: how far the sender lists ahead of the generator.
LOOKAHEAD = 1000


class ChunkFeed:
    """The file list as rsync's incremental recursion delivers it: chunks listed up to
    LOOKAHEAD entries ahead of the one being generated, then dropped, so memory stays
    flat however many files the tree holds (only directories are kept, by their users).

    ``on_chunk(children)`` sees each chunk once, when it is listed (stats, --chmod).
    """

    def __init__(self, chunks: Iterator[Chunk], flist: FileList,
                 on_chunk: Callable[[list[FileEntry]], None] | None = None,
                 on_eof: Callable[[], None] | None = None) -> None:
        self._it = chunks
        self.flist = flist
        self.on_chunk = on_chunk
        self.on_eof = on_eof
        self._queue: deque[tuple[FileEntry | None, int, int, list[FileEntry], int]] = deque()
        self.queued = 0  # entries listed but not yet handed to the generator
        self.listed = 0  # entries listed so far (the next chunk's first ndx)
        self._dir_ndx: dict[FileEntry, int] = {}  # listed dirs whose chunk is still to come
        self.eof = False
        self.first: list[FileEntry] = []  # the top-level entries (get_local_name)

    def fill(self, at_least: int = LOOKAHEAD) -> None:
        """List chunks until ``at_least`` entries wait or the walk is over."""
        while not self.eof and self.queued < at_least:
            try:
                d, children = next(self._it)
            except StopIteration:
                self.eof = True
                if self.on_eof is not None:
                    self.on_eof()
                break
            base = self.listed
            n = len(children)
            self.listed += n
            self.queued += n
            if d is None and not self.first:
                self.first = children
            dndx = self._dir_ndx.pop(d, -1) if d is not None else -1
            for i, e in enumerate(children):
                if e.mode & 0o170000 == 0o040000:
                    self._dir_ndx[e] = base + i
            if self.on_chunk is not None:
                self.on_chunk(children)
            # The I/O errors known once this chunk is listed, as rsync's end of each
            # list carries them: the generator learns of them when it gets there.
            self._queue.append((d, dndx, base, children, self.flist.io_error))

    def next_chunk(self) -> tuple[FileEntry | None, int, int, list[FileEntry], int] | None:
        """The next chunk to generate: (dir entry, its ndx, first ndx, children, the
        I/O errors of the lists up to this one)."""
        self.fill()
        if not self._queue:
            return None
        chunk = self._queue.popleft()
        self.queued -= len(chunk[3])
        self.flist.cur, self.flist.cur_base = chunk[3], chunk[2]
        return chunk


class WalkOptions(Record):
    """What the sender's walk needs from the command line."""

    recursive: bool = False
    dirs: bool = False
    relative: bool = False
    implied_dirs: bool = True
    links: bool = False
    copy_links: bool = False
    copy_unsafe_links: bool = False
    copy_dirlinks: bool = False
    one_file_system: int = 0
    hard_links: bool = False
    devices: bool = False
    specials: bool = False
    checksum: bool = False
    atimes: bool = False
    # -X: called with (entry, path); gives the entry its xattr list (netsync.xattrs),
    # or returns False when they cannot be read (the entry is left out).
    xattrs: Callable[[FileEntry, bytes], bool] | None = None
    acls: int = 0  # -A: 1 reads each entry's ACLs for the wire, 2 for a local copy


# Hooks the walk calls; the sender supplies them (filters, errors, checksums).
ExcludeFn = Callable[[bytes, bool], bool]


def is_unsafe_symlink(target: bytes, name: bytes) -> bool:
    """rsync's unsafe_symlink(): does ``target`` (in link ``name``) leave the tree?"""
    if not target or target.startswith(b"/"):
        return True
    # util1.c: ".." is only allowed as leading components; "/../" later or a
    # trailing "/.." is unsafe however deep the link sits.
    rest = target
    while rest.startswith(b"../"):
        rest = rest[3:].lstrip(b"/")
    if b"/../" in rest or (len(target) > 3 and target.endswith(b"/..")):
        return True
    # Depth of the link's directory below the transfer root.
    depth = name.count(b"/")
    if name.startswith(b"./"):
        depth -= 1
    for comp in target.split(b"/"):
        if comp == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif comp and comp != b".":
            depth += 1
    return False
