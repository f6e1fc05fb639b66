"""The async pool's call batcher, against a real PostgreSQL: concurrent calls share one
statement, every caller gets its own answer, and a failing batch falls back to one call each."""

from __future__ import annotations

import asyncio

import pytest

from app.asyncdb import CallBatcher, conninfo_for, make_pool
from tests.db_setup import ADMIN_URL

pytestmark = pytest.mark.postgres_only


async def run_many(conn, items):
    """Squares of the items in one statement; 1/0 fails the whole statement."""
    cur = await conn.execute("SELECT x * x * (x / x) FROM unnest(CAST(%s AS integer[])) WITH ORDINALITY AS t(x, n) ORDER BY n",
                             (items,))
    return [row[0] for row in await cur.fetchall()]


async def run_one(conn, item):
    return (await (await conn.execute("SELECT CAST(%s AS integer) * %s * (%s / %s)", (item, item, item, item))).fetchone())[0]


def call_all(items: list[int]):
    """Call the batcher once per item, all at once, on a fresh pool: (answers or errors, batcher)."""
    async def scenario():
        pool = make_pool(ADMIN_URL, size=2)
        await pool.open(wait=True)
        try:
            batcher = CallBatcher(pool, run_many, run_one)
            return await asyncio.gather(*(batcher.call(n) for n in items), return_exceptions=True), batcher
        finally:
            await pool.close()

    return asyncio.run(scenario())


def test_concurrent_calls_share_statements_and_each_gets_its_answer():
    results, batcher = call_all(list(range(1, 101)))
    assert results == [n * n for n in range(1, 101)]
    assert batcher.calls == 100 and batcher.largest_batch > 1 and batcher.batches < 100


def test_a_failing_batch_is_retried_call_by_call():
    (three, zero, five, seven), _ = call_all([3, 0, 5, 7])
    assert (three, five, seven) == (9, 25, 49)
    assert "division by zero" in str(zero)


def test_conninfo_keeps_socket_directories_and_passwords():
    info = conninfo_for("postgresql+psycopg://bob:s3cr%27t@/rlhf?host=/var/run/postgresql")
    assert "host='/var/run/postgresql'" in info and "dbname='rlhf'" in info and "password='s3cr\\'t'" in info
