"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import treecompare
import trees


@pytest.fixture(scope="session")
def sync_cmd() -> list[str]:
    """argv prefix of the program under test ($NETSYNC_TEST_CMD or python -m netsync)."""
    return treecompare.program_under_test()


@pytest.fixture(scope="session")
def pristine_workdir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """pristine_workdir(tree, dest, seed=1) -> a cached, never-modified work dir
    (src/, outside/, dst/ from tests/trees.py); copy it with trees.copy_tree before use."""
    cache: dict[tuple[str, str, int], Path] = {}

    def get(tree: str, dest: str, seed: int = 1) -> Path:
        key = (tree, dest, seed)
        if key not in cache:
            work = tmp_path_factory.mktemp(f"pristine-{tree}-{dest}-{seed}") / "w"
            trees.make_workdir(work, tree, dest, seed)
            cache[key] = work
        return cache[key]

    return get
