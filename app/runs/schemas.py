"""Wire schemas of the runs API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.runs.models import RunKind, RunStatus


class RunCreate(BaseModel):
    kind: RunKind
    name: str = Field("", max_length=200)
    config: dict = Field(default_factory=dict, description="The trainer's options, as in its --config file")
    gpus: int = Field(0, ge=0, le=64)


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: RunKind
    status: RunStatus
    progress: float
    attempts: int
    gpus: int
    config: dict
    message: str
    output_dir: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class MetricsOut(BaseModel):
    run_id: int
    series: dict[str, list[tuple[int, float]]]
