"""FastAPI dependencies and the Annotated aliases handlers use: SessionDep, CurrentUser, RequireRole(...).

Permissions live here and only here: a handler states the roles it admits in its signature
(``user: RequireRole(Role.admin)``) and never checks roles inline.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import asyncdb, security
from app.config import Settings
from app.db import unit_of_work, utcnow
from app.errors import Forbidden, NotAuthenticated
from app.users import service as users
from app.users import sessions as user_sessions
from app.users.models import LabelerGroup, Role, User

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


@dataclass(frozen=True)
class UserView:
    """What pages show of the signed-in user; safe to render even after the request's transaction
    was rolled back (error pages)."""

    id: int
    username: str
    role: Role
    labeler_group: LabelerGroup

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(user.id, user.username, user.role, user.labeler_group)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent (scope='function')."""
    with unit_of_work(request.app.state.sessionmaker) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("Malformed Authorization header: expected 'Bearer rlhf_...'.")
    return token.strip()


def session_id(request: Request) -> str:
    """The browser session's random id (created on first use); CSRF tokens are derived from it."""
    sid = request.session.get("sid")
    if not sid:
        sid = secrets.token_urlsafe(24)
        request.session["sid"] = sid
    return sid


def csrf_token(request: Request, *, create: bool = True) -> str:
    """The CSRF token of this browser session. ``create=False`` (error pages) never starts a new
    browser session: a cross-site POST arrives without the victim's SameSite cookie, and a new
    cookie on its 403 page would replace (sign out) the victim's session."""
    if not create and not request.session.get("sid"):
        return ""
    return security.csrf_token_for(request.app.state.secret_key, session_id(request))


def client_ip(request: Request) -> str:
    """The client's address: the connection's, or from X-Forwarded-For when the connection comes
    from one of ``settings.trusted_proxies`` (app.security.client_address)."""
    return security.client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        tuple(request.app.state.settings.trusted_proxies),
    )


def _forget_session(request: Request) -> None:
    """The cookie's session ended (signed out elsewhere, revoked, expired): keep only the CSRF id."""
    request.session.pop(user_sessions.SESSION_KEY, None)
    for stale in ("uid", "v"):  # cookies issued before server-side sessions
        request.session.pop(stale, None)


def optional_user(request: Request, db: SessionDep) -> User | None:
    if "user" in request.state._state:
        return request.state.user
    token = bearer_token(request)
    user: User | None = None
    if token is not None:
        user = users.user_for_token(db, token)
        request.state.auth = "token"
    else:
        key = request.session.get(user_sessions.SESSION_KEY)
        if key is not None or "uid" in request.session:
            found = user_sessions.user_for_key(db, request.app.state.settings, key)
            if found is not None:
                user, row = found
                request.state.user_session_id = row.id
            else:  # signed out, ended, expired, deactivated, role changed or password changed
                _forget_session(request)
        request.state.auth = "cookie"
    request.state.user = user
    request.state.user_view = UserView.of(user) if user else None
    return user


OptionalUser = Annotated[User | None, Depends(optional_user)]


async def current_user(user: OptionalUser) -> User:
    # async: a pure check, so FastAPI does not spend a thread-pool hop on it
    if user is None:
        raise NotAuthenticated("Sign in to continue.")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def _check_role(user: User | UserView, allowed: frozenset[Role]) -> None:
    if user.role not in allowed:
        names = " or ".join(sorted(r.value for r in allowed))
        raise Forbidden(f"This page needs the {names} role; you are signed in as a {user.role.value}.")


def RequireRole(*roles: Role):  # noqa: N802 - reads as a type in signatures
    """Annotated alias for a signed-in user holding one of ``roles`` (403 otherwise)."""
    allowed = frozenset(roles)

    async def require(user: CurrentUser) -> User:  # a pure check: no thread-pool hop
        _check_role(user, allowed)
        return user

    require.allowed_roles = allowed  # read by the authorization-matrix test
    return Annotated[User, Depends(require)]


# --- the labeling hot path: the same rules, without a sync session ------------------------------

TOKEN_USER_SQL = """
SELECT u.id, u.username, u.role, u.labeler_group, u.active, t.id, t.revoked_at, t.last_used_at
FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = %s"""
COOKIE_USER_SQL = """
SELECT u.id, u.username, u.role, u.labeler_group, u.active, s.id, s.revoked_at, s.last_seen_at
FROM user_sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = %s"""
TOKEN_TOUCH_SQL = "UPDATE api_tokens SET last_used_at = %s WHERE id = %s"
SESSION_TOUCH_SQL = "UPDATE user_sessions SET last_seen_at = %s WHERE id = %s"


async def _hot_path_user(request: Request, pool) -> UserView | None:
    """The user behind an API token or a session cookie, by one query on the async pool; the
    same rules as ``optional_user`` (revoked token, deactivated user, ended session). A valid API
    token is re-checked at most every ``settings.token_cache_s`` seconds per process: labeling
    clients send two requests per ranking, and this saves a round trip on each. A session cookie
    is checked on every request (one indexed lookup by the key's hash, joined to its user), so
    signing out takes effect at once."""
    token = bearer_token(request)
    if token is not None:
        request.state.auth = "token"
        if not security.looks_like_api_token(token):
            raise NotAuthenticated("Malformed API token: expected 'Authorization: Bearer rlhf_...'.")
        token_hash = security.hash_api_token(token)
        ttl = request.app.state.settings.token_cache_s
        checked_tokens = request.app.state.checked_tokens  # token hash -> (time.monotonic(), user)
        checked = checked_tokens.get(token_hash)
        if checked is not None and time.monotonic() - checked[0] < ttl:
            return checked[1]
        async with pool.connection() as conn:
            row = await (await conn.execute(TOKEN_USER_SQL, (token_hash,))).fetchone()
            if row is None or row[6] is not None or not row[4]:
                checked_tokens.pop(token_hash, None)
                raise NotAuthenticated("Invalid or revoked API token.")
            now = utcnow()
            if row[7] is None or now - row[7] > timedelta(minutes=5):  # coarse, as users.user_for_token
                await conn.execute(TOKEN_TOUCH_SQL, (now, row[5]))
        user = UserView(row[0], row[1], Role(row[2]), LabelerGroup(row[3]))
        if ttl > 0:
            if len(checked_tokens) > 100_000:  # bounded: forget everything rather than grow
                checked_tokens.clear()
            checked_tokens[token_hash] = (time.monotonic(), user)
        return user
    request.state.auth = "cookie"
    key = request.session.get(user_sessions.SESSION_KEY)
    if not isinstance(key, str):
        if "uid" in request.session:
            _forget_session(request)
        return None
    now = utcnow()
    async with pool.connection() as conn:
        row = await (await conn.execute(COOKIE_USER_SQL, (security.hash_session_key(key),))).fetchone()
        alive = (row is not None and row[4] and row[6] is None
                 and now - row[7] <= timedelta(seconds=request.app.state.settings.session_max_age_s))
        if alive and now - row[7] > user_sessions.TOUCH_EVERY:
            await conn.execute(SESSION_TOUCH_SQL, (now, row[5]))
    if not alive:
        _forget_session(request)
        return None
    return UserView(row[0], row[1], Role(row[2]), LabelerGroup(row[3]))


def _sync_user(request: Request) -> UserView | None:
    with unit_of_work(request.app.state.sessionmaker) as db:
        user = optional_user(request, db)
        return UserView.of(user) if user else None


def RequireRoleView(*roles: Role):  # noqa: N802 - reads as a type in signatures
    """Like ``RequireRole``, for the labeling hot path: a ``UserView`` loaded by one async query
    when the app has its PostgreSQL pool (``asyncdb.hot_database``), else through the sync
    session in one thread-pool hop. 401 when not signed in, 403 for another role."""
    allowed = frozenset(roles)

    async def require(request: Request) -> UserView:
        hot = asyncdb.hot_database(request)
        user = await (_hot_path_user(request, hot.pool) if hot is not None else run_in_threadpool(_sync_user, request))
        if user is None:
            raise NotAuthenticated("Sign in to continue.")
        request.state.user_view = user
        _check_role(user, allowed)
        return user

    require.allowed_roles = allowed  # read by the authorization-matrix test
    return Annotated[UserView, Depends(require)]


async def csrf_protect(request: Request) -> None:
    """Every state-changing request authenticated by cookie must carry the session's CSRF token,
    in the ``csrf_token`` form field or the ``X-CSRF-Token`` header. Token-authenticated API calls
    carry no ambient credentials and are exempt."""
    if request.method in SAFE_METHODS or request.headers.get("authorization"):
        return
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get("csrf_token")
            sent = value if isinstance(value, str) else None
    if not security.csrf_token_valid(request.app.state.secret_key, request.session.get("sid"), sent):
        raise Forbidden(
            "Missing or invalid CSRF token. Your session may have expired: reload the page and try again."
        )
