"""Wire schemas of the evaluations API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., max_length=150)
    models: list[str | int] = Field(..., min_length=2, max_length=9, description="registered policies, by name or id")
    baseline: str | int | None = Field(None, description="one of the models (default: the first)")
    split: str | None = Field("test", description="prompt split (default test: held-out customers); null for any")
    category: str | None = None
    source: str | None = None
    limit: int | None = Field(None, ge=1, le=100_000)
    heldout_only: bool = Field(True, description="judged by held-out labelers only")
    overlap_share: float = Field(0.0, ge=0, le=1)
    overlap_count: int = Field(1, ge=1, le=20)
    options: dict = Field(default_factory=dict, description="sampling options of the generate run: temperature, max_new_tokens ...")
