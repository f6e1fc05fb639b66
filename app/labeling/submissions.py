"""Submitted work, read back: lists of rankings (evaluation judgments included) and
demonstrations, filtered by labeler, batch or task, newest first and paginated; and one
submission in full (prompt, responses, what was submitted). Used by the labeler's own history
(app/labeling/history_pages.py) and the admins' review (app/labeling/review_pages.py)."""

from __future__ import annotations

import string
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app.errors import InvalidInput, NotFound
from app.labeling.models import FLAGS, Batch, Demonstration, Ranking, RankingEntry, Task
from app.prompts.models import Completion, Prompt
from app.users.models import User

PER_PAGE = 25
MAX_PAGE = 100_000
KINDS = ("ranking", "demonstration")


@dataclass
class Filters:
    labeler_id: int | None = None
    batch_id: int | None = None
    task_ids: list[int] | None = None  # e.g. the tasks below an agreement threshold
    kind: str | None = None  # ranking (with evaluation judgments) or demonstration


def page_number(value: str | None) -> int:
    try:
        page = int(value or 1)
    except ValueError:
        raise InvalidInput("The page must be a whole number from 1.", field="page") from None
    if not 1 <= page <= MAX_PAGE:
        raise InvalidInput(f"The page must be from 1 to {MAX_PAGE}.", field="page")
    return page


def _ranking_query(f: Filters):
    q = (
        select(Ranking.id, Ranking.submitted_at, Ranking.task_id, Ranking.prompt_id, Batch.id, Batch.name, Batch.purpose,
               User.username, Ranking.external_labeler, func.substr(Prompt.text, 1, 160))
        .join(Batch, Batch.id == Ranking.batch_id).join(Prompt, Prompt.id == Ranking.prompt_id)
        .outerjoin(User, User.id == Ranking.labeler_id)
    )
    if f.labeler_id is not None:
        q = q.where(Ranking.labeler_id == f.labeler_id)
    if f.batch_id is not None:
        q = q.where(Ranking.batch_id == f.batch_id)
    if f.task_ids is not None:
        q = q.where(Ranking.task_id.in_(f.task_ids or [-1]))
    return q


def _demo_query(f: Filters):
    q = (
        select(Demonstration.id, Demonstration.created_at, Demonstration.task_id, Demonstration.prompt_id, Batch.id,
               Batch.name, Batch.purpose, User.username, func.substr(Prompt.text, 1, 160))
        .outerjoin(Task, Task.id == Demonstration.task_id).outerjoin(Batch, Batch.id == Task.batch_id)
        .join(Prompt, Prompt.id == Demonstration.prompt_id).outerjoin(User, User.id == Demonstration.author_id)
    )
    if f.labeler_id is not None:
        q = q.where(Demonstration.author_id == f.labeler_id)
    if f.batch_id is not None:
        q = q.where(Task.batch_id == f.batch_id)
    return q


def list_submissions(db: Session, f: Filters, *, page: int = 1, per_page: int = PER_PAGE) -> tuple[list[dict], int]:
    """One page of submissions, newest first, and how many there are in all."""
    if f.kind not in (None, *KINDS):
        raise InvalidInput("kind must be 'ranking' or 'demonstration'.", field="kind")
    want = page * per_page
    rows: list[dict] = []
    total = 0
    if f.kind in (None, "ranking"):
        q = _ranking_query(f)
        total += db.scalar(select(func.count()).select_from(q.subquery())) or 0
        for rid, at, tid, pid, bid, bname, purpose, who, ext, excerpt in db.execute(
            q.order_by(Ranking.submitted_at.desc(), Ranking.id.desc()).limit(want)
        ):
            rows.append({"kind": "evaluation" if purpose == "evaluation" else "ranking", "id": rid, "at": at,
                         "task_id": tid, "prompt_id": pid, "batch_id": bid, "batch": bname,
                         "labeler": who or (f"external: {ext}" if ext else ""), "excerpt": excerpt})
    if f.kind in (None, "demonstration") and f.task_ids is None:
        q = _demo_query(f)
        total += db.scalar(select(func.count()).select_from(q.subquery())) or 0
        for did, at, tid, pid, bid, bname, _purpose, who, excerpt in db.execute(
            q.order_by(Demonstration.created_at.desc(), Demonstration.id.desc()).limit(want)
        ):
            rows.append({"kind": "demonstration", "id": did, "at": at, "task_id": tid, "prompt_id": pid,
                         "batch_id": bid, "batch": bname or "", "labeler": who or "", "excerpt": excerpt})
    rows.sort(key=lambda r: (r["at"], r["id"]), reverse=True)
    return rows[(page - 1) * per_page: want], total


def letter(position: int | None) -> str:
    return string.ascii_uppercase[position] if position is not None and 0 <= position < 26 else "?"


def ranking_detail(db: Session, ranking_id: int, *, labeler_id: int | None = None) -> dict:
    """One ranking as it was submitted: the prompt, the responses in the order this labeler saw
    them (A, B, ...), and the order with ties (groups of equal rank), ratings and flags.
    ``labeler_id``: only that labeler's own (404 for anyone else's)."""
    r = db.scalar(
        select(Ranking).options(selectinload(Ranking.entries).selectinload(RankingEntry.flags)).where(Ranking.id == ranking_id)
    )
    if r is None or (labeler_id is not None and r.labeler_id != labeler_id):
        raise NotFound(f"No ranking with id {ranking_id}.")
    texts = dict(db.execute(
        select(Completion.id, Completion.text).where(Completion.id.in_([e.completion_id for e in r.entries] or [-1]))
    ).all())
    models = dict(db.execute(
        select(Completion.id, Completion.model_name).where(Completion.id.in_([e.completion_id for e in r.entries] or [-1]))
    ).all())
    entries = []
    for i, e in enumerate(sorted(r.entries, key=lambda e: (e.shown_position if e.shown_position is not None else 99, e.id))):
        entries.append({
            "letter": letter(e.shown_position if e.shown_position is not None else i), "completion_id": e.completion_id,
            "text": texts.get(e.completion_id, ""), "model": models.get(e.completion_id), "bucket": e.bucket,
            "likert": e.likert, "flags": [FLAGS.get(fl.flag, fl.flag) for fl in e.flags],
        })
    buckets: dict[int, list[dict]] = {}
    for e in entries:
        buckets.setdefault(e["bucket"], []).append(e)
    order = [buckets[b] for b in sorted(buckets)]
    batch = db.get(Batch, r.batch_id)
    return {
        "kind": "evaluation" if batch is not None and batch.purpose == "evaluation" else "ranking",
        "ranking": r, "prompt": db.get(Prompt, r.prompt_id), "batch": batch, "entries": entries, "order": order,
        "labeler": db.get(User, r.labeler_id) if r.labeler_id else None,
    }


def demonstration_detail(db: Session, demo_id: int, *, labeler_id: int | None = None) -> dict:
    d = db.get(Demonstration, demo_id)
    if d is None or (labeler_id is not None and d.author_id != labeler_id):
        raise NotFound(f"No demonstration with id {demo_id}.")
    task = db.get(Task, d.task_id) if d.task_id else None
    return {
        "kind": "demonstration", "demonstration": d, "prompt": db.get(Prompt, d.prompt_id),
        "batch": db.get(Batch, task.batch_id) if task else None,
        "labeler": db.get(User, d.author_id) if d.author_id else None,
    }
