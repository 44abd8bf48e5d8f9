"""Accounts: PAM authentication, vsftpd's user lists, and the permanent
privilege drop a session process makes after login."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
from dataclasses import dataclass

from .config import Config


def read_name_list(path: str | None) -> set[str]:
    """vsftpd list files: one user (or e-mail) per line, surrounding blanks ignored."""
    if not path:
        return set()
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


def pam_authenticate(service: str, user: str, password: str) -> bool:
    """Authenticate and run the account phase (expired or locked accounts fail)."""
    import pam  # python-pam; imported lazily so anonymous-only servers need no PAM

    p = pam.pam()
    # python-pam's authenticate() also calls pam_acct_mgmt by default.
    ok = p.authenticate(user, password, service=service, resetcreds=True)
    return bool(ok)


@dataclass
class Identity:
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
    os.setgroups(group_ids(ident))
    os.setresgid(ident.gid, ident.gid, ident.gid)
    os.setresuid(ident.uid, ident.uid, ident.uid)
    if ident.uid != 0:
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
