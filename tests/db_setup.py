"""Fresh throw-away databases for a test run: PostgreSQL (default) or SQLite.

Select with RLHF_TEST_DB=postgres|sqlite. PostgreSQL is reached at RLHF_TEST_PG_URL
(default postgresql+psycopg://postgres@127.0.0.1:5432/postgres); a new database with a random
name is created for the run and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get("RLHF_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def backend() -> str:
    value = os.environ.get("RLHF_TEST_DB", "postgres")
    if value not in ("postgres", "sqlite"):
        raise RuntimeError(f"RLHF_TEST_DB must be 'postgres' or 'sqlite', not {value!r}")
    return value


def _pg_admin_conninfo() -> str:
    url = make_url(ADMIN_URL)
    return f"host={url.host or '127.0.0.1'} port={url.port or 5432} user={url.username or 'postgres'} dbname={url.database or 'postgres'}"


@contextmanager
def fresh_database(tmp_dir: Path, label: str = "run") -> Iterator[str]:
    """Yield the SQLAlchemy URL of a brand-new, empty database; drop it afterwards."""
    if backend() == "sqlite":
        path = tmp_dir / f"rlhf_{label}_{uuid.uuid4().hex[:8]}.sqlite3"
        yield f"sqlite:///{path}"
        return
    name = f"rlhf_test_{label}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_pg_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
