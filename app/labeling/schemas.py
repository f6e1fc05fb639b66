"""Wire schemas of the labeling JSON API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from app.params import Id, Int32  # integers that fit the INTEGER columns (422 beyond)


class NextIn(BaseModel):
    kind: str | None = Field(None, description="demonstration or ranking; any kind when absent")


class RatingIn(BaseModel):
    completion_id: Id
    likert: Int32 | None = None
    flags: list[str] = Field(default_factory=list, max_length=20)


class RankingIn(BaseModel):
    ranked: list[list[Id]] = Field(description="Buckets of completion ids, best first; ids in one bucket are tied")
    ratings: list[RatingIn] = Field(default_factory=list, max_length=20)
    all_bad: bool = False
    comment: str = Field("", max_length=200_000)
    time_spent_s: float | None = None


class DemonstrationIn(BaseModel):
    text: str = Field(max_length=1_000_000)
    time_spent_s: float | None = None


class DraftIn(BaseModel):
    text: str = Field("", max_length=1_000_000)
    time_spent_s: float | None = None


class SkipIn(BaseModel):
    reason: str = Field(description="unclear, harmful, personal_data, cannot_judge or other")
    note: str = Field("", max_length=2000, description="the labeler's own words; required for 'other'")


class BatchIn(BaseModel):
    name: str
    kind: str = "ranking"
    k: Int32 | None = None
    overlap_share: float = 0.0
    overlap_count: Int32 = 1
    lease_minutes: Int32 = 30
    priority: Int32 = 0
    include_heldout: bool = True
    limit: Int32 | None = None
    model: str | None = None
    guidelines: str = Field("", max_length=100_000, description="Markdown shown to the labeler on every task")
    # Which prompts (all given filters must hold; none: every active prompt but the demo's)
    split: str | None = Field(None, max_length=16)
    category: str | None = Field(None, max_length=32)
    source: str | None = Field(None, max_length=16)
    import_tag: str | None = Field(None, max_length=100)
    prompt_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(None, max_length=100_000)

    def selection(self):
        from app.labeling.selection import PromptSelection

        return PromptSelection(split=self.split, category=self.category, source=self.source,
                               import_tag=self.import_tag, prompt_ids=self.prompt_ids)

    def options(self) -> dict:
        return self.model_dump(exclude={"split", "category", "source", "import_tag", "prompt_ids"})
