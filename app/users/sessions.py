"""Server-side sign-in sessions: started at sign-in, ended by sign-out, by their owner, or by a
credential change. Services flush, never commit.

The signed session cookie carries a random key (``SESSION_KEY`` in the cookie's data); the table
keeps its sha256. A session is alive while it is not revoked, its user is active, and it was seen
within ``settings.session_max_age_s`` (the same sliding lifetime as the cookie). ``last_seen_at``
is written at most once a minute per session, so a busy browser does not write on every request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, joinedload

from app import security
from app.audit import service as audit
from app.config import Settings
from app.db import utcnow
from app.errors import NotFound
from app.users.models import User, UserSession

SESSION_KEY = "sk"  # the field of the signed cookie that holds the session key
TOUCH_EVERY = timedelta(minutes=1)


def start(db: Session, user: User, *, user_agent: str, client_ip: str) -> tuple[UserSession, str]:
    """A new session for ``user``; returns the row and the key to put in the cookie."""
    _prune(db, user.id)
    key, key_hash = security.new_session_key()
    row = UserSession(user_id=user.id, token_hash=key_hash, user_agent=(user_agent or "")[:300],
                      client_ip=(client_ip or "")[:64])
    db.add(row)
    db.flush()
    return row, key


KEEP_ENDED = timedelta(days=90)  # longer than any login_trust_days in use: known addresses come from here


def _prune(db: Session, user_id: int) -> None:
    """Forget the user's sessions that started long ago and are over (the table does not grow forever)."""
    db.execute(delete(UserSession).where(UserSession.user_id == user_id, UserSession.created_at < utcnow() - KEEP_ENDED,
                                         UserSession.last_seen_at < utcnow() - KEEP_ENDED))


def is_alive(row: UserSession | None, settings: Settings, now: datetime | None = None) -> bool:
    if row is None or row.revoked_at is not None:
        return False
    now = now or utcnow()
    return now - row.last_seen_at <= timedelta(seconds=settings.session_max_age_s)


def user_for_key(db: Session, settings: Settings, key: str | None) -> tuple[User, UserSession] | None:
    """The active user and live session behind a cookie's key, or None (one indexed query)."""
    if not key or not isinstance(key, str):
        return None
    row = db.scalar(
        select(UserSession).options(joinedload(UserSession.user))
        .where(UserSession.token_hash == security.hash_session_key(key))
    )
    now = utcnow()
    if not is_alive(row, settings, now) or not row.user.active:
        return None
    if now - row.last_seen_at > TOUCH_EVERY:
        row.last_seen_at = now
    return row.user, row


def list_alive(db: Session, settings: Settings, user: User) -> Sequence[UserSession]:
    """The user's live sessions, most recently seen first."""
    since = utcnow() - timedelta(seconds=settings.session_max_age_s)
    return db.scalars(
        select(UserSession)
        .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None), UserSession.last_seen_at >= since)
        .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
    ).all()


def _revoke(row: UserSession, reason: str) -> None:
    row.revoked_at = utcnow()
    row.end_reason = reason


def end_by_key(db: Session, key: str | None, reason: str = "signed-out") -> UserSession | None:
    """Signing out: the session behind this cookie key ends (nothing happens for an unknown key)."""
    if not key or not isinstance(key, str):
        return None
    row = db.scalar(select(UserSession).where(UserSession.token_hash == security.hash_session_key(key)))
    if row is not None and row.revoked_at is None:
        _revoke(row, reason)
        db.flush()
    return row


def end_own(db: Session, session_id: int, *, user: User) -> UserSession:
    """The owner ends one of their sessions. Someone else's session is "not found": no leaking of ids."""
    row = db.get(UserSession, session_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"No session with id {session_id}.")
    if row.revoked_at is None:
        _revoke(row, "ended")
        audit.record(db, user.id, "session.end", "user_session", row.id)
        db.flush()
    return row


def end_all(db: Session, user_id: int, *, reason: str, keep: int | None = None) -> int:
    """Ends every live session of a user (but ``keep``); returns how many ended."""
    stmt = (
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), end_reason=reason)
        .execution_options(synchronize_session="fetch")
    )
    if keep is not None:
        stmt = stmt.where(UserSession.id != keep)
    return db.execute(stmt).rowcount or 0


def end_others(db: Session, user: User, *, keep: int | None) -> int:
    ended = end_all(db, user.id, reason="ended", keep=keep)
    audit.record(db, user.id, "session.end_others", "user", user.id, f"{ended} ended")
    return ended


def known_address(db: Session, settings: Settings, username: str, client_ip: str) -> bool:
    """Whether ``username`` signed in from ``client_ip`` within ``settings.login_trust_days``."""
    since = utcnow() - timedelta(days=settings.login_trust_days)
    return db.scalar(
        select(UserSession.id).join(User, User.id == UserSession.user_id)
        .where(User.username == username, UserSession.client_ip == client_ip, UserSession.created_at >= since)
        .limit(1)
    ) is not None
