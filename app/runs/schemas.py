"""Wire schemas of the runs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.runs.models import RunKind, RunStatus
from app.runs.service import MAX_GPUS_PER_NODE, MAX_NODES


class RunCreate(BaseModel):
    """A run launched from registered models and frozen datasets (by name or id), never paths."""

    model_config = ConfigDict(extra="forbid")

    kind: RunKind
    name: str = Field("", max_length=200)
    inputs: dict[str, int | str | list[int | str]] = Field(
        default_factory=dict, description="trainer option -> registered model or frozen dataset (name or id); "
        "generate takes a list of models under 'model'")
    options: dict[str, Any] = Field(
        default_factory=dict, description="the trainer's other options (`python -m trainers KIND --help`); "
        "generate also takes its prompt selection and ranking-batch settings here")
    gpus: int = Field(0, ge=0, le=MAX_NODES * MAX_GPUS_PER_NODE, description="the run's total GPUs; alone: all on one node")
    nodes: int = Field(1, ge=1, le=MAX_NODES, description="nodes the run spans (several: a worker with the Slurm launcher)")
    gpus_per_node: int | None = Field(None, ge=0, le=MAX_GPUS_PER_NODE, description="processes (GPUs) per node; "
                                      "default: gpus / nodes")
    output_name: str | None = Field(None, max_length=200, description="name to register the output model under")


class RunInputOut(BaseModel):
    role: str
    model_id: int | None
    model: str | None
    dataset_id: int | None
    dataset: str | None
    sha256: str | None


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: RunKind
    status: RunStatus
    progress: float
    attempts: int
    max_attempts: int
    gpus: int
    nodes: int
    gpus_per_node: int
    config: dict
    generation: dict | None
    message: str
    output_dir: str | None
    output_name: str | None
    output_batch_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class RunDetailOut(RunOut):
    inputs: list[RunInputOut]
    output_model_id: int | None
    output_model: str | None


class MetricsOut(BaseModel):
    run_id: int
    series: dict[str, list[tuple[int, float]]]
