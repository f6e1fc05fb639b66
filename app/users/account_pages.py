"""HTML pages of one's own account: the sessions signed in as me (end any, or all others) and the
password change. Every signed-in role has them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.deps import CurrentUser, SessionDep, SettingsDep, client_ip
from app.errors import AppError, InvalidInput
from app.users import service, sessions
from app.flash import flash, keep_once, take_once
from app.web import render

router = APIRouter(tags=["pages"])


def current_session_id(request: Request) -> int | None:
    """The id of the session this request came with (None for API-token requests)."""
    return getattr(request.state, "user_session_id", None)


def _sessions_page(request: Request, db, settings, user, *, notice: str | None = None):
    return render(
        request, "users/sessions.html",
        {"sessions": sessions.list_alive(db, settings, user), "current": current_session_id(request), "notice": notice},
    )


@router.get("/account/sessions")
def sessions_page(request: Request, db: SessionDep, settings: SettingsDep, user: CurrentUser):
    return _sessions_page(request, db, settings, user)


@router.post("/account/sessions/{session_id}/end")
def sessions_end(request: Request, session_id: int, db: SessionDep, user: CurrentUser):
    row = sessions.end_own(db, session_id, user=user)
    if row.id == current_session_id(request):  # ending this very session is signing out
        request.session.clear()
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/account/sessions", status_code=303)


@router.post("/account/sessions/end-others")
def sessions_end_others(request: Request, db: SessionDep, settings: SettingsDep, user: CurrentUser):
    ended = sessions.end_others(db, user, keep=current_session_id(request))
    flash(request, f"Ended {ended} other session{'s' if ended != 1 else ''}.")
    return RedirectResponse("/account/sessions", status_code=303)  # redirect-after-post (app/flash.py)


def _password_page(request: Request, *, error: AppError | None = None, done: int | None = None):
    return render(
        request, "users/password.html",
        {"error": error.message if error else None, "error_field": error.field if error else None, "done": done},
        status_code=error.status_code if error else 200,
    )


@router.get("/account/password")
def password_page(request: Request, user: CurrentUser):
    return _password_page(request, done=take_once(request, "password_done"))  # after the change's redirect


@router.post("/account/password")
def password_change(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    current_password: Annotated[str, Form(max_length=1024)] = "",
    new_password: Annotated[str, Form(max_length=1024)] = "",
    confirm_password: Annotated[str, Form(max_length=1024)] = "",
):
    try:
        if new_password != confirm_password:
            raise InvalidInput("The new password and its confirmation differ.", field="confirm_password")
        ended = service.change_password(db, settings, user, current_password, new_password,
                                        keep_session=current_session_id(request), client_ip=client_ip(request))
    except AppError as exc:  # nothing changed but the failure record, which is kept (committed)
        return _password_page(request, error=exc)
    keep_once(request, "password_done", ended)
    return RedirectResponse("/account/password", status_code=303)  # redirect-after-post (app/flash.py)
