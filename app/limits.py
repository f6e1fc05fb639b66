"""Request-body size limits, enforced before anything parses a body or checks who is asking.

``BodyLimitMiddleware`` is a pure ASGI middleware, outside every other one. Each request gets the
limit of its route class:

* uploads (multipart file imports, corpus uploads): ``settings.max_upload_bytes``;
* the JSON import endpoints (``/api/prompts/import``, ``/api/completions/import``):
  ``settings.max_json_import_bytes``;
* everything else (JSON, forms): ``settings.max_body_bytes``.

An upload or import request that carries no credentials at all (no ``Authorization`` header, no
session cookie) is answered 401 before its body is read.

A declared ``Content-Length`` over the limit is answered 413 at once, without reading a byte of
the body; a chunked body is counted as it streams in and cut off with 413 as soon as it passes
the limit. Whatever the application was doing with the body at that moment is abandoned (the
transaction of the request rolls back: nothing was written).
"""

from __future__ import annotations

import logging
import re

import orjson

log = logging.getLogger("rlhf.limits")

# Route classes by path. Uploads are multipart forms carrying a file.
UPLOAD_PATHS = re.compile(
    r"^/(?:api/datasets/import/[^/]+|admin/datasets/import|admin/prompts/import|admin/completions/import"
    r"|datasets/corpus|api/datasets/corpus)/?$"
)
JSON_IMPORT_PATHS = re.compile(r"^/api/(?:prompts|completions)/import/?$")
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class BodyTooLarge(Exception):
    """Raised inside the app's ``receive`` when a streamed body passes its limit."""


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 1024:g} KiB" if n >= 1024 else f"{n} bytes"


def limit_for(path: str, settings) -> tuple[int, str]:
    """The body limit of a path and the setting that holds it."""
    if UPLOAD_PATHS.match(path):
        return settings.max_upload_bytes, "RLHF_MAX_UPLOAD_BYTES"
    if JSON_IMPORT_PATHS.match(path):
        return settings.max_json_import_bytes, "RLHF_MAX_JSON_IMPORT_BYTES"
    return settings.max_body_bytes, "RLHF_MAX_BODY_BYTES"


class BodyLimitMiddleware:
    def __init__(self, app, settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit, setting = limit_for(scope["path"], self.settings)
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > limit:
            await self._reject(scope, send, limit, setting)
            return
        if limit > self.settings.max_body_bytes and not _has_credentials(scope):
            # An upload or import with no credentials at all: answered before its body is read
            # (the real check of the credentials comes later, for those that carry some).
            await _send_error(scope, send, 401, "Not signed in", "Sign in (or send an API token) to upload or import.",
                              extra_headers=[(b"www-authenticate", b"Bearer")])
            return

        state = {"received": 0, "exceeded": False, "started": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["exceeded"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message):
            if state["exceeded"]:
                return  # the app's own answer to the cut-off body is replaced by the 413 below
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await self._reject(scope, send, limit, setting)

    async def _reject(self, scope, send, limit: int, setting: str) -> None:
        message = (
            f"The request body is larger than {_mib(limit)}, the limit for {scope['path']} "
            f"(the server's {setting} setting)."
        )
        await _send_error(scope, send, 413, "Too large", message, field="body")


def _has_credentials(scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"authorization" or (name == b"cookie" and b"rlhf_session=" in value):
            return True
    return False


async def _send_error(scope, send, status: int, title: str, message: str, *, field: str | None = None,
                      extra_headers=()) -> None:
    """A JSON error (API paths, JSON clients) or a small HTML page, answered by the middleware
    itself; the connection is closed, so the unread body is not waited for."""
    accept = b""
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            accept = value
    if scope["path"].startswith("/api/") or b"application/json" in accept:
        payload = {"error": title, "detail": message}
        if field:
            payload["errors"] = [{"field": field, "message": message}]
        body = orjson.dumps(payload)
        content_type = b"application/json"
    else:
        from html import escape

        body = (
            f"<!doctype html><meta charset=utf-8><title>{status} {escape(title)}</title>"
            f"<h1>{status} {escape(title)}</h1><p>{escape(message)}</p><p><a href=\"/login\">Sign in</a></p>"
        ).encode()
        content_type = b"text/html; charset=utf-8"
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"), *extra_headers],
    })
    await send({"type": "http.response.body", "body": body})


class LoggedOnce:
    """Outermost wrapper: an unexpected error is logged once, by the app's 500 handler
    (``web.server_error_handler``), and answered with its 500 page. Starlette's
    ServerErrorMiddleware re-raises it after the response so that the server logs it too, which
    printed every traceback twice (and let anyone flood the log at twice the rate); the re-raise
    stops here."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            if not started:  # the 500 handler itself failed: let the server answer and log it
                raise
            # else: already logged and answered by the 500 handler


def install(app, settings) -> None:
    """Put the body limit outside every middleware the app has so far, and the once-only error log
    around the whole stack (outside Starlette's ServerErrorMiddleware)."""
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: LoggedOnce(build())
