"""Wire schemas of the model registry API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.registry.models import ModelKind


class ModelRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=200)
    path: str = Field(..., max_length=1000, description="a model folder on the server, or a transformers hub name")
    kind: ModelKind = ModelKind.base
    description: str = Field("", max_length=4000)


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: ModelKind
    path: str | None
    description: str
    run_id: int | None
    created_at: datetime


class DatasetRef(BaseModel):
    role: str
    id: int
    name: str
    kind: str
    sha256: str
    checked_sha256: str | None


class LineageOut(BaseModel):
    """A model, its metrics, the run that made it, the datasets that run read, and its parents."""

    model: ModelOut
    metrics: dict[str, float]
    run_id: int | None
    datasets: list[DatasetRef]
    parents: list[tuple[str, LineageOut]]
