"""Test fixtures shared by the whole suite.

Each test run gets a fresh database (PostgreSQL by default, SQLite with RLHF_TEST_DB=sqlite),
migrated with Alembic. Each test runs inside a transaction that is rolled back afterwards:
the app's own commits become savepoint releases on that connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import make_engine
from app.main import create_app
from app.migrate import upgrade
from tests.db_setup import backend, fresh_database

TEST_SECRET = "test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"


def pytest_report_header(config):
    return f"rlhf-lab database backend: {backend()}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    with fresh_database(tmp_path_factory.mktemp("db"), "main") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return Settings(
        mode="test",
        database_url=database_url,
        secret_key=TEST_SECRET,
        artifact_dir=tmp_path / "artifacts",
    )


@pytest.fixture
def session_factory(engine) -> Iterator[sessionmaker[Session]]:
    """A sessionmaker whose sessions all live inside one outer transaction, rolled back at the end."""
    connection = engine.connect()
    outer = connection.begin()
    factory = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False, autoflush=True
    )
    try:
        yield factory
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture
def db(session_factory) -> Iterator[Session]:
    session = session_factory()
    yield session
    session.close()


class AppClient(TestClient):
    """A TestClient that knows how to sign in and send CSRF tokens like a browser would."""

    def csrf(self) -> str:
        """The CSRF token of this browser session (signed in: /login redirects home; same meta tag)."""
        page = self.get("/login")
        match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert match, f"no CSRF token on {page.request.url}"
        return match.group(1)

    def login(self, username: str, password: str):
        token = self.csrf()
        response = self.post(
            "/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        return response

    def post_form(self, url: str, data: dict | None = None, **kwargs):
        return self.post(url, data={**(data or {}), "csrf_token": self.csrf()}, follow_redirects=False, **kwargs)


@pytest.fixture
def app(settings, engine, session_factory):
    application = create_app(settings, engine=engine, hot_path=False)  # everything inside this test's transaction
    application.state.sessionmaker = session_factory
    return application


@pytest.fixture
def client(app) -> Iterator[AppClient]:
    with AppClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def make_client(app):
    """Several independent browsers (cookie jars) against the same app."""
    clients: list[AppClient] = []

    def _make() -> AppClient:
        c = AppClient(app, raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield _make
    for c in clients:
        c.__exit__(None, None, None)
