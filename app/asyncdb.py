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


def pool_for(request):
    """This event loop's pool, or None (SQLite, tests inside a rolled-back transaction)."""
    pools = request.app.state.hot_pools
    return pools.get(asyncio.get_running_loop()) if pools else None


def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")
