"""The model registry: every model the loop makes or uses, where its weights are, and its numbers.

Lineage is not stored twice: a model made by a run points at that run, and the run's inputs
(``run_inputs``: the models and frozen datasets it was launched from, with the sha256 checked
when a worker claimed it) are the model's parents and training data.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, Float, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class ModelKind(enum.StrEnum):
    base = "base"  # a pretrained or tiny model registered by an admin
    sft = "sft"
    rm = "rm"
    ppo = "ppo"
    external = "external"  # completions imported from elsewhere, no weights here


class RegisteredModel(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[ModelKind] = mapped_column(Enum(ModelKind, name="model_kind", native_enum=False, length=16))
    # A folder (absolute, or relative to Settings.artifact_dir) or a transformers hub name; none
    # for external models.
    path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The run that produced it (none for base and external models).
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True, index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ModelMetric(Base):
    """A headline number of a model (validation loss, RM held-out accuracy, final reward, KL ...),
    one row per model and metric name; the run or evaluation that measured it."""

    __tablename__ = "model_metrics"
    __table_args__ = (UniqueConstraint("model_id", "name", name="uq_model_metrics_model_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
