"""The worker runs real trainer processes (tiny models on CPU) and records what happened."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from app.runs import service
from app.runs.models import RunMetric, RunStatus
from app.worker import MetricsTail, work

pytest.importorskip("torch")


def _sft_rows(path, n=12):
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"Say the number {i}.", "completion": f"The number is {i}."}) + "\n")
    return path


def test_worker_builds_a_tiny_model_then_fine_tunes_it(settings, session_factory, db, tmp_path):
    tiny = service.create_run(db, kind="init-tiny", name="tiny", config={"hidden_size": 32, "num_layers": 1})
    db.commit()
    lines: list[str] = []
    assert work(settings, session_factory, once=True, poll_s=0.2, echo=lines.append) == 1
    db.expire_all()
    assert tiny.status == RunStatus.succeeded, tiny.message
    model_dir = f"{tiny.output_dir}/output"

    data = _sft_rows(tmp_path / "sft.jsonl")
    sft = service.create_run(
        db, kind="sft", name="sft",
        config={"model": model_dir, "data": str(data), "epochs": 2, "batch_size": 4, "max_length": 64, "valid_fraction": 0.0},
    )
    db.commit()
    assert work(settings, session_factory, once=True, poll_s=0.2, echo=lines.append) == 1
    db.expire_all()
    assert sft.status == RunStatus.succeeded, sft.message
    assert sft.progress == 1.0 and sft.finished_at is not None
    names = set(db.scalars(select(RunMetric.name).where(RunMetric.run_id == sft.id)))
    assert any("loss" in n for n in names), names
    progress = service.metric_series(db, sft.id)["progress"]  # what drives the live bar while it runs
    assert progress[-1][1] == pytest.approx(1.0) and all(0 < v <= 1 for _, v in progress)
    assert f"run {sft.id} succeeded" in lines


def test_a_failing_trainer_fails_the_run_with_its_reason(settings, session_factory, db, tmp_path):
    run = service.create_run(db, kind="sft", name="broken", config={"model": str(tmp_path / "nope"), "data": str(tmp_path / "missing.jsonl")})
    db.commit()
    work(settings, session_factory, once=True, poll_s=0.2, echo=lambda _: None)
    db.expire_all()
    assert run.status == RunStatus.failed
    assert "exited with code" in run.message and "missing.jsonl" in run.message


def test_metrics_tail_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == []
    path.write_text('{"step": 1, "name": "loss", "value": 2.5, "time": 0}\n{"step": 2, "name": "lo')
    assert tail.read_new() == [(1, "loss", 2.5)]
    with path.open("a") as fh:
        fh.write('ss", "value": 2.0, "time": 1}\n{"step": 2, "name": "progress", "value": 0.5, "time": 1}\n')
    assert tail.read_new() == [(2, "loss", 2.0), (2, "progress", 0.5)]
    assert tail.last_progress == 0.5
