"""The async PostgreSQL pool behind the labeling API's hot path (next task, submit ranking).

Most of the app runs sync SQLAlchemy sessions on FastAPI's thread pool, which is simple and
fast enough for pages and admin work. The two requests every labeler sends all day are served
instead by a few prepared statements on an async psycopg pool: no thread-pool hop, one round
trip per statement, waiting for a connection without holding a thread (benchmarks/README.md,
"Labeling load", has the numbers that motivated this).

One pool per server process, opened by the app's lifespan when the database is PostgreSQL.
On SQLite (the demo) there is no pool and the same endpoints run the sync services instead.
"""

from __future__ import annotations

import asyncio

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

# Connections per server process. PostgreSQL serves them from the same 2 cores as the app; more
# connections than that only queue inside the database instead of in the pool.
POOL_SIZE = 8


def conninfo_for(database_url: str) -> str:
    """A libpq connection string for a ``postgresql+psycopg://`` SQLAlchemy URL."""
    url = make_url(database_url)
    parts = {
        "host": url.host, "port": url.port, "user": url.username, "password": url.password,
        "dbname": url.database, **{k: v for k, v in url.query.items() if isinstance(v, str)},
    }
    return " ".join(f"{k}='{str(v).replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'"
                    for k, v in parts.items() if v is not None)


async def _configure(conn: AsyncConnection) -> None:
    # Statements are prepared on their first use on each connection (they are few and hot).
    conn.prepare_threshold = 0


def make_pool(database_url: str, size: int = POOL_SIZE) -> AsyncConnectionPool:
    """An unopened pool of autocommit connections: a single statement is its own transaction,
    and a request that needs several opens ``conn.transaction()`` explicitly."""
    return AsyncConnectionPool(
        conninfo_for(database_url), min_size=size, max_size=size, open=False, name="rlhf-hot-path",
        kwargs={"autocommit": True, "row_factory": tuple_row}, configure=_configure, timeout=30,
    )


class CallBatcher:
    """Merges concurrent calls of one database function into one statement.

    A call waits only while another batch of the same function is on its way: when fewer than
    ``max_flushes`` batches are running, a call goes out at once (alone, on a quiet server);
    under load, what queued meanwhile goes out together, up to ``max_batch`` calls in one
    statement and one transaction. That saves a round trip, a commit and most of the per-call
    work on both sides. If a batch fails as a whole, its calls are retried one by one, so that
    each gets its own answer or error.

    One batch in flight per function and process is the measured optimum on 2 cores
    (benchmarks/README.md, "Labeling load": 1 -> 1,762 rankings/s, 2 -> 1,539, 4 -> 1,399).

    ``run_many(conn, items) -> results`` (one per item, in order) and ``run_one(conn, item) ->
    result`` do the database work.
    """

    def __init__(self, pool: AsyncConnectionPool, run_many, run_one, *, max_batch: int = 32, max_flushes: int = 1):
        self.pool, self.run_many, self.run_one = pool, run_many, run_one
        self.max_batch, self.max_flushes = max_batch, max_flushes
        self.pending: list[tuple[object, asyncio.Future]] = []
        self.flushing = 0
        self.tasks: set[asyncio.Task] = set()
        self.calls = self.batches = self.largest_batch = 0  # what happened so far, for tests and tuning

    async def call(self, item):
        future = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.flushing < self.max_flushes:
            self.flushing += 1
            task = asyncio.create_task(self._flush())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await future

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
                self.calls += len(batch)
                self.batches += 1
                self.largest_batch = max(self.largest_batch, len(batch))
                try:
                    async with self.pool.connection() as conn:
                        results = await self.run_many(conn, [item for item, _ in batch])
                    outcomes = [(future, result, None) for (_, future), result in zip(batch, results, strict=True)]
                except Exception:  # noqa: BLE001 - each call gets its own answer below
                    outcomes = []
                    for item, future in batch:
                        try:
                            async with self.pool.connection() as conn:
                                outcomes.append((future, await self.run_one(conn, item), None))
                        except Exception as exc:  # noqa: BLE001 - handed to the caller
                            outcomes.append((future, None, exc))
                for future, result, error in outcomes:
                    if not future.done():  # the caller may have gone (client disconnected)
                        if error is None:
                            future.set_result(result)
                        else:
                            future.set_exception(error)
        finally:
            self.flushing -= 1


class HotDatabase:
    """One server process's pool and the batchers of the labeling hot path."""

    def __init__(self, pool: AsyncConnectionPool):
        from app.labeling import pg_functions

        self.pool = pool
        self.leases = CallBatcher(pool, pg_functions.lease_many, pg_functions.lease_one)
        self.submits = CallBatcher(pool, pg_functions.submit_many, pg_functions.submit_one)

    async def close(self) -> None:
        await self.pool.close()


def hot_database(request) -> HotDatabase | None:
    """This event loop's hot-path database, or None (SQLite, tests inside a rolled-back transaction)."""
    pools = request.app.state.hot_pools
    return pools.get(asyncio.get_running_loop()) if pools else None


def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")
