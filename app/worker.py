"""The training-job worker: claims queued runs, launches the trainers, streams their metrics, and
survives faults.

One worker per GPU host, or per cluster login node (any number of them). Each poll it refreshes
its row in ``workers`` (run pages say when no worker is alive), requeues runs whose worker
stopped heartbeating, and claims the oldest queued run with FOR UPDATE SKIP LOCKED (no two
workers take the same run). For a run:

1. It takes an exclusive ``flock`` on ``<run folder>/.lock``. A local trainer inherits that
   descriptor, so the lock lives exactly as long as the trainer, even when the worker died first.
   A worker that cannot take it (an earlier attempt's trainer is still alive) waits a bounded
   time, then gives the run back to the queue: two trainers never write one run folder.
2. ``launch.prepare`` writes ``run_config.json`` (its ``InputError`` fails the run at once), and
   the worker's launcher starts the trainer (app/launchers): ``local``, a child process on this
   host (``torchrun`` for several GPUs) that never outlives its worker; ``slurm``, a batch job
   whose srun starts torchrun on each of the run's nodes (docs/cluster.md).
3. Every poll it heartbeats, upserts the new lines of the trainer's ``metrics.jsonl`` into
   ``run_metrics`` (a metric named ``progress`` in 0..1 drives the progress bar), shows the
   cleaned end of ``trainer.log`` (no progress-bar noise) as the run's message, and stops the
   trainer (SIGTERM, or scancel) when an admin cancelled the run or another worker took it over.
4. When the trainer ends: exit 0 records the run's output (``launch.complete``) and succeeds; 2,
   the trainers' "bad config or data" status, fails at once; any other status, a signal or a
   lost node (Slurm's NODE_FAIL ...) queues the run again, up to ``max_attempts``, and the next
   attempt resumes from the run folder's last checkpoint. Cancel always wins.

Runs whose worker died are requeued the same way by any live worker. A worker stopped with
SIGTERM or Ctrl-C stops its trainer, gives the run back without counting the attempt, and
deletes its ``workers`` row. While the database is unreachable, a worker waits (and its trainer
trains on, its metrics kept until they can be written).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import unit_of_work, utcnow
from app.errors import AppError
from app.launchers import STOP_GRACE_S, Ended, FolderBusy, Job, Launcher, LaunchError, Trainer, make_launcher
from app.runs import launch
from app.runs import service as runs
from app.runs.models import Run, RunStatus
from app.runs.trainer_output import MetricsTail, clean_log, log_tail  # noqa: F401 - clean_log: part of this module's API

BAD_INPUT_EXIT = 2  # trainers/cli.py: a TrainerError (bad config or data); retrying cannot help
LOCK_WAIT_S = 30.0  # how long a worker waits for an earlier attempt's trainer to let go of a run folder
FORGET_WORKERS_AFTER_S = 24 * 3600  # rows of workers killed without a clean exit


# ---------------------------------------------------------------- who this worker is


@dataclass(frozen=True)
class WorkerInfo:
    """This process as the ``workers`` table knows it."""

    id: str
    hostname: str
    pid: int
    gpus: int

    @classmethod
    def current(cls, worker_id: str | None = None, gpus: int | None = None) -> WorkerInfo:
        host, pid = socket.gethostname(), os.getpid()
        return cls(id=worker_id or f"{host}:{pid}", hostname=host, pid=pid,
                   gpus=visible_gpus() if gpus is None else gpus)

    def touch(self, db: Session, run_id: int | None = None) -> None:
        runs.touch_worker(db, self.id, hostname=self.hostname, pid=self.pid, gpus=self.gpus, run_id=run_id)


def visible_gpus() -> int:
    """GPUs this worker may use, without importing torch (seconds of start-up and memory):
    CUDA_VISIBLE_DEVICES when set, else the NVIDIA driver's list of devices."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = []
        for item in env.split(","):
            if not item.strip() or item.strip().startswith("-"):
                break  # CUDA stops at the first invalid entry ("-1" hides every device)
            ids.append(item)
        return len(ids)
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


# ---------------------------------------------------------------- the run folder's lock


class RunLock:
    """An exclusive ``flock`` on ``<run folder>/.lock``.

    flock belongs to the open file, which a local trainer shares through ``pass_fds``: the lock is
    held until both the worker and the trainer have closed it, so it outlives a killed worker for
    as long as its trainer is alive, and no second trainer can start in the same folder.
    The file holds the pid of the local trainer that owns the lock (for people and tests). A Slurm
    job's trainers run elsewhere: the Slurm launcher cancels an earlier attempt's job instead."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.fd: int | None = None

    def try_take(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def take(self, wait_s: float, keep_alive: Callable[[], None], step_s: float = 0.5) -> bool:
        """Try for up to ``wait_s`` seconds, calling ``keep_alive`` (a heartbeat) while waiting."""
        deadline = time.monotonic() + wait_s
        while not self.try_take():
            if time.monotonic() >= deadline:
                return False
            keep_alive()
            time.sleep(step_s)
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def record(self, pid: int) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------- one run


def run_folder(settings: Settings, run: Run) -> Path:
    folder = Path(settings.artifact_dir).resolve() / "runs" / str(run.id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def execute(settings: Settings, factory: sessionmaker[Session], run_id: int, *, poll_s: float = 2.0,
            worker: WorkerInfo | None = None, lock_wait_s: float = LOCK_WAIT_S, echo=print,
            launcher: Launcher | None = None) -> RunStatus:
    """Run one attempt of a claimed run and record how it ended. Returns the run's status
    afterwards: ``queued`` when it goes back to the queue for another attempt."""
    worker = worker or WorkerInfo.current()
    launcher = launcher or make_launcher(settings)
    with unit_of_work(factory) as db:
        run = runs.get_run(db, run_id)
        folder = run_folder(settings, run)
        attempt = f"attempt {run.attempts} of {run.max_attempts}"
    lock = RunLock(folder)
    if not lock.take(lock_wait_s, keep_alive=lambda: _beat(factory, run_id, worker)):
        reason = f"the run folder is still locked by the trainer of an earlier attempt (pid {lock.holder()})"
        return _end(factory, run_id, worker, lambda db: runs.give_back(db, run_id, reason, worker_id=worker.id))
    try:
        return _attempt(settings, factory, run_id, folder, lock, worker, attempt, poll_s, echo, launcher)
    finally:
        lock.release()


def _attempt(settings, factory, run_id, folder, lock, worker, attempt, poll_s, echo, launcher: Launcher) -> RunStatus:
    """Prepare, launch, watch and settle one attempt, holding the run folder's lock."""
    try:
        with unit_of_work(factory) as db:
            run = runs.get_run(db, run_id)
            config_path = launch.prepare(db, settings, run, folder)
            run.output_dir = str(folder)
            job = Job(run_id=run.id, kind=run.kind.value, name=run.name, nodes=run.nodes,
                      gpus_per_node=run.gpus_per_node, config=config_path, folder=folder, attempt=attempt)
    except AppError as exc:  # InputError: the run's inputs cannot be used; retrying will not help
        message = exc.message
        return _end(factory, run_id, worker, lambda db: runs.finish(db, run_id, RunStatus.failed, message, worker_id=worker.id))
    except Exception:  # noqa: BLE001 - an unforeseen error (disk, database): another attempt may succeed
        reason = "preparing the trainer's inputs failed:\n" + traceback.format_exc(limit=5)
        return _end(factory, run_id, worker, lambda db: runs.retry_or_fail(db, run_id, reason, worker_id=worker.id))
    log_path = folder / "trainer.log"
    tail = MetricsTail(launch.output_dir(folder) / "metrics.jsonl")
    with log_path.open("ab") as log:
        log.write(f"\n--- {attempt} on worker {worker.id} at {utcnow():%Y-%m-%d %H:%M:%S} UTC ---\n".encode())
        log.flush()
        try:
            trainer = launcher.start(job, log, lock)
        except FolderBusy as exc:  # an earlier attempt's trainer is still alive: not this attempt's fault
            reason = str(exc)
            return _end(factory, run_id, worker, lambda db: runs.give_back(db, run_id, reason, worker_id=worker.id))
        except LaunchError as exc:
            log.write(f"--- {exc} ---\n".encode())
            reason = str(exc)
            return _end(factory, run_id, worker, lambda db: runs.retry_or_fail(db, run_id, reason, worker_id=worker.id))
        try:
            stopped, ended = _watch(trainer, factory, run_id, worker, tail, log_path, poll_s, echo)
        except BaseException:  # Ctrl-C, SIGTERM or a database error: the trainer must not run on unwatched
            trainer.stop_and_wait()
            _give_back_quietly(factory, run_id, worker, echo)
            raise
        log.write(f"--- {ended.reason} ---\n".encode())
    if stopped == runs.Beat.lost:
        echo(f"run {run_id} was taken over by another worker; its trainer here was stopped")
        return RunStatus.running
    return _settle(settings, factory, run_id, folder, worker, ended, stopped, log_path)


def _watch(trainer: Trainer, factory, run_id, worker, tail, log_path, poll_s, echo) -> tuple[runs.Beat, Ended]:
    """Stream metrics, progress and log until the trainer ends; stop it on cancel or takeover.
    Returns why it was stopped (``go``: it was not) and how it ended. While the database is
    unreachable the trainer trains on and its metrics wait to be written."""
    stopped, stopped_at = runs.Beat.go, 0.0
    pending: list[tuple[int, str, float]] = []
    while True:
        ended = trainer.poll()
        pending += tail.read_new()
        message = "\n".join(part for part in (trainer.status(), log_tail(log_path)) if part)
        try:
            with unit_of_work(factory) as db:
                if stopped != runs.Beat.lost:
                    runs.record_metrics(db, run_id, pending)
                beat = runs.heartbeat(db, run_id, worker_id=worker.id, progress=tail.last_progress, message=message)
                worker.touch(db, run_id if beat != runs.Beat.lost else None)
            pending = []
        except OperationalError as exc:
            echo(f"run {run_id}: database unreachable ({_first_line(exc)}); the trainer keeps running")
            beat = runs.Beat.go
        if ended is not None:
            return stopped, ended
        if beat != runs.Beat.go and stopped == runs.Beat.go:
            stopped, stopped_at = beat, time.monotonic()
            trainer.stop()
        elif stopped != runs.Beat.go and time.monotonic() - stopped_at > STOP_GRACE_S:
            trainer.kill()
        time.sleep(poll_s)


def _settle(settings, factory, run_id, folder, worker, ended: Ended, stopped, log_path) -> RunStatus:
    """Record how the attempt ended: cancelled, succeeded, failed for good, or queued again."""
    tail = log_tail(log_path)
    if stopped == runs.Beat.cancel:
        message = "cancelled by an admin\n" + tail
        return _end(factory, run_id, worker, lambda db: runs.finish(db, run_id, RunStatus.cancelled, message, worker_id=worker.id))
    if ended.code == 0:
        return _complete(settings, factory, run_id, folder, worker, tail)
    if ended.code == BAD_INPUT_EXIT:
        message = f"{ended.reason} (bad config or data: not retried)\n{tail}"
        return _end(factory, run_id, worker, lambda db: runs.finish(db, run_id, RunStatus.failed, message, worker_id=worker.id))
    return _end(factory, run_id, worker, lambda db: runs.retry_or_fail(db, run_id, ended.reason, worker_id=worker.id, log=tail))


def _complete(settings, factory, run_id, folder, worker, tail) -> RunStatus:
    """The trainer exited 0: record what it made. A deliberate error (AppError) fails the run;
    anything else is retried, and the retry's trainer resumes from the final checkpoint."""
    try:
        with unit_of_work(factory) as db:
            summary = launch.complete(db, settings, runs.get_run(db, run_id), folder)
    except AppError as exc:
        message = f"the trainer finished, but its output could not be recorded: {exc.message}\n{tail}"
        return _end(factory, run_id, worker, lambda db: runs.finish(db, run_id, RunStatus.failed, message, worker_id=worker.id))
    except Exception:  # noqa: BLE001 - an unforeseen error: the retry resumes from the final checkpoint
        reason = "recording the trainer's output failed:\n" + traceback.format_exc(limit=5)
        return _end(factory, run_id, worker, lambda db: runs.retry_or_fail(db, run_id, reason, worker_id=worker.id))
    message = (summary + "\n" + tail).strip()
    return _end(factory, run_id, worker, lambda db: runs.finish(db, run_id, RunStatus.succeeded, message, worker_id=worker.id))


def _end(factory, run_id, worker, record: Callable[[Session], Run]) -> RunStatus:
    """Apply one of the service's end-of-attempt calls and return the run's status."""
    with unit_of_work(factory) as db:
        run = record(db)
        worker.touch(db, None)
        return run.status


def _beat(factory, run_id, worker) -> None:
    with unit_of_work(factory) as db:
        runs.heartbeat(db, run_id, worker_id=worker.id)
        worker.touch(db, run_id)


def _give_back_quietly(factory, run_id, worker, echo) -> None:
    """On the way out after an interruption: return the run to the queue, if the database lets us.
    If it does not, the run's heartbeat goes stale and another worker requeues it."""
    try:
        with unit_of_work(factory) as db:
            runs.give_back(db, run_id, f"worker {worker.id} was stopped", worker_id=worker.id)
    except Exception as exc:  # noqa: BLE001 - already leaving because of another error
        echo(f"could not give run {run_id} back ({exc.__class__.__name__}); another worker will requeue it")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


# ---------------------------------------------------------------- the loop


def work(settings: Settings, factory: sessionmaker[Session], *, once: bool = False, poll_s: float = 5.0,
         stale_after_s: int = 120, worker_id: str | None = None, gpus: int | None = None,
         lock_wait_s: float = LOCK_WAIT_S, echo=print, launcher: Launcher | None = None) -> int:
    """Claim and run jobs until stopped (or, with once=True, until the queue is empty).
    Returns the number of runs that ended (succeeded, failed or cancelled) here. ``launcher``:
    how trainers start (default: the ``launcher`` setting; app/launchers)."""
    launcher = launcher or make_launcher(settings)
    worker = WorkerInfo.current(worker_id, gpus)
    done = 0
    try:
        while True:
            try:
                requeued, claimed = _poll(factory, worker, stale_after_s, launcher.max_nodes)
            except OperationalError as exc:  # the database restarts or the network drops: wait it out
                echo(f"database unreachable ({_first_line(exc)}); trying again in {poll_s:g} s")
                time.sleep(poll_s)
                continue
            for run_id in requeued:
                echo(f"requeued run {run_id}: its worker stopped responding")
            if claimed is None:
                if once:
                    return done
                time.sleep(poll_s)
                continue
            run_id, kind, name, attempt = claimed
            echo(f"run {run_id} ({kind}, {name!r}) started, attempt {attempt}")
            status = execute(settings, factory, run_id, poll_s=min(poll_s, 2.0), worker=worker,
                             lock_wait_s=lock_wait_s, echo=echo, launcher=launcher)
            echo(f"run {run_id} {status.value}")
            if status in runs.FINISHED:
                done += 1
            elif status == RunStatus.queued:
                time.sleep(min(poll_s, 2.0))  # not straight back into a run that just went wrong
    finally:
        _forget_self(factory, worker)


def _poll(factory, worker: WorkerInfo, stale_after_s: int, max_nodes: int | None) -> tuple[list[int], tuple | None]:
    """One look at the queue: say this worker is alive, requeue runs of dead workers, claim one."""
    with unit_of_work(factory) as db:
        worker.touch(db)
        runs.forget_workers(db, older_than_s=FORGET_WORKERS_AFTER_S)
        requeued = runs.requeue_stale(db, stale_after_s=stale_after_s)
        run = runs.claim_next(db, worker.id, max_nodes=max_nodes)
        return requeued, (run.id, run.kind.value, run.name, run.attempts) if run else None


def _forget_self(factory, worker: WorkerInfo) -> None:
    # Leaving anyway: if the database is unreachable, the row goes stale and is forgotten.
    with contextlib.suppress(Exception), unit_of_work(factory) as db:
        runs.remove_worker(db, worker.id)
