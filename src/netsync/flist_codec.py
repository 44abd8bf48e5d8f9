"""Sans-I/O codec for rsync's file-list records (flist.c send/recv_file_entry, uidlist.c).

:class:`FlistEncoder` turns :class:`~netsync.flist.FileEntry` objects into the
bytes rsync's ``send_file_entry()`` writes; :class:`FlistDecoder` is the
receiving half, fed with bytes and validating them the way a receiver must
treat a possibly hostile sender.  Both keep the "previous entry" state rsync
keeps in static variables for the whole connection (it survives from one
incremental-recursion sub-list to the next), so use one instance per
direction per connection.

Hard links: ``FileEntry.hlink`` is the *wire* index of the group's first
member (the global index in send order, i.e. ``ndx_start`` of its list plus
its position in that list), ``FLAG_HLINK_FIRST`` marks the first member and
``FLAG_HLINK_FOLLOWER`` the others.  That is what goes on the wire from
protocol 30; for 28-29 the decoder turns the dev/ino pairs into the same
shape.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from .errors import RERR_MALLOC, RERR_PROTOCOL, RERR_UNSUPPORTED
from .flist import (
    FLAG_CONTENT_DIR,
    FLAG_DUPLICATE,
    FLAG_HLINK_FIRST,
    FLAG_HLINK_FOLLOWER,
    FLAG_IMPLIED_DIR,
    FLAG_TOP_DIR,
    FileEntry,
    sort_key,
)
from .wire import (
    NDX_FLIST_OFFSET,
    Buffer,
    Reader,
    TruncatedError,
    WireError,
    decode_varint,
    decode_varlong,
    encode_int32,
    encode_longint,
    encode_shortint,
    encode_varint,
    encode_varint30,
    encode_varlong,
)

# rsync.h XMIT_* bits (several are reused with a protocol-dependent meaning).
XMIT_TOP_DIR = 1 << 0
XMIT_SAME_MODE = 1 << 1
XMIT_SAME_RDEV_PRE28 = 1 << 2  # protocols 20-27
XMIT_EXTENDED_FLAGS = 1 << 2  # protocols 28+
XMIT_SAME_UID = 1 << 3
XMIT_SAME_GID = 1 << 4
XMIT_SAME_NAME = 1 << 5
XMIT_LONG_NAME = 1 << 6
XMIT_SAME_TIME = 1 << 7
XMIT_SAME_RDEV_MAJOR = 1 << 8  # devices, 28+
XMIT_NO_CONTENT_DIR = 1 << 8  # directories, 30+
XMIT_HLINKED = 1 << 9  # non-directories, 28+
XMIT_SAME_DEV_PRE30 = 1 << 10  # 28-29
XMIT_USER_NAME_FOLLOWS = 1 << 10  # 30+
XMIT_RDEV_MINOR_8_PRE30 = 1 << 11  # 28-29
XMIT_GROUP_NAME_FOLLOWS = 1 << 11  # 30+
XMIT_HLINK_FIRST = 1 << 12  # 30+, with XMIT_HLINKED
XMIT_IO_ERROR_ENDLIST = 1 << 12  # end marker with safe flists (31+, or 30 with 'f')
XMIT_MOD_NSEC = 1 << 13  # 31+
XMIT_SAME_ATIME = 1 << 14

# compat.c CF_* bits that change the file-list encoding.
CF_INC_RECURSE = 1 << 0
CF_SAFE_FLIST = 1 << 3
CF_VARINT_FLIST_FLAGS = 1 << 7
CF_ID0_NAMES = 1 << 8

MAXPATHLEN = 4096
MAX_WIRE_NSEC = 999_999_999
IOERR_VALID_MASK = 0x7  # IOERR_GENERAL | IOERR_VANISHED | IOERR_DEL_LIMIT
NS = 1_000_000_000

_VALID_TYPES = frozenset(
    (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO,
     stat.S_IFSOCK)
)
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_SAME_MODE_IDS = XMIT_SAME_MODE | XMIT_SAME_UID | XMIT_SAME_GID
_I64 = struct.Struct("<q")

NameSource = Mapping[int, bytes] | Callable[[int], bytes | None] | None


_IFMT = 0o170000
_IFREG, _IFDIR, _IFLNK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
_DEVICES = frozenset((stat.S_IFCHR, stat.S_IFBLK))
_SPECIALS = frozenset((stat.S_IFIFO, stat.S_IFSOCK))


def _is_device(mode: int) -> bool:
    return mode & _IFMT in _DEVICES


class EndOfList(NamedTuple):
    """The end-of-list marker (plus any trailer); ``io_error`` is the sender's IOERR_* bits."""

    io_error: int = 0


class _Options:
    """The options and compat flags both halves of the codec depend on."""

    def __init__(
        self,
        protocol: int,
        compat_flags: int,
        preserve_uid: bool,
        preserve_gid: bool,
        preserve_links: bool,
        preserve_devices: bool,
        preserve_specials: bool,
        preserve_hard_links: bool,
        always_checksum: bool,
        checksum_len: int,
        preserve_atimes: bool,
        numeric_ids: bool,
    ) -> None:
        if not 27 <= protocol <= 32:
            raise ValueError(f"unsupported protocol {protocol}")
        if protocol < 30:
            compat_flags = 0  # no compat flags are exchanged below 30
        self.protocol = protocol
        self.compat_flags = compat_flags
        self.inc_recurse = bool(compat_flags & CF_INC_RECURSE)
        self.varint_flags = bool(compat_flags & CF_VARINT_FLIST_FLAGS)
        self.safe_flist = bool(compat_flags & CF_SAFE_FLIST) or protocol >= 31
        self.id0_names = bool(compat_flags & CF_ID0_NAMES)
        self.preserve_uid = preserve_uid
        self.preserve_gid = preserve_gid
        self.preserve_links = preserve_links
        self.preserve_devices = preserve_devices
        self.preserve_specials = preserve_specials
        self.preserve_hard_links = preserve_hard_links
        self.always_checksum = always_checksum
        self.checksum_len = checksum_len
        self.preserve_atimes = preserve_atimes
        self.numeric_ids = numeric_ids
        # uid/gid names travel inline with incremental recursion (protocol >= 30);
        # otherwise name lists follow the (first and only) list.
        self.id_lists_follow = not numeric_ids and not self.inc_recurse

    def rdev_on_wire(self, mode: int) -> bool:
        ftype = mode & _IFMT
        return (self.preserve_devices and ftype in _DEVICES) or (
            self.preserve_specials and ftype in _SPECIALS and self.protocol < 31
        )


# ---------------------------------------------------------------------------
# Encoder


class FlistEncoder(_Options):
    """send_file_entry() and friends: FileEntry -> bytes.

    ``user_names``/``group_names`` map an id to its name (a mapping or a
    callable returning None for unknown ids); they supply the inline names
    (protocol >= 30 with incremental recursion) and the trailing id lists.
    """

    # -X: the bytes of an entry's xattr list (netsync.xattrs.encode_xattr), sent
    # after the entry by encode_into().
    xattr_encode: Callable[[FileEntry], bytes] | None = None
    # --iconv (netsync.charset.Iconv): names go in UTF-8, and symlink targets too
    # with ``symlink_iconv`` (the sender left out what does not convert).
    iconv = None
    symlink_iconv = False

    def __init__(
        self,
        protocol: int,
        *,
        compat_flags: int = 0,
        preserve_uid: bool = False,
        preserve_gid: bool = False,
        preserve_links: bool = False,
        preserve_devices: bool = False,
        preserve_specials: bool = False,
        preserve_hard_links: bool = False,
        always_checksum: bool = False,
        checksum_len: int = 16,
        preserve_atimes: bool = False,
        numeric_ids: bool = False,
        user_names: NameSource = None,
        group_names: NameSource = None,
        ndx_start: int | None = None,
    ) -> None:
        super().__init__(
            protocol, compat_flags, preserve_uid, preserve_gid, preserve_links,
            preserve_devices, preserve_specials, preserve_hard_links, always_checksum,
            checksum_len, preserve_atimes, numeric_ids,
        )
        self._user_lookup = _lookup(user_names)
        self._group_lookup = _lookup(group_names)
        # Ids in first-use order with the name found for them (add_uid/add_gid).
        self.uid_list: dict[int, bytes | None] = {}
        self.gid_list: dict[int, bytes | None] = {}
        self.ndx_start = (1 if self.inc_recurse else 0) if ndx_start is None else ndx_start
        # send_file_entry()'s statics.
        self._lastname = b""
        self._mode = 0
        self._modtime = 0
        self._atime = 0
        self._rdev = 0
        self._rdev_major = 0
        self._uid = 0
        self._gid = 0
        self._dev = 0
        # A regular file from protocol 30 without atimes is most of any list: it takes
        # the short path at the top of encode_entry() (the same bytes, fewer branches).
        self._reg_fast = protocol >= 30 and not preserve_atimes
        self._lastint, self._lastint_of = 0, None  # _encode_file()'s last name, as an int
        self._hl_flags = (FLAG_HLINK_FIRST | FLAG_HLINK_FOLLOWER) if preserve_hard_links else 0
        # -A: an acls.AclEncoder (set by the caller); its data follows each entry.
        self.acls = None

    def acl_add_uid(self, id_: int) -> bytes | None:
        """add_uid() for an ACL's named user (its name the first time)."""
        return self._add_id(self.uid_list, self._user_lookup, id_)

    def acl_add_gid(self, id_: int) -> bytes | None:
        return self._add_id(self.gid_list, self._group_lookup, id_)

    def start_list(self, ndx_start: int) -> None:
        """Begin an incremental-recursion sub-list whose first index is ``ndx_start``."""
        self.ndx_start = ndx_start

    def _add_id(self, ids: dict[int, bytes | None], lookup: Callable[[int], bytes | None],
                id_: int) -> bytes | None:
        if id_ in ids:
            return None
        name = lookup(id_)
        ids[id_] = name
        return name

    def encode_entry(self, e: FileEntry, ndx: int = 0,
                     dev_ino: tuple[int, int] | None = None) -> bytes:
        """One file-list record.  ``ndx`` is the entry's wire index (used only to
        invent a dev/ino pair for hard links below protocol 30 when ``dev_ino``
        is not given)."""
        mode = e.mode
        name = e.name
        if self.iconv is not None:
            name = self.iconv.to_wire(name) or b""
        # (0 in name: the same test as b"\0" in name, without the TypeError that bytes'
        # "in" raises and clears for a bytes needle)
        if not name or 0 in name or len(name) >= MAXPATHLEN:
            raise ValueError(f"cannot send file name {name!r}")
        ftype = mode & _IFMT
        if ftype == _IFREG and self._reg_fast and not e.flags & self._hl_flags:
            return self._encode_file(e, mode, name)
        proto = self.protocol
        is_dir = ftype == _IFDIR
        is_reg = ftype == _IFREG
        xflags = 0
        if is_dir:
            if proto >= 30:
                if e.flags & FLAG_CONTENT_DIR:
                    xflags = XMIT_TOP_DIR if e.flags & FLAG_TOP_DIR else 0
                elif e.flags & FLAG_IMPLIED_DIR:
                    xflags = XMIT_TOP_DIR | XMIT_NO_CONTENT_DIR
                else:
                    xflags = XMIT_NO_CONTENT_DIR
            elif e.flags & FLAG_TOP_DIR:
                xflags = XMIT_TOP_DIR

        if mode == self._mode:
            xflags |= XMIT_SAME_MODE
        else:
            self._mode = mode

        rdev_minor_wire = 0
        is_dev = self.preserve_devices and ftype in _DEVICES
        rdev_on_wire = is_dev or (
            self.preserve_specials and ftype in _SPECIALS and proto < 31)
        if is_dev:
            if proto < 28:
                if e.rdev == self._rdev:
                    xflags |= XMIT_SAME_RDEV_PRE28
                else:
                    self._rdev = e.rdev
            else:
                self._rdev = e.rdev
                major = os.major(e.rdev)
                rdev_minor_wire = os.minor(e.rdev)
                if major == self._rdev_major:
                    xflags |= XMIT_SAME_RDEV_MAJOR
                else:
                    self._rdev_major = major
                if proto < 30 and rdev_minor_wire <= 0xFF:
                    xflags |= XMIT_RDEV_MINOR_8_PRE30
        elif rdev_on_wire:
            # rsync sends a dummy rdev as cheaply as the format allows.
            if proto < 28:
                xflags |= XMIT_SAME_RDEV_PRE28
            else:
                self._rdev = os.makedev(self._rdev_major, 0)
                xflags |= XMIT_SAME_RDEV_MAJOR
                if proto < 30:
                    xflags |= XMIT_RDEV_MINOR_8_PRE30
        elif proto < 28:
            self._rdev = 0

        user_name = group_name = None
        preserve_uid, preserve_gid = self.preserve_uid, self.preserve_gid
        if not preserve_uid or (e.uid == self._uid and self._lastname):
            xflags |= XMIT_SAME_UID
        else:
            self._uid = e.uid
            if not self.numeric_ids:
                user_name = self._add_id(self.uid_list, self._user_lookup, e.uid)
                if self.inc_recurse and user_name:
                    xflags |= XMIT_USER_NAME_FOLLOWS
        if not preserve_gid or (e.gid == self._gid and self._lastname):
            xflags |= XMIT_SAME_GID
        else:
            self._gid = e.gid
            if not self.numeric_ids:
                group_name = self._add_id(self.gid_list, self._group_lookup, e.gid)
                if self.inc_recurse and group_name:
                    xflags |= XMIT_GROUP_NAME_FOLLOWS

        modtime, nsec = divmod(e.mtime_ns, NS)
        if modtime == self._modtime:
            xflags |= XMIT_SAME_TIME
        else:
            self._modtime = modtime
        if nsec and proto >= 31:
            xflags |= XMIT_MOD_NSEC
        preserve_atimes = self.preserve_atimes and not is_dir
        atime = e.atime_ns // NS if preserve_atimes else 0
        if preserve_atimes:
            if atime == self._atime:
                xflags |= XMIT_SAME_ATIME
            else:
                self._atime = atime

        first_hlink_ndx = -1
        hl_dev = hl_ino = -1
        if self.preserve_hard_links and (
            (not is_dir and e.flags & (FLAG_HLINK_FIRST | FLAG_HLINK_FOLLOWER))
            or (proto < 28 and is_reg)
        ):
            if proto >= 30:
                if e.flags & FLAG_HLINK_FOLLOWER:
                    if e.hlink is None or e.hlink < 0:
                        raise ValueError(f"hard-link follower {name!r} has no first index")
                    first_hlink_ndx = e.hlink
                else:
                    xflags |= XMIT_HLINK_FIRST
            else:
                if dev_ino is None:
                    group = e.hlink if e.flags & FLAG_HLINK_FOLLOWER and e.hlink is not None else ndx
                    dev_ino = (0, group)
                hl_dev, hl_ino = dev_ino
                if hl_dev == self._dev:
                    if proto >= 28:
                        xflags |= XMIT_SAME_DEV_PRE30
                else:
                    self._dev = hl_dev
            xflags |= XMIT_HLINKED

        l1 = _common_prefix(self._lastname, name, 255)
        l2 = len(name) - l1
        if l1:
            xflags |= XMIT_SAME_NAME
        if l2 > 255:
            xflags |= XMIT_LONG_NAME

        out = bytearray()
        if self.varint_flags:
            out += _varint_bytes(xflags or XMIT_EXTENDED_FLAGS)
        elif proto >= 28:
            if not xflags and not is_dir:
                xflags |= XMIT_TOP_DIR  # harmless on a non-dir; 0 would end the list
            if xflags & 0xFF00 or not xflags:
                xflags |= XMIT_EXTENDED_FLAGS
                out += encode_shortint(xflags)
            else:
                out.append(xflags)
        else:
            if not xflags & 0xFF:
                xflags |= XMIT_LONG_NAME if is_dir else XMIT_TOP_DIR
            out.append(xflags & 0xFF)
        if xflags & XMIT_SAME_NAME:
            out.append(l1)
        if xflags & XMIT_LONG_NAME:
            out += encode_varint30(l2, proto)
        else:
            out.append(l2)
        out += name[l1:]
        self._lastname = name

        if first_hlink_ndx >= 0:
            out += _varint_bytes(first_hlink_ndx)
            if first_hlink_ndx >= self.ndx_start:
                return bytes(out)  # the receiver copies the rest from the first

        out += (_varlong_bytes(e.size, 3) if proto >= 30 else encode_longint(e.size))
        if not xflags & XMIT_SAME_TIME:
            if proto >= 30:
                out += _varlong_bytes(modtime, 4)
            else:
                out += _U32.pack(modtime & 0xFFFFFFFF)
        if xflags & XMIT_MOD_NSEC:
            out += _varint_bytes(nsec)
        if not xflags & XMIT_SAME_MODE:
            out += encode_int32(mode)
        if preserve_atimes and not xflags & XMIT_SAME_ATIME:
            out += _varlong_bytes(atime, 4)
        if preserve_uid and not xflags & XMIT_SAME_UID:
            if proto < 30:
                out += encode_int32(e.uid)
            else:
                out += _varint_bytes(e.uid)
                if xflags & XMIT_USER_NAME_FOLLOWS:
                    out += _short_name(user_name)
        if preserve_gid and not xflags & XMIT_SAME_GID:
            if proto < 30:
                out += encode_int32(e.gid)
            else:
                out += _varint_bytes(e.gid)
                if xflags & XMIT_GROUP_NAME_FOLLOWS:
                    out += _short_name(group_name)
        if rdev_on_wire:
            if proto < 28:
                if not xflags & XMIT_SAME_RDEV_PRE28:
                    out += _U32.pack(self._rdev & 0xFFFFFFFF)
            else:
                if not xflags & XMIT_SAME_RDEV_MAJOR:
                    out += encode_varint30(self._rdev_major, proto)
                if proto >= 30:
                    out += _varint_bytes(rdev_minor_wire)
                elif xflags & XMIT_RDEV_MINOR_8_PRE30:
                    out.append(rdev_minor_wire)
                else:
                    out += encode_int32(rdev_minor_wire)
        if self.preserve_links and ftype == _IFLNK:
            target = e.link or b""
            if self.symlink_iconv and self.iconv is not None:
                target = self.iconv.to_wire(target) or b""
            if not target or len(target) >= MAXPATHLEN:
                raise ValueError(f"cannot send symlink target {target!r}")
            out += encode_varint30(len(target), proto)
            out += target
        if hl_dev != -1 or hl_ino != -1:
            # Below 30 the dev number travels 1-incremented so it is never 0.
            if not xflags & XMIT_SAME_DEV_PRE30:
                out += encode_longint(self._dev + 1)
            out += encode_longint(hl_ino)
        if self.always_checksum and (is_reg or proto < 28):
            if is_reg:
                s = e.checksum
                if s is None or len(s) != self.checksum_len:
                    raise ValueError(f"{name!r}: need a {self.checksum_len}-byte checksum")
                out += s
            else:
                out += bytes(self.checksum_len)  # rsync < 28 sent zeros here
        return bytes(out)

    def encode_into(self, parts: list[bytes], entries: Iterable[FileEntry],
                    start: int = 0) -> None:
        """encode_entry() of each of ``entries`` (indexes from ``start``), appended to
        ``parts`` one record each; a record that cannot be encoded raises with the ones
        before it in ``parts``.  A plain file takes the fast path without a call per
        check."""
        add = parts.append
        encode_entry = self.encode_entry
        xattrs = self.xattr_encode
        if self.acls is not None or xattrs is not None:
            # flist.c send_file_name(): after the entry, -A's send_acl() (not for a
            # symlink), then -X's send_xattr().
            acl_enc = self.acls.encode if self.acls is not None else None
            for ndx, e in enumerate(entries, start):
                rec = encode_entry(e, ndx)
                if acl_enc is not None and e.mode & _IFMT != _IFLNK:
                    rec += acl_enc(e.acl, e.mode)
                if xattrs is not None:
                    rec += xattrs(e)
                add(rec)
            return
        encode_file = self._encode_file
        fast = self._reg_fast and self.iconv is None  # (encode_entry() converts)
        hl_flags = self._hl_flags
        for ndx, e in enumerate(entries, start):
            mode = e.mode
            name = e.name
            if fast and mode & _IFMT == _IFREG and not e.flags & hl_flags and name \
                    and 0 not in name and len(name) < MAXPATHLEN:
                add(encode_file(e, mode, name))
            else:
                add(encode_entry(e, ndx))

    def _encode_file(self, e: FileEntry, mode: int, name: bytes) -> bytes:
        """encode_entry() of a regular file from protocol 30, without atimes and not
        hard-linked: the general path's steps in its order, with the branches that
        cannot apply left out."""
        lastname = self._lastname
        if mode == self._mode:
            xflags = XMIT_SAME_MODE
        else:
            xflags = 0
            self._mode = mode
        user_name = group_name = None
        uid = e.uid
        if not self.preserve_uid or (uid == self._uid and lastname):
            xflags |= XMIT_SAME_UID
        else:
            self._uid = uid
            if not self.numeric_ids:
                user_name = self._add_id(self.uid_list, self._user_lookup, uid)
                if self.inc_recurse and user_name:
                    xflags |= XMIT_USER_NAME_FOLLOWS
        gid = e.gid
        if not self.preserve_gid or (gid == self._gid and lastname):
            xflags |= XMIT_SAME_GID
        else:
            self._gid = gid
            if not self.numeric_ids:
                group_name = self._add_id(self.gid_list, self._group_lookup, gid)
                if self.inc_recurse and group_name:
                    xflags |= XMIT_GROUP_NAME_FOLLOWS
        modtime, nsec = divmod(e.mtime_ns, NS)
        if modtime == self._modtime:
            xflags |= XMIT_SAME_TIME
        else:
            self._modtime = modtime
        if nsec and self.protocol >= 31:
            xflags |= XMIT_MOD_NSEC
        else:
            nsec = 0
        # _common_prefix(), inline; the name's value is kept for the next one (names of
        # one length in a row, as a directory's usually are, then need one conversion).
        ln = len(name)
        cur = int.from_bytes(name, "big")
        if ln == len(lastname) and ln <= 255 and self._lastint_of is lastname:
            l1 = ln - ((self._lastint ^ cur).bit_length() + 7) // 8
        else:
            n = min(len(lastname), ln, 255)
            l1 = n - ((int.from_bytes(lastname[:n], "big") ^ int.from_bytes(name[:n], "big")
                       ).bit_length() + 7) // 8
        self._lastint = cur
        self._lastint_of = self._lastname = name
        l2 = ln - l1
        if l1:
            xflags |= XMIT_SAME_NAME
        if l2 <= 255 and self.varint_flags:
            # The usual: the flags (a varint below 0x4000, one or two bytes) and the
            # name's two lengths in one bytes(), then the name's new part.
            xf = xflags or XMIT_EXTENDED_FLAGS
            if xf < 0x80:
                out = (bytes((xf, l1, l2)) if l1 else bytes((xf, l2))) + name[l1:]
            else:
                out = (bytes((0x80 | xf >> 8, xf & 0xFF, l1, l2)) if l1
                       else bytes((0x80 | xf >> 8, xf & 0xFF, l2))) + name[l1:]
        else:
            if l2 > 255:
                xflags |= XMIT_LONG_NAME
            if self.varint_flags:
                xf = xflags or XMIT_EXTENDED_FLAGS
                out = bytes((xf,)) if xf < 0x80 else bytes((0x80 | xf >> 8, xf & 0xFF))
            else:
                if not xflags:
                    xflags = XMIT_TOP_DIR  # harmless on a non-dir; 0 would end the list
                out = (_U16.pack(xflags | XMIT_EXTENDED_FLAGS) if xflags & 0xFF00
                       else bytes((xflags,)))
            if l1:
                out += bytes((l1,))
            out += (_varint_bytes(l2) if l2 > 255 else bytes((l2,))) + name[l1:]
        size = e.size
        out += (bytes((size >> 16, size & 0xFF, size >> 8 & 0xFF)) if 0 <= size < 0x800000
                else encode_varlong(size, 3))
        if not xflags & XMIT_SAME_TIME:
            out += _varlong_bytes(modtime, 4)
        if nsec:
            # _varint_bytes(nsec), inline for the usual four or five bytes (nsec < 10**9)
            if nsec >= 0x10000000:
                out += (nsec << 8 | 0xF0).to_bytes(5, "little")
            elif nsec >= 0x200000:
                out += ((nsec & 0xFFFFFF) << 8 | 0xE0 | nsec >> 24).to_bytes(4, "little")
            else:
                out += _varint_bytes(nsec)
        if xflags & _SAME_MODE_IDS != _SAME_MODE_IDS:
            if not xflags & XMIT_SAME_MODE:
                out += _U32.pack(mode)
            if not xflags & XMIT_SAME_UID:
                out += _varint_bytes(uid)
                if xflags & XMIT_USER_NAME_FOLLOWS:
                    out += _short_name(user_name)
            if not xflags & XMIT_SAME_GID:
                out += _varint_bytes(gid)
                if xflags & XMIT_GROUP_NAME_FOLLOWS:
                    out += _short_name(group_name)
        if self.always_checksum:
            s = e.checksum
            if s is None or len(s) != self.checksum_len:
                raise ValueError(f"{name!r}: need a {self.checksum_len}-byte checksum")
            out += s
        return out

    def end_marker(self, io_error: int = 0) -> bytes:
        """write_end_of_flist(): just the marker that ends one list."""
        send_err = bool(io_error) and self.safe_flist
        if self.varint_flags:
            return b"\0" + encode_varint(io_error if send_err else 0)
        if send_err:
            return encode_shortint(XMIT_EXTENDED_FLAGS | XMIT_IO_ERROR_ENDLIST) + encode_varint(
                io_error
            )
        return b"\0"

    def end(self, io_error: int = 0) -> bytes:
        """Everything the sender writes after the last entry of a list: the end
        marker, then (without incremental recursion) the uid/gid name lists,
        then below protocol 30 the int io_error.

        At protocol 30 without safe flists a non-zero io_error cannot go in
        the list; the caller must send MSG_IO_ERROR (see :meth:`needs_io_error_msg`).
        """
        out = self.end_marker(io_error)
        if self.id_lists_follow:
            out += self.id_lists()
        if self.protocol < 30:
            out += encode_int32(io_error)
        return out

    def needs_io_error_msg(self, io_error: int) -> bool:
        return self.protocol >= 30 and bool(io_error) and not self.safe_flist

    def id_lists(
        self,
        uid_names: Mapping[int, bytes | None] | Iterable[tuple[int, bytes | None]] | None = None,
        gid_names: Mapping[int, bytes | None] | Iterable[tuple[int, bytes | None]] | None = None,
    ) -> bytes:
        """send_id_lists(): (id, name) pairs for each id met, ended by id 0.

        By default the ids met by :meth:`encode_entry` are sent, newest first
        as rsync does (it prepends to its lists).  Id 0 is sent by name only
        with the ID0_NAMES compat flag.
        """
        out = bytearray()
        if self.preserve_uid or self.acls is not None:
            out += self._one_list(
                _pairs(uid_names) if uid_names is not None else reversed(self.uid_list.items()),
                self._user_lookup,
            )
        if self.preserve_gid or self.acls is not None:
            out += self._one_list(
                _pairs(gid_names) if gid_names is not None else reversed(self.gid_list.items()),
                self._group_lookup,
            )
        return bytes(out)

    def _one_list(self, pairs: Iterable[tuple[int, bytes | None]],
                  lookup: Callable[[int], bytes | None]) -> bytes:
        out = bytearray()
        for id_, name in pairs:
            if id_ and name:
                out += encode_varint30(id_, self.protocol) + _short_name(name[:255])
        if self.id0_names:
            out += encode_varint30(0, self.protocol) + _short_name((lookup(0) or b"")[:255])
        else:
            out += encode_varint30(0, self.protocol)
        return bytes(out)


def _common_prefix(a: bytes, b: bytes, limit: int) -> int:
    """Length of the common prefix of a and b, at most limit.

    XOR of the two prefixes read as big-endian integers: its highest set bit
    is in the first differing byte (no per-byte Python loop)."""
    n = min(len(a), len(b), limit)
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - (x.bit_length() + 7) // 8


def _varlong_bytes(x: int, min_bytes: int) -> bytes:
    # Fast path of write_varlong() for the common small non-negative values.
    if 0 <= x < 1 << (8 * min_bytes - 1):
        return bytes((x >> (8 * (min_bytes - 1)),)) + (x & ((1 << (8 * (min_bytes - 1))) - 1)
                                                       ).to_bytes(min_bytes - 1, "little")
    return encode_varlong(x, min_bytes)


def _varint_bytes(x: int) -> bytes:
    """write_varint() for x >= 0 without its byte loop: k extra bytes (the low 8k bits,
    little-endian) after a first byte of k high one-bits and the value's top bits."""
    if 0 <= x < 0x80:
        return bytes((x,))
    if 0 <= x < 0x4000:
        return bytes((0x80 | x >> 8, x & 0xFF))
    if 0 <= x < 0x200000:
        return ((x & 0xFFFF) << 8 | 0xC0 | x >> 16).to_bytes(3, "little")
    if 0 <= x < 0x10000000:
        return ((x & 0xFFFFFF) << 8 | 0xE0 | x >> 24).to_bytes(4, "little")
    if 0 <= x < 1 << 32:
        return (x << 8 | 0xF0).to_bytes(5, "little")
    return encode_varint(x)


def _lookup(src: NameSource) -> Callable[[int], bytes | None]:
    if src is None:
        return lambda _id: None
    if callable(src):
        return src
    return src.get


def _pairs(src: Mapping[int, bytes | None] | Iterable[tuple[int, bytes | None]]
           ) -> Iterable[tuple[int, bytes | None]]:
    return src.items() if isinstance(src, Mapping) else src


def _short_name(name: bytes | None) -> bytes:
    name = name or b""
    if len(name) > 255:
        raise ValueError(f"user/group name too long: {name!r}")
    return bytes((len(name),)) + name


# ---------------------------------------------------------------------------
# Decoder


def clean_fname(name: bytes) -> bytes | None:
    """rsync's clean_fname(name, CFN_REFUSE_DOT_DOT_DIRS): drop empty and
    interior ``.`` components and a trailing slash; None if a ``..`` is present."""
    comps = name.split(b"/")
    if b".." in comps:
        return None
    if b"" not in comps and (b"." not in comps or comps.index(b".") == len(comps) - 1):
        return name
    last = len(comps) - 1
    kept = [c for i, c in enumerate(comps) if c and (c != b"." or i == last)]
    lead = b"/" if name.startswith(b"/") else b""
    return (lead + b"/".join(kept)) or b"."


def _unsafe(name: str) -> WireError:
    return WireError("ABORTING due to unsafe pathname from sender: " + name, RERR_UNSUPPORTED)


class _Need(Exception):
    """Internal: the buffer ends inside the record being parsed."""


class FlistDecoder(_Options):
    """recv_file_entry() and recv_file_list()'s loop, sans-I/O.

    ``feed(data)`` then call ``next_entry()`` until it returns None (more
    bytes needed).  It returns a :class:`FileEntry`, or an :class:`EndOfList`
    once a list and its trailer (uid/gid lists, the pre-30 io_error) are
    consumed.  Entries of the current list are also kept in ``entries`` (send
    order), which hard-link abbreviations refer to; call :meth:`start_list`
    before an incremental-recursion sub-list.  ``uid_names``/``gid_names``
    collect the sender's id -> name pairs (inline or from the id lists).

    Pass a shared :class:`~netsync.wire.Reader` as ``reader`` to decode a list
    in the middle of a stream that other code reads too.
    """

    #: 2 with --delete-missing-args: a mode-0 entry is allowed (set by the caller).
    missing_args = 0

    # A daemon module's name converter: asked about each new in-line user/group
    # name as the entry carrying it is read (uidlist.c recv_add_id()).
    name_hook: Callable[[str, bytes], object] | None = None
    # -A: an acls.AclDecoder; the ACL data after each entry (not a symlink's) is read
    # into it and the entry's ``acl`` set.
    acls = None

    # -X: read an entry's xattr field at a position (buf, pos, name) -> (parsed, pos),
    # raising TruncatedError when the buffer ends first; commit(parsed) -> its list.
    xattr_parse: Callable | None = None
    xattr_commit: Callable | None = None

    def __init__(
        self,
        protocol: int,
        *,
        compat_flags: int = 0,
        preserve_uid: bool = False,
        preserve_gid: bool = False,
        preserve_links: bool = False,
        preserve_devices: bool = False,
        preserve_specials: bool = False,
        preserve_hard_links: bool = False,
        always_checksum: bool = False,
        checksum_len: int = 16,
        preserve_atimes: bool = False,
        numeric_ids: bool = False,
        relative_paths: bool = False,
        recurse: bool = True,
        max_entries: int = 1 << 26,
        max_ids: int = 1 << 20,
        ndx_start: int | None = None,
        reader: Reader | None = None,
    ) -> None:
        super().__init__(
            protocol, compat_flags, preserve_uid, preserve_gid, preserve_links,
            preserve_devices, preserve_specials, preserve_hard_links, always_checksum,
            checksum_len, preserve_atimes, numeric_ids,
        )
        self.relative_paths = relative_paths
        self.recurse = recurse
        self.max_entries = max_entries
        self.max_ids = max_ids
        self.reader = reader if reader is not None else Reader(protocol=protocol)
        self.ndx_start = (1 if self.inc_recurse else 0) if ndx_start is None else ndx_start
        self.entries: list[FileEntry] = []
        # Incremental recursion: rsync's dir_flist (each list's directories,
        # sorted per list), which sub-list announcements index into.
        self.dir_names: list[bytes] = []
        self._dirs_listed: set[int] = set()
        self._next_ndx_start = self.ndx_start
        self._expect_dir: bytes | None = b"" if self.inc_recurse else None
        self.uid_names: dict[int, bytes] = {}
        self.gid_names: dict[int, bytes] = {}
        self.total_entries = 0
        # recv_file_entry()'s statics: the name, then (mode, modtime, atime,
        # uid, gid, rdev, rdev_major, dev) in one tuple (cheaper per entry).
        self._lastname = b""
        self._state = (0, 0, 0, 0, 0, 0, 0, 0)
        self._in_del_hier = False
        self._del_hier_name_len = 0
        self._idev: dict[tuple[int, int], int] = {}
        # Trailer state: None while in the list, else the step reached.
        self._trailer: int | None = None
        self._io_error = 0
        self._list_open = False  # entries seen, end marker not yet
        # How a message shows a received name: escaped as rsync prints it, by default.
        # A server sends its messages raw (rsync's client escapes what it prints).
        self.show_name: Callable[[bytes], str] = show_name
        self.who = "Receiver"  # who_am_i() reading the list: before the fork, at first

    # -- buffer handling ---------------------------------------------------

    def feed(self, data: Buffer) -> None:
        self.reader.feed(data)

    def start_list(self, ndx_start: int, parent_dir: bytes | None = None) -> None:
        """Begin a new list (an incremental-recursion sub-list) at index ``ndx_start``.

        With ``parent_dir`` every entry must lie directly in that directory
        (b"" = the transfer root).  :meth:`begin_sublist` does all this from
        the index the sender announced the list with.
        """
        self.ndx_start = ndx_start
        self.entries = []
        self._expect_dir = parent_dir

    def begin_sublist(self, ndx: int) -> int:
        """Incremental recursion: the sender announced a directory's list with
        ``ndx`` = NDX_FLIST_OFFSET - dir_ndx.  Checks it the way
        recv_file_list() does (a known directory, at most one list each),
        starts the list and returns dir_ndx."""
        dir_ndx = NDX_FLIST_OFFSET - ndx
        if not self.inc_recurse or self._list_open or self._trailer is not None:
            raise WireError("unexpected sub-list from sender", RERR_PROTOCOL)
        if not 0 <= dir_ndx < len(self.dir_names):
            raise WireError(f"Invalid dir index: {ndx} ({NDX_FLIST_OFFSET} - "
                            f"{NDX_FLIST_OFFSET - len(self.dir_names) + 1})", RERR_PROTOCOL)
        if dir_ndx in self._dirs_listed:
            raise WireError(f"refusing malicious duplicate flist for dir {dir_ndx}",
                            RERR_PROTOCOL)
        self._dirs_listed.add(dir_ndx)
        self.who = "receiver"  # (a sub-list is read by the forked receiver)
        self.start_list(self._next_ndx_start, self.dir_names[dir_ndx])
        return dir_ndx

    def close(self) -> None:
        """Declare end of input: raise TruncatedError inside a list or record."""
        if self.reader.remaining or self._list_open or self._trailer is not None:
            raise TruncatedError("connection closed in the middle of the file list")

    def entries_until_end(self) -> tuple[list[FileEntry], EndOfList] | None:
        """Decode what is buffered; the whole list once its end has arrived."""
        while True:
            item = self.next_entry()
            if item is None:
                return None
            if isinstance(item, EndOfList):
                return self.entries, item

    # -- decoding ------------------------------------------------------------

    def next_entry(self) -> FileEntry | EndOfList | None:
        if self._trailer is not None:
            return self._read_trailer()
        r = self.reader
        buf = r.buf
        pos = r.pos
        try:
            if self.varint_flags:
                flags, pos = _varint(buf, pos)
                if flags == 0:
                    err, pos = _varint(buf, pos)
                    r.pos = pos
                    return self._begin_trailer(err)
            else:
                flags = buf[pos]
                pos += 1
                if flags == 0:
                    r.pos = pos
                    return self._begin_trailer(0)
                if self.protocol >= 28 and flags & XMIT_EXTENDED_FLAGS:
                    flags |= buf[pos] << 8
                    pos += 1
                if flags == XMIT_EXTENDED_FLAGS | XMIT_IO_ERROR_ENDLIST:
                    if not self.safe_flist:
                        raise WireError(f"Invalid flist flag: {flags:x}", RERR_PROTOCOL)
                    err, pos = _varint(buf, pos)
                    r.pos = pos
                    return self._begin_trailer(err)
            entry, pos = self._entry(buf, pos, flags)
        except (_Need, TruncatedError, IndexError, struct.error):
            return None
        r.pos = pos
        self._list_open = True
        return entry

    def _entry(self, buf: bytearray, pos: int, xflags: int) -> tuple[FileEntry, int]:
        proto = self.protocol
        # (With incremental recursion the bound is per list, as rsync allocates per list.)
        if (len(self.entries) if self.inc_recurse else self.total_entries) >= self.max_entries:
            # flist_expand() past --max-alloc: rsync's "out of memory" (exit 22).
            raise WireError(f"ERROR: out of memory in flist_expand (over {self.max_entries} "
                            f"entries)", RERR_MALLOC)
        l1 = 0
        if xflags & XMIT_SAME_NAME:
            l1 = buf[pos]
            pos += 1
        if xflags & XMIT_LONG_NAME:
            if proto >= 30:
                l2, pos = _varint(buf, pos)
            else:
                l2 = _I32.unpack_from(buf, pos)[0]
                pos += 4
        else:
            l2 = buf[pos]
            pos += 1
        lastname = self._lastname
        if l2 < 0 or l2 >= MAXPATHLEN - l1:
            raise WireError(
                f"overflow: xflags=0x{xflags:x} l1={l1} l2={l2} in recv_file_entry", RERR_MALLOC
            )
        if l1 > len(lastname):
            raise WireError(f"name prefix length {l1} exceeds the previous name", RERR_PROTOCOL)
        end = pos + l2
        if end > len(buf):
            raise _Need
        raw = lastname[:l1] + buf[pos:end] if l1 else bytes(buf[pos:end])
        pos = end
        if b"\0" in raw or not raw:
            raise _unsafe(self.show_name(raw))
        name = clean_fname(raw)
        if name is None or (not self.relative_paths and name[:1] == b"/"):
            raise _unsafe(self.show_name(raw))
        if self._expect_dir is not None:
            cur_dir = name.rpartition(b"/")[0]
            if self.relative_paths and cur_dir[:1] == b"/":
                cur_dir = cur_dir[1:]
            if cur_dir != self._expect_dir:
                # (flist.c: "dir/basename", so a top-level name in a sub-list is "/name")
                shown = self.show_name(cur_dir + b"/" + name.rpartition(b"/")[2])
                raise WireError("ABORTING due to invalid path from sender: " + shown,
                                RERR_UNSUPPORTED)

        mode, modtime, atime, uid, gid, rdev, rdev_major, dev = self._state
        uname = gname = None
        nsec = 0
        link: bytes | None = None
        checksum: bytes | None = None
        first: FileEntry | None = None
        first_hlink_ndx = -1
        hl_key: tuple[int, int] | None = None

        if proto >= 30 and xflags & (XMIT_HLINKED | XMIT_HLINK_FIRST) == XMIT_HLINKED:
            first_hlink_ndx, pos = _varint(buf, pos)
            limit = self.ndx_start + len(self.entries)
            if first_hlink_ndx < 0 or first_hlink_ndx >= limit:
                raise WireError(
                    f"hard-link reference out of range: {first_hlink_ndx} ({limit})",
                    RERR_PROTOCOL,
                )
            if first_hlink_ndx >= self.ndx_start:
                first = self.entries[first_hlink_ndx - self.ndx_start]

        if first is not None:
            size = first.size
            modtime, nsec = divmod(first.mtime_ns, NS)
            mode = first.mode
            if self.preserve_atimes and not stat.S_ISDIR(mode):
                atime = first.atime_ns // NS
            if self.preserve_uid:
                uid = first.uid
            if self.preserve_gid:
                gid = first.gid
            if self.preserve_devices and _is_device(mode):
                rdev = first.rdev
                rdev_major = os.major(rdev)
            if stat.S_ISLNK(mode):
                link = first.link if self.preserve_links else b""
            checksum = first.checksum
        else:
            if proto >= 30:
                size, pos = _varlong(buf, pos, 3)
            else:
                size = _I32.unpack_from(buf, pos)[0]
                pos += 4
                if size == -1:
                    size = _I64.unpack_from(buf, pos)[0]
                    pos += 8
            if not xflags & XMIT_SAME_TIME:
                if proto >= 30:
                    modtime, pos = _varlong(buf, pos, 4)
                else:
                    modtime = _U32.unpack_from(buf, pos)[0]  # read_uint()
                    pos += 4
            if xflags & XMIT_MOD_NSEC:
                nsec, pos = _varint(buf, pos)
                if not 0 <= nsec <= MAX_WIRE_NSEC:
                    raise WireError(
                        f"wire value modtime_nsec out of range: {nsec} not in "
                        f"[0,{MAX_WIRE_NSEC}]",
                        RERR_PROTOCOL,
                    )
            if not xflags & XMIT_SAME_MODE:
                mode = _U32.unpack_from(buf, pos)[0]
                pos += 4
            # Mode 0 is --delete-missing-args' "missing" entry (flist.c recv_file_entry).
            if mode & _IFMT not in _VALID_TYPES and (mode or self.missing_args != 2):
                raise WireError(f"invalid file mode 0{mode:o} for {self.show_name(raw)} "
                                f"[{self.who}]", RERR_PROTOCOL)
            is_dir = mode & _IFMT == _IFDIR
            if self.preserve_atimes and not is_dir and not xflags & XMIT_SAME_ATIME:
                atime, pos = _varlong(buf, pos, 4)
            if self.preserve_uid and not xflags & XMIT_SAME_UID:
                if proto < 30:
                    uid = _U32.unpack_from(buf, pos)[0]
                    pos += 4
                else:
                    uid, pos = _varint(buf, pos)
                    uid &= 0xFFFFFFFF
                    if xflags & XMIT_USER_NAME_FOLLOWS:
                        uname, pos = _name_byte(buf, pos)
            if self.preserve_gid and not xflags & XMIT_SAME_GID:
                if proto < 30:
                    gid = _U32.unpack_from(buf, pos)[0]
                    pos += 4
                else:
                    gid, pos = _varint(buf, pos)
                    gid &= 0xFFFFFFFF
                    if xflags & XMIT_GROUP_NAME_FOLLOWS:
                        gname, pos = _name_byte(buf, pos)
            if self.rdev_on_wire(mode):
                if proto < 28:
                    if not xflags & XMIT_SAME_RDEV_PRE28:
                        rdev = _U32.unpack_from(buf, pos)[0]
                        pos += 4
                else:
                    if not xflags & XMIT_SAME_RDEV_MAJOR:
                        if proto >= 30:
                            rdev_major, pos = _varint(buf, pos)
                        else:
                            rdev_major = _I32.unpack_from(buf, pos)[0]
                            pos += 4
                        rdev_major &= 0xFFFFFFFF
                    if proto >= 30:
                        minor, pos = _varint(buf, pos)
                    elif xflags & XMIT_RDEV_MINOR_8_PRE30:
                        minor = buf[pos]
                        pos += 1
                    else:
                        minor = _I32.unpack_from(buf, pos)[0]
                        pos += 4
                    rdev = _makedev(rdev_major, minor & 0xFFFFFFFF)
                size = 0
            elif _is_device(mode):
                size = 0
            elif proto < 28:
                rdev = 0
            if mode & _IFMT == _IFLNK:
                if self.preserve_links:
                    if proto >= 30:
                        n, pos = _varint(buf, pos)
                    else:
                        n = _I32.unpack_from(buf, pos)[0]
                        pos += 4
                    if n < 0 or n + 1 > MAXPATHLEN:
                        raise WireError(f"overflow: linkname_len={n} in recv_file_entry",
                                        RERR_MALLOC)
                    if pos + n > len(buf):
                        raise _Need
                    link = bytes(buf[pos : pos + n])
                    pos += n
                    if b"\0" in link:
                        raise WireError(f"NUL byte in symlink target of {self.show_name(raw)}",
                                        RERR_PROTOCOL)
                else:
                    link = b""

        ftype = mode & _IFMT
        is_dir = ftype == _IFDIR
        is_reg = ftype == _IFREG
        hlinked = bool(xflags & XMIT_HLINKED) or (
            self.preserve_hard_links and proto < 28 and is_reg
        )
        if self.preserve_hard_links and hlinked and proto < 30:
            if not xflags & XMIT_SAME_DEV_PRE30:
                dev = _I32.unpack_from(buf, pos)[0]
                pos += 4
                if dev == -1:
                    dev = _I64.unpack_from(buf, pos)[0]
                    pos += 8
            ino = _I32.unpack_from(buf, pos)[0]
            pos += 4
            if ino == -1:
                ino = _I64.unpack_from(buf, pos)[0]
                pos += 8
            hl_key = (dev, ino)

        if self.always_checksum and (is_reg or proto < 28):
            if first is None:
                n = self.checksum_len
                if pos + n > len(buf):
                    raise _Need
                sum_bytes = bytes(buf[pos : pos + n])
                pos += n
                if is_reg:
                    checksum = sum_bytes
        if not is_reg:
            checksum = None
        if size < 0:
            raise WireError("Offset underflow: file-length is negative", RERR_UNSUPPORTED)
        if name in (b".", b"/.") and not is_dir:
            raise WireError(
                f"ERROR: rejecting non-directory transfer-root entry: {self.show_name(name)}",
                RERR_PROTOCOL,
            )

        # recv_file_entry()'s callers: -A's receive_acl() (not for a symlink), then
        # -X's receive_xattr().
        acl_pending = None
        if self.acls is not None and ftype != _IFLNK:
            acl_pending, pos = self.acls.decode(buf, pos, mode)
        xa_parsed = None
        if self.xattr_parse is not None:
            xa_parsed, pos = self.xattr_parse(buf, pos, name)

        # --- everything validated: commit the statics and build the entry.
        ndx = self.ndx_start + len(self.entries)
        eflags = 0
        if is_dir:
            if proto >= 30:
                if not xflags & XMIT_NO_CONTENT_DIR:
                    if xflags & XMIT_TOP_DIR:
                        eflags |= FLAG_TOP_DIR
                    eflags |= FLAG_CONTENT_DIR
                elif xflags & XMIT_TOP_DIR:
                    eflags |= FLAG_IMPLIED_DIR
            elif xflags & XMIT_TOP_DIR:
                self._in_del_hier = self.recurse
                n = 0 if name in (b".", b"/.") else l1 + l2
                if self.relative_paths and n > 2 and raw[n - 2 : n] == b"/.":
                    n -= 2
                self._del_hier_name_len = n
                eflags |= FLAG_TOP_DIR | FLAG_CONTENT_DIR
            elif self._in_del_hier:
                n = self._del_hier_name_len
                if not self.relative_paths or not n or (l1 >= n and raw[n : n + 1] == b"/"):
                    eflags |= FLAG_CONTENT_DIR
                else:
                    self._in_del_hier = False
        hlink: int | None = None
        if self.preserve_hard_links and hlinked and not is_dir:
            if proto >= 30:
                if xflags & XMIT_HLINK_FIRST:
                    hlink = ndx
                    eflags |= FLAG_HLINK_FIRST
                else:
                    hlink = first_hlink_ndx
                    eflags |= FLAG_HLINK_FOLLOWER
            elif hl_key is not None:
                hlink = self._idev.setdefault(hl_key, ndx)
                eflags |= FLAG_HLINK_FIRST if hlink == ndx else FLAG_HLINK_FOLLOWER

        self._lastname = raw
        self._state = (mode, modtime, atime, uid, gid, rdev, rdev_major, dev)
        if uname:
            hook = self.name_hook
            if hook is not None and uid and uid not in self.uid_names:
                hook("usr", uname)  # uidlist.c recv_user_name(): mapped as it comes
            self.uid_names[uid] = uname
        if gname:
            hook = self.name_hook
            if hook is not None and gid and gid not in self.gid_names:
                hook("grp", gname)
            self.gid_names[gid] = gname

        e = FileEntry(
            name,
            mode,
            size,
            modtime * NS + nsec,
            uid if self.preserve_uid else 0,
            gid if self.preserve_gid else 0,
            rdev if ftype in _DEVICES and self.preserve_devices else 0,
            link,
            eflags,
        )
        e.hlink = hlink
        e.checksum = checksum
        if self.xattr_commit is not None:
            e.xattr = self.xattr_commit(xa_parsed)
        if self.preserve_atimes and not is_dir:
            e.atime_ns = atime * NS
        if acl_pending is not None:
            e.acl, acl_names = self.acls.commit(acl_pending)
            for kind, id_, aname in acl_names:  # in-line names (incremental recursion)
                names = self.uid_names if kind == "usr" else self.gid_names
                if self.name_hook is not None and id_ and id_ not in names:
                    self.name_hook(kind, aname)
                names[id_] = aname
        self.entries.append(e)
        self.total_entries += 1
        return e, pos

    # -- the trailer: uid/gid lists and the pre-30 io_error -----------------

    def _begin_trailer(self, err: int) -> EndOfList | None:
        self._io_error = err & IOERR_VALID_MASK
        self._trailer = 0
        self._ids_read = 0
        return self._read_trailer()

    def _read_trailer(self) -> EndOfList | None:
        # Steps: 0 = uid list, 1 = gid list, 2 = io_error int, 3 = done.
        # Each completed name is committed, so a slow feed is not quadratic.
        r = self.reader
        try:
            while True:
                step = self._trailer
                if step in (0, 1):
                    want = (self.preserve_uid if step == 0 else self.preserve_gid) \
                        or self.acls is not None
                    if not (want and self.id_lists_follow) or self._read_id_list(step == 0):
                        self._trailer = step + 1
                        self._ids_read = 0
                elif step == 2:
                    if self.protocol < 30:
                        if r.pos + 4 > len(r.buf):
                            raise _Need
                        err = _I32.unpack_from(r.buf, r.pos)[0]
                        r.pos += 4
                        self._io_error |= err & IOERR_VALID_MASK
                    self._trailer = 3
                else:
                    self._trailer = None
                    self._list_open = False
                    self._list_done()
                    return EndOfList(self._io_error)
        except (_Need, TruncatedError, IndexError, struct.error):
            return None

    def _list_done(self) -> None:
        self._next_ndx_start = self.ndx_start + len(self.entries) + 1
        if self.inc_recurse:
            key = _key if self.protocol >= 29 else _key_pre29
            dirs = sorted((e for e in self.entries if e.mode & _IFMT == _IFDIR), key=key)
            self.dir_names.extend(e.name.lstrip(b"/") if self.relative_paths else e.name
                                  for e in dirs)

    def _read_id_list(self, users: bool) -> bool:
        """Read (id, name) pairs until the terminator; True when the list is done."""
        r = self.reader
        names = self.uid_names if users else self.gid_names
        proto = self.protocol
        while True:
            pos = r.pos
            if proto >= 30:
                id_, pos = _varint(r.buf, pos)
            else:
                id_ = _I32.unpack_from(r.buf, pos)[0]
                pos += 4
            id_ &= 0xFFFFFFFF
            if id_ == 0 and not self.id0_names:
                r.pos = pos
                return True
            name, pos = _name_byte(r.buf, pos)
            self._ids_read += 1
            # The sender lists only ids its entries used: far more names than entries is a
            # flood (each name may cost us 300 bytes).
            if self._ids_read > min(self.max_ids, max(1024, self.total_entries + 1)):
                raise WireError("too many uid/gid names from sender", RERR_PROTOCOL)
            if name:
                names[id_] = name
            r.pos = pos
            if id_ == 0:
                return True


def _varint(buf: bytearray, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    return decode_varint(buf, pos)


def _varlong(buf: bytearray, pos: int, min_bytes: int) -> tuple[int, int]:
    first = buf[pos]
    if first < 0x80:  # no extra bytes: the first byte is the top one
        end = pos + min_bytes
        if end > len(buf):
            raise _Need
        return int.from_bytes(buf[pos + 1 : end], "little") | first << (8 * (min_bytes - 1)), end
    return decode_varlong(buf, pos, min_bytes)


def _name_byte(buf: bytearray, pos: int) -> tuple[bytes, int]:
    n = buf[pos]
    pos += 1
    if pos + n > len(buf):
        raise _Need
    return bytes(buf[pos : pos + n]), pos + n


def _makedev(major: int, minor: int) -> int:
    try:
        return os.makedev(major, minor)
    except (OverflowError, ValueError):
        raise WireError(f"invalid device number {major},{minor}", RERR_PROTOCOL) from None


def show_name(name: bytes) -> str:
    """A name in a message as rsync prints it (log.c rwrite(): ``\\#ooo`` escapes)."""
    from netsync.log import safe_name

    return safe_name(name)


# ---------------------------------------------------------------------------
# Sorting


def _key_pre29(e: FileEntry) -> bytes:
    # Below 29 f_name_cmp treats directories like files: a plain byte compare.
    return e.name


def _key(e: FileEntry) -> bytes:
    return sort_key(e.name, stat.S_ISDIR(e.mode))


def sort_and_clean(
    entries: Iterable[FileEntry],
    *,
    protocol: int = 32,
    am_sender: bool = False,
    inc_recurse: bool = False,
    strip_root: bool = False,
) -> list[FileEntry]:
    """flist_sort_and_clean(): sort in f_name_cmp order and deal with duplicates.

    Indexes refer to the sorted list, so nothing is removed: a receiver marks
    the dropped duplicate FLAG_DUPLICATE (rsync's clear_file()) and merges a
    duplicate directory's TOP_DIR/CONTENT_DIR flags into the kept one.  Of two
    equal names the first is kept, except that a directory wins over a
    non-directory.  A sender only flags duplicate directories, and only with
    incremental recursion.  ``strip_root`` removes the leading slashes of
    ``--relative`` names after sorting.
    """
    key = _key if protocol >= 29 else _key_pre29
    out = sorted(entries, key=key)  # stable, like rsync's merge sort
    if not am_sender or inc_recurse:
        prev = -1
        prev_key = b""
        nondirs: dict[bytes, int] = {}  # active non-directory names (flist_find)
        for i, e in enumerate(out):
            if e.flags & FLAG_DUPLICATE:
                continue
            k = key(e)
            is_dir = stat.S_ISDIR(e.mode)
            j = -1
            if prev >= 0 and k == prev_key:
                j = prev
            elif protocol >= 29 and is_dir:
                j = nondirs.get(e.name, -1)
            if j < 0:
                prev, prev_key = i, k
                if not is_dir:
                    nondirs[e.name] = i
                continue
            fp = out[j]
            if is_dir and not stat.S_ISDIR(fp.mode):
                keep, drop = i, j
            elif is_dir:
                if am_sender:
                    e.flags |= FLAG_DUPLICATE
                else:
                    fp.flags |= e.flags & (FLAG_TOP_DIR | FLAG_CONTENT_DIR)
                    fp.flags &= e.flags | ~FLAG_IMPLIED_DIR
                keep, drop = j, i
            else:
                keep, drop = j, i
            if not am_sender:
                out[drop].flags |= FLAG_DUPLICATE
                if nondirs.get(out[drop].name) == drop:
                    del nondirs[out[drop].name]
            if keep == i:
                prev, prev_key = i, k
    if strip_root:
        for e in out:
            if e.name.startswith(b"/"):
                e.name = e.name.lstrip(b"/") or b"."
    return out
