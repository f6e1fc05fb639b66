"""Blind human evaluations between registered policies.

An evaluation compares two or more registered models on a prompt set (the test split by
default): a generate run samples one response per model and prompt, and builds an evaluation
batch (``batches.purpose = 'evaluation'``) of K = number of models per task, judged blind by
held-out labelers by default. Results are computed from the rankings of that batch.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class Evaluation(Base):
    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    baseline_model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    # The generate run that samples the responses, and the batch it builds for the judges.
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"), nullable=True)
    # split / category / source / limit of the prompts, as the generate run's plan holds them.
    prompt_selection: Mapped[dict] = mapped_column(JSON, default=dict)
    heldout_only: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class EvaluationModel(Base):
    """A model compared in an evaluation (the baseline is one of them)."""

    __tablename__ = "evaluation_models"
    __table_args__ = (UniqueConstraint("evaluation_id", "model_id", name="uq_evaluation_models_evaluation_model"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluations.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), index=True)
    position: Mapped[int] = mapped_column(SmallInteger, default=0)
