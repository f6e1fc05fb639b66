"""Ranking submissions: validation of what a labeler sends, and the idempotent submit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import case, insert, select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import strip_nul, utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.labeling import assignment as engine
from app.labeling.models import (
    FLAGS,
    Assignment,
    AssignmentStatus,
    Ranking,
    RankingEntry,
    RankingFlag,
    Task,
    TaskKind,
    TaskStatus,
)
from app.users.models import User

MAX_TIME_S = 24 * 3600

REFUSED_SAME_COMMENT = "You already submitted this exact comment on another task; write a comment for this one."
# A repeated submit that differs from the answer stored (a stale second tab): the first is kept.
KEPT_FIRST = ("You had already submitted this task (perhaps in another tab or window). The first answer was kept; "
              "the one you just sent was not recorded.")


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


def shape_ok(data: RankingInput, settings: Settings) -> list[tuple[int, int]] | None:
    """The (completion_id, bucket) pairs if everything ``validate`` checks, except that the ids
    are exactly the responses shown, holds; else None (then ``validate`` says what is wrong).
    Lets the PostgreSQL path check the ids in the database and read the order shown only to
    word an error."""
    if not isinstance(data.ranked, list) or not data.ranked:
        return None
    placed: list[tuple[int, int]] = []
    for b, bucket in enumerate(data.ranked):
        if not isinstance(bucket, list) or not bucket:
            return None
        for cid in bucket:
            if not isinstance(cid, int) or isinstance(cid, bool):
                return None
            placed.append((cid, b))
    ids = {cid for cid, _ in placed}
    if len(ids) != len(placed) or not set(data.likert) <= ids or not set(data.flags) <= ids:
        return None
    for cid in ids:
        value = data.likert.get(cid)
        if value is None or isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
            return None
    if any(n not in FLAGS for names in data.flags.values() for n in names):
        return None
    if len(data.comment or "") > settings.max_comment_chars:
        return None
    if data.time_spent_s is not None and (not math.isfinite(data.time_spent_s) or data.time_spent_s < 0):
        return None
    return placed


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


def _insert_ignoring_twin():
    """INSERT into rankings that does nothing when this assignment already has a ranking (the
    unique assignment_id): a twin request that got there first wins (SQLite path)."""
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    table = Ranking.__table__
    return sqlite_insert(table).on_conflict_do_nothing(index_elements=[table.c.assignment_id]).returning(table.c.id)


def submit_ranking(
    db: Session, assignment_id: int, user: User, data: RankingInput, *, settings: Settings
) -> tuple[dict, bool]:
    """Record the ranking of an assignment; returns (its wire view, created).

    Idempotent: a repeated submit of the same assignment returns the ranking already stored
    (created=False) instead of a second one. On PostgreSQL: one call to the database function
    ``rlhf_submit_ranking`` (app/labeling/pg_functions.py), same rules. In Python, for SQLite
    (where ``BEGIN IMMEDIATE`` serialises writers), one transaction of short statements: read the
    assignment (with its task and any ranking already stored), validate against the order shown,
    INSERT the ranking (ON CONFLICT on the unique assignment_id DO NOTHING), mark the assignment
    submitted unless it was skipped, count the submission under the overshoot guard
    ``submission_count < required_submissions`` (for a late submit, also counting others' live
    leases), and bulk-insert the entries and flags. Any refusal raises, and the request's
    transaction rolls everything back."""
    if db.get_bind().dialect.name == "postgresql":  # one call to rlhf_submit_ranking
        from app.labeling import pg_functions

        return pg_functions.submit_ranking(db, assignment_id, user, data, settings=settings)
    a_t, t_t, r_t = Assignment.__table__, Task.__table__, Ranking.__table__
    row = db.execute(
        select(a_t.c.labeler_id, a_t.c.status, a_t.c.expires_at, a_t.c.leased_at, a_t.c.shown_order, a_t.c.task_id,
               t_t.c.kind, t_t.c.prompt_id, t_t.c.batch_id, r_t.c.id.label("ranking_id"))
        .join(t_t, t_t.c.id == a_t.c.task_id)
        .outerjoin(r_t, r_t.c.assignment_id == a_t.c.id)
        .where(a_t.c.id == assignment_id)
    ).first()
    if row is None or row.labeler_id != user.id:
        raise NotFound(f"No assignment with id {assignment_id} for you.")
    if row.ranking_id is not None:
        return _stored_view(db, row.ranking_id), False
    if row.kind != TaskKind.ranking:
        raise InvalidInput("This assignment is not a ranking task.", field="ranked")
    shown = list(row.shown_order or [])
    placed = validate(data, shown, settings)
    comment = strip_nul((data.comment or "").strip())
    if row.status == AssignmentStatus.skipped:
        raise Conflict(engine.REFUSED_SKIPPED)
    if comment and db.scalar(
        select(r_t.c.id).where(r_t.c.labeler_id == user.id, r_t.c.comment == comment).limit(1)
    ):
        raise Conflict(REFUSED_SAME_COMMENT, field="comment")
    now = utcnow()
    elapsed = (now - row.leased_at).total_seconds()
    spent = data.time_spent_s if data.time_spent_s is not None else elapsed
    spent = min(max(spent, 0.0), MAX_TIME_S)
    all_bad = bool(data.all_bad)
    ranking_id = db.execute(_insert_ignoring_twin(), {
        "task_id": row.task_id, "assignment_id": assignment_id, "prompt_id": row.prompt_id, "labeler_id": user.id,
        "batch_id": row.batch_id, "all_bad": all_bad, "comment": comment, "time_spent_s": spent, "submitted_at": now,
    }).scalar()
    if ranking_id is None:  # a twin request committed this assignment's ranking first
        done = db.scalar(select(r_t.c.id).where(r_t.c.assignment_id == assignment_id))
        return _stored_view(db, done), False
    closed = db.execute(
        update(a_t)
        .where(a_t.c.id == assignment_id, a_t.c.status.not_in([AssignmentStatus.skipped, AssignmentStatus.submitted]))
        .values(status=AssignmentStatus.submitted, finished_at=now)
    ).rowcount
    if closed != 1:
        raise Conflict(engine.REFUSED_SKIPPED)
    live = row.status == AssignmentStatus.active and row.expires_at > now
    guard = t_t.c.submission_count < t_t.c.required_submissions
    if not live:
        # An expired lease may submit if the task still needs a submission nobody else holds:
        # lock the task first so that the count of others' live leases is exact.
        engine.lock_task(db, row.task_id)
        guard = t_t.c.submission_count + engine._live_count(t_t.c.id, now, exclude_assignment=assignment_id) < t_t.c.required_submissions
    counted = db.execute(
        update(t_t)
        .where(t_t.c.id == row.task_id, guard)
        .values(
            submission_count=t_t.c.submission_count + 1,
            status=case((t_t.c.submission_count + 1 >= t_t.c.required_submissions, TaskStatus.done.value), else_=t_t.c.status),
        )
    ).rowcount
    if counted != 1:
        raise Conflict(engine.REFUSED_LATE)
    position = {cid: i for i, cid in enumerate(shown)}
    entries = [
        {"ranking_id": ranking_id, "completion_id": cid, "bucket": bucket, "likert": data.likert.get(cid),
         "shown_position": position[cid]}
        for cid, bucket in placed
    ]
    flagged = {cid: list(dict.fromkeys(data.flags.get(cid) or [])) for cid, _ in placed}
    e_t = RankingEntry.__table__
    if any(flagged.values()):
        ids = db.execute(
            insert(e_t).returning(e_t.c.id, e_t.c.completion_id, sort_by_parameter_order=True), entries
        ).all()
        db.execute(insert(RankingFlag.__table__), [
            {"entry_id": eid, "flag": f} for eid, cid in ids for f in flagged[cid]
        ])
    else:
        db.execute(insert(e_t), entries)
    return ranking_wire(ranking_id, assignment_id, row.task_id, all_bad, comment, spent, [
        (e["completion_id"], e["bucket"], e["likert"], e["shown_position"], flagged[e["completion_id"]]) for e in entries
    ]), True


def same_answer(data: RankingInput, view: dict) -> bool:
    """Does a submission say what the stored ranking (its wire view) says? Ties compare as sets,
    flags as sets, the comment as stored (trimmed); the time spent does not count."""
    try:
        sent = [sorted(int(c) for c in bucket) for bucket in data.ranked]
    except (TypeError, ValueError):
        return False
    if sent != [sorted(bucket) for bucket in view["ranked"]]:
        return False
    for r in view["ratings"]:
        cid = r["completion_id"]
        if data.likert.get(cid) != r["likert"] or set(data.flags.get(cid) or []) != set(r["flags"]):
            return False
    return bool(data.all_bad) == bool(view["all_bad"]) and strip_nul((data.comment or "").strip()) == (view["comment"] or "")


def repeat_note(data: RankingInput, view: dict) -> dict:
    """What a repeated submit adds to the stored ranking's view: whether it said the same; if not,
    that the first answer was kept. The same on both engines (computed from the view they return)."""
    same = same_answer(data, view)
    return {"already_submitted": True, "same_as_sent": same, **({} if same else {"message": KEPT_FIRST})}


def _stored_view(db: Session, ranking_id: int) -> dict:
    return ranking_view(db.get(Ranking, ranking_id, populate_existing=True))


def ranking_wire(ranking_id, assignment_id, task_id, all_bad, comment, time_spent_s, entries) -> dict:
    """The wire form of a ranking (buckets best first, ties in the order shown) from its entries:
    (completion_id, bucket, likert, shown_position, flags) tuples in any order."""
    buckets: dict[int, list[int]] = {}
    ratings = []
    for cid, bucket, likert, position, flags in sorted(entries, key=lambda e: (e[1], e[3] or 0)):
        buckets.setdefault(bucket, []).append(cid)
        ratings.append({"completion_id": cid, "likert": likert, "flags": sorted(flags or [])})
    return {
        "id": ranking_id,
        "assignment_id": assignment_id,
        "task_id": task_id,
        "ranked": [buckets[b] for b in sorted(buckets)],
        "ratings": ratings,
        "all_bad": all_bad,
        "comment": comment,
        "time_spent_s": time_spent_s,
    }


def ranking_view(ranking: Ranking) -> dict:
    """The wire form of a stored ranking (buckets best first)."""
    return ranking_wire(
        ranking.id, ranking.assignment_id, ranking.task_id, ranking.all_bad, ranking.comment, ranking.time_spent_s,
        [(e.completion_id, e.bucket, e.likert, e.shown_position, [f.flag for f in e.flags]) for e in ranking.entries],
    )


def assignment_for_ranking(db: Session, assignment: Assignment):
    """Prompt and responses of a ranking assignment, in the order this labeler sees them."""
    from app.prompts.models import Completion, Prompt

    task = db.get(Task, assignment.task_id)
    prompt = db.get(Prompt, task.prompt_id)
    order = list(assignment.shown_order or [])
    rows = {c.id: c for c in db.scalars(select(Completion).where(Completion.id.in_(order)))}
    return task, prompt, [rows[c] for c in order]
