"""rsync's wildmatch (lib/wildmatch.c): shell-style matching where '*' stops at '/'.

Two implementations live here:

* ``wildmatch_reference`` is a direct transcription of rsync's recursive
  matcher, including its ABORT_ALL / ABORT_TO_STARSTAR early exits.  It is slow
  and exists so tests can check the fast path against the exact algorithm.
* ``compile_wild`` translates a pattern once into a ``re`` bytes regex; filter
  rules use it because every file name in a transfer goes through them.

Character classes use the C locale (ASCII only), as rsync's ctype calls do for
bytes >= 0x80 in a UTF-8 locale.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = [
    "WildPattern",
    "compile_wild",
    "has_wildcards",
    "litmatch_array",
    "trailing_start",
    "wildmatch",
    "wildmatch_array",
    "wildmatch_reference",
    "wildmatch_array_reference",
]

_FALSE = 0
_TRUE = 1
_ABORT_ALL = -1
_ABORT_TO_STARSTAR = -2

_STAR = 0x2A
_QMARK = 0x3F
_LBRACK = 0x5B
_RBRACK = 0x5D
_BSLASH = 0x5C
_SLASH = 0x2F
_BANG = 0x21
_CARET = 0x5E
_DASH = 0x2D
_COLON = 0x3A


def _cls(pred: Callable[[int], bool]) -> frozenset[int]:
    return frozenset(c for c in range(256) if pred(c))


_ALPHA = _cls(lambda c: 65 <= c <= 90 or 97 <= c <= 122)
_DIGIT = _cls(lambda c: 48 <= c <= 57)
_ALNUM = _ALPHA | _DIGIT
_GRAPH = _cls(lambda c: 33 <= c <= 126)
_CHAR_CLASSES: dict[bytes, frozenset[int]] = {
    b"alnum": _ALNUM,
    b"alpha": _ALPHA,
    b"blank": frozenset((0x20, 0x09)),
    b"cntrl": _cls(lambda c: c < 32 or c == 127),
    b"digit": _DIGIT,
    b"graph": _GRAPH,
    b"lower": _cls(lambda c: 97 <= c <= 122),
    b"print": _cls(lambda c: 32 <= c <= 126),
    b"punct": _GRAPH - _ALNUM,
    b"space": frozenset((9, 10, 11, 12, 13, 32)),
    b"upper": _cls(lambda c: 65 <= c <= 90),
    b"xdigit": _DIGIT | _cls(lambda c: 65 <= c <= 70 or 97 <= c <= 102),
}


def has_wildcards(pattern: bytes) -> bool:
    """rsync's test for "use wildmatch, not a plain compare": any of ``*[?``."""
    return b"*" in pattern or b"[" in pattern or b"?" in pattern


# ---------------------------------------------------------------------------
# Reference transcription of dowild().


def _dowild(p: bytes, pi: int, t: bytes, ti: int) -> int:
    plen = len(p)
    tlen = len(t)

    def pc(i: int) -> int:
        return p[i] if i < plen else 0

    while pi < plen:
        p_ch = p[pi]
        if ti >= tlen:
            if p_ch != _STAR:
                return _ABORT_ALL
            t_ch = 0
        else:
            t_ch = t[ti]
        if p_ch == _BSLASH:
            pi += 1
            if t_ch != pc(pi):
                return _FALSE
        elif p_ch == _QMARK:
            if t_ch == _SLASH:
                return _FALSE
        elif p_ch == _STAR:
            pi += 1
            special = pc(pi) == _STAR
            while pc(pi) == _STAR:
                pi += 1
            if pi >= plen:
                # Trailing "**" matches everything, trailing "*" no slashes.
                if not special and _SLASH in t[ti:]:
                    return _FALSE
                return _TRUE
            while ti < tlen:
                matched = _dowild(p, pi, t, ti)
                if matched != _FALSE:
                    if not special or matched != _ABORT_TO_STARSTAR:
                        return matched
                elif not special and t[ti] == _SLASH:
                    return _ABORT_TO_STARSTAR
                ti += 1
            return _ABORT_ALL
        elif p_ch == _LBRACK:
            pi += 1
            p_ch = pc(pi)
            if p_ch == _CARET:
                p_ch = _BANG
            negated = p_ch == _BANG
            if negated:
                pi += 1
                p_ch = pc(pi)
            prev_ch = 0
            matched_cls = False
            while True:
                if not p_ch:
                    return _ABORT_ALL
                if p_ch == _BSLASH:
                    pi += 1
                    p_ch = pc(pi)
                    if not p_ch:
                        return _ABORT_ALL
                    if t_ch == p_ch:
                        matched_cls = True
                elif p_ch == _DASH and prev_ch and pc(pi + 1) and pc(pi + 1) != _RBRACK:
                    pi += 1
                    p_ch = pc(pi)
                    if p_ch == _BSLASH:
                        pi += 1
                        p_ch = pc(pi)
                        if not p_ch:
                            return _ABORT_ALL
                    if prev_ch <= t_ch <= p_ch:
                        matched_cls = True
                    p_ch = 0
                elif p_ch == _LBRACK and pc(pi + 1) == _COLON:
                    pi += 2
                    s = pi
                    while pc(pi) and pc(pi) != _RBRACK:
                        pi += 1
                    p_ch = pc(pi)
                    if not p_ch:
                        return _ABORT_ALL
                    i = pi - s - 1
                    if i < 0 or p[pi - 1] != _COLON:
                        # No ":]": the '[' is an ordinary member.
                        pi = s - 2
                        p_ch = _LBRACK
                        if t_ch == p_ch:
                            matched_cls = True
                    else:
                        members = _CHAR_CLASSES.get(p[s : s + i])
                        if members is None:
                            return _ABORT_ALL
                        if t_ch in members:
                            matched_cls = True
                        p_ch = 0
                elif t_ch == p_ch:
                    matched_cls = True
                prev_ch = p_ch
                pi += 1
                p_ch = pc(pi)
                if p_ch == _RBRACK:
                    break
            if matched_cls == negated or t_ch == _SLASH:
                return _FALSE
        elif t_ch != p_ch:
            return _FALSE
        pi += 1
        ti += 1
    return _TRUE if ti >= tlen else _FALSE


def wildmatch_reference(pattern: bytes, text: bytes) -> bool:
    """rsync's wildmatch(), transcribed literally (slow; for tests)."""
    return _dowild(pattern, 0, text, 0) == _TRUE


def trailing_start(text: bytes, count: int) -> int:
    """Index where the last ``count`` '/'-separated elements of ``text`` begin.

    -1 when the text has fewer elements (rsync's trailing_N_elements()).
    """
    end = len(text)
    while True:
        pos = text.rfind(b"/", 0, end)
        if pos < 0:
            return 0 if count == 1 else -1
        count -= 1
        if not count:
            return pos + 1
        end = pos


def _wildmatch_array(dowild: Callable[[bytes, int], int], text: bytes, where: int) -> bool:
    """wildmatch_array()'s loop around a dowild(text, start) on the joined text."""
    start = 0
    if where > 0:
        start = trailing_start(text, where)
        if start < 0:
            return False
    matched = dowild(text, start)
    if matched != _TRUE and where < 0 and matched != _ABORT_ALL:
        pos = start
        while True:
            pos = text.find(b"/", pos)
            if pos < 0:
                return False
            pos += 1
            matched = dowild(text, pos)
            if matched != _FALSE and matched != _ABORT_TO_STARSTAR:
                break
    return matched == _TRUE


def wildmatch_array_reference(pattern: bytes, texts: Sequence[bytes], where: int) -> bool:
    """rsync's wildmatch_array() on the joined texts, transcribed literally."""
    return _wildmatch_array(lambda t, i: _dowild(pattern, 0, t, i), b"".join(texts), where)


# ---------------------------------------------------------------------------
# Fast path: translate to a regular expression.


def _parse_class(p: bytes, pi: int) -> tuple[frozenset[int] | None, int]:
    """Parse the class starting at p[pi] == '['.

    Returns (member set, index after ']'), or (None, 0) when the class is
    malformed: rsync then aborts the whole match whenever it reaches it.
    """
    plen = len(p)

    def pc(i: int) -> int:
        return p[i] if i < plen else 0

    members: set[int] = set()
    pi += 1
    p_ch = pc(pi)
    if p_ch == _CARET:
        p_ch = _BANG
    negated = p_ch == _BANG
    if negated:
        pi += 1
        p_ch = pc(pi)
    prev_ch = 0
    while True:
        if not p_ch:
            return None, 0
        if p_ch == _BSLASH:
            pi += 1
            p_ch = pc(pi)
            if not p_ch:
                return None, 0
            members.add(p_ch)
        elif p_ch == _DASH and prev_ch and pc(pi + 1) and pc(pi + 1) != _RBRACK:
            pi += 1
            p_ch = pc(pi)
            if p_ch == _BSLASH:
                pi += 1
                p_ch = pc(pi)
                if not p_ch:
                    return None, 0
            members.update(range(prev_ch, p_ch + 1))
            p_ch = 0
        elif p_ch == _LBRACK and pc(pi + 1) == _COLON:
            pi += 2
            s = pi
            while pc(pi) and pc(pi) != _RBRACK:
                pi += 1
            p_ch = pc(pi)
            if not p_ch:
                return None, 0
            i = pi - s - 1
            if i < 0 or p[pi - 1] != _COLON:
                pi = s - 2
                p_ch = _LBRACK
                members.add(_LBRACK)
            else:
                named = _CHAR_CLASSES.get(p[s : s + i])
                if named is None:
                    return None, 0
                members.update(named)
                p_ch = 0
        else:
            members.add(p_ch)
        prev_ch = p_ch
        pi += 1
        p_ch = pc(pi)
        if p_ch == _RBRACK:
            break
    if negated:
        members = set(range(1, 256)) - members
    members.discard(_SLASH)
    members.discard(0)
    return frozenset(members), pi + 1


def _class_regex(members: frozenset[int]) -> bytes:
    # Emit sorted runs as ranges; each byte as \xNN so nothing is special.
    out = [b"["]
    vals = sorted(members)
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j > i:
            out.append(b"\\x%02x-\\x%02x" % (vals[i], vals[j]))
        else:
            out.append(b"\\x%02x" % vals[i])
        i = j + 1
    out.append(b"]")
    return b"".join(out)


def translate(pattern: bytes) -> bytes | None:
    """Regex source equivalent to ``pattern`` (whole-text match), or None if
    the pattern can never match anything."""
    out: list[bytes] = []
    lit = bytearray()
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == _BSLASH:
            if i + 1 >= n:
                return None  # would have to match the NUL terminator
            lit.append(pattern[i + 1])
            i += 2
            continue
        if c not in (_QMARK, _STAR, _LBRACK):
            lit.append(c)
            i += 1
            continue
        if lit:
            out.append(re.escape(bytes(lit)))
            lit.clear()
        if c == _QMARK:
            out.append(b"[^/]")
            i += 1
        elif c == _STAR:
            j = i
            while j < n and pattern[j] == _STAR:
                j += 1
            out.append(b".*" if j - i >= 2 else b"[^/]*")
            i = j
        else:
            members, nxt = _parse_class(pattern, i)
            if not members:
                return None
            out.append(_class_regex(members))
            i = nxt
    if lit:
        out.append(re.escape(bytes(lit)))
    return b"".join(out)


# ---------------------------------------------------------------------------
# Patterns with two or more stars: rsync's algorithm, a run of fixed-width
# elements at a time.
#
# A backtracking regex tries every split of the text between the stars, which is
# exponential: "*a*a*a*a*a*a*a*a*a*a*a*a*b" against a 60-byte name would not
# finish, and a daemon's client (or a server, through the names it sends) chooses
# both.  rsync's dowild() is polynomial thanks to its early exits: a star whose
# rest of pattern failed at every later position ends the whole match (ABORT_ALL),
# and a single star that meets a '/' returns to the last "**" (ABORT_TO_STARSTAR).
# _StarMatch does exactly that, but finds each star's candidate positions with the
# compiled regex of the run that follows it instead of trying every byte.

_ANY_BUT_SLASH = frozenset(range(256)) - {_SLASH}


class _Run:
    """Fixed-width elements between stars: each a set of bytes it may match."""

    __slots__ = ("elems", "width", "search", "at")

    def __init__(self, elems: list[frozenset[int]], src: list[bytes]) -> None:
        self.elems = elems
        self.width = len(elems)
        rx = re.compile(b"".join(src), re.DOTALL)
        self.search = rx.search
        self.at = rx.match

    def prefix_matches(self, text: bytes, pos: int) -> bool:
        """Does text[pos:] (shorter than the run) match the run's first elements?"""
        return all(text[pos + i] in e for i, e in enumerate(self.elems[: len(text) - pos]))


def _runs(pattern: bytes) -> tuple[_Run, list[tuple[bool, _Run]]] | None:
    """The head run and (star is "**", run) pairs; None if the pattern can never match."""
    runs: list[tuple[bool, _Run]] = []
    elems: list[frozenset[int]] = []
    src: list[bytes] = []
    head: _Run | None = None
    double = False
    i, n = 0, len(pattern)
    while i <= n:
        c = pattern[i] if i < n else None
        if c is None or c == _STAR:
            run = _Run(elems, src)
            if head is None:
                head = run
            else:
                runs.append((double, run))
            if c is None:
                break
            j = i
            while j < n and pattern[j] == _STAR:
                j += 1
            double, i, elems, src = j - i >= 2, j, [], []
        elif c == _BSLASH:
            if i + 1 >= n:
                return None
            elems.append(frozenset((pattern[i + 1],)))
            src.append(re.escape(pattern[i + 1 : i + 2]))
            i += 2
        elif c == _QMARK:
            elems.append(_ANY_BUT_SLASH)
            src.append(b"[^/]")
            i += 1
        elif c == _LBRACK:
            members, nxt = _parse_class(pattern, i)
            if not members:
                return None
            elems.append(members)
            src.append(_class_regex(members))
            i = nxt
        else:
            elems.append(frozenset((c,)))
            src.append(re.escape(bytes((c,))))
            i += 1
    assert head is not None
    return head, runs


class _StarMatch:
    """dowild() for a pattern of stars and fixed-width runs (see above)."""

    __slots__ = ("head", "runs", "suffix")

    def __init__(self, head: _Run, runs: list[tuple[bool, _Run]]) -> None:
        self.head = head
        self.runs = runs
        # The run after the last star ends every match: a quick "no" for most names.
        self.suffix = runs[-1][1] if runs and runs[-1][1].width else None

    def dowild(self, text: bytes, start: int) -> int:
        head = self.head
        n = len(text)
        if head.width:
            if start + head.width > n:
                return _ABORT_ALL if head.prefix_matches(text, start) else _FALSE
            if head.at(text, start) is None:
                return _FALSE
        if not self.runs:
            return _TRUE if start + head.width == n else _FALSE
        return self._star(0, text, start + head.width)

    def _star(self, k: int, text: bytes, pos: int) -> int:
        """dowild() from star ``k`` at ``pos``: each star's loop over the places where
        its run matches, the rest of the pattern tried at each.  A pattern may have
        two thousand stars, so the nesting is a list, not Python's recursion."""
        n = len(text)
        runs = self.runs
        last_k = len(runs) - 1
        nxt = self._next
        stack: list[tuple[int, bool, _Run, int, int]] = []  # frames awaiting a result
        while True:
            # Enter star k at pos: its first place, or its result.
            double, run = runs[k]
            if not run.width:  # a trailing star: "**" takes the rest, "*" this name's
                r = _TRUE if double or text.find(b"/", pos) < 0 else _FALSE
            else:
                slash = n if double else text.find(b"/", pos)
                if slash < 0:
                    slash = n
                r, c = nxt(run, text, pos, slash)
                if not r:
                    end = c + run.width
                    stack.append((k, double, run, slash, c))
                    if k != last_k:
                        k, pos = k + 1, end
                        continue
                    r = _TRUE if end == n else _FALSE
            # Hand r to the waiting stars until one has another place to try.
            while stack:
                k, double, run, slash, c = stack.pop()
                if r != _FALSE:
                    if not double or r != _ABORT_TO_STARSTAR:
                        continue
                elif c == slash:
                    r = _ABORT_TO_STARSTAR
                    continue
                r, c = nxt(run, text, c + 1, slash)
                if r:
                    continue
                end = c + run.width
                stack.append((k, double, run, slash, c))
                if k != last_k:
                    k, pos = k + 1, end
                    break
                r = _TRUE if end == n else _FALSE
            else:
                return r

    def _next(self, run: _Run, text: bytes, q: int, slash: int) -> tuple[int, int]:
        """A star's next place from q on: (0, place), or (its result, 0) when the
        loop ends (past the '/' a single star may not cross, or at the text's end)."""
        n = len(text)
        if q >= n:
            return _ABORT_ALL, 0
        m = run.search(text, q)
        c = m.start() if m is not None else n
        if c > slash:
            return self._tail(run, text, q, slash + 1) or _ABORT_TO_STARSTAR, 0
        if c == n:
            return self._tail(run, text, q, n) or _ABORT_ALL, 0
        return 0, c

    @staticmethod
    def _tail(run: _Run, text: bytes, lo: int, hi: int) -> int:
        """_ABORT_ALL if at some place in [lo, hi) the run is cut short by the end of
        the text while matching so far (dowild runs out of text there), else 0."""
        n = len(text)
        elems = run.elems
        first = elems[0]
        for p in range(max(lo, n - run.width + 1), min(hi, n)):
            if text[p] in first:
                for i in range(1, n - p):
                    if text[p + i] not in elems[i]:
                        break
                else:
                    return _ABORT_ALL
        return 0

    def match_where(self, text: bytes, where: int) -> bool:
        """wildmatch_array() on the joined text."""
        suffix = self.suffix
        if suffix is not None and (len(text) < suffix.width
                                   or suffix.at(text, len(text) - suffix.width) is None):
            return False
        return _wildmatch_array(self.dowild, text, where)


class WildPattern:
    """A wildmatch pattern compiled once.

    ``match(text)`` is wildmatch(); ``match_where(text, where)`` is
    wildmatch_array() on an already-joined text.  A pattern with at most one
    run of stars becomes a regex (which then backtracks over one star only);
    one with more uses rsync's own algorithm (:class:`_StarMatch`).
    """

    __slots__ = ("pattern", "_full", "_any", "_star", "_star_any")

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        src = translate(pattern)
        self._full: Callable[[bytes], object] | None
        self._any: Callable[[bytes], object] | None
        self._star: _StarMatch | None = None  # all matching (two or more star runs)
        self._star_any: _StarMatch | None = None  # where < 0 only (one run, "**")
        parsed = _runs(pattern) if src is not None else None
        if parsed is None:
            self._full = self._any = None
        elif len(parsed[1]) >= 2:  # (one pair per run of stars)
            self._star = sm = _StarMatch(*parsed)
            self._full = lambda text: sm.dowild(text, 0) == _TRUE or None
            self._any = None
        else:
            self._full = re.compile(src, re.DOTALL).fullmatch  # type: ignore[arg-type]
            if b".*" in src:  # type: ignore[operator]
                # "(?:.*/)?" before a "**" backtracks over every '/' for each of the
                # star's places; rsync's loop stops at the first ABORT_ALL instead.
                self._any = None
                self._star_any = _StarMatch(*parsed)
            else:
                # "At the start or after any slash": rsync's where < 0.
                self._any = re.compile(b"(?:.*/)?(?:" + src + b")", re.DOTALL).fullmatch

    def match(self, text: bytes) -> bool:
        full = self._full
        return full is not None and full(text) is not None

    def match_where(self, text: bytes, where: int) -> bool:
        if self._full is None:
            return False
        if self._star is not None:
            return self._star.match_where(text, where)
        if where < 0 and self._star_any is not None:
            return self._star_any.match_where(text, where)
        if where > 0:
            start = trailing_start(text, where)
            if start < 0:
                return False
            return self._full(text[start:] if start else text) is not None
        if where < 0:
            return self._any(text) is not None  # type: ignore[misc]
        return self._full(text) is not None


_cache: dict[bytes, WildPattern] = {}


def compile_wild(pattern: bytes) -> WildPattern:
    """Compile (and memoise) a pattern."""
    wp = _cache.get(pattern)
    if wp is None:
        if len(_cache) > 4096:
            _cache.clear()
        wp = _cache[pattern] = WildPattern(pattern)
    return wp


def wildmatch(pattern: bytes, text: bytes) -> bool:
    """Match ``text`` against rsync wildmatch ``pattern`` (whole text)."""
    return compile_wild(pattern).match(text)


def wildmatch_array(pattern: bytes, texts: Sequence[bytes], where: int = 0) -> bool:
    """rsync's wildmatch_array(): match the virtually-joined ``texts``.

    ``where`` > 0 matches only the trailing N '/'-separated elements, < 0 lets
    the pattern start at the beginning or after any slash, 0 is a plain match.
    """
    return compile_wild(pattern).match_where(b"".join(texts), where)


def litmatch_array(string: bytes, texts: Sequence[bytes], where: int = 0) -> bool:
    """rsync's litmatch_array(): literal compare against the joined texts."""
    text = b"".join(texts)
    if where > 0:
        start = trailing_start(text, where)
        if start < 0:
            return False
        text = text[start:]
    return text == string
