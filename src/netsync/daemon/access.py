"""``hosts allow`` / ``hosts deny`` as rsync 3.5's access.c and clientname.c decide them.

Rules (allow_access()):
- an empty list counts as no list;
- a match in ``hosts allow`` always admits; with an allow list and no deny
  list everything else is refused;
- otherwise a match in ``hosts deny`` refuses, and anything else is admitted.

Each token (split on blanks and commas, the whole list lower-cased) is tried
as a host name pattern first and then as an address:
- host name: a case-insensitive wildmatch against the client's host name,
  only when a name is known (with ``reverse lookup = no`` it is
  "UNDETERMINED", which a pattern such as ``*`` still matches, as in rsync);
  ``@netgroup`` uses innetgr(); with ``forward lookup`` a plain name (no
  wildcard, not all digits and dots) is resolved (IPv4, gethostbyname) and
  compared with the address -- and a deny-list name that does not resolve
  counts as a match (fail closed, rsync 3.5);
- address: numeric only, same family as the client (an IPv4-mapped IPv6
  client has already been turned into IPv4, see :func:`peer_address`), with an
  optional ``/bits`` or ``/dotted-mask``; ``/0`` matches every address of the
  family; an IPv6 token with a scope id must match the client's scope.
"""

from __future__ import annotations

import ctypes
import ipaddress
import re
import socket
from collections.abc import Callable

from netsync.wildmatch import wildmatch

__all__ = [
    "UNDETERMINED", "UNKNOWN", "allow_access", "client_name", "match_address",
    "match_hostname", "peer_address", "split_list",
]

UNDETERMINED = "UNDETERMINED"  # host name when reverse lookup is off
UNKNOWN = "UNKNOWN"  # host name when the lookup failed or looked spoofed

Resolver = Callable[[str], list[str] | None]  # name -> IPv4 addresses, None if unresolvable
Logger = Callable[[str], None]


def _no_log(_msg: str) -> None:
    pass


def _gethostbyname(name: str) -> list[str] | None:
    try:
        return socket.gethostbyname_ex(name)[2]
    except (OSError, UnicodeError):
        return None


_LIST_SEP = re.compile(r"[ ,\t]")  # compiled once, in the listener


def split_list(value: str) -> list[str]:
    """access_match()'s tokens: the lower-cased list split on space, comma and tab."""
    return [t for t in _LIST_SEP.split(value.lower()) if t]


def _innetgr(group: str, host: str) -> bool:
    try:
        libc = ctypes.CDLL(None)
        fn = libc.innetgr
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_char_p] * 4
    fn.restype = ctypes.c_int
    return bool(fn(group.encode(), host.encode(), None, None))


def _idna(tok: str) -> str:
    """util1.c idn_to_ascii(): each non-ASCII label folded to its A-label, ASCII
    labels (addresses, masks, wildcards) kept as written.  A folded label must
    come out a bare A-label: the mapping turns some characters into ASCII ones
    (U+FF0A FULLWIDTH ASTERISK into "*"), and an entry must not gain a wildcard,
    "/" or "." its author never typed.  Otherwise the token stays as it is, and
    so matches no host name."""
    from encodings.idna import ToASCII

    out = []
    for label in tok.split("."):
        if label.isascii():
            out.append(label)
            continue
        try:
            a = ToASCII(label).decode("ascii")
        except UnicodeError:
            return tok
        if not a or a.strip("abcdefghijklmnopqrstuvwxyz0123456789-"):
            return tok
        out.append(a)
    return ".".join(out)


def match_hostname(host: str | None, addr: str, tok: str, deny: bool, *,
                   forward_lookup: bool = True, resolve: Resolver = _gethostbyname
                   ) -> tuple[bool, str | None]:
    """One token against the host name.  Returns (matched, host name to use from now on).

    The second item differs from ``host`` only when reverse lookup was off and
    the token's forward lookup proved the address: rsync then names the client
    by the token instead of UNDETERMINED.
    """
    if not host:
        return False, host
    if tok.startswith("@") and len(tok) > 1:
        return _innetgr(tok[1:], host), host
    if not tok.isascii():
        tok = _idna(tok)
    if wildmatch(tok.lower().encode("utf-8", "surrogateescape"),
                 host.lower().encode("utf-8", "surrogateescape")):
        return True, host
    if not forward_lookup:
        return False, host
    if not tok.strip(".0123456789") or any(ch in tok for ch in ":/*?["):
        return False, host
    addrs = resolve(tok)
    if addrs is None:
        return deny, host
    if addr in addrs:
        return True, tok if host == UNDETERMINED else host
    return False, host


def _numeric(text: str) -> tuple[int, bytes, int] | None:
    """getaddrinfo(AI_NUMERICHOST): (family, packed address, scope id)."""
    try:
        info = socket.getaddrinfo(text, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                  socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return None
    fam, _, _, _, sa = info[0]
    if fam == socket.AF_INET:
        return fam, socket.inet_pton(fam, sa[0]), 0
    if fam == socket.AF_INET6:
        host = sa[0].split("%", 1)[0]
        return fam, socket.inet_pton(fam, host), sa[3]
    return None


def _strtol_full(text: str) -> int | None:
    """strtol(p, &ep, 10) with ``!*p || *ep`` rejected."""
    s = text.lstrip(" \t\n\v\f\r")
    body = s[1:] if s[:1] in "+-" else s
    if not text or not body or not body.isdigit() or not body.isascii():
        return None
    return int(s)


def match_address(addr: str, tok: str, log: Logger = _no_log) -> bool:
    """One token against the client's numeric address (match_address())."""
    if not addr:
        return False
    base, slash, mask_text = tok.partition("/")
    if base.strip(".0123456789") and ":" not in base:
        return False  # a host name, not an address
    a = _numeric(addr)
    if a is None:
        return False
    t = _numeric(base)
    if t is None:
        log(f"error matching address {base}: Name or service not known")
        return False
    if a[0] != t[0]:
        return False
    addrlen = len(a[1])
    if addrlen == 16 and t[2] and a[2] != t[2]:
        return False
    if slash:
        try:
            mask = socket.inet_pton(a[0], mask_text)
        except OSError:
            bits = _strtol_full(mask_text)
            if bits is None:
                log(f"malformed mask in {tok}")
                return False
            if bits == 0:
                return True
            if bits < 0 or bits > addrlen * 8:
                log(f"malformed mask in {tok}")
                return False
            mask = _prefix_mask(bits, addrlen)
    else:
        mask = b"\xff" * addrlen
    return all((x ^ y) & m == 0 for x, y, m in zip(a[1], t[1], mask, strict=True))


def _prefix_mask(bits: int, addrlen: int) -> bytes:
    value = ((1 << bits) - 1) << (addrlen * 8 - bits)
    return value.to_bytes(addrlen, "big")


def _access_match(value: str, addr: str, host: str | None, deny: bool, forward_lookup: bool,
                  resolve: Resolver, log: Logger) -> tuple[bool, str | None]:
    for tok in split_list(value):
        hit, host = match_hostname(host, addr, tok, deny, forward_lookup=forward_lookup,
                                   resolve=resolve)
        if hit or match_address(addr, tok, log):
            return True, host
    return False, host


def allow_access(addr: str, host: str | None, allow: str | list[str] | None,
                 deny: str | list[str] | None, *, forward_lookup: bool = True,
                 resolve: Resolver = _gethostbyname, log: Logger = _no_log) -> bool:
    """Whether a client at ``addr`` (named ``host``) may use a module.

    ``allow``/``deny`` are the parameter values (or lists of them, joined);
    ``resolve`` is the forward lookup for plain host-name tokens (tests pass
    a table).  See :func:`check_access` for the host name rsync logs afterwards.
    """
    return check_access(addr, host, allow, deny, forward_lookup=forward_lookup,
                        resolve=resolve, log=log)[0]


def check_access(addr: str, host: str | None, allow: str | list[str] | None,
                 deny: str | list[str] | None, *, forward_lookup: bool = True,
                 resolve: Resolver = _gethostbyname, log: Logger = _no_log
                 ) -> tuple[bool, str | None]:
    """:func:`allow_access` plus the host name to log ("UNDETERMINED" may become a token)."""
    allow_s = " ".join(allow) if isinstance(allow, list) else (allow or "")
    deny_s = " ".join(deny) if isinstance(deny, list) else (deny or "")
    if allow_s:
        hit, host = _access_match(allow_s, addr, host, False, forward_lookup, resolve, log)
        if hit:
            return True, host
        if not deny_s:
            return False, host
    if deny_s:
        hit, host = _access_match(deny_s, addr, host, True, forward_lookup, resolve, log)
        if hit:
            return False, host
    return True, host


def proxy_peer_allowed(hosts: str | None, addr: str, log: Logger = _no_log) -> bool:
    """allow_proxy_protocol_peer(): only ``proxy protocol hosts`` may send the header
    (an empty list trusts no one); matched by address or name, no forward lookup."""
    if not hosts:
        return False
    return _access_match(hosts, addr, UNDETERMINED, False, False, _gethostbyname, log)[0]


def peer_address(sockaddr: tuple[object, ...] | str) -> str:
    """client_addr(): the numeric address, an IPv4-mapped IPv6 one shown as IPv4."""
    host = sockaddr if isinstance(sockaddr, str) else str(sockaddr[0])
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return host


def client_name(addr: str, log: Logger = _no_log) -> str:
    """client_name(): reverse lookup, confirmed by a forward lookup, else "UNKNOWN".

    A name whose forward lookup does not give back ``addr`` is treated as
    spoofed, exactly as rsync does.
    """
    if addr == "0.0.0.0":
        return UNKNOWN
    try:
        info = socket.getaddrinfo(addr, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                  socket.AI_NUMERICHOST)
    except (OSError, UnicodeError) as exc:
        log(f"malformed address {addr}: {exc}")
        return UNKNOWN
    fam, _, _, _, sa = info[0]
    try:
        name, _ = socket.getnameinfo(sa, socket.NI_NAMEREQD | socket.NI_NUMERICSERV)
    except OSError as exc:
        log(f"name lookup failed for {addr}: {exc.strerror or exc}")
        return UNKNOWN
    try:
        answers = socket.getaddrinfo(name, None, fam, socket.SOCK_STREAM, 0,
                                     socket.AI_CANONNAME)
    except (OSError, UnicodeError) as exc:
        log(f"forward name lookup for {name} failed: {exc}")
        return UNKNOWN
    want = socket.inet_pton(fam, sa[0].split("%", 1)[0])
    for a_fam, _, _, _, a_sa in answers:
        if a_fam == fam and socket.inet_pton(fam, a_sa[0].split("%", 1)[0]) == want:
            if fam == socket.AF_INET6 and a_sa[3] != sa[3]:
                continue
            return name
    log(f'{addr} is not a known address for "{name}": spoofed address?')
    return UNKNOWN
