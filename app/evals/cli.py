"""`rlhf eval create|list|results`."""

from __future__ import annotations

import json

import typer

from app.config import get_settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.evals import service

eval_cli = typer.Typer(help="Blind human evaluations between registered models.", no_args_is_help=True)


def _factory():
    return make_sessionmaker(make_engine(get_settings().database_url))


@eval_cli.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Name of the evaluation"),
    model: list[str] = typer.Option(..., "--model", help="A registered policy to compare (repeat: 2 to 9)"),
    baseline: str = typer.Option(None, "--baseline", help="The model the others are compared with (default: the first)"),
    split: str = typer.Option("test", "--split", help="Prompts of this split (default test: held-out customers; 'any' for all)"),
    category: str = typer.Option(None, "--category", help="Only prompts of this category"),
    limit: int = typer.Option(None, "--limit", help="At most this many prompts"),
    all_labelers: bool = typer.Option(False, "--all-labelers", help="Let every labeler judge (default: held-out labelers only)"),
    overlap_share: float = typer.Option(0.0, "--overlap-share", help="Share of tasks judged by several evaluators"),
    overlap_count: int = typer.Option(1, "--overlap-count", help="Evaluators per shared task"),
    sets: list[str] = typer.Option([], "--set", help="Sampling option of the generate run as key=value (temperature, max_new_tokens)"),
) -> None:
    """Queue the sampling of each model's response to each prompt; the evaluation batch opens when it is done."""
    from app.runs.cli import _parse_sets

    request = service.EvalRequest(
        name=name, models=model, baseline=baseline, split=None if split == "any" else split, category=category, limit=limit,
        heldout_only=not all_labelers, overlap_share=overlap_share, overlap_count=overlap_count, options=_parse_sets(sets))
    with unit_of_work(_factory()) as db:
        evaluation = service.create_evaluation(db, get_settings(), request)
        typer.echo(f"evaluation {evaluation.id} '{evaluation.name}': sampling in run {evaluation.run_id}; "
                   "its tasks open to evaluators when a worker has run it")


@eval_cli.command("list")
def list_evaluations() -> None:
    """Evaluations, newest first."""
    with unit_of_work(_factory()) as db:
        for e in service.list_evaluations(db):
            typer.echo(f"{e.id:>5}  {e.name}  (run {e.run_id}, batch {e.batch_id or '-'})")


@eval_cli.command("results")
def results(
    evaluation: str = typer.Argument(..., help="Evaluation name or id"),
    as_json: bool = typer.Option(False, "--json", help="Print every number as JSON"),
    as_csv: bool = typer.Option(False, "--csv", help="Print the CSV table"),
) -> None:
    """Win rates against the baseline with 95% intervals (ties count half), Likert and agreement."""
    with unit_of_work(_factory()) as db:
        res = service.results(db, service.find_evaluation(db, evaluation))
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    if as_csv:
        typer.echo(service.results_csv(res), nl=False)
        return
    typer.echo(f"{res['name']}: {res['tasks_done']}/{res['tasks']} tasks judged, {res['judgments']} judgments, baseline {res['baseline']}")
    for s in res["models"]:
        win = s.get("win_rate")
        if win and win["value"] is not None:
            ci = f" [{win['ci'][0]:.1%}, {win['ci'][1]:.1%}]" if win["ci"] else ""
            typer.echo(f"  {s['model']:<30} wins {win['value']:.1%}{ci} over {win['prompts']} prompts")
        elif s["model"] == res["baseline"]:
            typer.echo(f"  {s['model']:<30} (baseline)")


def register(cli: typer.Typer) -> None:
    cli.add_typer(eval_cli, name="eval")
