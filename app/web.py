"""Shared pieces of the HTML side: the Jinja2 environment, ``render`` and the error pages."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.config import REPO_ROOT
from app.deps import csrf_token
from app.errors import AppError, NotAuthenticated, TooManyRequests
from app.flash import pop_flashes
from app.markdown import render_markdown

log = logging.getLogger("rlhf.web")

templates = Jinja2Templates(directory=str(REPO_ROOT / "templates"))
templates.env.autoescape = True  # every template, whatever its suffix
templates.env.filters["markdown"] = render_markdown  # {{ text | markdown }}: safe Markdown, raw HTML escaped
templates.env.globals["pop_flashes"] = pop_flashes  # redirect-after-post messages (app/flash.py)

# Navigation per role: (label, url). Later domains append their entries here.
NAV: dict[str, list[tuple[str, str]]] = {
    "admin": [("Home", "/"), ("Users", "/admin/users"), ("Prompts", "/admin/prompts"), ("Batches", "/admin/batches"), ("Review", "/review"), ("Datasets", "/datasets"), ("Import data", "/admin/datasets/import"), ("Agreement", "/agreement"), ("Models", "/models"), ("Runs", "/runs"), ("Evaluations", "/evals"), ("Audit log", "/admin/audit"), ("API tokens", "/account/tokens")],
    "researcher": [("Home", "/"), ("Datasets", "/datasets"), ("Review", "/review"), ("Agreement", "/agreement"), ("Models", "/models"), ("Runs", "/runs"), ("Evaluations", "/evals"), ("API tokens", "/account/tokens")],
    "labeler": [("Home", "/"), ("Write prompts", "/labeling/write"), ("History", "/labeling/history")],
}


def render(
    request: Request, template: str, context: dict[str, Any] | None = None, status_code: int = 200,
    *, new_session: bool = True,
) -> HTMLResponse:
    """A page. ``new_session=False`` (error pages) leaves the browser's cookie alone when it had no
    session: see ``app.deps.csrf_token``."""
    user = getattr(request.state, "user_view", None)
    ctx = {
        "user": user,
        "nav": NAV.get(user.role.value, []) if user else [],
        "csrf_token": csrf_token(request, create=new_session) if "session" in request.scope else "",
        "path": request.url.path,
        **(context or {}),
    }
    return templates.TemplateResponse(request, template, ctx, status_code=status_code)


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def _error_response(request: Request, status: int, title: str, message: str, details: list | None = None, headers=None):
    if wants_json(request):
        body: dict[str, Any] = {"error": title, "detail": message}
        if details:
            body["errors"] = details
        return JSONResponse(body, status_code=status, headers=headers)
    return render(
        request, "errors/error.html", {"status": status, "title": title, "message": message, "details": details or []},
        status_code=status, new_session=False,
    )


async def app_error_handler(request: Request, exc: AppError):
    if isinstance(exc, NotAuthenticated) and not wants_json(request) and request.method == "GET":
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=302)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, TooManyRequests) else None
    if isinstance(exc, NotAuthenticated) and wants_json(request):
        headers = {"WWW-Authenticate": "Bearer"}
    details = [{"field": exc.field, "message": exc.message}] if exc.field else None
    return _error_response(request, exc.status_code, exc.title, exc.message, details, headers)


async def validation_error_handler(request: Request, exc: RequestValidationError):
    details = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form"))
        details.append({"field": where or None, "message": err.get("msg", "invalid")})
    summary = "; ".join(f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details)
    return _error_response(request, 422, "Invalid input", summary or "The request is not valid.", details)


async def http_error_handler(request: Request, exc: StarletteHTTPException):
    titles = {404: "Not found", 405: "Method not allowed", 413: "Too large"}
    message = exc.detail if isinstance(exc.detail, str) else "Request failed."
    if exc.status_code == 404 and message == "Not Found":
        message = f"There is nothing at {request.url.path}."
    return _error_response(request, exc.status_code, titles.get(exc.status_code, "Error"), message, None, exc.headers)


async def server_error_handler(request: Request, exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error_response(request, 500, "Server error", "Something went wrong on our side. The error was logged.")
