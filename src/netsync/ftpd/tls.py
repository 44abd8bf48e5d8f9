"""TLS context for control and data connections, following vsftpd's ssl_* options."""

from __future__ import annotations

import os

from OpenSSL import SSL
from OpenSSL._util import lib as _lib

from .config import Config, ConfigError

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
