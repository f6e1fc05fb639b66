"""Batches: creating demonstration and ranking batches from prompts and completions; queue stats."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.labeling import selection as prompt_selection
from app.labeling.models import (
    Assignment,
    AssignmentStatus,
    Batch,
    BatchStatus,
    Demonstration,
    Ranking,
    Task,
    TaskItem,
    TaskKind,
    TaskStatus,
)
from app.prompts.models import Completion, Prompt, PromptStatus
from app.labeling.selection import PromptSelection
from app.users.models import LabelerGroup, User


@dataclass
class BatchOptions:
    name: str
    kind: TaskKind
    k: int | None = None
    overlap_share: float = 0.0
    overlap_count: int = 1
    lease_minutes: int = 30
    priority: int = 0
    include_heldout: bool = True
    limit: int | None = None
    model: str | None = None  # ranking: only completions from this model
    seed: int = 0
    purpose: str = "training"  # or "evaluation": K from 2 (A/B), kept out of training exports
    heldout_only: bool = False
    guidelines: str = ""  # Markdown shown to the labeler on every task of the batch

MAX_GUIDELINES = 100_000

def _validate(db: Session, o: BatchOptions) -> None:
    o.name = (o.name or "").strip()
    if not 1 <= len(o.name) <= 200:
        raise InvalidInput("Give the batch a name of 1-200 characters.", field="name")
    if db.scalar(select(Batch.id).where(Batch.name == o.name)):
        raise Conflict(f"A batch named {o.name!r} already exists.", field="name")
    if o.purpose not in ("training", "evaluation"):
        raise InvalidInput("A batch's purpose is training or evaluation.", field="purpose")
    low = 2 if o.purpose == "evaluation" else 4
    if o.kind == TaskKind.ranking and (o.k is None or not low <= o.k <= 9):
        raise InvalidInput(f"K (responses per ranking task) must be from {low} to 9.", field="k")
    if not 0 <= o.overlap_share <= 1:
        raise InvalidInput("The overlap share must be between 0 and 1 (e.g. 0.1 for 10% of tasks).", field="overlap_share")
    if not 1 <= o.overlap_count <= 20:
        raise InvalidInput("The overlap count (labelers per overlapping task) must be from 1 to 20.", field="overlap_count")
    if not 1 <= o.lease_minutes <= 24 * 60:
        raise InvalidInput("The lease time must be from 1 to 1440 minutes.", field="lease_minutes")
    if not -1000 <= o.priority <= 1000:
        raise InvalidInput("The priority must be from -1000 to 1000.", field="priority")
    if o.limit is not None and o.limit < 1:
        raise InvalidInput("The task limit must be at least 1.", field="limit")
    o.guidelines = (o.guidelines or "").replace("\r\n", "\n").strip()
    if len(o.guidelines) > MAX_GUIDELINES:
        raise InvalidInput(f"The guidelines are {len(o.guidelines)} characters: at most {MAX_GUIDELINES}.", field="guidelines")


def create_batch(
    db: Session, options: BatchOptions, *, actor: User | None = None, prompt_ids: list[int] | None = None,
    items: dict[int, list[int]] | None = None, selection: PromptSelection | None = None,
) -> Batch:
    """A batch of tasks. Demonstration: one task per chosen prompt. Ranking: one task per chosen
    prompt with at least K completions (the first K), or, with ``items``, exactly the completions
    given per prompt (a generate run's mix of models). Prompts are chosen by ``selection`` (an
    admin's filters, checked: a bad one raises InvalidInput naming its field), or ``prompt_ids``
    (the app's own callers), else every active prompt but the demo's. A share of tasks, chosen by
    a seeded shuffle, needs ``overlap_count`` labelers; the rest one."""
    o = options
    _validate(db, o)
    sel = None
    if items is None and (selection is not None or prompt_ids is None):
        sel = prompt_selection.validate(db, selection or PromptSelection())
        prompt_ids = prompt_selection.matching_ids(db, sel)
        if not prompt_ids:
            field = next(iter(sel.as_dict()), "selection")
            raise InvalidInput(f"No active prompts match the selection ({sel.describe()}).", field=field)
    if items is not None:
        chosen = [(pid, cids[: o.k]) for pid, cids in items.items() if len(cids) >= (o.k or 0)]
    elif o.kind == TaskKind.demonstration:
        q = select(Prompt.id).where(Prompt.status == PromptStatus.active).order_by(Prompt.id)
        if prompt_ids is not None:
            q = q.where(Prompt.id.in_(prompt_ids))
        chosen = [(pid, []) for pid in db.scalars(q)]
    else:
        q = select(Completion.prompt_id, Completion.id).join(Prompt, Prompt.id == Completion.prompt_id).where(
            Prompt.status == PromptStatus.active
        )
        if o.model:
            q = q.where(Completion.model_name == o.model)
        if prompt_ids is not None:
            q = q.where(Completion.prompt_id.in_(prompt_ids))
        by_prompt: dict[int, list[int]] = {}
        for pid, cid in db.execute(q.order_by(Completion.prompt_id, Completion.id)):
            by_prompt.setdefault(pid, []).append(cid)
        chosen = [(pid, cids[: o.k]) for pid, cids in by_prompt.items() if len(cids) >= o.k]
    if o.limit:
        chosen = chosen[: o.limit]
    if not chosen:
        what = "active prompts" if o.kind == TaskKind.demonstration else f"prompts with at least {o.k} completions"
        where = f" among the {len(prompt_ids)} selected" if sel is not None and prompt_ids else ""
        if o.model and o.kind == TaskKind.ranking:
            what += f" from model {o.model!r}"
        raise InvalidInput(f"No {what}{where} to build the batch from.", field="k" if o.kind == TaskKind.ranking else "name")
    batch = Batch(
        name=o.name, kind=o.kind, k=o.k if o.kind == TaskKind.ranking else None, overlap_share=o.overlap_share,
        overlap_count=o.overlap_count, lease_minutes=o.lease_minutes, priority=o.priority,
        include_heldout=o.include_heldout or o.heldout_only, heldout_only=o.heldout_only, purpose=o.purpose,
        status=BatchStatus.open, created_by_id=actor.id if actor else None, guidelines=o.guidelines,
        selection=sel.as_dict() if sel is not None else None,
    )
    db.add(batch)
    db.flush()
    n_overlap = round(o.overlap_share * len(chosen)) if o.overlap_count > 1 else 0
    overlap_idx = set(random.Random(o.seed).sample(range(len(chosen)), n_overlap))
    tasks = []
    for i, (pid, cids) in enumerate(chosen):
        task = Task(
            batch_id=batch.id, kind=o.kind, prompt_id=pid, priority=o.priority, status=TaskStatus.open,
            required_submissions=o.overlap_count if i in overlap_idx else 1, submission_count=0,
        )
        task.items = [TaskItem(completion_id=c, position=p) for p, c in enumerate(cids)]
        tasks.append(task)
    db.add_all(tasks)
    db.flush()
    audit.record(db, actor.id if actor else None, "batch.create", "batch", batch.id,
                 f"kind={o.kind} tasks={len(tasks)} k={o.k} overlap={n_overlap}x{o.overlap_count}")
    return batch


def set_status(db: Session, batch_id: int, status: str, *, actor: User) -> Batch:
    batch = db.get(Batch, batch_id)
    if batch is None:
        raise NotFound(f"No batch with id {batch_id}.")
    try:
        batch.status = BatchStatus(status)
    except ValueError:
        raise InvalidInput("Choose open, paused or closed.", field="status") from None
    audit.record(db, actor.id, "batch.status", "batch", batch.id, status)
    db.flush()
    return batch


def batch_rows(db: Session) -> list[dict]:
    """Every batch with its task and submission counts (admin page)."""
    stats = {
        bid: (n, done, subs, req)
        for bid, n, done, subs, req in db.execute(
            select(
                Task.batch_id, func.count(), func.sum(case((Task.status == TaskStatus.done, 1), else_=0)),
                func.sum(Task.submission_count), func.sum(Task.required_submissions),
            ).group_by(Task.batch_id)
        )
    }
    out = []
    for b in db.scalars(select(Batch).order_by(Batch.priority.desc(), Batch.id.desc())):
        n, done, subs, req = stats.get(b.id, (0, 0, 0, 0))
        out.append({"batch": b, "tasks": n, "done": done or 0, "submissions": subs or 0, "required": req or 0})
    return out


def waiting_per_kind(db: Session, user: User) -> dict[str, int]:
    """Tasks this labeler could take now, per kind (roughly: ignores leases held by others)."""
    from app.labeling.assignment import _eligible_tasks

    out = {k.value: 0 for k in TaskKind}
    for kind, n in db.execute(select(Task.kind, func.count()).where(_eligible_tasks(user, None)).group_by(Task.kind)):
        out[kind.value] = n
    return out


def labeler_stats(db: Session, user: User) -> dict:
    r_n, r_t = db.execute(
        select(func.count(), func.coalesce(func.sum(Ranking.time_spent_s), 0.0)).where(Ranking.labeler_id == user.id)
    ).one()
    d_n, d_t = db.execute(
        select(func.count(), func.coalesce(func.sum(Demonstration.time_spent_s), 0.0)).where(Demonstration.author_id == user.id)
    ).one()
    skipped = db.scalar(
        select(func.count()).select_from(Assignment).where(
            Assignment.labeler_id == user.id, Assignment.status == AssignmentStatus.skipped
        )
    )
    prompts = db.scalar(select(func.count()).select_from(Prompt).where(Prompt.author_id == user.id))
    from app.labeling.task_context import done_today

    return {"done_today": done_today(db, user)["total"],
        "rankings": r_n, "ranking_time_s": float(r_t), "demonstrations": d_n, "demonstration_time_s": float(d_t),
        "skipped": skipped, "prompts": prompts, "total_time_s": float(r_t) + float(d_t),
    }


def heldout_excluded(batch: Batch, user: User) -> bool:
    return not batch.include_heldout and user.labeler_group == LabelerGroup.heldout


def overview(db: Session) -> dict:
    """Admin home numbers."""
    open_tasks = db.scalar(select(func.count()).select_from(Task).where(Task.status == TaskStatus.open))
    live = db.scalar(
        select(func.count()).select_from(Assignment).where(
            Assignment.status == AssignmentStatus.active, Assignment.expires_at > utcnow()
        )
    )
    return {
        "open_tasks": open_tasks, "live_leases": live,
        "rankings": db.scalar(select(func.count()).select_from(Ranking)),
        "demonstrations": db.scalar(select(func.count()).select_from(Demonstration)),
        "prompts": db.scalar(select(func.count()).select_from(Prompt)),
    }
