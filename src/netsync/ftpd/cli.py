"""Command line: `netsync-ftpd [CONFIG_FILE] [-oOPTION=VALUE ...]`, like vsftpd's."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from . import __version__
from .config import DEFAULT_CONFIG_FILE, ConfigError, load

USAGE = f"""\
usage: netsync-ftpd [CONFIG_FILE] [-oOPTION=VALUE ...]
       netsync-ftpd --make-cert DIR [HOSTNAME]
       netsync-ftpd -v | --version

CONFIG_FILE is read like vsftpd.conf (default {DEFAULT_CONFIG_FILE}).
-o options are applied after the file, in order.
"""


# Modules pyftpdlib imports whenever they are installed, for what this server
# never uses: curses for coloured logs on a terminal (pyftpdlib.log), crypt and
# spwd for its UnixAuthorizer (logins here go through PAM).  pyftpdlib does
# without them when the import fails.  Each brings extension modules and
# libraries (ncurses, tinfo, ...): mappings and pages that every fork of the
# listener copies and every session's exit tears down, twice per login.
UNUSED_MODULES = ("curses", "crypt", "spwd")


def skip_unused_modules() -> None:
    """Make the imports above fail from now on (None in sys.modules), unless
    the module is already loaded.  Called before pyftpdlib is imported."""
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def _daemonize() -> None:
    """background=YES: detach once the listening socket is bound, so that the
    launching command returns only when the server accepts connections."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    os.chdir("/")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if args and args[0] in ("-v", "--version"):
        print(f"netsync-ftpd {__version__} (vsftpd 3.0.5 compatible configuration)")
        return 0
    if args and args[0] == "--make-cert":
        if len(args) not in (2, 3):
            print(USAGE, end="", file=sys.stderr)
            return 2
        from .certs import make_cert

        cert, key = make_cert(args[1], args[2] if len(args) == 3 else None)
        print(f"rsa_cert_file={cert}\nrsa_private_key_file={key}")
        return 0

    config_path: str | None = None
    overrides: list[str] = []
    for a in args:
        if a.startswith("-o"):
            overrides.append(a[2:])
        elif a.startswith("-"):
            print(f"500 OOPS: unrecognised option: {a}", file=sys.stderr)
            return 2
        elif config_path is None:
            config_path = a
        else:
            print("500 OOPS: only one config file may be given", file=sys.stderr)
            return 2
    if config_path is None and os.path.exists(DEFAULT_CONFIG_FILE):
        config_path = DEFAULT_CONFIG_FILE

    try:
        cfg = load(config_path, overrides)
        skip_unused_modules()
        if not cfg.ssl_enable:
            from . import tlsimport

            tlsimport.keep_out()  # before pyftpdlib is imported: see tlsimport.py
        from . import prelogin
        from .server import Listener, serve_inetd, tls_module

        if cfg.ssl_enable:
            tls_module().make_context(cfg)  # fail now, not in the first session
        prelogin.check_config(cfg)
        if not cfg.listen and not cfg.listen_ipv6:
            return serve_inetd(cfg)
        listener = Listener(cfg, config_path, overrides)
        listener.open_sockets()
    except ConfigError as err:
        print(f"500 OOPS: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"500 OOPS: {err}", file=sys.stderr)
        return 1
    if cfg.background:
        _daemonize()
    return listener.serve_forever()


if __name__ == "__main__":
    raise SystemExit(main())
