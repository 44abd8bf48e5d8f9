"""TLS for control and data connections, following vsftpd's ssl_* options:
the context, and the session and data channel classes with pyftpdlib's TLS
handlers mixed in.  Only servers with ssl_enable=YES import this module
(and so pyOpenSSL); tlsimport.allow() must have run before."""

from __future__ import annotations

import os
import socket

from OpenSSL import SSL
from OpenSSL._util import lib as _lib
from pyftpdlib.handlers.ftps.control import TLS_FTPHandler
from pyftpdlib.handlers.ftps.ssl import SSLConnectionMixin
from pyftpdlib.utils import is_ssl_sock

from .config import Config, ConfigError
from .session import DataChannel, Session, ThrottledDataChannel

# vsftpd's own SSL session id context; any constant works, it only has to be set
# for session resumption to be allowed when client certificates are requested.
_SESSION_ID_CONTEXT = b"netsync-ftpd"


def cert_paths(cfg: Config) -> tuple[str, str]:
    cert = cfg.rsa_cert_file
    key = cfg.rsa_private_key_file or cert
    if not cert:
        raise ConfigError("ssl_enable=YES but rsa_cert_file is not set")
    for path in (cert, key):
        if not os.path.isfile(path):
            raise ConfigError(f"SSL: cannot load RSA certificate or key: {path}")
    return cert, key


def make_context(cfg: Config) -> SSL.Context:
    """A fresh server context.  Each session process builds its own, so TLS
    session ids and tickets of one session cannot be resumed by another."""
    cert, key = cert_paths(cfg)
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    opts = SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_NO_COMPRESSION
    opts |= getattr(SSL, "OP_NO_RENEGOTIATION", 0)
    for enabled, flag in (
        (cfg.ssl_tlsv1, SSL.OP_NO_TLSv1),
        (cfg.ssl_tlsv11, SSL.OP_NO_TLSv1_1),
        (cfg.ssl_tlsv12, SSL.OP_NO_TLSv1_2),
        (cfg.ssl_tlsv13, SSL.OP_NO_TLSv1_3),
    ):
        if not enabled:
            opts |= flag
    ctx.set_options(opts)
    if cfg.ssl_tlsv1 or cfg.ssl_tlsv11:
        # OpenSSL 3 refuses TLS < 1.2 at the default security level.
        ctx.set_min_proto_version(SSL.TLS1_VERSION)
    try:
        ctx.set_cipher_list(cfg.ssl_ciphers.encode())
    except SSL.Error:
        raise ConfigError(f"SSL: bad ssl_ciphers: {cfg.ssl_ciphers}") from None
    try:
        ctx.use_certificate_chain_file(cert)
        ctx.use_privatekey_file(key)
        ctx.check_privatekey()
    except SSL.Error as err:
        raise ConfigError(f"SSL: cannot load RSA certificate or key: {err}") from None
    ctx.set_session_id(_SESSION_ID_CONTEXT)
    if cfg.ca_certs_file:
        ctx.load_verify_locations(cfg.ca_certs_file)
    if cfg.ssl_request_cert or cfg.require_cert:
        mode = SSL.VERIFY_PEER
        if cfg.require_cert:
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        validate = bool(cfg.validate_cert)
        ctx.set_verify(mode, lambda _c, _x, _e, _d, ok: bool(ok) or not validate)
    return ctx


def session_reused(conn: SSL.Connection) -> bool:
    """pyOpenSSL does not wrap SSL_session_reused(); call it directly."""
    return bool(_lib.SSL_session_reused(conn._ssl))


class _SecureData:
    """TLS on data connections, with vsftpd's session-reuse requirement."""

    cmd_channel: Session

    def __init__(self, sock: socket.socket, cmd_channel: Session) -> None:
        super().__init__(sock, cmd_channel)  # type: ignore[call-arg]
        if cmd_channel._prot:
            self.secure_connection(cmd_channel.ssl_context)  # type: ignore[attr-defined]

    def send(self, data: bytes) -> int:
        # SSL_write on a connection still in its handshake would finish the
        # handshake itself and send at once, skipping handle_ssl_established
        # (and so the session-reuse check): wait for the handshake instead.
        if self._ssl_accepting:  # type: ignore[attr-defined]
            return 0
        return super().send(data)  # type: ignore[misc]

    def use_sendfile(self) -> bool:
        if is_ssl_sock(self.socket):  # type: ignore[attr-defined]
            return False
        return super().use_sendfile()  # type: ignore[misc]

    def handle_ssl_established(self) -> None:
        if self.cmd_channel.cfg.require_ssl_reuse and not session_reused(self.socket):  # type: ignore[attr-defined]
            self.cmd_channel.respond("522 SSL connection failed: session reuse required")
            self._resp = ()
            self._error = True  # skip the TLS shutdown dance, just drop it
            self.transfer_finished = False
            self.close()  # type: ignore[attr-defined]

    def handle_failed_ssl_handshake(self) -> None:
        self._resp = ()
        self.cmd_channel.respond("522 SSL connection failed; session reuse required?")
        self._error = True
        self.close()  # type: ignore[attr-defined]


class TLSDataChannel(_SecureData, SSLConnectionMixin, DataChannel):
    pass


class TLSThrottledDataChannel(_SecureData, SSLConnectionMixin, ThrottledDataChannel):
    pass


class TLSSession(Session, TLS_FTPHandler):
    """Session with AUTH TLS, PBSZ, PROT and implicit TLS (Session.tls_ctx)."""

    dtp_handler = TLSDataChannel
    throttled_dtp = TLSThrottledDataChannel

    def get_ssl_context(self) -> SSL.Context | None:  # type: ignore[override]
        return self.tls_ctx
