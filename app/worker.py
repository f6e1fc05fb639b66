"""The training-job worker: claims queued runs, launches the trainer, streams its metrics.

One worker per GPU host (any number of them). For each run it:
1. claims it with FOR UPDATE SKIP LOCKED (no two workers take the same run);
2. writes the run's options to ``<artifact_dir>/runs/<id>/run_config.json`` and launches
   ``python -m trainers <kind> --config run_config.json`` (``torchrun`` when the run asks for
   several GPUs) — trainers never import the app;
3. every few seconds: heartbeats, copies new lines of the trainer's ``metrics.jsonl`` into
   ``run_metrics`` (a metric named ``progress`` in 0..1 drives the progress bar), and stops the
   trainer when an admin cancelled the run;
4. records success or failure with the end of the trainer's log.
Runs whose worker died are requeued by any live worker and resume from their last checkpoint
(the trainer resumes from the same output folder).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import unit_of_work
from app.runs import launch
from app.runs import service as runs
from app.runs.models import Run, RunStatus


@dataclass
class MetricsTail:
    """Reads the lines appended to a metrics.jsonl file since the last call."""

    path: Path
    offset: int = 0
    last_progress: float | None = None
    buffer: str = field(default="")

    def read_new(self) -> list[tuple[int, str, float]]:
        if not self.path.exists():
            return []
        with self.path.open("r", encoding="utf-8") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
            self.offset = fh.tell()
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split("\n")
        rows = []
        for line in lines:
            try:
                item = json.loads(line)
                row = (int(item["step"]), str(item["name"]), float(item["value"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn or foreign line is not a metric
            if row[1] == "progress":
                self.last_progress = row[2]
            rows.append(row)
        return rows


def trainer_command(run: Run, config_path: Path) -> list[str]:
    if run.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={run.gpus}", "-m", "trainers",
                run.kind.value, "--config", str(config_path)]
    return [sys.executable, "-m", "trainers", run.kind.value, "--config", str(config_path)]


def run_folder(settings: Settings, run: Run) -> Path:
    folder = Path(settings.artifact_dir).resolve() / "runs" / str(run.id)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def execute(settings: Settings, factory: sessionmaker[Session], run_id: int, *, poll_s: float = 2.0) -> RunStatus:
    """Run one claimed run to its end and record the outcome."""
    with unit_of_work(factory) as db:
        run = runs.get_run(db, run_id)
        folder = run_folder(settings, run)
        config_path = launch.prepare(db, settings, run, folder)
        run.output_dir = str(folder)
        command = trainer_command(run, config_path)
        tail = MetricsTail(launch.output_dir(folder) / "metrics.jsonl")
    log_path = folder / "trainer.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        cancelled = False
        while True:
            exited = process.poll() is not None
            with unit_of_work(factory) as db:
                runs.record_metrics(db, run_id, tail.read_new())
                cancel = runs.heartbeat(db, run_id, progress=tail.last_progress)
            if exited:
                break
            if cancel and not cancelled:
                cancelled = True
                os.killpg(process.pid, signal.SIGTERM)
            time.sleep(poll_s)
    log_tail = _tail(log_path)
    if cancelled:
        status, message = RunStatus.cancelled, "cancelled by an admin\n" + log_tail
    elif process.returncode == 0:
        with unit_of_work(factory) as db:
            summary = launch.complete(db, settings, runs.get_run(db, run_id), folder)
        status, message = RunStatus.succeeded, (summary + "\n" + log_tail).strip()
    else:
        status, message = RunStatus.failed, f"trainer exited with code {process.returncode}\n{log_tail}"
    with unit_of_work(factory) as db:
        runs.finish(db, run_id, status, message)
    return status


def _tail(path: Path, max_chars: int = 3000) -> str:
    data = path.read_bytes()[-max_chars:] if path.exists() else b""
    return data.decode("utf-8", errors="replace")


def work(settings: Settings, factory: sessionmaker[Session], *, once: bool = False, poll_s: float = 5.0,
         stale_after_s: int = 120, worker_id: str | None = None, echo=print) -> int:
    """Claim and run jobs until stopped (or, with once=True, until the queue is empty). Returns runs done."""
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
    done = 0
    while True:
        with unit_of_work(factory) as db:
            requeued = runs.requeue_stale(db, stale_after_s=stale_after_s)
            run = runs.claim_next(db, worker_id)
            claimed = (run.id, run.kind.value, run.name) if run else None
        for run_id in requeued:
            echo(f"requeued run {run_id}: its worker stopped responding")
        if claimed is None:
            if once:
                return done
            time.sleep(poll_s)
            continue
        run_id, kind, name = claimed
        echo(f"run {run_id} ({kind}, {name!r}) started")
        status = execute(settings, factory, run_id, poll_s=min(poll_s, 2.0))
        echo(f"run {run_id} {status.value}")
        done += 1
