#!/usr/bin/env python3
"""Prototype of a generator fast path for unchanged regular files, to measure its gain.

    python bench/profile_fastpath.py [--off] -- -a src/ dst/

Wraps Generator.recv_generator: when nothing but plain -a-style options are in play
and the destination is a regular file whose size, mtime (seconds), mode and (as -o/-g
ask) owner/group already match, it returns right after the lstat, skipping
_gen_file/_quick_check_ok/set_file_attrs/itemize. Anything else goes the normal way.
This is a measuring aid, not the engine's code: it is what the recommendation in
bench/README.md would save. --off runs the same shim without the fast path (the
fd-leak stop-gap of profile_shim.py is on in both).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import profile_shim  # noqa: E402  (puts src/ on sys.path)


def _patch_fastpath() -> None:
    from netsync.generator import Generator

    orig = Generator.recv_generator
    S_ISREG = stat.S_ISREG
    lstat = os.lstat

    def recv_generator(self, ndx, e, hl_retry=False):
        g, a = self.g, self.a
        plain = not (g.checksum or g.size_only or g.ignore_times or g.update or g.existing
                     or g.ignore_existing or g.max_size is not None or g.min_size is not None
                     or g.alt_dest or g.remove_source_files or g.dry_run or a.atimes
                     or a.modify_window or a.uid_map or a.gid_map or a.chown_uid is not None
                     or a.chown_gid is not None or not a.perms)
        if (plain and S_ISREG(e.mode) and e.hlink is None and self.skip_dir is None
                and self.dry_missing is None and not self.rep.should_send_itemize(0, None)):
            try:
                st = lstat(self.dpath(e.name))
            except OSError:
                return orig(self, ndx, e, hl_retry)
            if (st.st_mode == e.mode and st.st_size == e.size
                    and (not a.times or st.st_mtime_ns // 1_000_000_000 == e.mtime)
                    and (not (a.owner and a.am_root) or st.st_uid == e.uid)
                    and (not a.group or st.st_gid == e.gid)):
                return None
        return orig(self, ndx, e, hl_retry)

    Generator.recv_generator = recv_generator  # type: ignore[method-assign]


def main() -> int:
    args = sys.argv[1:]
    off = args[:1] == ["--off"]
    if off:
        args = args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    profile_shim._patch()
    if not off:
        _patch_fastpath()
    from netsync.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
