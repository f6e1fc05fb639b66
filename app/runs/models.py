"""Training and generation runs (a run is a row) and the metrics they stream."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, CheckConstraint, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class RunKind(enum.StrEnum):
    sft = "sft"
    rm = "rm"
    ppo = "ppo"
    generate = "generate"
    eval = "eval"  # automatic evaluations of registered models
    init_tiny = "init-tiny"


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[RunKind] = mapped_column(Enum(RunKind, name="run_kind", native_enum=False, length=16))
    # The trainer's options (the keys of its --config file); the worker adds the output folder.
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    # The run asks for nodes x gpus_per_node; gpus is their product, the run's total (on one node:
    # torchrun's --nproc-per-node when above 1). Several nodes need a worker with the Slurm launcher.
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    gpus_per_node: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[RunStatus] = mapped_column(
        Enum(RunStatus, name="run_status", native_enum=False, length=16), default=RunStatus.queued
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    output_dir: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    # The name the run's output model is registered under (sft, rm, ppo, init-tiny runs).
    output_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # A generate run's prompt selection and ranking-batch settings (app/runs/specs.GenerationPlan).
    generation: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # A generate run that built a ranking batch from its samples.
    output_batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"), nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")  # last log lines or the failure reason
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RunInput(Base):
    """A registered model or frozen dataset a run was launched from, under the trainer option it
    fills (``role``: model, data, reward_model, prompts, pretrain_data ...). A dataset's sha256 is
    recorded when a worker claims the run and checks the file."""

    __tablename__ = "run_inputs"
    __table_args__ = (
        CheckConstraint("(model_id IS NULL) <> (dataset_id IS NULL)", name="one_input"),
        Index("ix_run_inputs_run_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), nullable=True, index=True)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), nullable=True, index=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RunMetric(Base):
    """One logged value. A resumed trainer logs some steps again: (run, name, step) is unique and
    the worker upserts, so a chart never shows a step twice."""

    __tablename__ = "run_metrics"
    __table_args__ = (UniqueConstraint("run_id", "name", "step", name="uq_run_metrics_run_name_step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Worker(Base):
    """A live `rlhf worker` process, seen at its last poll; run pages say when none is alive."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
