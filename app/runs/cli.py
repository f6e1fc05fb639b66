"""`rlhf worker` and `rlhf runs ...`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from app.config import get_settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.runs import service

runs_cli = typer.Typer(help="Training and generation runs.", no_args_is_help=True)


def _factory():
    return make_sessionmaker(make_engine(get_settings().database_url))


@runs_cli.command("create")
def create(
    kind: str = typer.Option(..., "--kind", help="sft, rm, ppo, generate or init-tiny"),
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="JSON file of trainer options"),
    name: str = typer.Option("", "--name", help="A name to recognise the run by"),
    gpus: int = typer.Option(0, "--gpus", help="GPUs the run needs (several: launched with torchrun)"),
) -> None:
    """Queue a run; a worker picks it up."""
    try:
        options = json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise service.InvalidInput(f"{config}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    with unit_of_work(_factory()) as db:
        run = service.create_run(db, kind=kind, name=name, config=options, gpus=gpus)
    typer.echo(f"queued run {run.id} ({run.kind.value})")


@runs_cli.command("list")
def list_runs() -> None:
    """List runs, newest first."""
    with unit_of_work(_factory()) as db:
        for r in service.list_runs(db):
            typer.echo(f"{r.id:>5}  {r.kind.value:<9} {r.status.value:<10} {r.progress:>5.0%}  {r.name}")


def worker(
    once: bool = typer.Option(False, "--once", help="Exit when the queue is empty"),
    poll: float = typer.Option(5.0, "--poll", help="Seconds between looks at the queue"),
    stale_after: int = typer.Option(120, "--stale-after", help="Requeue runs whose heartbeat is older than this"),
    gpus: int | None = typer.Option(
        None, "--gpus", help="GPUs this worker offers, shown on the run pages (default: CUDA_VISIBLE_DEVICES, else the driver's count)"
    ),
) -> None:
    """Run training jobs: claim queued runs, launch the trainers, stream progress and metrics.

    SIGTERM or Ctrl-C: the trainer is stopped and its run goes back to the queue.
    """
    # Killed outright (kill -9, a lost machine), a worker's trainer dies with it, and another
    # worker requeues the run once its heartbeat is older than --stale-after.
    import signal

    from app.worker import work

    terminated: list[int] = []

    def _stop(signum, _frame):  # unwind like Ctrl-C, so the worker cleans up on the way out
        terminated.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _stop)
    settings = get_settings()
    factory = make_sessionmaker(make_engine(settings.database_url))
    try:
        done = work(settings, factory, once=once, poll_s=poll, stale_after_s=stale_after, gpus=gpus, echo=typer.echo)
    except KeyboardInterrupt:
        typer.echo("worker stopped")
        raise typer.Exit(0 if terminated else 130) from None  # SIGTERM is how a service manager stops it
    typer.echo(f"worker finished {done} run(s)")


def register(cli: typer.Typer) -> None:
    cli.add_typer(runs_cli, name="runs")
    cli.command("worker")(worker)
