"""Accounts logic: creating users, signing in, roles, passwords, API tokens. Services flush, never commit.

Sessions live in ``app.users.sessions`` and the sign-in limits in ``app.users.throttle``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from app import security
from app.audit import service as audit
from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, Forbidden, InvalidInput, NotAuthenticated, NotFound
from app.users import sessions, throttle
from app.users.models import ApiToken, LabelerGroup, Role, User

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")
MIN_PASSWORD_LENGTH = 10
BAD_LOGIN = "Wrong username or password."


def validate_username(username: str) -> str:
    username = username.strip()
    if not USERNAME_RE.match(username):
        raise InvalidInput(
            "Username must be 2-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit.",
            field="username",
        )
    return username


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.", field="password")
    if len(password) > 1024:
        raise InvalidInput("Password must be at most 1024 characters.", field="password")
    return password


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(f"Unknown role {value!r}: choose admin, researcher or labeler.", field="role") from None


def parse_group(value: str) -> LabelerGroup:
    try:
        return LabelerGroup(value)
    except ValueError:
        raise InvalidInput(f"Unknown labeler group {value!r}: choose train or heldout.", field="labeler_group") from None


def get_user(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound(f"No user with id {user_id}.")
    return user


def get_by_username(db: Session, username: str) -> User | None:
    return db.scalar(select(User).where(User.username == username))


def list_users(db: Session) -> Sequence[User]:
    return db.scalars(select(User).order_by(User.role, User.username)).all()


def create_user(
    db: Session,
    *,
    username: str,
    password: str,
    role: Role | str,
    labeler_group: LabelerGroup | str = LabelerGroup.train,
    actor: User | None = None,
) -> User:
    username = validate_username(username)
    validate_password(password)
    role = parse_role(role) if isinstance(role, str) else role
    group = parse_group(labeler_group) if isinstance(labeler_group, str) else labeler_group
    if get_by_username(db, username) is not None:
        raise Conflict(f"The username {username!r} is already taken.", field="username")
    user = User(username=username, password_hash=security.hash_password(password), role=role, labeler_group=group)
    db.add(user)
    try:
        with db.begin_nested():
            db.flush()
    except IntegrityError:  # lost a race with another request creating the same name
        raise Conflict(f"The username {username!r} is already taken.", field="username") from None
    audit.record(db, actor.id if actor else None, "user.create", "user", user.id, f"role={role} group={group}")
    return user


def _prevent_self_lockout(actor: User, user: User) -> None:
    if actor.id == user.id:
        raise Forbidden("You cannot deactivate yourself or change your own role.")


def set_active(db: Session, user_id: int, active: bool, *, actor: User) -> User:
    user = get_user(db, user_id)
    _prevent_self_lockout(actor, user)
    if user.active != active:
        user.active = active
        user.session_version += 1
        if not active:
            sessions.end_all(db, user.id, reason="deactivated")
        audit.record(db, actor.id, "user.activate" if active else "user.deactivate", "user", user.id)
    db.flush()
    return user


def change_role(db: Session, user_id: int, role: Role | str, *, actor: User) -> User:
    user = get_user(db, user_id)
    role = parse_role(role) if isinstance(role, str) else role
    _prevent_self_lockout(actor, user)
    if user.role != role:
        audit.record(db, actor.id, "user.role", "user", user.id, f"{user.role} -> {role}")
        user.role = role
        user.session_version += 1
        sessions.end_all(db, user.id, reason="role")  # signs in again, with the new role
    db.flush()
    return user


def change_group(db: Session, user_id: int, group: LabelerGroup | str, *, actor: User) -> User:
    user = get_user(db, user_id)
    group = parse_group(group) if isinstance(group, str) else group
    if user.labeler_group != group:
        audit.record(db, actor.id, "user.group", "user", user.id, f"{user.labeler_group} -> {group}")
        user.labeler_group = group
    db.flush()
    return user


def reset_password(db: Session, user_id: int, password: str, *, actor: User | None) -> User:
    """An admin (or the CLI, ``actor=None``) sets a user's password; every session of theirs ends."""
    user = get_user(db, user_id)
    if actor is not None and actor.id == user.id:
        raise Forbidden("To change your own password, use the change-password page: it asks for your current one.")
    user.password_hash = security.hash_password(validate_password(password))
    user.session_version += 1
    ended = sessions.end_all(db, user.id, reason="reset")
    audit.record(db, actor.id if actor else None, "user.password_reset", "user", user.id, f"{ended} sessions ended")
    db.flush()
    return user


def change_password(
    db: Session, settings: Settings, user: User, current_password: str, new_password: str, *,
    keep_session: int | None, client_ip: str,
) -> int:
    """The user changes their own password: the current one is required, and every other session of
    theirs ends (``keep_session``, the one they are using, stays). Returns how many ended.

    A wrong current password counts as a failed sign-in of (user, address), with the same backoff,
    so a borrowed session cannot be used to guess the password. Nothing else changes before the
    checks pass: the caller commits even when this raises, so that the failure is recorded."""
    throttle.check(db, settings, user.username, client_ip, trusted=True)
    if not security.verify_password(user.password_hash, current_password):
        throttle.record_failure(db, user.username, client_ip, settings)
        raise InvalidInput("Your current password is not right.", field="current_password")
    validate_password(new_password)
    if new_password == current_password:
        raise InvalidInput("The new password must differ from the current one.", field="new_password")
    user.password_hash = security.hash_password(new_password)
    user.session_version += 1
    ended = sessions.end_all(db, user.id, reason="password", keep=keep_session)
    audit.record(db, user.id, "user.password_change", "user", user.id, f"{ended} other sessions ended")
    db.flush()
    return ended


# --- signing in ---------------------------------------------------------------------------


def authenticate(
    db: Session, settings: Settings, username: str, password: str, client_ip: str, *, device_users: list[int] = ()
) -> User:
    """The active user with these credentials, or NotAuthenticated with one message for every failure.

    The message never says whether the username exists. ``device_users`` are the users this
    browser signed in as before (its device cookie): they, and addresses the user signed in from,
    pass the per-user and per-address limits (``app.users.throttle``). Failures are recorded for
    the limits; the caller must commit even when this raises (see pages/routes).
    """
    username = username.strip()[:64]
    user = get_by_username(db, username)
    trusted = user is not None and (
        user.id in device_users or sessions.known_address(db, settings, username, client_ip)
    )
    throttle.check(db, settings, username, client_ip, trusted=trusted)
    ok = security.verify_password(user.password_hash if user else None, password)
    if not ok or user is None or not user.active:
        throttle.record_failure(db, username, client_ip, settings)
        raise NotAuthenticated(BAD_LOGIN)
    throttle.forget_pair(db, username, client_ip)
    return user


# --- API tokens -----------------------------------------------------------------------------


def create_token(db: Session, user: User, name: str) -> tuple[ApiToken, str]:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInput("Give the token a name of 1-100 characters.", field="name")
    token, token_hash = security.new_api_token()
    row = ApiToken(user_id=user.id, name=name, token_hash=token_hash, prefix=token[:12])
    db.add(row)
    db.flush()
    audit.record(db, user.id, "token.create", "api_token", row.id, name)
    return row, token


def list_tokens(db: Session, user: User) -> Sequence[ApiToken]:
    return db.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())).all()


def revoke_token(db: Session, token_id: int, *, actor: User) -> ApiToken:
    row = db.get(ApiToken, token_id)
    # Someone else's token is "not found" for a non-admin: no leaking of ids.
    if row is None or (row.user_id != actor.id and actor.role != Role.admin):
        raise NotFound(f"No API token with id {token_id}.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(db, actor.id, "token.revoke", "api_token", row.id)
    db.flush()
    return row


def user_for_token(db: Session, token: str) -> User:
    if not security.looks_like_api_token(token):
        raise NotAuthenticated("Malformed API token: expected 'Authorization: Bearer rlhf_...'.")
    row = db.scalar(
        select(ApiToken)
        .options(joinedload(ApiToken.user))  # one round trip for the token and its owner
        .where(ApiToken.token_hash == security.hash_api_token(token))
    )
    if row is None or row.revoked_at is not None or not row.user.active:
        raise NotAuthenticated("Invalid or revoked API token.")
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=5):
        row.last_used_at = now  # coarse, so that busy API clients do not write on every call
    return row.user
