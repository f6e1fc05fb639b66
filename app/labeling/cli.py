"""`rlhf prompts import`, `rlhf completions import`, `rlhf batches create|list`, and the demo seeder."""

from __future__ import annotations

from pathlib import Path

import typer

from app.config import get_settings
from app.db import make_engine, make_sessionmaker, unit_of_work

prompts_cli = typer.Typer(help="Prompts: import from JSONL/CSV.", no_args_is_help=True)
completions_cli = typer.Typer(help="Completions (responses to rank): import from JSONL.", no_args_is_help=True)
batches_cli = typer.Typer(help="Labeling batches.", no_args_is_help=True)


def _factory():
    return make_sessionmaker(make_engine(get_settings().database_url))


def _read(path: Path):
    from app.prompts.files import parse_records

    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}")
    return parse_records(path.read_bytes(), path.name)


@prompts_cli.command("import")
def import_prompts(
    file: Path = typer.Argument(..., help="JSONL or CSV: prompt or messages, optional origin_user, category, source"),
    prefix_chars: int = typer.Option(64, help="Prompts sharing this many leading characters are near-duplicates"),
    per_user_cap: int = typer.Option(200, help="Most prompts kept per origin user"),
    tag: str = typer.Option(None, "--tag", help="Name of this import (batches can be built from it); default: its time"),
) -> None:
    """Import prompts: dedup, per-user cap, personal-data scrubbing, split by origin user (all or nothing)."""
    from app.prompts import service

    settings = get_settings()
    records = _read(file)
    with unit_of_work(_factory()) as db:
        summary = service.import_prompts(
            db, records, settings=settings, prefix_chars=prefix_chars, per_user_cap=per_user_cap, import_tag=tag
        )
    for line in summary.lines():
        typer.echo(line)


@completions_cli.command("import")
def import_completions(file: Path = typer.Argument(..., help="JSONL: prompt_id or prompt, completion, model, settings")) -> None:
    """Import completions to rank (what `python -m trainers generate` writes)."""
    from app.prompts import service

    settings = get_settings()
    records = _read(file)
    with unit_of_work(_factory()) as db:
        summary = service.import_completions(db, records, settings=settings)
    for line in summary.lines():
        typer.echo(line)


@batches_cli.command("create")
def create_batch(
    name: str = typer.Option(..., help="A unique name"),
    kind: str = typer.Option("ranking", help="ranking or demonstration"),
    k: int = typer.Option(4, help="Responses per ranking task (4-9)"),
    overlap_share: float = typer.Option(0.0, help="Share of tasks labeled by several labelers (0-1)"),
    overlap_count: int = typer.Option(1, help="Labelers per overlapping task"),
    lease_minutes: int = typer.Option(30, help="Lease time"),
    priority: int = typer.Option(0, help="Higher first"),
    heldout: bool = typer.Option(True, "--heldout/--no-heldout", help="Whether held-out labelers take part"),
    limit: int = typer.Option(None, help="At most this many tasks"),
    model: str = typer.Option(None, help="Only completions from this model"),
    split: str = typer.Option(None, help="Only prompts of this split: train, valid or test"),
    category: str = typer.Option(None, help="Only prompts of this category (generation, open_qa, ...)"),
    source: str = typer.Option(None, help="Only prompts of this source (import, plain, few_shot, use_case, api)"),
    import_tag: str = typer.Option(None, "--import", help="Only prompts of this import (its tag; 'demo' for the demo's)"),
    prompt_ids: str = typer.Option(None, help="Only these prompts: ids and ranges, e.g. '3,5,9-12'"),
    guidelines_file: Path = typer.Option(None, help="Markdown guidelines shown to the labeler on every task"),
    preview: bool = typer.Option(False, "--preview", help="Only count the matching prompts; create nothing"),
) -> None:
    """Create a ranking batch from prompts with at least K completions, or a demonstration batch.
    Without filters: every active prompt except the demo's."""
    from app.errors import AppError
    from app.labeling import batches
    from app.labeling import selection as prompt_selection
    from app.labeling.routes import parse_kind

    guidelines = ""
    if guidelines_file is not None:
        if not guidelines_file.is_file():
            raise typer.BadParameter(f"no such file: {guidelines_file}", param_hint="--guidelines-file")
        guidelines = guidelines_file.read_text(encoding="utf-8")
    with unit_of_work(_factory()) as db:
        try:
            task_kind = parse_kind(kind)
            chosen = prompt_selection.PromptSelection(
                split=split, category=category, source=source, import_tag=import_tag,
                prompt_ids=prompt_selection.parse_prompt_ids(prompt_ids),
            )
            if preview:
                sel = prompt_selection.validate(db, chosen)
                typer.echo(f"{prompt_selection.count(db, sel)} active prompts match ({sel.describe()})")
                return
            options = batches.BatchOptions(
                name=name, kind=task_kind, k=k if task_kind.value == "ranking" else None, overlap_share=overlap_share,
                overlap_count=overlap_count, lease_minutes=lease_minutes, priority=priority, include_heldout=heldout,
                limit=limit, model=model, guidelines=guidelines,
            )
            batch = batches.create_batch(db, options, selection=chosen)
        except AppError as exc:
            field = getattr(exc, "field", None)
            where = {"import_tag": "--import"}.get(field, f"--{field.replace('_', '-')}") if field else None
            raise typer.BadParameter(exc.message, param_hint=where) from None
        rows = [r for r in batches.batch_rows(db) if r["batch"].id == batch.id]
    typer.echo(f"created {batch.kind.value} batch {batch.name!r} (id {batch.id}) with {rows[0]['tasks']} tasks")


@batches_cli.command("list")
def list_batches() -> None:
    """Batches with their progress."""
    from app.labeling import batches

    with unit_of_work(_factory()) as db:
        for r in batches.batch_rows(db):
            b = r["batch"]
            typer.echo(f"{b.id:>5}  {b.name:<30} {b.kind.value:<13} K={b.k or '-'}  {r['done']}/{r['tasks']} tasks done  {b.status.value}")


# The demo's prompts: (text, origin user, category). Origin users decide the split (80/10/10 by a
# hash of the name): these 20 land 15 train, 2 valid (sybil, xavier), 3 test (dana, frank, grace),
# so SFT, the RM and PPO all find held-out rows. The first six also get canned responses to rank.
DEMO_PROMPTS = [
    ("Explain the moon landing to a 6 year old in a few sentences.", "alice", "open_qa"),
    ("Write a short poem about a frog who wants to fly.", "bob", "generation"),
    ("List five ideas for a rainy-day activity with kids.", "carol", "brainstorming"),
    ("Summarize: The meeting moved to Thursday because the room was booked. Email me at dana@example.com.", "dana", "summarization"),
    ("Is it <b>safe</b> to <script>alert('x')</script> eat raw cookie dough?", "erin", "closed_qa"),
    ("Rewrite this sentence more politely: give me the report now.", "frank", "rewrite"),
]
LOOP_PROMPTS = [
    ("Name three colours of the rainbow.", "grace", "open_qa"),
    ("Write one sentence about a cat who loves the rain.", "heidi", "generation"),
    ("Give two tips for sleeping well.", "ivan", "brainstorming"),
    ("Translate 'good night' into French.", "judy", "other"),
    ("Is this review positive or negative? 'The soup was cold and the waiter was rude.'", "mallory", "classification"),
    ("What is the capital of Italy?", "niaj", "open_qa"),
    ("Summarize in one sentence: The bus was late, so Sam walked to school and arrived just in time.", "olivia", "summarization"),
    ("Hi! Can you suggest a name for my new puppy?", "peggy", "chat"),
    ("Extract the date from this note: 'The party is on 12 May at Ana's house.'", "rupert", "extract"),
    ("Rewrite in plain words: The meeting has been postponed indefinitely.", "sybil", "rewrite"),
    ("List three fruits that are yellow.", "trent", "brainstorming"),
    ("Explain in two sentences why the sky is blue.", "victor", "open_qa"),
    ("Write a two-line poem about the sea.", "walter", "generation"),
    ("Answer yes or no: is a tomato a fruit?", "xavier", "closed_qa"),
]
# Canned responses for the K=5 practice batch, under model names that are not real models (each
# becomes an external model in the registry; the demo's real models are tiny-base and its children).
# The batch has priority -1: the ranking batches that generate runs build (priority 0) come first.
DEMO_STYLES = [
    ("canned-careful", "{t} Here is a careful, complete answer."),
    ("canned-cheerful", "Sure! {t} — answered briefly and helpfully."),
    ("canned-unsure", "{t} I don't know."),
    ("canned-hedging", "Answer: it depends; {t}"),
    ("human", "Thanks for asking. {t} Let me explain step by step."),
]


def seed_demo(settings, factory) -> list[str]:
    """`rlhf demo`: 20 prompts across categories and splits with a demonstration batch (the start
    of the training loop), and a K=5 ranking batch of canned responses for the first six."""
    from sqlalchemy import select

    from app.labeling import batches
    from app.labeling.models import Batch, TaskKind
    from app.labeling.selection import DEMO_TAG
    from app.prompts import service
    from app.prompts.models import Prompt

    lines = []
    with unit_of_work(factory) as db:
        if db.scalar(select(Batch.id).where(Batch.name == "demo-ranking")):
            lines.append("labeling: demo batches already present")
        else:
            summary = service.import_prompts(
                db, [{"prompt": p, "origin_user": u, "category": c} for p, u, c in DEMO_PROMPTS], settings=settings,
                import_tag=DEMO_TAG,
            )
            ids = summary.prompt_ids
            records = []
            for pid in ids:
                for model, style in DEMO_STYLES:
                    records.append({"prompt_id": pid, "completion": style.format(t=f"(response to prompt {pid})"), "model": model})
            service.import_completions(db, records, settings=settings)
            batches.create_batch(
                db, batches.BatchOptions(name="demo-ranking", kind=TaskKind.ranking, k=5, overlap_share=0.5, overlap_count=2, priority=-1),
                prompt_ids=ids,
            )
            lines.append(f"labeling: a K=5 ranking batch of canned responses to {len(ids)} prompts (practice: served last)")
        loop_hashes = [service.content_hash(p) for p, _u, _c in LOOP_PROMPTS]
        if db.scalar(select(Prompt.id).where(Prompt.content_hash == loop_hashes[0])) is None:
            service.import_prompts(
                db, [{"prompt": p, "origin_user": u, "category": c} for p, u, c in LOOP_PROMPTS], settings=settings,
                import_tag=DEMO_TAG,
            )
            origins = [u for _p, u, _c in DEMO_PROMPTS + LOOP_PROMPTS]
            ids = list(db.scalars(select(Prompt.id).where(Prompt.origin_user.in_(origins)).order_by(Prompt.id)))
            name = "demo-demonstrations"
            if db.scalar(select(Batch.id).where(Batch.name == name)):  # a demo database from before the loop prompts
                name = "demo-loop-demonstrations"
            batches.create_batch(db, batches.BatchOptions(name=name, kind=TaskKind.demonstration, priority=1), prompt_ids=ids)
            lines.append(f"labeling: a demonstration batch of {len(ids)} prompts (train, valid and test splits)")
    return lines


def register(cli: typer.Typer) -> None:
    from app import cli as root

    cli.add_typer(prompts_cli, name="prompts")
    cli.add_typer(completions_cli, name="completions")
    cli.add_typer(batches_cli, name="batches")
    if seed_demo not in root.DEMO_SEEDERS:
        root.DEMO_SEEDERS.append(seed_demo)
