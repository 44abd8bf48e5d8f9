"""--chmod rules (rsync's chmod.c): ``D755,F644,u+rwx,go-w,Dg+s,a=r``."""

from __future__ import annotations

import stat

from netsync.errors import UsageError

_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007, "a": 0o7777}
_PERM = {"r": 0o444, "w": 0o222, "x": 0o111, "s": 0o6000, "t": 0o1000}


class ChmodRule:
    __slots__ = ("target", "op", "bits", "mask", "cond_x", "copy_from")

    def __init__(self, target: str, op: str, bits: int, mask: int, cond_x: bool,
                 copy_from: str = "") -> None:
        self.target = target  # "D", "F" or "" (both)
        self.op = op  # "=", "+", "-" or "#" (absolute octal)
        self.bits = bits
        self.mask = mask
        self.cond_x = cond_x  # 'X': execute only if a dir or already executable
        self.copy_from = copy_from  # "u", "g" or "o": "g=u" copies the user's bits


def parse_chmod(specs: list[str]) -> list[ChmodRule]:
    rules: list[ChmodRule] = []
    for spec in specs:
        for clause in spec.split(","):
            if not clause:
                continue
            rules.append(_parse_clause(clause, spec))
    return rules


def _parse_clause(clause: str, spec: str) -> ChmodRule:
    target = ""
    if clause[0] in "DF":
        target, clause = clause[0], clause[1:]
    if clause.isdigit() and all(c in "01234567" for c in clause):
        return ChmodRule(target, "#", int(clause, 8), 0o7777, False)
    i = 0
    who = 0
    while i < len(clause) and clause[i] in _WHO:
        who |= _WHO[clause[i]]
        i += 1
    if i >= len(clause) or clause[i] not in "=+-":
        raise UsageError(f"Invalid argument passed to --chmod ({spec})")
    op = clause[i]
    i += 1
    if clause[i:] in ("u", "g", "o"):
        # The mask keeps the targets' special bits: rsync's "g=u" clears setgid.
        return ChmodRule(target, op, 0, who or 0o7777, False, clause[i:])
    bits = 0
    cond_x = False
    for c in clause[i:]:
        if c == "X":
            cond_x = True
            bits |= 0o111
        elif c in _PERM:
            bits |= _PERM[c]
        else:
            raise UsageError(f"Invalid argument passed to --chmod ({spec})")
    mask = who or 0o7777
    if not who:
        # No "who": like chmod(1), honour the umask for + and =.
        bits &= ~_umask() | 0o7000 if op != "-" else bits
    return ChmodRule(target, op, bits & mask, mask, cond_x)


_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        import os

        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK


def tweak_mode(mode: int, rules: list[ChmodRule]) -> int:
    """Apply --chmod rules to a file-list mode (never to symlinks)."""
    is_dir = stat.S_ISDIR(mode)
    perms = stat.S_IMODE(mode)
    for r in rules:
        if r.target == "D" and not is_dir or r.target == "F" and is_dir:
            continue
        bits = r.bits
        if r.copy_from:
            shift = {"u": 6, "g": 3, "o": 0}[r.copy_from]
            rwx = (perms >> shift) & 0o7
            bits = (rwx << 6 | rwx << 3 | rwx) & r.mask
        if r.cond_x and not is_dir and not perms & 0o111:
            bits &= ~0o111
        if r.op == "#":
            perms = bits
        elif r.op == "=":
            perms = (perms & ~r.mask) | bits
        elif r.op == "+":
            perms |= bits
        else:
            perms &= ~bits
    return (mode & ~0o7777) | perms
