"""vsftpd's file-name filters (hide_file, deny_file) and command lists
(cmds_allowed, cmds_denied), with vsftpd 3.0.5's exact matching rules."""

from __future__ import annotations

# vsftpd's VSFTP_MATCHITERS_MAX: a hostile name or pattern cannot make the
# matcher (which recurses on each {a,b} alternative) run away.
MATCH_ITERS_MAX = 1000


def _passes(name: str, filt: str, iters: list[int]) -> bool:
    """vsf_filename_passes_filter(): `*`, `?` and one level of `{a,b}`.

    Deliberately not fnmatch: a literal after `*` binds to its first
    occurrence (no backtracking), as in vsftpd, so both agree on every name."""
    must_match_here = True
    last = ""
    while filt:
        iters[0] += 1
        if iters[0] > MATCH_ITERS_MAX:
            return False
        idx = min((i for i in (filt.find("*"), filt.find("?"), filt.find("{")) if i >= 0),
                  default=-1)
        if idx >= 0:
            needed, last, filt = filt[:idx], filt[idx], filt[idx + 1:]
        else:
            needed, last, filt = filt, "", ""
        if needed:
            pos = name.find(needed)
            if pos < 0 or (must_match_here and pos > 0):
                return False
            name = name[pos + len(needed):]
        if last == "?":
            if not name:
                return False
            name = name[1:]
            must_match_here = True
        elif last == "{":
            must_match_here = True
            end = filt.find("}")
            if end >= 0:
                rest = filt[end + 1:]
                for alt in filt[:end].split(","):
                    if not alt:  # vsftpd stops at the first empty alternative
                        break
                    if _passes(name, alt + rest, iters):
                        return True
                return False
            if not name or name[0] != "{":
                return False
            name = name[1:]
        else:
            must_match_here = False
    return not name or last == "*"


def matches(name: str, pattern: str | None) -> bool:
    """vsf_access_check_file()'s test: the filter matches the whole name, or
    the pattern text occurs literally anywhere in it."""
    if not pattern:
        return False
    return _passes(name, pattern, [0]) or pattern in name


def path_matches(arg: str, ftp_path: str, pattern: str | None) -> bool:
    """deny_file: vsftpd tests only the argument as typed; we also test each
    component of the resolved path, so `dir/file` cannot slip past a denied
    `dir` written as `{dir,...}`."""
    if not pattern:
        return False
    if matches(arg, pattern):
        return True
    return any(matches(part, pattern) for part in ftp_path.split("/") if part)


def command_permitted(cmd: str, allowed: str | None, denied: str | None) -> bool:
    """cmds_allowed / cmds_denied: comma-separated, exact (upper-case) verbs;
    like vsftpd, parsing stops at the first empty entry."""
    if allowed is not None and cmd not in _verbs(allowed):
        return False
    return not (denied is not None and cmd in _verbs(denied))


def _verbs(text: str) -> set[str]:
    out: set[str] = set()
    for verb in text.split(","):
        if not verb:
            break
        out.add(verb)
    return out
