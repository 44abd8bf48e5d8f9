"""FTPS: TLS >= 1.2 forced for logins and data, session reuse, implicit TLS."""

from __future__ import annotations

import ftplib
import io
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
from ftpd_helpers import curl, lftp

LFTP_TLS = ("set ftp:ssl-force true; set ftp:ssl-protect-data true; "
            "set ssl:verify-certificate no; ")


def tls_opts(cert, user=None, **extra: object) -> dict:
    opts: dict = {"ssl_enable": True, "rsa_cert_file": cert[0], "rsa_private_key_file": cert[1]}
    if user is not None:
        opts.update(anonymous_enable=False, local_enable=True, pam_service_name=user.pam_service)
    opts.update(extra)
    return opts


def client_context(**kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """ftplib's FTP_TLS does not resume the control connection's TLS session on
    data connections; real clients (curl, lftp, FileZilla) do."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
        return conn, size


def tls_login(srv, user, cls=ReusingFTP_TLS, **ctx_kw) -> ftplib.FTP_TLS:
    f = cls(context=client_context(**ctx_kw), timeout=10)
    f.connect("127.0.0.1", srv.port)
    f.login(user.name, user.password)  # ftplib sends AUTH TLS first
    f.prot_p()
    return f


def test_lftp_forced_tls_put_get(ftpd, cert, system_user, user_home, tmp_path: Path) -> None:
    srv = ftpd(**tls_opts(cert, system_user, write_enable=True))
    src = tmp_path / "tls-up.bin"
    src.write_bytes(b"secret payload " * 5000)
    back = tmp_path / "tls-back.bin"
    r = lftp(LFTP_TLS + f"open -u {system_user.name},{system_user.password} -p {srv.port} "
             f"127.0.0.1; put {src} -o up.bin; get up.bin -o {back}; ls")
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == src.read_bytes() == (user_home / "up.bin").read_bytes()


def test_curl_ssl_reqd(ftpd, cert, system_user, user_home) -> None:
    srv = ftpd(**tls_opts(cert, system_user))
    auth = f"{system_user.name}:{system_user.password}"
    r = curl("--ssl-reqd", "-k", "-u", auth, f"{srv.url}/readme.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"in the home\n"
    r = curl("--ssl-reqd", "-k", "--tls-max", "1.2", "-u", auth, f"{srv.url}/")
    assert r.returncode == 0 and b"readme.txt" in r.stdout


def test_plaintext_local_login_refused(ftpd, cert, system_user, user_home) -> None:
    srv = ftpd(**tls_opts(cert, system_user))
    f = ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match="530 Non-anonymous sessions must use encryption."):
        f.login(system_user.name, system_user.password)
    f.close()
    assert curl("-u", f"{system_user.name}:{system_user.password}", f"{srv.url}/").returncode != 0


def test_plaintext_data_refused(ftpd, cert, system_user, user_home) -> None:
    srv = ftpd(**tls_opts(cert, system_user))
    f = tls_login(srv, system_user)
    assert "readme.txt" in f.nlst()
    f.prot_c()
    with pytest.raises(ftplib.error_perm, match="522 Data connections must be encrypted."):
        f.nlst()
    f.quit()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls11_client_refused(ftpd, cert, system_user, user_home) -> None:
    srv = ftpd(**tls_opts(cert, system_user))
    r = curl("--ssl-reqd", "-k", "--tls-max", "1.1", "-u",
             f"{system_user.name}:{system_user.password}", f"{srv.url}/")
    assert r.returncode == 35, r.stderr  # CURLE_SSL_CONNECT_ERROR
    f = ftplib.FTP_TLS(context=client_context(maximum_version=ssl.TLSVersion.TLSv1_1,
                                              minimum_version=ssl.TLSVersion.TLSv1), timeout=10)
    f.connect("127.0.0.1", srv.port)
    with pytest.raises((ssl.SSLError, OSError, EOFError)):
        f.auth()
    f.close()


def test_require_ssl_reuse(ftpd, cert, system_user, user_home) -> None:
    srv = ftpd(**tls_opts(cert, system_user))
    f = tls_login(srv, system_user, cls=ReusingFTP_TLS)
    assert "readme.txt" in f.nlst()
    f.quit()
    f = tls_login(srv, system_user, cls=ftplib.FTP_TLS)
    got: list[str] = []
    try:
        f.retrlines("NLST", got.append)
    except (ssl.SSLError, OSError, ftplib.Error) as err:
        if isinstance(err, ftplib.Error):
            assert "522" in str(err)
        else:
            with pytest.raises(ftplib.error_perm,
                               match="522 SSL connection failed: session reuse required"):
                f.getresp()
    else:
        pytest.fail("a data connection without TLS session reuse was accepted")
    assert got == []
    f.close()
    # with require_ssl_reuse=NO the same client works
    srv2 = ftpd(**tls_opts(cert, system_user, require_ssl_reuse=False))
    f = tls_login(srv2, system_user, cls=ftplib.FTP_TLS)
    assert "readme.txt" in f.nlst()
    f.quit()


def test_implicit_tls(ftpd, cert, system_user, user_home) -> None:
    srv = ftpd(**tls_opts(cert, system_user, implicit_ssl=True))
    r = curl("-k", "-u", f"{system_user.name}:{system_user.password}",
             f"ftps://127.0.0.1:{srv.port}/readme.txt")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"in the home\n"
    # a plaintext client gets no banner it could use
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"USER x\r\n")
        try:
            data = s.recv(100)
        except OSError:
            data = b""
        assert not data.startswith(b"220")


def test_plaintext_pipelined_after_auth_is_discarded(ftpd, cert, system_user, user_home) -> None:
    srv = ftpd(**tls_opts(cert, system_user))
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    fh = raw.makefile("rb")
    assert fh.readline().startswith(b"220")
    # The injected FEAT travels in the clear right behind AUTH (CVE-2011-1575 pattern).
    raw.sendall(b"AUTH TLS\r\nFEAT\r\n")
    assert fh.readline().startswith(b"234")
    tls = client_context().wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"NOOP\r\n")
    reply = tls.recv(4096)
    assert reply.startswith(b"200"), reply  # not the 211 of the injected FEAT
    tls.close()


def test_ccc_refused_and_anonymous_tls_policy(ftpd, cert, system_user, user_home,
                                              anon_root: Path) -> None:
    srv = ftpd(**tls_opts(cert, system_user))
    f = tls_login(srv, system_user)
    with pytest.raises(ftplib.error_perm, match="^500 Unknown command"):  # as vsftpd
        f.sendcmd("CCC")
    assert "readme.txt" in f.nlst()  # still usable, still encrypted
    f.quit()
    # anonymous over TLS is refused unless allow_anon_ssl
    srv2 = ftpd(**tls_opts(cert, anonymous_enable=True, anon_root=anon_root))
    f = ftplib.FTP_TLS(context=client_context(), timeout=10)
    f.connect("127.0.0.1", srv2.port)
    with pytest.raises(ftplib.error_perm, match="530 Anonymous sessions may not use encryption."):
        f.login()
    f.close()
    plain = ftplib.FTP()
    plain.connect("127.0.0.1", srv2.port, timeout=10)
    plain.login()  # plaintext anonymous is fine by default
    plain.quit()
    # force_anon_logins_ssl + allow_anon_ssl: anonymous must use TLS
    srv3 = ftpd(**tls_opts(cert, anonymous_enable=True, anon_root=anon_root, allow_anon_ssl=True,
                           force_anon_logins_ssl=True, force_anon_data_ssl=True))
    plain = ftplib.FTP()
    plain.connect("127.0.0.1", srv3.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match="530 Anonymous sessions must use encryption."):
        plain.login()
    plain.close()
    f = ReusingFTP_TLS(context=client_context(), timeout=10)
    f.connect("127.0.0.1", srv3.port)
    f.login()
    f.prot_p()
    buf = io.BytesIO()
    f.retrbinary("RETR hello.txt", buf.write)
    assert buf.getvalue() == b"hello anonymous\n"
    f.quit()


def _replies(srv, commands: list[str], login: bool, secure: bool = False) -> list[str]:
    """The server's reply to each command (on a TLS control connection if ``secure``)."""
    f = ftplib.FTP_TLS(context=client_context()) if secure else ftplib.FTP()
    f.connect("127.0.0.1", srv.port, timeout=10)
    if secure:
        f.auth()
    if login:
        f.login()
    out = []
    for cmd in commands:
        try:
            out.append(f.sendcmd(cmd))
        except ftplib.Error as err:
            out.append(str(err))
    f.close()
    return out


def test_tls_commands_without_ssl_match_vsftpd(ftpd, vsftpd, anon_root: Path) -> None:
    # ssl_enable=NO: the server runs without pyOpenSSL, and still answers the
    # TLS commands exactly as vsftpd does, before and after login.
    opts = {"anon_root": anon_root, "no_anon_password": True, "ssl_enable": False}
    cmds = ["AUTH TLS", "AUTH SSL", "PBSZ 0", "PROT P", "PROT S", "CCC"]
    ours, ref = ftpd(**opts), vsftpd(**opts)
    for login in (False, True):
        assert _replies(ours, cmds, login) == _replies(ref, cmds, login)


def test_tls_turned_on_by_reload(ftpd, cert, system_user, user_home) -> None:
    srv = ftpd(**tls_opts(cert, system_user, ssl_enable=False))
    auth = f"{system_user.name}:{system_user.password}"
    r = curl("-u", auth, f"{srv.url}/readme.txt")
    assert r.returncode == 0 and r.stdout == b"in the home\n", r.stderr
    assert curl("--ssl-reqd", "-k", "-u", auth, f"{srv.url}/").returncode != 0
    srv.conf.write_text(srv.conf.read_text().replace("ssl_enable=NO", "ssl_enable=YES"))
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while (_replies(srv, ["AUTH TLS"], False) != ["234 Proceed with negotiation."]
           and time.monotonic() < deadline):
        time.sleep(0.1)
    # TLS control and data connections (with session reuse), and plaintext
    # logins now refused (force_local_logins_ssl)
    f = tls_login(srv, system_user)
    assert "readme.txt" in f.nlst()
    f.quit()
    r = curl("--ssl-reqd", "-k", "-u", auth, f"{srv.url}/readme.txt")
    assert r.returncode == 0 and r.stdout == b"in the home\n", r.stderr
    assert curl("-u", auth, f"{srv.url}/readme.txt").returncode != 0


@pytest.mark.parametrize("secure", [False, True], ids=["plaintext", "tls"])
def test_tls_commands_match_vsftpd(ftpd, vsftpd, cert, anon_root: Path, secure: bool) -> None:
    # ssl_enable=YES: PBSZ, PROT, CCC and AUTH with good, bad and missing arguments,
    # on a plaintext and on a TLS control connection, before and after an anonymous
    # login: the replies (codes and texts) are vsftpd's.
    opts = tls_opts(cert, anon_root=anon_root, no_anon_password=True, allow_anon_ssl=True)
    cmds = ["PROT P", "PBSZ 0", "PBSZ", "PBSZ 7", "PROT C", "PROT P", "PROT", "PROT S",
            "PROT E", "PROT X", "CCC", "AUTH XYZ", "AUTH", "AUTH TLS"]
    ours, ref = ftpd(**opts), vsftpd(**opts)
    for login in (False, True):
        assert _replies(ours, cmds, login, secure) == _replies(ref, cmds, login, secure)
