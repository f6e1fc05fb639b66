"""The `rlhf` command. Each domain adds its own sub-commands (see app/*/cli.py)."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import typer

from app.config import REPO_ROOT, Settings, SettingsError, get_settings
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
        workers=workers or os.cpu_count() or 1, log_level="warning", access_log=False, proxy_headers=True,
    )


@cli.command()
def demo(
    port: int = typer.Option(8000, help="Port to serve on"),
    database: Path = typer.Option(REPO_ROOT / "var" / "demo.sqlite3", help="SQLite file for the demo"),
    no_serve: bool = typer.Option(False, "--no-serve", help="Set up and print the accounts, but do not serve"),
) -> None:
    """Create a SQLite database, migrate it, seed demo accounts (random passwords) and serve."""
    import uvicorn

    from app.db import make_engine, make_sessionmaker, unit_of_work
    from app.main import create_app
    from app.migrate import upgrade
    from app.users import service as users

    database.parent.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        mode="demo",
        database_url=f"sqlite:///{database.resolve()}",
        secret_key=secrets.token_urlsafe(48),
        artifact_dir=database.resolve().parent / "artifacts",
        port=port,
    )
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)
    accounts = []
    with unit_of_work(factory) as db:
        for username, role in (("admin", "admin"), ("researcher", "researcher"), ("labeler", "labeler")):
            password = secrets.token_urlsafe(12)
            existing = users.get_by_username(db, username)
            if existing is None:
                users.create_user(db, username=username, password=password, role=role)
            else:
                existing.password_hash = users.security.hash_password(password)
                existing.active = True
            accounts.append((username, role, password))
    extra: list[str] = []
    for seeder in DEMO_SEEDERS:
        extra.extend(seeder(settings, factory))
    typer.secho("\nrlhf-lab demo", bold=True)
    typer.echo(f"  database : {database}")
    typer.echo(f"  open     : http://127.0.0.1:{port}/login\n")
    typer.echo("  accounts (passwords are new each time the demo starts):")
    for username, role, password in accounts:
        typer.echo(f"    {role:<11} {username:<11} {password}")
    for line in extra:
        typer.echo(f"  {line}")
    typer.echo("\n  training runs queued on the Runs page need a worker (pip install -e '.[train]' first):")
    typer.echo(f"    RLHF_DATABASE_URL={settings.database_url} RLHF_ARTIFACT_DIR={settings.artifact_dir} rlhf worker")
    typer.echo("")
    if no_serve:
        return
    uvicorn.run(create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning")


def _register_domain_commands() -> None:
    from app.datasets.cli import register as register_datasets
    from app.labeling.cli import register as register_labeling
    from app.registry.cli import register_commands as register_models
    from app.runs.cli import register as register_runs
    from app.users.cli import register as register_users

    register_users(cli)
    register_models(cli)
    register_runs(cli)
    register_labeling(cli)
    register_datasets(cli)


_register_domain_commands()


def main() -> None:
    try:
        cli()
    except (AppError, SettingsError) as exc:
        typer.secho(f"error: {getattr(exc, 'message', exc)}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
