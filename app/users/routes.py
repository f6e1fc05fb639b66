"""JSON API for accounts: /api/me, /api/users, /api/tokens, /api/sessions, passwords."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.deps import CurrentUser, RequireRole, SessionDep, SettingsDep, client_ip
from app.errors import AppError, TooManyRequests
from app.security import generate_password
from app.users import service, sessions
from app.users.account_pages import current_session_id
from app.users.models import Role
from app.users.schemas import (
    PasswordChange, PasswordChanged, PasswordReset, SessionOut, SessionsEnded, TokenCreate, TokenCreated, TokenOut,
    UserCreate, UserOut, UserUpdate,
)

router = APIRouter(prefix="/api", tags=["accounts"])
Admin = RequireRole(Role.admin)


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser):
    return user


@router.get("/users", response_model=list[UserOut])
def list_users(db: SessionDep, admin: Admin):
    return service.list_users(db)


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, db: SessionDep, admin: Admin):
    return service.create_user(
        db, username=body.username, password=body.password, role=body.role,
        labeler_group=body.labeler_group, actor=admin,
    )


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(user_id: int, body: UserUpdate, db: SessionDep, admin: Admin):
    user = service.get_user(db, user_id)
    if body.role is not None:
        user = service.change_role(db, user_id, body.role, actor=admin)
    if body.labeler_group is not None:
        user = service.change_group(db, user_id, body.labeler_group, actor=admin)
    if body.active is not None:
        user = service.set_active(db, user_id, body.active, actor=admin)
    return user


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(db: SessionDep, user: CurrentUser):
    return service.list_tokens(db, user)


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, db: SessionDep, user: RequireRole(Role.admin, Role.researcher)):
    row, token = service.create_token(db, user, body.name)
    return TokenCreated(token=token, **TokenOut.model_validate(row).model_dump())


@router.delete("/tokens/{token_id}", response_model=TokenOut)
def revoke_token(token_id: int, db: SessionDep, user: CurrentUser):
    return service.revoke_token(db, token_id, actor=user)


# --- sessions and passwords -------------------------------------------------------------------


@router.get("/sessions", response_model=list[SessionOut])
def list_sessions(request: Request, db: SessionDep, settings: SettingsDep, user: CurrentUser):
    """The caller's live browser sessions, most recently seen first."""
    current = current_session_id(request)
    return [SessionOut.model_validate(row).model_copy(update={"current": row.id == current})
            for row in sessions.list_alive(db, settings, user)]


@router.delete("/sessions/{session_id}", response_model=SessionOut)
def end_session(request: Request, session_id: int, db: SessionDep, user: CurrentUser):
    row = sessions.end_own(db, session_id, user=user)
    if row.id == current_session_id(request):
        request.session.clear()
    return SessionOut.model_validate(row)


@router.post("/sessions/end-others", response_model=SessionsEnded)
def end_other_sessions(request: Request, db: SessionDep, user: CurrentUser):
    """Ends every browser session of the caller but the one this request came with (all of them for
    an API token)."""
    return SessionsEnded(ended=sessions.end_others(db, user, keep=current_session_id(request)))


@router.post("/me/password", response_model=PasswordChanged)
def change_password(request: Request, body: PasswordChange, db: SessionDep, settings: SettingsDep, user: CurrentUser):
    try:
        ended = service.change_password(
            db, settings, user, body.current_password, body.new_password,
            keep_session=current_session_id(request), client_ip=client_ip(request),
        )
    except AppError as exc:  # answered here, not raised: the request commits the failure record
        return _error_json(exc)
    return PasswordChanged(other_sessions_ended=ended)


def _error_json(exc: AppError) -> JSONResponse:
    body = {"error": exc.title, "detail": exc.message}
    if exc.field:
        body["errors"] = [{"field": exc.field, "message": exc.message}]
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, TooManyRequests) else None
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


@router.post("/users/{user_id}/password", response_model=PasswordReset)
def reset_password(user_id: int, db: SessionDep, admin: Admin):
    """An admin resets a user's password to a generated one (shown once); the user's sessions end."""
    password = generate_password()
    user = service.reset_password(db, user_id, password, actor=admin)
    return PasswordReset(username=user.username, password=password)
