"""Ranking submissions: validation of what a labeler sends, and the idempotent submit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, InvalidInput
from app.labeling import assignment as engine
from app.labeling.models import FLAGS, Assignment, Ranking, RankingEntry, RankingFlag, Task, TaskKind
from app.users.models import User

MAX_TIME_S = 24 * 3600


@dataclass
class RankingInput:
    """What a labeler submits: buckets of completion ids (best first; one bucket = a tie),
    per-response Likert 1-7 and flags, the "all responses are bad" mark, a comment, time spent."""

    ranked: list[list[int]]
    likert: dict[int, int | None] = field(default_factory=dict)
    flags: dict[int, list[str]] = field(default_factory=dict)
    all_bad: bool = False
    comment: str = ""
    time_spent_s: float | None = None


def validate(data: RankingInput, shown: list[int], settings: Settings) -> list[tuple[int, int]]:
    """Check a submission against the responses shown; return (completion_id, bucket) pairs.

    Every shown response appears exactly once, no bucket is empty, ratings are 1-7, flags are
    known, the comment fits. Errors are readable and name the field."""
    letters = {cid: chr(ord("A") + i) for i, cid in enumerate(shown)}
    if not isinstance(data.ranked, list) or not data.ranked:
        raise InvalidInput("Rank the responses: put every response into a rank before submitting.", field="ranked")
    placed: list[tuple[int, int]] = []
    seen: set[int] = set()
    for b, bucket in enumerate(data.ranked):
        if not isinstance(bucket, list) or not bucket:
            raise InvalidInput(f"Rank {b + 1} is empty: every rank must hold at least one response.", field="ranked")
        for cid in bucket:
            if not isinstance(cid, int) or isinstance(cid, bool) or cid not in letters:
                raise InvalidInput(f"Rank {b + 1} holds {cid!r}, which is not one of the responses shown.", field="ranked")
            if cid in seen:
                raise InvalidInput(f"Response {letters[cid]} appears more than once in the ranking.", field="ranked")
            seen.add(cid)
            placed.append((cid, b))
    missing = [letters[c] for c in shown if c not in seen]
    if missing:
        raise InvalidInput(f"Rank every response: {', '.join(missing)} not ranked yet.", field="ranked")
    for cid, value in data.likert.items():
        if cid not in letters:
            raise InvalidInput(f"A rating was given for {cid!r}, which is not one of the responses shown.", field="likert")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7):
            raise InvalidInput(f"The rating of response {letters[cid]} must be a whole number from 1 to 7.", field="likert")
    unrated = [letters[c] for c in shown if data.likert.get(c) is None]
    if unrated:
        raise InvalidInput(f"Rate every response from 1 to 7: {', '.join(unrated)} not rated yet.", field="likert")
    for cid, names in data.flags.items():
        if cid not in letters:
            raise InvalidInput(f"Flags were given for {cid!r}, which is not one of the responses shown.", field="flags")
        unknown = [n for n in names if n not in FLAGS]
        if unknown:
            raise InvalidInput(f"Unknown flag {unknown[0]!r} on response {letters[cid]}.", field="flags")
    if len(data.comment or "") > settings.max_comment_chars:
        raise InvalidInput(
            f"The comment has {len(data.comment)} characters; the limit is {settings.max_comment_chars}.", field="comment"
        )
    if data.time_spent_s is not None and (not math.isfinite(data.time_spent_s) or data.time_spent_s < 0):
        raise InvalidInput("time_spent_s must be a non-negative number of seconds.", field="time_spent_s")
    return placed


def existing_ranking(db: Session, assignment_id: int) -> Ranking | None:
    return db.scalar(select(Ranking).where(Ranking.assignment_id == assignment_id))


def submit_ranking(
    db: Session, assignment_id: int, user: User, data: RankingInput, *, settings: Settings
) -> tuple[Ranking, bool]:
    """Record the ranking of an assignment. Idempotent: a repeated submit of the same assignment
    returns the ranking already stored (created=False) instead of a second one."""
    assignment = engine.get_assignment(db, assignment_id, user)
    done = existing_ranking(db, assignment.id)
    if done is not None:
        return done, False
    task = db.get(Task, assignment.task_id)
    if task.kind != TaskKind.ranking:
        raise InvalidInput("This assignment is not a ranking task.", field="ranked")
    shown = list(assignment.shown_order or [])
    placed = validate(data, shown, settings)
    comment = (data.comment or "").strip()
    task = engine.lock_task(db, assignment.task_id)
    db.refresh(assignment)
    done = existing_ranking(db, assignment.id)  # a concurrent twin may have committed while we waited
    if done is not None:
        return done, False
    engine.check_room_to_submit(db, task, assignment)
    if comment and db.scalar(
        select(Ranking.id).where(Ranking.labeler_id == user.id, Ranking.comment == comment).limit(1)
    ):
        raise Conflict("You already submitted this exact comment on another task; write a comment for this one.", field="comment")
    elapsed = (utcnow() - assignment.leased_at).total_seconds()
    spent = data.time_spent_s if data.time_spent_s is not None else elapsed
    spent = min(max(spent, 0.0), MAX_TIME_S)
    position = {cid: i for i, cid in enumerate(shown)}
    ranking = Ranking(
        task_id=task.id, assignment_id=assignment.id, prompt_id=task.prompt_id, labeler_id=user.id,
        batch_id=task.batch_id, all_bad=bool(data.all_bad), comment=comment, time_spent_s=spent,
    )
    for cid, bucket in placed:
        entry = RankingEntry(completion_id=cid, bucket=bucket, likert=data.likert.get(cid), shown_position=position[cid])
        entry.flags = [RankingFlag(flag=f) for f in dict.fromkeys(data.flags.get(cid, []))]
        ranking.entries.append(entry)
    db.add(ranking)
    try:
        with db.begin_nested():
            db.flush()
    except IntegrityError:  # the unique assignment_id: a twin request got there first
        done = existing_ranking(db, assignment.id)
        if done is None:
            raise
        return done, False
    engine.record_submission(db, task, assignment)
    db.flush()
    return ranking, True


def ranking_view(ranking: Ranking) -> dict:
    """The wire form of a stored ranking (buckets best first)."""
    buckets: dict[int, list[int]] = {}
    ratings = []
    for e in sorted(ranking.entries, key=lambda e: (e.bucket, e.shown_position or 0)):
        buckets.setdefault(e.bucket, []).append(e.completion_id)
        ratings.append({"completion_id": e.completion_id, "likert": e.likert, "flags": sorted(f.flag for f in e.flags)})
    return {
        "id": ranking.id,
        "assignment_id": ranking.assignment_id,
        "task_id": ranking.task_id,
        "ranked": [buckets[b] for b in sorted(buckets)],
        "ratings": ratings,
        "all_bad": ranking.all_bad,
        "comment": ranking.comment,
        "time_spent_s": ranking.time_spent_s,
    }


def assignment_for_ranking(db: Session, assignment: Assignment):
    """Prompt and responses of a ranking assignment, in the order this labeler sees them."""
    from app.prompts.models import Completion, Prompt

    task = db.get(Task, assignment.task_id)
    prompt = db.get(Prompt, task.prompt_id)
    order = list(assignment.shown_order or [])
    rows = {c.id: c for c in db.scalars(select(Completion).where(Completion.id.in_(order)))}
    return task, prompt, [rows[c] for c in order]
