"""FastAPI dependencies and the Annotated aliases handlers use: SessionDep, CurrentUser, RequireRole(...).

Permissions live here and only here: a handler states the roles it admits in its signature
(``user: RequireRole(Role.admin)``) and never checks roles inline.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app import security
from app.config import Settings
from app.db import unit_of_work
from app.errors import Forbidden, NotAuthenticated
from app.users import service as users
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


def csrf_token(request: Request) -> str:
    return security.csrf_token_for(request.app.state.secret_key, session_id(request))


def optional_user(request: Request, db: SessionDep) -> User | None:
    if "user" in request.state._state:
        return request.state.user
    token = bearer_token(request)
    user: User | None = None
    if token is not None:
        user = users.user_for_token(db, token)
        request.state.auth = "token"
    else:
        uid = request.session.get("uid")
        if uid is not None:
            candidate = db.get(User, uid)
            if candidate and candidate.active and candidate.session_version == request.session.get("v"):
                user = candidate
            else:  # deactivated, role changed or password reset since this cookie was issued
                request.session.pop("uid", None)
                request.session.pop("v", None)
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


def RequireRole(*roles: Role):  # noqa: N802 - reads as a type in signatures
    """Annotated alias for a signed-in user holding one of ``roles`` (403 otherwise)."""
    allowed = frozenset(roles)
    names = " or ".join(sorted(r.value for r in allowed))

    async def require(user: CurrentUser) -> User:  # a pure check: no thread-pool hop
        if user.role not in allowed:
            raise Forbidden(f"This page needs the {names} role; you are signed in as a {user.role.value}.")
        return user

    require.allowed_roles = allowed  # read by the authorization-matrix test
    return Annotated[User, Depends(require)]


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
