"""Labeling tests: skip PostgreSQL-only tests (row locks, SKIP LOCKED) on SQLite."""

from __future__ import annotations

import pytest

from tests.db_setup import backend


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres_only") and backend() != "postgres":
        pytest.skip("needs PostgreSQL: row locks with SKIP LOCKED under real concurrency (RLHF_TEST_DB=sqlite)")
