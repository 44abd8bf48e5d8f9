"""POSIX ACLs for -A/--acls, as rsync's acls.c does them on Linux.

An ACL is kept as rsync's ``rsync_acl``: a tuple ``(user_obj, group_obj, mask_obj,
other_obj, names)`` where each ``*_obj`` is a 3-bit permission or :data:`NO_ENTRY`, and
``names`` is a tuple of ``(id, access)`` pairs, ``access`` carrying
:data:`NAME_IS_USER` for a named user. Tuples are hashable, so identical ACLs are one
object, found again by a dict lookup (rsync's access/default ACL lists and the index
it sends for an ACL already sent).

``FileEntry.acl`` is ``(access_acl, default_acl)`` (the default ACL None for a
non-directory), in the form a receiver holds after recv_rsync_acl(): the permission
entries that the mode gives stripped (rsync_acl_strip_perms()), a mask filled in
where named entries need one.

Linux keeps an ACL in the xattrs ``system.posix_acl_access`` / ``..._default``: a
little-endian u32 version (2), then (u16 tag, u16 perm, u32 id) entries, read and
written here with os.getxattr()/os.setxattr() (no libacl).

The wire half (:class:`AclEncoder`, :class:`AclDecoder`) is sans-I/O: bytes in,
typed values out.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable

from netsync.errors import RERR_MALLOC, RERR_PROTOCOL, RERR_STREAMIO
from netsync.wire import WireError, decode_varint, encode_varint

NO_ENTRY = 0x80
NAME_IS_USER = 1 << 31
XMIT_USER_OBJ = 1 << 0
XMIT_GROUP_OBJ = 1 << 1
XMIT_MASK_OBJ = 1 << 2
XMIT_OTHER_OBJ = 1 << 3
XMIT_NAME_LIST = 1 << 4
XFLAG_NAME_FOLLOWS = 0x1
XFLAG_NAME_IS_USER = 0x2
MAX_WIRE_ACL_COUNT = 65536  # rsync.h
VALID_BITS = 7  # SMB_ACL_VALID_NAME_BITS / SMB_ACL_VALID_OBJ_BITS

# --fake-super keeps them in rsync's own xattrs (xattrs.c XACC_ACL_ATTR/XDEF_ACL_ATTR):
# four u32 (user, group, mask, other; NO_ENTRY kept) then (u32 id, u32 access) pairs.
FAKE_ACCESS_XATTR = "user.rsync.%aacl"
FAKE_DEFAULT_XATTR = "user.rsync.%dacl"
ACCESS_XATTR = "system.posix_acl_access"
DEFAULT_XATTR = "system.posix_acl_default"
# Kernel tags (include/uapi/linux/posix_acl.h); ids of the non-named ones are -1.
TAG_USER_OBJ, TAG_USER, TAG_GROUP_OBJ, TAG_GROUP, TAG_MASK, TAG_OTHER = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
_UNDEFINED_ID = 0xFFFFFFFF
_HDR = struct.Struct("<I")
_ENT = struct.Struct("<HHI")
_XATTR_VERSION = 2

Racl = tuple  # (user_obj, group_obj, mask_obj, other_obj, names)
EMPTY: Racl = (NO_ENTRY, NO_ENTRY, NO_ENTRY, NO_ENTRY, ())
_NO_ACL_ERRNOS = frozenset(e for e in (getattr(errno, "ENOTSUP", None),
                                       getattr(errno, "EOPNOTSUPP", None), errno.ENOSYS,
                                       errno.EINVAL) if e is not None)


def fake_perms(mode: int) -> Racl:
    """rsync_acl_fake_perms(): the ACL a plain mode amounts to."""
    return ((mode >> 6) & 7, (mode >> 3) & 7, NO_ENTRY, mode & 7, ())


def strip_perms(racl: Racl, mode: int) -> Racl:
    """rsync_acl_strip_perms(): drop what the mode already says."""
    _, group, mask, _, names = racl
    if mask == NO_ENTRY:
        group = NO_ENTRY
    else:
        gp = (mode >> 3) & 7
        if group == gp:
            group = NO_ENTRY
        if names and mask == gp:
            mask = NO_ENTRY
    return (NO_ENTRY, group, mask, NO_ENTRY, names)


def fix_received(racl: Racl, mode: int, default: bool) -> Racl:
    """recv_rsync_acl()'s tail: a name list needs a mask (the mode's group bits for an
    access ACL, the names' and group's bits or'ed together for a default one)."""
    user, group, mask, other, names = racl
    if names and mask == NO_ENTRY:
        if default:
            bits = 0
            for _, acc in names:
                bits |= acc
            mask = (bits | (group & ~NO_ENTRY)) & 0x7F
        else:
            mask = (mode >> 3) & 7
        return (user, group, mask, other, names)
    return racl


def as_received(raw_acc: Racl, raw_def: Racl | None, mode: int) -> tuple[Racl, Racl | None]:
    """What a receiver gets for the sender's raw ACLs (send_acl() + receive_acl()):
    a local copy's entries take this form straight from the walk."""
    acc = fix_received(strip_perms(raw_acc, mode), mode, False)
    return acc, (None if raw_def is None else fix_received(raw_def, 0, True))


# --------------------------------------------------------------------------
# The Linux xattr form

def unpack_xattr(data: bytes) -> Racl | None:
    """unpack_acl_entries(): the kernel's xattr value -> an rsync_acl (named entries
    sorted users first, by id, as SMB_ACL_NEED_SORT does); None if malformed."""
    if len(data) < 4 or (len(data) - 4) % 8 or _HDR.unpack_from(data)[0] != _XATTR_VERSION:
        return None
    objs = [NO_ENTRY] * 4  # user, group, mask, other: the first entry of each counts
    users: list[tuple[int, int]] = []
    groups: list[tuple[int, int]] = []
    for tag, perm, id_ in _ENT.iter_unpack(data[4:]):
        perm &= 7
        slot = _OBJ_SLOT.get(tag)
        if slot is not None:
            if objs[slot] == NO_ENTRY:
                objs[slot] = perm
        elif tag == TAG_USER:
            users.append((id_, perm | NAME_IS_USER))
        elif tag == TAG_GROUP:
            groups.append((id_, perm))
    # By id alone: entries of the same id (as --usermap can make) keep their order.
    users.sort(key=_by_id)
    groups.sort(key=_by_id)
    return (*objs, tuple(users + groups))  # type: ignore[return-value]


_OBJ_SLOT = {TAG_USER_OBJ: 0, TAG_GROUP_OBJ: 1, TAG_MASK: 2, TAG_OTHER: 3}


def _by_id(ida: tuple[int, int]) -> int:
    return ida[0]


def _pack_entries(racl: Racl, mode: int | None) -> bytes:
    """pack_smb_acl() (+ change_sacl_perms() when ``mode`` is given, for an access
    ACL): the xattr value, entries in the kernel's order."""
    user, group, mask, other, names = racl
    user &= ~NO_ENTRY & 0xFF
    g = group & ~NO_ENTRY & 0xFF
    other &= ~NO_ENTRY & 0xFF
    if mode is not None:
        user = (mode >> 6) & 7
        if group == NO_ENTRY:
            g = (mode >> 3) & 7
        if mask != NO_ENTRY:
            mask = (mode >> 3) & 7
        other = mode & 7
    ents = [(TAG_USER_OBJ, user, _UNDEFINED_ID), (TAG_GROUP_OBJ, g, _UNDEFINED_ID),
            (TAG_OTHER, other, _UNDEFINED_ID)]
    for id_, acc in names:
        ents.append((TAG_USER if acc & NAME_IS_USER else TAG_GROUP, acc & 0xFFFF,
                     id_ & 0xFFFFFFFF))
    if mask != NO_ENTRY:
        ents.append((TAG_MASK, mask & 0xFFFF, _UNDEFINED_ID))
    ents.sort(key=lambda t: (t[0], t[2]))
    return _HDR.pack(_XATTR_VERSION) + b"".join(_ENT.pack(t, p & 0xFFFF, i) for t, p, i in ents)


def confined_path(path: bytes) -> tuple[bytes, int | None]:
    """(the path to use, an fd to close after): in a daemon's module a relative path's
    dirs are opened beneath the module (an in-module symlink followed, none leading
    out), the leaf named through /proc/self/fd and never followed."""
    from netsync import safepath

    if safepath.confine_root is None or path.startswith(b"/") or b"/" not in path:
        return path, None
    head, _, leaf = path.rpartition(b"/")
    dfd = safepath.dir_following_beneath(None, head)
    return b"/proc/self/fd/%d/%s" % (dfd, leaf), dfd


def _target(path: bytes | None, fd: int | None) -> bytes | int:
    return fd if fd is not None else path  # type: ignore[return-value]


def _get(tgt: bytes | int, name: str, follow: bool = False) -> bytes | None:
    try:
        return os.getxattr(tgt, name, follow_symlinks=follow) if not isinstance(tgt, int) \
            else os.getxattr(tgt, name)
    except OSError as ex:
        if ex.errno == errno.ENODATA:
            return None
        raise


class CorruptFakeAcl(OSError):
    """A --fake-super ACL xattr of a length no ACL has (get_rsync_acl() fails)."""


def _get_fake(tgt: bytes | int, name: str, mode: int, follow: bool = False) -> Racl:
    data = _get(tgt, name, follow)
    if data is None:
        return EMPTY
    if len(data) < 16 or (len(data) - 16) % 8:
        raise CorruptFakeAcl(errno.EINVAL, f"bad {name} length")
    user, group, mask, other = (v & 0xFF for v in struct.unpack_from("<4I", data))
    if user == NO_ENTRY:
        user = (mode >> 6) & 7
    if group == NO_ENTRY:
        group = (mode >> 3) & 7
    if other == NO_ENTRY:
        other = mode & 7
    names = tuple(struct.iter_unpack("<II", data[16:]))
    return (user, group, mask, other, names)


def _pack_fake(racl: Racl) -> bytes:
    user, group, mask, other, names = racl
    return struct.pack("<4I", user & 0xFFFFFFFF, group & 0xFFFFFFFF, mask & 0xFFFFFFFF,
                       other & 0xFFFFFFFF) \
        + b"".join(struct.pack("<II", i & 0xFFFFFFFF, a & 0xFFFFFFFF) for i, a in names)


def get_acl(path: bytes | None, mode: int, *, fd: int | None = None,
            specials: bool = False, devices: bool = False, fake_super: bool = False,
            follow: bool = False) -> tuple[Racl, Racl | None]:
    """get_acl(): the raw (access, default) ACLs of a file of type ``mode`` (the
    default one only for a directory). Raises OSError (not an unsupported-ACL one);
    :class:`CorruptFakeAcl` for a --fake-super xattr that does not parse. ``follow``:
    a symlink ``path`` is read where it points (a sender's -L, as acl_get_file())."""
    ftype = stat.S_IFMT(mode)
    if ftype not in (stat.S_IFREG, stat.S_IFDIR):
        if ftype == stat.S_IFLNK or (ftype in (stat.S_IFIFO, stat.S_IFSOCK) and not specials) \
                or (ftype in (stat.S_IFCHR, stat.S_IFBLK) and not devices) or not ftype:
            return EMPTY, None
    tgt = _target(path, fd)
    if fake_super:
        return (_get_fake(tgt, FAKE_ACCESS_XATTR, mode, follow),
                _get_fake(tgt, FAKE_DEFAULT_XATTR, mode, follow) if ftype == stat.S_IFDIR
                else None)
    acc = _get_racl(tgt, ACCESS_XATTR, follow) or fake_perms(mode)
    dflt = (_get_racl(tgt, DEFAULT_XATTR, follow) or EMPTY) if ftype == stat.S_IFDIR else None
    return acc, dflt


def _get_racl(tgt: bytes | int, name: str, follow: bool) -> Racl | None:
    """One ACL xattr, unpacked; None when there is none (or it is malformed)."""
    try:
        data = _get(tgt, name, follow)
    except OSError as ex:
        if ex.errno not in _NO_ACL_ERRNOS:
            raise
        return None
    return unpack_xattr(data) if data else None


def equal_enough(cur: Racl, want: Racl, mode: int) -> bool:
    """rsync_acl_equal_enough(): do the extended entries match (the rest is the mode)?"""
    if (cur[2] ^ want[2]) & NO_ENTRY:
        return False
    if cur[2] != NO_ENTRY:
        if want[1] == NO_ENTRY:
            if cur[1] != (mode >> 3) & 7:
                return False
        elif cur[1] != want[1]:
            return False
    return cur[4] == want[4]


def acl_differs(e_acl: tuple[Racl, Racl | None], cur: tuple[Racl, Racl | None] | None,
                mode: int) -> bool:
    """set_acl(NULL, ...): would setting ``e_acl`` change anything?"""
    acc, dflt = e_acl
    if cur is None or not equal_enough(cur[0], acc, mode):
        return True
    return stat.S_ISDIR(mode) and dflt is not None and cur[1] != dflt


def _access_mode(cur_mode: int, new_mode: int) -> int:
    """change_sacl_perms(): the mode an access ACL is written with (group and other
    shut while a sticky bit goes on, or a set-id bit goes off)."""
    mode = new_mode
    if stat.S_ISDIR(new_mode):
        if mode & stat.S_ISVTX and not cur_mode & stat.S_ISVTX:
            mode &= ~0o077
    elif (cur_mode & stat.S_ISUID and not mode & stat.S_ISUID) \
            or (cur_mode & stat.S_ISGID and not mode & stat.S_ISGID):
        mode &= ~0o077
    return mode


def mode_after_set(e_acl: tuple[Racl, Racl | None], cur: tuple[Racl, Racl | None] | None,
                   cur_mode: int, new_mode: int) -> int:
    """The mode on disk once set_acl() has run (it changes only with the access ACL)."""
    if cur is not None and equal_enough(cur[0], e_acl[0], new_mode):
        return cur_mode
    return (cur_mode & ~0o777) | (_access_mode(cur_mode, new_mode) & 0o777)


def set_acl(path: bytes | None, e_acl: tuple[Racl, Racl | None],
            cur: tuple[Racl, Racl | None] | None, cur_mode: int, new_mode: int, *,
            fd: int | None = None, fake_super: bool = False) -> tuple[bool, int]:
    """set_acl(): make the file's ACLs ``e_acl``; (changed, the mode on disk now).
    Raises OSError with the failing step in ``ex.acl_step``."""
    acc, dflt = e_acl
    tgt = _target(path, fd)
    changed = False
    if cur is None or not equal_enough(cur[0], acc, new_mode):
        changed = True
        if fake_super:  # stored as it came; the mode is the %stat xattr's business
            _set(tgt, FAKE_ACCESS_XATTR, _pack_fake(acc), "fake")
        else:
            mode = _access_mode(cur_mode, new_mode)
            _set(tgt, ACCESS_XATTR, _pack_entries(acc, mode), "ACL_TYPE_ACCESS")
            cur_mode = (cur_mode & ~0o777) | (mode & 0o777)
    if stat.S_ISDIR(new_mode) and dflt is not None and (cur is None or cur[1] != dflt):
        changed = True
        if dflt[0] == NO_ENTRY:
            try:
                name = FAKE_DEFAULT_XATTR if fake_super else DEFAULT_XATTR
                if isinstance(tgt, int):
                    os.removexattr(tgt, name)
                else:
                    os.removexattr(tgt, name, follow_symlinks=False)
            except OSError as ex:
                if fake_super or ex.errno != errno.ENODATA:
                    ex.acl_step = "sys_acl_delete_def_file"  # type: ignore[attr-defined]
                    raise
        elif fake_super:
            _set(tgt, FAKE_DEFAULT_XATTR, _pack_fake(dflt), "fake")
        else:
            _set(tgt, DEFAULT_XATTR, _pack_entries(dflt, None), "ACL_TYPE_DEFAULT")
    return changed, cur_mode


def _set(tgt: bytes | int, name: str, value: bytes, what: str) -> None:
    try:
        if isinstance(tgt, int):
            os.setxattr(tgt, name, value)
        else:
            os.setxattr(tgt, name, value, follow_symlinks=False)
    except OSError as ex:
        ex.acl_step = what  # type: ignore[attr-defined]
        raise


def default_perms_for_dir(dir_path: bytes, umask: int, dry_run: bool = False,
                          warn: Callable[[str], None] | None = None) -> int:
    """default_perms_for_dir(): the permissions a new file in ``dir_path`` gets: its
    default ACL's, else those the umask leaves."""
    perms = 0o777 & ~umask
    try:
        data = os.getxattr(dir_path or b".", DEFAULT_XATTR)
    except OSError as ex:
        if ex.errno == errno.ENODATA or ex.errno in _NO_ACL_ERRNOS \
                or (dry_run and ex.errno == errno.ENOENT):
            return perms
        if warn is not None:
            warn(f"default_perms_for_dir: sys_acl_get_file({os.fsdecode(dir_path or b'.')}, "
                 f"ACL_TYPE_DEFAULT): {os.strerror(ex.errno or 0)}, falling back on umask")
        return perms
    racl = unpack_xattr(data)
    if racl is None:
        if warn is not None:
            warn("default_perms_for_dir: unpack_smb_acl failed, falling back on umask")
        return perms
    if racl[0] != NO_ENTRY:
        grp = racl[2] if racl[2] != NO_ENTRY else racl[1]
        perms = (racl[0] << 6) + ((grp & 0xFF) << 3) + (racl[3] & 0xFF)
        perms &= 0o7777
    return perms


# --------------------------------------------------------------------------
# The wire form (acls.c send_acl / receive_acl)

class AclEncoder:
    """send_acl(): the ACL data that follows a file-list entry (not a symlink).

    ``add_uid``/``add_gid`` are the file list's add_uid()/add_gid(): they return the
    id's name the first time it is met (None after, or with no name)."""

    def __init__(self, *, numeric_ids: bool, inc_recurse: bool,
                 add_uid: Callable[[int], bytes | None],
                 add_gid: Callable[[int], bytes | None]) -> None:
        self.numeric_ids = numeric_ids
        self.inc_recurse = inc_recurse
        self.add_uid = add_uid
        self.add_gid = add_gid
        self._acc: dict[Racl, int] = {}
        self._def: dict[Racl, int] = {}

    def encode(self, e_acl: tuple[Racl, Racl | None] | None, mode: int) -> bytes:
        if e_acl is None:
            e_acl = (fake_perms(mode), EMPTY if stat.S_ISDIR(mode) else None)
        acc, dflt = e_acl
        out = bytearray()
        self._one(out, strip_perms(acc, mode), self._acc)
        if stat.S_ISDIR(mode):
            self._one(out, EMPTY if dflt is None else dflt, self._def)
        return bytes(out)

    def _one(self, out: bytearray, racl: Racl, known: dict[Racl, int]) -> None:
        ndx = known.get(racl)
        if ndx is not None:
            out += encode_varint(ndx + 1)
            return
        known[racl] = len(known)
        out.append(0)
        user, group, mask, other, names = racl
        flags = (XMIT_USER_OBJ if user != NO_ENTRY else 0) \
            | (XMIT_GROUP_OBJ if group != NO_ENTRY else 0) \
            | (XMIT_MASK_OBJ if mask != NO_ENTRY else 0) \
            | (XMIT_OTHER_OBJ if other != NO_ENTRY else 0) \
            | (XMIT_NAME_LIST if names else 0)
        out.append(flags)
        for v, bit in ((user, XMIT_USER_OBJ), (group, XMIT_GROUP_OBJ), (mask, XMIT_MASK_OBJ),
                       (other, XMIT_OTHER_OBJ)):
            if flags & bit:
                out += encode_varint(v)
        if names:
            out += encode_varint(len(names))
            for id_, acc in names:
                is_user = bool(acc & NAME_IS_USER)
                xbits = ((acc & ~NAME_IS_USER) << 2) & 0xFFFFFFFF
                if is_user:
                    xbits |= XFLAG_NAME_IS_USER
                name = None
                if not self.numeric_ids:
                    name = self.add_uid(id_) if is_user else self.add_gid(id_)
                out += encode_varint(_signed(id_))
                if self.inc_recurse and name:
                    name = name[:255]
                    out += encode_varint(_signed(xbits | XFLAG_NAME_FOLLOWS))
                    out.append(len(name))
                    out += name
                else:
                    out += encode_varint(_signed(xbits))


def _signed(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


class AclDecoder:
    """receive_acl(): the received access and default ACL lists; :meth:`decode` reads
    one entry's ACL data without changing anything, :meth:`commit` keeps it.

    ``check_values``: rsync's ``am_root >= 0`` (not --fake-super): permission values
    beyond rwx are refused."""

    def __init__(self, *, check_values: bool = True, max_names: int = 1 << 23) -> None:
        self.check_values = check_values
        self.access: list[Racl] = []
        self.default: list[Racl] = []
        # The named entries kept, all ACLs together: each costs us ~100 bytes where
        # rsync's costs 8, so the budget (from --max-alloc) is on the total.
        self.max_names = max_names
        self.names_kept = 0

    def decode(self, buf, pos: int, mode: int) -> tuple[tuple, int]:
        """(pending, new pos); IndexError/TruncatedError when more bytes are needed."""
        names: list[tuple[str, int, bytes]] = []
        acc, pos = self._one(buf, pos, self.access, False, mode, names)
        dflt = None
        if stat.S_ISDIR(mode):
            dflt, pos = self._one(buf, pos, self.default, True, 0, names)
        return (acc, dflt, names), pos

    def commit(self, pending: tuple) -> tuple[tuple[Racl, Racl | None], list]:
        """Keep a decoded entry's ACLs: ((access, default), [(kind, id, name)...])."""
        acc, dflt, names = pending
        for r in (acc, dflt):
            if r is not None and not isinstance(r, int):
                self.names_kept += len(r[4])
        if not isinstance(acc, int):
            self.access.append(acc)
            acc_r = acc
        else:
            acc_r = self.access[acc]
        dflt_r = None
        if dflt is not None:
            if not isinstance(dflt, int):
                self.default.append(dflt)
                dflt_r = dflt
            else:
                dflt_r = self.default[dflt]
        return (acc_r, dflt_r), names

    def _access(self, buf, pos: int, name_entry: bool) -> tuple[int, int, bool]:
        v, pos = decode_varint(buf, pos)
        v &= 0xFFFFFFFF
        follows = False
        if name_entry:
            flags = v & 3
            v >>= 2
            if self.check_values and v & ~VALID_BITS:
                raise WireError(f"recv_acl_access: value out of range: {v:x}", RERR_STREAMIO)
            follows = bool(flags & XFLAG_NAME_FOLLOWS)
            if flags & XFLAG_NAME_IS_USER:
                v |= NAME_IS_USER
        elif self.check_values and v & ~VALID_BITS:
            raise WireError(f"recv_acl_access: value out of range: {v:x}", RERR_STREAMIO)
        return v, pos, follows

    def _one(self, buf, pos: int, known: list[Racl], default: bool, mode: int,
             names_out: list) -> tuple[Racl | int, int]:
        ndx, pos = decode_varint(buf, pos)
        if ndx < 0 or ndx > len(known):
            what = "ACL_TYPE_DEFAULT" if default else "ACL_TYPE_ACCESS"
            raise WireError(f"recv_acl_index: {what} ACL index {ndx} > {len(known)}",
                            RERR_STREAMIO)
        if ndx:
            return ndx - 1, pos
        flags = buf[pos]
        pos += 1
        vals = []
        for bit in (XMIT_USER_OBJ, XMIT_GROUP_OBJ, XMIT_MASK_OBJ, XMIT_OTHER_OBJ):
            if flags & bit:
                v, pos, _ = self._access(buf, pos, False)
                vals.append(v & 0xFF)
            else:
                vals.append(NO_ENTRY)
        names: tuple = ()
        if flags & XMIT_NAME_LIST:
            count, pos = decode_varint(buf, pos)
            if not 0 <= count <= MAX_WIRE_ACL_COUNT:
                raise WireError(f"wire value ACL count out of range: {count} not in "
                                f"[0,{MAX_WIRE_ACL_COUNT}]", RERR_PROTOCOL)
            if self.names_kept + count > self.max_names:
                raise WireError("ERROR: out of memory in recv_ida_entries (over "
                                f"{self.max_names} ACL entries)", RERR_MALLOC)
            lst = []
            for _ in range(count):
                id_, pos = decode_varint(buf, pos)
                id_ &= 0xFFFFFFFF
                acc, pos, follows = self._access(buf, pos, True)
                if follows:
                    n = buf[pos]
                    pos += 1
                    if pos + n > len(buf):
                        raise IndexError("ACL name")
                    if n:
                        names_out.append(("usr" if acc & NAME_IS_USER else "grp", id_,
                                          bytes(buf[pos:pos + n])))
                    pos += n
                lst.append((id_, acc))
            names = tuple(lst)
        racl = fix_received((vals[0], vals[1], vals[2], vals[3], names), mode, default)
        return racl, pos


def map_ids(e_acl: tuple[Racl, Racl | None] | None, umap: dict[int, int],
            gmap: dict[int, int], memo: dict) -> tuple[Racl, Racl | None] | None:
    """match_acl_ids(): the named entries' ids mapped like the owners' (an ACL shared
    by many entries is mapped once, through ``memo``)."""
    if e_acl is None:
        return None
    got = memo.get(e_acl)
    if got is None:
        got = memo[e_acl] = tuple(_map_one(r, umap, gmap) for r in e_acl)  # type: ignore
    return got


def _map_one(racl: Racl | None, umap: dict[int, int], gmap: dict[int, int]) -> Racl | None:
    if racl is None or not racl[4]:
        return racl
    names = tuple((umap.get(i, i) if a & NAME_IS_USER else gmap.get(i, i), a)
                  for i, a in racl[4])
    return racl[:4] + (names,)
