"""The project's own errors. Services raise these; the web layer maps them to status codes."""

from __future__ import annotations


class AppError(Exception):
    status_code = 400
    title = "Bad request"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(AppError):
    status_code = 422
    title = "Invalid input"


class NotAuthenticated(AppError):
    status_code = 401
    title = "Not signed in"


class Forbidden(AppError):
    status_code = 403
    title = "Forbidden"


class NotFound(AppError):
    status_code = 404
    title = "Not found"


class Conflict(AppError):
    status_code = 409
    title = "Conflict"


class TooManyRequests(AppError):
    status_code = 429
    title = "Too many requests"

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooLarge(AppError):
    status_code = 413
    title = "Too large"
