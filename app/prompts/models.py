"""Prompts and the completions (model or human responses) to them."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class PromptSource(enum.StrEnum):
    api = "api"
    plain = "plain"
    few_shot = "few_shot"
    use_case = "use_case"
    imported = "import"


class Split(enum.StrEnum):
    train = "train"
    valid = "valid"
    test = "test"


class Category(enum.StrEnum):
    generation = "generation"
    open_qa = "open_qa"
    brainstorming = "brainstorming"
    chat = "chat"
    rewrite = "rewrite"
    summarization = "summarization"
    classification = "classification"
    closed_qa = "closed_qa"
    extract = "extract"
    other = "other"


class PromptStatus(enum.StrEnum):
    active = "active"
    retired = "retired"


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Plain-text rendering (what a labeler reads, what plain exports carry); already scrubbed.
    text: Mapped[str] = mapped_column(Text)
    # The same prompt as chat messages [{"role", "content"}], when it came as a conversation.
    messages: Mapped[list | None] = mapped_column(JSON, nullable=True)
    source: Mapped[PromptSource] = mapped_column(Enum(PromptSource, name="prompt_source", native_enum=False, length=16))
    origin_user: Mapped[str] = mapped_column(String(200), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    split: Mapped[Split] = mapped_column(Enum(Split, name="prompt_split", native_enum=False, length=8), index=True)
    category: Mapped[Category] = mapped_column(
        Enum(Category, name="prompt_category", native_enum=False, length=16), default=Category.other
    )
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    scrubbed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Comma-separated kinds of personal data replaced, e.g. "email,phone".
    scrubbed_kinds: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[PromptStatus] = mapped_column(
        Enum(PromptStatus, name="prompt_status", native_enum=False, length=16), default=PromptStatus.active
    )
    # Which import brought it (a name given at import, else the import's time; the demo's are "demo").
    import_tag: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Completion(Base):
    """One response to a prompt: sampled from a model, imported, or written by a person."""

    __tablename__ = "completions"
    __table_args__ = (Index("ix_completions_prompt_hash", "prompt_id", "content_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(String(200), index=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"), nullable=True)
    # indexed: "next task" never shows a labeler a response they wrote
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True)
    # Generation settings (temperature, max_new_tokens, seed ...): read back, never queried.
    settings: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
