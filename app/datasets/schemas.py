"""Wire schemas for exports, frozen datasets, imports and agreement."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.datasets.models import ExportFormat, ExportKind

GroupChoice = Literal["train", "heldout", "all"]
StyleChoice = Literal["plain", "messages", "both"]


class ExportFilters(BaseModel):
    """Which rows an export holds. Held-out labelers are excluded unless asked for."""

    model_config = ConfigDict(extra="forbid")

    batch: str | None = Field(None, max_length=200, description="Batch name or id")
    split: Literal["train", "valid", "test"] | None = None
    since: datetime | None = Field(None, description="Submitted at or after (ISO-8601; UTC if no zone)")
    until: datetime | None = Field(None, description="Submitted before (ISO-8601; UTC if no zone)")
    labeler_group: GroupChoice = Field("train", description="train (default), heldout, or all")
    model: str | None = Field(None, max_length=200, description="Only rankings that include a response of this model")
    min_agreement: float | None = Field(
        None, ge=0, le=1, description="Only rankings of tasks ranked by >= 2 labelers with at least this agreement"
    )
    include_all_bad: bool = Field(True, description="Keep rankings marked 'all responses are bad'")
    include_evaluations: bool = Field(False, description="Also export the judgments of blind evaluation batches")

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return v

    @field_validator("batch", "model")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if isinstance(v, str) else v

    def described(self) -> dict:
        """The filters as they go into a manifest (JSON-safe, defaults included)."""
        return self.model_dump(mode="json")


class FreezeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: ExportKind
    format: ExportFormat = ExportFormat.jsonl
    style: StyleChoice | None = None
    name: str | None = Field(None, max_length=200)
    filters: ExportFilters = Field(default_factory=ExportFilters)


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: ExportKind
    format: ExportFormat
    style: str
    filters: dict
    row_count: int
    size_bytes: int
    sha256: str
    schema_version: int
    path: str
    created_at: datetime
    manifest: dict


class ImportSummaryOut(BaseModel):
    kind: str
    read: int
    imported: int
    skipped: dict[str, int]
    skipped_lines: list[str]
    detail: dict[str, int]
