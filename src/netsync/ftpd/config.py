"""vsftpd.conf parsing: same syntax, option names and defaults as vsftpd 3.0.5.

Differences from vsftpd, on purpose: integer values must be digits (vsftpd
silently atoi()s garbage), and every error names the file and line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from typing import Any

BOOL, UINT, STR = "bool", "uint", "str"

# name -> (type, default).  Defaults are those of vsftpd 3.0.5's tunables.c,
# not its manual page.  Strings default to None when vsftpd leaves them unset.
OPTIONS: dict[str, tuple[str, Any]] = {
    # --- booleans
    "anonymous_enable": (BOOL, True),
    "local_enable": (BOOL, False),
    "pasv_enable": (BOOL, True),
    "port_enable": (BOOL, True),
    "chroot_local_user": (BOOL, False),
    "write_enable": (BOOL, False),
    "anon_upload_enable": (BOOL, False),
    "anon_mkdir_write_enable": (BOOL, False),
    "anon_other_write_enable": (BOOL, False),
    "chown_uploads": (BOOL, False),
    "connect_from_port_20": (BOOL, False),
    "xferlog_enable": (BOOL, False),
    "dirmessage_enable": (BOOL, False),
    "anon_world_readable_only": (BOOL, True),
    "async_abor_enable": (BOOL, False),
    "ascii_upload_enable": (BOOL, False),
    "ascii_download_enable": (BOOL, False),
    "one_process_model": (BOOL, False),
    "xferlog_std_format": (BOOL, False),
    "pasv_promiscuous": (BOOL, False),
    "deny_email_enable": (BOOL, False),
    "chroot_list_enable": (BOOL, False),
    "setproctitle_enable": (BOOL, False),
    "text_userdb_names": (BOOL, False),
    "ls_recurse_enable": (BOOL, False),
    "log_ftp_protocol": (BOOL, False),
    "guest_enable": (BOOL, False),
    "userlist_enable": (BOOL, False),
    "userlist_deny": (BOOL, True),
    "userlist_log": (BOOL, False),
    "use_localtime": (BOOL, False),
    "check_shell": (BOOL, True),
    "hide_ids": (BOOL, False),
    "listen": (BOOL, True),
    "port_promiscuous": (BOOL, False),
    "passwd_chroot_enable": (BOOL, False),
    "no_anon_password": (BOOL, False),
    "tcp_wrappers": (BOOL, False),
    "use_sendfile": (BOOL, True),
    "force_dot_files": (BOOL, False),
    "listen_ipv6": (BOOL, False),
    "dual_log_enable": (BOOL, False),
    "syslog_enable": (BOOL, False),
    "background": (BOOL, False),
    "virtual_use_local_privs": (BOOL, False),
    "session_support": (BOOL, False),
    "download_enable": (BOOL, True),
    "dirlist_enable": (BOOL, True),
    "chmod_enable": (BOOL, True),
    "secure_email_list_enable": (BOOL, False),
    "run_as_launching_user": (BOOL, False),
    "no_log_lock": (BOOL, False),
    "ssl_enable": (BOOL, False),
    "allow_anon_ssl": (BOOL, False),
    "force_local_logins_ssl": (BOOL, True),
    "force_local_data_ssl": (BOOL, True),
    "ssl_sslv2": (BOOL, False),
    "ssl_sslv3": (BOOL, False),
    "ssl_tlsv1": (BOOL, False),
    "ssl_tlsv11": (BOOL, False),
    "ssl_tlsv12": (BOOL, True),
    "ssl_tlsv13": (BOOL, True),
    "tilde_user_enable": (BOOL, False),
    "enable_iconv": (BOOL, False),
    "force_anon_logins_ssl": (BOOL, False),
    "force_anon_data_ssl": (BOOL, False),
    "mdtm_write": (BOOL, True),
    "lock_upload_files": (BOOL, True),
    "pasv_addr_resolve": (BOOL, False),
    "reverse_lookup_enable": (BOOL, True),
    "debug_ssl": (BOOL, False),
    "require_cert": (BOOL, False),
    "validate_cert": (BOOL, False),
    "strict_ssl_read_eof": (BOOL, True),
    "strict_ssl_write_shutdown": (BOOL, False),
    "ssl_request_cert": (BOOL, True),
    "delete_failed_uploads": (BOOL, False),
    "implicit_ssl": (BOOL, False),
    "ptrace_sandbox": (BOOL, False),
    "require_ssl_reuse": (BOOL, True),
    "isolate": (BOOL, True),
    "isolate_network": (BOOL, True),
    "ftp_enable": (BOOL, True),
    "http_enable": (BOOL, False),
    "seccomp_sandbox": (BOOL, True),
    "allow_writeable_chroot": (BOOL, False),
    "utf8_filesystem": (BOOL, False),
    # --- unsigned integers (a leading 0 means octal)
    "accept_timeout": (UINT, 60),
    "connect_timeout": (UINT, 60),
    "local_umask": (UINT, 0o077),
    "anon_umask": (UINT, 0o077),
    "ftp_data_port": (UINT, 20),
    "idle_session_timeout": (UINT, 300),
    "data_connection_timeout": (UINT, 300),
    "pasv_min_port": (UINT, 5001),
    "pasv_max_port": (UINT, 0),
    "anon_max_rate": (UINT, 0),
    "local_max_rate": (UINT, 0),
    "listen_port": (UINT, 21),
    "max_clients": (UINT, 2000),
    "file_open_mode": (UINT, 0o666),
    "max_per_ip": (UINT, 50),
    "trans_chunk_size": (UINT, 0),
    "delay_failed_login": (UINT, 1),
    "delay_successful_login": (UINT, 0),
    "max_login_fails": (UINT, 3),
    "chown_upload_mode": (UINT, 0o600),
    # --- strings
    "secure_chroot_dir": (STR, "/usr/share/empty"),
    "ftp_username": (STR, "ftp"),
    "chown_username": (STR, "root"),
    "xferlog_file": (STR, "/var/log/xferlog"),
    "vsftpd_log_file": (STR, "/var/log/vsftpd.log"),
    "message_file": (STR, ".message"),
    "nopriv_user": (STR, "nobody"),
    "ftpd_banner": (STR, None),
    "banned_email_file": (STR, "/etc/vsftpd.banned_emails"),
    "chroot_list_file": (STR, "/etc/vsftpd.chroot_list"),
    "pam_service_name": (STR, "ftp"),
    "guest_username": (STR, "ftp"),
    "userlist_file": (STR, "/etc/vsftpd.user_list"),
    "anon_root": (STR, None),
    "local_root": (STR, None),
    "banner_file": (STR, None),
    "pasv_address": (STR, None),
    "listen_address": (STR, None),
    "user_config_dir": (STR, None),
    "listen_address6": (STR, None),
    "cmds_allowed": (STR, None),
    "cmds_denied": (STR, None),
    "hide_file": (STR, None),
    "deny_file": (STR, None),
    "user_sub_token": (STR, None),
    "email_password_file": (STR, "/etc/vsftpd.email_passwords"),
    "rsa_cert_file": (STR, "/usr/share/ssl/certs/vsftpd.pem"),
    "dsa_cert_file": (STR, None),
    "ssl_ciphers": (STR, "ECDHE-RSA-AES256-GCM-SHA384"),
    "rsa_private_key_file": (STR, None),
    "dsa_private_key_file": (STR, None),
    "ca_certs_file": (STR, None),
    "local_charset": (STR, "utf8"),
    "remote_charset": (STR, "utf8"),
}

# The manual spells the TLS switches with an underscore, the parser without.
ALIASES = {
    "ssl_tlsv1_1": "ssl_tlsv11",
    "ssl_tlsv1_2": "ssl_tlsv12",
    "ssl_tlsv1_3": "ssl_tlsv13",
}

# Accepted so that existing vsftpd.conf files load, but without effect here;
# docs/ftpd.md says why for each.
NOT_APPLICABLE = frozenset({
    "seccomp_sandbox", "isolate", "isolate_network", "ptrace_sandbox",
    "one_process_model", "setproctitle_enable", "tcp_wrappers", "session_support",
    "run_as_launching_user", "no_log_lock",
    "async_abor_enable", "connect_from_port_20",
    "ftp_data_port", "guest_enable", "guest_username", "virtual_use_local_privs",
    "text_userdb_names", "log_ftp_protocol",
    "check_shell", "passwd_chroot_enable", "syslog_enable",
    "secure_email_list_enable", "email_password_file", "tilde_user_enable",
    "enable_iconv", "local_charset", "remote_charset", "lock_upload_files",
    "reverse_lookup_enable", "debug_ssl", "strict_ssl_read_eof",
    "strict_ssl_write_shutdown", "delete_failed_uploads", "ftp_enable",
    "http_enable", "trans_chunk_size", "delay_successful_login",
    "user_sub_token", "dsa_cert_file", "dsa_private_key_file", "ssl_sslv2",
    "ssl_sslv3", "userlist_log", "use_sendfile",
})

DEFAULT_CONFIG_FILE = "/etc/netsync-ftpd.conf"

_TRUE = {"YES", "TRUE", "1"}
_FALSE = {"NO", "FALSE", "0"}


class ConfigError(Exception):
    """A fatal configuration problem (vsftpd dies with "500 OOPS: ...")."""


_ALIASES_OF: dict[str, list[str]] = {}
for _alias, _canon in ALIASES.items():
    _ALIASES_OF.setdefault(_canon, []).append(_alias)


class Config:
    """The effective option values; read them as attributes (cfg.listen_port).

    Each option (and each alias) is also a plain instance attribute, kept in
    step with `_values` by `_store` (options change only through `set`):
    sessions read options dozens of times per login, and a `__getattr__`
    fallback made each read a failed lookup followed by a Python call."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = {k: d for k, (_, d) in OPTIONS.items()}
        if values:
            self._values.update(values)
        for canon, value in self._values.items():
            self._store(canon, value)

    def __getattr__(self, name: str) -> Any:  # only names that are no option
        raise AttributeError(name)

    def _store(self, canon: str, value: Any) -> None:
        self._values[canon] = value
        self.__dict__[canon] = value
        for alias in _ALIASES_OF.get(canon, ()):
            self.__dict__[alias] = value

    def copy(self) -> Config:
        return Config(self._values)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def set(self, setting: str, where: str = "command line") -> None:
        """Apply one `option=value` line exactly as vsftpd's parser would."""
        setting = setting.lstrip()
        name, sep, raw = setting.partition("=")
        canon = ALIASES.get(name, name)
        if canon not in OPTIONS:
            raise ConfigError(f"{where}: unrecognised variable in config file: {name}")
        kind = OPTIONS[canon][0]
        if kind == STR:
            # vsftpd: an empty string value unsets the option.
            self._store(canon, raw if raw else None)
            return
        if not raw:
            raise ConfigError(f"{where}: missing value in config file for: {name}")
        if kind == BOOL:
            up = raw.upper()
            if up in _TRUE:
                self._store(canon, True)
            elif up in _FALSE:
                self._store(canon, False)
            else:
                raise ConfigError(f"{where}: bad bool value in config file for: {name}")
            return
        try:
            if not raw.isdigit() or not raw.isascii():
                raise ValueError(raw)
            value = int(raw, 8) if raw.startswith("0") else int(raw)
        except ValueError:
            raise ConfigError(
                f"{where}: bad numeric value in config file for: {name}"
            ) from None
        if value > 0xFFFFFFFF:
            raise ConfigError(f"{where}: bad numeric value in config file for: {name}")
        self._store(canon, value)

    def load_lines(self, lines: Iterable[str], filename: str) -> None:
        for lineno, line in enumerate(lines, 1):
            line = line.rstrip("\r\n")
            if not line or line.startswith("#") or line.isspace():
                continue
            self.set(line, f"{filename}:{lineno}")

    def load_file(self, path: str, *, check_owner: bool = True) -> None:
        try:
            st = os.stat(path)
            with open(path, encoding="utf-8", errors="surrogateescape") as fh:
                text = fh.read(100_000)
        except OSError as err:
            raise ConfigError(f"cannot read config file: {path}: {err.strerror}") from None
        if check_owner and (st.st_uid != os.getuid() or not stat.S_ISREG(st.st_mode)):
            raise ConfigError(
                f"{path}: config file not owned by correct user, or not a file"
            )
        self.load_lines(text.split("\n"), path)

    def validate(self) -> None:
        """Whole-config checks that vsftpd makes at start-up."""
        if self.listen and self.listen_ipv6:
            raise ConfigError("run two copies of netsync-ftpd for IPv4 and IPv6")
        if not self.local_enable and not self.anonymous_enable:
            raise ConfigError("vsftpd: both local and anonymous access disabled!")
        if self.listen_port > 65535:
            raise ConfigError(f"listen_port out of range: {self.listen_port}")
        if self.implicit_ssl and not self.ssl_enable:
            raise ConfigError("implicit_ssl requires ssl_enable=YES")


def load(path: str | None, overrides: Iterable[str] = (), *, check_owner: bool = True) -> Config:
    """Defaults, then the file (if any), then `-o` overrides, then validation."""
    cfg = Config()
    if path is not None:
        cfg.load_file(path, check_owner=check_owner)
    for ov in overrides:
        cfg.set(ov, f"command line option -o{ov}")
    cfg.validate()
    return cfg


def load_user_config(cfg: Config, directory: str, username: str) -> Config:
    """Per-user overrides from user_config_dir (errors there are not fatal in vsftpd;
    here a bad line is skipped and the rest still applies)."""
    out = cfg.copy()
    if "/" in username or username in ("", ".", ".."):
        return out
    path = os.path.join(directory, username)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read(100_000).split("\n")
    except OSError:
        return out
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line or line.startswith("#") or line.isspace():
            continue
        try:
            out.set(line, f"{path}:{lineno}")
        except ConfigError:
            continue
    return out
