"""`rlhf models register|list|show`."""

from __future__ import annotations

import typer

from app.config import get_settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.registry import service

models_cli = typer.Typer(help="The model registry: base models, and what runs made.", no_args_is_help=True)


def _factory():
    return make_sessionmaker(make_engine(get_settings().database_url))


@models_cli.command("register")
def register(
    name: str = typer.Option(..., "--name", help="Name runs and pages will use (no spaces or commas)"),
    path: str = typer.Option(..., "--path", help="A transformers model folder on this host, or a hub name"),
    kind: str = typer.Option("base", "--kind", help="base (default), sft, rm or ppo"),
    description: str = typer.Option("", "--description", help="A line about the model"),
) -> None:
    """Register a model so runs can start from it."""
    with unit_of_work(_factory()) as db:
        model = service.register_model(db, get_settings(), name=name, path=path, kind=kind, description=description)
        typer.echo(f"registered model {model.id} '{model.name}' ({model.kind.value}) at {model.path}")


@models_cli.command("list")
def list_models() -> None:
    """Registered models, newest first, with their headline metrics."""
    with unit_of_work(_factory()) as db:
        models = service.list_models(db)
        metrics = service.metrics_of(db, [m.id for m in models])
        for m in models:
            numbers = " ".join(f"{k}={v:.4g}" for k, v in metrics[m.id].items())
            made = f"run {m.run_id}" if m.run_id else (m.path or "-")
            typer.echo(f"{m.id:>5}  {m.kind.value:<8} {m.name:<30} {made:<30} {numbers}")


@models_cli.command("show")
def show(model: str = typer.Argument(..., help="Model name or id")) -> None:
    """A model's lineage: the runs and datasets behind it, down to its base model."""
    with unit_of_work(_factory()) as db:
        node = service.lineage(db, service.find_model(db, model))
        for line in _lines(node):
            typer.echo(line)


def _lines(node: service.LineageNode, indent: str = "", role: str | None = None) -> list[str]:
    m = node.model
    made = f" made by run {node.run.id} ({node.run.kind.value})" if node.run else f" at {m.path}"
    numbers = " ".join(f"{k}={v:.4g}" for k, v in node.metrics.items())
    lines = [f"{indent}{role + ' <- ' if role else ''}{m.name} [{m.kind.value}]{made} {numbers}".rstrip()]
    for r, ds, checked in node.datasets:
        lines.append(f"{indent}  {r} <- dataset {ds.name} ({ds.kind.value}, {ds.row_count} rows, sha256 {ds.sha256[:12]})")
    for r, parent in node.parents:
        lines.extend(_lines(parent, indent + "  ", r))
    return lines


def register_commands(cli: typer.Typer) -> None:
    cli.add_typer(models_cli, name="models")
