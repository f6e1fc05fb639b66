"""Runs: queueing, claiming (FOR UPDATE SKIP LOCKED), heartbeats, metrics, cancel and requeue."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.runs.models import Run, RunKind, RunMetric, RunStatus
from app.users.models import User

FINISHED = (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


def create_run(
    db: Session, *, kind: RunKind | str, name: str, config: dict, gpus: int = 0, actor: User | None = None
) -> Run:
    try:
        kind = RunKind(kind)
    except ValueError:
        raise InvalidInput(f"Unknown run kind {kind!r}: choose one of {', '.join(k.value for k in RunKind)}.", field="kind") from None
    if not isinstance(config, dict):
        raise InvalidInput("A run's config must be a JSON object of trainer options.", field="config")
    if not 0 <= gpus <= 64:
        raise InvalidInput("gpus must be between 0 and 64.", field="gpus")
    name = name.strip() or f"{kind.value} run"
    run = Run(kind=kind, name=name[:200], config=config, gpus=gpus, created_by_id=actor.id if actor else None)
    db.add(run)
    db.flush()
    audit.record(db, actor.id if actor else None, "run.create", "run", run.id, f"{kind.value} {name}")
    return run


def get_run(db: Session, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None:
        raise NotFound(f"No run with id {run_id}.")
    return run


def list_runs(db: Session, limit: int = 200) -> Sequence[Run]:
    return db.scalars(select(Run).order_by(Run.id.desc()).limit(limit)).all()


def claim_next(db: Session, worker_id: str) -> Run | None:
    """Take the oldest queued run for this worker. Concurrent workers never take the same run:
    on PostgreSQL the row is locked with SKIP LOCKED; on SQLite writers are serialised."""
    run = db.scalars(
        select(Run).where(Run.status == RunStatus.queued).order_by(Run.id).limit(1).with_for_update(skip_locked=True)
    ).first()
    if run is None:
        return None
    now = utcnow()
    run.status = RunStatus.running
    run.worker_id = worker_id
    run.attempts += 1
    run.heartbeat_at = now
    run.started_at = run.started_at or now
    db.flush()
    return run


def heartbeat(db: Session, run_id: int, *, progress: float | None = None, message: str | None = None) -> bool:
    """Refresh the run's heartbeat; returns True when an admin asked to cancel it."""
    run = get_run(db, run_id)
    run.heartbeat_at = utcnow()
    if progress is not None:
        run.progress = max(0.0, min(1.0, progress))
    if message is not None:
        run.message = message[-4000:]
    db.flush()
    return run.cancel_requested


def record_metrics(db: Session, run_id: int, rows: Iterable[tuple[int, str, float]]) -> int:
    metrics = [RunMetric(run_id=run_id, step=int(step), name=str(name)[:100], value=float(value)) for step, name, value in rows]
    db.add_all(metrics)
    db.flush()
    return len(metrics)


def finish(db: Session, run_id: int, status: RunStatus, message: str = "") -> Run:
    run = get_run(db, run_id)
    run.status = status
    run.finished_at = utcnow()
    if status == RunStatus.succeeded:
        run.progress = 1.0
    run.message = message[-4000:]
    db.flush()
    return run


def request_cancel(db: Session, run_id: int, *, actor: User) -> Run:
    run = get_run(db, run_id)
    if run.status in FINISHED:
        raise Conflict(f"Run {run_id} has already {run.status.value}.")
    if run.status == RunStatus.queued:
        run.status = RunStatus.cancelled
        run.finished_at = utcnow()
    run.cancel_requested = True
    audit.record(db, actor.id, "run.cancel", "run", run.id)
    db.flush()
    return run


def requeue_stale(db: Session, *, stale_after_s: int) -> list[int]:
    """Runs whose worker stopped heartbeating go back to the queue (or fail after max_attempts).
    The trainer resumes from the run folder's last checkpoint on the next attempt."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    stale = db.scalars(
        select(Run).where(Run.status == RunStatus.running, Run.heartbeat_at < cutoff).with_for_update(skip_locked=True)
    ).all()
    for run in stale:
        if run.attempts >= run.max_attempts:
            run.status = RunStatus.failed
            run.finished_at = utcnow()
            run.message = f"worker {run.worker_id} stopped responding; gave up after {run.attempts} attempts"
        else:
            run.status = RunStatus.queued
            run.message = f"requeued: worker {run.worker_id} stopped responding"
        run.worker_id = None
    db.flush()
    return [r.id for r in stale]


def metric_series(db: Session, run_id: int) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for step, name, value in db.execute(
        select(RunMetric.step, RunMetric.name, RunMetric.value).where(RunMetric.run_id == run_id).order_by(RunMetric.step)
    ):
        series.setdefault(name, []).append((step, value))
    return series


