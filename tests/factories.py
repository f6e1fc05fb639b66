"""Small factories that build rows for tests. Each flushes, never commits."""

from __future__ import annotations

import itertools

from sqlalchemy.orm import Session

from app.users import service as users
from app.users.models import User

PASSWORD = "correct-horse-battery"
_seq = itertools.count(1)


def make_user(db: Session, role: str = "labeler", *, username: str | None = None, group: str = "train") -> User:
    username = username or f"{role}{next(_seq)}"
    return users.create_user(db, username=username, password=PASSWORD, role=role, labeler_group=group)


# --- prompts and labeling (issue 3) --------------------------------------------------------------

def make_prompts(db: Session, texts: list[str], *, origin_user: str | None = None) -> list:
    from app.config import Settings
    from app.prompts import service as prompts
    from app.prompts.models import Prompt

    settings = Settings(mode="test", secret_key="x" * 40)
    records = [{"prompt": t, "origin_user": origin_user or f"origin{next(_seq)}"} for t in texts]
    summary = prompts.import_prompts(db, records, settings=settings, prefix_chars=10_000)
    return [db.get(Prompt, pid) for pid in summary.prompt_ids]


def make_ranking_batch(
    db: Session, *, tasks: int = 1, k: int = 5, overlap_share: float = 0.0, overlap_count: int = 1,
    lease_minutes: int = 30, priority: int = 0, include_heldout: bool = True, prompt_texts: list[str] | None = None,
):
    """A ranking batch of ``tasks`` prompts, each with ``k`` completions."""
    from app.config import Settings
    from app.labeling import batches
    from app.labeling.models import TaskKind
    from app.prompts import service as prompts

    n = next(_seq)
    texts = prompt_texts or [f"Prompt {n}-{i}: explain topic number {i} of batch {n}." for i in range(tasks)]
    ps = make_prompts(db, texts)
    settings = Settings(mode="test", secret_key="x" * 40)
    records = [{"prompt_id": p.id, "completion": f"Response {j} to prompt {p.id}", "model": f"m{j}"} for p in ps for j in range(k)]
    prompts.import_completions(db, records, settings=settings)
    return batches.create_batch(
        db,
        batches.BatchOptions(
            name=f"rank-{n}", kind=TaskKind.ranking, k=k, overlap_share=overlap_share, overlap_count=overlap_count,
            lease_minutes=lease_minutes, priority=priority, include_heldout=include_heldout,
        ),
        prompt_ids=[p.id for p in ps],
    )


def make_demonstration_batch(db: Session, *, texts: list[str] | None = None, priority: int = 0):
    from app.labeling import batches
    from app.labeling.models import TaskKind

    n = next(_seq)
    ps = make_prompts(db, texts or [f"Demonstration prompt {n}: describe a sunset."])
    return batches.create_batch(
        db, batches.BatchOptions(name=f"demo-{n}", kind=TaskKind.demonstration, priority=priority),
        prompt_ids=[p.id for p in ps],
    )


# --- datasets (rankings and demonstrations built directly through the ORM) ------------------------


def make_prompt(db: Session, text: str | None = None, *, split: str = "train", origin_user: str = "customer-1", messages=None):
    from app.prompts.models import Prompt, PromptSource
    from app.prompts.service import content_hash

    text = text or f"Write a short poem about the number {next(_seq)}."
    prompt = Prompt(text=text, messages=messages, source=PromptSource.imported, origin_user=origin_user, split=split,
                    content_hash=content_hash(text))
    db.add(prompt)
    db.flush()
    return prompt


def make_batch(db: Session, name: str | None = None, *, k: int | None = None, source: str = "app"):
    from app.labeling.models import Batch, TaskKind

    batch = Batch(name=name or f"batch-{next(_seq)}", kind=TaskKind.ranking, k=k, source=source)
    db.add(batch)
    db.flush()
    return batch


def make_ranking_task(db: Session, *, k: int = 4, batch=None, prompt=None, models=None, required: int = 1):
    """A ranking task with K completions; returns (task, completions)."""
    from app.labeling.models import Task, TaskItem, TaskKind
    from app.prompts.models import Completion
    from app.prompts.service import content_hash

    batch = batch or make_batch(db, k=k)
    prompt = prompt or make_prompt(db)
    comps = []
    for i in range(k):
        text = f"Response {i} to prompt {prompt.id}"
        model = (models[i] if models else "policy-v1")
        comps.append(Completion(prompt_id=prompt.id, text=text, model_name=model, content_hash=content_hash(text)))
    db.add_all(comps)
    db.flush()
    task = Task(batch_id=batch.id, kind=TaskKind.ranking, prompt_id=prompt.id, required_submissions=required)
    task.items = [TaskItem(completion_id=c.id, position=i) for i, c in enumerate(comps)]
    db.add(task)
    db.flush()
    return task, comps


def make_ranking(db: Session, *, task=None, completions=None, labeler=None, buckets=None, likerts=None, flags=None,
                 all_bad: bool = False, k: int = 4, time_spent_s: float = 30.0, submitted_at=None, **task_kwargs):
    """A submitted ranking. ``buckets``: lists of indexes into ``completions`` best first (default:
    0 > 1 > ... ); ``likerts``/``flags``: per index."""
    from app.labeling.models import Ranking, RankingEntry, RankingFlag

    if task is None:
        task, completions = make_ranking_task(db, k=k, **task_kwargs)
    labeler = labeler or make_user(db, "labeler")
    buckets = buckets if buckets is not None else [[i] for i in range(len(completions))]
    ranking = Ranking(task_id=task.id, prompt_id=task.prompt_id, labeler_id=labeler.id, batch_id=task.batch_id,
                      all_bad=all_bad, time_spent_s=time_spent_s)
    if submitted_at is not None:
        ranking.submitted_at = submitted_at
    for b, bucket in enumerate(buckets):
        for i in bucket:
            entry = RankingEntry(completion_id=completions[i].id, bucket=b,
                                 likert=(likerts[i] if likerts else None))
            entry.flags = [RankingFlag(flag=f) for f in ((flags or {}).get(i) or [])]
            ranking.entries.append(entry)
    db.add(ranking)
    db.flush()
    return ranking


def make_demonstration(db: Session, *, prompt=None, author=None, text: str | None = None):
    from app.labeling.models import Demonstration
    from app.prompts.service import content_hash

    prompt = prompt or make_prompt(db)
    text = text or f"A careful answer number {next(_seq)}."
    demo = Demonstration(prompt_id=prompt.id, author_id=author.id if author else None, text=text,
                         content_hash=content_hash(text), time_spent_s=60.0)
    db.add(demo)
    db.flush()
    return demo


def expire_lease(db: Session, assignment_id: int, *, minutes_ago: int = 1) -> None:
    """Let a lease run out, as the clock would: its expiry, and the task's "full until" hint that
    the lease set, move into the past."""
    from datetime import timedelta

    from app.db import utcnow
    from app.labeling.models import Assignment, Task

    row = db.get(Assignment, assignment_id)
    row.expires_at = utcnow() - timedelta(minutes=minutes_ago)
    task = db.get(Task, row.task_id)
    if task.leased_until is not None and task.leased_until > row.expires_at:
        task.leased_until = row.expires_at
    db.flush()


# --- registry and frozen datasets (issue 9) ------------------------------------------------------

def make_model_folder(path) -> str:
    """A folder that looks like a transformers model to the registry (config.json only)."""
    from pathlib import Path

    Path(path).mkdir(parents=True, exist_ok=True)
    (Path(path) / "config.json").write_text('{"model_type": "llama"}')
    return str(path)


def make_model(db: Session, settings, *, kind: str = "base", name: str | None = None):
    """A registered model whose folder exists under the artifact directory."""
    from app.registry import service as registry

    name = name or f"{kind}-model-{next(_seq)}"
    make_model_folder(settings.artifact_dir / "models" / name)
    model = registry.register_model(db, settings, name=name, path=f"models/{name}")
    if kind != "base":
        from app.registry.models import ModelKind

        model.kind = ModelKind(kind)
        db.flush()
    return model


def make_frozen(db: Session, settings, kind: str = "sft", *, name: str | None = None):
    """A frozen dataset of the current labels (an empty export is a valid dataset too)."""
    from app.datasets import frozen

    return frozen.freeze(db, settings, kind=kind, name=name or f"{kind}-{next(_seq)}")
