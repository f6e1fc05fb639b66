"""The lease engine: "next task", leases that expire, and the capacity rule behind no-overshoot.

A task has room for a new lease while ``submission_count + live leases < required_submissions``
(a live lease is an active assignment whose ``expires_at`` is still ahead). Every change to a
task's leases or submissions first locks the task row (``SELECT ... FOR UPDATE``; on SQLite the
``BEGIN IMMEDIATE`` of app.db serialises writers), so two labelers racing for the last slot of a
task cannot both get it: on PostgreSQL the second one skips the locked row (``SKIP LOCKED``)
and takes the next task instead of waiting.

On PostgreSQL, "next task" and "submit ranking" run as database functions with these rules
(app/labeling/pg_functions.py, migration 0004); the Python below runs them on SQLite. Skips,
demonstrations and the wire views are the same Python on both.
"""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import and_, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.labeling.models import (
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    SkipReason,
    Task,
    TaskItem,
    TaskKind,
    TaskStatus,
)
from app.prompts.models import Completion, Prompt
from app.users.models import LabelerGroup, User


# Why a submit is refused (409), worded for the labeler; every submit path says the same.
REFUSED_SKIPPED = "You skipped this task; it can no longer be submitted."
REFUSED_LATE = (
    "Your lease on this task expired and other labelers have completed it meanwhile, so this "
    "submission was not recorded. Take the next task."
)


def live_leases(db: Session, task_id: int, *, exclude_assignment: int | None = None) -> int:
    q = select(func.count()).select_from(Assignment).where(
        Assignment.task_id == task_id,
        Assignment.status == AssignmentStatus.active,
        Assignment.expires_at > utcnow(),
    )
    if exclude_assignment is not None:
        q = q.where(Assignment.id != exclude_assignment)
    return db.scalar(q)


def lock_task(db: Session, task_id: int) -> Task:
    """The task row, locked until the transaction ends (waits for other holders)."""
    task = db.scalars(
        select(Task).where(Task.id == task_id).with_for_update().execution_options(populate_existing=True)
    ).one()
    return task


def _eligible_tasks(user: User, kind: TaskKind | None):
    """Open tasks this labeler may get: open batch, group admitted, never before, not their own
    content, not a prompt they skipped."""
    mine = select(Assignment.id).where(Assignment.task_id == Task.id, Assignment.labeler_id == user.id)
    t2 = Task.__table__.alias("skipped_task")
    skipped = (
        select(Assignment.id)
        .join(t2, Assignment.task_id == t2.c.id)
        .where(
            Assignment.labeler_id == user.id,
            Assignment.status == AssignmentStatus.skipped,
            t2.c.prompt_id == Task.prompt_id,
        )
    )
    own_prompt = select(Prompt.id).where(Prompt.id == Task.prompt_id, Prompt.author_id == user.id)
    own_completion = (
        select(TaskItem.id)
        .join(Completion, Completion.id == TaskItem.completion_id)
        .where(TaskItem.task_id == Task.id, Completion.author_id == user.id)
    )
    batch_ok = select(Batch.id).where(
        Batch.id == Task.batch_id,
        Batch.status == BatchStatus.open,
        or_(Batch.include_heldout.is_(True), user.labeler_group != LabelerGroup.heldout),
        or_(Batch.heldout_only.is_(False), user.labeler_group == LabelerGroup.heldout),
    )
    conditions = [
        Task.status == TaskStatus.open,
        exists(batch_ok),
        ~exists(mine),
        ~exists(skipped),
        ~exists(own_prompt),
        ~exists(own_completion),
    ]
    if kind is not None:
        conditions.append(Task.kind == kind)
    return and_(*conditions)


def _current_query(user: User, kind: TaskKind | None, what):
    q = (
        select(what)
        .join(Task, Task.id == Assignment.task_id)
        .where(
            Assignment.labeler_id == user.id,
            Assignment.status == AssignmentStatus.active,
            Assignment.expires_at > utcnow(),
            Task.status == TaskStatus.open,
        )
        .order_by(Assignment.id)
        .limit(1)
    )
    if kind is not None:
        q = q.where(Task.kind == kind)
    return q


def current_assignment(db: Session, user: User, kind: TaskKind | None = None) -> Assignment | None:
    """The labeler's live lease (of ``kind``), if any: "next task" resumes it instead of taking more."""
    return db.scalar(_current_query(user, kind, Assignment))


def _live_count(task_id_col, now, exclude_assignment=None):
    """Correlated count of a task's live leases (for use inside a statement)."""
    q = select(func.count()).select_from(Assignment).where(
        Assignment.task_id == task_id_col,
        Assignment.status == AssignmentStatus.active,
        Assignment.expires_at > now,
    )
    if exclude_assignment is not None:
        q = q.where(Assignment.id != exclude_assignment)
    return q.scalar_subquery()


def _first_expiry(task_id_col, now):
    """Correlated earliest expiry among a task's live leases (NULL when none)."""
    return (
        select(func.min(Assignment.expires_at))
        .where(Assignment.task_id == task_id_col, Assignment.status == AssignmentStatus.active, Assignment.expires_at > now)
        .scalar_subquery()
    )


def lease_next(db: Session, user: User, kind: TaskKind | None = None) -> dict | None:
    """Lease the highest-priority task this labeler may do (or resume their live lease): the
    assignment's wire view (see ``lease_view``), or None if no work is free."""
    return next_or_why(db, user, kind)[0]


def _lease_next_sqlite(db: Session, user: User, kind: TaskKind | None) -> dict | None:
    """``lease_next`` in Python, for SQLite (PostgreSQL runs the same steps in the function
    ``rlhf_lease_next``, migration 0004): the live-lease check, one ``SELECT ... LIMIT 1`` that
    picks ONE task with room (eligibility and capacity in SQL), one read of its prompt and
    responses that also re-counts its room, and the INSERT of the lease. The ``BEGIN IMMEDIATE``
    transaction of app.db serialises writers, so the count is exact.

    The lease that takes a task's last free slot sets ``tasks.leased_until`` (the first expiry
    among its live leases), so that later picks pass the full task without counting its leases.
    """
    existing = db.scalar(_current_query(user, kind, Assignment.id))
    if existing is not None:
        return lease_view(db, existing)
    now = utcnow()
    tried: list[int] = []
    for _attempt in range(6):
        lease_q = select(Batch.lease_minutes).where(Batch.id == Task.batch_id).scalar_subquery()
        q = (
            select(Task.id, Task.kind, lease_q)
            .where(_eligible_tasks(user, kind))
            .where(or_(Task.leased_until.is_(None), Task.leased_until <= now))
            .where(Task.submission_count + _live_count(Task.id, now) < Task.required_submissions)
            .order_by(Task.priority.desc(), Task.id)
            .limit(1)
        )
        if tried:
            q = q.where(Task.id.not_in(tried))
        row = db.execute(q).first()
        if row is None:
            return None
        task_id, task_kind, batch_minutes = row
        tried.append(task_id)
        room = Task.required_submissions - Task.submission_count - _live_count(Task.id, now)
        first_expiry = _first_expiry(Task.id, now)
        if task_kind == TaskKind.ranking:  # re-count and read the responses in one statement
            rows = _task_content(db, task_id, room.label("room"), first_expiry.label("first_expiry"))
            left, first = (rows[0].room, rows[0].first_expiry) if rows else (0, None)
        else:
            rows = []
            left, first = db.execute(select(room, first_expiry).where(Task.id == task_id)).one()
        if left <= 0:
            continue
        shown = None
        if task_kind == TaskKind.ranking:
            shown = [r.completion_id for r in rows]
            random.SystemRandom().shuffle(shown)  # a fresh order per labeler; recorded
        expires = now + timedelta(minutes=batch_minutes)
        aid = db.execute(
            insert(Assignment.__table__).returning(Assignment.__table__.c.id),
            {"task_id": task_id, "labeler_id": user.id, "status": AssignmentStatus.active, "leased_at": now,
             "expires_at": expires, "shown_order": shown},
        ).scalar_one()
        full_until = (min(first, expires) if first is not None else expires) if left == 1 else None
        db.execute(update(Task.__table__).where(Task.id == task_id).values(leased_until=full_until))
        if task_kind == TaskKind.ranking:
            prompt = (rows[0].prompt_id, rows[0].prompt_text) if rows else _prompt_of(db, task_id)
            by_id = {r.completion_id: r.text for r in rows}
            responses = [{"completion_id": c, "text": by_id[c]} for c in shown]
        else:
            prompt = _prompt_of(db, task_id)
            responses = None
        return lease_wire(aid, task_id, task_kind, AssignmentStatus.active, expires, prompt, responses)
    return None


def _task_content(db: Session, task_id: int, *extra):
    """Prompt and responses of a ranking task in canonical order: one query."""
    return db.execute(
        select(TaskItem.completion_id, Completion.text, Prompt.id.label("prompt_id"), Prompt.text.label("prompt_text"), *extra)
        .join(Completion, Completion.id == TaskItem.completion_id)
        .join(Task, Task.id == TaskItem.task_id)
        .join(Prompt, Prompt.id == Task.prompt_id)
        .where(TaskItem.task_id == task_id)
        .order_by(TaskItem.position)
    ).all()


def _prompt_of(db: Session, task_id: int) -> tuple[int, str]:
    return tuple(db.execute(select(Prompt.id, Prompt.text).join(Task, Task.prompt_id == Prompt.id).where(Task.id == task_id)).one())


def lease_wire(aid, task_id, kind, status, expires_at, prompt, responses) -> dict:
    """The wire view of an assignment: prompt, and for a ranking the responses in the order shown."""
    out = {
        "assignment_id": aid, "task_id": task_id, "kind": TaskKind(kind).value, "status": AssignmentStatus(status).value,
        "expires_at": expires_at.isoformat(), "prompt": {"id": prompt[0], "text": prompt[1]},
    }
    if responses is not None:
        out["responses"] = responses
    return out


def lease_view(db: Session, assignment_id: int) -> dict:
    """The wire view of an assignment: prompt and (ranking) responses in the order this labeler sees them."""
    a = db.execute(
        select(Assignment.id, Assignment.task_id, Assignment.status, Assignment.expires_at, Assignment.shown_order, Task.kind)
        .join(Task, Task.id == Assignment.task_id)
        .where(Assignment.id == assignment_id)
    ).one()
    if a.kind == TaskKind.ranking:
        rows = _task_content(db, a.task_id)
        by_id = {r.completion_id: r.text for r in rows}
        prompt = (rows[0].prompt_id, rows[0].prompt_text) if rows else _prompt_of(db, a.task_id)
        responses = [{"completion_id": c, "text": by_id[c]} for c in (a.shown_order or [])]
    else:
        prompt = _prompt_of(db, a.task_id)
        responses = None
    return lease_wire(a.id, a.task_id, a.kind, a.status, a.expires_at, prompt, responses)


def tasks_held_full(db: Session, user: User, kind: TaskKind | None = None) -> int:
    """Open tasks of open batches this labeler may take, whose every free slot is leased right now
    (``leased_until``); tasks of batches closed to the labeler's group are not counted."""
    q = (
        select(func.count()).select_from(Task).join(Batch, Batch.id == Task.batch_id)
        .where(Task.status == TaskStatus.open, Batch.status == BatchStatus.open, Task.leased_until > utcnow(),
               or_(Batch.include_heldout.is_(True), user.labeler_group != LabelerGroup.heldout),
               or_(Batch.heldout_only.is_(False), user.labeler_group == LabelerGroup.heldout))
    )
    if kind is not None:
        q = q.where(Task.kind == kind)
    return db.scalar(q)


def no_work_message(busy: int, kind: TaskKind | None = None) -> str:
    """Why "next task" found nothing: no work at all, or ``busy`` tasks that others hold right now."""
    what = {TaskKind.ranking: "ranking tasks", TaskKind.demonstration: "demonstrations"}.get(kind, "tasks")
    if not busy:
        return f"No {what} are waiting for you right now."
    return (f"No {what} are free right now: {busy} {'task is' if busy == 1 else 'tasks are'} being worked on "
            "by other labelers and come back if their leases run out. Try again in a few minutes.")


def next_or_why(db: Session, user: User, kind: TaskKind | None = None) -> tuple[dict | None, str]:
    """Lease the next task: (wire view, ""), or (None, why no work is free)."""
    if db.get_bind().dialect.name == "postgresql":  # one call to rlhf_lease_next
        from app.labeling import pg_functions

        return pg_functions.lease_next(db, user, kind)
    view = _lease_next_sqlite(db, user, kind)
    return (view, "") if view is not None else (None, no_work_message(tasks_held_full(db, user, kind), kind))


def next_assignment(db: Session, user: User, kind: TaskKind | None = None) -> Assignment | None:
    """Lease the highest-priority task this labeler may do, or resume their live lease; None if no work."""
    view = lease_next(db, user, kind)
    return None if view is None else db.get(Assignment, view["assignment_id"])


def get_assignment(db: Session, assignment_id: int, user: User) -> Assignment:
    """The labeler's own assignment; someone else's is "not found" (no leaking of ids)."""
    assignment = db.get(Assignment, assignment_id)
    if assignment is None or assignment.labeler_id != user.id:
        raise NotFound(f"No assignment with id {assignment_id} for you.")
    return assignment


def is_live(assignment: Assignment) -> bool:
    return assignment.status == AssignmentStatus.active and assignment.expires_at > utcnow()


def parse_skip_reason(value: str) -> SkipReason:
    try:
        return SkipReason(value)
    except ValueError:
        choices = ", ".join(r.value for r in SkipReason)
        raise InvalidInput(f"Choose why you skip: {choices}.", field="reason") from None


MAX_SKIP_NOTE_CHARS = 2000


def skip(db: Session, assignment_id: int, user: User, reason: str | SkipReason, note: str = "") -> Assignment:
    """Give the task back with a reason (and the labeler's own words: needed for "other"); its
    prompt leaves this labeler's queue for good. Skips are kept on the assignment
    (``skip_reason``, ``skip_note``) for admins to count."""
    reason = parse_skip_reason(reason) if isinstance(reason, str) else reason
    note = (note or "").replace("\x00", "").strip()
    if len(note) > MAX_SKIP_NOTE_CHARS:
        raise InvalidInput(f"The note has {len(note)} characters; the limit is {MAX_SKIP_NOTE_CHARS}.", field="note")
    if reason == SkipReason.other and not note:
        raise InvalidInput("Say in the note why you skip (the reason is \"other\").", field="note")
    assignment = get_assignment(db, assignment_id, user)
    if assignment.status == AssignmentStatus.skipped:
        return assignment
    if assignment.status == AssignmentStatus.submitted:
        raise InvalidInput("This task is already submitted; it cannot be skipped.", field="reason")
    task = lock_task(db, assignment.task_id)
    task.leased_until = None  # the slot is free again
    assignment.status = AssignmentStatus.skipped
    assignment.skip_reason = reason
    assignment.skip_note = note or None
    assignment.finished_at = utcnow()
    db.flush()
    return assignment


def record_submission(db: Session, task: Task, assignment: Assignment) -> None:
    """Count one submission on a locked task and close the assignment (and the task when full)."""
    task.submission_count += 1
    if task.submission_count >= task.required_submissions:
        task.status = TaskStatus.done
    assignment.status = AssignmentStatus.submitted
    assignment.finished_at = utcnow()


def check_room_to_submit(db: Session, task: Task, assignment: Assignment) -> None:
    """On a locked task: may this assignment still submit? A live lease always may (its slot was
    reserved); an expired one may if the task still needs a submission nobody else holds."""
    if assignment.status in (AssignmentStatus.skipped,):
        raise Conflict(REFUSED_SKIPPED)
    if is_live(assignment):
        if task.submission_count < task.required_submissions:
            return
    elif task.submission_count + live_leases(db, task.id, exclude_assignment=assignment.id) < task.required_submissions:
        return
    raise Conflict(REFUSED_LATE)
