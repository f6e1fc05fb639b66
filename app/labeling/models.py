"""Labeling work: batches of tasks, leased assignments, and what labelers submit.

A *task* is one unit of labeler work (write a demonstration, rank K completions). An
*assignment* is the lease of a task to one labeler, with an expiry. A task is done when
``submission_count`` reaches ``required_submissions`` (1, or the overlap count for the share of
tasks several labelers do to measure agreement).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    JSON,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false as sa_false

from app.db import Base, UTCDateTime, utcnow


class TaskKind(enum.StrEnum):
    demonstration = "demonstration"
    ranking = "ranking"


class BatchStatus(enum.StrEnum):
    open = "open"
    paused = "paused"
    closed = "closed"


class TaskStatus(enum.StrEnum):
    open = "open"  # still needs submissions
    done = "done"


class AssignmentStatus(enum.StrEnum):
    active = "active"  # leased; valid until expires_at
    submitted = "submitted"
    skipped = "skipped"
    expired = "expired"  # lease ran out and the labeler came back after someone else finished it


class SkipReason(enum.StrEnum):
    unclear = "unclear"
    harmful = "harmful"
    personal_data = "personal_data"
    cannot_judge = "cannot_judge"  # e.g. the labeler lacks the expertise or the language
    other = "other"


# The paper's metadata flags for one response (InstructGPT, Table 3 / Appendix B).
FLAGS = {
    "fails_instruction": "Fails to follow the instruction",
    "inappropriate_for_customer": "Inappropriate for a customer assistant",
    "hallucination": "Hallucinates (makes up information not in the input)",
    "sexual_content": "Sexual content",
    "violent_content": "Violent content",
    "encourages_violence": "Encourages or fails to discourage violence, abuse, terrorism or self-harm",
    "denigrates_protected_class": "Denigrates a protected class",
    "harmful_advice": "Gives harmful advice",
    "expresses_opinion": "Expresses an opinion",
    "expresses_moral_judgment": "Expresses a moral judgment",
}


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint("k IS NULL OR (k >= 2 AND k <= 9)", name="k_range"),
        CheckConstraint("overlap_share >= 0 AND overlap_share <= 1", name="overlap_share_range"),
        CheckConstraint("overlap_count >= 1", name="overlap_count_min"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[TaskKind] = mapped_column(Enum(TaskKind, name="task_kind", native_enum=False, length=16))
    k: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)  # responses per ranking task
    overlap_share: Mapped[float] = mapped_column(Float, default=0.0)
    overlap_count: Mapped[int] = mapped_column(SmallInteger, default=1)
    lease_minutes: Mapped[int] = mapped_column(Integer, default=30)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher first
    include_heldout: Mapped[bool] = mapped_column(Boolean, default=True)
    # Only held-out labelers take its tasks (blind evaluations are judged by held-out labelers).
    heldout_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # training (default) or evaluation: evaluation rankings stay out of training exports unless asked for.
    purpose: Mapped[str] = mapped_column(String(16), default="training", server_default="training")
    status: Mapped[BatchStatus] = mapped_column(
        Enum(BatchStatus, name="batch_status", native_enum=False, length=16), default=BatchStatus.open
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Imported rankings (HH, OASST, comparisons) live in a batch too, with source set.
    source: Mapped[str] = mapped_column(String(32), default="app")
    # Markdown instructions for the batch's labelers, shown on every task (rendered safely).
    guidelines: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The prompt selection the batch was built from: {"split", "category", "source", "import_tag", "prompt_ids"}.
    selection: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("submission_count <= required_submissions", name="no_overshoot"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    kind: Mapped[TaskKind] = mapped_column(Enum(TaskKind, name="task_kind", native_enum=False, length=16))
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    required_submissions: Mapped[int] = mapped_column(SmallInteger, default=1)
    submission_count: Mapped[int] = mapped_column(SmallInteger, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # copied from the batch for the queue index
    status: Mapped[TaskStatus] = mapped_column(
        Enum(TaskStatus, name="task_status", native_enum=False, length=8), default=TaskStatus.open
    )
    # Set by the lease that fills the task's last free slot: until then (the first of its live
    # leases to expire) "next task" passes this row without counting its leases. A hint only:
    # the exact count under the row lock decides, and NULL is always safe.
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    items: Mapped[list[TaskItem]] = relationship(order_by="TaskItem.position", cascade="all, delete-orphan")


# The queue order (ORDER BY priority DESC, id): "next task" walks this index from its head and
# stops at the first task it may take (LIMIT 1), instead of sorting every open task.
Index("ix_tasks_queue", Task.status, Task.priority.desc(), Task.id)


class TaskItem(Base):
    """One of the K completions of a ranking task, in canonical order."""

    __tablename__ = "task_items"
    __table_args__ = (UniqueConstraint("task_id", "completion_id", name="uq_task_items_task_completion"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(SmallInteger)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "labeler_id", name="uq_assignments_task_labeler"),  # never a task twice
        Index("ix_assignments_labeler_status", "labeler_id", "status"),
        Index("ix_assignments_task_status", "task_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    labeler_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[AssignmentStatus] = mapped_column(
        Enum(AssignmentStatus, name="assignment_status", native_enum=False, length=16), default=AssignmentStatus.active
    )
    leased_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Completion ids in the order this labeler was shown them (shuffled per labeler).
    shown_order: Mapped[list | None] = mapped_column(JSON, nullable=True)
    skip_reason: Mapped[SkipReason | None] = mapped_column(
        Enum(SkipReason, name="skip_reason", native_enum=False, length=16), nullable=True
    )
    skip_note: Mapped[str | None] = mapped_column(Text, nullable=True)  # the labeler's words with a skip
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Ranking(Base):
    """One labeler's submitted ranking of a task's K completions."""

    __tablename__ = "rankings"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    # One ranking per assignment: the database itself refuses a double submit.
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), unique=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    labeler_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    # For imported rankings (HH, OASST ...): the external annotator's pseudonym.
    external_labeler: Mapped[str | None] = mapped_column(String(200), nullable=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    all_bad: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str] = mapped_column(Text, default="")
    time_spent_s: Mapped[float] = mapped_column(Float, default=0.0)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    entries: Mapped[list[RankingEntry]] = relationship(
        order_by="RankingEntry.bucket", cascade="all, delete-orphan", back_populates="ranking"
    )


class RankingEntry(Base):
    """Where one completion landed in a ranking: its bucket (0 = best; equal buckets are ties) and rating."""

    __tablename__ = "ranking_entries"
    __table_args__ = (
        UniqueConstraint("ranking_id", "completion_id", name="uq_ranking_entries_ranking_completion"),
        CheckConstraint("likert IS NULL OR (likert >= 1 AND likert <= 7)", name="likert_range"),
        CheckConstraint("bucket >= 0", name="bucket_min"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # looked up through uq_ranking_entries_ranking_completion (ranking_id first): no index of its own
    ranking_id: Mapped[int] = mapped_column(ForeignKey("rankings.id", ondelete="CASCADE"))
    completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"), index=True)
    bucket: Mapped[int] = mapped_column(SmallInteger)
    likert: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    # Position in which this labeler saw the response (0-based), for position-bias analysis.
    shown_position: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)

    ranking: Mapped[Ranking] = relationship(back_populates="entries")
    flags: Mapped[list[RankingFlag]] = relationship(cascade="all, delete-orphan")


class RankingFlag(Base):
    """One metadata flag (see FLAGS) raised on one response of a ranking."""

    __tablename__ = "ranking_flags"
    __table_args__ = (UniqueConstraint("entry_id", "flag", name="uq_ranking_flags_entry_flag"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("ranking_entries.id", ondelete="CASCADE"), index=True)
    flag: Mapped[str] = mapped_column(String(40), index=True)


class Demonstration(Base):
    __tablename__ = "demonstrations"
    __table_args__ = (
        # The same text submitted twice by one labeler is refused.
        UniqueConstraint("author_id", "content_hash", name="uq_demonstrations_author_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignments.id", ondelete="CASCADE"), unique=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    time_spent_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class Draft(Base):
    """Autosaved work in progress: one per labeler and task, kept across lease expiry and restarts."""

    __tablename__ = "drafts"
    __table_args__ = (UniqueConstraint("labeler_id", "task_id", name="uq_drafts_labeler_task"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text, default="")
    time_spent_s: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
