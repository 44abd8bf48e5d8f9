"""Shared pytest fixtures."""

from __future__ import annotations

import os
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Under CI (CI=true) a skipped test is a failed one: every test here needs only what
    .ci/run installs, so a skip means a real peer or a privilege was missing."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI", "").lower() == "true" \
            and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped under CI=true (a skip counts as a failure): {reason}"
