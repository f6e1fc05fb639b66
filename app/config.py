"""One typed Settings object, read by the web app, the CLI, Alembic and the workers.

Every field can be set from the environment with the ``RLHF_`` prefix (``RLHF_DATABASE_URL``,
``RLHF_SECRET_KEY`` ...) or from a ``.env`` file in the working directory.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
import ipaddress
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    login_max_failures: int = Field(
        5, description="Failed sign-ins per username (from any address) in the window, after which only "
        "browsers and addresses the user signed in from before may try (SECURITY.md, 'Sign-in limits')")
    login_max_failures_per_ip: int = Field(
        20, description="Failed sign-ins from one client address in the window, after which only users "
        "who signed in from that browser or address before may try")
    login_window_s: int = Field(15 * 60, description="Window of the sign-in limits")
    login_free_attempts: int = Field(
        3, description="Failed sign-ins per (username, address) before each further try waits 1, 2, 4 ... seconds")
    login_backoff_max_s: int = Field(300, description="Longest wait between tries of one (username, address)")
    login_trust_days: int = Field(
        30, description="A browser (device cookie) or address that signed in stays trusted this long "
        "(addresses: at most 90 days, how long ended sessions are kept)")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Reverse proxies whose X-Forwarded-For is believed: IPs or CIDRs, "
        "comma-separated (e.g. 127.0.0.1,10.0.0.0/8); empty: the header is ignored")
    lease_minutes: int = Field(30, description="How long a labeler holds a task before it returns to the pool")
    token_cache_s: float = Field(
        5.0, description="The labeling API re-checks an API token at most this often per server process "
        "(a revoked token stops working within this time); 0 checks on every request")
    max_prompt_chars: int = Field(20_000, description="Longest prompt accepted")
    max_demonstration_chars: int = Field(20_000, description="Longest demonstration accepted")
    max_comment_chars: int = Field(4_000, description="Longest comment accepted")
    max_body_bytes: int = Field(
        1024 * 1024, description="Largest request body of a JSON call or a form (413 beyond, before it is read)")
    max_json_import_bytes: int = Field(
        32 * 1024 * 1024, description="Largest body of the JSON import calls (/api/prompts/import, /api/completions/import)")
    max_upload_bytes: int = Field(
        256 * 1024 * 1024, description="Largest file upload (imports, corpora); larger files: the rlhf CLI")
    max_decompressed_bytes: int = Field(
        512 * 1024 * 1024, description="Largest decompressed size of a .gz upload or import file")
    host: str = "127.0.0.1"
    port: int = 8000

    # Workers: how a claimed run's trainer is started (docs/cluster.md). `rlhf worker --launcher` overrides.
    launcher: Literal["local", "slurm"] = Field(
        "local", description="'local': torchrun on the worker's host (single-node runs); 'slurm': the worker submits "
        "each run as a Slurm job (srun + torchrun on every node) and watches it; the artifact folder must be shared")
    slurm_partition: str | None = Field(None, description="sbatch --partition for the runs' jobs (default: the cluster's)")
    slurm_account: str | None = Field(None, description="sbatch --account to charge the runs' jobs to")
    slurm_time: str | None = Field(None, description="sbatch --time, e.g. 2-00:00:00 (a job that runs out of time is "
                                   "requeued by the worker and resumes from its last checkpoint)")
    slurm_request_gpus: bool = Field(
        True, description="Ask Slurm for the run's GPUs (--gpus-per-node); false on CPU-only clusters, where "
        "gpus_per_node only sets the processes per node")
    slurm_cpus_per_task: int | None = Field(None, ge=1, description="sbatch --cpus-per-task (one task per node runs torchrun)")
    slurm_sbatch_args: str = Field("", description="More sbatch options for every job, as on a command line "
                                   "(e.g. --qos=high --constraint=a100)")
    slurm_setup: str = Field("", description="Shell lines the job script runs before srun (module load ..., "
                             "source /shared/venv/bin/activate)")
    slurm_python: str | None = Field(None, description="The Python on the compute nodes that has the trainers installed "
                                     "(default: this worker's, which a shared filesystem makes the same path)")
    slurm_rdzv_port: int = Field(29500, ge=1024, le=64535, description="torchrun's c10d rendezvous port on a job's first "
                                 "node is this plus the job id modulo 1000 (jobs sharing a node do not collide)")

    @field_validator("database_url")
    @classmethod
    def _normalise_postgres_driver(cls, url: str) -> str:
        # Accept the URL forms people paste (postgres://, postgresql://) and use psycopg 3.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_trusted_proxies(cls, value):
        if isinstance(value, str):  # from the environment: comma-separated (a JSON list works too)
            text = value.strip()
            if text.startswith("["):
                import json

                value = json.loads(text)
            else:
                value = [part for part in text.split(",") if part.strip()]
        out = []
        for item in value or []:
            try:
                out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
            except ValueError:
                raise ValueError(f"RLHF_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR network") from None
        return out

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def require_secret(self) -> str:
        """The secret key, or a SettingsError explaining how to set one."""
        from app.security import SECRET_MIN_BITS, secret_strength_bits

        key = self.secret_key or ""
        how = ("Generate one with: python -c \"import secrets; print(secrets.token_urlsafe(48))\" "
               "and put it in RLHF_SECRET_KEY (or .env). Only `rlhf demo` generates one for you.")
        if key.lower() in WEAK_SECRETS or len(key) < 32:
            raise SettingsError(f"RLHF_SECRET_KEY must be set to a random string of at least 32 characters. {how}")
        bits = secret_strength_bits(key)
        if bits < SECRET_MIN_BITS:
            raise SettingsError(
                f"RLHF_SECRET_KEY must be set to a random string: this one is too predictable "
                f"(repeats or runs like 'abc...'; about {bits:.0f} bits of guessing, at least "
                f"{SECRET_MIN_BITS} needed). {how}"
            )
        return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
