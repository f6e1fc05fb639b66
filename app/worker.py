"""The training-job worker: claims queued runs, launches the trainers, streams their metrics, and
survives faults.

One worker per GPU host (any number of them). Each poll it refreshes its row in ``workers`` (run
pages say when no worker is alive), requeues runs whose worker stopped heartbeating, and claims
the oldest queued run with FOR UPDATE SKIP LOCKED (no two workers take the same run). For a run:

1. It takes an exclusive ``flock`` on ``<run folder>/.lock`` and hands that descriptor to the
   trainer, so the lock lives exactly as long as the trainer, even when the worker died first.
   A worker that cannot take it (an earlier attempt's trainer is still alive) waits a bounded
   time, then gives the run back to the queue: two trainers never write one run folder.
2. ``launch.prepare`` writes ``run_config.json`` (its ``InputError`` fails the run at once), and
   the worker launches ``python -m trainers <kind> --config run_config.json`` (``torchrun`` when
   the run asks for several GPUs), from its main thread, in a session of its own (cancel stops
   the whole group) and with PR_SET_PDEATHSIG=SIGTERM: a trainer never outlives its worker, even
   after ``kill -9`` of the worker (SIGTERM also makes torchrun stop its children). The
   trainer's pid is written into the lock file.
3. Every poll it heartbeats, upserts the new lines of the trainer's ``metrics.jsonl`` into
   ``run_metrics`` (a metric named ``progress`` in 0..1 drives the progress bar), shows the
   cleaned end of ``trainer.log`` (no progress-bar noise) as the run's message, and stops the
   trainer when an admin cancelled the run or another worker took the run over.
4. When the trainer exits: 0 records the run's output (``launch.complete``) and succeeds; 2, the
   trainers' "bad config or data" status, fails at once; any other status or a signal queues the
   run again, up to ``max_attempts``, and the next attempt resumes from the run folder's last
   checkpoint. Cancel always wins.

Runs whose worker died are requeued the same way by any live worker. A worker stopped with
SIGTERM or Ctrl-C stops its trainer, gives the run back without counting the attempt, and
deletes its ``workers`` row. While the database is unreachable, a worker waits (and its trainer
trains on, its metrics kept until they can be written).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import unit_of_work, utcnow
from app.errors import AppError
from app.runs import launch
from app.runs import service as runs
from app.runs.models import Run, RunStatus

BAD_INPUT_EXIT = 2  # trainers/cli.py: a TrainerError (bad config or data); retrying cannot help
STOP_GRACE_S = 30.0  # a stopped trainer gets this long to exit after SIGTERM, then SIGKILL
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


# ---------------------------------------------------------------- the trainer process

_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child: a child of a threaded parent should only make syscalls.
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn that makes the kernel send SIGTERM to the child when its parent dies.

    The parent is the thread that forked, so the worker forks from its main thread. If the
    worker died between fork and prctl, the signal would never come: the child checks and exits.
    """

    def preexec() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def trainer_command(run: Run, config_path: Path) -> list[str]:
    if run.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={run.gpus}", "-m", "trainers",
                run.kind.value, "--config", str(config_path)]
    return [sys.executable, "-m", "trainers", run.kind.value, "--config", str(config_path)]


def start_trainer(command: list[str], log, lock: RunLock) -> subprocess.Popen:
    """Launch the trainer: output to ``log``, the run folder's lock inherited, its own session
    (so cancel can signal the whole group), and killed by the kernel if this worker dies."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        pass_fds=(lock.fd,), preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509 - it only calls prctl and getppid
    )
    lock.record(process.pid)
    return process


def signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the trainer and its children (torchrun's ranks, data loader workers)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def stop_and_wait(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM the trainer's group, SIGKILL it if it is still there after ``grace_s``."""
    signal_group(process, signal.SIGTERM)
    try:
        return process.wait(grace_s)
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
        return process.wait()


def exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"trainer killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"trainer killed by signal {-returncode}"
    return f"trainer exited with code {returncode}"


class RunLock:
    """An exclusive ``flock`` on ``<run folder>/.lock``.

    flock belongs to the open file, which the trainer shares through ``pass_fds``: the lock is
    held until both the worker and the trainer have closed it, so it outlives a killed worker for
    as long as its trainer is alive, and no second trainer can start in the same folder.
    The file holds the pid of the trainer that owns the lock (for people and tests)."""

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


# ---------------------------------------------------------------- what the trainer writes


@dataclass
class MetricsTail:
    """Reads the lines appended to a metrics.jsonl file since the last call.

    A resumed trainer truncates the file to its checkpoint's step and writes on from there: when
    the file no longer holds the bytes read last (it shrank or was rewritten), the tail starts
    over from the beginning. Rows read twice are harmless: metrics are upserted per step.
    """

    path: Path
    offset: int = 0
    last_progress: float | None = None
    buffer: bytes = field(default=b"")
    mark: bytes = field(default=b"")  # the last bytes read, which end at ``offset``

    def read_new(self) -> list[tuple[int, str, float]]:
        try:
            fh = self.path.open("rb")
        except OSError:  # not written yet, or the output folder is not a folder
            return []
        with fh:
            if self._rewritten(fh):
                self.offset, self.buffer, self.mark = 0, b"", b""
            fh.seek(self.offset)
            chunk = fh.read()
        self.offset += len(chunk)
        self.mark = (self.mark + chunk)[-64:]
        *lines, self.buffer = (self.buffer + chunk).split(b"\n")
        return [row for row in map(self._parse, lines) if row is not None]

    def _rewritten(self, fh) -> bool:
        if not self.mark:
            return False
        if os.fstat(fh.fileno()).st_size < self.offset:
            return True
        fh.seek(self.offset - len(self.mark))
        return fh.read(len(self.mark)) != self.mark

    def _parse(self, line: bytes) -> tuple[int, str, float] | None:
        try:
            item = json.loads(line)
            row = (int(item["step"]), str(item["name"]), float(item["value"]))
        except (ValueError, KeyError, TypeError):
            return None  # a torn or foreign line is not a metric
        if row[1] == "progress":
            self.last_progress = row[2]
        return row


_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# tqdm: "desc:  40%|████      | 4/10 [00:01<00:02, 3.1it/s]" or, without a total, "desc: 7it [00:01, ...]"
_BAR = re.compile(r"^(.*?):?\s*(?:\d{1,3}%\||\d+(?:\.\d+)?[kMG]?(?:it|B) \[)")


def clean_log(text: str) -> str:
    """A log as a person would have seen it on a terminal: tqdm redraws its bar with '\\r', so
    each line keeps only what follows its last '\\r'; colour escapes go; consecutive lines of the
    same bar (one per redraw when a bar writes newlines) collapse into the last one."""
    lines: list[str] = []
    last_bar: str | None = None
    for raw in _ANSI.sub("", text).split("\n"):
        segments = [s for s in raw.split("\r") if s.strip()]
        line = segments[-1].rstrip() if segments else ""
        bar = _bar_key(line)
        if bar is not None and bar == last_bar:
            lines[-1] = line
        else:
            lines.append(line)
        last_bar = bar
    return "\n".join(lines)


def _bar_key(line: str) -> str | None:
    match = _BAR.match(line)
    return match.group(1).strip() if match else None


def log_tail(path: Path, max_chars: int = 3000, read_bytes: int = 64 * 1024) -> str:
    """The cleaned end of the trainer's log. More is read than kept: a progress bar's redraws
    can fill tens of kilobytes that clean to one line."""
    try:
        with path.open("rb") as fh:
            start = max(0, fh.seek(0, os.SEEK_END) - read_bytes)
            fh.seek(start)
            data = fh.read()
    except FileNotFoundError:
        return ""
    if start > 0:  # begin at a line or redraw boundary, not inside one
        cuts = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
        data = data[min(cuts):] if cuts else b""
    text = clean_log(data.decode("utf-8", errors="replace")).strip("\n")
    if len(text) > max_chars:  # keep whole lines
        text = text[-max_chars:]
        text = text.split("\n", 1)[1] if "\n" in text else text
    return text


# ---------------------------------------------------------------- one run


def run_folder(settings: Settings, run: Run) -> Path:
    folder = Path(settings.artifact_dir).resolve() / "runs" / str(run.id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def execute(settings: Settings, factory: sessionmaker[Session], run_id: int, *, poll_s: float = 2.0,
            worker: WorkerInfo | None = None, lock_wait_s: float = LOCK_WAIT_S, echo=print) -> RunStatus:
    """Run one attempt of a claimed run and record how it ended. Returns the run's status
    afterwards: ``queued`` when it goes back to the queue for another attempt."""
    worker = worker or WorkerInfo.current()
    with unit_of_work(factory) as db:
        run = runs.get_run(db, run_id)
        folder = run_folder(settings, run)
        attempt = f"attempt {run.attempts} of {run.max_attempts}"
    lock = RunLock(folder)
    if not lock.take(lock_wait_s, keep_alive=lambda: _beat(factory, run_id, worker)):
        reason = f"the run folder is still locked by the trainer of an earlier attempt (pid {lock.holder()})"
        return _end(factory, run_id, worker, lambda db: runs.give_back(db, run_id, reason, worker_id=worker.id))
    try:
        return _attempt(settings, factory, run_id, folder, lock, worker, attempt, poll_s, echo)
    finally:
        lock.release()


def _attempt(settings, factory, run_id, folder, lock, worker, attempt, poll_s, echo) -> RunStatus:
    """Prepare, launch, watch and settle one attempt, holding the run folder's lock."""
    try:
        with unit_of_work(factory) as db:
            run = runs.get_run(db, run_id)
            config_path = launch.prepare(db, settings, run, folder)
            run.output_dir = str(folder)
            command = trainer_command(run, config_path)
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
        process = start_trainer(command, log, lock)
        try:
            stopped = _watch(process, factory, run_id, worker, tail, log_path, poll_s, echo)
        except BaseException:  # Ctrl-C, SIGTERM or a database error: the trainer must not run on unwatched
            stop_and_wait(process)
            _give_back_quietly(factory, run_id, worker, echo)
            raise
        log.write(f"--- {exit_reason(process.returncode)} ---\n".encode())
    if stopped == runs.Beat.lost:
        echo(f"run {run_id} was taken over by another worker; its trainer here was stopped")
        return RunStatus.running
    return _settle(settings, factory, run_id, folder, worker, process.returncode, stopped, log_path)


def _watch(process, factory, run_id, worker, tail, log_path, poll_s, echo) -> runs.Beat:
    """Stream metrics, progress and log until the trainer exits; stop it on cancel or takeover.
    Returns why it was stopped (``go``: it was not). While the database is unreachable the
    trainer trains on and its metrics wait to be written."""
    stopped, stopped_at = runs.Beat.go, 0.0
    pending: list[tuple[int, str, float]] = []
    while True:
        exited = process.poll() is not None
        pending += tail.read_new()
        try:
            with unit_of_work(factory) as db:
                if stopped != runs.Beat.lost:
                    runs.record_metrics(db, run_id, pending)
                beat = runs.heartbeat(db, run_id, worker_id=worker.id, progress=tail.last_progress, message=log_tail(log_path))
                worker.touch(db, run_id if beat != runs.Beat.lost else None)
            pending = []
        except OperationalError as exc:
            echo(f"run {run_id}: database unreachable ({_first_line(exc)}); the trainer keeps running")
            beat = runs.Beat.go
        if exited:
            return stopped
        if beat != runs.Beat.go and stopped == runs.Beat.go:
            stopped, stopped_at = beat, time.monotonic()
            signal_group(process, signal.SIGTERM)
        elif stopped != runs.Beat.go and time.monotonic() - stopped_at > STOP_GRACE_S:
            signal_group(process, signal.SIGKILL)
        time.sleep(poll_s)


def _settle(settings, factory, run_id, folder, worker, returncode, stopped, log_path) -> RunStatus:
    """Record how the attempt ended: cancelled, succeeded, failed for good, or queued again."""
    tail = log_tail(log_path)
    reason = exit_reason(returncode)
    if stopped == runs.Beat.cancel:
        message = "cancelled by an admin\n" + tail
        return _end(factory, run_id, worker, lambda db: runs.finish(db, run_id, RunStatus.cancelled, message, worker_id=worker.id))
    if returncode == 0:
        return _complete(settings, factory, run_id, folder, worker, tail)
    if returncode == BAD_INPUT_EXIT:
        message = f"{reason} (bad config or data: not retried)\n{tail}"
        return _end(factory, run_id, worker, lambda db: runs.finish(db, run_id, RunStatus.failed, message, worker_id=worker.id))
    return _end(factory, run_id, worker, lambda db: runs.retry_or_fail(db, run_id, reason, worker_id=worker.id, log=tail))


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
         lock_wait_s: float = LOCK_WAIT_S, echo=print) -> int:
    """Claim and run jobs until stopped (or, with once=True, until the queue is empty).
    Returns the number of runs that ended (succeeded, failed or cancelled) here."""
    worker = WorkerInfo.current(worker_id, gpus)
    done = 0
    try:
        while True:
            try:
                requeued, claimed = _poll(factory, worker, stale_after_s)
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
                             lock_wait_s=lock_wait_s, echo=echo)
            echo(f"run {run_id} {status.value}")
            if status in runs.FINISHED:
                done += 1
            elif status == RunStatus.queued:
                time.sleep(min(poll_s, 2.0))  # not straight back into a run that just went wrong
    finally:
        _forget_self(factory, worker)


def _poll(factory, worker: WorkerInfo, stale_after_s: int) -> tuple[list[int], tuple | None]:
    """One look at the queue: say this worker is alive, requeue runs of dead workers, claim one."""
    with unit_of_work(factory) as db:
        worker.touch(db)
        runs.forget_workers(db, older_than_s=FORGET_WORKERS_AFTER_S)
        requeued = runs.requeue_stale(db, stale_after_s=stale_after_s)
        run = runs.claim_next(db, worker.id)
        return requeued, (run.id, run.kind.value, run.name, run.attempts) if run else None


def _forget_self(factory, worker: WorkerInfo) -> None:
    # Leaving anyway: if the database is unreachable, the row goes stale and is forgotten.
    with contextlib.suppress(Exception), unit_of_work(factory) as db:
        runs.remove_worker(db, worker.id)
