"""A module's own ``filter``/``include``/``exclude`` rules: rsync's daemon_filter_list.

rsync_module() parses them in this order, each with XFLG_ABS_IF_SLASH |
XFLG_DIR2WILD3: ``filter`` (word split), ``include from``, ``include`` (word
split), ``exclude from``, ``exclude`` (word split); the last four take the old
"+ "/"- " prefixes.  Consequences kept here:

- a rule with a slash matches the module-relative path (ABS_IF_SLASH), so every
  check is made on the name relative to the module's top, whatever the cwd;
- an exclude of a directory ("dir/") becomes "dir/***": its whole subtree;
- the list is parsed before the client's options, so with am_sender still 0
  the sender-only rules (hide/show) are dropped, and side modifiers count for
  nothing (check_filter() ignores them);
- "exclude from"/"include from" are the operator's files: read from anywhere,
  a missing one refuses the connection (XFLG_FATAL_ERRORS).

The checks apply whatever the client asked: the engine consults
``netsync.filters.daemon_excluded`` beside its own filter list, and a merge
file named by the client is looked up in the module and hidden when the rules
exclude it (exclude.c parse_filter_file()).
"""

from __future__ import annotations

import os

from netsync import filters as F

__all__ = ["DaemonFilter"]


class DaemonFilter:
    def __init__(self, module_root: bytes) -> None:
        self.root = os.path.normpath(os.path.abspath(module_root))
        self.fl = F.FilterList()

    # -- building ------------------------------------------------------------
    def load(self, mod) -> None:
        """Parse the module's parameters; raises FilterError (e.g. an unreadable file)."""
        old = F.XFLG_OLD_PREFIXES
        steps = ((mod.filter, F.WORD_SPLIT, 0, False),
                 (mod.include_from, F.INCLUDE, old | F.XFLG_FATAL_ERRORS, True),
                 (mod.include, F.INCLUDE | F.WORD_SPLIT, old, False),
                 (mod.exclude_from, 0, old | F.XFLG_FATAL_ERRORS, True),
                 (mod.exclude, F.WORD_SPLIT, old, False))
        for value, template, xflags, is_file in steps:
            if not value:
                continue
            if is_file:
                self.fl.add_file(value, template=template, xflags=xflags)
            else:
                self.fl.add(value, template=template, xflags=xflags)
        self._finish()

    def _finish(self) -> None:
        kept = []
        for r in self.fl.rules.local:
            rf = r.rflags
            if rf & (F.PERDIR_MERGE | F.CVS_IGNORE) or r.test is None:
                continue  # no per-dir machinery on this list
            if rf & F.SIDES == F.SENDER_SIDE:
                continue  # add_rule() drops it: am_sender is still 0 here
            rf &= ~F.SIDES
            if rf & F.DIRECTORY and not rf & F.INCLUDE:
                # XFLG_DIR2WILD3: an excluded dir takes its subtree along.
                rf &= ~F.DIRECTORY
                r.pattern += b"/***"
                r.slash_cnt += 1
                rf |= F.WILD | F.WILD2 | F.WILD3_SUFFIX
                if r.pattern.startswith(b"**"):
                    rf |= F.WILD2_PREFIX
            r.rflags = rf
            r.test = self.fl._compile(r)
            kept.append(r)
        self.fl.rules.local = kept
        self.fl._flat.clear()

    @property
    def active(self) -> bool:
        return bool(self.fl.rules.local)

    # -- checking --------------------------------------------------------------
    def relative(self, path: bytes) -> bytes | None:
        """``path`` (from the cwd, or absolute) relative to the module's top; None if outside."""
        full = os.path.normpath(os.path.join(os.getcwd().encode(), path))
        root = self.root
        if full == root:
            return b"."
        if root == b"/":
            return full[1:]
        if full.startswith(root + b"/"):
            return full[len(root) + 1:]
        return None

    def excluded_rel(self, rel: bytes, is_dir: bool) -> bool:
        if rel in (b".", b""):
            return False
        return self.fl.check(rel, is_dir, F.SENDER) < 0

    def excluded(self, path: bytes, is_dir: bool) -> bool:
        rel = self.relative(path)
        return rel is not None and self.excluded_rel(rel, is_dir)

    def path_excluded(self, path: bytes, is_dir: bool, check_self: bool = True) -> bool:
        """flist.c path_is_daemon_excluded(): each parent dir, then the path itself."""
        rel = self.relative(path)
        if rel is None or rel == b".":
            return False
        parts = rel.split(b"/")
        for i in range(1, len(parts)):
            if self.excluded_rel(b"/".join(parts[:i]), True):
                return True
        return check_self and self.excluded_rel(rel, is_dir)

    def merge_path(self, name: bytes) -> bytes | None:
        """parse_merge_name() + parse_filter_file()'s daemon check for a merge file."""
        if name.startswith(b"/"):
            full = os.path.normpath(name)
            if self.root != b"/" and full != self.root \
                    and not full.startswith(self.root + b"/"):
                # sanitize_paths: an absolute name means the module's top.
                full = os.path.normpath(self.root + full)
        else:
            full = os.path.normpath(os.path.join(os.getcwd().encode(), name))
        rel = self.relative(full)
        if rel is None:
            return None
        if self.excluded_rel(rel, False):
            return None
        return full

    def install(self) -> None:
        """Make the engine apply these rules (this process serves one module)."""
        F.daemon_merge_path = self.merge_path
        if self.active:
            F.daemon_excluded = self.excluded
