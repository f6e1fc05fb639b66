"""One typed Settings object, read by the web app, the CLI, Alembic and the workers.

Every field can be set from the environment with the ``RLHF_`` prefix (``RLHF_DATABASE_URL``,
``RLHF_SECRET_KEY`` ...) or from a ``.env`` file in the working directory.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

# Values that look like secrets but are not: refused everywhere except in the demo.
WEAK_SECRETS = {"", "secret", "changeme", "change-me", "password", "dev", "development", "test"}


class SettingsError(RuntimeError):
    """The configuration cannot be used; the message says which setting and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RLHF_", env_file=".env", extra="ignore")

    mode: Literal["production", "demo", "test"] = Field(
        "production", description="'demo' allows generated secrets; 'test' is used by the test suite"
    )
    database_url: str = Field(
        f"sqlite:///{REPO_ROOT / 'var' / 'rlhf.sqlite3'}",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    secret_key: str | None = Field(
        None, description="Signs session cookies and CSRF tokens; at least 32 characters"
    )
    artifact_dir: Path = Field(REPO_ROOT / "var" / "artifacts", description="Exports, datasets, checkpoints")
    session_max_age_s: int = Field(8 * 3600, description="A login lasts this long")
    cookie_secure: bool = Field(False, description="Send the session cookie over HTTPS only")
    login_max_failures: int = Field(5, description="Failed logins per username allowed in the window")
    login_max_failures_per_ip: int = Field(20, description="Failed logins per client address in the window")
    login_window_s: int = Field(15 * 60, description="Window of the login rate limit")
    lease_minutes: int = Field(30, description="How long a labeler holds a task before it returns to the pool")
    token_cache_s: float = Field(
        5.0, description="The labeling API re-checks an API token at most this often per server process "
        "(a revoked token stops working within this time); 0 checks on every request")
    max_prompt_chars: int = Field(20_000, description="Longest prompt accepted")
    max_demonstration_chars: int = Field(20_000, description="Longest demonstration accepted")
    max_comment_chars: int = Field(4_000, description="Longest comment accepted")
    host: str = "127.0.0.1"
    port: int = 8000

    @field_validator("database_url")
    @classmethod
    def _normalise_postgres_driver(cls, url: str) -> str:
        # Accept the URL forms people paste (postgres://, postgresql://) and use psycopg 3.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def require_secret(self) -> str:
        """The secret key, or a SettingsError explaining how to set one."""
        key = self.secret_key or ""
        if key.lower() in WEAK_SECRETS or len(key) < 32:
            raise SettingsError(
                "RLHF_SECRET_KEY must be set to a random string of at least 32 characters "
                "(for example: python -c 'import secrets; print(secrets.token_urlsafe(48))'). "
                "Only `rlhf demo` generates one for you."
            )
        return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
