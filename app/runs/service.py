"""Runs: queueing, claiming (FOR UPDATE SKIP LOCKED), heartbeats, metrics, cancel, retries and
requeue, and the ``workers`` table that tells run pages whether any worker is alive."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.runs.models import Run, RunKind, RunMetric, RunStatus, Worker
from app.users.models import User

FINISHED = (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)
# A worker polls every few seconds (5 s by default) and heartbeats every 2 s while it runs a
# run: one not seen for a minute is gone (or wedged).
WORKER_SEEN_WITHIN_S = 60


MAX_NODES = 64
MAX_GPUS_PER_NODE = 64


def resources(*, gpus: int = 0, nodes: int = 1, gpus_per_node: int | None = None) -> tuple[int, int, int]:
    """Check what a run asks for and return ``(nodes, gpus_per_node, gpus)``, gpus being the total.

    ``gpus`` alone is a single-node run (as before multi-node runs). With several nodes, give
    ``gpus_per_node`` (or a ``gpus`` total that the nodes share evenly); a ``gpus`` given beside
    ``gpus_per_node`` must be their product."""
    for name, value in (("gpus", gpus), ("nodes", nodes), ("gpus_per_node", gpus_per_node)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidInput(f"{name} must be a whole number.", field=name)
    if not 1 <= nodes <= MAX_NODES:
        raise InvalidInput(f"nodes must be between 1 and {MAX_NODES}.", field="nodes")
    if gpus_per_node is None:
        if not 0 <= gpus <= MAX_GPUS_PER_NODE * nodes:
            raise InvalidInput(f"gpus must be between 0 and {MAX_GPUS_PER_NODE} per node.", field="gpus")
        if gpus % nodes:
            raise InvalidInput(f"gpus ({gpus}) must split evenly over {nodes} nodes; or give gpus_per_node.", field="gpus")
        gpus_per_node = gpus // nodes
    if not 0 <= gpus_per_node <= MAX_GPUS_PER_NODE:
        raise InvalidInput(f"gpus_per_node must be between 0 and {MAX_GPUS_PER_NODE}.", field="gpus_per_node")
    if gpus and gpus != nodes * gpus_per_node:
        raise InvalidInput(f"gpus is the run's total: {nodes} nodes x {gpus_per_node} GPUs per node = "
                           f"{nodes * gpus_per_node}, not {gpus} (or leave gpus out).", field="gpus")
    return nodes, gpus_per_node, nodes * gpus_per_node


def create_run(
    db: Session, *, kind: RunKind | str, name: str, config: dict, gpus: int = 0, nodes: int = 1,
    gpus_per_node: int | None = None, actor: User | None = None
) -> Run:
    try:
        kind = RunKind(kind)
    except ValueError:
        raise InvalidInput(f"Unknown run kind {kind!r}: choose one of {', '.join(k.value for k in RunKind)}.", field="kind") from None
    if not isinstance(config, dict):
        raise InvalidInput("A run's config must be a JSON object of trainer options.", field="config")
    nodes, gpus_per_node, gpus = resources(gpus=gpus, nodes=nodes, gpus_per_node=gpus_per_node)
    name = name.strip() or f"{kind.value} run"
    run = Run(kind=kind, name=name[:200], config=config, gpus=gpus, nodes=nodes, gpus_per_node=gpus_per_node,
              created_by_id=actor.id if actor else None)
    db.add(run)
    db.flush()
    shape = f" ({nodes} nodes x {gpus_per_node} GPUs)" if nodes > 1 else ""
    audit.record(db, actor.id if actor else None, "run.create", "run", run.id, f"{kind.value} {name}{shape}")
    return run


def get_run(db: Session, run_id: int) -> Run:
    run = db.get(Run, run_id)
    if run is None:
        raise NotFound(f"No run with id {run_id}.")
    return run


def list_runs(db: Session, limit: int = 200) -> Sequence[Run]:
    return db.scalars(select(Run).order_by(Run.id.desc()).limit(limit)).all()


def claim_next(db: Session, worker_id: str, *, max_nodes: int | None = None) -> Run | None:
    """Take the oldest queued run for this worker. Concurrent workers never take the same run:
    on PostgreSQL the row is locked with SKIP LOCKED; on SQLite writers are serialised.
    ``max_nodes``: only runs that ask for at most this many nodes (a worker that launches on its
    own host takes single-node runs; multi-node runs wait for a Slurm worker)."""
    query = select(Run).where(Run.status == RunStatus.queued)
    if max_nodes is not None:
        query = query.where(Run.nodes <= max_nodes)
    run = db.scalars(query.order_by(Run.id).limit(1).with_for_update(skip_locked=True)).first()
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


class Beat(enum.StrEnum):
    """What a heartbeat tells the worker to do with its trainer."""

    go = "go"  # keep running
    cancel = "cancel"  # an admin asked to cancel the run: stop the trainer
    lost = "lost"  # the run is no longer this worker's (requeued as stale): stop, touch nothing


def heartbeat(db: Session, run_id: int, *, worker_id: str | None = None, progress: float | None = None,
              message: str | None = None) -> Beat:
    """Refresh the run's heartbeat, progress and live log. With ``worker_id``, a run that another
    worker requeued in the meantime (this one looked dead) is left alone and reported ``lost``."""
    run = get_run(db, run_id)
    if worker_id is not None and not _owned_by(run, worker_id):
        return Beat.lost
    run.heartbeat_at = utcnow()
    if progress is not None:
        run.progress = max(0.0, min(1.0, progress))
    if message is not None:
        run.message = message[-4000:]
    db.flush()
    return Beat.cancel if run.cancel_requested else Beat.go


def _owned_by(run: Run, worker_id: str) -> bool:
    return run.status == RunStatus.running and run.worker_id == worker_id


def _metric_insert(db: Session):
    """The dialect's INSERT, which has ON CONFLICT DO UPDATE (PostgreSQL and SQLite spell it alike)."""
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the app supports these two
        raise RuntimeError(f"metrics upsert is not written for {dialect}")
    return insert


def record_metrics(db: Session, run_id: int, rows: Iterable[tuple[int, str, float]], *, chunk: int = 500) -> int:
    """Upsert logged values on (run, name, step). A resumed trainer logs the steps after its
    checkpoint again, and the worker re-reads a metrics file the trainer rewrote: the newest value
    of a step replaces the old one instead of adding a second point to the chart."""
    latest: dict[tuple[str, int], float] = {}
    for step, name, value in rows:  # one statement may not update a row twice (PostgreSQL)
        latest[(str(name)[:100], int(step))] = float(value)
    if not latest:
        return 0
    insert, now = _metric_insert(db), utcnow()
    values = [{"run_id": run_id, "name": name, "step": step, "value": value, "at": now}
              for (name, step), value in latest.items()]
    for start in range(0, len(values), chunk):  # SQLite caps the number of bound parameters
        stmt = insert(RunMetric).values(values[start:start + chunk])
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "name", "step"], set_={"value": stmt.excluded.value, "at": stmt.excluded.at}
        )
        db.execute(stmt)
    return len(values)


def finish(db: Session, run_id: int, status: RunStatus, message: str = "", *, worker_id: str | None = None) -> Run:
    """Record a run's end. With ``worker_id``, a run another worker has taken over is left alone."""
    run = get_run(db, run_id)
    if worker_id is not None and not _owned_by(run, worker_id):
        return run
    run.status = status
    run.finished_at = utcnow()
    if status == RunStatus.succeeded:
        run.progress = 1.0
    run.message = message[-4000:]
    db.flush()
    return run


def retry_or_fail(db: Session, run_id: int, reason: str, *, worker_id: str | None = None, log: str = "") -> Run:
    """An attempt failed for a reason that may not happen again (a crash, a kill, a lost
    machine): queue the run again, and its next attempt resumes from the run folder's last
    checkpoint; after ``max_attempts`` it fails. Cancel wins over both."""
    run = get_run(db, run_id)
    if worker_id is not None and not _owned_by(run, worker_id):
        return run
    _retry_or_fail(run, reason)
    room = 4000 - len(run.message) - 1
    if log and room > 0:  # the reason first, then as much of the log's end as fits
        run.message += "\n" + log[-room:]
    db.flush()
    return run


def _retry_or_fail(run: Run, reason: str) -> None:
    if run.cancel_requested:
        run.status, run.finished_at = RunStatus.cancelled, utcnow()
        run.message = f"cancelled by an admin (attempt {run.attempts}: {reason})"
    elif run.attempts >= run.max_attempts:
        run.status, run.finished_at = RunStatus.failed, utcnow()
        run.message = f"attempt {run.attempts} of {run.max_attempts}: {reason}; gave up after {run.attempts} attempts"
    else:
        run.status = RunStatus.queued
        run.message = (f"attempt {run.attempts} of {run.max_attempts}: {reason}; "
                       "queued again, the next attempt resumes from the last checkpoint")
    run.worker_id = None


def give_back(db: Session, run_id: int, reason: str, *, worker_id: str) -> Run:
    """Return a claimed run to the queue without counting the attempt: its trainer did not fail
    (it never started, or the worker was asked to stop)."""
    run = get_run(db, run_id)
    if not _owned_by(run, worker_id):
        return run
    if run.cancel_requested:
        run.status, run.finished_at, run.message = RunStatus.cancelled, utcnow(), "cancelled by an admin"
    else:
        run.status, run.message = RunStatus.queued, f"{reason}; queued again"
        run.attempts = max(0, run.attempts - 1)
    run.worker_id = None
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
    Their trainer died with the worker; the next attempt resumes from the last checkpoint."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    stale = db.scalars(
        select(Run).where(Run.status == RunStatus.running, Run.heartbeat_at < cutoff).with_for_update(skip_locked=True)
    ).all()
    for run in stale:
        _retry_or_fail(run, f"worker {run.worker_id} stopped responding")
    db.flush()
    return [r.id for r in stale]


def metric_series(db: Session, run_id: int) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for step, name, value in db.execute(
        select(RunMetric.step, RunMetric.name, RunMetric.value).where(RunMetric.run_id == run_id).order_by(RunMetric.step)
    ):
        series.setdefault(name, []).append((step, value))
    return series


# ---------------------------------------------------------------- workers


def touch_worker(db: Session, worker_id: str, *, hostname: str, pid: int, gpus: int, run_id: int | None) -> Worker:
    """Insert or refresh this worker's row (each poll, and each heartbeat while it runs a run).
    Only the worker itself writes its row, so a read-then-write cannot race."""
    worker = db.get(Worker, worker_id)
    now = utcnow()
    if worker is None:
        worker = Worker(id=worker_id, hostname=hostname, pid=pid, started_at=now)
        db.add(worker)
    worker.gpus, worker.run_id, worker.last_seen_at = gpus, run_id, now
    db.flush()
    return worker


def remove_worker(db: Session, worker_id: str) -> None:
    """A worker that stops cleanly deletes its row; a killed one's row just stops being fresh."""
    db.execute(delete(Worker).where(Worker.id == worker_id))


def forget_workers(db: Session, *, older_than_s: int) -> int:
    """Drop rows of workers not seen for a long time (killed ones never delete their own)."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    return db.execute(delete(Worker).where(Worker.last_seen_at < cutoff)).rowcount or 0


def live_workers(db: Session, *, within_s: int = WORKER_SEEN_WITHIN_S) -> Sequence[Worker]:
    """Workers seen in the last ``within_s`` seconds."""
    cutoff = utcnow() - timedelta(seconds=within_s)
    return db.scalars(select(Worker).where(Worker.last_seen_at >= cutoff).order_by(Worker.id)).all()


def worker_notice(db: Session, *, within_s: int = WORKER_SEEN_WITHIN_S) -> str | None:
    """What a run page says when no worker has been seen lately (queued runs would wait
    forever without a word), or None while one is alive."""
    if live_workers(db, within_s=within_s):
        return None
    url = db.get_bind().engine.url.render_as_string(hide_password=True)
    return (
        f"No worker has been seen in the last {within_s} seconds, so queued runs are waiting. Start one on a "
        "machine with the trainers installed (pip install -e '.[train]'), pointed at this database and at the "
        f"artifact folder this server uses: RLHF_DATABASE_URL={url} RLHF_ARTIFACT_DIR=<the server's artifact "
        "folder> rlhf worker"
    )
