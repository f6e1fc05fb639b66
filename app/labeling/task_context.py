"""What the task screens show above every task: the batch's guidelines and the labeler's
progress (done today, left in the batch). Rendered by templates/labeling/_task_context.html."""

from __future__ import annotations

from datetime import datetime, time, timezone

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.labeling.models import Batch, Demonstration, Ranking, Task, TaskStatus
from app.users.models import User


def start_of_today() -> datetime:
    """Midnight UTC of today (the app's days are UTC days)."""
    return datetime.combine(utcnow().date(), time.min, tzinfo=timezone.utc)


def done_today(db: Session, user: User) -> dict[str, int]:
    """Submissions of this labeler since midnight UTC: rankings (evaluation judgments included)
    and demonstrations."""
    since = start_of_today()
    rankings = db.scalar(
        select(func.count()).select_from(Ranking).where(Ranking.labeler_id == user.id, Ranking.submitted_at >= since)
    ) or 0
    demos = db.scalar(
        select(func.count()).select_from(Demonstration).where(
            Demonstration.author_id == user.id, Demonstration.created_at >= since
        )
    ) or 0
    return {"rankings": rankings, "demonstrations": demos, "total": rankings + demos}


def batch_progress(db: Session, user: User, batch: Batch) -> dict[str, int]:
    """The batch's tasks: in all, done, still open, and how many more this labeler may take
    (open, not yet theirs, not skipped by them, admitted by group)."""
    from app.labeling.assignment import _eligible_tasks

    total, done = db.execute(
        select(func.count(), func.coalesce(func.sum(case((Task.status == TaskStatus.done, 1), else_=0)), 0))
        .where(Task.batch_id == batch.id)
    ).one()
    for_you = db.scalar(
        select(func.count()).select_from(Task).where(Task.batch_id == batch.id, _eligible_tasks(user, None))
    ) or 0
    mine = db.scalar(
        select(func.count()).select_from(Ranking).where(Ranking.batch_id == batch.id, Ranking.labeler_id == user.id)
    ) or 0
    mine += db.scalar(
        select(func.count()).select_from(Demonstration).join(Task, Task.id == Demonstration.task_id).where(
            Task.batch_id == batch.id, Demonstration.author_id == user.id
        )
    ) or 0
    return {"total": total, "done": int(done), "left": total - int(done), "left_for_you": for_you, "yours": mine}


def task_context(db: Session, user: User, task: Task | None = None, *, batch: Batch | None = None) -> dict:
    """The partial's context for ``user`` on ``task`` (or on ``batch``)."""
    if batch is None and task is not None and task.batch_id is not None:
        batch = db.get(Batch, task.batch_id)
    return {
        "batch": batch,
        "guidelines": (batch.guidelines or "") if batch is not None else "",
        "today": done_today(db, user),
        "progress": batch_progress(db, user, batch) if batch is not None else None,
    }
