"""rsync's filter rules (exclude.c): parsing, merge files, and matching.

The rule list mirrors rsync's structure: a global list whose entries are leaf
rules, per-directory merge rules (each owning a list of rules read from the
directories being walked, split into "local" rules of the current directory
and rules inherited from parents), and "-C" rules that stand for the global
CVS list.  ``check()`` walks a flattened, cached tuple of compiled tests, so
the per-file cost is one loop over precompiled closures.
"""

from __future__ import annotations

import errno as _errno
import os
import sys
from collections.abc import Callable, Iterable

from netsync import safepath
from netsync.errors import RERR_FILEIO, RERR_PROTOCOL, RERR_SYNTAX, RsyncError
from netsync.record import Record, factory
from netsync.wildmatch import compile_wild, has_wildcards, trailing_start

# rflags, same bits as rsync.h so debugging against rsync is easy.
WILD = 1 << 0
WILD2 = 1 << 1
WILD2_PREFIX = 1 << 2
WILD3_SUFFIX = 1 << 3
ABS_PATH = 1 << 4
INCLUDE = 1 << 5
DIRECTORY = 1 << 6
WORD_SPLIT = 1 << 7
NO_INHERIT = 1 << 8
NO_PREFIXES = 1 << 9
MERGE_FILE = 1 << 10
PERDIR_MERGE = 1 << 11
EXCLUDE_SELF = 1 << 12
FINISH_SETUP = 1 << 13
NEGATE = 1 << 14
CVS_IGNORE = 1 << 15
SENDER_SIDE = 1 << 16
RECEIVER_SIDE = 1 << 17
CLEAR_LIST = 1 << 18
PERISHABLE = 1 << 19
XATTR = 1 << 20
FROM_FILE = 1 << 21
SIDES = SENDER_SIDE | RECEIVER_SIDE
_FROM_CONTAINER = ABS_PATH | INCLUDE | DIRECTORY | NEGATE | PERISHABLE

# xflags
XFLG_FATAL_ERRORS = 1 << 0
XFLG_OLD_PREFIXES = 1 << 1
XFLG_ANCHORED2ABS = 1 << 2

MAX_MERGE_DEPTH = 32
_MAXPATHLEN = 4096
_BIGPATHBUFLEN = _MAXPATHLEN + 1024

# usage.c DEFAULT_CVSIGNORE (the list in rsync.1.md's --cvs-exclude section).
DEFAULT_CVSIGNORE = (
    b"RCS SCCS CVS CVS.adm RCSLOG cvslog.* tags TAGS .make.state .nse_depinfo"
    b" *~ #* .#* ,* _$* *$ *.old *.bak *.BAK *.orig *.rej .del-* *.a *.olb *.o"
    b" *.obj *.so *.exe *.Z *.elc *.ln core .svn/ .git/ .hg/ .bzr/"
)

_SPACE = frozenset(b" \t\n\v\f\r")

SENDER = "sender"
RECEIVER = "receiver"

# test(name, basename, is_dir) -> does the rule apply (negation included)?
RuleTest = Callable[[bytes, bytes, bool], bool]


# netsync --daemon: the module's own rules (rsync's daemon_filter_list), applied before
# and apart from any rule of the client.  ``daemon_excluded(path, is_dir)`` takes a path
# relative to the cwd (or absolute); ``daemon_merge_path(name)`` maps a merge file's
# name to the file to open, None when the module's rules hide it (read as absent).
daemon_excluded: Callable[[bytes, bool], bool] | None = None
daemon_merge_path: Callable[[bytes], bytes | None] | None = None
# --confine-root outside a daemon: a merge file that resolves (physically) outside
# this directory is read as absent, so its text cannot become rules (exclude.c).
merge_confine_root: bytes | None = None


def _inside(fd: int, root: bytes) -> bool:
    """Is the file open on ``fd`` at or below ``root``?  Judged by where the kernel
    opened it, so no symlink or ".." in the name can make an outside file look in."""
    if root == b"/":
        return True
    try:
        where = os.readlink(f"/proc/self/fd/{fd}".encode())
    except OSError:
        return False  # cannot tell: refuse rather than guess
    return where == root or where.startswith(root.rstrip(b"/") + b"/")


# Where rsync's rprintf() lines of the filter code go (set_output): FINFO traces
# ("[sender] hiding file X because of pattern P" at --debug=FILTER, i.e. -vv;
# add_rule's at FILTER2) and the few FERROR lines that do not stop the run.
_info: Callable[[str], None] | None = None
_errout: Callable[[str], None] | None = None
_debug_level = 0  # --debug=FILTER's level
_start_who = "client"  # who_am_i() while the options are parsed


def set_output(info: Callable[[str], None] | None, error: Callable[[str], None] | None,
               debug_level: int, am_server: bool = False) -> None:
    """Route the filter code's messages (a Reporter's info/warn_msg)."""
    global _info, _errout, _debug_level, _start_who
    _info, _errout, _debug_level = info, error, debug_level
    _start_who = "server" if am_server else "client"


class muted:  # noqa: N801 - used as a function: ``with muted():``
    """No messages while a second copy of the same rules is parsed (one role's list
    each, in one process: rsync parses the options once). A class rather than a
    contextlib generator: contextlib is ~0.5 ms of every start-up."""

    def __enter__(self) -> None:
        global _info, _errout
        self._saved = _info, _errout
        _info, _errout = None, lambda _msg: None

    def __exit__(self, *exc: object) -> None:
        global _info, _errout
        _info, _errout = self._saved


# A merge of stdin ("-"), read once: the early check of the rules (options.c reads
# them as it parses), the sender's list and the receiver's are all built from it.
_stdin_rules: bytes | None = None


def _error_line(msg: str) -> None:
    if _errout is not None:
        _errout(msg)
    else:
        sys.stderr.write(msg + "\n")


class FilterError(RsyncError):
    """A bad rule or unreadable filter file; ``code`` is rsync's exit code."""


class RuleList(Record):
    """A list of rules: ``local`` first, then ``inherited`` (from parent dirs)."""

    __eq__ = object.__eq__  # compared and hashed by identity
    __hash__ = object.__hash__

    local: list[Rule] = factory(list)
    inherited: list[Rule] = factory(list)
    debug_type: str = ""  # rsync's, for the traces: " [per-dir NAME]", " [global CVS]"


class Rule(Record):
    __eq__ = object.__eq__  # compared and hashed by identity
    __hash__ = object.__hash__

    rflags: int
    pattern: bytes
    slash_cnt: int = 0
    mergelist: RuleList | None = None
    test: RuleTest | None = None

    def prefix(self) -> bytes:
        """The rule's modifier prefix as rsync writes it (get_rule_prefix)."""
        return _rule_prefix(self.rflags, self.pattern, True, 32) or b""

    def __str__(self) -> str:  # debugging aid
        suffix = b"/" if self.rflags & DIRECTORY else b""
        return (self.prefix() + self.pattern + suffix).decode("utf-8", "surrogateescape")


def _rule_prefix(rflags: int, pat: bytes, for_xfer: bool, protocol: int,
                 am_sender: bool = True, delete_excluded: bool = False) -> bytes | None:
    legal_len = 1 if for_xfer and protocol < 29 else 15
    op = bytearray()
    if rflags & PERDIR_MERGE:
        if legal_len == 1:
            return None
        op += b":"
    elif rflags & INCLUDE:
        op += b"+"
    elif legal_len != 1 or (pat[:1] in (b"-", b"+") and pat[1:2] == b" "):
        op += b"-"
    else:
        legal_len = 0
    if rflags & ABS_PATH:
        op += b"/"
    if rflags & NEGATE:
        op += b"!"
    if rflags & CVS_IGNORE:
        op += b"C"
    else:
        if rflags & NO_INHERIT:
            op += b"n"
        if rflags & WORD_SPLIT:
            op += b"w"
        if rflags & NO_PREFIXES:
            op += b"+" if rflags & INCLUDE else b"-"
    if rflags & EXCLUDE_SELF:
        op += b"e"
    if rflags & XATTR:
        op += b"x"
    if rflags & SENDER_SIDE and (not for_xfer or protocol >= 29):
        op += b"s"
    if rflags & RECEIVER_SIDE and (not for_xfer or protocol >= 29 or (delete_excluded and am_sender)):
        op += b"r"
    if rflags & PERISHABLE:
        if not for_xfer or protocol >= 30:
            op += b"p"
        elif am_sender:
            return None
    if len(op) > legal_len:
        return None
    if legal_len:
        op += b" "
    return bytes(op)


def _show(text: bytes) -> str:
    return text.decode("utf-8", "surrogateescape")


class FilterList:
    """rsync's filter_list plus its per-directory merge machinery."""

    def __init__(self, *, delete_excluded: bool = False, from0: bool = False,
                 cvs_exclude: bool = False, root: bytes | None = None) -> None:
        self.delete_excluded = delete_excluded
        self.from0 = from0
        self.cvs_exclude = cvs_exclude
        self.rules = RuleList()
        self.cvs_rules: RuleList | None = None
        # mergelist_parents: the active per-dir merge rules, in activation order.
        self._mergelists: list[Rule | None] = []
        self._cvs_exclude_rules: list[Rule] = []  # ":C"/"-C" appended for -C
        # A pulling client (and a receiving server below protocol 29) adds -C's rules
        # after sending its list (exclude.c send_filter_list()), so send_rules() never
        # sets their elide: they act on the receiver whatever their side, and the
        # files they match stay protected even with --delete-excluded.
        self.cvs_after_send = False
        self._flat: dict[tuple[str, bool, bool], tuple[tuple[RuleTest, int], ...]] = {}
        # For the match trace: each flattened test's rule and its list's debug_type.
        self._flat_info: dict[tuple[str, bool, bool], dict[RuleTest, tuple[Rule, str]]] = {}
        self._who = "sender"  # who_am_i() of the role using the list (its last check)
        self._dirbuf = b""  # absolute dir (with trailing '/') for anchoring
        self._parent_dirscan = False
        self._merge_depth = 0
        # The file being parsed: (its name, or None when a file named it and the name
        # must not be shown; line, -1 for word-split; where it was named, if known).
        self._src: tuple[str | None, int, str | None] | None = None
        self._walk_cwd: bytes | None = None  # rsync's cwd once the walk is under way
        self.root: bytes | None = None
        self._abs_prefix = b""
        if root is not None:
            self.set_root(root)

    # ----------------------------------------------------------- set-up

    def set_root(self, root: bytes) -> None:
        """Absolute path of the transfer root (rsync's curr_dir).  Needed for
        '/'-modifier rules and for anchoring rules read from dir-merge files."""
        root = os.path.normpath(os.path.abspath(root))
        self.root = root
        # rule_matches() prepends curr_dir (without its leading '/') + "/".
        self._abs_prefix = root[1:] + b"/" if root != b"/" else b""
        if not self._dirbuf:
            self._dirbuf = root if root.endswith(b"/") else root + b"/"

    def add(self, rulestr: bytes | str, *, template: int = 0, xflags: int = 0) -> None:
        """Parse one rule string (like ``--filter``) into the global list."""
        if isinstance(rulestr, str):
            rulestr = os.fsencode(rulestr)
        self._parse_str(self.rules, rulestr, template, xflags)

    def add_file(self, fname: bytes | str, *, template: int = 0,
                 xflags: int = XFLG_FATAL_ERRORS | XFLG_OLD_PREFIXES) -> None:
        """Read rules from a file ('-' = stdin) like ``--exclude-from``."""
        if isinstance(fname, str):
            fname = os.fsencode(fname)
        self._parse_file(self.rules, fname, template, xflags, None)

    # ----------------------------------------------------------- parsing

    def _where(self) -> str:
        """exclude.c rule_src_where(): a file's text is never echoed, only located."""
        src = self._src
        if src is None or src[0] is None:
            named_at = src[2] if src is not None else None
            return f"a file named at {named_at}" if named_at else "a file read earlier"
        return src[0] if src[1] < 0 else f"{src[0]} line {src[1]}"

    def _err(self, msg: str, rulestr: bytes, code: int = RERR_SYNTAX) -> FilterError:
        text = f"<rule from {self._where()}>" if self._src is not None else _show(rulestr)
        # exclude.c filter_rule_err(): rprintf(FERROR, ...), no "rsync:"
        return FilterError(code, f"{msg}: {text}", bare=True)

    def _parse_rule_tok(self, s: bytes, pos: int, tflags: int,
                        xflags: int) -> tuple[int, int, int, int] | None:
        """Parse the rule starting at s[pos]: (rflags, pat_start, pat_len, next)."""
        n = len(s)
        if tflags & WORD_SPLIT:
            while pos < n and s[pos] in _SPACE:
                pos += 1
        if pos >= n:
            return None
        start = pos
        rflags = tflags & _FROM_CONTAINER
        if self._src is not None:
            rflags |= FROM_FILE

        def at(i: int) -> int:
            return s[i] if i < n else 0

        if tflags & NO_PREFIXES:
            if s[pos] == 0x21 and tflags & CVS_IGNORE:
                rflags |= CLEAR_LIST  # tentative
        elif xflags & XFLG_OLD_PREFIXES:
            if s[pos] == 0x2D and at(pos + 1) == 0x20:
                rflags &= ~INCLUDE
                pos += 2
            elif s[pos] == 0x2B and at(pos + 1) == 0x20:
                rflags |= INCLUDE
                pos += 2
            elif s[pos] == 0x21:
                rflags |= CLEAR_LIST  # tentative
        else:
            ch = 0
            side_prefix = False
            word = _LONG_NAMES.get(s[pos])
            if word is not None:
                name, short = word
                ch = 0
                if s.startswith(name, pos):
                    nxt = at(pos + len(name))
                    if nxt in _SPACE or nxt == 0x5F or nxt == 0:
                        pos += len(name) - 1
                        ch = short
                    elif nxt == 0x2C:
                        pos += len(name)
                        ch = short
            else:
                ch = s[pos]
                if at(pos + 1) == 0x2C:
                    pos += 1
            if ch == 0x3A:  # ':'
                rflags |= PERDIR_MERGE | FINISH_SETUP | MERGE_FILE
            elif ch == 0x2E:  # '.'
                rflags |= MERGE_FILE
            elif ch == 0x2B:  # '+'
                rflags |= INCLUDE
            elif ch == 0x2D:  # '-'
                pass
            elif ch in (0x53, 0x48):  # 'S', 'H'
                rflags |= SENDER_SIDE | (INCLUDE if ch == 0x53 else 0)
                side_prefix = True
            elif ch in (0x52, 0x50):  # 'R', 'P'
                rflags |= RECEIVER_SIDE | (INCLUDE if ch == 0x52 else 0)
                side_prefix = True
            elif ch == 0x21:  # '!'
                rflags |= CLEAR_LIST
            else:
                raise self._err("Unknown filter rule", s[start:])
            while ch != 0x21:
                pos += 1
                c = at(pos)
                if not c or c == 0x20 or c == 0x5F:
                    break
                if tflags & WORD_SPLIT and c in _SPACE:
                    pos -= 1
                    break
                ok = True
                if c in (0x2D, 0x2B):  # '-', '+'
                    if rflags & MERGE_FILE and not rflags & NO_PREFIXES:
                        rflags |= NO_PREFIXES | (INCLUDE if c == 0x2B else 0)
                    else:
                        ok = False
                elif c == 0x2F:
                    rflags |= ABS_PATH
                elif c == 0x21:
                    if rflags & MERGE_FILE:
                        ok = False
                    rflags |= NEGATE
                elif c == 0x43:  # 'C'
                    if rflags & NO_PREFIXES or side_prefix:
                        ok = False
                    rflags |= NO_PREFIXES | WORD_SPLIT | NO_INHERIT | CVS_IGNORE
                elif c in (0x65, 0x6E, 0x77):  # 'e', 'n', 'w'
                    if not rflags & MERGE_FILE:
                        ok = False
                    rflags |= {0x65: EXCLUDE_SELF, 0x6E: NO_INHERIT, 0x77: WORD_SPLIT}[c]
                elif c == 0x70:
                    rflags |= PERISHABLE
                elif c in (0x72, 0x73):  # 'r', 's'
                    if side_prefix:
                        ok = False
                    rflags |= RECEIVER_SIDE if c == 0x72 else SENDER_SIDE
                elif c == 0x78:
                    rflags |= XATTR
                else:
                    ok = False
                if not ok:
                    if self._src is not None:
                        raise self._err("invalid modifier in filter rule", s[start:])
                    raise FilterError(  # (rprintf FERROR, as filter_rule_err())
                        RERR_SYNTAX,
                        f"invalid modifier '{chr(c)}' at position {pos - start} in filter rule: "
                        f"{_show(s[start:])}", bare=True,
                    )
            if pos < n:
                pos += 1
        if tflags & SIDES:
            if rflags & SIDES:
                raise self._err("specified-side merge file contains specified-side filter",
                                s[start:])
            rflags |= tflags & SIDES
        if tflags & WORD_SPLIT:
            end = pos
            while end < n and s[end] not in _SPACE:
                end += 1
            plen = end - pos
        else:
            plen = n - pos
        if rflags & CLEAR_LIST:
            if not tflags & NO_PREFIXES and not xflags & XFLG_OLD_PREFIXES and plen:
                raise self._err("'!' rule has trailing characters", s[start:])
            if plen > 1:
                rflags &= ~CLEAR_LIST
        elif not plen and not rflags & CVS_IGNORE:
            raise self._err("unexpected end of filter rule", s[start:])
        if self.delete_excluded and not rflags & (SIDES | MERGE_FILE | PERDIR_MERGE):
            rflags |= SENDER_SIDE
        return rflags, pos, plen, pos + plen

    def _parse_str(self, listp: RuleList, s: bytes, tflags: int, xflags: int) -> None:
        pos = 0
        while True:
            tok = self._parse_rule_tok(s, pos, tflags, xflags)
            if tok is None:
                break
            rflags, pstart, plen, pos = tok
            pat = s[pstart:pstart + plen]
            if plen >= _MAXPATHLEN:
                _error_line(f"discarding over-long filter: {self._rule_text(0, pat)}")
                continue
            if rflags & CLEAR_LIST:
                self._clear(listp)
                continue
            if rflags & MERGE_FILE:
                if not pat:
                    pat = b".cvsignore"
                if rflags & EXCLUDE_SELF:
                    name = pat[pat.rfind(b"/") + 1:]
                    self._add_rule(listp, name, rflags & FROM_FILE, 0)
                    rflags &= ~EXCLUDE_SELF
                if rflags & PERDIR_MERGE:
                    if self._parent_dirscan:
                        full = self._merge_name(pat, rflags)
                        if full is not None:
                            self._add_rule(listp, full, rflags, 0)
                        continue
                else:
                    # A one-time merge: its rules go in place, parsed now.
                    fname = self._merge_name(pat, rflags)
                    if fname is not None:
                        self._parse_file(listp, fname, rflags, XFLG_FATAL_ERRORS, None)
                    continue
            self._add_rule(listp, pat, rflags, xflags)
            if rflags & CVS_IGNORE and not rflags & MERGE_FILE:
                self._get_cvs_excludes(rflags)

    def _merge_name(self, name: bytes, rflags: int, at_cwd: bool = True) -> bytes | None:
        """parse_merge_name(): names with a slash (or all names during the
        parent-dir scan) are made absolute relative to the current dir.  None (with
        rsync's error line; the rule is dropped) when that is too long a path."""
        if not self._parent_dirscan and not name.startswith(b"/") and b"/" not in name:
            # relative to rsync's cwd: the transfer root once the walk has begun
            if self._walk_cwd is None or not at_cwd:
                return name
            return os.path.join(self._walk_cwd, name)
        if name.startswith(b"/"):
            return os.path.normpath(name)
        clean = os.path.normpath(name)
        if len(self._dirbuf) + len(clean) >= _MAXPATHLEN:
            _error_line(f"merge-file name overflows: {self._rule_text(rflags, clean)}")
            return None
        return os.path.normpath(self._dirbuf + name)

    def _clear(self, listp: RuleList) -> None:
        self._free(listp.local)
        listp.local = []
        listp.inherited = []

    def _free(self, rules: Iterable[Rule]) -> None:
        """Rules dropped from a list: retire any per-dir merge lists they own."""
        for r in rules:
            if r.rflags & PERDIR_MERGE and r.mergelist is not None:
                for i, ex in enumerate(self._mergelists):
                    if ex is r:
                        self._mergelists[i] = None
                        break
                while self._mergelists and self._mergelists[-1] is None:
                    self._mergelists.pop()
                r.mergelist = None
        self._flat.clear()

    def _rule_text(self, rflags: int, text: bytes) -> str:
        """exclude.c rule_text(): a rule's own text, unless it came out of a file."""
        if self._src is not None or rflags & FROM_FILE:
            return f"<rule from {self._where()}>"
        return _show(text)

    def _add_rule(self, listp: RuleList, pat: bytes, rflags: int, xflags: int) -> None:
        trailing = pat[-1:] in (b" ", b"\t")
        if _info is not None and (_debug_level >= 2 or _debug_level >= 1 and trailing):
            # add_rule()'s trace: what it says about a rule read from a file (its
            # prefix, the CAUTION) is dropped with the rule's text.
            from_file = self._src is not None or rflags & FROM_FILE
            prefix = "" if from_file else _show(_rule_prefix(rflags, pat, False, 32) or b"")
            caution = " -- CAUTION: trailing whitespace!" if trailing and not from_file else ""
            who = self._who if self._walk_cwd is not None else _start_who
            _info(f"[{who}] add_rule({prefix}{self._rule_text(rflags, pat)})"
                  f"{listp.debug_type}{caution}")
        if len(pat) > 1 and pat.endswith(b"/"):
            pat = pat[:-1]
            rflags |= DIRECTORY
        if (not rflags & (ABS_PATH | MERGE_FILE) and xflags & XFLG_ANCHORED2ABS
                and pat.startswith(b"/")):
            # Anchored rule from a dir-merge file: anchored at that dir.
            prefix = self._dirbuf[:-1]
            root = self.root
            rel: bytes | None = None
            if root is not None and not any(c in prefix for c in (b"*", b"?", b"[", b"\\")):
                rootdir = root if root.endswith(b"/") else root + b"/"
                if prefix + b"/" == rootdir:
                    rel = b""
                elif prefix.startswith(rootdir):
                    rel = b"/" + prefix[len(rootdir):]
            if rel is not None:
                # Same result as rsync's absolute pattern, without building
                # the absolute name on every match.
                pat = rel + pat
            else:
                rflags |= ABS_PATH
                pat = prefix + pat
        slash_cnt = pat.count(b"/")
        if has_wildcards(pat):
            rflags |= WILD
            idx = pat.find(b"**")
            if idx >= 0:
                rflags |= WILD2
                if idx == 0:
                    rflags |= WILD2_PREFIX
                if pat.endswith(b"***"):
                    rflags |= WILD3_SUFFIX
        rule = Rule(rflags, pat, slash_cnt)
        if rflags & PERDIR_MERGE:
            base = pat[pat.rfind(b"/") + 1:]
            for ex in self._mergelists:
                if ex is not None and ex.pattern[ex.pattern.rfind(b"/") + 1:] == base:
                    return
            rule.mergelist = RuleList(debug_type=f" [per-dir {self._rule_text(rflags, base)}]")
            self._mergelists.append(rule)
        elif not rflags & CVS_IGNORE:
            rule.test = self._compile(rule)
        listp.local.append(rule)
        self._flat.clear()

    def _get_cvs_excludes(self, rflags: int) -> None:
        if self.cvs_rules is not None:
            return
        self.cvs_rules = RuleList(debug_type=" [global CVS]")
        save_src, self._src = self._src, None
        try:
            # Protocol >= 30: the default list is perishable.
            self._parse_str(self.cvs_rules, DEFAULT_CVSIGNORE,
                            rflags | PERISHABLE | NO_PREFIXES, 0)
            home = os.environb.get(b"HOME")
            if home:
                self._parse_file(self.cvs_rules, os.path.join(home, b".cvsignore"), rflags, 0,
                                 None)
            env = os.environb.get(b"CVSIGNORE")
            if env:
                self._parse_str(self.cvs_rules, env, rflags, 0)
        finally:
            self._src = save_src

    def _read_file(self, fname: bytes, tflags: int, xflags: int) -> bytes | None:
        if daemon_merge_path is not None:
            mapped = daemon_merge_path(fname)
            if mapped is None:
                return None  # hidden by the daemon's rules: as if absent, even if fatal
            fname = mapped
        if fname == b"-":
            global _stdin_rules
            if _stdin_rules is None:
                _stdin_rules = sys.stdin.buffer.read()
            return _stdin_rules
        try:
            # An operator path: a symlink owned by another user is not followed.
            with open(safepath.owner_open(fname, os.O_RDONLY), "rb") as f:
                if merge_confine_root is not None and daemon_merge_path is None \
                        and not _inside(f.fileno(), merge_confine_root):
                    raise OSError(_errno.ELOOP, os.strerror(_errno.ELOOP))
                return f.read()
        except OSError as e:
            if xflags & XFLG_FATAL_ERRORS:
                kind = "in" if tflags & INCLUDE else "ex"
                if self._src is not None or tflags & FROM_FILE:
                    raise FilterError(RERR_FILEIO, f"failed to open {kind}clude file "
                                      f"{self._err_name()}") from e
                err = e.errno or _errno.EIO
                raise FilterError(
                    RERR_FILEIO,
                    f"failed to open {kind}clude file {_show(fname)}: {os.strerror(err)} ({err})",
                ) from e
            return None

    def _err_name(self) -> str:
        return f"<rule from {self._where()}>"

    def _parse_file(self, listp: RuleList, fname: bytes, tflags: int, xflags: int,
                    _unused: None) -> None:
        if not fname:
            return
        named_by_file = self._src is not None or bool(tflags & FROM_FILE)
        if self._merge_depth >= MAX_MERGE_DEPTH:
            if xflags & XFLG_FATAL_ERRORS:
                shown = self._err_name() if named_by_file else _show(fname)
                raise FilterError(RERR_FILEIO, "merge-file include depth limit "
                                  f"({MAX_MERGE_DEPTH}) exceeded at {shown}")
            return
        data = self._read_file(fname, tflags, xflags)
        if data is None:
            return
        self._merge_depth += 1
        save_src = self._src
        # A file named by another file's text is located by where it was named (if
        # that is being parsed now), never by its own name.
        shown_name = None if named_by_file else _show(fname)
        named_at = self._where() if self._src is not None else None
        word_split = bool(tflags & WORD_SPLIT)
        try:
            for lineno, item in enumerate(self._split_lines(data, word_split), 1):
                if not item or len(item) >= _BIGPATHBUFLEN:
                    continue
                if not word_split and item[:1] in (b";", b"#"):
                    continue
                self._src = (shown_name, -1 if word_split else lineno, named_at)
                self._parse_str(listp, item, tflags, xflags)
        finally:
            self._src = save_src
            self._merge_depth -= 1

    def _split_lines(self, data: bytes, word_split: bool) -> list[bytes]:
        if self.from0:
            lines = data.split(b"\0")
        else:
            # CR, LF and CRLF each end a line.
            lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        if word_split:
            return [w for line in lines for w in line.split()]
        return lines

    # ----------------------------------------------------------- matching

    def _compile(self, rule: Rule) -> RuleTest:
        """Build rule_matches() for one rule as a closure."""
        rflags = rule.rflags
        negate = bool(rflags & NEGATE)
        hit = not negate
        miss = negate
        pattern = rule.pattern
        dir_only = bool(rflags & DIRECTORY)
        wild = bool(rflags & WILD)
        wild2 = bool(rflags & WILD2)
        wild3 = bool(rflags & WILD3_SUFFIX)
        anchored = pattern.startswith(b"/")
        if anchored:
            pattern = pattern[1:]
        wp = compile_wild(pattern) if wild else None

        if not rule.slash_cnt and not wild2:
            # Match only the last path component.
            if wp is not None:
                full = wp.match

                def test_base_wild(name: bytes, base: bytes, is_dir: bool) -> bool:
                    if dir_only and not is_dir:
                        return miss
                    return hit if full(base) else miss

                return test_base_wild

            def test_base_lit(name: bytes, base: bytes, is_dir: bool) -> bool:
                if dir_only and not is_dir:
                    return miss
                return hit if base == pattern else miss

            return test_base_lit

        abs_path = bool(rflags & ABS_PATH)
        prefix2 = bool(rflags & WILD2_PREFIX)
        if not anchored and rule.slash_cnt and not wild2:
            where = rule.slash_cnt + 1
        elif not anchored and not prefix2 and wild2:
            where = -1
        else:
            where = 0
        fl = self

        def build(name: bytes, is_dir: bool) -> bytes:
            if abs_path:
                text = fl._abs_prefix + name
            elif prefix2:
                text = b"/" + name  # lets "**/" match at the start
            else:
                text = name
            if is_dir and wild3:
                text += b"/"  # lets "dir/***" match dir itself
            return text

        if wp is not None:
            match_where = wp.match_where

            def test_wild(name: bytes, base: bytes, is_dir: bool) -> bool:
                if dir_only and not is_dir:
                    return miss
                return hit if match_where(build(name, is_dir), where) else miss

            return test_wild

        if abs_path or prefix2:
            def test_litarray(name: bytes, base: bytes, is_dir: bool) -> bool:
                if dir_only and not is_dir:
                    return miss
                text = build(name, is_dir)
                if where > 0:
                    start = trailing_start(text, where)
                    if start < 0:
                        return miss
                    text = text[start:]
                return hit if text == pattern else miss

            return test_litarray

        if anchored:
            def test_anchored(name: bytes, base: bytes, is_dir: bool) -> bool:
                if dir_only and not is_dir:
                    return miss
                return hit if name == pattern else miss

            return test_anchored

        tail = b"/" + pattern

        def test_suffix(name: bytes, base: bytes, is_dir: bool) -> bool:
            if dir_only and not is_dir:
                return miss
            return hit if name == pattern or name.endswith(tail) else miss

        return test_suffix

    def _rule_sides(self, r: Rule) -> int:
        sides = r.rflags & SIDES
        if (not sides and self.delete_excluded
                and (not r.rflags & PERDIR_MERGE or r.rflags & NO_PREFIXES)):
            # send_rules(): with --delete-excluded these act on the sender only.
            sides = SENDER_SIDE
        return sides

    def _flatten(self, side: str, ignore_perishable: bool, xattr: bool
                 ) -> tuple[tuple[tuple[RuleTest, int], ...], dict[RuleTest, tuple[Rule, str]]]:
        other = RECEIVER_SIDE if side == SENDER else SENDER_SIDE
        out: list[tuple[RuleTest, int]] = []
        info: dict[RuleTest, tuple[Rule, str]] = {}

        kept = self._cvs_exclude_rules if self.cvs_after_send else ()

        def walk(rules: Iterable[Rule], debug_type: str, keep: bool = False) -> None:
            for r in rules:
                rf = r.rflags
                if ignore_perishable and rf & PERISHABLE:
                    continue
                # (sides act only through send_rules()' elide: an unsent rule acts on both)
                here = keep or any(r is c for c in kept)
                if not here and self._rule_sides(r) == other:
                    continue
                if rf & PERDIR_MERGE:
                    if r.mergelist is not None:
                        walk(r.mergelist.local, r.mergelist.debug_type, here)
                        walk(r.mergelist.inherited, r.mergelist.debug_type, here)
                    continue
                if rf & CVS_IGNORE:
                    if self.cvs_rules is not None:
                        walk(self.cvs_rules.local, self.cvs_rules.debug_type, here)
                    continue
                if bool(rf & XATTR) != xattr or r.test is None:
                    continue
                out.append((r.test, 1 if rf & INCLUDE else -1))
                info[r.test] = (r, debug_type)

        walk(self.rules.local, "")
        return tuple(out), info

    def check(self, path: bytes, is_dir: bool, side: str = SENDER, *,
              ignore_perishable: bool = False, xattr: bool = False) -> int:
        """1 if an include rule matched ``path``, -1 if an exclude did, 0 if none.

        ``path`` is relative to the transfer root.  ``side`` is 'sender'
        (hide/show and plain rules: what goes in the file list) or 'receiver'
        (protect/risk and plain rules: what --delete may remove).
        ``ignore_perishable`` is rsync's mode while deleting the contents of a
        directory that is itself being deleted.
        """
        key = (side, ignore_perishable, xattr)
        flat = self._flat.get(key)
        if flat is None:
            flat, self._flat_info[key] = self._flatten(side, ignore_perishable, xattr)
            self._flat[key] = flat
        if not flat:
            return 0
        name = path[1:] if path[:1] == b"/" else path
        if not name:
            return 0
        base = name[name.rfind(b"/") + 1:]
        for test, result in flat:
            if test(name, base, is_dir):
                if _info is not None and _debug_level >= 1:
                    self._report_match(path, is_dir, side, xattr, *self._flat_info[key][test])
                return result
        return 0

    def _report_match(self, name: bytes, is_dir: bool, side: str, xattr: bool, rule: Rule,
                      debug_type: str) -> None:
        """exclude.c report_filter_result(): which rule decided, and for whom.  A
        rule read from a file is not quoted (its text is that file's contents)."""
        who = "sender" if side == SENDER else "generator"
        self._who = who
        include = bool(rule.rflags & INCLUDE)
        if who == "generator":
            action = "risking" if include else "protecting"
        else:
            action = "showing" if include else "hiding"
        what = "xattr" if xattr else "directory" if is_dir else "file"
        if rule.rflags & FROM_FILE:
            pattern = f"<rule from {self._where()}>"
        else:
            pattern = _show(rule.pattern) + ("/" if rule.rflags & DIRECTORY else "")
        assert _info is not None
        _info(f"[{who}] {action} {what} {_show(name)} because of pattern {pattern}{debug_type}")

    def excluded(self, path: bytes, is_dir: bool, side: str = SENDER, *,
                 ignore_perishable: bool = False) -> bool:
        return self.check(path, is_dir, side, ignore_perishable=ignore_perishable) < 0

    @property
    def has_perdir_merges(self) -> bool:
        return bool(self._mergelists)

    # ----------------------------------------------------------- walking

    def enter_dir(self, dir_path: bytes, abs_dir: bytes) -> object:
        """push_local_filters(): read the dir-merge files present in this
        directory.  Returns a token for ``leave_dir``."""
        abs_dir = os.path.normpath(os.path.abspath(abs_dir))
        if self.root is None:
            if dir_path in (b".", b""):
                self.set_root(abs_dir)
            else:
                rel = os.path.normpath(dir_path)
                if abs_dir.endswith(b"/" + rel):
                    self.set_root(abs_dir[: -len(rel) - 1] or b"/")
                else:
                    self.set_root(abs_dir)
        self._dirbuf = abs_dir if abs_dir.endswith(b"/") else abs_dir + b"/"
        self._walk_cwd = self.root
        if not self._mergelists:
            return None
        saved = [(ex, ex.mergelist.local, ex.mergelist.inherited)
                 for ex in self._mergelists if ex is not None and ex.mergelist is not None]
        i = 0
        # The list can grow while we read files (a dir-merge file may name
        # another one); rsync processes those in this same directory.
        while i < len(self._mergelists):
            ex = self._mergelists[i]
            i += 1
            if ex is None or ex.mergelist is None:
                continue
            lp = ex.mergelist
            lp.inherited = [] if ex.rflags & NO_INHERIT else lp.local + lp.inherited
            lp.local = []
            if ex.rflags & FINISH_SETUP:
                ex.rflags &= ~FINISH_SETUP
                self._setup_merge_file(ex, lp)
                self._dirbuf = abs_dir if abs_dir.endswith(b"/") else abs_dir + b"/"
            self._parse_file(lp, self._dirbuf + ex.pattern, ex.rflags, XFLG_ANCHORED2ABS, None)
        self._flat.clear()
        return saved

    def leave_dir(self, state: object) -> None:
        """pop_local_filters(): drop the rules read by the matching enter_dir."""
        for ex in reversed(list(self._mergelists)):
            if ex is not None and ex.mergelist is not None:
                local = ex.mergelist.local
                ex.mergelist.local = []
                self._free(local)
        if state:
            for ex, local, inherited in state:  # type: ignore[attr-defined]
                if ex.mergelist is not None:
                    ex.mergelist.local = local
                    ex.mergelist.inherited = inherited
        self._flat.clear()

    def _setup_merge_file(self, ex: Rule, lp: RuleList) -> None:
        """A dir-merge name with a path that is a parent of the transfer dir:
        read the file in every dir from there down to the transfer dir's parent."""
        x = self._merge_name(ex.pattern, ex.rflags, at_cwd=False)
        if x is None or not x.startswith(b"/"):
            return
        slash = x.rfind(b"/")
        ex.pattern = x[slash + 1:]
        d = x[:slash] or b"/"
        buf = os.path.normpath(d)
        if buf != b"/":
            buf += b"/"
        dirbuf = self._dirbuf
        if not dirbuf.startswith(buf):
            return
        # Each proper prefix dir of dirbuf from buf on, e.g. "/", "/tmp/".
        pos = len(buf)
        self._parent_dirscan = True
        try:
            while pos < len(dirbuf):
                self._dirbuf = dirbuf[:pos]
                self._parse_file(lp, dirbuf[:pos] + ex.pattern, ex.rflags, XFLG_ANCHORED2ABS,
                                 None)
                if ex.rflags & NO_INHERIT:
                    self._free(lp.local)
                    lp.local = []
                lp.inherited = lp.local + lp.inherited
                lp.local = []
                pos = dirbuf.index(b"/", pos) + 1
        finally:
            self._parent_dirscan = False
            self._dirbuf = dirbuf

    # ----------------------------------------------------------- the wire

    def to_wire_rules(self, am_sender: bool = True, protocol: int = 31) -> list[bytes]:
        """The rule strings the client sends (send_filter_list/send_rules),
        without the length framing or the terminating 0."""
        out: list[bytes] = []
        for r in self._sendable(self.rules.local, am_sender, protocol):
            if r.rflags & CVS_IGNORE and not r.rflags & MERGE_FILE:
                if am_sender or protocol < 29:
                    if self.cvs_rules is not None:
                        for c in self._sendable(self.cvs_rules.local, am_sender, protocol):
                            out.append(self._wire_one(c, am_sender, protocol))
                    continue
            out.append(self._wire_one(r, am_sender, protocol))
        return [w for w in out if w]

    def _sendable(self, rules: Iterable[Rule], am_sender: bool, protocol: int) -> Iterable[Rule]:
        for r in rules:
            if any(r is c for c in self._cvs_exclude_rules) and (
                    not am_sender or (protocol < 29 and r.rflags & PERDIR_MERGE)):
                continue  # added after sending: -C itself goes as an option
            sides = self._rule_sides(r)
            # LOCAL_RULE rules (our own side only) are not sent.
            if sides == (SENDER_SIDE if am_sender else RECEIVER_SIDE):
                continue
            yield r

    def _wire_one(self, r: Rule, am_sender: bool, protocol: int) -> bytes:
        p = _rule_prefix(r.rflags, r.pattern, True, protocol, am_sender, self.delete_excluded)
        if p is None:
            raise FilterError(RERR_PROTOCOL, "filter rules are too modern for remote rsync.",
                              bare=True)  # (rprintf FERROR)
        return p + r.pattern + (b"/" if r.rflags & DIRECTORY else b"")

    @classmethod
    def from_wire_rules(cls, rules: Iterable[bytes], protocol: int = 31, *,
                        cvs_exclude: bool = False, am_sender: bool = True,
                        delete_excluded: bool = False, from0: bool = False) -> FilterList:
        """recv_filter_list(): the server's list from the client's rules."""
        fl = cls(delete_excluded=delete_excluded, from0=from0, cvs_exclude=cvs_exclude)
        xflags = 0 if protocol >= 29 else XFLG_OLD_PREFIXES
        for line in rules:
            fl._parse_str(fl.rules, line, 0, xflags)
        if cvs_exclude:
            if am_sender or protocol < 29:
                fl._append_cvs(b":C")
            if am_sender:
                fl._append_cvs(b"-C")
            fl.cvs_after_send = not am_sender  # (no send_rules() follows on a server)
        return fl

    def _append_cvs(self, rulestr: bytes) -> None:
        before = len(self.rules.local)
        self._parse_str(self.rules, rulestr, 0, 0)
        self._cvs_exclude_rules.extend(self.rules.local[before:])


_LONG_NAMES: dict[int, tuple[bytes, int]] = {
    ord("c"): (b"clear", 0x21),
    ord("d"): (b"dir-merge", 0x3A),
    ord("e"): (b"exclude", 0x2D),
    ord("h"): (b"hide", 0x48),
    ord("i"): (b"include", 0x2B),
    ord("m"): (b"merge", 0x2E),
    ord("p"): (b"protect", 0x50),
    ord("r"): (b"risk", 0x52),
    ord("s"): (b"show", 0x53),
}


def receiver_dir_excluder(rfilters: FilterList | None) -> Callable[[bytes], bool] | None:
    """flist.c is_excluded(name, 1, ALL_FILTERS) on the receiving side (for -m's
    pruning): whether a dir is excluded by the receiver's own rules or a daemon
    module's; None when there are neither."""
    daemon = daemon_excluded
    if rfilters is None and daemon is None:
        return None

    def excluded(name: bytes) -> bool:
        return (daemon is not None and daemon(name, True)) or (
            rfilters is not None and rfilters.excluded(name, True, RECEIVER))

    return excluded


def build_filter_list(filter_args: list[tuple[str, str | bytes]], cvs_exclude: bool = False,
                      delete_excluded: bool = False, from0: bool = False,
                      root: bytes | None = None) -> FilterList:
    """The command-line filter options, in order, as rsync's options.c builds them.

    ``filter_args`` holds (kind, value) with kind one of 'filter', 'exclude',
    'include', 'exclude-from', 'include-from' or 'F' (value ignored).
    """
    fl = FilterList(delete_excluded=delete_excluded, from0=from0, cvs_exclude=cvs_exclude,
                    root=root)
    f_count = 0
    for kind, value in filter_args:
        v = os.fsencode(value) if isinstance(value, str) else value
        if kind == "filter":
            fl._parse_str(fl.rules, v, 0, 0)
        elif kind == "exclude":
            fl._parse_str(fl.rules, v, 0, XFLG_OLD_PREFIXES)
        elif kind == "include":
            fl._parse_str(fl.rules, v, INCLUDE, XFLG_OLD_PREFIXES)
        elif kind in ("exclude-from", "include-from"):
            fl._parse_file(fl.rules, v, INCLUDE if kind == "include-from" else 0,
                           XFLG_FATAL_ERRORS | XFLG_OLD_PREFIXES, None)
        elif kind == "F":
            f_count += 1
            if f_count == 1:
                fl._parse_str(fl.rules, b": /.rsync-filter", 0, 0)
            elif f_count == 2:
                fl._parse_str(fl.rules, b"- .rsync-filter", 0, 0)
        else:
            raise ValueError(f"unknown filter option kind {kind!r}")
    if cvs_exclude:
        # send_filter_list()/recv_filter_list(): -C puts ":C" then "-C" last.
        fl._append_cvs(b":C")
        fl._append_cvs(b"-C")
    return fl
