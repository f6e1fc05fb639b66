from __future__ import annotations

import pytest

from app.db import make_engine, make_sessionmaker
from app.migrate import upgrade


@pytest.fixture
def fresh_db(tmp_path):
    """A brand-new, migrated SQLite database (the 'fresh database' of the round-trip tests)."""
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    session = make_sessionmaker(engine)()
    yield session
    session.close()
    engine.dispose()
