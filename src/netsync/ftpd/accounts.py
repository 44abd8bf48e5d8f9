"""Accounts: PAM authentication, vsftpd's user lists, and the permanent
privilege drop a session process makes after login."""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import socket
import stat
from typing import Any, NamedTuple

from .config import Config

_name_lists: dict[str, set[str]] = {}


def cache_name_lists(paths: list[str]) -> None:
    """Read these list files now and answer read_name_list() from memory
    (for the chrooted pre-login process); an empty list drops the cache."""
    _name_lists.clear()
    for path in paths:
        _name_lists[path] = read_name_list(path)


def read_name_list(path: str | None) -> set[str]:
    """vsftpd list files: one user (or e-mail) per line, surrounding blanks ignored."""
    if not path:
        return set()
    if path in _name_lists:
        return _name_lists[path]
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return {ln.strip() for ln in fh.read(1_000_000).splitlines() if ln.strip()}
    except OSError:
        return set()


def userlist_refuses(cfg: Config, user: str) -> bool:
    if not cfg.userlist_enable:
        return False
    listed = user in read_name_list(cfg.userlist_file)
    return listed if cfg.userlist_deny else not listed


def wants_chroot(cfg: Config, user: str) -> bool:
    """chroot_list_file inverts chroot_local_user for the users it names."""
    chroot = bool(cfg.chroot_local_user)
    if cfg.chroot_list_enable and user in read_name_list(cfg.chroot_list_file):
        chroot = not chroot
    return chroot


_MCL_FUTURE = 2
_CAP_IPC_LOCK = 14
_prefault: bool | None = None


def prefault_possible() -> bool:
    """Whether pam_authenticate may lock (and so pre-fault) new mappings:
    root with CAP_IPC_LOCK or no RLIMIT_MEMLOCK, so that no mmap can fail
    for it.  Decided once, in the listener."""
    global _prefault
    if _prefault is None:
        _prefault = False
        if os.geteuid() == 0:
            import resource

            try:
                with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
                    caps = next((ln.split()[1] for ln in fh if ln.startswith("CapEff:")), "0")
                has_cap = bool(int(caps, 16) >> _CAP_IPC_LOCK & 1)
            except (OSError, ValueError):
                has_cap = False
            unlimited = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] == resource.RLIM_INFINITY
            _prefault = has_cap or unlimited
    return _prefault


def pam_authenticate(service: str, user: str, password: str) -> bool:
    """Authenticate and run the account phase (expired or locked accounts fail).

    pam_unix's password hash (yescrypt on Debian, twice per check in
    Linux-PAM 1.5) maps and touches 16 MiB of fresh memory per hash, one page
    fault per 4 KiB.  With mlockall(MCL_FUTURE) for the duration the kernel
    fills such mappings when they are made, in one pass, which costs less
    CPU than thousands of separate faults.  Nothing stays locked afterwards."""
    p = pam_authenticator()
    locked = prefault_possible() and libc().mlockall(_MCL_FUTURE) == 0
    try:
        # python-pam's authenticate() also calls pam_acct_mgmt by default.
        ok = p.authenticate(user, password, service=service, resetcreds=True)
    finally:
        if locked:
            libc().munlockall()
    return bool(ok)


_pam: Any = None


def pam_authenticator() -> Any:
    """python-pam's authenticator, made once: in the listener when local users are
    enabled, so libpam is found (``ldconfig -p``) and bound there and every forked
    session inherits it, instead of each login paying for that lookup."""
    global _pam
    if _pam is None:
        import pam  # imported lazily so anonymous-only servers need no PAM

        _pam = pam.pam()
    return _pam


_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        # Looked up once (the listener calls this at start): sessions inherit
        # the function objects rather than each building its own.
        for name in ("prctl", "mlockall", "munlockall"):
            getattr(_libc, name, None)
    return _libc


_PAM_CONV_FUNC = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_void_p)


class _PamConv(ctypes.Structure):
    _fields_ = [("conv", _PAM_CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


def _no_conversation(_n: int, _msgs: int, _resp: int, _data: int) -> int:
    return 19  # PAM_CONV_ERR: this handle never authenticates anyone


class PamModules:
    """A PAM handle the listener opens once and never uses.

    pam_start() loads every module of the service's stack (and their
    libraries: libcrypt, libselinux, ...) and pam_end() unloads them; a
    session that starts from nothing pays that loading at each login.  While
    this handle is open the modules stay mapped, so each session's own
    pam_start() finds them already loaded and relocated.  No module function
    is ever called through this handle."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._lib: ctypes.CDLL | None = None
        self._handle = ctypes.c_void_p()
        try:
            lib = ctypes.CDLL("libpam.so.0")  # the library python-pam binds
        except OSError:
            return
        lib.pam_start.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_PamConv),
                                  ctypes.POINTER(ctypes.c_void_p)]
        lib.pam_start.restype = ctypes.c_int
        lib.pam_end.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pam_end.restype = ctypes.c_int
        self._conv = _PamConv(_PAM_CONV_FUNC(_no_conversation), None)
        name = os.fsencode(service)
        if b"\0" in name:
            return
        if lib.pam_start(name, None, ctypes.byref(self._conv), ctypes.byref(self._handle)) == 0:
            self._lib = lib

    def close(self) -> None:
        if self._lib is not None and self._handle:
            self._lib.pam_end(self._handle, 0)
        self._lib = None


def preload_nss(names: list[str]) -> None:
    """Look a few accounts up once, in the listener: glibc loads the NSS
    modules named in nsswitch.conf (libnss_systemd, ...) on first use and
    keeps them, so sessions forked afterwards do not each load them again."""
    for name in names:
        try:
            ident = lookup(name)
            if ident is not None:
                os.getgrouplist(ident.name, ident.gid)
        except (OSError, ValueError):
            pass


class Identity(NamedTuple):  # not a dataclass: `dataclasses` imports inspect, ast, ... (memory in every fork)
    name: str
    uid: int
    gid: int
    home: str


def lookup(user: str) -> Identity | None:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    return Identity(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def group_ids(ident: Identity) -> list[int]:
    gids = {ident.gid}
    try:
        gids.update(os.getgrouplist(ident.name, ident.gid))
    except OSError:
        for g in grp.getgrall():
            if ident.name in g.gr_mem:
                gids.add(g.gr_gid)
    return sorted(gids)


def writable_by(path: str, ident: Identity) -> bool:
    """Whether `ident` could write `path`, judged from its mode bits (this works
    before the privilege drop and when the server does not run as root)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if ident.uid == 0:
        return True
    if st.st_uid == ident.uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid in group_ids(ident):
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


def become(ident: Identity, chroot_to: str | None) -> None:
    """Optionally chroot, then drop to ident's uid and groups for good.

    Only possible as root; without root the session keeps the server's
    identity (the documented reduced model).  setres[ug]id with all three ids
    equal leaves no saved id to regain root with."""
    if os.geteuid() != 0:
        return
    if chroot_to is not None:
        os.chdir(chroot_to)
        os.chroot(".")
        os.chdir("/")
    drop_ids(ident.uid, ident.gid, group_ids(ident))


def drop_ids(uid: int, gid: int, groups: list[int]) -> None:
    """Become uid/gid with these supplementary groups, for good (no saved root id),
    and check that root cannot be regained."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:  # pragma: no cover - would be a kernel bug
            raise RuntimeError("privilege drop failed")


class ChownBroker:
    """chown_uploads: vsftpd hands each anonymous upload's descriptor to its
    privileged side, which gives the file to chown_username.  Here a tiny
    process forked (as root) just before the session drops privileges does
    that one job: it receives descriptors over a socket pair, checks them as
    vsftpd does (a regular file owned by the anonymous user) and fchowns
    them.  It touches no path and exits when the session closes the socket."""

    def __init__(self, owner_uid: int, anon_uid: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked broker
            code = 0
            try:
                keep = theirs.fileno()
                os.closerange(0, keep)
                os.closerange(keep + 1, 1 << 16)
                self._serve(theirs, owner_uid, anon_uid)
            except BaseException:  # noqa: BLE001 - never return into the session's code
                code = 1
            os._exit(code)
        theirs.close()
        self.pid = pid
        self.sock = ours

    @staticmethod
    def _serve(sock: socket.socket, owner_uid: int, anon_uid: int) -> None:
        while True:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 4)
            if not msg:
                return
            ok = False
            for fd in fds:
                try:
                    st = os.fstat(fd)
                    if stat.S_ISREG(st.st_mode) and st.st_uid in (anon_uid, owner_uid):
                        if st.st_uid != owner_uid:
                            # Linux clears set-id bits on chown, so the anonymous
                            # user cannot plant a set-uid file for the owner.
                            os.fchown(fd, owner_uid, -1)
                        ok = True
                except OSError:
                    ok = False
                finally:
                    os.close(fd)
            sock.send(b"1" if ok else b"0")

    def chown(self, fd: int) -> bool:
        try:
            socket.send_fds(self.sock, [b"c"], [fd])
            return self.sock.recv(1) == b"1"
        except OSError:
            return False
