"""The generator role: compares the file list with the destination and decides.

For each entry it creates directories, symlinks, devices and hard links
itself, fixes attributes of up-to-date files, deletes extraneous files, and
asks the sender (through the transport) for the data of files that differ.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable

from netsync import filters as F
from netsync import fuzzy, log, safepath
from netsync import messages as m
from netsync import metadata as _md
from netsync import receiver as _rcv
from netsync import sender as _sender
from netsync.errors import RERR_PROTOCOL
from netsync.flist import (
    FLAG_CONTENT_DIR,
    FLAG_DIR_CREATED,
    FLAG_DUPLICATE,
    FLAG_IMPLIED_DIR,
    FLAG_MISSING_DIR,
    FLAG_MOUNT_DIR,
    FLAG_TOP_DIR,
    ChunkFeed,
    FileEntry,
    FileList,
    is_unsafe_symlink,
    join,
    parent_of,
)
from netsync.metadata import AttrOptions, dest_mode, keep_time, mtime_differs, set_file_attrs
from netsync.receiver import Receiver, tmp_name
from netsync.record import Record, factory
from netsync.report import FinishFirst, Reporter

DEL_RECURSE = 1
FNAMECMP_FUZZY = 0x83  # rsync.h: a --fuzzy basis (+ the -yy basis dir's number)
_ATTR_BITS = (log.ITEM_REPORT_TIME | log.ITEM_REPORT_PERMS | log.ITEM_REPORT_OWNER
              | log.ITEM_REPORT_GROUP | log.ITEM_REPORT_ATIME | log.ITEM_REPORT_ACL)
DEL_FOR = {"file": "regular file", "dir": "directory", "symlink": "symlink",
           "device": "device file", "special": "special file"}


class GenOptions(Record):
    recursive: bool = False
    dirs: bool = False
    links: bool = False
    safe_links: bool = False
    munge_links: bool = False
    keep_dirlinks: bool = False
    hard_links: bool = False
    devices: bool = False
    specials: bool = False
    checksum: bool = False
    size_only: bool = False
    ignore_times: bool = False
    update: bool = False
    existing: bool = False
    ignore_existing: bool = False
    max_size: int | None = None
    min_size: int | None = None
    whole_file: bool = True
    append: int = 0
    delete: bool = False
    delete_mode: str | None = None  # before/during/delay/after
    force: bool = False
    max_delete: int | None = None
    ignore_errors: bool = False
    remove_source_files: bool = False
    backup: bool = False
    backup_dir: bytes | None = None
    suffix: bytes = b"~"
    alt_dest: list[bytes] = factory(list)
    alt_dest_type: str | None = None  # compare/copy/link
    implied_dirs: bool = True
    relative: bool = False
    list_only: bool = False
    dry_run: bool = False
    # --only-write-batch: a dry run whose files are still asked for (rsync's do_xfers
    # stays 1); what comes back is only logged, its data kept by the sender's batch.
    batch_only: bool = False
    am_root: bool = False
    omit_dir_times: bool = False
    mkpath: bool = False
    inc_recurse: bool = True
    fuzzy: int = 0  # --fuzzy: dirs searched for a basis (1 = the dest dir, +1 per -yy basis dir)
    fuzzy_debug: int = 0  # --debug=fuzzy level


class Generator:
    def __init__(self, g: GenOptions, attrs: AttrOptions, flist: FileList, dest: bytes,
                 receiver: Receiver, request: Callable[[m.SendRequest], m.FileData],
                 reporter: Reporter, filters=None, checksum_fn=None,
                 on_success: Callable[[int], None] | None = None,
                 solo_file: bool = False) -> None:
        self.g = g
        self.a = attrs
        self.flist = flist
        self.dest = dest
        self.recv = receiver
        self.request = request
        self.rep = reporter
        self.filters = filters
        self.checksum_fn = checksum_fn
        self.on_success = on_success
        self.solo_file = solo_file
        self.skip_dir: bytes | None = None
        self.dry_missing: bytes | None = None
        self.dir_fixups: list[tuple[bytes, FileEntry, int]] = []
        self.deletions = 0
        self.skipped_deletes = 0
        # hard-link group -> the name of a finished member, which later members link to
        # (kept past its list, as hlink.c's prior_hlinks keeps the name)
        self.hl_done: dict[int, bytes] = {}
        # hard-link group -> its last ndx in the lists received so far (an incremental
        # receiver's feed updates it as lists come: hlink.c match_gnums())
        self.hl_last: dict[int, int] = {}
        self._hl_retry_ndx = -1  # the deferred member being generated once more
        # What the next _transfer() itemizes against when not its basis (False: the
        # basis); an attribute, so subclasses overriding _transfer() need not know.
        self._item_st: os.stat_result | None | bool = False
        # A local run checks --append-verify itself (the source is at hand): a file
        # whose kept prefix differs from the source's is sent again (MSG_REDO).
        self.local_append_verify = False
        # Delta totals of the files sent here: matches, hash hits, false alarms and
        # matched bytes (a local run's --debug=deltasum and "Matched data").
        self.delta_totals = [0, 0, 0, 0]
        self._append_redo: list[tuple[int, FileEntry, bytes, int]] = []
        # group -> its members skipped, missing, for a later member to get the data
        self.hl_deferred: dict[int, list[tuple[int, FileEntry]]] = {}
        # Real run: group -> the member whose data is on its way (rsync FLAG_FILE_SENT);
        # later members wait for it (hlink.c hard_link_check), linked after the pass
        # (with incremental lists: before their list is done, see hl_pending_from).
        self.hl_sent: dict[int, int] = {}
        self.hl_waiting: list[tuple[int, FileEntry]] = []
        # The lowest ndx deferred or waiting (None: none), so a list holding one is not
        # finished before they are linked (rsync's flist in_progress count).
        self.hl_pending_from: int | None = None
        self._hl_ending = False
        if g.hard_links:
            for i, e in enumerate(flist.entries):
                if e.hlink is not None:
                    self.hl_last[e.hlink] = i
        self.stats = m.Stats()
        self._children: dict[bytes, set[bytes]] | None = None
        # A streamed list (cli.local_sync): the feed, and the dir whose chunk is current.
        self.feed: ChunkFeed | None = None
        self._cur_dir: tuple[bytes, list[FileEntry]] | None = None
        self.io_error = flist.io_error
        self._warned_io = False
        self._top_deleted = False
        # --delete-delay: what the walk found to delete, deleted after the transfer
        # (rsync's remember_delete()), so what the transfer itself creates (a backup
        # dir inside the destination) is never taken for an extra file.
        self._delayed: list[tuple[bytes, bytes, int]] | None = \
            [] if self.g.delete and self.g.delete_mode == "delay" else None
        self._fstack: list[tuple[bytes, object]] = []
        self._fast_ok = self._fast_path_allowed()
        self._alt_roots: list[int | None | bool] = []  # held --*-dest dir fds
        self._droot_fd: int | None = None
        self._dcache: tuple[bytes, int] | None = None
        self._mjail: tuple[int, bytes] | tuple[()] | None = None  # _module_jail()
        self._dprefix = dest if dest.endswith(b"/") else dest + b"/"
        # Existing dest symlinks on the way are followed for a lone file, with -K, and
        # for -R --no-implied-dirs (whose path elements are used as they are) unless a
        # daemon module confines us.
        self._follow_dest_links = bool(solo_file or g.keep_dirlinks
                                       or (g.relative and not g.implied_dirs
                                           and safepath.confine_root is None))
        if not self._follow_dest_links:
            receiver.confine_root = dest
        self._alt_cur: dict[int, tuple[bytes, int | None]] = {}
        # A daemon that negotiated in-place partial updates refuses a file whose
        # --partial-dir basis lies out of its module (the path refused last).
        self.strict_partial = False
        self._refused_partial: bytes | None = None
        # Block-sum parameters (checksum name, seed, protocol) and extra generate_sums
        # keywords; a wire client sets the negotiated ones.
        self.sum_params: tuple[str, int, int] = ("md5", 0, 32)
        self.sum_kwargs: dict = {}
        # Called after the first pass over the list (a wire client's redo phase).
        self.after_files: Callable[[], None] | None = None
        # A wire client may pipeline its requests: request_later(req) sends one and
        # returns a callable that reads its reply (a FileData) later, in order.
        self.request_later: Callable[[m.SendRequest], Callable[[], m.FileData]] | None = None
        self._later: deque[tuple] = deque()
        self._missing: FileEntry | None = None  # the entry _run_feed() just found missing
        self._finishing = False
        # A protocol < 29 pull: the sender sends no item flags, so the receiver logs
        # each transfer with these (rsync.c read_ndx_and_attrs(): ">f?????????").
        self.xfer_log_iflags: int | None = None
        # A local run may hand whole-file copies to writer threads (recvpool), made
        # at the first such file; their output waits in _later like a pipelined
        # request's.
        self.pool_ok = False
        self._writers = 0  # (pool_allowed() reads how many)
        self._pool = None
        self._pool_streams: tuple | None = None
        # --fuzzy (generator.c fuzzy_dirlist): the candidate lists of the current
        # parent dir, scanned when its first missing file needs them.
        self._fz_parent: bytes | None = None
        self._fz_need = False
        self._fz_lists: list[list[fuzzy.Candidate] | None] = []
        self._fz_dirs: list[tuple[bytes, list[fuzzy.Candidate] | None]] = []
        self._fz_req: tuple[int, bytes] | None = None  # the next request's fuzzy basis
        # -X: the item flags and xattr-only items (netsync.xattrs.GenXa).
        self.xag = None
        if attrs.xattrs is not None:  # (xattrs imports hashlib and the wire codecs)
            from netsync import xattrs as _xa

            self.xag = _xa.GenXa(self)
        self._dflt_cache: tuple[bytes, int] | None = None  # (dir, _dflt_perms())
        self._acl_st: tuple[os.stat_result, tuple[int, bytes]] | None = None  # _alt_lstat()
        # -A: a new subdir is made owner-only first, as an incremental rsync does
        # (client.acl_inc_dirs()).
        self.acl_inc_dirs = False

    # ------------------------------------------------------------- helpers
    def dpath(self, name: bytes) -> bytes:
        if self.solo_file:
            return self.dest
        return join(self.dest, name)

    def rel_name(self, name: bytes) -> bytes:
        """``name`` below the receiver's dir: a single file's is the local name (main.c
        get_local_name()), which backups and --*-dest lookups use too."""
        return self.dest.rpartition(b"/")[2] if self.solo_file else name

    def _dest_dir_fd(self, head: bytes) -> int:
        """A held fd of the destination dir ``head`` (b"" = the destination),
        every step below the destination opened without following a symlink
        (rsync's secure_relative_open); the current dir's fd is kept for the
        next entry. Raises OSError (ELOOP for a symlinked step)."""
        c = self._dcache
        if c is not None and c[0] == head:
            return c[1]
        root = self._droot_fd
        if root is None:
            root = os.open(self.dest or b".", safepath.DIR_FLAGS)
            self._droot_fd = root
        fd = safepath.dir_beneath(root, head.split(b"/")) if head else root
        if c is not None and c[1] != root:
            os.close(c[1])
        self._dcache = (head, fd)
        return fd

    def _drop_dir_fds(self) -> None:
        """Forget the held dest dir fds (a dir was made or replaced)."""
        c = self._dcache
        if c is not None and c[1] != self._droot_fd:
            os.close(c[1])
        self._dcache = None

    def _confined_lstat(self, path: bytes) -> os.stat_result | None:
        """lstat of a destination path whose dirs are resolved without following
        symlinks; raises OSError. Paths outside the destination use lstat."""
        pre = self._dprefix
        inside = path.startswith(pre)
        if self._follow_dest_links and inside and self._module_jail():
            # -K (or a lone file) in a daemon's module: the dirs on the way may be
            # kept dir symlinks, followed only while they stay in the module (a
            # path through one leading out is ELOOP, as rsync's confined stat).
            head, _, leaf = path.rpartition(b"/")
            try:
                dfd = self._module_dir_fd(head)
            except FileNotFoundError:
                return None
            try:
                return os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
            finally:
                os.close(dfd)
        if self._follow_dest_links or not inside:
            return os.lstat(path)
        head, _, leaf = path[len(pre):].rpartition(b"/")
        try:
            dfd = self._dest_dir_fd(head)
        except FileNotFoundError:
            return None
        return os.stat(leaf, dir_fd=dfd, follow_symlinks=False)

    def _gen_stat(self, path: bytes, follow_dir: bool,
                  report: bool = True) -> os.stat_result | None | bool:
        """lstat for the generator: False (after reporting) when it fails other than ENOENT."""
        try:
            st = self._confined_lstat(path)
            if st is None:
                return None
        except FileNotFoundError:
            return None
        except OSError as ex:
            if not report:
                return False
            self.rep.error_xfer(f'recv_generator: failed to stat {self.rep.qpath(path)}: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
            return False
        if self.a.fake_super:  # x_lstat(): the %stat xattr says what the file is
            st = _md.xstat_overlay(path, st, self._xstat_error(path))
        if follow_dir and stat.S_ISLNK(st.st_mode):
            try:
                st2 = os.stat(path)
                if stat.S_ISDIR(st2.st_mode):
                    return st2
            except OSError:
                pass
        return st

    def _module_jail(self) -> tuple[int, bytes] | None:
        """safepath.module_anchor(), worked out once: the module confining us, if any."""
        j = self._mjail
        if j is None:
            j = self._mjail = safepath.module_anchor() or ()
        return j or None

    def _module_dir_fd(self, head: bytes) -> int:
        """An fd (the caller's to close) of the dest dir ``head`` reached from the module
        root, following a symlink on the way only while it stays in the module (ELOOP
        otherwise).  Walked afresh each time: the dirs on the way change as we go."""
        j = self._module_jail()
        assert j is not None
        if j[0] < 0 or head.startswith(b"/"):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        return safepath.walk_beneath(j[0], j[1] + head)

    def _dirlink_in_module(self, path: bytes) -> bool:
        """-K in a daemon's module: may the dest dir symlink ``path`` be taken for the
        dir it leads to?  Only when that is within the module (rsync's confined stat):
        a link out of the module is never entered, listed or deleted in."""
        if self._module_jail() is None:
            return True
        try:
            os.close(self._module_dir_fd(path))
            return True
        except OSError:
            return False

    def pool_allowed(self) -> bool:
        """May new files be written by writer threads (a local run sets pool_ok)?
        Only plain whole-file copies into place, with nothing shown while they run."""
        g, r, rep = self.g, getattr(self.recv, "r", None), self.rep
        # NETSYNC_WRITERS=N: how many (default 2); 0, or not a count, turns them off.
        n = os.environ.get("NETSYNC_WRITERS", "2")
        self._writers = int(n) if n.isdigit() else 0
        if r is None or not self._writers:
            return False
        return not (g.dry_run or g.batch_only or g.hard_links or g.remove_source_files
                    or g.append or g.fuzzy or not g.whole_file or self.a.fake_super or self.xag
                    or r.inplace or r.append or r.partial or r.partial_dir is not None
                    or r.temp_dir is not None or r.delay_updates or r.sparse or r.bwlimit
                    or r.backup or _rcv.write_devices or rep.progress is not None
                    or rep.logfile is not None)

    def _fast_path_allowed(self) -> bool:
        """May an up-to-date regular file be passed over right after its lstat?

        Only when nothing would be printed, counted or touched for it anyway."""
        g, a, rep = self.g, self.a, self.rep
        return not (g.checksum or g.ignore_times or g.size_only or g.hard_links or g.alt_dest
                    or g.remove_source_files or g.max_size is not None
                    or g.min_size is not None or g.update or g.ignore_existing or g.append
                    or a.atimes or a.uid_map or a.gid_map or a.chown_uid is not None
                    or a.chown_gid is not None or a.modify_window or not a.times
                    or rep.has_i > 1 or rep.level("name") >= 2 or rep.level("skip") >= 1
                    or rep.logfile is not None or self.recv_partial_dir() is not None
                    or a.fake_super or a.xattrs is not None or a.acls)

    def _unchanged_reg(self, e: FileEntry, st: os.stat_result) -> bool:
        """The quick check plus every attribute the item flags would report, inline."""
        if not (stat.S_ISREG(e.mode) and stat.S_ISREG(st.st_mode)) or st.st_size != e.size \
                or st.st_mtime_ns // 1_000_000_000 != e.mtime_ns // 1_000_000_000:
            return False
        a = self.a
        if a.perms:
            if stat.S_IMODE(st.st_mode) != stat.S_IMODE(e.mode):
                return False
        elif a.executability and bool(st.st_mode & 0o111) != bool(e.mode & 0o111):
            return False
        if a.owner and a.am_root and st.st_uid != e.uid:
            return False
        return not (a.group and st.st_gid != e.gid)

    def _xstat_error(self, path: bytes) -> Callable[[OSError], None]:
        def report(ex: OSError) -> None:
            self.rep.error_xfer(f'failed to read xattr user.rsync.%stat for '
                                f'{self.rep.qpath(path)}: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
        return report

    def _lstat(self, path: bytes, follow_dir: bool = False) -> os.stat_result | None:
        try:
            st = os.lstat(path)
            if self.a.fake_super:
                st = _md.xstat_overlay(path, st, self._xstat_error(path))
            if follow_dir and stat.S_ISLNK(st.st_mode) and self._dirlink_in_module(path):
                try:
                    st2 = os.stat(path)
                    if stat.S_ISDIR(st2.st_mode):
                        return st2
                except OSError:
                    pass
            return st
        except OSError:
            return None

    def _is_below(self, name: bytes, top: bytes | None) -> bool:
        return top is not None and (top == b"." or name.startswith(top + b"/"))

    def itemize(self, e: FileEntry, st: os.stat_result | None, iflags: int,
                xname: bytes | None = None) -> int:
        """generator.c itemize(): add the REPORT_* bits and report the item."""
        return self.report_item(e, self.item_flags(e, st, iflags, xname), xname)

    def report_item(self, e: FileEntry, iflags: int, xname: bytes | None = None) -> int:
        if not iflags & log.ITEM_TRANSFER and self.rep.should_send_itemize(iflags, xname):
            self.rep.maybe_log_item(e, iflags, hlink=xname)
            if iflags & log.ITEM_IS_NEW:
                self._count_created(e)
            if iflags & log.ITEM_REPORT_XATTR and self.xag is not None:
                self.xag.item(e, iflags)  # (receiver.c: an xattr-only item is set)
        return iflags

    def item_flags(self, e: FileEntry, st: os.stat_result | None, iflags: int,
                   xname: bytes | None = None) -> int:
        """The REPORT_* bits: how ``st`` differs from the file-list entry (pure)."""
        a = self.a
        if st is not None:
            if stat.S_ISREG(e.mode) and e.size != st.st_size:
                iflags |= log.ITEM_REPORT_SIZE
            if keep_time(a, e.mode):
                if mtime_differs(a, st, e):
                    iflags |= log.ITEM_REPORT_TIME
            elif iflags & (log.ITEM_TRANSFER | log.ITEM_LOCAL_CHANGE) and not iflags & log.ITEM_MATCHED \
                    and (not iflags & log.ITEM_XNAME_FOLLOWS or xname):
                iflags |= log.ITEM_REPORT_TIME
            if not stat.S_ISLNK(e.mode):
                if a.perms:
                    if stat.S_IMODE(st.st_mode) != stat.S_IMODE(e.mode):
                        iflags |= log.ITEM_REPORT_PERMS
                elif a.executability and bool(st.st_mode & 0o111) != bool(e.mode & 0o111):
                    iflags |= log.ITEM_REPORT_PERMS
            if a.owner and a.am_root:
                uid = a.uid_map.get(e.uid, e.uid) if a.uid_map else e.uid
                if a.chown_uid is not None:
                    uid = a.chown_uid
                if uid != st.st_uid:
                    iflags |= log.ITEM_REPORT_OWNER
            if a.group:
                gid = a.gid_map.get(e.gid, e.gid) if a.gid_map else e.gid
                if a.chown_gid is not None:
                    gid = a.chown_gid
                if gid != st.st_gid:
                    iflags |= log.ITEM_REPORT_GROUP
            if a.atimes and not stat.S_ISDIR(e.mode) and not stat.S_ISLNK(e.mode) \
                    and st.st_atime_ns // 10**9 != e.atime_ns // 10**9:
                iflags |= log.ITEM_REPORT_ATIME
            if a.acls and e.acl is not None and not stat.S_ISLNK(e.mode) \
                    and self._acl_differs(e, st):
                iflags |= log.ITEM_REPORT_ACL
            if self.xag is not None:
                iflags |= self.xag.flags(e, st)
        else:
            if self.xag is not None:
                iflags |= self.xag.flags(e, None)
            iflags |= log.ITEM_IS_NEW
        return iflags & 0xFFFF

    def _acl_differs(self, e: FileEntry, st: os.stat_result) -> bool:
        """itemize()'s set_acl(NULL, ...): do the destination's ACLs differ from the
        entry's?"""
        from netsync import acls

        return acls.acl_differs(e.acl, self._acl_cur(e, st), e.mode)  # type: ignore[arg-type]

    def _acl_cur(self, e: FileEntry, st: os.stat_result) -> tuple | None:
        """The ACLs of the file ``st`` is of (the destination's, or the --*-dest file
        _alt_lstat() found), read beneath the held destination dir, never through a
        symlink; None if they cannot be read."""
        from netsync import acls

        path = self.dpath(e.name)
        pre = self._dprefix
        alt = self._acl_st
        try:
            if alt is not None and alt[0] is st:  # an alt-dest file
                path = b"/proc/self/fd/%d/%s" % alt[1]
            elif not self._follow_dest_links and path.startswith(pre):
                head, _, leaf = path[len(pre):].rpartition(b"/")
                path = b"/proc/self/fd/%d/%s" % (self._dest_dir_fd(head), leaf)
            return acls.get_acl(path, st.st_mode, specials=True, devices=True,
                                fake_super=self.a.fake_super)
        except OSError:
            return None

    def _acl_sets_mode(self, e: FileEntry, st: os.stat_result, new_mode: int) -> bool:
        """Would set_acl() leave the mode's permissions as ``new_mode``'s?"""
        from netsync import acls

        after = acls.mode_after_set(e.acl, self._acl_cur(e, st), st.st_mode,  # type: ignore[arg-type]
                                    new_mode)
        return stat.S_IMODE(after) == stat.S_IMODE(new_mode)

    def _dflt_perms(self, path: bytes) -> int | None:
        """generator.c: without -p a new file gets the permissions of its dir's default
        ACL (default_perms_for_dir()), else those the umask leaves."""
        from netsync import acls

        parent = path.rpartition(b"/")[0] if b"/" in path else b"."
        c = self._dflt_cache
        if c is not None and c[0] == parent:
            return c[1]
        perms = acls.default_perms_for_dir(parent or b"/", self.a.umask, self.g.dry_run,
                                           lambda msg: self.rep.warning(msg))
        self._dflt_cache = (parent, perms)
        return perms

    def _count_created(self, e: FileEntry) -> None:
        self.stats.count("created", e.mode)

    # ------------------------------------------------------------- deletion
    def _children_of(self, dname: bytes) -> set[bytes]:
        cur = self._cur_dir
        if cur is not None:
            # Streamed list: a dir's children are exactly its chunk.
            if cur[0] != dname:
                return set()
            return {e.name.rpartition(b"/")[2] for e in cur[1]
                    if not e.flags & FLAG_DUPLICATE}
        if self._children is None:
            # (a cleared entry, clear_file(): a -m pruned dir or a dropped duplicate, has
            # no name in rsync's list, so what it names in the dest is not kept)
            ch: dict[bytes, set[bytes]] = {}
            for e in self.flist.entries:
                if e.name == b"." or e.flags & FLAG_DUPLICATE:
                    continue
                p, _, base = e.name.rpartition(b"/")
                ch.setdefault(p or b".", set()).add(base)
            self._children = ch
        return self._children.get(dname, set())

    def _dirlist(self, path: bytes, name: bytes, ignore_perishable: bool = False,
                 hidden: list[int] | None = None) -> list[tuple[bytes, int]]:
        """Entries of a destination dir that deletion may touch, in rsync's order.
        ``hidden`` counts those the filters keep out (flist.c make_file()'s
        non_perishable_cnt: with ``ignore_perishable``, as when a dir's contents go,
        perishable rules hide nothing)."""
        from netsync.flist import sort_key

        if self._follow_dest_links and not self._dirlink_in_module(path):
            return []  # -K: not through a kept dir symlink leading out of the module
        out: list[tuple[bytes, int, bytes]] = []
        try:
            with os.scandir(path) as it:
                for d in it:
                    try:
                        mode = d.stat(follow_symlinks=False).st_mode
                    except OSError:
                        continue
                    rel = d.name if name == b"." else name + b"/" + d.name
                    is_dir = stat.S_ISDIR(mode)
                    if (self.filters is not None and self.filters.excluded(
                            rel, is_dir, "receiver", ignore_perishable=ignore_perishable)) or (
                            F.daemon_excluded is not None  # never deleted (name_is_excluded)
                            and F.daemon_excluded(join(path, d.name), is_dir)):
                        if hidden is not None:
                            hidden[0] += 1
                        continue
                    out.append((d.name, mode, sort_key(d.name, is_dir)))
        except FileNotFoundError:
            return []
        except OSError as ex:
            # flist.c send_directory(): anything but ENOENT is an I/O error, which
            # stops the deletions still to come.
            self.io_error |= 1
            self.rep.error_xfer(f"opendir {self.rep.qpath(path)} failed: "
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
            return []
        out.sort(key=lambda t: t[2])
        return [(n, md) for n, md, _ in out]

    def _io_error_stops_deletion(self) -> bool:
        """generator.c delete_in_dir()'s first test: after an I/O error on the sending
        side nothing more is deleted, which it says once."""
        if self.io_error & 1 and not self.g.ignore_errors:
            if not self._warned_io:
                self.rep.info("IO error encountered -- skipping file deletion")
                self._warned_io = True
            return True
        return False

    def delete_in_dir(self, name: bytes, path: bytes, enter: bool = True) -> None:
        if self._io_error_stops_deletion():
            return
        if self.filters is not None and enter:
            fstate = self.filters.enter_dir(name, path)
        else:
            fstate = None
        try:
            keep = self._children_of(name)
            for base, mode in reversed(self._dirlist(path, name)):
                if base in keep:
                    continue
                rel = base if name == b"." else name + b"/" + base
                if self._delayed is not None:
                    self._delayed.append((rel, join(path, base), mode))
                else:
                    self.delete_item(rel, join(path, base), mode, DEL_RECURSE)
        finally:
            if fstate is not None:
                self.filters.leave_dir(fstate)

    def delete_item(self, rel: bytes, path: bytes, mode: int, flags: int,
                    make_room: str | None = None) -> bool:
        """delete.c delete_item(): True when the item is gone."""
        self._uid_write(path, mode)
        if stat.S_ISDIR(mode) and not self._delete_contents(rel, path, flags):
            return self._make_room_failed(make_room, rel)
        return self._delete_entry(rel, path, mode, make_room)

    def _delete_contents(self, rel: bytes, path: bytes, flags: int) -> bool:
        """delete_dir_contents(): empty a dir about to go, depth first; False when
        something stayed.  A tree may be 2,000 dirs deep (a path fills MAXPATHLEN),
        so the descent is a list of frames, not Python's recursion."""
        hidden = [0]  # what the filters keep makes a dir "non-empty" (delete.c)
        contents = self._dirlist(path, rel, True, hidden)
        if not contents and not hidden[0]:
            return True
        if not contents or not flags & DEL_RECURSE:
            self.rep.info(f"cannot delete non-empty directory: {self.rep.safe(rel)}")
            return False
        # Each frame: a dir, its mode, its children left (last first), all gone so far.
        stack = [(rel, path, 0, iter(reversed(contents)), [not hidden[0]])]
        while True:
            drel, dpath, dmode, children, ok = stack[-1]
            for base, cmode in children:
                crel, cpath = drel + b"/" + base, dpath + b"/" + base
                self._uid_write(cpath, cmode)
                if stat.S_ISDIR(cmode):
                    hidden = [0]
                    sub = self._dirlist(cpath, crel, True, hidden)
                    if sub or hidden[0]:
                        stack.append((crel, cpath, cmode, iter(reversed(sub)), [not hidden[0]]))
                        break
                if not self._delete_entry(crel, cpath, cmode, None):
                    ok[0] = False
            else:
                stack.pop()
                if not ok[0]:
                    self.rep.info(f"cannot delete non-empty directory: {self.rep.safe(drel)}")
                if not stack:
                    return ok[0]
                # delete_dir_contents() tries the rmdir even when something stayed.
                if not self._delete_entry(drel, dpath, dmode, None) or not ok[0]:
                    stack[-1][4][0] = False

    def _uid_write(self, path: bytes, mode: int) -> None:
        """DEL_NO_UID_WRITE: a non-root user deleting an entry of its own that it
        may not write (a read-only dir it must empty first) gives itself u+w, as
        rsync does."""
        if mode & stat.S_IWUSR or self.a.am_root or stat.S_ISLNK(mode):
            return
        try:
            if os.lstat(path).st_uid == os.geteuid():
                os.chmod(path, stat.S_IMODE(mode) | stat.S_IWUSR, follow_symlinks=False)
        except OSError:
            pass

    def _delete_entry(self, rel: bytes, path: bytes, mode: int, make_room: str | None) -> bool:
        """delete_item() for one name whose contents, if a dir, are gone."""
        if not make_room and self.g.max_delete is not None and self.deletions >= self.g.max_delete:
            self.skipped_deletes += 1
            return False
        if not self.g.dry_run:
            try:
                if stat.S_ISDIR(mode):
                    os.rmdir(path)
                elif self.g.backup and not make_room == "backup" and (
                        self.g.backup_dir is not None or not rel.endswith(self.g.suffix)):
                    if not self._make_backup(rel, path):
                        return False
                else:
                    os.unlink(path)
            except OSError as ex:
                if stat.S_ISDIR(mode) and ex.errno == errno.ENOTEMPTY:
                    self.rep.info(f"cannot delete non-empty directory: {self.rep.safe(rel)}")
                    return self._make_room_failed(make_room, rel)
                if ex.errno == errno.ENOENT:
                    # delete.c delete_item(): gone already (taken with a dir reached
                    # through a kept dir symlink, say): no line, not counted.
                    return True
                what = "rmdir" if stat.S_ISDIR(mode) else "unlink"
                self.rep.error_xfer(f"delete_file: {what}({self.rep.safe(rel)}) failed: "
                                    f"{os.strerror(ex.errno or 0)} ({ex.errno})",
                                    role="generator")
                return self._make_room_failed(make_room, rel)
        if not make_room:
            self.rep.deleted(rel, mode)
            self.deletions += 1
            self.stats.count("deleted", mode)
        return True

    def _make_room_failed(self, make_room: str | None, rel: bytes) -> bool:
        if make_room:
            # delete.c: an rprintf() of its own, no program name or role
            self.rep.error_xfer(f"could not make way for new {DEL_FOR[make_room]}: "
                                f"{self.rep.safe(rel)}", bare=True)
        return False

    def _make_backup(self, rel: bytes, path: bytes) -> bool:
        """backup.c make_backup(): with --safe-links an unsafe symlink is not kept
        (not even hard-linked into the backup area), just removed."""
        rel = self.rel_name(rel)
        g = self.g
        if g.safe_links and g.links:
            try:
                target: bytes | None = os.readlink(path)
            except OSError as ex:
                # EINVAL: not a symlink (ENOENT: nothing to keep); else unverifiable
                target = None if ex.errno in (errno.EINVAL, errno.ENOENT) else b""
            if target is not None and (not target or is_unsafe_symlink(target, rel)):
                if self.rep.level("symsafe") >= 1:
                    self.rep.info(f'not backing up unsafe symlink "{self.rep.safe(rel)}" -> '
                                  f'"{self.rep.safe(target)}"' if target else
                                  f'not backing up symlink with unreadable target '
                                  f'"{self.rep.safe(rel)}"')
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as ex:
                    self.rep.error_xfer(f"delete_file: unlink({self.rep.safe(rel)}) failed: "
                                        f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
                    return False
                return True
        return self.recv.make_backup(rel, path)

    def _make_room(self, rel: bytes, path: bytes, st: os.stat_result, what: str) -> bool:
        self._drop_dir_fds()  # a held dir fd may be of what is replaced here
        g = self.g
        flags = DEL_RECURSE if (g.delete_mode or g.delete or g.force) else 0
        # delete.c delete_item(): a name that is itself a backup (it ends in the suffix,
        # no --backup-dir) is not backed up again, just removed
        if g.backup and not stat.S_ISDIR(st.st_mode) \
                and (g.backup_dir is not None or not rel.endswith(g.suffix)):
            if g.dry_run:
                return True
            return self._make_backup(rel, path)
        return self.delete_item(rel, path, st.st_mode, flags, make_room=what)

    def delete_dirs(self, include_top: bool) -> None:
        """Delete in every listed content dir, in list order, with the receiver-side
        per-dir filter files entered along the way (the top dir's stay entered: rsync
        reads them once, when it first deletes there)."""
        stack: list[tuple[bytes, object]] = []
        for e in self.flist.entries:
            # (a cleared entry, a duplicate or a dir -m pruned, is not active)
            if not stat.S_ISDIR(e.mode) or not e.flags & FLAG_CONTENT_DIR \
                    or e.flags & (FLAG_MISSING_DIR | FLAG_DUPLICATE):
                continue
            if e.name == b".":
                if include_top:
                    self._delete_top()
                continue
            while stack and not e.name.startswith(stack[-1][0] + b"/"):
                _, tok = stack.pop()
                if tok is not None:
                    self.filters.leave_dir(tok)
            path = self.dpath(e.name)
            st = self._lstat(path, self.g.keep_dirlinks)
            if st is None or not stat.S_ISDIR(st.st_mode):
                continue  # nothing below it exists at the destination yet
            tok = self.filters.enter_dir(e.name, path) if self.filters is not None else None
            stack.append((e.name, tok))
            self.delete_in_dir(e.name, path, enter=False)
        while stack:
            _, tok = stack.pop()
            if tok is not None:
                self.filters.leave_dir(tok)

    def _delete_top(self) -> None:
        if self._top_deleted:
            return
        self._top_deleted = True
        st = self._lstat(self.dest)
        if st is not None and stat.S_ISDIR(st.st_mode):
            self.delete_in_dir(b".", self.dest, enter=False)

    # ------------------------------------------------------------- main loop
    def run(self) -> None:
        g = self.g
        mode = g.delete_mode if g.delete else None
        top = None
        if self.filters is not None and mode and not self.solo_file \
                and os.path.isdir(self.dest):
            top = self.filters.enter_dir(b".", self.dest)
        self.rep.hold_stream = True
        done = False
        try:
            self._run(mode)
            done = True
        finally:
            pool = self._pool
            if pool is not None:
                self._pool = None
                self.rep.out, self.rep.err = self._pool_streams
                pool.close(abort=not done)  # (failed: nothing queued is written)
            self.rep.hold_stream = False
            self.rep.release_stream()
            if top is not None:
                self.filters.leave_dir(top)

    def _run(self, mode: str | None) -> None:
        if mode == "before":
            self.delete_dirs(include_top=True)
        fstack = self._fstack
        if self.feed is not None:
            self.io_error = 0  # each chunk brings the errors listed up to it
            self._run_feed(self.feed)
        for ndx, e in enumerate(self.flist.entries):
            if e.flags & FLAG_DUPLICATE:
                continue  # generate_files(): a name the list's cleaning dropped
            # Leave the per-dir filter files of dirs whose subtree is done.
            while fstack and not e.name.startswith(fstack[-1][0] + b"/"):
                self.filters.leave_dir(fstack.pop()[1])
            self.recv_generator(ndx, e)
        while fstack:
            self.filters.leave_dir(fstack.pop()[1])
        self.finish_requests()
        # --delay-updates: a group's data reaches its name only with the renames at
        # the end (receiver.c handle_delayed_updates() reports hard-linked files'
        # success from there), so the waiting members are linked after them.
        delaying = bool(self.recv.delayed)
        if not delaying:
            self.finish_hard_links()
            self.finish_requests()  # (a member whose group's data never came asks now)
        if self._append_redo:
            self._redo_appends()
        if self.after_files is not None:
            self.after_files()
        # receiver.c handle_delayed_updates() ends the receiver's run; generate_files()'
        # --delete-delay/-after pass comes after it (it would take the .~tmp~ dirs).
        self.recv.finish_delayed()
        if delaying:
            self.finish_hard_links()
        if mode == "after":
            self._top_deleted = False
            self.delete_dirs(include_top=True)
        elif self._delayed:
            delayed, self._delayed = self._delayed, None
            for rel, path, dmode in delayed:
                self.delete_item(rel, path, dmode, DEL_RECURSE)
        self.touch_up_dirs()
        if self.skipped_deletes:
            self.rep.warn_msg(f"Deletions stopped due to --max-delete limit "
                              f"({self.skipped_deletes} skipped)")
            self.rep.del_limit_hit = True

    def _run_feed(self, feed: ChunkFeed) -> None:
        """Generate a list streamed a directory at a time (rsync's incremental
        recursion), in the same order as the whole list: each dir right before its
        contents. Only the directories outlive their chunk (for touch_up_dirs)."""
        fstack = self._fstack
        rg = self.recv_generator
        # An up-to-date regular file costs one fstatat in its (held) dest dir and the
        # quick check; recv_generator() would come to the same answer the long way.
        fast = self._fast_ok and not self.solo_file and not self.g.keep_dirlinks \
            and F.daemon_excluded is None
        unchanged = self._unchanged_reg
        a = self.a
        # With -p, _unchanged_reg() is one compare of the whole st_mode (both regular).
        perms, uid_too, gid_too = a.perms, a.owner and a.am_root, a.group
        fstatat = os.stat
        g = self.g
        # generator.c (is_dir < 0): with dir times kept, a missing subdir is made
        # (owner-only) while its parent's listing is generated, and handled in full
        # right before its contents. Besides matching rsync, a dir's files then land
        # where ext4's Orlov allocator spread the dirs, not all in one inode group.
        early = a.times and not a.omit_dir_times and not g.dry_run and not g.existing \
            and not g.list_only and not self.solo_file and not g.keep_dirlinks \
            and F.daemon_excluded is None and (self.acl_inc_dirs or not a.acls)
        while True:
            if self._append_redo:
                self._redo_appends()
            chunk = feed.next_chunk()
            if chunk is None:
                break
            d, dndx, base, children, io_error = chunk
            # generator.c: a list's I/O error reaches the generator with the list, so
            # --delete skips the dirs from the first list that had one on, not the
            # dirs before it that were listed in full (rsync reads lists as it needs
            # them; netsync may have them from further ahead).
            self.io_error |= io_error
            head = b""
            if d is not None:
                name = d.name
                while fstack and not name.startswith(fstack[-1][0] + b"/"):
                    self.filters.leave_dir(fstack.pop()[1])
                self._cur_dir = (name, children)
                rg(dndx, d)
                if name != b".":
                    head = name
            cut = len(head) + 1 if head else 0
            dfd = -1
            for i, e in enumerate(children):
                if e.flags & FLAG_DUPLICATE:
                    continue
                fmt = e.mode & 0o170000
                if fmt == 0o040000:  # a dir is generated with its own chunk
                    if early and self.skip_dir is None and self.dry_missing is None \
                            and (g.implied_dirs or not e.flags & FLAG_IMPLIED_DIR):
                        try:
                            if dfd < 0:
                                dfd = self._dest_dir_fd(head)
                            os.mkdir(e.name[cut:], 0o700, dir_fd=dfd)
                            e.flags |= FLAG_DIR_CREATED
                        except OSError:
                            pass  # it exists, or its own turn reports why it cannot be made
                    continue
                if fast and fmt == 0o100000 and self.skip_dir is None \
                        and self.dry_missing is None:
                    try:
                        if dfd < 0:
                            dfd = self._dest_dir_fd(head)
                        st = fstatat(e.name[cut:], dir_fd=dfd, follow_symlinks=False)
                        if perms:
                            if st.st_mode == e.mode and st.st_size == e.size \
                                    and st.st_mtime_ns // 1_000_000_000 \
                                    == e.mtime_ns // 1_000_000_000 \
                                    and (not uid_too or st.st_uid == e.uid) \
                                    and (not gid_too or st.st_gid == e.gid):
                                continue
                        elif unchanged(e, st):
                            continue
                    except FileNotFoundError:
                        self._missing = e  # recv_generator() need not lstat it again
                    except OSError:
                        pass
                rg(base + i, e)
                dfd = -1  # it may have made or replaced dirs: ask for the fd again
            del chunk, children
        self._cur_dir = None
        feed.flist.cur = None

    def touch_up_dirs(self) -> None:
        from netsync.metadata import set_times

        a = self.a
        if a.acls:  # generator.c touch_up_dirs(): the mode and times, not the ACLs again
            a = a.copy()
            a.acls = False
        # generator.c touch_up_dirs(): without a word (what failed was said when the dir
        # came up); a dir gone since (deleted through a kept dir symlink, say) is
        # passed over.
        for path, e, new_mode in reversed(self.dir_fixups):
            if new_mode == -1:
                if keep_time(self.a, e.mode):
                    set_times(self.a, path, e, self._lstat(path))
                continue
            st = self._lstat(path)
            if st is not None:
                set_file_attrs(a, path, e, st, new_mode=new_mode)

    def recv_generator(self, ndx: int, e: FileEntry, hl_retry: bool = False) -> None:
        g = self.g
        a = self.a
        name = e.name
        is_dir = stat.S_ISDIR(e.mode)
        if self.skip_dir is not None:
            if self._is_below(name, self.skip_dir):
                if is_dir:
                    e.flags |= FLAG_MISSING_DIR
                return
            self.skip_dir = None
        path = self.dpath(name)
        if F.daemon_excluded is not None and name != b"." and F.daemon_excluded(path, is_dir):
            # generator.c: the module's own rules refuse it, whatever the client sent.
            what = "directory" if is_dir else "file"
            self.rep.error_xfer(f'ERROR: daemon refused to receive {what} '
                                f'"{self.rep.safe(name)}"', bare=True)
            if is_dir:
                self.rep._emit("*** Skipping any contents from this failed directory ***",
                               self.rep.err)
                self.skip_dir = name
            return
        if self.dry_missing is not None and self._is_below(name, self.dry_missing):
            st = None
            if g.fuzzy:  # generator.c parent_is_dry_missing: nothing to search
                self._fz_lists = []
                self._fz_parent = None
        else:
            self.dry_missing = None
            if g.fuzzy:
                parent = parent_of(name)
                if parent != self._fz_parent:
                    # A new parent dir: its candidates are scanned when first needed.
                    self._fz_parent = parent
                    self._fz_lists = []
                    self._fz_need = True
            if self._missing is e:
                self._missing = None
                got = None
            elif (limit := self._size_limit(e)) is not None:
                # generator.c: a file the size limits skip is skipped before a failed
                # stat (ENOTDIR under a file, say) would be reported.
                got = self._gen_stat(path, False, report=False)
                if got is False:
                    self._size_skip(e, limit)
                    return
            else:
                got = self._gen_stat(path, g.keep_dirlinks and is_dir)
            if got is False:
                return
            st = got  # type: ignore[assignment]
            if self._fast_ok and st is not None and self._unchanged_reg(e, st):
                return
            if g.relative and not g.implied_dirs and st is None and b"/" in name:
                parent = parent_of(path)
                if not os.path.isdir(parent):
                    if g.dry_run:
                        st = None
                    else:
                        self._make_implied(parent)
        if g.existing and st is None:
            if is_dir:
                self.skip_dir = name
                e.flags |= FLAG_MISSING_DIR
            if self.rep.level("skip") >= 1:
                what = "directory" if is_dir else "file"
                self.rep.info(f'not creating new {what} "{self.rep.safe(name)}"')
            return
        if g.ignore_existing and st is not None and not (is_dir and stat.S_ISDIR(st.st_mode)):
            if self.rep.level("skip") >= 1:
                self.rep.info(f"{self.rep.safe(name)} exists")
            if is_dir and not g.dry_run:
                # rsync still re-times every listed dir at the end (touch_up_dirs).
                self.dir_fixups.append((path, e, -1))
            if is_dir and self.feed is not None and g.delete \
                    and g.delete_mode in ("during", "delay") and e.flags & FLAG_CONTENT_DIR \
                    and not stat.S_ISLNK(st.st_mode):
                # generator.c generate_files(): an incremental run clears each listed
                # dir of extras as its list comes up, skipped or not; this one is no
                # dir ("opendir ... failed: Not a directory"). (Not through a symlink.)
                self.delete_in_dir(name, path, enter=False)
            return
        if is_dir:
            self._gen_dir(ndx, e, path, st)
            return
        new_mode = e.mode
        if not a.perms:
            exists = st is not None and not stat.S_ISDIR(st.st_mode)
            new_mode = dest_mode(a, e.mode, st.st_mode if st else 0, exists,
                                 None if exists else self._dflt_perms(path))
        if g.hard_links and e.hlink is not None and not hl_retry:
            if self._hard_link(ndx, e, path, st):
                return
        if stat.S_ISLNK(e.mode):
            if g.links:
                self._gen_symlink(ndx, e, path, st, new_mode)
            elif self.rep.level("nonreg") >= 1:
                self.rep.info(f'skipping non-regular file "{self.rep.safe(name)}"')
            return
        if not stat.S_ISREG(e.mode):
            is_dev = stat.S_ISCHR(e.mode) or stat.S_ISBLK(e.mode)
            if (is_dev and g.devices and a.am_root) or (not is_dev and g.specials):
                self._gen_special(ndx, e, path, st, new_mode)
            elif self.rep.level("nonreg") >= 1:
                self.rep.info(f'skipping non-regular file "{self.rep.safe(name)}"')
            return
        self._hl_retry_ndx = ndx if hl_retry else -1
        self._gen_file(ndx, e, path, st, new_mode)

    # ------------------------------------------------------------- dirs
    def _mkdir_confined(self, path: bytes, mode: int, parents: bool = False) -> None:
        """mkdir a destination dir beneath the held destination fd: a symlink
        among its parents is not followed (ELOOP); ``parents`` makes missing ones."""
        pre = self._dprefix
        if self.solo_file or self.g.keep_dirlinks or not path.startswith(pre):
            os.makedirs(path, mode) if parents else os.mkdir(path, mode)
            return
        head, _, leaf = path[len(pre):].rpartition(b"/")
        if parents and head:
            self._drop_dir_fds()
            root = self._dest_dir_fd(b"")
            os.close(safepath.dir_beneath(root, head.split(b"/"), create=0o777))
        os.mkdir(leaf, mode, dir_fd=self._dest_dir_fd(head))

    def _make_implied(self, parent: bytes) -> None:
        """-R --no-implied-dirs: make the missing parents of an entry (rsync's
        make_path), never through a symlink under the destination."""
        try:
            self._mkdir_confined(parent, 0o777, parents=True)
        except FileExistsError:
            pass
        except OSError as ex:
            self.rep.error_xfer(f'recv_generator: mkdir {self.rep.qpath(parent)} failed: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")

    def _gen_dir(self, ndx: int, e: FileEntry, path: bytes, st: os.stat_result | None) -> None:
        g = self.g
        a = self.a
        if not g.implied_dirs and e.flags & FLAG_IMPLIED_DIR:
            return
        if st is not None and not stat.S_ISDIR(st.st_mode):
            if not self._make_room(e.name, path, st, "dir"):
                self.rep.info("*** Skipping any contents from this failed directory ***")
                self.skip_dir = e.name
                e.flags |= FLAG_MISSING_DIR
                return
            st = None
        if g.dry_run and st is None:
            if self.dry_missing is None:
                self.dry_missing = e.name
            e.flags |= FLAG_MISSING_DIR
        # A dir made earlier in this run counts as new (rsync: statret = -1).
        existed = st is not None and not e.flags & FLAG_DIR_CREATED
        new_mode = e.mode if a.perms else dest_mode(a, e.mode, st.st_mode if st else 0,
                                                    existed,
                                                    None if existed else self._dflt_perms(path))
        statret_st = st if existed else None
        xname = None
        iflags = 0 if statret_st is not None else log.ITEM_LOCAL_CHANGE
        quiet_item = False
        xa_alt = None
        if statret_st is None and g.alt_dest:
            found = self._alt_non(e)
            if found is not None:
                xa_alt = found[1]
                if found[0] == 3:
                    quiet_item = True
                    self._alt_matched(e, found[2], False)
                else:
                    statret_st = found[2]
        deleting = g.delete and g.delete_mode in ("during", "delay") \
            and e.flags & FLAG_CONTENT_DIR
        delete_now = deleting and st is not None
        # rsync prints a dir's line when its echo comes back from the sender, by when
        # the generator has already printed the deletions in it: report it after them.
        deferred = None
        if not quiet_item:
            if delete_now:
                deferred = self.item_flags(e, statret_st, iflags, xname)
            else:
                self.itemize(e, statret_st, iflags, xname)
        if delete_now and e.name == b"." and not self.solo_file:
            self._delete_top()
            delete_now = False
            if deferred is not None:
                self.report_item(e, deferred, xname)
                deferred = None
        if st is None and not g.dry_run:
            mk_mode = stat.S_IMODE(new_mode) | 0o700
            if self.acl_inc_dirs and e.name != b".":
                mk_mode = stat.S_IMODE(e.mode) & 0o700
            try:
                self._mkdir_confined(path, mk_mode)
            except FileExistsError:
                pass
            except OSError as ex:
                if g.relative and ex.errno == errno.ENOENT:
                    try:
                        self._mkdir_confined(path, stat.S_IMODE(new_mode) | 0o700, parents=True)
                        ex = None  # type: ignore[assignment]
                    except OSError as ex2:
                        ex = ex2
                if ex is not None:
                    self.rep.error_xfer(f"recv_generator: mkdir {self.rep.qpath(path)} "
                                        f"failed: {os.strerror(ex.errno or 0)} ({ex.errno})",
                                        role="generator")
                    self.rep.info("*** Skipping any contents from this failed directory ***")
                    self.skip_dir = e.name
                    e.flags |= FLAG_MISSING_DIR
                    return
        if not g.dry_run:
            errs: list[str] = []
            # Owner/perms now; the times after the contents are written.
            cur = self._lstat(path)
            if cur is not None and not existed and not a.perms and cur.st_mode & stat.S_ISGID:
                # rsync.c: a dir we just made under a setgid parent keeps its setgid bit.
                new_mode |= stat.S_ISGID
            if cur is not None:
                # generator.c dir_tweaking: a non-root receiver keeps u+rwx on the dir
                # while filling it; touch_up_dirs() gives it new_mode at the end.
                now_mode = new_mode if a.am_root or new_mode & 0o700 == 0o700 \
                    or self.solo_file else new_mode | 0o700
                # generator.c recv_generator(): a dir's attributes, its times too, with
                # their errors now; touch_up_dirs() sets the times again, silently.
                set_file_attrs(a, path, e, cur, new_mode=now_mode, errors=errs)
                if now_mode != new_mode and not a.perms:
                    # generator.c: without -p an existing dir's only chmod here is
                    # dir_tweaking's, with its own message
                    errs = [m.replace("failed to set permissions on ",
                                      "failed to modify permissions on ", 1) for m in errs]
            for msg in errs:
                self.rep.error_xfer(msg, role="generator")
            self.dir_fixups.append((path, e, new_mode))
        if self.xag is not None:
            self.xag.dir_made(e, path, xa_alt)
        if deleting and not e.flags & FLAG_MISSING_DIR:
            if delete_now:
                # Stat and itemize first, then delete (the dir's mtime moves as we do).
                if self.filters is not None:
                    self._fstack.append((e.name, self.filters.enter_dir(e.name, path)))
                self.delete_in_dir(e.name, path, enter=False)
            elif st is None:
                # A dir just made has nothing to delete, but rsync calls delete_in_dir()
                # on it all the same, and so says there that an I/O error stops them.
                self._io_error_stops_deletion()
        if deferred is not None:
            self.report_item(e, deferred, xname)

    # ------------------------------------------------------------- links etc.
    def _gen_symlink(self, ndx: int, e: FileEntry, path: bytes,
                     st: os.stat_result | None, new_mode: int | None = None) -> None:
        """``new_mode``: the mode without -p (dest_mode()), which only --fake-super's
        stand-in file and its %stat record keep (a real symlink's is ignored)."""
        g = self.g
        target = e.link or b""
        if g.munge_links:
            # flist.c munges as it receives, so --safe-links judges the munged target
            # (absolute: a munging receiver with --safe-links ignores every symlink).
            target = b"/rsyncd-munged/" + target
        if g.safe_links and is_unsafe_symlink(target, e.name):
            if self.rep.level("name") >= 1:
                self.rep.info(f'ignoring unsafe symlink "{self.rep.safe(e.name)}" -> '
                              f'"{self.rep.safe(target)}"')
            return
        if st is not None and stat.S_ISLNK(st.st_mode):
            try:
                cur = _md.fake_readlink(path, self.a.fake_super)
            except OSError:
                cur = None
            if cur == target:
                updated = set_file_attrs(self.a, path, e, st)
                self.rep.attrs_report(e.name, updated or bool(self.item_flags(e, st, 0)
                                                              & _ATTR_BITS))
                self.itemize(e, st, 0)
                self._hl_finish(e)
                if g.remove_source_files:
                    self._success(ndx)
                return
        quiet_item = False
        st_for_item = st if st is not None and stat.S_ISLNK(st.st_mode) else None
        if st is None and g.alt_dest:
            found = self._alt_non(e)
            if found is not None:
                if found[0] == 3:
                    linked = g.alt_dest_type == "link" and not g.dry_run \
                        and self._link_into_place(found[1], path)
                    self._alt_matched(e, found[2], linked or (
                        g.dry_run and g.alt_dest_type == "link"))
                    if g.alt_dest_type == "compare":
                        return
                    quiet_item = True
                    if linked:
                        self._hl_finish(e)
                        return
                else:
                    st_for_item = found[2]
        if st is not None and (stat.S_ISDIR(st.st_mode) or g.backup):
            if not self._make_room(e.name, path, st, "symlink"):
                return
        if not g.dry_run:
            tmp = tmp_name(path, None)
            try:
                if self.a.fake_super:  # a file holding the target stands in
                    _md.fake_create(tmp, target)
                else:
                    os.symlink(target, tmp)
                set_file_attrs(self.a, tmp, e, None, new_mode=new_mode)
                os.replace(tmp, path)
            except OSError as ex:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                self.rep.error_xfer(f'symlink {self.rep.qpath(path)} -> '
                                    f'"{self.rep.safe(target)}" failed: '
                                    f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
                return
        if not quiet_item:
            self.itemize(e, st_for_item, log.ITEM_LOCAL_CHANGE | log.ITEM_REPORT_CHANGE)
        self._hl_finish(e)
        if g.remove_source_files:
            self._success(ndx)

    def _gen_special(self, ndx: int, e: FileEntry, path: bytes, st: os.stat_result | None,
                     new_mode: int) -> None:
        g = self.g
        if st is not None:
            same_type = stat.S_IFMT(st.st_mode) == stat.S_IFMT(e.mode)
            if same_type and (not (stat.S_ISCHR(e.mode) or stat.S_ISBLK(e.mode))
                              or st.st_rdev == e.rdev):
                updated = set_file_attrs(self.a, path, e, st, new_mode=new_mode)
                self.rep.attrs_report(e.name, updated or bool(self.item_flags(e, st, 0)
                                                              & _ATTR_BITS))
                self.itemize(e, st, 0)
                self._hl_finish(e)
                if g.remove_source_files:
                    self._success(ndx)
                return
            if stat.S_ISDIR(st.st_mode):
                is_dev = stat.S_ISCHR(e.mode) or stat.S_ISBLK(e.mode)
                if not self._make_room(e.name, path, st, "device" if is_dev else "special"):
                    return
            if not same_type:
                st = None
        quiet_item = False
        item_st = st
        if st is None and g.alt_dest:
            found = self._alt_non(e)
            if found is not None:
                if found[0] == 3:
                    linked = g.alt_dest_type == "link" and not g.dry_run \
                        and self._link_into_place(found[1], path)
                    self._alt_matched(e, found[2], linked or (
                        g.dry_run and g.alt_dest_type == "link"))
                    if g.alt_dest_type == "compare":
                        return
                    quiet_item = True
                    if linked:
                        self._hl_finish(e)
                        return
                else:
                    item_st = found[2]
        if not g.dry_run:
            tmp = tmp_name(path, None)
            try:
                if self.a.fake_super:  # an empty file stands in
                    _md.fake_create(tmp)
                else:
                    os.mknod(tmp, e.mode, e.rdev)
                set_file_attrs(self.a, tmp, e, None, new_mode=new_mode)
                os.replace(tmp, path)
            except OSError as ex:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                self.rep.error_xfer(f'mknod {self.rep.qpath(path)} failed: '
                                    f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
                return
        if not quiet_item:
            self.itemize(e, item_st, log.ITEM_LOCAL_CHANGE | log.ITEM_REPORT_CHANGE)
        self._hl_finish(e)
        if g.remove_source_files:
            self._success(ndx)

    @staticmethod
    def _link_into_place(src: bytes, path: bytes, src_dir_fd: int | None = None) -> bool:
        """Hard-link ``src`` (in ``src_dir_fd``) at ``path`` via a temporary name;
        False if linking fails."""
        tmp = tmp_name(path, None)
        try:
            os.link(src, tmp, src_dir_fd=src_dir_fd, follow_symlinks=False)
            os.replace(tmp, path)
            return True
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False

    def _remember_hl(self, e: FileEntry) -> None:
        if self.g.hard_links and e.hlink is not None and e.hlink not in self.hl_done:
            self.hl_done[e.hlink] = e.name

    def _hl_finish(self, e: FileEntry) -> None:
        """A member done here and now (up to date, made, found in an alt-dest, or
        "sent" by a dry run): hlink.c finish_hard_link() links the members that
        were skipped waiting for their group's data right away, newest first."""
        if not self.g.hard_links:
            return
        self._remember_hl(e)
        if self._hl_ending or not self.hl_deferred:
            return
        mine = self.hl_deferred.pop(e.hlink, None) if e.hlink is not None else None
        for i, de in reversed(mine or ()):
            self._hl_link_late(i, de)
        if not self.hl_deferred and not self.hl_waiting:
            self.hl_pending_from = None

    def _hl_pend(self, ndx: int, e: FileEntry, deferred: bool) -> None:
        if deferred:
            self.hl_deferred.setdefault(e.hlink, []).append((ndx, e))  # type: ignore[arg-type]
        else:
            self.hl_waiting.append((ndx, e))
        if self.hl_pending_from is None or ndx < self.hl_pending_from:
            self.hl_pending_from = ndx

    def _hl_link_late(self, ndx: int, e: FileEntry) -> None:
        path = self.dpath(e.name)
        if not self._hard_link(ndx, e, path, self._lstat(path), deferred=True):
            self.recv_generator(ndx, e, hl_retry=True)

    def _hard_link(self, ndx: int, e: FileEntry, path: bytes, st: os.stat_result | None,
                   deferred: bool = False) -> bool:
        """hlink.c: link to a finished member of the group, or wait for one.

        Returns True when this entry was handled (linked or deferred).
        """
        group = e.hlink
        assert group is not None
        if not deferred and group in self.hl_sent:
            # hard_link_check(): a member's data is being received: wait for it.
            self._hl_pend(ndx, e, deferred=False)
            return True
        done = self.hl_done.get(group)
        if done is None:
            if st is None and ndx != self.hl_last.get(group) and not deferred \
                    and stat.S_ISREG(e.mode) and not self.g.alt_dest and not self.g.fuzzy:
                # Not the last of its group and missing: the last one gets the data
                # and this one is linked to it afterwards (rsync's in_progress wait).
                # Other types need no data: the first is made and the rest link to it.
                self._hl_pend(ndx, e, deferred=True)
                return True
            return False
        first_path = self.dpath(done)
        fst = self._lstat(first_path)
        if fst is None and self.g.dry_run and self.g.alt_dest:
            # hlink.c: a dry run stands for the leader with its alt-dest match.
            for i in range(len(self.g.alt_dest)):
                fst = self._alt_lstat(self._alt_at(i, done))
                if fst is not None:
                    break
        if st is not None and fst is not None and st.st_ino == fst.st_ino \
                and st.st_dev == fst.st_dev:
            # hlink.c maybe_hard_link(): already linked ("hf" at -ii, no "=>" name)
            self.itemize(e, st, log.ITEM_LOCAL_CHANGE | log.ITEM_XNAME_FOLLOWS, xname=b"")
            self.rep.attrs_report(e.name)
            if self.g.remove_source_files:
                self._success(ndx)  # (hard_link_check() reports it as done as well)
            return True
        if st is not None and stat.S_ISDIR(st.st_mode):
            if not self._make_room(e.name, path, st, "file"):
                return True
        if not self.g.dry_run:
            tmp = tmp_name(path, None)
            try:
                os.link(first_path, tmp)
                if st is not None and self.g.backup and not stat.S_ISDIR(st.st_mode):
                    self._make_backup(e.name, path)
                os.replace(tmp, path)
            except OSError as ex:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                self.rep.error_xfer(f'link {self.rep.qpath(path)} => '
                                    f'{self.rep.safe(done)} failed: '
                                    f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
                return True
        item_st = self._hlink_alt_st(e, fst) if st is None and self.g.alt_dest else st
        if item_st is not False:
            self.itemize(e, item_st or None, log.ITEM_LOCAL_CHANGE | log.ITEM_XNAME_FOLLOWS,
                         xname=done)
        if self.g.remove_source_files:
            self._success(ndx)
        return True

    def _hlink_alt_st(self, e: FileEntry, fst: os.stat_result | None
                      ) -> os.stat_result | None | bool:
        """hard_link_check(): a missing member matching an alt-dest entry is itemized
        against it (not as new); False when a --link-dest match goes unreported."""
        g, rep = self.g, self.rep
        found = None
        name = self.rel_name(e.name)
        for i, alt in enumerate(g.alt_dest):
            ast = self._alt_lstat(self._alt_at(i, name))
            if ast is None:
                continue
            if g.alt_dest_type == "link":
                if fst is None or (fst.st_dev, fst.st_ino) != (ast.st_dev, ast.st_ino):
                    continue
                if not rep.has_i or (rep.level("name") < 2 and rep.has_i < 2):
                    rep.attrs_report(e.name)
                    return False
                return ast
            if not stat.S_ISREG(e.mode) or not self._quick_check_ok(e, join(alt, name), ast):
                continue
            found = ast
            mode = e.mode if self.a.perms else dest_mode(self.a, e.mode, ast.st_mode, True)
            if not self._attrs_differ(e, ast, mode, join(alt, name)):
                break
        return found

    def finish_hard_links(self) -> None:
        """Link the members that waited for their group's data (hlink.c finish_hard_link)."""
        # Leaders in the order their data arrives (the one sent, else the group's
        # last); each one's chain: the members that waited for its data in the order
        # they came, then those skipped before it, newest first (rsync prepends).
        last, sent = self.hl_last, self.hl_sent

        def leader(e: FileEntry) -> int:
            return sent.get(e.hlink, last.get(e.hlink, -1))  # type: ignore[arg-type]

        waiting = sorted([(leader(e), 0, k, n, e) for k, (n, e) in enumerate(self.hl_waiting)]
                         + [(leader(e), 1, -k, n, e) for group in self.hl_deferred.values()
                            for k, (n, e) in enumerate(group)], key=lambda t: t[:4])
        self.hl_waiting, self.hl_deferred = [], {}
        self.hl_pending_from = None
        self.hl_sent.clear()
        self._hl_ending = True
        try:
            for *_, ndx, e in waiting:
                self._hl_link_late(ndx, e)
        finally:
            self._hl_ending = False
            # (a redo pass after this links to the group's data, received by now)
            self.hl_deferred.clear()
            self.hl_sent.clear()

    def _success(self, ndx: int) -> None:
        if self.on_success is not None and not self.g.dry_run:
            self.on_success(ndx)

    # ------------------------------------------------------------- files
    def _quick_check_ok(self, e: FileEntry, path: bytes, st: os.stat_result) -> bool:
        g = self.g
        if st.st_size != e.size:
            return False
        if g.checksum:
            if self.checksum_fn is None or e.checksum is None:
                return False
            try:
                return self.checksum_fn(path, st.st_size) == e.checksum
            except OSError:
                return False
        if g.size_only:
            return True
        if g.ignore_times:
            return False
        return not mtime_differs(self.a, st, e)

    def _size_limit(self, e: FileEntry) -> str | None:
        """The --max-size/--min-size limit that leaves this regular file out, if any."""
        g = self.g
        if not stat.S_ISREG(e.mode):
            return None
        if g.max_size is not None and e.size > g.max_size:
            return "over max"
        if g.min_size is not None and e.size < g.min_size:
            return "under min"
        return None

    def _size_skip(self, e: FileEntry, limit: str) -> None:
        if self.rep.level("skip") >= 1:
            self.rep.info(f"{self.rep.safe(e.name)} is {limit}-size")

    def _gen_file(self, ndx: int, e: FileEntry, path: bytes, st: os.stat_result | None,
                  new_mode: int) -> None:
        g = self.g
        name = e.name
        if (limit := self._size_limit(e)) is not None:
            self._size_skip(e, limit)
            return
        if g.update and st is not None and stat.S_IFMT(st.st_mode) == stat.S_IFMT(e.mode) \
                and e.mtime - st.st_mtime_ns // 10**9 < self.a.modify_window:
            if self.rep.level("skip") >= 1:
                self.rep.info(f"{self.rep.safe(name)} is newer")
            return
        if g.update and st is not None and stat.S_ISREG(st.st_mode) \
                and e.mtime_ns < st.st_mtime_ns and self.a.modify_window == 0 \
                and e.mtime < st.st_mtime_ns // 10**9:
            return
        if st is not None and _rcv.write_devices and (stat.S_ISCHR(st.st_mode)
                                                      or stat.S_ISBLK(st.st_mode)):
            st = _rcv.device_stat(path, st)  # --write-devices: written like a file
        elif st is not None and not stat.S_ISREG(st.st_mode):
            if not self._make_room(name, path, st, "file"):
                return
            st = None
        partial = self._partial_basis(path)
        if partial is not None and st is None:
            # generator.c prepare_to_open: a --partial-dir file is the basis, before
            # any alt-dest; the item is still reported against the (missing) dest.
            self._item_st = None
            try:
                self._transfer(ndx, e, path, partial[0], None, new_mode, basis_st=partial[1])
            finally:
                self._item_st = False
            return
        basis = path if st is not None else None
        basis_st = st
        xname: bytes | None = None
        iflags_extra = 0
        if g.alt_dest and (st is None or g.alt_dest_type != "copy"):
            found = self._try_alt_dests(ndx, e, path, st, new_mode)
            if found is True:
                if g.remove_source_files:
                    self._success(ndx)
                return
            if isinstance(found, tuple):
                basis, basis_st = found
                iflags_extra = log.ITEM_BASIS_TYPE_FOLLOWS
        if basis_st is None and g.fuzzy and not g.append:
            # (--append has nothing to append to in a similar file: a missing file is
            # sent whole.  rsync appends to the fuzzy basis's length, or skips the
            # file when that basis is as long: a new file of zeros, or none at all.)
            fz = self._find_fuzzy(e)
            if fz is not None:
                # generator.c: the similar file is the basis (FNAMECMP_FUZZY+i) but the
                # item is reported against the missing dest (real_sx): new.
                self._item_st = None
                self._fz_req = (FNAMECMP_FUZZY + fz[3], fz[2])
                try:
                    self._transfer(ndx, e, path, fz[0], None, new_mode,
                                   log.ITEM_BASIS_TYPE_FOLLOWS | log.ITEM_XNAME_FOLLOWS,
                                   basis_st=fz[1], xname=fz[2])
                finally:
                    self._item_st = False
                    self._fz_req = None
                return
        if basis_st is None:
            if (g.alt_dest or g.fuzzy) and g.hard_links and e.hlink is not None \
                    and ndx != self.hl_last.get(e.hlink) and ndx != self._hl_retry_ndx:
                # No alt-dest match either: the group's last member gets the data
                # (generator.c F_HLINK_NOT_LAST after try_dests_reg).
                self._hl_pend(ndx, e, deferred=True)
                return
            self._transfer(ndx, e, path, None, None, new_mode, iflags_extra)
            return
        if basis is path and self._quick_check_ok(e, path, basis_st):
            if partial is not None:
                self._drop_partial(partial[0])
            iflags = self.item_flags(e, basis_st, 0)
            if iflags & log.ITEM_REPORT_ACL and iflags & log.ITEM_REPORT_PERMS \
                    and not self.a.fake_super and self._acl_sets_mode(e, basis_st, new_mode):
                # generator.c itemizes after set_file_attrs() here: an access ACL that
                # set the mode leaves no permission change to report.
                iflags &= ~log.ITEM_REPORT_PERMS
            # Up to date: touch the file only when an attribute differs (-c compares
            # times to the nanosecond, which the report bits do not show).
            updated = bool(iflags & _ATTR_BITS)
            # (--fake-super: rsync's set_file_attrs() always runs set_stat_xattr(),
            # which gives the real file owner access and records the mode in the xattr)
            if iflags & _ATTR_BITS or g.checksum or self.a.fake_super:
                errs: list[str] = []
                updated |= set_file_attrs(self.a, path, e, basis_st, new_mode=new_mode,
                                          errors=errs, accurate=g.checksum)
                for msg in errs:
                    self.rep.error_xfer(msg, role="generator")
            self.rep.attrs_report(name, updated)
            self.report_item(e, iflags)
            self._hl_finish(e)
            if g.remove_source_files:
                self._success(ndx)
            return
        if g.append and st is not None and st.st_size >= e.size:
            return
        if partial is not None and basis is path:
            self._item_st = st
            try:
                self._transfer(ndx, e, path, partial[0], st, new_mode, iflags_extra,
                               basis_st=partial[1], xname=xname)
            finally:
                self._item_st = False
            return
        if basis is path and st is not None and _rcv.write_devices and not g.dry_run \
                and g.backup and (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) \
                and not self._backup_device(name, path, st):
            return
        self._transfer(ndx, e, path, basis, st, new_mode, iflags_extra, basis_st=basis_st,
                       xname=xname)

    def _backup_device(self, name: bytes, path: bytes, st: os.stat_result) -> bool:
        """generator.c: -b with --inplace (which --write-devices implies) keeps what it
        reads of a device it is about to write in a regular file with the device's
        attributes.  Only the size a seek finds is read: rsync's whole-file
        copy_file() reads to EOF, which for /dev/zero never comes."""
        recv = self.recv
        r = getattr(recv, "r", None)
        if r is None or not r.backup:
            return True
        bpath = recv.backup_name(name, path)
        bfd: int | None = None
        tmp = b""
        try:
            if r.backup_dir is not None:
                bfd = recv._backup_parent(name, path)
                bdir, leaf = b"", name.rpartition(b"/")[2] + r.suffix
            else:
                bdir, _, leaf = bpath.rpartition(b"/")
                bdir = bdir + b"/" if bdir or bpath.startswith(b"/") else b""
            tmp = tmp_name(bdir + leaf, None)
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600, dir_fd=bfd)
            try:
                left = st.st_size
                if left:
                    sfd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    try:
                        while left > 0:
                            chunk = os.read(sfd, min(left, 1 << 20))
                            if not chunk:
                                break
                            left -= len(chunk)
                            view = memoryview(chunk)
                            while view:
                                view = view[os.write(out, view):]
                    finally:
                        os.close(sfd)
                a = self.a
                uid = st.st_uid if a.owner and a.am_root else -1
                gid = st.st_gid if a.group else -1
                if uid != -1 or gid != -1:
                    try:
                        os.fchown(out, uid, gid)
                    except PermissionError:
                        pass
                if a.perms:
                    os.fchmod(out, stat.S_IMODE(st.st_mode))
                if a.times:
                    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(out)
            os.replace(tmp, bdir + leaf, src_dir_fd=bfd, dst_dir_fd=bfd)
        except OSError as ex:
            if tmp:
                try:
                    os.unlink(tmp, dir_fd=bfd)
                except OSError:
                    pass
            self.rep.error_xfer(f'open {self.rep.qpath(bpath)} failed: '
                                f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
            return False
        finally:
            if bfd is not None:
                os.close(bfd)
        root = path[: len(path) - len(name)] if path.endswith(name) else b""
        self.rep.backup_note(name, bpath[len(root):] if root and bpath.startswith(root)
                             else bpath)
        return True

    def recv_partial_dir(self) -> bytes | None:
        return getattr(getattr(self.recv, "r", None), "partial_dir", None)

    def _partial_basis(self, path: bytes) -> tuple[bytes, os.stat_result] | None:
        """generator.c: a regular file waiting in --partial-dir for ``path``.

        An absolute --partial-dir is an operator path, resolved by the ownership
        walk (confined to a daemon's module); a relative one is never followed
        through a symlink; one the module's rules exclude is not used."""
        self._refused_partial = None
        pdir = self.recv_partial_dir()
        if pdir is None:
            r = getattr(self.recv, "r", None)
            if self.strict_partial and r is not None and r.delay_updates \
                    and r.stage_dir.startswith(b"/"):
                # --delay-updates stages in the --partial-dir: checked alike.
                self._confined_partial(r.stage_dir.rstrip(b"/") + b"/"
                                       + path.rpartition(b"/")[2], path)
            return None
        pp = self.recv._partial_path(path)
        if _rcv.partial_hidden(pp):
            return None
        try:
            if pdir.startswith(b"/"):
                pst = self._confined_partial(pp, path)
                if pst is None:
                    return None
            else:
                if not stat.S_ISDIR(os.lstat(parent_of(pp)).st_mode):
                    return None  # a relative partial-dir is never followed through a symlink
                pst = os.lstat(pp)
        except OSError:
            return None
        return (pp, pst) if stat.S_ISREG(pst.st_mode) else None

    def _confined_partial(self, pp: bytes, path: bytes) -> os.stat_result | None:
        """lstat of the partial file ``pp`` through the ownership walk; None when
        refused.  receiver.c: a daemon that negotiated in-place partial updates
        (``strict_partial``) refuses the transfer of a file whose partial is
        there but out of its reach (the partial dir leads out of the module)."""
        try:
            dfd, leaf = safepath.owner_walk_parent(pp)
        except OSError as ex:
            if ex.errno == errno.ELOOP and self.strict_partial:
                try:
                    if stat.S_ISREG(os.stat(pp).st_mode):
                        self._refused_partial = path
                except OSError:
                    pass
            return None
        try:
            return os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(dfd)

    def _drop_partial(self, pp: bytes) -> None:
        """A used (or needless) partial goes, and a relative partial-dir with it once
        empty (receiver.c / util1.c handle_partial_dir PDIR_DELETE); an absolute
        one through the ownership walk (never out of a daemon's module)."""
        if self.g.dry_run:
            return
        try:
            if (self.recv.r.partial_dir or b"").startswith(b"/"):
                dfd, leaf = safepath.owner_walk_parent(pp)
                try:
                    os.unlink(leaf, dir_fd=dfd)
                finally:
                    os.close(dfd)
            else:
                os.unlink(pp)
        except OSError:
            pass
        if not (self.recv.r.partial_dir or b"").startswith(b"/"):
            try:
                os.rmdir(parent_of(pp))
            except OSError:
                pass

    def _fuzzy_dir(self, i: int, e: FileEntry) -> tuple[bytes, list[fuzzy.Candidate] | None]:
        """Fuzzy search dir ``i`` of ``e``'s parent (0: the destination's, i: under the
        i-th basis dir) as (path prefix of its files, its candidates).  The dest dir
        is read through the held (symlink-free) dir fd, a basis dir through its
        confined fd, as the other lookups there."""
        head = parent_of(e.name) if b"/" in e.name else b""
        excluded = None
        if i == 0:
            if self.solo_file:
                dpath = parent_of(self.dest)
                where: int | bytes | None = dpath
            else:
                dpath = self.dpath(head) if head else self.dest
                try:
                    where = _open_listable(self._dest_dir_fd(head)) \
                        if not self._follow_dest_links else dpath
                except OSError:
                    where = None
        else:
            dpath = join(self.g.alt_dest[i - 1], head) if head else self.g.alt_dest[i - 1]
            at = self._alt_at(i - 1, e.name)
            try:
                where = _open_listable(at[0]) if at is not None else None
            except OSError:
                where = None
        if where is None:
            return dpath, None
        if F.daemon_excluded is not None:
            dx = F.daemon_excluded
            excluded = lambda n: dx(join(dpath, n), False)  # noqa: E731
        try:
            return dpath, fuzzy.scan_dir(where, excluded)
        finally:
            if isinstance(where, int):
                os.close(where)

    def _find_fuzzy(self, e: FileEntry) -> tuple[bytes, os.stat_result, bytes, int] | None:
        """generator.c find_fuzzy() for a missing regular file: (basis path, its
        stat, its name, its dir's index) of the most similar file of its dir(s)."""
        g = self.g
        if self._fz_need:
            self._fz_need = False
            self._fz_dirs = []
            for i in range(g.fuzzy):
                if i > len(g.alt_dest):
                    break
                self._fz_dirs.append(self._fuzzy_dir(i, e))
            self._fz_lists = [c for _, c in self._fz_dirs]
        if not any(self._fz_lists):
            return None
        rep = self.rep
        debug = None
        if g.fuzzy_debug >= 2:

            def debug(i: int, c: fuzzy.Candidate, dist: int) -> None:
                fn = rep.safe(self._fuzzy_name(i, e, c.name))
                if dist < 0:
                    rep.info(f"fuzzy size/modtime match for {fn}")
                else:
                    rep.info(f"fuzzy distance for {fn} = {dist >> 16}.{dist & 0xFFFF:05d}")
        base = e.name.rpartition(b"/")[2]
        found = fuzzy.find_fuzzy(base, e.size, e.mtime, self._fz_lists, self.a.modify_window,
                                 debug, exact=debug is not None)
        if found is None:
            return None
        i, c = found
        fpath = join(self._fz_dirs[i][0], c.name)
        try:  # looked up again as it was listed: through the confined dir fds
            if i == 0:
                fst = self._confined_lstat(fpath)
            else:
                at = self._alt_at(i - 1, e.name)
                fst = os.stat(c.name, dir_fd=at[0], follow_symlinks=False) if at else None
        except OSError:
            return None
        if fst is None or not stat.S_ISREG(fst.st_mode):
            return None
        if g.fuzzy_debug >= 1:
            fname = self.dest.rpartition(b"/")[2] if self.solo_file else e.name
            rep.info(f"fuzzy basis selected for {rep.safe(fname)}: "
                     f"{rep.safe(self._fuzzy_name(i, e, c.name))}")
        return fpath, fst, c.name, i

    def _fuzzy_name(self, i: int, e: FileEntry, name: bytes) -> bytes:
        """A candidate as rsync names it (from inside the destination)."""
        head = parent_of(e.name) if b"/" in e.name else b""
        if i:  # rsync made a relative basis dir absolute (main.c check_alt_basis_dirs)
            return join(os.path.join(os.getcwdb(), self._fz_dirs[i][0]), name)
        return head + b"/" + name if head else name

    def _fuzzy_sent(self, e: FileEntry) -> None:
        """A file about to be rewritten is no basis for a later one of its dir
        (generator.c FLAG_FILE_SENT in fuzzy_dirlist[0])."""
        dl = self._fz_lists[0] if self._fz_lists else None
        if dl:
            base = e.name.rpartition(b"/")[2]
            for c in dl:
                if c.name == base:
                    c.sent = True
                    break

    def _try_alt_dests(self, ndx: int, e: FileEntry, path: bytes, st: os.stat_result | None,
                       new_mode: int):
        """generator.c try_dests_reg(): True = handled; (basis, st) = use as basis; None."""
        g = self.g
        best = None
        level = 0
        where: tuple[int, bytes] | None = None
        name = self.rel_name(e.name)
        for i, alt in enumerate(g.alt_dest):
            apath = join(alt, name)
            at = self._alt_at(i, name)
            ast = self._alt_lstat(at)
            if ast is None or not stat.S_ISREG(ast.st_mode):
                continue
            if level == 0:
                best, level, where = (apath, ast), 1, at
            if not self._quick_check_ok(e, apath, ast):
                continue
            if level == 1:
                best, level, where = (apath, ast), 2, at
            if not self._attrs_differ(e, ast, new_mode, at):
                best, level, where = (apath, ast), 3, at
                break
        if not level:
            return None
        apath, ast = best
        assert where is not None
        if level == 3 and g.alt_dest_type != "copy":
            if st is not None:
                if g.alt_dest_type == "link" and st.st_ino == ast.st_ino \
                        and st.st_dev == ast.st_dev:
                    return None
                if not g.dry_run:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                    except OSError:
                        return None
            if g.alt_dest_type == "link":
                if g.dry_run or self._link_into_place(where[1], path, where[0]):
                    self._hl_finish(e)
                    if self.rep.has_i and (self.rep.has_i > 1 or self.rep.level("name") >= 2):
                        self.itemize(e, ast, log.ITEM_LOCAL_CHANGE | log.ITEM_XNAME_FOLLOWS, xname=b"")
                    self.rep.attrs_report(e.name)
                    return True
                # fall through to a local copy
            else:
                self.itemize(e, ast, 0)
                self.rep.attrs_report(e.name)
                return True
        if st is not None:
            return None
        if level >= 2:
            if not g.dry_run:
                tmp = tmp_name(path, None)
                try:
                    # Copy from the file the lookup found: nothing swapped in since
                    # (a symlink for a dir of the --copy-dest) is followed.
                    sfd = os.open(where[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=where[0])
                    try:
                        oflags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                        if self.xag is not None and tmp.startswith(self._dprefix) \
                                and not self._follow_dest_links:
                            # (-X copies the xattrs through this fd: made in the dir
                            # held without following symlinks, as the lstat was)
                            head, _, leaf = tmp[len(self._dprefix):].rpartition(b"/")
                            ofd = os.open(leaf, oflags, 0o600, dir_fd=self._dest_dir_fd(head))
                        else:
                            ofd = os.open(tmp, oflags, 0o600)
                        try:
                            safepath.copy_fd_to_fd(sfd, ofd)
                            if self.xag is not None:  # copy_file() copies them too
                                from netsync import xattrs as _xa

                                errs: list[str] = []
                                _xa.copy_all(self.xag.ctx, sfd, ofd, errs,
                                             self.rep.qpath(tmp))
                                for msg in errs:
                                    self.rep.error_xfer(msg, role="generator")
                        finally:
                            os.close(ofd)
                    finally:
                        os.close(sfd)
                    set_file_attrs(self.a, tmp, e, None, new_mode=new_mode, accurate=True)
                    os.replace(tmp, path)
                except OSError as ex:
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass
                    self.rep.error_xfer(f'copy {self.rep.qpath(apath)} failed: '
                                        f"{os.strerror(ex.errno or 0)} ({ex.errno})",
                                        role="generator")
                    return True
            self.itemize(e, ast, log.ITEM_LOCAL_CHANGE)
            if level == 3:
                self.rep.attrs_report(e.name)
            self._hl_finish(e)
            return True
        return best

    def _alt_non(self, e: FileEntry) -> tuple[int, bytes, os.stat_result] | None:
        """try_dests_non(): (match level, path, stat) of the best alt-dest entry."""
        best = None
        name = self.rel_name(e.name)
        for i, alt in enumerate(self.g.alt_dest):
            apath = join(alt, name)
            at = self._alt_at(i, name)
            ast = self._alt_lstat(at)
            if ast is None or stat.S_IFMT(ast.st_mode) != stat.S_IFMT(e.mode):
                continue
            level = 1
            if stat.S_ISLNK(e.mode):
                try:
                    same = at is not None and os.readlink(at[1], dir_fd=at[0]) == e.link
                except OSError:
                    same = False
            elif stat.S_ISCHR(e.mode) or stat.S_ISBLK(e.mode):
                same = ast.st_rdev == e.rdev
            else:
                same = True
            if same:
                level = 2
                mode = e.mode if self.a.perms else dest_mode(self.a, e.mode, ast.st_mode, True)
                if not self._attrs_differ(e, ast, mode, at):
                    return (3, apath, ast)
            if best is None or level > best[0]:
                best = (level, apath, ast)
        return best

    def _alt_matched(self, e: FileEntry, ast: os.stat_result, linked: bool) -> None:
        """try_dests_non() at match level 3: the -ii/-ivv line, the -vv "is uptodate"."""
        rep = self.rep
        is_dir = stat.S_ISDIR(e.mode)
        if rep.has_i and (rep.level("name") >= 2 or rep.has_i > 1):
            chg = 0 if self.g.alt_dest_type == "compare" and not is_dir else \
                log.ITEM_LOCAL_CHANGE | (log.ITEM_XNAME_FOLLOWS if linked else 0)
            self.itemize(e, ast, chg | log.ITEM_MATCHED, xname=b"" if linked else None)
        rep.attrs_report(e.name, suffix="/" if is_dir else "")

    def _alt_root(self, i: int) -> int | None:
        """A held fd of alt dir ``i`` (an operator path: only symlinks owned by
        root or us are followed), or None when it cannot be used."""
        roots = self._alt_roots
        while len(roots) <= i:
            roots.append(False)
        fd = roots[i]
        if fd is False:
            try:
                fd = safepath.owner_open_dir(self.g.alt_dest[i])
            except OSError:
                fd = None
            roots[i] = fd
        return fd  # type: ignore[return-value]

    def _alt_at(self, i: int, name: bytes) -> tuple[int, bytes] | None:
        """(dir fd, leaf) of ``name`` below alt dir ``i``, its dirs opened without
        following any symlink (rsync's secure_relative_open); the fd of the
        current dir is kept for the next entry of the same dir."""
        root = self._alt_root(i)
        if root is None:
            return None
        head, _, leaf = name.rpartition(b"/")
        if not head:
            return root, leaf
        cur = self._alt_cur.get(i)
        if cur is not None and cur[0] == head:
            return (cur[1], leaf) if cur[1] is not None else None
        if cur is not None and cur[1] is not None:
            os.close(cur[1])
        try:
            fd: int | None = safepath.dir_beneath(root, head.split(b"/"))
        except OSError:
            fd = None
        self._alt_cur[i] = (head, fd)
        return (fd, leaf) if fd is not None else None

    def _alt_lstat(self, at: tuple[int, bytes] | None) -> os.stat_result | None:
        if at is None:
            return None
        try:
            st = os.stat(at[1], dir_fd=at[0], follow_symlinks=False)
        except OSError:
            return None
        if self.a.fake_super:
            # link_stat() -> x_lstat(): an alt-dest file's %stat xattr is its mode and
            # owner for the quick check, unchanged_attrs() and the items, as in the dest.
            # Read through the held dir fd; the message names the real path.
            try:
                shown = join(os.fsencode(os.readlink(f"/proc/self/fd/{at[0]}")), at[1])
            except OSError:
                shown = at[1]
            st = _md.xstat_overlay(b"/proc/self/fd/%d/%s" % (at[0], at[1]), st,
                                   self._xstat_error(shown), shown)
        if self.xag is not None:  # what an item compared with this file reads (-X)
            self.xag.note_alt(st, at)
        if self.a.acls:  # an item compared with this file reads its ACLs (fnamecmp)
            self._acl_st = (st, at)
        return st

    def _attrs_differ(self, e: FileEntry, st: os.stat_result, new_mode: int,
                      where: bytes | tuple[int, bytes] | None = None) -> bool:
        """unchanged_attrs() negated; ``where`` (a path, or a held dir and a name) is
        the file whose ACLs -A compares."""
        a = self.a
        if a.acls and where is not None and e.acl is not None and not stat.S_ISLNK(e.mode):
            from netsync import acls

            path = where if isinstance(where, bytes) else b"/proc/self/fd/%d/%s" % where
            try:
                cur = acls.get_acl(path, st.st_mode, specials=True, devices=True,
                                   fake_super=a.fake_super)
            except OSError:
                cur = None
            if acls.acl_differs(e.acl, cur, e.mode):  # type: ignore[arg-type]
                return True
        if not stat.S_ISLNK(e.mode) and a.perms \
                and stat.S_IMODE(st.st_mode) != stat.S_IMODE(new_mode):
            return True
        if keep_time(a, e.mode) and mtime_differs(a, st, e):
            return True
        if a.owner and a.am_root and st.st_uid != e.uid:
            return True
        if a.group and st.st_gid != e.gid:
            return True
        return self.xag is not None and self.xag.differ(e, st)

    def _transfer(self, ndx: int, e: FileEntry, path: bytes, basis: bytes | None,
                  dest_st: os.stat_result | None, new_mode: int, iflags_extra: int = 0,
                  basis_st: os.stat_result | None = None, xname: bytes | None = None) -> None:
        g = self.g
        if self._refused_partial == path:
            raise m.FatalError(RERR_PROTOCOL, "refusing unconfined partial basis for "
                                              f"{self.rep.safe(e.name)}")
        if g.fuzzy and not g.whole_file and not g.dry_run:
            self._fuzzy_sent(e)
        extra = log.ITEM_REPORT_CHANGE if g.checksum else 0
        # Itemized against the basis (the dest file, or the --*-dest file used instead),
        # but a --partial-dir basis is itemized against the dest (generator.c real_sx).
        item_st, self._item_st = self._item_st, False
        iflags = self.itemize(e, basis_st if item_st is False else item_st or None,
                              log.ITEM_TRANSFER | iflags_extra | extra)
        if not self.a.perms:
            # The receiver decides the mode from the basis it opens (receiver.c).
            exists = basis_st is not None and (stat.S_ISREG(basis_st.st_mode) or (
                _rcv.write_devices and stat.S_IFMT(basis_st.st_mode) in (stat.S_IFCHR,
                                                                          stat.S_IFBLK)))
            new_mode = dest_mode(self.a, e.mode, basis_st.st_mode if exists else 0, exists,
                                 None if exists else self._dflt_perms(path))
        sums = None
        if not g.whole_file and basis is not None and basis_st is not None and basis_st.st_size:
            from netsync import match

            # O_NOFOLLOW: a basis is a regular file when chosen; one swapped for a
            # symlink since must not have its blocks' sums sent to the peer.
            flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | _sender.read_flags()
            try:
                bfd = os.open(basis, flags)
            except OSError as ex:  # generator.c: "failed to open ..., continuing"
                self.rep.error(f'failed to open {self.rep.qpath(basis)}, continuing: '
                               f"{os.strerror(ex.errno or 0)} ({ex.errno})", role="generator")
                bfd = -1
                basis = None
            if bfd >= 0:
                with open(bfd, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size:  # it may have shrunk since the stat: then send it whole
                        # Read, not mapped: a basis shrinking meanwhile must not SIGBUS
                        # us (its missing end reads as zeros and merely matches nothing).
                        sums = match.generate_sums(match.FileWindow(f.fileno(), size), size,
                                                   *self.sum_params, **self.sum_kwargs)
            # --inplace onto the dest itself: the delta must never read a block the
            # receiver has already overwritten (sender.c updating_basis_file).
            ropts = getattr(self.recv, "r", None)
            if sums is not None:
                sums.updating_basis = bool(getattr(ropts, "inplace", False) and basis == path)
        req = m.SendRequest(ndx, iflags, sums, *self.sum_params, basis=basis)
        if self._fz_req is not None and basis is not None:
            req.fuzzy_type, req.fuzzy_name = self._fz_req
        if g.batch_only:
            self._batch_only_item(self.request(req), ndx, e, path, iflags)
            return
        if g.dry_run:
            self.rep.log_item_transfer_start(e, iflags)
            self.rep.log_item_transfer_end(e, iflags, 0)
            self._count_transfer(e, iflags)
            if g.hard_links and e.hlink is not None:
                self._hl_finish(e)  # generator.c: !do_xfers finishes it now
            return
        if g.hard_links and e.hlink is not None and ndx != self._hl_retry_ndx:
            self.hl_sent.setdefault(e.hlink, ndx)
        if self.request_later is not None:
            fetch = self.request_later(req)
            self._later.append((fetch, ndx, e, path, basis, dest_st, new_mode, iflags))
            return
        data = self.request(req)
        if self.pool_ok and not data.failed and data.source_fd is not None \
                and data.sums is None and stat.S_ISREG(e.mode) and not self.solo_file:
            self._submit(data, ndx, e, path, basis, dest_st, new_mode, iflags)
            return
        self._receive_file(data, ndx, e, path, basis, dest_st, new_mode, iflags)

    def _submit(self, data: m.FileData, ndx: int, e: FileEntry, path: bytes,
                basis: bytes | None, dest_st: os.stat_result | None, new_mode: int,
                iflags: int) -> None:
        """Hand a whole-file copy to a writer thread; collected by finish_requests()."""
        if self._pool is None:
            from netsync import recvpool

            self._pool = recvpool.ReceivePool(self.recv, self._writers)
            rep = self.rep
            self._pool_streams = rep.out, rep.err
            rep.out = FinishFirst(rep.out, self.finish_requests)
            rep.err = FinishFirst(rep.err, self.finish_requests)
        pool = self._pool
        if len(self._later) >= pool.in_flight:
            self.finish_requests(pool.in_flight // 2)
        job = pool.submit(e, data, path, basis, dest_st, new_mode)
        self._later.append((job, ndx, e, path, basis, dest_st, new_mode, iflags))

    def _batch_only_item(self, data: m.FileData, ndx: int, e: FileEntry, path: bytes,
                         iflags: int) -> None:
        """receiver.c with write_batch < 0: log the item (the client's stdout only) and
        read past whatever data came; the destination is left alone."""
        if data.failed:
            return
        iflags = data.iflags  # (the sender's echo, or the batch's record)
        self.rep.log_item(e, iflags, to_logfile=False)
        self._count_transfer(e, iflags)
        self.stats.literal_data += data.size  # (the tokens' count corrects it to theirs)
        try:
            for _ in data.tokens:
                pass
        except m.DiscardFile:
            pass
        if self.g.hard_links and e.hlink is not None:
            self._hl_finish(e)

    def finish_requests(self, keep: int = 0) -> None:
        """Receive pipelined files, oldest first, until at most ``keep`` are in flight."""
        if self._finishing:
            return  # (called again by output that a receive itself prints)
        self._finishing = True
        try:
            later = self._later
            while len(later) > keep:
                fetch, *args = later.popleft()
                if getattr(fetch, "is_job", False):
                    self._receive_file(fetch.data, *args, job=fetch)
                else:
                    self._receive_file(fetch(), *args)
        finally:
            self._finishing = False

    def _receive_file(self, data: m.FileData, ndx: int, e: FileEntry, path: bytes,
                      basis: bytes | None, dest_st: os.stat_result | None, new_mode: int,
                      iflags: int, job=None) -> None:
        """Receive one file (``job``: a writer thread has; print what it would have)."""
        g = self.g
        if data.failed:  # the sender could not open it; a failure is logged there
            return
        self._count_transfer(e, iflags)
        if self.xfer_log_iflags is not None:
            iflags = self.xfer_log_iflags
        self.rep.log_item_transfer_start(e, iflags)
        self.rep.progress_start(ndx, e)
        if job is None:
            ok = self.recv.receive(e, data, path, self.rel_name(e.name), basis, dest_st, new_mode)
        else:
            ok = job.wait()
            job.rec.replay()
        counts = getattr(data.sums, "stats", None)
        if counts is not None:
            self.delta_totals = [a + b for a, b in zip(self.delta_totals, counts, strict=True)]
        if ok and basis is not None and basis != path and self.recv_partial_dir() \
                and basis == self.recv._partial_path(path):
            self._drop_partial(basis)
        if ok and self.local_append_verify and g.append == 2 and dest_st is not None \
                and stat.S_ISREG(dest_st.st_mode) and 0 < dest_st.st_size < e.size \
                and not g.dry_run and not self._append_prefix_ok(e, path, dest_st.st_size):
            # Failed verification: the data stays (in place) but not its attributes.
            try:
                os.utime(path, ns=(dest_st.st_atime_ns, dest_st.st_mtime_ns),
                         follow_symlinks=False)
            except OSError:
                pass
            self.rep.progress_end(e)
            self.rep.log_item_transfer_end(e, iflags, e.size)
            self._append_redo.append((ndx, e, path, new_mode))
            return
        if ok:
            self.rep.progress_end(e)
            self.rep.log_item_transfer_end(e, iflags, e.size)
            self._remember_hl(e)
            if g.remove_source_files:
                self._success(ndx)
        else:
            self.rep.progress_abort()

    def _append_prefix_ok(self, e: FileEntry, path: bytes, start: int) -> bool:
        """--append-verify: do the dest's first ``start`` bytes equal the source's?
        (what comparing the two whole-file checksums decides)"""
        try:
            with open(self.flist.source_path(e), "rb") as a, open(path, "rb") as b:
                while start > 0:
                    n = min(start, 1 << 20)
                    if a.read(n) != b.read(n):
                        return False
                    start -= n
        except OSError:
            return True  # a vanished file is reported by the next run, as by rsync
        return True

    def _redo_appends(self) -> None:
        """Send the files that failed --append-verify again, not appending (rsync's
        redo with append_mode negated): the dest is their basis.  Called after the
        pass, or with incremental recursion after each chunk (whose entries go)."""
        redo, self._append_redo = self._append_redo, []
        g, r = self.g, self.recv.r
        saved = g.append, r.append
        g.append = r.append = 0
        try:
            for ndx, e, path, new_mode in redo:
                if self.rep.level("name") >= 1 or self.rep.has_i:
                    self.rep.warn_msg(f"WARNING: {self.rep.safe(e.name)} failed "
                                      "verification -- update retained (will try again).")
                st = self._lstat(path)
                if st is not None and not stat.S_ISREG(st.st_mode):
                    st = None
                self._transfer(ndx, e, path, path if st else None, st, new_mode,
                               basis_st=st)
        finally:
            g.append, r.append = saved

    def _count_transfer(self, e: FileEntry, iflags: int) -> None:
        s = self.stats
        s.xferred_files += 1
        s.total_transferred_size += e.size
        if not self.g.dry_run:  # a dry run moves no data: rsync counts none
            s.literal_data += e.size
        if iflags & log.ITEM_IS_NEW:
            s.created_files += 1


def _open_listable(dir_fd: int) -> int:
    """A readable fd of the (perhaps O_PATH) dir ``dir_fd``, to list it."""
    return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)


__all__ = ["Generator", "GenOptions", "FLAG_TOP_DIR", "FLAG_MOUNT_DIR"]
