"""Labeling tests run twice on PostgreSQL: once through the sync services (everything inside the
test's rolled-back transaction, like the rest of the suite) and once through the async hot path
(app/labeling/pg_functions.py) that serves "next task" and "submit ranking" in production. The hot
path reads and writes through its own connections, so its variant works on a committed database
of its own: the test's session commits before each request the test sends, and every table is
emptied after the test. On SQLite only the sync variant runs (there is no hot path there).

PostgreSQL-only tests (row locks, SKIP LOCKED) are skipped on SQLite.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import Base, make_engine
from app.main import create_app
from app.migrate import upgrade
from tests.conftest import AppClient
from tests.db_setup import backend, fresh_database


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres_only") and backend() != "postgres":
        pytest.skip("needs PostgreSQL (row locks under real concurrency, the async hot path); this run uses SQLite")


@pytest.fixture(params=["sync", "hot"] if backend() == "postgres" else ["sync"])
def labeling_path(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def hot_database_url(tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("hot"), "hot") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def hot_engine(hot_database_url):
    engine = make_engine(hot_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(labeling_path, database_url, request, tmp_path) -> Settings:
    url = request.getfixturevalue("hot_database_url") if labeling_path == "hot" else database_url
    return Settings(mode="test", database_url=url, secret_key="test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
                    artifact_dir=tmp_path / "artifacts")


@pytest.fixture
def db(labeling_path, request):
    if labeling_path == "sync":
        session = request.getfixturevalue("session_factory")()
        yield session
        session.close()
        return
    hot_engine = request.getfixturevalue("hot_engine")
    session = Session(bind=hot_engine, expire_on_commit=True, autoflush=True)
    try:
        yield session
    finally:
        session.rollback()
        session.close()
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with hot_engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def app(labeling_path, settings, request):
    if labeling_path == "sync":
        application = create_app(settings, engine=request.getfixturevalue("engine"), hot_path=False)
        application.state.sessionmaker = request.getfixturevalue("session_factory")
        return application
    return create_app(settings, engine=request.getfixturevalue("hot_engine"))


@pytest.fixture
def make_client(app, labeling_path, db):
    """Independent browsers against the app; on the hot path, what the test wrote is committed
    before each request."""
    clients: list[AppClient] = []

    def _make() -> AppClient:
        c = AppClient(app, raise_server_exceptions=False)
        if labeling_path == "hot":
            c.event_hooks["request"].append(lambda _request: db.commit())
        c.__enter__()
        if labeling_path == "hot":
            assert len(app.state.hot_pools) >= 1, "the app did not open its hot-path pool"
        clients.append(c)
        return c

    yield _make
    for c in clients:
        c.__exit__(None, None, None)
