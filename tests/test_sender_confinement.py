"""The sender opens a listed file beneath its root without following a symlinked
parent (rsync 3.5 sender_open_confined()): a directory swapped for a symlink
after the list was built does not lead the open out of the tree.  rsync's own
symlink-race-source test races this end to end; here the swap is done between
listing and opening, so the outcome is certain."""

from __future__ import annotations

import io
import os
from pathlib import Path

from netsync.flist import WalkOptions
from netsync.report import Reporter
from netsync.sender import Sender

SECRET = b"outside the tree\n"


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "loot").write_bytes(b"in the tree\n")
    (src / "top").write_bytes(b"top\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "loot").write_bytes(SECRET)
    return src, outside


def _sender(src: Path, **opts) -> tuple[Sender, io.StringIO]:
    err = io.StringIO()
    rep = Reporter(out=io.StringIO(), err=err)
    s = Sender(WalkOptions(recursive=True, links=True, **opts), rep)
    s.build_file_list([os.fsencode(src) + b"/"])
    return s, err


def _remove(s: Sender, name: bytes) -> None:
    s.remove_source(next(i for i, e in enumerate(s.flist.entries) if e.name == name))


def _entry(s: Sender, name: bytes):
    return next(e for e in s.flist.entries if e.name == name)


def _read(s: Sender, name: bytes) -> bytes | None:
    opened = s.open_entry(_entry(s, name))
    if opened is None:
        return None
    fd, _ = opened
    try:
        return os.read(fd, 1000)
    finally:
        os.close(fd)


def test_parent_swapped_for_symlink_is_not_followed(tmp_path: Path) -> None:
    src, outside = _setup(tmp_path)
    s, err = _sender(src)
    assert _read(s, b"top") == b"top\n"
    (src / "sub").rename(tmp_path / "real-sub")
    (src / "sub").symlink_to(outside)
    assert _read(s, b"sub/loot") is None
    assert "send_files failed to open" in err.getvalue()
    assert "Too many levels of symbolic links" in err.getvalue()
    assert s.io_error
    s.close_dirs()


def test_parent_held_from_the_previous_file_still_confines(tmp_path: Path) -> None:
    src, outside = _setup(tmp_path)
    (src / "sub" / "other").write_bytes(b"other\n")
    s, _ = _sender(src)
    assert _read(s, b"sub/loot") == b"in the tree\n"
    # The held fd is of the real dir: after a swap the file read is still the
    # tree's (now moved) one, never the outside one.
    (src / "sub").rename(tmp_path / "real-sub")
    (src / "sub").symlink_to(outside)
    assert _read(s, b"sub/other") == b"other\n"
    s.close_dirs()
    assert _read(s, b"sub/loot") is None


def test_copy_dirlinks_still_follows_listed_dir_symlinks(tmp_path: Path) -> None:
    src, outside = _setup(tmp_path)
    (src / "linked").symlink_to(outside)
    s, _ = _sender(src, copy_dirlinks=True)
    assert _read(s, b"linked/loot") == SECRET
    s.close_dirs()


def test_removal_parent_swapped_for_symlink_is_not_followed(tmp_path: Path) -> None:
    """--remove-source-files (sender.c secure_sender_parent_fd()): the file's dir is
    reached from the root a component at a time, so a dir swapped for a symlink to
    elsewhere after the list was built does not steer the unlink out of the tree."""
    src, outside = _setup(tmp_path)
    s, err = _sender(src)
    (src / "sub").rename(tmp_path / "real-sub")
    (src / "sub").symlink_to(outside)
    _remove(s, b"sub/loot")
    assert (outside / "loot").read_bytes() == SECRET
    assert "sender failed to secure-open-parent sub/loot: Too many levels of symbolic " \
           "links (40)" in err.getvalue()
    s.close()


def test_removal_of_a_file_already_gone_is_reported(tmp_path: Path) -> None:
    src, _ = _setup(tmp_path)
    s, err = _sender(src)
    (src / "sub" / "loot").unlink()
    (src / "top").unlink()
    _remove(s, b"sub/loot")
    _remove(s, b"top")
    assert s.rep.out.getvalue().splitlines() == [  # type: ignore[attr-defined]
        "sender file already removed: sub/loot", "sender file already removed: top"]
    assert err.getvalue() == ""
    s.close()


def _walk_swapping(src: Path, outside: Path, target: str, **opts
                   ) -> tuple[dict[bytes, list[bytes]], str]:
    """The list one dir at a time (the sender's walk); right after the top dir's
    listing saw ``sub`` as a directory, ``sub`` becomes a symlink to ``target``."""
    err = io.StringIO()
    s = Sender(WalkOptions(recursive=True, links=True, **opts),
               Reporter(out=io.StringIO(), err=err))
    got: dict[bytes, list[bytes]] = {}
    for d, children in s.iter_chunks([os.fsencode(src) + b"/"]):
        if d is not None:
            got[d.name] = sorted(e.name for e in children)
            if d.name == b".":
                (src / "sub").rename(src.parent / "real-sub")
                (src / "sub").symlink_to(target)
    return got, err.getvalue()


def test_dir_swapped_after_listing_is_not_enumerated(tmp_path: Path) -> None:
    """flist.c secure_opendir(): a dir listed as one and swapped for a symlink out
    of the tree before its own listing is not listed (its out-of-tree names and
    link targets would go to the receiver); rsync's sender-scan-dir-escape races
    this end to end."""
    src, outside = _setup(tmp_path)
    (outside / "leak").symlink_to("SECRET-TARGET")
    got, err = _walk_swapping(src, outside, str(outside))
    assert got[b"sub"] == []
    assert 'opendir "' in err and "sub\" failed: Too many levels of symbolic links" in err


def test_dir_swapped_for_an_in_tree_symlink_is_followed(tmp_path: Path) -> None:
    """A symlink that stays beneath the transfer root is followed, as rsync's
    RESOLVE_BENEATH open does: the listing is that dir's."""
    src, outside = _setup(tmp_path)
    (src / "other").mkdir()
    (src / "other" / "inside").write_bytes(b"x")
    got, err = _walk_swapping(src, outside, "other")
    assert got[b"sub"] == [b"sub/inside"]
    assert err == ""


def test_following_modes_list_by_path(tmp_path: Path) -> None:
    """-L (and -k, --copy-unsafe-links) follow symlinks on purpose: outside a
    module the operator's own tree is listed by its paths, as rsync does."""
    src, outside = _setup(tmp_path)
    got, _ = _walk_swapping(src, outside, str(outside), copy_links=True)
    assert got[b"sub"] == [b"sub/loot"]
