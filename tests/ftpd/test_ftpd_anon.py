"""Anonymous read-only downloads from anon_root, with lftp, curl and ftplib;
plus the server's life cycle (SIGTERM, SIGHUP, background=YES)."""

from __future__ import annotations

import ftplib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ftpd_helpers import REPO, curl, free_port, lftp, need


def anon(srv) -> ftplib.FTP:
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    f.login()  # anonymous
    return f


def test_curl_lists_and_downloads(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    r = curl(f"{srv.url}/")
    assert r.returncode == 0, r.stderr
    listing = r.stdout.decode()
    assert "hello.txt" in listing and "pub" in listing
    assert curl(f"{srv.url}/hello.txt").stdout == b"hello anonymous\n"
    names = curl("--list-only", f"{srv.url}/pub/").stdout.decode().split()
    assert names == ["data.bin"]


def test_lftp_get_and_mirror(ftpd, anon_root: Path, tmp_path: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    out = tmp_path / "dl"
    out.mkdir()
    r = lftp(f"open -p {srv.port} 127.0.0.1; cls -1; get hello.txt -o {out}/hello.txt; "
             f"mget -O {out} pub/*; ls pub")
    assert r.returncode == 0, r.stderr
    assert "hello.txt" in r.stdout and "data.bin" in r.stdout
    assert (out / "hello.txt").read_text() == "hello anonymous\n"
    assert (out / "data.bin").read_bytes() == (anon_root / "pub" / "data.bin").read_bytes()


def test_ftplib_mlsd_nlst_size(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    f = anon(srv)
    assert f.pwd() == "/"
    entries = dict(f.mlsd())
    assert entries["pub"]["type"] == "dir" and entries["hello.txt"]["type"] == "file"
    assert sorted(f.nlst("pub")) == ["pub/data.bin"]  # as vsftpd: the directory as asked
    f.voidcmd("TYPE I")
    assert f.size("pub/data.bin") == 256 * 64
    buf = io.BytesIO()
    f.retrbinary("RETR pub/data.bin", buf.write, rest=16000)
    assert buf.getvalue() == (anon_root / "pub" / "data.bin").read_bytes()[16000:]
    f.quit()


def test_writes_refused_550(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    before = sorted(p.name for p in anon_root.iterdir())
    f = anon(srv)
    for action in (lambda: f.storbinary("STOR new.txt", io.BytesIO(b"x")),
                   lambda: f.storbinary("APPE hello.txt", io.BytesIO(b"x")),
                   lambda: f.mkd("newdir"), lambda: f.delete("hello.txt"),
                   lambda: f.rmd("pub"), lambda: f.rename("hello.txt", "x.txt"),
                   lambda: f.sendcmd("SITE CHMOD 777 hello.txt")):
        with pytest.raises(ftplib.error_perm, match="^550"):
            action()
    f.quit()
    r = curl("-T", "/etc/hostname", f"{srv.url}/up.txt")
    assert r.returncode != 0
    r = lftp(f"open -p {srv.port} 127.0.0.1; mkdir x")
    assert r.returncode != 0
    assert sorted(p.name for p in anon_root.iterdir()) == before


def test_no_escape_from_anon_root(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    f = anon(srv)
    for path in ("..", "../..", "/..", "pub/../../..", "%2e%2e", "%2e%2e/%2e%2e", "..%2f.."):
        try:
            f.cwd(path)
        except ftplib.error_perm:
            pass
        assert f.pwd() == "/", path
        names = f.nlst()
        assert "hello.txt" in names and "secret.txt" not in names
    # a symlink pointing outside the root cannot be followed
    for target in ("escape", "etc-link/passwd", "../secret.txt", "/../secret.txt"):
        with pytest.raises(ftplib.error_perm):
            f.retrbinary(f"RETR {target}", lambda _b: None)
    with pytest.raises(ftplib.error_perm):
        f.cwd("etc-link")
    f.quit()
    assert curl(f"{srv.url}/%2e%2e/secret.txt").returncode != 0
    assert curl("--path-as-is", f"{srv.url}/../secret.txt").returncode != 0


def test_anon_world_readable_only(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    f = anon(srv)
    with pytest.raises(ftplib.error_perm, match="550"):
        f.retrbinary("RETR private.txt", lambda _b: None)
    f.quit()


def test_anonymous_upload_when_enabled(ftpd, anon_root: Path) -> None:
    inbox = anon_root / "incoming"
    inbox.mkdir()
    os.chown(inbox, *ftp_ids())
    srv = ftpd(anon_root=anon_root, write_enable=True, anon_upload_enable=True, anon_umask="022")
    f = anon(srv)
    f.storbinary("STOR incoming/up.txt", io.BytesIO(b"uploaded\n"))
    with pytest.raises(ftplib.error_perm, match="550"):
        f.mkd("incoming/sub")  # anon_mkdir_write_enable=NO
    f.quit()
    st = (inbox / "up.txt").stat()
    assert (inbox / "up.txt").read_bytes() == b"uploaded\n"
    assert st.st_mode & 0o777 == 0o644
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == ftp_ids()  # the session ran as ftp_username


def ftp_ids() -> tuple[int, int]:
    import pwd

    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam("ftp")
    except KeyError:
        need(False, "no 'ftp' system user (ftp_username)")
        raise
    return pw.pw_uid, pw.pw_gid


def test_local_login_refused_on_anonymous_only_server(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match="530 This FTP server is anonymous only."):
        f.login("root", "x")
    f.close()


def test_anonymous_disabled(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root, anonymous_enable=False, local_enable=True,
               pam_service_name="netsync-ftpd-none")
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match="530"):
        f.login()
    f.close()


def test_banner_and_pre_login_refusals(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root, ftpd_banner="Welcome to the test FTP service.")
    f = ftplib.FTP()
    assert f.connect("127.0.0.1", srv.port, timeout=10) == "220 Welcome to the test FTP service."
    assert f.sendcmd("FEAT").startswith("211")
    with pytest.raises(ftplib.error_perm, match="530 Please login with USER and PASS."):
        f.sendcmd("LIST")
    with pytest.raises(ftplib.error_perm, match="530 Please login with USER and PASS."):
        f.sendcmd("XYZZY")
    f.login()
    with pytest.raises(ftplib.error_perm, match="500 Unknown command."):
        f.sendcmd("XYZZY")
    with pytest.raises(ftplib.error_perm, match="530 Can't change to another user."):
        f.sendcmd("USER bob")
    with pytest.raises(ftplib.error_temp, match="425 Use PORT or PASV first."):
        f.sendcmd("RETR hello.txt")
    f.quit()


def test_sigterm_is_a_clean_shutdown(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root)
    f = anon(srv)  # a live session is ended too
    assert srv.stop() == 0
    with pytest.raises((EOFError, OSError)):
        f.voidcmd("NOOP")
        f.voidcmd("NOOP")


def test_sighup_reloads_config(ftpd, anon_root: Path) -> None:
    srv = ftpd(anon_root=anon_root, ftpd_banner="first banner")
    assert ftplib.FTP().connect("127.0.0.1", srv.port, timeout=10) == "220 first banner"
    srv.conf.write_text(srv.conf.read_text().replace("first banner", "second banner"))
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        f = ftplib.FTP()
        welcome = f.connect("127.0.0.1", srv.port, timeout=10)
        f.close()
        if welcome == "220 second banner" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert welcome == "220 second banner"
    # a broken file on reload keeps the old configuration running
    srv.conf.write_text(srv.conf.read_text() + "nonsense=1\n")
    srv.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert srv.proc.poll() is None
    assert ftplib.FTP().connect("127.0.0.1", srv.port, timeout=10) == "220 second banner"


def test_background_detaches(tmp_path: Path, anon_root: Path) -> None:
    port = free_port()
    conf = tmp_path / "bg.conf"
    empty = tmp_path / "empty"
    empty.mkdir()
    conf.write_text(f"listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\n"
                    f"background=YES\nanon_root={anon_root}\nsecure_chroot_dir={empty}\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    r = subprocess.run([sys.executable, "-m", "netsync.ftpd", str(conf)], timeout=30, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pid = None
    try:
        f = ftplib.FTP()
        f.connect("127.0.0.1", port, timeout=10)  # listening as soon as the command returned
        f.login()
        assert "hello.txt" in f.nlst()
        f.quit()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if str(conf).encode() in cmdline and b"netsync.ftpd" in cmdline:
                    pid = int(entry)
                    break
        assert pid is not None
        assert os.getsid(pid) != os.getsid(0)  # in its own session, detached from ours
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.05)
