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
