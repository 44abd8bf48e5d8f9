"""vsftpd.conf parsing: a table of good and bad lines, files, -o overrides, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ftpd_helpers import REPO

from netsync.ftpd.config import OPTIONS, Config, ConfigError, load

GOOD = [
    # line, option, expected value
    ("anonymous_enable=NO", "anonymous_enable", False),
    ("anonymous_enable=yes", "anonymous_enable", True),
    ("local_enable=True", "local_enable", True),
    ("local_enable=false", "local_enable", False),
    ("write_enable=1", "write_enable", True),
    ("write_enable=0", "write_enable", False),
    ("ssl_enable=YeS", "ssl_enable", True),
    ("local_umask=022", "local_umask", 0o22),
    ("local_umask=077", "local_umask", 0o77),
    ("anon_umask=0", "anon_umask", 0),
    ("file_open_mode=0644", "file_open_mode", 0o644),
    ("listen_port=2121", "listen_port", 2121),
    ("max_clients=0", "max_clients", 0),
    ("max_per_ip=10", "max_per_ip", 10),
    ("idle_session_timeout=600", "idle_session_timeout", 600),
    ("anon_root=/srv/ftp", "anon_root", "/srv/ftp"),
    ("ftpd_banner=Welcome to blah FTP service.", "ftpd_banner", "Welcome to blah FTP service."),
    ("ftpd_banner=a=b", "ftpd_banner", "a=b"),  # only the first '=' splits
    ("anon_root=", "anon_root", None),  # an empty string value unsets
    ("   listen=NO", "listen", False),  # leading blanks are skipped, as vsftpd does
    ("ssl_tlsv1_2=NO", "ssl_tlsv12", False),  # manual's spelling
    ("ssl_tlsv12=NO", "ssl_tlsv12", False),  # parser's spelling
    ("ssl_tlsv1_3=NO", "ssl_tlsv13", False),
    ("ssl_tlsv11=YES", "ssl_tlsv11", True),
    ("ssl_ciphers=HIGH", "ssl_ciphers", "HIGH"),
    ("seccomp_sandbox=NO", "seccomp_sandbox", False),  # accepted, not applicable
    ("isolate=NO", "isolate", False),
    ("isolate_network=NO", "isolate_network", False),
    ("pasv_address=192.0.2.7", "pasv_address", "192.0.2.7"),
    ("utf8_filesystem=YES", "utf8_filesystem", True),
]

BAD = [
    # line, fragment of the error
    ("no_such_option=YES", "unrecognised variable in config file: no_such_option"),
    ("anonymous_enable = YES", "unrecognised variable"),  # spaces around '=' are not allowed
    ("anonymous_enable =YES", "unrecognised variable"),
    ("anonymous_enable= YES", "bad bool value"),
    ("anonymous_enable=MAYBE", "bad bool value in config file for: anonymous_enable"),
    ("anonymous_enable=", "missing value in config file for: anonymous_enable"),
    ("anonymous_enable", "missing value"),
    ("listen_port=", "missing value"),
    ("listen_port=21x", "bad numeric value in config file for: listen_port"),
    ("listen_port=-1", "bad numeric value"),
    ("local_umask=089", "bad numeric value"),  # 8 and 9 are not octal digits
    ("max_clients=99999999999", "bad numeric value"),
    ("Listen=YES", "unrecognised variable"),  # option names are case sensitive
]


@pytest.mark.parametrize(("line", "option", "value"), GOOD)
def test_good_line(line: str, option: str, value: object) -> None:
    cfg = Config()
    cfg.set(line, "test.conf:1")
    assert getattr(cfg, option) == value


@pytest.mark.parametrize(("line", "fragment"), BAD)
def test_bad_line_is_fatal(line: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Config().set(line, "test.conf:7")
    assert fragment in str(exc.value)
    assert "test.conf:7" in str(exc.value)


def test_defaults_are_vsftpd_305_code_defaults() -> None:
    cfg = Config()
    assert cfg.listen is True and cfg.anonymous_enable is True
    assert cfg.local_enable is False and cfg.write_enable is False
    assert (cfg.max_clients, cfg.max_per_ip) == (2000, 50)
    assert (cfg.local_umask, cfg.anon_umask) == (0o77, 0o77)
    assert (cfg.pasv_min_port, cfg.pasv_max_port) == (5001, 0)
    assert (cfg.ssl_tlsv1, cfg.ssl_tlsv11, cfg.ssl_tlsv12, cfg.ssl_tlsv13) == (False, False, True, True)
    assert cfg.ssl_ciphers == "ECDHE-RSA-AES256-GCM-SHA384"
    assert cfg.require_ssl_reuse and cfg.force_local_logins_ssl and cfg.force_local_data_ssl
    assert not cfg.allow_anon_ssl
    assert (cfg.idle_session_timeout, cfg.data_connection_timeout, cfg.max_login_fails) == (300, 300, 3)


def test_every_option_named_in_the_issue_is_known() -> None:
    names = """listen listen_ipv6 listen_address listen_port background anonymous_enable
    local_enable write_enable download_enable dirlist_enable chmod_enable anon_root local_root
    no_anon_password ftp_username anon_upload_enable anon_mkdir_write_enable
    anon_other_write_enable anon_world_readable_only chroot_local_user chroot_list_enable
    chroot_list_file allow_writeable_chroot userlist_enable userlist_deny userlist_file
    user_config_dir pam_service_name local_umask anon_umask file_open_mode hide_ids
    ls_recurse_enable pasv_enable pasv_min_port pasv_max_port pasv_address pasv_addr_resolve
    pasv_promiscuous port_enable port_promiscuous max_clients max_per_ip max_login_fails
    idle_session_timeout data_connection_timeout accept_timeout connect_timeout anon_max_rate
    local_max_rate ftpd_banner banner_file dirmessage_enable message_file deny_email_enable
    banned_email_file xferlog_enable xferlog_file xferlog_std_format vsftpd_log_file
    dual_log_enable utf8_filesystem ssl_enable implicit_ssl rsa_cert_file rsa_private_key_file
    ssl_ciphers ssl_sslv2 ssl_sslv3 ssl_tlsv1 ssl_tlsv1_1 ssl_tlsv11 ssl_tlsv1_2 ssl_tlsv12
    ssl_tlsv1_3 ssl_tlsv13 force_local_logins_ssl force_local_data_ssl force_anon_logins_ssl
    force_anon_data_ssl allow_anon_ssl require_ssl_reuse ssl_request_cert require_cert
    validate_cert ca_certs_file seccomp_sandbox isolate""".split()
    cfg = Config()
    for name in names:
        value = {"bool": "YES", "uint": "1", "str": "x"}[OPTIONS.get(name, ("bool",))[0]]
        cfg.set(f"{name}={value}", "t:1")


def write_conf(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "vsftpd.conf"
    p.write_text(text)
    return p


def test_file_comments_blank_lines_and_overrides(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "# a comment\n\nlisten_port=2100\n   \nlocal_enable=YES\r\n"
                      "#local_enable=NO\nanon_root=/srv/ftp\n")
    cfg = load(str(conf), ["listen_port=2200", "anon_root="])
    assert cfg.listen_port == 2200  # -o wins over the file
    assert cfg.local_enable is True  # CRLF line endings are tolerated
    assert cfg.anon_root is None


def test_file_error_names_file_and_line(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "listen=YES\n# fine\nbogus_thing=1\n")
    with pytest.raises(ConfigError, match=rf"{conf}:3: unrecognised variable in config file: bogus_thing"):
        load(str(conf))


def test_bad_override_is_fatal() -> None:
    with pytest.raises(ConfigError, match="command line option -omax_clients=lots"):
        load(None, ["max_clients=lots"])


def test_whole_config_checks() -> None:
    with pytest.raises(ConfigError, match="IPv4 and IPv6"):
        load(None, ["listen=YES", "listen_ipv6=YES"])
    with pytest.raises(ConfigError, match="both local and anonymous access disabled"):
        load(None, ["anonymous_enable=NO"])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a file owned by someone else")
def test_config_must_be_owned_by_the_server_user(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "listen=YES\n")
    os.chown(conf, 65534, 65534)
    with pytest.raises(ConfigError, match="not owned by correct user"):
        load(str(conf))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run([sys.executable, "-m", "netsync.ftpd", *args], capture_output=True,
                          text=True, timeout=30, env=env)


def test_cli_reports_bad_config_line_and_exits_1(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "listen=YES\nanonymous_enable=perhaps\n")
    r = run_cli(str(conf), "-olisten_port=0")
    assert r.returncode == 1
    assert f"500 OOPS: {conf}:2: bad bool value in config file for: anonymous_enable" in r.stderr


def test_cli_missing_config_file(tmp_path: Path) -> None:
    r = run_cli(str(tmp_path / "nope.conf"))
    assert r.returncode == 1 and "cannot read config file" in r.stderr


def test_cli_make_cert_is_usable_for_tls(tmp_path: Path) -> None:
    r = run_cli("--make-cert", str(tmp_path / "tls"), "ftp.example.test")
    assert r.returncode == 0, r.stderr
    cert, key = tmp_path / "tls" / "netsync-ftpd.pem", tmp_path / "tls" / "netsync-ftpd.key"
    assert f"rsa_cert_file={cert}" in r.stdout
    assert (key.stat().st_mode & 0o777) == 0o600
    from netsync.ftpd.tls import make_context

    make_context(load(None, ["ssl_enable=YES", f"rsa_cert_file={cert}",
                             f"rsa_private_key_file={key}"]))
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-subject"],
                         capture_output=True, text=True)
    if out.returncode == 0:
        assert "ftp.example.test" in out.stdout


def test_cli_version() -> None:
    r = run_cli("-v")
    assert r.returncode == 0 and "netsync-ftpd" in r.stdout
