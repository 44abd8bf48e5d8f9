"""wildmatch against rsync's own table, and the fast regex path against a
literal transcription of rsync's algorithm."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsync.wildmatch import (
    compile_wild,
    litmatch_array,
    trailing_start,
    wildmatch,
    wildmatch_array,
    wildmatch_array_reference,
    wildmatch_reference,
)

TABLE = Path(__file__).parent / "data" / "wildtest.txt"


def _parse_table() -> list[tuple[int, bool, bytes, bytes]]:
    """Parse rows the way rsync's wildtest.c does: two flags, then two
    optionally-quoted, whitespace-separated strings."""
    rows = []
    for lineno, raw in enumerate(TABLE.read_bytes().split(b"\n"), 1):
        if not raw or raw.startswith(b"#"):
            continue
        s = raw
        flags = []
        for _ in range(2):
            assert s[:1] in (b"0", b"1") and s[1:2] in (b" ", b"\t"), raw
            flags.append(s[:1] == b"1")
            s = s[2:].lstrip(b" \t")
        strings = []
        for _ in range(2):
            if s[:1] in (b"'", b'"', b"`"):
                end = s.index(s[:1], 1)
                strings.append(s[1:end])
                s = s[end + 1 :]
            else:
                end = 0
                while end < len(s) and s[end] not in b" \t":
                    end += 1
                strings.append(s[:end])
                s = s[end:]
            s = s.lstrip(b" \t")
        rows.append((lineno, flags[0], strings[0], strings[1]))
    return rows


ROWS = _parse_table()


def test_table_is_complete() -> None:
    assert len(ROWS) == 144


@pytest.mark.parametrize(("lineno", "expected", "text", "pattern"), ROWS, ids=[str(r[0]) for r in ROWS])
def test_rsync_table(lineno: int, expected: bool, text: bytes, pattern: bytes) -> None:
    assert wildmatch(pattern, text) is expected
    assert wildmatch_reference(pattern, text) is expected


@pytest.mark.parametrize(("lineno", "expected", "text", "pattern"), ROWS, ids=[str(r[0]) for r in ROWS])
def test_rsync_table_exploded(lineno: int, expected: bool, text: bytes, pattern: bytes) -> None:
    # wildtest -x: the text split into pieces must match as if joined.
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)] or [b""]
    assert wildmatch_array(pattern, [b"", *pieces, b""], 0) is expected


def test_trailing_elements() -> None:
    assert trailing_start(b"a/b/c", 1) == 4
    assert trailing_start(b"a/b/c", 2) == 2
    assert trailing_start(b"a/b/c", 3) == 0
    assert trailing_start(b"a/b/c", 4) == -1
    assert litmatch_array(b"b/c", [b"a/", b"b/c"], 2)
    assert not litmatch_array(b"b/c", [b"a/b/c"], 3)


def test_where_modes() -> None:
    # where < 0: the pattern may start at the beginning or after any slash.
    assert wildmatch_array(b"foo/**/bar", [b"x/foo/y/bar"], -1)
    assert not wildmatch_array(b"foo/**/bar", [b"x/foo/y/bar"], 0)
    # A class can never match '/', so a slash counted in it leaves too few elements.
    assert not wildmatch_array(b"foo[/x]bar", [b"fooxbar"], 2)
    assert wildmatch_array(b"a/*", [b"x/a/b"], 2)


def test_non_ascii_bytes() -> None:
    name = b"caf\xe9-\xff\xfe"
    assert wildmatch(b"caf?-*", name)
    assert wildmatch(b"caf[\xe0-\xef]-\xff*", name)
    assert not wildmatch(b"caf[[:alpha:]]-*", name)  # C-locale classes
    assert wildmatch(b"caf[![:alpha:]]-*", name)


_ALPHABET = b"ab/*?[]!^-\\:"
_pat = st.lists(
    st.sampled_from([*(bytes([c]) for c in _ALPHABET), b"**", b"[[:alpha:]]", b"[a-c]", b"[!/]"]),
    max_size=8,
).map(b"".join)
_text = st.lists(st.sampled_from([b"a", b"b", b"/", b"*", b"[", b"-", b"\\", b"A"]), max_size=10).map(
    b"".join
)


@settings(max_examples=3000, deadline=None)
@given(_pat, _text, st.sampled_from([-1, 0, 1, 2, 3]))
def test_regex_equals_reference(pattern: bytes, text: bytes, where: int) -> None:
    fast = compile_wild(pattern).match_where(text, where)
    assert fast == wildmatch_array_reference(pattern, [text], where)
