"""Small factories that build rows for tests. Each flushes, never commits."""

from __future__ import annotations

import itertools

from sqlalchemy.orm import Session

from app.users import service as users
from app.users.models import User

PASSWORD = "correct-horse-battery"
_seq = itertools.count(1)


def make_user(db: Session, role: str = "labeler", *, username: str | None = None, group: str = "train") -> User:
    username = username or f"{role}{next(_seq)}"
    return users.create_user(db, username=username, password=PASSWORD, role=role, labeler_group=group)
