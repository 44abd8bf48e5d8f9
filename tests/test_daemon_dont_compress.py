"""rsyncd.conf ``dont compress``: a bare ``*`` makes a module's deflate stream (zlib,
zlibx) stored, not compressed, for the whole session, as rsync 3.5's token.c does;
zstd and lz4 ignore the list.  Each case pulls the same compressible file with the same
stock rsync client from ``rsync --daemon`` and ``netsync --daemon`` (same config) and
compares what ``--stats`` says the client received."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_daemon_filters import Daemon, client, daemon_pair

MODULES = """
[store]
path = {root}/data
dont compress = *
[plain]
path = {root}/data
"""


def _prepare(root: Path) -> None:
    (root / "data").mkdir()
    (root / "data" / "text").write_bytes(b"all work and no play makes jack a dull boy\n" * 50_000)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    yield from daemon_pair(tmp_path_factory.mktemp("dontcompress"), MODULES, _prepare)


def _received(d: Daemon, module: str, choice: str, tmp_path: Path) -> int:
    dst = tmp_path / f"{d.name}-{module}-{choice}"
    r = client(["-a", "-z", f"--compress-choice={choice}", "--stats", d.url(f"{module}/"),
                f"{dst}/"], tmp_path)
    assert r.returncode == 0, r.describe()
    assert (dst / "text").read_bytes() == (d.root / "data" / "text").read_bytes()
    m = re.search(rb"Total bytes received: ([\d,]+)", r.stdout)
    assert m, r.stdout
    return int(m.group(1).replace(b",", b""))


@pytest.mark.parametrize("choice", ["zlib", "zlibx", "zstd", "lz4"])
def test_dont_compress_star(pair: tuple[Daemon, Daemon], tmp_path: Path, choice: str) -> None:
    ref, ours = pair
    size = (ref.root / "data" / "text").stat().st_size
    for module in ("store", "plain"):
        want = _received(ref, module, choice, tmp_path)
        got = _received(ours, module, choice, tmp_path)
        # rsync itself: only "store" with a deflate codec sends the file uncompressed,
        # so the comparison below can tell a stored stream from a compressed one.
        assert (want > size) == (module == "store" and choice in ("zlib", "zlibx")), want
        # The same stream, up to a few file-list bytes (netsync declines inc-recursion).
        assert abs(got - want) <= max(64, want // 100), (module, choice, want, got)
