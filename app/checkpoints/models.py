"""The model registry: checkpoints (base / sft / rm / ppo) and where they came from."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class ModelKind(enum.StrEnum):
    base = "base"
    sft = "sft"
    rm = "rm"
    ppo = "ppo"
    external = "external"  # completions imported from elsewhere, no checkpoint here


class RegisteredModel(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[ModelKind] = mapped_column(Enum(ModelKind, name="model_kind", native_enum=False, length=16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
