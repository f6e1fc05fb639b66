"""The `rlhf` command. Each domain adds its own sub-commands (see app/*/cli.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from app.config import REPO_ROOT, SettingsError, get_settings
from app.errors import AppError

cli = typer.Typer(
    help="rlhf-lab: human-feedback labeling and the InstructGPT training loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")

# Functions (settings, session_factory) -> list of lines to print, run by `rlhf demo` after the
# users are seeded. Domains register their demo content here.
DEMO_SEEDERS: list = []


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@db_cli.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from app.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {settings.database_url.split('@')[-1]} is at revision {revision}")


@db_cli.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. 'base' or '-1'")) -> None:
    """Revert migrations down to REVISION."""
    from app.migrate import downgrade

    downgrade(get_settings().database_url, revision)
    typer.echo(f"downgraded to {revision}")


@cli.command()
def serve(
    host: str = typer.Option(None, help="Address to listen on (default from RLHF_HOST)"),
    port: int = typer.Option(None, help="Port (default from RLHF_PORT)"),
    workers: int = typer.Option(None, help="Server processes (default: one per CPU core)"),
) -> None:
    """Serve the web application (settings from RLHF_* environment variables)."""
    import uvicorn

    settings = get_settings()
    try:
        settings.require_secret()
    except SettingsError as exc:
        fail(str(exc))
    uvicorn.run(
        "app.main:create_app", factory=True, host=host or settings.host, port=port or settings.port,
        workers=workers or os.cpu_count() or 1, log_level="warning", access_log=False,
        proxy_headers=False,  # X-Forwarded-For: only from RLHF_TRUSTED_PROXIES, read by the app (app.deps.client_ip)
    )


@cli.command()
def demo(
    port: int = typer.Option(8000, help="Port to serve on"),
    database: Path = typer.Option(REPO_ROOT / "var" / "demo.sqlite3", help="SQLite file for the demo"),
    no_serve: bool = typer.Option(False, "--no-serve", help="Set up and print the accounts, but do not serve (nor start a worker)"),
    no_worker: bool = typer.Option(False, "--no-worker", help="Serve without the training worker beside the server"),
) -> None:
    """SQLite database, migrations, demo accounts (random passwords) and labeling content; with
    torch installed, a tiny base model and a pretraining corpus; then serve, with a training
    worker as a child process (stopped with the server)."""
    import app.cli as registered  # noqa: PLW0406 - under `python -m app.cli` this module is __main__; domains register on app.cli
    from app.demo import run_demo

    run_demo(port=port, database=database, serve=not no_serve, worker=not no_worker, seeders=registered.DEMO_SEEDERS)


def _register_domain_commands() -> None:
    from app.datasets.cli import register as register_datasets
    from app.evals.cli import register as register_evals
    from app.labeling.cli import register as register_labeling
    from app.registry.cli import register_commands as register_models
    from app.runs.cli import register as register_runs
    from app.users.cli import register as register_users

    register_users(cli)
    register_models(cli)
    register_runs(cli)
    register_labeling(cli)
    register_datasets(cli)
    register_evals(cli)


_register_domain_commands()


def main() -> None:
    try:
        cli()
    except (AppError, SettingsError) as exc:
        typer.secho(f"error: {getattr(exc, 'message', exc)}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
