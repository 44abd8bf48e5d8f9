"""vsftpd options with visible effects: ls_recurse_enable, hide_file,
deny_file, force_dot_files, cmds_allowed/cmds_denied, chown_uploads,
use_localtime -- against real clients, and against Debian's vsftpd itself
where the exact output matters."""

from __future__ import annotations

import ftplib
import io
import os
import pwd
import time
from pathlib import Path

import pytest
from ftpd_helpers import curl, lftp

from netsync.ftpd.filters import command_permitted, matches


def anon(srv) -> ftplib.FTP:
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    f.login()
    return f


def lines(f: ftplib.FTP, cmd: str) -> list[str]:
    out: list[str] = []
    f.retrlines(cmd, out.append)
    return out


@pytest.fixture
def tree(anon_root: Path) -> Path:
    """anon_root plus a nested directory, dot files and a file to hide."""
    (anon_root / "pub" / "sub").mkdir()
    (anon_root / "pub" / "sub" / "deep.txt").write_text("deep\n")
    (anon_root / "pub" / "notes.mp3").write_text("la la\n")
    (anon_root / ".dotdir").mkdir()
    (anon_root / ".profile").write_text("dot\n")
    for p in anon_root.rglob("*"):
        if not p.is_symlink() and p.name != "private.txt":
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    # fixed, recent times so that both servers print the same dates
    stamp = time.time() - 3600
    for p in [anon_root, *anon_root.rglob("*")]:
        os.utime(p, (stamp, stamp), follow_symlinks=False)
    return anon_root


def test_filter_matching_rules() -> None:
    # vsftpd's matcher, case by case: *, ?, {a,b}, and the literal-substring rule
    assert matches("song.mp3", "*.mp3")
    assert matches("song.mp3", "{*.mp3,*.mov}")
    assert matches("clip.mov", "{*.mp3,*.mov}")
    assert not matches("clip.avi", "{*.mp3,*.mov}")
    assert matches("a.b", "a?b") and not matches("ab", "a?b")
    assert matches("pub/secret/x", "secret")  # no wildcard: found anywhere
    assert not matches("a.mp3.mp3", "*.mp3")  # no backtracking after *, as vsftpd
    assert not matches("x", "{,x}")  # an empty alternative ends the list
    assert not matches("a" * 5000, "*?" * 600)  # bounded work on hostile input
    assert command_permitted("RETR", "PASV,RETR,QUIT", None)
    assert not command_permitted("STOR", "PASV,RETR,QUIT", None)
    assert not command_permitted("DELE", None, "DELE,RMD")
    assert command_permitted("retr", None, "retr,") is False
    assert command_permitted("RETR", None, "retr")  # verbs are compared exactly


@pytest.mark.parametrize("cmd", ["LIST -R", "NLST -R", "NLST -R pub", "LIST -aR", "NLST pub",
                                 "LIST", "LIST -a", "NLST -a", "LIST pub/notes.mp3",
                                 "NLST pub/notes.mp3", "LIST nosuch"])
def test_listings_match_vsftpd(ftpd, vsftpd, tree: Path, cmd: str) -> None:
    opts = {"anon_root": tree, "no_anon_password": True, "ls_recurse_enable": True,
            "hide_file": "{*.mp3}"}
    ours, ref = ftpd(**opts), vsftpd(**opts)
    got, want = [], []
    for srv, out in ((ours, got), (ref, want)):
        f = anon(srv)
        resp = f.retrlines(cmd, out.append)
        out.append(resp)
        f.quit()
    assert got == want


def test_ls_recurse_enable(ftpd, tree: Path) -> None:
    on = ftpd(anon_root=tree, ls_recurse_enable=True)
    r = curl("-X", "LIST -R", f"{on.url}/pub/")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()  # curl turns the ASCII listing's CRLFs into LFs
    assert out.startswith(".:\n")  # curl lists from inside pub/, so the label is "."
    assert "\n\n./sub:\n" in out and out.rstrip().endswith(" deep.txt")
    r = lftp(f"open -p {on.port} 127.0.0.1; ls -R pub")
    assert r.returncode == 0, r.stderr
    assert "pub/sub:" in r.stdout and "deep.txt" in r.stdout
    off = ftpd(anon_root=tree)  # vsftpd's default: -R is ignored, one level is listed
    f = anon(off)
    listed = lines(f, "NLST -R pub")
    assert listed == ["pub/data.bin", "pub/notes.mp3", "pub/sub"]
    f.quit()


def test_dot_files_hidden_unless_asked(ftpd, tree: Path) -> None:
    f = anon(ftpd(anon_root=tree))
    assert ".profile" not in f.nlst()
    assert {".profile", ".dotdir"} <= set(lines(f, "NLST -a"))
    f.quit()
    f = anon(ftpd(anon_root=tree, force_dot_files=True))
    names = f.nlst()
    assert ".profile" in names and "." not in names
    f.quit()


def test_hide_file_hides_but_allows_access(ftpd, tree: Path, tmp_path: Path) -> None:
    srv = ftpd(anon_root=tree, hide_file="{*.mp3,sub}")
    f = anon(srv)
    assert f.nlst("pub") == ["pub/data.bin"]
    assert not any("notes.mp3" in ln for ln in lines(f, "LIST pub"))
    assert "notes.mp3" not in [e[0] for e in f.mlsd("pub")]
    f.quit()
    r = curl("-o", str(tmp_path / "got.mp3"), f"{srv.url}/pub/notes.mp3")  # still downloadable
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "got.mp3").read_text() == "la la\n"
    r = lftp(f"open -p {srv.port} 127.0.0.1; cd pub/sub; cat deep.txt")
    assert r.returncode == 0 and r.stdout == "deep\n", r.stderr


def test_deny_file_refuses_every_access(ftpd, tree: Path, tmp_path: Path) -> None:
    srv = ftpd(anon_root=tree, deny_file="{*.mp3,sub}")
    f = anon(srv)
    for cmd in ("RETR pub/notes.mp3", "SIZE pub/notes.mp3", "MDTM pub/notes.mp3", "CWD pub/sub",
                "MLST pub/notes.mp3", "SIZE pub/sub/deep.txt", "SIZE /pub/./sub/deep.txt"):
        with pytest.raises(ftplib.error_perm, match="^550 Permission denied.$"):
            if cmd.startswith("RETR"):
                f.retrbinary(cmd, lambda _b: None)
            else:
                f.sendcmd(cmd)
    with pytest.raises(ftplib.error_perm, match="^550 Permission denied.$"):
        f.retrlines("LIST pub/sub", lambda _l: None)
    assert "pub/notes.mp3" in f.nlst("pub")  # vsftpd still lists denied names
    f.quit()
    r = curl("-o", str(tmp_path / "x"), f"{srv.url}/pub/notes.mp3")
    assert r.returncode != 0 and not (tmp_path / "x").exists()
    r = lftp(f"open -p {srv.port} 127.0.0.1; get pub/sub/deep.txt -o {tmp_path / 'y'}")
    assert r.returncode != 0 and not (tmp_path / "y").exists()
    r = curl(f"{srv.url}/hello.txt")  # everything else is served
    assert r.returncode == 0 and r.stdout == b"hello anonymous\n"


def test_cmds_allowed_and_denied(ftpd, tree: Path) -> None:
    srv = ftpd(anon_root=tree, cmds_allowed="PWD,TYPE,EPSV,PASV,SIZE,RETR,QUIT")
    r = curl(f"{srv.url}/hello.txt")  # curl needs nothing else
    assert r.returncode == 0 and r.stdout == b"hello anonymous\n", r.stderr
    f = anon(srv)  # USER/PASS come before the check, as in vsftpd
    for cmd in ("NOOP", "CWD pub", "MDTM hello.txt", "SYST"):
        with pytest.raises(ftplib.error_perm, match="^550 Permission denied.$"):
            f.sendcmd(cmd)
    assert f.sendcmd("SIZE hello.txt") == "213 16"
    f.quit()
    srv = ftpd(anon_root=tree, cmds_denied="SIZE,NLST")
    f = anon(srv)
    with pytest.raises(ftplib.error_perm, match="^550 Permission denied.$"):
        f.sendcmd("SIZE hello.txt")
    with pytest.raises(ftplib.error_perm, match="^550 Permission denied.$"):
        f.nlst()
    assert any("hello.txt" in ln for ln in lines(f, "LIST"))
    f.quit()


@pytest.fixture
def upload_root(tmp_path: Path) -> Path:
    """An anonymous root that ftp cannot write, with an incoming/ it can."""
    ftp = pwd.getpwnam("ftp")
    root = tmp_path / "up"
    (root / "incoming").mkdir(parents=True)
    os.chmod(root, 0o755)
    os.chown(root / "incoming", ftp.pw_uid, ftp.pw_gid)
    os.chmod(root / "incoming", 0o755)
    return root


def test_chown_uploads(ftpd, system_user, upload_root: Path, tmp_path: Path) -> None:
    ftp = pwd.getpwnam("ftp")
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(50_000))
    common = {"anon_root": upload_root, "write_enable": True, "anon_upload_enable": True,
              "no_anon_password": True}
    plain = ftpd(**common)
    assert curl("-T", str(src), f"{plain.url}/incoming/a.bin").returncode == 0
    st = (upload_root / "incoming" / "a.bin").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (ftp.pw_uid, ftp.pw_gid, 0o600)
    # an anonymous user may not overwrite (vsftpd: 553), even its own upload
    f = anon(plain)
    with pytest.raises(ftplib.error_perm, match="^553 Could not create file.$"):
        f.storbinary("STOR incoming/a.bin", io.BytesIO(b"overwritten"))
    f.quit()
    assert (upload_root / "incoming" / "a.bin").read_bytes() == src.read_bytes()

    owned = ftpd(**common, chown_uploads=True, chown_username=system_user.name,
                 chown_upload_mode="0640")
    r = lftp(f"open -p {owned.port} 127.0.0.1; put {src} -o incoming/b.bin")
    assert r.returncode == 0, r.stderr
    f = anon(owned)
    f.sendcmd("TYPE I")
    stou = f.transfercmd("STOU incoming/u")  # STOU files are handed over too
    stou.sendall(b"unique")
    stou.close()
    f.voidresp()
    f.quit()
    made = [p for p in (upload_root / "incoming").iterdir() if p.name.startswith("u.")]
    for p in (upload_root / "incoming" / "b.bin", *made):
        st = p.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (system_user.uid, ftp.pw_gid, 0o640)
    assert (upload_root / "incoming" / "b.bin").read_bytes() == src.read_bytes()
    assert len(made) == 1 and made[0].read_bytes() == b"unique"
    # a file the owner already has cannot be touched again by anonymous
    f = anon(owned)
    with pytest.raises(ftplib.error_perm, match="^553 Could not create file.$"):
        f.storbinary("STOR incoming/b.bin", io.BytesIO(b"x"))
    f.quit()


def test_use_localtime(ftpd, tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fixed-offset zone written as a POSIX TZ string: no zoneinfo file is
    # needed inside the chroot.  "XST-05:30" is UTC+05:30.
    monkeypatch.setenv("TZ", "XST-05:30")
    stamp = int(time.time()) // 60 * 60 - 86400  # yesterday, on a whole minute
    os.utime(tree / "hello.txt", (stamp, stamp))
    utc = time.gmtime(stamp)
    local = time.gmtime(stamp + 5 * 3600 + 1800)
    for use_localtime, tm in ((False, utc), (True, local)):
        f = anon(ftpd(anon_root=tree, use_localtime=use_localtime))
        (line,) = [ln for ln in lines(f, "LIST") if ln.endswith(" hello.txt")]
        assert f" {tm.tm_mday:02d} {tm.tm_hour:02d}:{tm.tm_min:02d} hello.txt" in line, line
        assert f.sendcmd("MDTM hello.txt") == "213 " + time.strftime("%Y%m%d%H%M%S", tm)
        # MLSx facts are UTC whatever the setting (RFC 3659)
        facts = dict(f.mlsd("", ["modify"]))["hello.txt"]
        assert facts["modify"] == time.strftime("%Y%m%d%H%M%S", utc)
        f.quit()
