"""Frozen datasets (content-hashed export snapshots) and external annotators of imported rankings."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Enum, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class ExportKind(enum.StrEnum):
    comparisons = "comparisons"
    pairwise = "pairwise"
    sft = "sft"
    prompts = "prompts"
    corpus = "corpus"  # uploaded pretraining text (.txt, .txt.gz or JSONL 'text' rows) for PPO-ptx


class ExportFormat(enum.StrEnum):
    jsonl = "jsonl"
    jsonl_gz = "jsonl.gz"
    parquet = "parquet"
    txt = "txt"  # corpus datasets only
    txt_gz = "txt.gz"


class Dataset(Base):
    """One frozen export: the file under the artifact directory plus its manifest.

    A training run names a dataset id; the file's sha256 ties the run to the exact bytes.
    """

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[ExportKind] = mapped_column(Enum(ExportKind, name="dataset_kind", native_enum=False, length=16))
    format: Mapped[ExportFormat] = mapped_column(Enum(ExportFormat, name="dataset_format", native_enum=False, length=16))
    style: Mapped[str] = mapped_column(String(16), default="plain")
    filters: Mapped[dict] = mapped_column(JSON, default=dict)
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    schema_version: Mapped[int] = mapped_column(Integer, default=1)
    # Path relative to Settings.artifact_dir.
    path: Mapped[str] = mapped_column(String(1000))
    # The whole manifest as written next to the file (includes the agreement numbers).
    manifest: Mapped[dict] = mapped_column(JSON, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ExternalLabeler(Base):
    """An annotator of imported rankings (Ranking.external_labeler holds the name) and the group
    their work counts in, so held-out labelers stay held out through export -> import -> export."""

    __tablename__ = "external_labelers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    labeler_group: Mapped[str] = mapped_column(String(16), default="train")
    source: Mapped[str] = mapped_column(String(32), default="import")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
