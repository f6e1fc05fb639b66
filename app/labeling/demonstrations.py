"""Demonstrations: autosaved drafts and the idempotent submit of the ideal response."""

from __future__ import annotations

import hashlib
import math

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, InvalidInput
from app.labeling import assignment as engine
from app.labeling.models import AssignmentStatus, Demonstration, Draft, Task, TaskKind
from app.prompts.scrub import scrub
from app.prompts.service import normalise
from app.users.models import User

MAX_TIME_S = 24 * 3600


def _check_time(value: float | None) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise InvalidInput("time_spent_s must be a non-negative number of seconds.", field="time_spent_s")
    return min(value, MAX_TIME_S)


def get_draft(db: Session, user: User, task_id: int) -> Draft | None:
    return db.scalar(select(Draft).where(Draft.labeler_id == user.id, Draft.task_id == task_id))


def save_draft(db: Session, assignment_id: int, user: User, text: str, time_spent_s: float | None, *, settings: Settings) -> Draft:
    """Upsert the labeler's draft for the assignment's task. Works on an expired lease too: a
    draft is never lost (it is the labeler's work, kept until they submit)."""
    assignment = engine.get_assignment(db, assignment_id, user)
    if assignment.status == AssignmentStatus.submitted:
        raise Conflict("This demonstration is already submitted.")
    text = text or ""
    if len(text) > settings.max_demonstration_chars:
        raise InvalidInput(
            f"The draft has {len(text)} characters; the limit is {settings.max_demonstration_chars}.", field="text"
        )
    spent = _check_time(time_spent_s)
    draft = get_draft(db, user, assignment.task_id)
    if draft is None:
        draft = Draft(labeler_id=user.id, task_id=assignment.task_id, text=text, time_spent_s=spent or 0.0)
        db.add(draft)
        try:
            with db.begin_nested():
                db.flush()
            return draft
        except IntegrityError:  # two autosaves raced; the other created the row
            draft = get_draft(db, user, assignment.task_id)
    draft.text = text
    if spent is not None:
        draft.time_spent_s = max(draft.time_spent_s, spent)
    draft.updated_at = utcnow()
    db.flush()
    return draft


def existing_demonstration(db: Session, assignment_id: int) -> Demonstration | None:
    return db.scalar(select(Demonstration).where(Demonstration.assignment_id == assignment_id))


def same_text(text: str, demo: Demonstration) -> bool:
    """Does a submitted text say what the stored demonstration says (as stored: trimmed, scrubbed)?"""
    return scrub((text or "").strip())[0] == demo.text


def repeat_note(text: str, demo: Demonstration) -> dict:
    """What a repeated submit adds to the stored demonstration's view (see ranking.repeat_note)."""
    from app.labeling.ranking import KEPT_FIRST

    same = same_text(text, demo)
    return {"already_submitted": True, "same_as_sent": same, **({} if same else {"message": KEPT_FIRST})}


def submit_demonstration(
    db: Session, assignment_id: int, user: User, text: str, time_spent_s: float | None, *, settings: Settings
) -> tuple[Demonstration, bool]:
    """Record the demonstration; a repeated submit of the same assignment returns the first one."""
    assignment = engine.get_assignment(db, assignment_id, user)
    done = existing_demonstration(db, assignment.id)
    if done is not None:
        return done, False
    task = db.get(Task, assignment.task_id)
    if task.kind != TaskKind.demonstration:
        raise InvalidInput("This assignment is not a demonstration task.", field="text")
    text = (text or "").strip()
    if not text:
        raise InvalidInput("Write the ideal response before submitting.", field="text")
    if len(text) > settings.max_demonstration_chars:
        raise InvalidInput(
            f"The response has {len(text)} characters; the limit is {settings.max_demonstration_chars}.", field="text"
        )
    spent = _check_time(time_spent_s)
    clean, _kinds = scrub(text)
    digest = hashlib.sha256(normalise(clean).encode()).hexdigest()
    task = engine.lock_task(db, assignment.task_id)
    db.refresh(assignment)
    done = existing_demonstration(db, assignment.id)
    if done is not None:
        return done, False
    engine.check_room_to_submit(db, task, assignment)
    if db.scalar(select(Demonstration.id).where(Demonstration.author_id == user.id, Demonstration.content_hash == digest)):
        raise Conflict("You already submitted this exact text for another prompt; write a response for this one.", field="text")
    draft = get_draft(db, user, task.id)
    if spent is None:
        spent = draft.time_spent_s if draft else (utcnow() - assignment.leased_at).total_seconds()
    demo = Demonstration(
        task_id=task.id, assignment_id=assignment.id, prompt_id=task.prompt_id, author_id=user.id,
        text=clean, content_hash=digest, time_spent_s=min(spent, MAX_TIME_S),
    )
    db.add(demo)
    try:
        with db.begin_nested():
            db.flush()
    except IntegrityError:
        done = existing_demonstration(db, assignment.id)
        if done is None:
            raise Conflict("You already submitted this exact text; write a response for this prompt.", field="text") from None
        return done, False
    engine.record_submission(db, task, assignment)
    if draft is not None:
        db.delete(draft)
    db.flush()
    return demo, True
