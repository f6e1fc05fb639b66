"""`rlhf export KIND --out FILE [filters]`, `rlhf import KIND FILE`, `rlhf datasets ...`."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import typer

from app.config import get_settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.errors import InvalidInput

datasets_cli = typer.Typer(help="Frozen datasets and labeler agreement.", no_args_is_help=True)


def _factory():
    return make_sessionmaker(make_engine(get_settings().database_url))


def _filters(batch, split, since, until, group, model, min_agreement, exclude_all_bad, include_evaluations=False):
    from pydantic import ValidationError

    from app.datasets.schemas import ExportFilters

    try:
        return ExportFilters(
            batch=batch, split=split, since=since, until=until, labeler_group=group, model=model,
            min_agreement=min_agreement, include_all_bad=not exclude_all_bad, include_evaluations=include_evaluations,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInput(f"--{'-'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def export(
    kind: str = typer.Argument(..., help="comparisons, pairwise, sft or prompts"),
    out: Path = typer.Option(..., "--out", "-o", help="Output file; .jsonl, .jsonl.gz or .parquet picks the format"),
    style: str = typer.Option(None, "--style", help="pairwise: plain (default) or messages; sft: both (default), plain or messages"),
    batch: str = typer.Option(None, "--batch", help="Batch name or id"),
    split: str = typer.Option(None, "--split", help="train, valid or test"),
    since: datetime = typer.Option(None, "--since", help="Submitted at or after (UTC)"),
    until: datetime = typer.Option(None, "--until", help="Submitted before (UTC)"),
    group: str = typer.Option("train", "--group", help="Labeler group: train (default), heldout or all"),
    model: str = typer.Option(None, "--model", help="Only rankings that include a response of this model"),
    min_agreement: float = typer.Option(None, "--min-agreement", help="Only tasks ranked by >=2 labelers agreeing at least this much (0-1)"),
    exclude_all_bad: bool = typer.Option(False, "--exclude-all-bad", help="Leave out rankings marked 'all bad'"),
    include_evaluations: bool = typer.Option(False, "--include-evaluations", help="Also export blind-evaluation judgments"),
    freeze: str = typer.Option(None, "--freeze", help="Also freeze the export as a dataset with this name"),
) -> None:
    """Export labels as a file, streamed from the database with constant memory."""
    from app.datasets import export as exporter
    from app.datasets import frozen

    settings = get_settings()
    filters = _filters(batch, split, since, until, group, model, min_agreement, exclude_all_bad, include_evaluations)
    fmt = exporter.format_for_path(str(out))
    start = time.perf_counter()
    with unit_of_work(_factory()) as db:
        if freeze:
            ds = frozen.freeze(db, settings, kind=kind, fmt=fmt, filters=filters, style=style, name=freeze)
            src = Path(settings.artifact_dir) / ds.path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(src.read_bytes())
            typer.echo(f"dataset {ds.id} '{ds.name}': {ds.row_count} rows, sha256 {ds.sha256}")
            rows = ds.row_count
        else:
            stats, digest = exporter.export_to_file(db, out, kind, fmt, filters, secret=settings.require_secret(), style=style)
            rows = stats.rows
            typer.echo(f"sha256 {digest}")
    took = time.perf_counter() - start
    typer.echo(f"wrote {rows} {kind} rows to {out} in {took:.1f}s")


def import_(
    kind: str = typer.Argument(..., help="comparisons, pairwise, sft, prompts, hh or oasst"),
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help=".jsonl, .jsonl.gz or .parquet"),
    batch: str = typer.Option(None, "--batch", help="Put imported rankings in this batch (created if new)"),
    include_synthetic: bool = typer.Option(False, "--include-synthetic", help="oasst: keep synthetic replies"),
) -> None:
    """Import a file, all-or-nothing; prints read / imported / skipped by reason."""
    from app.datasets.imports import import_file

    settings = get_settings()
    with unit_of_work(_factory()) as db:
        summary = import_file(db, settings, kind, file, name=file.name, batch=batch, include_synthetic=include_synthetic)
    for line in summary.lines():
        typer.echo(line)


@datasets_cli.command("list")
def list_datasets() -> None:
    """Frozen datasets, newest first."""
    from app.datasets import frozen

    with unit_of_work(_factory()) as db:
        for d in frozen.list_datasets(db):
            typer.echo(f"{d.id:>5}  {d.kind.value:<12} {d.format.value:<9} {d.row_count:>9} rows  {d.sha256[:12]}  {d.name}")


@datasets_cli.command("add-corpus")
def add_corpus(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help=".txt, .txt.gz, .jsonl or .jsonl.gz"),
    name: str = typer.Option(None, "--name", help="Dataset name (default: the file name)"),
) -> None:
    """Keep a pretraining corpus as a dataset for PPO-ptx runs (documents: blank-line separated)."""
    from app.datasets import frozen

    with unit_of_work(_factory()) as db, file.open("rb") as fh:
        ds = frozen.store_corpus(db, get_settings(), name=name or "", filename=file.name, stream=fh)
        typer.echo(f"dataset {ds.id} '{ds.name}': corpus of {ds.row_count} documents, sha256 {ds.sha256}")


@datasets_cli.command("agreement")
def agreement(batch: str = typer.Option(None, "--batch", help="Batch name or id")) -> None:
    """Inter-annotator agreement as JSON."""
    from app.datasets.agreement import agreement_report

    with unit_of_work(_factory()) as db:
        typer.echo(json.dumps(agreement_report(db, batch=batch), indent=2))


def register(cli: typer.Typer) -> None:
    cli.command("export")(export)
    cli.command("import")(import_)
    cli.add_typer(datasets_cli, name="datasets")
