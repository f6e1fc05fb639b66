"""The lease engine: "next task", leases that expire, and the capacity rule behind no-overshoot.

A task has room for a new lease while ``submission_count + live leases < required_submissions``
(a live lease is an active assignment whose ``expires_at`` is still ahead). Every change to a
task's leases or submissions first locks the task row (``SELECT ... FOR UPDATE``; on SQLite the
``BEGIN IMMEDIATE`` of app.db serialises writers), so two labelers racing for the last slot of a
task cannot both get it: on PostgreSQL the second one skips the locked row (``SKIP LOCKED``)
and takes the next task instead of waiting.
"""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import and_, exists, func, or_, select
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

CANDIDATES = 8  # tasks locked per attempt; the first with room wins


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


def current_assignment(db: Session, user: User, kind: TaskKind | None = None) -> Assignment | None:
    """The labeler's live lease (of ``kind``), if any: "next task" resumes it instead of taking more."""
    q = (
        select(Assignment)
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
    return db.scalar(q)


def next_assignment(db: Session, user: User, kind: TaskKind | None = None, *, lease_minutes: int | None = None) -> Assignment | None:
    """Lease the highest-priority task this labeler may do, or resume their live lease; None if no work."""
    existing = current_assignment(db, user, kind)
    if existing is not None:
        return existing
    dialect = db.get_bind().dialect.name
    tried: set[int] = set()
    for _attempt in range(6):
        q = (
            select(Task)
            .where(_eligible_tasks(user, kind))
            .order_by(Task.priority.desc(), Task.id)
            .limit(CANDIDATES)
        )
        if tried:
            q = q.where(Task.id.not_in(tried))
        if dialect == "postgresql":
            q = q.with_for_update(skip_locked=True, of=Task)
        candidates = db.scalars(q.execution_options(populate_existing=True)).all()
        if not candidates:
            return None
        for task in candidates:
            tried.add(task.id)
            # The row is locked now: this count cannot change under us.
            if task.submission_count + live_leases(db, task.id) >= task.required_submissions:
                continue
            return _lease(db, task, user, lease_minutes)
    return None


def _lease(db: Session, task: Task, user: User, lease_minutes: int | None) -> Assignment:
    batch = db.get(Batch, task.batch_id)
    minutes = lease_minutes or batch.lease_minutes
    now = utcnow()
    shown = None
    if task.kind == TaskKind.ranking:
        shown = [item.completion_id for item in task.items]
        random.SystemRandom().shuffle(shown)  # a fresh order per labeler; recorded
    assignment = Assignment(
        task_id=task.id, labeler_id=user.id, status=AssignmentStatus.active, leased_at=now,
        expires_at=now + timedelta(minutes=minutes), shown_order=shown,
    )
    db.add(assignment)
    db.flush()
    return assignment


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


def skip(db: Session, assignment_id: int, user: User, reason: str | SkipReason) -> Assignment:
    """Give the task back with a reason; its prompt leaves this labeler's queue for good."""
    reason = parse_skip_reason(reason) if isinstance(reason, str) else reason
    assignment = get_assignment(db, assignment_id, user)
    if assignment.status == AssignmentStatus.skipped:
        return assignment
    if assignment.status == AssignmentStatus.submitted:
        raise InvalidInput("This task is already submitted; it cannot be skipped.", field="reason")
    lock_task(db, assignment.task_id)
    assignment.status = AssignmentStatus.skipped
    assignment.skip_reason = reason
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
        raise Conflict("You skipped this task; it can no longer be submitted.")
    if is_live(assignment):
        if task.submission_count < task.required_submissions:
            return
    elif task.submission_count + live_leases(db, task.id, exclude_assignment=assignment.id) < task.required_submissions:
        return
    raise Conflict(
        "Your lease on this task expired and other labelers have completed it meanwhile, so this "
        "submission was not recorded. Take the next task."
    )
