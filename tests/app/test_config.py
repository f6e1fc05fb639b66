"""Settings: secrets are never defaulted outside the demo."""

from __future__ import annotations

import pytest

from app.config import Settings, SettingsError
from app.main import create_app


@pytest.mark.parametrize("secret", [None, "", "changeme", "secret", "short-but-random-9f8e"])
def test_app_refuses_missing_or_weak_secret(secret, database_url):
    with pytest.raises(SettingsError, match="RLHF_SECRET_KEY must be set"):
        create_app(Settings(secret_key=secret, database_url=database_url))


def test_postgres_urls_are_normalised_to_psycopg3():
    assert Settings(database_url="postgres://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
