"""Local users through PAM: a real account created for the test run."""

from __future__ import annotations

import ftplib
import io
import os
from pathlib import Path

import pytest
from ftpd_helpers import curl, lftp


def local_opts(user, **extra: object) -> dict:
    opts: dict = {"anonymous_enable": False, "local_enable": True,
                  "pam_service_name": user.pam_service}
    opts.update(extra)
    return opts


def login(srv, user) -> ftplib.FTP:
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    f.login(user.name, user.password)
    return f


def session_pids(server_pid: int) -> list[int]:
    kids = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return [int(k) for k in kids]


def test_login_lands_in_home_and_drops_privileges(ftpd, system_user, user_home) -> None:
    srv = ftpd(**local_opts(system_user))
    f = login(srv, system_user)
    assert f.pwd() == str(user_home)
    assert "readme.txt" in f.nlst()
    # the session process now runs as the user, for good (real, effective and saved ids)
    (pid,) = only_session(srv)
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
    assert set(uids) == {str(system_user.uid)}
    assert set(gids) == {str(system_user.gid)}
    f.quit()


def test_bad_password_and_max_login_fails(ftpd, system_user, user_home) -> None:
    srv = ftpd(**local_opts(system_user, max_login_fails=2))
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match="530 Login incorrect."):
        f.login(system_user.name, "wrong")
    with pytest.raises(ftplib.error_perm, match="530 Login incorrect."):
        f.login(system_user.name, "wrong again")
    with pytest.raises((EOFError, OSError)):  # disconnected after max_login_fails
        f.login(system_user.name, system_user.password)
    assert curl("-u", f"nosuchuser:{system_user.password}", f"{srv.url}/").returncode != 0


def test_write_operations_with_lftp_and_umask(ftpd, system_user, user_home, tmp_path: Path) -> None:
    srv = ftpd(**local_opts(system_user, write_enable=True, local_umask="022"))
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(300_000))
    os.chmod(tmp_path, 0o755)
    got = tmp_path / "back.bin"
    r = lftp(f"open -u {system_user.name},{system_user.password} -p {srv.port} 127.0.0.1; "
             f"put {src} -o up.bin; mkdir newdir; mv up.bin newdir/moved.bin; "
             f"get newdir/moved.bin -o {got}; put {src} -o gone.bin; rm gone.bin; ls newdir")
    assert r.returncode == 0, r.stderr
    moved = user_home / "newdir" / "moved.bin"
    assert moved.read_bytes() == src.read_bytes() == got.read_bytes()
    assert not (user_home / "gone.bin").exists()
    st = moved.stat()
    assert (st.st_uid, st.st_gid) == (system_user.uid, system_user.gid)
    assert st.st_mode & 0o777 == 0o644  # file_open_mode 0666 & ~022
    assert (user_home / "newdir").stat().st_mode & 0o777 == 0o755
    f = login(srv, system_user)
    f.sendcmd("SITE CHMOD 600 newdir/moved.bin")
    f.quit()
    assert moved.stat().st_mode & 0o777 == 0o600


def test_default_umask_077_and_write_disabled(ftpd, system_user, user_home) -> None:
    srv = ftpd(**local_opts(system_user, write_enable=True))
    f = login(srv, system_user)
    f.storbinary("STOR private.txt", io.BytesIO(b"x"))
    f.quit()
    assert (user_home / "private.txt").stat().st_mode & 0o777 == 0o600
    srv2 = ftpd(**local_opts(system_user))  # write_enable=NO (the default)
    f = login(srv2, system_user)
    with pytest.raises(ftplib.error_perm, match="550 Permission denied."):
        f.storbinary("STOR other.txt", io.BytesIO(b"x"))
    with pytest.raises(ftplib.error_perm, match="550 Permission denied."):
        f.delete("readme.txt")
    f.quit()


def test_chroot_refuses_writable_root(ftpd, system_user, user_home) -> None:
    srv = ftpd(**local_opts(system_user, chroot_local_user=True))
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    with pytest.raises(ftplib.error_perm) as exc:
        f.login(system_user.name, system_user.password)
    assert str(exc.value) == "500 OOPS: vsftpd: refusing to run with writable root inside chroot()"
    srv2 = ftpd(**local_opts(system_user, chroot_local_user=True, allow_writeable_chroot=True))
    f = login(srv2, system_user)
    assert f.pwd() == "/"
    f.quit()


def test_chroot_escape_attempts_fail(ftpd, system_user, user_home) -> None:
    os.chmod(user_home, 0o555)  # a non-writable chroot root, as vsftpd wants
    os.symlink("/etc", user_home / "etc-link")
    os.symlink("/etc/passwd", user_home / "passwd-link")
    srv = ftpd(**local_opts(system_user, chroot_local_user=True, write_enable=True))
    f = login(srv, system_user)
    assert f.pwd() == "/"
    for path in ("..", "../../..", "/..", "%2e%2e", "..%2f..", "etc-link"):
        try:
            f.cwd(path)
        except ftplib.error_perm:
            pass
        assert f.pwd() == "/", path
        assert "readme.txt" in f.nlst()
    for target in ("passwd-link", "etc-link/passwd", "../../etc/passwd", "/etc/passwd"):
        with pytest.raises(ftplib.error_perm):
            f.retrbinary(f"RETR {target}", lambda _b: None)
    f.quit()
    r = curl("--path-as-is", "-u", f"{system_user.name}:{system_user.password}",
             f"ftp://127.0.0.1:{srv.port}/../../etc/passwd")
    assert r.returncode != 0 and b"root:" not in r.stdout


def test_chroot_list_exempts_listed_users(ftpd, system_user, user_home, tmp_path: Path) -> None:
    lst = tmp_path / "chroot_list"
    lst.write_text(f"{system_user.name}\n")
    srv = ftpd(**local_opts(system_user, chroot_local_user=True, chroot_list_enable=True,
                            chroot_list_file=lst))
    f = login(srv, system_user)
    assert f.pwd() == str(user_home)  # listed: not chrooted
    f.quit()


def test_local_root(ftpd, system_user, user_home) -> None:
    (user_home / "www").mkdir()
    srv = ftpd(**local_opts(system_user, local_root=user_home / "www"))
    f = login(srv, system_user)
    assert f.pwd() == str(user_home / "www")
    f.quit()


def test_userlist(ftpd, system_user, user_home, tmp_path: Path) -> None:
    ul = tmp_path / "user_list"
    ul.write_text(f"root\n{system_user.name}\n")
    srv = ftpd(**local_opts(system_user, userlist_enable=True, userlist_file=ul))
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match="530 Permission denied."):
        f.login(system_user.name, system_user.password)
    f.close()
    # userlist_deny=NO turns the list into the only users allowed in
    srv2 = ftpd(**local_opts(system_user, userlist_enable=True, userlist_deny=False,
                             userlist_file=ul))
    login(srv2, system_user).quit()


def test_user_config_dir_overrides(ftpd, system_user, user_home, tmp_path: Path) -> None:
    ucd = tmp_path / "users"
    ucd.mkdir()
    (ucd / system_user.name).write_text("write_enable=YES\nlocal_umask=027\n")
    srv = ftpd(**local_opts(system_user, user_config_dir=ucd))
    f = login(srv, system_user)
    f.storbinary("STOR viaconf.txt", io.BytesIO(b"ok"))
    f.quit()
    assert (user_home / "viaconf.txt").stat().st_mode & 0o777 == 0o640


def test_session_cannot_read_what_only_root_can(ftpd, system_user, user_home, tmp_path: Path) -> None:
    secret = user_home / "root-only.txt"
    secret.write_text("root's eyes only\n")
    os.chown(secret, 0, 0)
    os.chmod(secret, 0o600)
    srv = ftpd(**local_opts(system_user, write_enable=True))
    f = login(srv, system_user)
    for target in ("root-only.txt", "/etc/shadow"):  # not chrooted: all of / is visible
        with pytest.raises(ftplib.error_perm, match="^550 "):
            f.retrbinary(f"RETR {target}", lambda _b: None)
    with pytest.raises(ftplib.error_perm, match="^553 Could not create file.$"):  # nor write in /etc
        f.storbinary("STOR /etc/netsync-ftpd-test-intrusion", io.BytesIO(b"x"))
    f.quit()
    assert not Path("/etc/netsync-ftpd-test-intrusion").exists()
    r = lftp(f"open -u {system_user.name},{system_user.password} -p {srv.port} 127.0.0.1; "
             f"get /etc/shadow -o {tmp_path / 'shadow'}")
    assert r.returncode != 0 and not (tmp_path / "shadow").exists()


def test_anonymous_session_runs_as_ftp_user(ftpd, system_user, tmp_path: Path) -> None:
    import pwd

    ftp = pwd.getpwnam("ftp")
    root = tmp_path / "anon"
    root.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(root, 0o755)
    srv = ftpd(anon_root=root, no_anon_password=True)
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    f.login()
    (pid,) = only_session(srv)
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    groups = next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]
    assert set(uids) == {str(ftp.pw_uid)}
    assert "0" not in groups
    assert Path(f"/proc/{pid}/root").resolve() == root  # chrooted into anon_root
    f.quit()


def only_session(srv) -> list[int]:
    """The session processes once the fixture's readiness probe (a
    connection too) has ended; ours is the one left."""
    import time

    deadline = time.monotonic() + 10
    pids = session_pids(srv.proc.pid)
    while len(pids) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = session_pids(srv.proc.pid)
    return pids
