"""`rlhf worker` and `rlhf runs ...`."""

from __future__ import annotations

import typer

from app.config import get_settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.runs import service

runs_cli = typer.Typer(help="Training and generation runs.", no_args_is_help=True)


def _factory():
    return make_sessionmaker(make_engine(get_settings().database_url))


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise service.InvalidInput(f"--set {pair!r}: expected key=value, e.g. --set epochs=2", field="options")
        options[key.strip().replace("-", "_")] = value
    return options


@runs_cli.command("create")
def create(
    kind: str = typer.Option(..., "--kind", help="sft, rm, ppo, generate or init-tiny"),
    model: list[str] = typer.Option([], "--model", help="Registered model to start from (generate: repeat for several)"),
    data: str = typer.Option(None, "--data", help="Frozen dataset to train on (sft: sft; rm: comparisons or pairwise)"),
    valid_data: str = typer.Option(None, "--valid-data", help="Frozen validation dataset"),
    demonstrations: str = typer.Option(None, "--demonstrations", help="rm: frozen SFT dataset for the score bias"),
    policy: str = typer.Option(None, "--policy", help="ppo: registered SFT model"),
    reward_model: str = typer.Option(None, "--reward-model", help="ppo (and sft epoch selection): registered RM"),
    value_model: str = typer.Option(None, "--value-model", help="ppo: registered RM to start the value model from"),
    prompts: str = typer.Option(None, "--prompts", help="ppo: frozen prompts dataset"),
    pretrain_data: str = typer.Option(None, "--pretrain-data", help="ppo: uploaded corpus or SFT dataset for the ptx term"),
    sets: list[str] = typer.Option([], "--set", help="A trainer option (or generate setting) as key=value; repeat"),
    name: str = typer.Option("", "--name", help="A name to recognise the run by"),
    output_name: str = typer.Option(None, "--output-name", help="Register the output model under this name"),
    gpus: int = typer.Option(0, "--gpus", help="GPUs the run needs (several: launched with torchrun)"),
    nodes: int = typer.Option(1, "--nodes", help="Nodes the run spans (several: needs a worker with --launcher slurm)"),
    gpus_per_node: int = typer.Option(None, "--gpus-per-node", help="GPUs (torchrun processes) per node; default: --gpus / --nodes"),
) -> None:
    """Queue a run from registered models and frozen datasets (by name or id); a worker picks it up.

    Example: rlhf runs create --kind rm --model sft-v1 --data comparisons-v1 --set epochs=2
    """
    from app.runs import planning

    inputs = {
        "model": model if kind == "generate" else (model[0] if model else None), "data": data, "valid_data": valid_data,
        "demonstrations": demonstrations, "policy": policy, "reward_model": reward_model, "value_model": value_model,
        "prompts": prompts, "pretrain_data": pretrain_data,
    }
    if len(model) > 1 and kind != "generate":
        raise service.InvalidInput("--model: only a generate run takes several models.", field="model")
    request = planning.RunRequest(kind=kind, name=name, inputs={k: v for k, v in inputs.items() if v},
                                  options=_parse_sets(sets), gpus=gpus, output_name=output_name,
                                  nodes=nodes, gpus_per_node=gpus_per_node)
    with unit_of_work(_factory()) as db:
        run = planning.launch_run(db, get_settings(), request)
        typer.echo(f"queued run {run.id} ({run.kind.value}); it registers its output as {run.output_name}"
                   if run.output_name else f"queued run {run.id} ({run.kind.value})")


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
    launcher: str = typer.Option(
        None, "--launcher", help="local: torchrun on this host (single-node runs); slurm: submit each run as a Slurm "
        "job, srun + torchrun on its nodes (docs/cluster.md). Default: RLHF_LAUNCHER, else local"),
) -> None:
    """Run training jobs: claim queued runs, launch the trainers, stream progress and metrics.

    SIGTERM or Ctrl-C: the trainer is stopped (a Slurm job is cancelled) and its run goes back to the queue.
    """
    # Killed outright (kill -9, a lost machine), a worker's trainer dies with it, and another
    # worker requeues the run once its heartbeat is older than --stale-after.
    import signal

    from app.worker import work

    terminated: list[int] = []

    def _stop(signum, _frame):  # unwind like Ctrl-C, so the worker cleans up on the way out
        terminated.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    from app.launchers import LauncherUnavailable, make_launcher

    settings = get_settings()
    if launcher not in (None, "local", "slurm"):
        raise typer.BadParameter(f"{launcher!r}: choose local or slurm", param_hint="--launcher")
    try:
        chosen = make_launcher(settings, launcher)
    except LauncherUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    signal.signal(signal.SIGTERM, _stop)
    factory = make_sessionmaker(make_engine(settings.database_url))
    try:
        done = work(settings, factory, once=once, poll_s=poll, stale_after_s=stale_after, gpus=gpus, echo=typer.echo,
                    launcher=chosen)
    except KeyboardInterrupt:
        typer.echo("worker stopped")
        raise typer.Exit(0 if terminated else 130) from None  # SIGTERM is how a service manager stops it
    typer.echo(f"worker finished {done} run(s)")


def register(cli: typer.Typer) -> None:
    cli.add_typer(runs_cli, name="runs")
    cli.command("worker")(worker)
