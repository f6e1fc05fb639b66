"""Redirect-after-post: a message (and, for a value shown once, the value) kept in the session
for the next page, so a successful form post can answer 303 and F5 never posts it again.

``flash(request, "Batch x created.")`` before the redirect; the next page's layout shows it
(templates/_flash.html, through the ``pop_flashes`` template global) and it is gone after that.
A value that must be shown exactly once (a generated password, a new API token) goes with
``keep_once`` and is read by the page that shows it with ``take_once``: it travels in the signed
session cookie for one request, never in the URL.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

FLASH_KEY = "_flash"
ONCE_KEY = "_once"


def flash(request: Request, message: str, kind: str = "success") -> None:
    """Queue a message for the next page. ``kind``: success, warn or error."""
    queued = list(request.session.get(FLASH_KEY) or [])
    queued.append({"message": str(message)[:2000], "kind": kind if kind in ("success", "warn", "error") else "success"})
    request.session[FLASH_KEY] = queued[-5:]


def pop_flashes(request: Request | None) -> list[dict]:
    if request is None or "session" not in request.scope:
        return []
    return list(request.session.pop(FLASH_KEY, None) or [])


def keep_once(request: Request, name: str, value: Any) -> None:
    once = dict(request.session.get(ONCE_KEY) or {})
    once[name] = value
    request.session[ONCE_KEY] = once


def take_once(request: Request, name: str) -> Any:
    """The value kept under ``name`` for this page, removed from the session (None when absent)."""
    if "session" not in request.scope:
        return None
    once = dict(request.session.get(ONCE_KEY) or {})
    value = once.pop(name, None)
    if once:
        request.session[ONCE_KEY] = once
    else:
        request.session.pop(ONCE_KEY, None)
    return value
