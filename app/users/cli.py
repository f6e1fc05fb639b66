"""`rlhf users ...` and `rlhf tokens ...`."""

from __future__ import annotations

import sys

import typer

from app.config import get_settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.security import generate_password
from app.users import service


def _session_factory():
    return make_sessionmaker(make_engine(get_settings().database_url))


users_cli = typer.Typer(help="User accounts.", no_args_is_help=True)
tokens_cli = typer.Typer(help="API tokens.", no_args_is_help=True)


@users_cli.command("create")
def create(
    username: str = typer.Option(..., "--username", help="Login name"),
    role: str = typer.Option(..., "--role", help="admin, researcher or labeler"),
    group: str = typer.Option("train", "--group", help="Labeler group: train or heldout"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from standard input instead of generating one"
    ),
) -> None:
    """Create a user. The password is read from stdin (--password-stdin) or generated and printed."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = generate_password()
    with unit_of_work(_session_factory()) as db:
        user = service.create_user(db, username=username, password=password, role=role, labeler_group=group)
    typer.echo(f"created {user.role.value} {user.username!r} (id {user.id})")
    if not password_stdin:
        typer.echo(f"password: {password}")


@users_cli.command("password")
def password(
    username: str = typer.Option(..., "--username", help="Whose password to set"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the new password from standard input instead of generating one"
    ),
) -> None:
    """Set a user's password (read from stdin with --password-stdin, else generated and printed).
    Every session of the user ends; the change is in the audit log."""
    new = sys.stdin.readline().rstrip("\n") if password_stdin else generate_password()
    with unit_of_work(_session_factory()) as db:
        user = service.get_by_username(db, username)
        if user is None:
            raise service.NotFound(f"No user named {username!r}.")
        service.reset_password(db, user.id, new, actor=None)
    typer.echo(f"password of {username!r} set; their sessions ended")
    if not password_stdin:
        typer.echo(f"password: {new}")


@users_cli.command("list")
def list_users() -> None:
    """List all users."""
    with unit_of_work(_session_factory()) as db:
        for u in service.list_users(db):
            typer.echo(f"{u.id:>5}  {u.username:<24} {u.role.value:<11} {u.labeler_group.value:<8} {'active' if u.active else 'inactive'}")


@tokens_cli.command("create")
def create_token(
    username: str = typer.Option(..., "--username", help="Owner of the token"),
    name: str = typer.Option("cli", "--name", help="A name to recognise the token by"),
) -> None:
    """Create an API token for USERNAME and print it (shown once)."""
    with unit_of_work(_session_factory()) as db:
        user = service.get_by_username(db, username)
        if user is None:
            raise service.NotFound(f"No user named {username!r}.")
        _, token = service.create_token(db, user, name)
    typer.echo(token)


def register(cli: typer.Typer) -> None:
    cli.add_typer(users_cli, name="users")
    cli.add_typer(tokens_cli, name="tokens")
