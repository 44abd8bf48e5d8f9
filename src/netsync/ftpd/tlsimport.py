"""pyOpenSSL only in servers that use TLS.

pyftpdlib imports pyOpenSSL whenever it is installed (and with it
cryptography, cffi, asyncio, certifi, ...), which about doubles the memory
of every process: each session and pre-login fork then costs more page
tables and copy-on-write faults.  pyftpdlib runs without TLS when the
import fails, so a server started with ssl_enable=NO makes it fail before
pyftpdlib is first imported; a reload that turns TLS on lets it in again.
"""

from __future__ import annotations

import sys


def keep_out() -> None:
    """ssl_enable=NO: `import OpenSSL` fails from now on (None in
    sys.modules), unless it has been imported already."""
    sys.modules.setdefault("OpenSSL", None)  # type: ignore[arg-type]


def allow() -> None:
    """ssl_enable=YES, at start or on reload: import pyOpenSSL and hand it to
    the pyftpdlib modules that were imported without it."""
    if "OpenSSL" in sys.modules and sys.modules["OpenSSL"] is None:
        del sys.modules["OpenSSL"]
    from OpenSSL import SSL

    utils = sys.modules.get("pyftpdlib.utils")
    if utils is not None:
        utils.SSL = SSL  # type: ignore[attr-defined]  # is_ssl_sock() reads it
