"""Settings: secrets are never defaulted outside the demo, and a guessable one never starts the app."""

from __future__ import annotations

import secrets

import pytest

from app.config import Settings, SettingsError
from app.main import create_app
from app.security import SECRET_MIN_BITS, secret_strength_bits
from tests.conftest import TEST_SECRET

GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'


@pytest.mark.parametrize("secret", [None, "", "changeme", "secret", "short-but-random-9f8e"])
def test_app_refuses_missing_or_weak_secret(secret, database_url):
    with pytest.raises(SettingsError, match="RLHF_SECRET_KEY must be set") as raised:
        create_app(Settings(secret_key=secret, database_url=database_url))
    assert GENERATE in str(raised.value)


@pytest.mark.parametrize("secret", ["a" * 32, "password" * 4, "changeme" * 4, "secret" * 6,
                                    "abcdefghijklmnopqrstuvwxyz012345", "0123456789" * 4, "Ab1!" * 10])
def test_long_but_predictable_secrets_are_refused_with_how_to_make_one(secret, database_url):
    with pytest.raises(SettingsError, match="too predictable") as raised:
        create_app(Settings(secret_key=secret, database_url=database_url))
    message = str(raised.value)
    assert GENERATE in message and "RLHF_SECRET_KEY" in message


def test_random_secrets_of_every_usual_kind_start_the_app(database_url):
    for key in [secrets.token_urlsafe(48), secrets.token_urlsafe(24), secrets.token_hex(32), TEST_SECRET]:
        assert create_app(Settings(secret_key=key, database_url=database_url)).state.secret_key == key
    # the weakest usual kind, 128 random bits as 32 hex digits, clears the bar every time
    assert min(secret_strength_bits(secrets.token_hex(16)) for _ in range(500)) >= SECRET_MIN_BITS


def test_trusted_proxies_from_the_environment(monkeypatch):
    monkeypatch.setenv("RLHF_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
    assert Settings().trusted_proxies == ["127.0.0.1/32", "10.0.0.0/8"]
    monkeypatch.setenv("RLHF_TRUSTED_PROXIES", '["::1"]')
    assert Settings().trusted_proxies == ["::1/128"]
    monkeypatch.delenv("RLHF_TRUSTED_PROXIES")
    assert Settings().trusted_proxies == []  # the default: X-Forwarded-For is never believed
    monkeypatch.setenv("RLHF_TRUSTED_PROXIES", "proxy.local")
    with pytest.raises(ValueError, match="proxy.local.*not an IP address or CIDR"):
        Settings()


def test_postgres_urls_are_normalised_to_psycopg3():
    assert Settings(database_url="postgres://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
