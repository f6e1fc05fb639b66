"""Recording and reading the audit log."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry


def record(
    db: Session, actor_id: int | None, action: str, target_type: str, target_id: object = None, detail: str = ""
) -> AuditEntry:
    entry = AuditEntry(
        actor_id=actor_id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        detail=detail,
    )
    db.add(entry)
    db.flush()
    return entry


def recent(db: Session, limit: int = 100) -> Sequence[tuple[AuditEntry, str | None]]:
    """The newest entries with the actor's username (None for the system)."""
    from app.users.models import User

    rows = db.execute(
        select(AuditEntry, User.username)
        .outerjoin(User, User.id == AuditEntry.actor_id)
        .order_by(AuditEntry.id.desc())
        .limit(limit)
    )
    return [(entry, username) for entry, username in rows]
