"""HTML pages for accounts: sign in/out, home per role, user admin, API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.deps import CurrentUser, OptionalUser, RequireRole, SessionDep, SettingsDep, client_ip
from app.errors import AppError, NotAuthenticated, TooManyRequests
from app.security import generate_password
from app.users import service, sessions, throttle
from app.users.account_pages import router as account_router
from app.users.models import LabelerGroup, Role
from app.flash import keep_once, take_once
from app.web import render

router = APIRouter(tags=["pages"])
router.include_router(account_router)  # /account/sessions, /account/password
Admin = RequireRole(Role.admin)
TokenHolder = RequireRole(Role.admin, Role.researcher)

# Home pages contributed by other domains: role -> callable(request, db, user) -> dict of context.
HOME_SECTIONS: dict[Role, list] = {Role.admin: [], Role.researcher: [], Role.labeler: []}


def _safe_next(next_url: str | None) -> str:
    # Only local paths: never redirect a user off-site after login.
    if next_url and next_url.startswith("/") and not next_url.startswith("//") and "\\" not in next_url:
        return next_url
    return "/"


@router.get("/login")
def login_page(request: Request, user: OptionalUser, next: str = "/"):
    if user is not None:
        return RedirectResponse(_safe_next(next), status_code=302)
    return render(request, "users/login.html", {"next": _safe_next(next), "error": None, "username": ""})


@router.post("/login")
def login(
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form()] = "/",
):
    secret = request.app.state.secret_key
    device_users = throttle.device_user_ids(secret, request.cookies.get(throttle.DEVICE_COOKIE), settings)
    address = client_ip(request)
    try:
        user = service.authenticate(db, settings, username, password, address, device_users=device_users)
    except (NotAuthenticated, TooManyRequests) as exc:
        # The failed attempt is recorded (and committed by the session) so the limits count it.
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, TooManyRequests) else None
        response = render(
            request, "users/login.html", {"next": _safe_next(next), "error": exc.message, "username": username},
            status_code=exc.status_code,
        )
        response.headers.update(headers or {})
        return response
    _, key = sessions.start(db, user, user_agent=request.headers.get("user-agent", ""), client_ip=address)
    request.session.clear()  # new session id on sign-in: no session fixation
    request.session[sessions.SESSION_KEY] = key
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(  # this browser is now trusted for this user by the sign-in limits
        throttle.DEVICE_COOKIE, throttle.device_cookie_for(secret, device_users, user.id),
        max_age=settings.login_trust_days * 86400, httponly=True, samesite="lax", secure=settings.cookie_secure,
    )
    return response


@router.post("/logout")
def logout(request: Request, db: SessionDep):
    """Signs out: the session ends on the server too, so a saved copy of the cookie stops working."""
    sessions.end_by_key(db, request.session.get(sessions.SESSION_KEY), reason="signed-out")
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/")
def home(request: Request, db: SessionDep, user: CurrentUser):
    sections = [section(request, db, user) for section in HOME_SECTIONS[user.role]]
    return render(request, f"users/home_{user.role.value}.html", {"sections": sections})


# --- admin: users -----------------------------------------------------------------------------


def _users_page(
    request: Request, db, *, error: str | None = None, created: dict | None = None, status_code=200, form=None,
    reset: dict | None = None,
):
    return render(
        request,
        "users/admin_users.html",
        {
            "users": service.list_users(db),
            "roles": list(Role),
            "groups": list(LabelerGroup),
            "error": error,
            "created": created,
            "reset": reset,
            "form": form or {},
        },
        status_code=status_code,
    )


@router.get("/admin/users")
def admin_users(request: Request, db: SessionDep, admin: Admin):
    # a new or reset password is shown once, on the page the post redirected to (app/flash.py)
    return _users_page(request, db, created=take_once(request, "user_created"), reset=take_once(request, "user_reset"))


@router.post("/admin/users")
def admin_create_user(
    request: Request,
    db: SessionDep,
    admin: Admin,
    username: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[str, Form()] = "labeler",
    labeler_group: Annotated[str, Form()] = "train",
    password: Annotated[str, Form(max_length=1024)] = "",
):
    chosen = password or generate_password()
    form = {"username": username, "role": role, "labeler_group": labeler_group}
    try:
        user = service.create_user(
            db, username=username, password=chosen, role=role, labeler_group=labeler_group, actor=admin
        )
    except AppError as exc:
        db.rollback()
        return _users_page(request, db, error=exc.message, status_code=exc.status_code, form=form)
    keep_once(request, "user_created", {"username": user.username, "password": None if password else chosen})
    return RedirectResponse("/admin/users", status_code=303)  # F5 does not create the user again


@router.post("/admin/users/{user_id}")
def admin_update_user(
    request: Request,
    user_id: int,
    db: SessionDep,
    admin: Admin,
    action: Annotated[str, Form()],
    value: Annotated[str, Form()] = "",
):
    try:
        if action == "deactivate":
            service.set_active(db, user_id, False, actor=admin)
        elif action == "activate":
            service.set_active(db, user_id, True, actor=admin)
        elif action == "role":
            service.change_role(db, user_id, value, actor=admin)
        elif action == "group":
            service.change_group(db, user_id, value, actor=admin)
        elif action == "reset_password":
            password = generate_password()
            target = service.reset_password(db, user_id, password, actor=admin)
            keep_once(request, "user_reset", {"username": target.username, "password": password})
            return RedirectResponse("/admin/users", status_code=303)
        else:
            return _users_page(request, db, error=f"Unknown action {action!r}.", status_code=422)
    except AppError as exc:
        db.rollback()
        return _users_page(request, db, error=exc.message, status_code=exc.status_code)
    return RedirectResponse("/admin/users", status_code=303)


# --- API tokens -------------------------------------------------------------------------------


@router.get("/account/tokens")
def tokens_page(request: Request, db: SessionDep, user: TokenHolder):
    new_token = take_once(request, "new_token")  # shown once, after the create's redirect (app/flash.py)
    return render(request, "users/tokens.html", {"tokens": service.list_tokens(db, user), "new_token": new_token, "error": None})


@router.post("/account/tokens")
def tokens_create(request: Request, db: SessionDep, user: TokenHolder, name: Annotated[str, Form(max_length=200)] = ""):
    try:
        _, token = service.create_token(db, user, name)
    except AppError as exc:
        db.rollback()
        return render(
            request, "users/tokens.html",
            {"tokens": service.list_tokens(db, user), "new_token": None, "error": exc.message},
            status_code=exc.status_code,
        )
    keep_once(request, "new_token", token)
    return RedirectResponse("/account/tokens", status_code=303)  # F5 does not make a second token


@router.post("/account/tokens/{token_id}/revoke")
def tokens_revoke(token_id: int, db: SessionDep, user: TokenHolder):
    service.revoke_token(db, token_id, actor=user)
    return RedirectResponse("/account/tokens", status_code=303)
