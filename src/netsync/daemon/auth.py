"""The server side of rsync's daemon authentication (authenticate.c, rsync 3.5).

Flow for a module with ``auth users``:
1. :func:`negotiate_auth_digest` picks the digest from the client's greeting
   list (our strongest that it lists; md5 -- or for protocol < 30 the "old"
   md4 -- when it sent none) and :func:`digest_floor_error` applies the
   module's ``auth digest`` minimum;
2. the server sends ``@RSYNCD: AUTHREQD <challenge>`` (:func:`make_challenge`:
   fresh random bytes, as long as the digest, base64 without padding);
3. the client answers ``user response``; :func:`authenticate` finds the first
   ``auth users`` rule matching the user (or one of the system groups of a
   real user of that name), refuses ``:deny``, then checks the secrets file
   (:func:`check_secret`: ``user:password`` and ``@group:password`` lines,
   strict-modes permission checks) with a constant-time comparison.

Every refusal reason is rsync's text, logged by the daemon as
``auth failed on module M from HOST (ADDR) for USER: REASON``; the client
only ever sees ``@ERROR: auth failed on module M``.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import hmac
import os
import pwd
import re
import secrets
from collections.abc import Callable
from typing import NamedTuple

from netsync.wildmatch import wildmatch

__all__ = [
    "AUTH_DIGESTS", "AuthResult", "AuthRule", "DigestError", "authenticate",
    "check_response", "check_secret", "conf_strtok", "digest_floor_error", "digest_len",
    "greeting_digests", "hash_response", "make_challenge", "match_auth_rule",
    "negotiate_auth_digest", "parse_auth_users", "system_groups",
]

# Strongest first, as rsync lists them in its greeting.
AUTH_DIGESTS: tuple[str, ...] = ("sha512", "sha256", "sha1", "md5", "md4")
# "md4_old" is rsync's CSUM_MD4_OLD: what a client without a digest list
# below protocol 30 uses -- MD4 over a 4-byte zero seed, password, challenge.
_LENGTHS = {"sha512": 64, "sha256": 32, "sha1": 20, "md5": 16, "md4": 16, "md4_old": 16}


class DigestError(Exception):
    """No usable digest: the text is the whole line rsync sends ("@ERROR: ...")."""


def greeting_digests() -> str:
    """The list after "@RSYNCD: 32.0 " in the server's greeting."""
    return " ".join(AUTH_DIGESTS)


def digest_len(digest: str) -> int:
    return _LENGTHS[digest]


def negotiate_auth_digest(client_list: list[str] | str | None, protocol: int) -> str:
    """negotiate_daemon_auth() on the server.

    ``client_list`` is what followed the version in the client's greeting
    (None when there was nothing); ``protocol`` the negotiated protocol.
    """
    if client_list is None:
        return "md5" if protocol >= 30 else "md4_old"
    names = client_list.split(" ") if isinstance(client_list, str) else client_list
    offered = {n for n in names if n}
    for name in AUTH_DIGESTS:  # each side picks its own best mutual name (3.5)
        if name in offered:
            return name
    raise DigestError("@ERROR: your client does not support one of our daemon-auth "
                      f"checksums: {greeting_digests()}")


def digest_floor_error(floor: str, negotiated: str) -> str | None:
    """The ``auth digest`` minimum: None if ``negotiated`` is strong enough, else why not."""
    if not floor:
        return None
    rank = {name: i for i, name in enumerate(AUTH_DIGESTS)}
    want = rank.get(floor.lower())
    got = rank.get("md4" if negotiated == "md4_old" else negotiated)
    if want is None:
        return f"the configured 'auth digest = {floor}' is not a supported digest on this build"
    if got is None or got > want:
        shown = "md4" if negotiated == "md4_old" else negotiated
        return (f"negotiated auth digest {shown} is weaker than the required "
                f"'auth digest = {floor}'")
    return None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def make_challenge(digest: str = "md5") -> str:
    """A fresh, unpredictable challenge of the length rsync sends for ``digest``."""
    return _b64(secrets.token_bytes(_LENGTHS[digest]))


def hash_response(password: bytes, challenge: str, digest: str) -> str:
    """generate_hash(): base64 (unpadded) of H(password + challenge)."""
    data = password + challenge.encode("utf-8", "surrogateescape")
    if digest in ("md4", "md4_old"):
        from Crypto.Hash import MD4

        if digest == "md4_old":
            data = b"\0\0\0\0" + data
        return _b64(MD4.new(data).digest())
    return _b64(hashlib.new(digest, data).digest())


# ---------------------------------------------------------------------------
# auth users


# Compiled at import: the listener's connections inherit it instead of each compiling it.
_STRTOK = re.compile(r"[ ,\t\r\n]")


def conf_strtok(value: str) -> list[str]:
    """util1.c conf_strtok(): a leading comma means split on commas only (so an
    entry may hold spaces), else split on blanks and commas."""
    s = value.lstrip(" \t\n\v\f\r")
    if s.startswith(","):
        return [t.strip(" \t\n\v\f\r") for t in s[1:].split(",")
                if t.strip(" \t\n\v\f\r")]
    return [t for t in _STRTOK.split(s) if t]


class AuthRule(NamedTuple):
    pattern: str  # wildmatch pattern for the user (or the group, without '@')
    is_group: bool
    access: str | None  # "ro", "rw", "deny" or None (module default)


def parse_auth_users(value: str) -> list[AuthRule]:
    """``auth users``: ``user``, ``@group``, each optionally ``:ro``, ``:rw`` or ``:deny``.

    rsync looks at the first letter(s) after the ':' only ("r"+"o", "r"+"w",
    "d"); anything else is ignored, like rsync does.
    """
    rules = []
    for tok in conf_strtok(value):
        name, colon, opts = tok.partition(":")
        access = None
        if colon:
            first = opts[:1].lower()
            if first == "r":
                second = opts[1:2].lower()
                access = "ro" if second == "o" else "rw" if second == "w" else None
            elif first == "d":
                access = "deny"
        if name.startswith("@"):
            rules.append(AuthRule(name[1:], True, access))
        else:
            rules.append(AuthRule(name, False, access))
    return rules


def system_groups(user: str) -> list[str]:
    """The names of every group of the system user ``user`` (none if no such user)."""
    try:
        pw = pwd.getpwnam(user)
        gids = os.getgrouplist(user, pw.pw_gid)
    except (KeyError, OSError):
        return []
    names = []
    for gid in gids:
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return names


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def match_auth_rule(user: str, rules: list[AuthRule],
                    groups_of: Callable[[str], list[str]] = system_groups
                    ) -> tuple[AuthRule, str | None] | None:
    """The first rule that matches ``user`` and, for a group rule, the group it matched."""
    groups: list[str] | None = None
    for rule in rules:
        if not rule.is_group:
            if wildmatch(_enc(rule.pattern), _enc(user)):
                return rule, None
            continue
        if groups is None:
            groups = groups_of(user)
        for g in groups:
            if wildmatch(_enc(rule.pattern), _enc(g)):
                return rule, g
    return None


# ---------------------------------------------------------------------------
# secrets file


def _fgets_lines(data: bytes) -> list[bytes]:
    """The pieces fgets(line, 1024) returns: lines, long ones cut every 1023 bytes."""
    out = []
    for raw in data.splitlines(keepends=True):
        while len(raw) > 1023:
            out.append(raw[:1023])
            raw = raw[1023:]
        out.append(raw)
    return out


def check_secret(secrets_file: str, user: str, group: str | None, challenge: str,
                 response: str, digest: str, *, strict_modes: bool = True,
                 euid: int | None = None, log: Callable[[str], None] | None = None
                 ) -> str | None:
    """check_secret(): None when ``response`` is right, else rsync's reason.

    The user's own line is tried, and (for a group rule) the ``@group`` line;
    the first line for each name decides for that name.  Under strict modes
    the file must not be accessible by others, and must be owned by root when
    we run as root (the exact messages are passed to ``log``).
    """
    if not secrets_file:
        return "no secrets file"
    try:
        from netsync.safepath import daemon_open

        # A planted symlink anywhere on the path is refused (open_no_attacker_symlinks).
        fd = daemon_open(secrets_file, os.O_RDONLY)
    except OSError:
        return "no secrets file"
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if strict_modes:
            msg = None
            if st.st_mode & 0o006:
                msg = ("secrets file must not be other-accessible "
                       "(see strict modes option)")
            elif (os.geteuid() if euid is None else euid) == 0 and st.st_uid != 0:
                msg = ("secrets file must be owned by root when running as root "
                       "(see strict modes)")
            if msg:
                if log:
                    log(msg)
                return "ignoring secrets file"
        if user.startswith("#"):
            return "invalid username"
        data = fh.read()
    want: dict[bool, bytes | None] = {False: _enc(user), True: _enc(group) if group else None}
    err = "secret not found"
    expected = _enc(response)
    for line in _fgets_lines(data):
        if want[False] is None and want[True] is None:
            break
        tokens = line.replace(b"\r", b"\n").split(b"\n")
        s = next((t for t in tokens if t), None)
        if s is None:
            continue
        is_group = s.startswith(b"@")
        if is_group:
            s = s[1:]
        name = want[is_group]
        if name is None or not s.startswith(name) or s[len(name):len(name) + 1] != b":":
            continue
        computed = hash_response(s[len(name) + 1:], challenge, digest).encode()
        if hmac.compare_digest(computed, expected):
            return None
        err = "password mismatch"
        want[is_group] = None  # rsync stops looking for that name
    return err


def check_response(user: str, response: str, challenge: str, secrets_file: str,
                   strict_modes: bool, digest: str, group: str | None = None) -> bool:
    """Whether ``response`` proves ``user`` (or ``group``) knows the secret."""
    return check_secret(secrets_file, user, group, challenge, response, digest,
                        strict_modes=strict_modes) is None


class AuthResult(NamedTuple):
    user: str | None  # the authenticated name; None when refused
    error: str | None  # rsync's reason when refused
    read_only: bool | None  # ``:ro`` -> True, ``:rw`` -> False, else None (module setting)


def authenticate(response_line: str, challenge: str, digest: str, *, auth_users: str,
                 secrets_file: str, strict_modes: bool = True,
                 groups_of: Callable[[str], list[str]] = system_groups,
                 log: Callable[[str], None] | None = None) -> AuthResult:
    """auth_server() after the challenge: judge the client's ``user response`` line."""
    user, space, response = response_line.partition(" ")
    if not space:
        return AuthResult(None, "invalid challenge response", None)
    found = match_auth_rule(user, parse_auth_users(auth_users), groups_of)
    if found is None:
        return AuthResult(None, "no matching rule", None)
    rule, group = found
    if rule.access == "deny":
        return AuthResult(None, "denied by rule", None)
    err = check_secret(secrets_file, user, group, challenge, response, digest,
                       strict_modes=strict_modes, log=log)
    if err:
        return AuthResult(None, err, None)
    ro = True if rule.access == "ro" else False if rule.access == "rw" else None
    return AuthResult(user, None, ro)
