"""The worker survives faults.

Most tests here run the real ``rlhf worker`` CLI as subprocesses against a fresh, migrated
database, with tiny models trained on CPU, and break things the way machines break: ``kill -9``
of the worker or of its trainer, a trainer that crashes or refuses its input, two workers racing
for three runs, a worker asked to stop. The quicker checks of the same machinery (metric upserts,
retries, the run folder's lock, the worker notice, log cleaning) run in-process.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_sessionmaker, unit_of_work, utcnow
from app.migrate import upgrade
from app.runs import launch, service
from app.runs.models import Run, RunMetric, RunStatus, Worker
from app.web import templates
from app.worker import (
    MetricsTail,
    WorkerInfo,
    clean_log,
    execute,
    log_tail,
    visible_gpus,
    work,
)
from tests.db_setup import fresh_database

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # after the torch skip

RLHF = Path(sys.executable).with_name("rlhf")
POLL = "0.2"


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "model"
    subprocess.run(
        [sys.executable, "-m", "trainers", "init-tiny", "--out", str(out), "--hidden-size", "32", "--num-layers", "1",
         "--intermediate-size", "64"],
        check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    with path.open("w") as fh:
        for i in range(24):
            fh.write(json.dumps({"prompt": f"Say the number {i}.", "completion": f"The number is {i}."}) + "\n")
    return path


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (one nobody has reaped yet is dead too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def logged_steps(metrics_file: Path) -> dict[tuple[str, int], float]:
    """The (name, step) pairs a metrics.jsonl holds, with their last value."""
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    return {(r["name"], r["step"]): r["value"] for r in rows}


def resumed_after(trainer_log: Path) -> int | None:
    """The step a resumed trainer went on from, as the run's log says it (the last resume)."""
    steps = re.findall(r"resuming from checkpoint \S+ \(step (\d+)\)", trainer_log.read_text(errors="replace"))
    return int(steps[-1]) if steps else None


@dataclass
class Lab:
    """A fresh database, an artifact folder, and the worker processes a test started."""

    url: str
    artifacts: Path
    factory: sessionmaker[Session]
    logs: Path
    workers: list[subprocess.Popen] = field(default_factory=list)

    def queue(self, name: str, config: dict, max_attempts: int = 3) -> int:
        with unit_of_work(self.factory) as db:
            run = service.create_run(db, kind="sft", name=name, config=config)
            run.max_attempts = max_attempts
            return run.id

    def start_worker(self, *args: str, progress_bars: bool = False) -> subprocess.Popen:
        env = {**os.environ, "RLHF_DATABASE_URL": self.url, "RLHF_ARTIFACT_DIR": str(self.artifacts)}
        env.pop("TRAINERS_NO_PROGRESS", None)
        if not progress_bars:
            env["TRAINERS_NO_PROGRESS"] = "1"
        out = (self.logs / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen([str(RLHF), "worker", "--poll", POLL, *args], env=env, cwd=self.logs,
                                stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.workers.append(proc)
        return proc

    def worker_output(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')}" for p in sorted(self.logs.glob("worker-*.log")))

    def wait_workers(self, *procs: subprocess.Popen, timeout: float = 240) -> None:
        for proc in procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"worker {proc.pid} did not finish\n{self.worker_output()}") from None

    def run(self, run_id: int) -> Run:
        with unit_of_work(self.factory) as db:
            return service.get_run(db, run_id)

    def folder(self, run_id: int) -> Path:
        return self.artifacts.resolve() / "runs" / str(run_id)

    def metrics_file(self, run_id: int) -> Path:
        return launch.output_dir(self.folder(run_id)) / "metrics.jsonl"

    def last_step(self, run_id: int) -> int:
        try:
            return max((step for _, step in logged_steps(self.metrics_file(run_id))), default=0)
        except (OSError, ValueError):
            return 0

    def trainer_pid(self, run_id: int) -> int | None:
        """The trainer's pid, which the worker writes into the run folder's lock file."""
        try:
            return int((self.folder(run_id) / ".lock").read_text().strip())
        except (OSError, ValueError):
            return None

    def db_metrics(self, run_id: int) -> dict[tuple[str, int], float]:
        with unit_of_work(self.factory) as db:
            rows = db.execute(select(RunMetric.name, RunMetric.step, RunMetric.value).where(RunMetric.run_id == run_id)).all()
        pairs = {(name, step): value for name, step, value in rows}
        assert len(pairs) == len(rows), "a (name, step) pair is stored twice"
        return pairs

    def worker_rows(self) -> list[Worker]:
        with unit_of_work(self.factory) as db:
            return list(db.scalars(select(Worker)))

    def live_workers(self) -> list[Worker]:
        with unit_of_work(self.factory) as db:
            return list(service.live_workers(db))


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    with fresh_database(tmp_path, "faults") as url:
        upgrade(url)
        engine = make_engine(url)
        logs = tmp_path / "logs"
        logs.mkdir()
        lab = Lab(url=url, artifacts=tmp_path / "artifacts", factory=make_sessionmaker(engine), logs=logs)
        try:
            yield lab
        finally:
            for proc in lab.workers:  # only the workers this test started, by pid
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            engine.dispose()


STEPS_PER_EPOCH = 12
KILL_EPOCHS = 5  # long enough to be killed mid-run


def sft_config(tiny_model: Path, sft_data: Path, epochs: int) -> dict:
    """12 steps per epoch, a checkpoint after every step (the kill tests need one mid-run)."""
    return {"model": str(tiny_model), "data": str(sft_data), "epochs": epochs, "batch_size": 2, "max_length": 64,
            "save_every": 1, "valid_fraction": 0.0}


def assert_metrics_match_the_log(lab: Lab, run_id: int) -> None:
    """One row per (name, step) the trainer logged, with the value it logged last."""
    logged = logged_steps(lab.metrics_file(run_id))
    stored = lab.db_metrics(run_id)
    assert set(stored) == set(logged)
    assert all(stored[key] == pytest.approx(logged[key], rel=1e-9) for key in logged)


# ---------------------------------------------------------------- real processes


@pytest.mark.slow
def test_a_killed_workers_trainer_dies_and_another_worker_resumes_the_run_to_the_same_weights(lab, tiny_model, sft_data, tmp_path):
    config = sft_config(tiny_model, sft_data, epochs=KILL_EPOCHS)
    reference_out = tmp_path / "reference"
    reference_config = tmp_path / "reference.json"
    reference_config.write_text(json.dumps({**config, "out": str(reference_out)}))
    reference = subprocess.Popen(  # the same training, uninterrupted, alongside
        [sys.executable, "-m", "trainers", "sft", "--config", str(reference_config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TRAINERS_NO_PROGRESS": "1"},
    )
    run_id = lab.queue("killed worker", config)

    first = lab.start_worker()
    wait_for(lambda: lab.last_step(run_id) >= 4, 120, "the first trainer to log step 4")
    trainer = lab.trainer_pid(run_id)
    assert trainer and alive(trainer)
    first.send_signal(signal.SIGKILL)
    first.wait()
    wait_for(lambda: not alive(trainer), 5, f"trainer {trainer} to die with its worker")
    assert lab.last_step(run_id) < KILL_EPOCHS * STEPS_PER_EPOCH, "the run finished before its worker was killed"
    assert lab.run(run_id).status == RunStatus.running  # nobody has told the database yet

    second = lab.start_worker("--stale-after", "2")
    wait_for(lambda: lab.run(run_id).status in service.FINISHED, 180, "the second worker to finish the run")
    run = lab.run(run_id)
    assert run.status == RunStatus.succeeded, run.message
    assert run.attempts == 2
    assert 3 <= resumed_after(lab.folder(run_id) / "trainer.log") < KILL_EPOCHS * STEPS_PER_EPOCH  # step 4 was seen, so step 3's checkpoint was written
    assert_metrics_match_the_log(lab, run_id)

    second.send_signal(signal.SIGTERM)  # a clean stop deletes the worker's row
    lab.wait_workers(second, timeout=30)
    assert [w.pid for w in lab.worker_rows()] == [first.pid]  # a killed worker cannot delete its row

    assert reference.wait(120) == 0, reference.stderr.read().decode()
    expected = load_file(reference_out / "model" / "model.safetensors")
    resumed = load_file(launch.output_dir(lab.folder(run_id)) / "model" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.allclose(expected[k], resumed[k], rtol=0, atol=1e-6) for k in expected)


@pytest.mark.slow
def test_a_killed_trainer_is_retried_and_resumes_from_its_checkpoint(lab, tiny_model, sft_data):
    run_id = lab.queue("killed trainer", sft_config(tiny_model, sft_data, epochs=KILL_EPOCHS))
    worker = lab.start_worker("--once")
    wait_for(lambda: lab.last_step(run_id) >= 4, 120, "the trainer to log step 4")
    trainer = lab.trainer_pid(run_id)
    os.kill(trainer, signal.SIGKILL)
    lab.wait_workers(worker)

    run = lab.run(run_id)
    assert run.status == RunStatus.succeeded, run.message
    assert run.attempts == 2
    assert 3 <= resumed_after(lab.folder(run_id) / "trainer.log") < KILL_EPOCHS * STEPS_PER_EPOCH  # step 4 was seen, so step 3's checkpoint was written
    steps = sorted(step for name, step in logged_steps(lab.metrics_file(run_id)) if name == "train/loss")
    assert steps == list(range(1, KILL_EPOCHS * STEPS_PER_EPOCH + 1))
    assert_metrics_match_the_log(lab, run_id)
    log = (lab.folder(run_id) / "trainer.log").read_text()
    assert "trainer killed by signal SIGKILL" in log and "attempt 2 of 3" in log


@pytest.mark.slow
def test_two_workers_run_three_runs_each_exactly_once_with_a_readable_log(lab, tiny_model, sft_data):
    ids = [lab.queue(f"race {i}", sft_config(tiny_model, sft_data, epochs=1)) for i in range(3)]
    workers = [lab.start_worker("--once", progress_bars=True) for _ in range(2)]
    seen = wait_for(lambda: len(lab.live_workers()) == 2 and lab.live_workers(), 60, "both workers to register")
    assert all(w.hostname and w.pid for w in seen)
    lab.wait_workers(*workers)
    assert all(w.returncode == 0 for w in workers), lab.worker_output()

    for run_id in ids:
        run = lab.run(run_id)
        assert run.status == RunStatus.succeeded, run.message
        assert run.attempts == 1
        log = (lab.folder(run_id) / "trainer.log").read_bytes().decode()  # not read_text: it turns '\r' into '\n'
        assert log.count("--- attempt ") == 1  # no run was executed twice
        assert "\r" in log  # the trainer drew progress bars ...
        assert "\r" not in run.message and "\x1b" not in run.message  # ... which the stored tail does not show
        assert "sft: 100%" in run.message
        assert_metrics_match_the_log(lab, run_id)
    assert lab.worker_rows() == []  # both exited cleanly and deleted their rows


@pytest.mark.slow
def test_bad_input_fails_at_once_and_a_crash_is_retried_until_max_attempts(lab, tiny_model, sft_data, tmp_path):
    bad = lab.queue("missing data", {**sft_config(tiny_model, sft_data, 1), "data": str(tmp_path / "missing.jsonl")})
    crash = lab.queue("crashes", sft_config(tiny_model, sft_data, 1), max_attempts=2)
    lab.folder(crash).mkdir(parents=True)
    launch.output_dir(lab.folder(crash)).write_text("a file where the trainer wants a folder: it crashes")
    lab.wait_workers(lab.start_worker("--once"), lab.start_worker("--once"))

    refused = lab.run(bad)
    assert refused.status == RunStatus.failed and refused.attempts == 1
    assert "exited with code 2" in refused.message and "not retried" in refused.message and "missing.jsonl" in refused.message
    crashed = lab.run(crash)
    assert crashed.status == RunStatus.failed and crashed.attempts == 2, crashed.message
    assert "exited with code 1" in crashed.message and "gave up after 2 attempts" in crashed.message
    assert (lab.folder(crash) / "trainer.log").read_text().count("--- attempt ") == 2


@pytest.mark.slow
def test_a_stopped_worker_stops_its_trainer_and_gives_the_run_back(lab, tiny_model, sft_data):
    run_id = lab.queue("stopped", sft_config(tiny_model, sft_data, epochs=KILL_EPOCHS))
    worker = lab.start_worker()
    wait_for(lambda: lab.last_step(run_id) >= 1, 120, "the trainer to log a step")
    trainer = lab.trainer_pid(run_id)
    worker.send_signal(signal.SIGTERM)
    lab.wait_workers(worker, timeout=60)
    assert worker.returncode == 0, lab.worker_output()  # a service manager's stop is a clean exit
    assert not alive(trainer)
    run = lab.run(run_id)
    assert run.status == RunStatus.queued and run.attempts == 0 and "was stopped" in run.message
    assert lab.worker_rows() == []


# ---------------------------------------------------------------- in-process checks


def test_a_run_whose_folder_is_still_locked_goes_back_to_the_queue_uncounted(settings, session_factory, db):
    run = service.create_run(db, kind="sft", name="locked", config={})
    service.claim_next(db, "me")
    db.commit()
    folder = Path(settings.artifact_dir).resolve() / "runs" / str(run.id)
    folder.mkdir(parents=True)
    with (folder / ".lock").open("w") as held:  # as an earlier attempt's live trainer holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        status = execute(settings, session_factory, run.id, worker=WorkerInfo("me", "host", 1, 0), lock_wait_s=0.3)
    db.expire_all()
    assert status == RunStatus.queued and run.status == RunStatus.queued
    assert run.attempts == 0 and "locked" in run.message and "4242" in run.message
    assert not (folder / "trainer.log").exists()  # no second trainer was started


def test_unusable_inputs_fail_the_run_at_once(settings, session_factory, db, monkeypatch):
    def refuse(*_args):
        raise launch.InputError("data: the file of dataset d1 changed since it was frozen")

    monkeypatch.setattr(launch, "prepare", refuse)
    run = service.create_run(db, kind="sft", name="changed input", config={})
    db.commit()
    assert work(settings, session_factory, once=True, poll_s=0.1, echo=lambda _: None) == 1
    db.expire_all()
    assert run.status == RunStatus.failed and run.attempts == 1
    assert run.message == "data: the file of dataset d1 changed since it was frozen"


def test_a_worker_waits_out_an_unreachable_database(settings, session_factory):
    failures = iter(range(2))

    def flaky():
        if next(failures, None) is not None:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return session_factory()

    lines: list[str] = []
    assert work(settings, flaky, once=True, poll_s=0.01, echo=lines.append) == 0
    assert lines == ["database unreachable ((builtins.Exception) connection refused); trying again in 0.01 s"] * 2


def test_metrics_are_upserted_per_name_and_step(db):
    run = service.create_run(db, kind="sft", name="m", config={})
    service.record_metrics(db, run.id, [(1, "loss", 3.0), (2, "loss", 2.5), (2, "loss", 2.4)])
    service.record_metrics(db, run.id, [(2, "loss", 2.0), (3, "loss", 1.5)])  # a resumed trainer re-logs step 2
    assert service.metric_series(db, run.id) == {"loss": [(1, 3.0), (2, 2.0), (3, 1.5)]}


def test_a_failed_attempt_is_queued_again_until_max_attempts_and_cancel_wins(db):
    run = service.create_run(db, kind="sft", name="r", config={})
    run.max_attempts = 2
    service.claim_next(db, "w")
    service.retry_or_fail(db, run.id, "trainer killed by signal SIGKILL", worker_id="w")
    assert run.status == RunStatus.queued and run.worker_id is None
    assert run.message.startswith("attempt 1 of 2: trainer killed by signal SIGKILL; queued again")
    service.claim_next(db, "w")
    service.retry_or_fail(db, run.id, "trainer exited with code 1", worker_id="w")
    assert run.status == RunStatus.failed and "gave up after 2 attempts" in run.message

    cancelled = service.create_run(db, kind="sft", name="c", config={})
    service.claim_next(db, "w")
    cancelled.cancel_requested = True
    service.retry_or_fail(db, cancelled.id, "trainer exited with code 1", worker_id="w")
    assert cancelled.status == RunStatus.cancelled


def test_a_worker_that_lost_its_run_neither_heartbeats_nor_finishes_it(db):
    run = service.create_run(db, kind="sft", name="r", config={})
    service.claim_next(db, "slow")
    run.heartbeat_at = utcnow() - timedelta(minutes=10)
    service.requeue_stale(db, stale_after_s=60)
    service.claim_next(db, "fast")
    beat_at = run.heartbeat_at
    assert service.heartbeat(db, run.id, worker_id="slow", message="old trainer") == service.Beat.lost
    service.finish(db, run.id, RunStatus.succeeded, "old trainer done", worker_id="slow")
    assert (run.status, run.worker_id, run.heartbeat_at, run.attempts) == (RunStatus.running, "fast", beat_at, 2)
    assert service.heartbeat(db, run.id, worker_id="fast") == service.Beat.go


def test_run_page_says_when_no_worker_is_alive(db):
    service.touch_worker(db, "gpu1:10", hostname="gpu1", pid=10, gpus=8, run_id=None)
    assert [w.id for w in service.live_workers(db)] == ["gpu1:10"] and service.worker_notice(db) is None
    db.get(Worker, "gpu1:10").last_seen_at = utcnow() - timedelta(minutes=5)
    db.flush()
    notice = service.worker_notice(db)
    assert "No worker has been seen" in notice and "RLHF_DATABASE_URL=" in notice and "rlhf worker" in notice

    run = service.create_run(db, kind="sft", name="waiting", config={})
    page = templates.env.get_template("runs/detail.html")
    user = SimpleNamespace(role=SimpleNamespace(value="researcher"), username="r")
    context = {"run": run, "user": user, "nav": [], "csrf_token": "", "config_json": "{}", "inputs": []}
    assert "No worker has been seen" in page.render(**context, worker_notice=notice)
    assert 'id="worker-notice"' not in page.render(**context)  # pages that do not pass it still render
    run.status = RunStatus.running
    assert 'id="worker-notice"' not in page.render(**context, worker_notice=notice)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,3")
    assert visible_gpus() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == 0


def test_progress_bar_redraws_and_colours_are_cleaned_from_the_log(tmp_path):
    raw = ("loading\n"
           "\rsft:   0%|          | 0/10 [00:00<?, ?it/s]\rsft:  50%|#####     | 5/10 [00:01<00:01]"
           "\rsft: 100%|##########| 10/10 [00:02<00:00]\n"
           "Writing shards:   0%|    | 0/1\n"
           "Writing shards: 100%|####| 1/1\n"
           "\x1b[31merror:\x1b[0m disk full\n")
    assert clean_log(raw) == ("loading\nsft: 100%|##########| 10/10 [00:02<00:00]\nWriting shards: 100%|####| 1/1\n"
                              "error: disk full\n")
    log = tmp_path / "trainer.log"
    log.write_text("x" * 100 + "\n" + "\rsft: 1%|" * 5000 + "\rsft: 100%|done\nlast line\n")
    tail = log_tail(log, max_chars=200, read_bytes=4096)
    assert tail == "sft: 100%|done\nlast line"


def test_metrics_tail_starts_over_when_a_resumed_trainer_rewrote_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"

    def line(step: int, value: float) -> str:
        return json.dumps({"step": step, "name": "loss", "value": value, "time": 0}) + "\n"

    path.write_text(line(1, 3.0) + line(2, 2.0) + line(3, 1.0))
    tail = MetricsTail(path)
    assert [s for s, _, _ in tail.read_new()] == [1, 2, 3]
    path.write_text(line(1, 3.0))  # resumed from step 1: the file shrank ...
    assert tail.read_new() == [(1, "loss", 3.0)]
    with path.open("a") as fh:
        fh.write(line(2, 2.1) + line(3, 1.1))
    assert tail.read_new() == [(2, "loss", 2.1), (3, "loss", 1.1)]
    path.write_text(line(1, 3.0) + line(2, 2.2) + line(3, 1.2) + line(4, 0.9))  # ... or grew past where it was read
    assert tail.read_new() == [(1, "loss", 3.0), (2, "loss", 2.2), (3, "loss", 1.2), (4, "loss", 0.9)]
