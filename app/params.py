"""Input guards every route shares: integers the database can hold, and no NUL characters.

``check_inputs`` runs first on every route (an app-level dependency, app/main.py), after routing
and before authentication, CSRF or the handler: a path or query parameter the route declares as
an integer must fit a 32-bit database integer (ids are INTEGER columns), and no path, query or
form parameter, nor any string in a JSON body, may hold a NUL character (PostgreSQL refuses NUL
in text, so a lookup by such a name used to end in a 500). Either is a 422 naming the field.

The JSON import endpoints keep NUL inside imported texts (model output may carry one; the
database layer strips it on write, app/db.py); their lookup keys are cleaned by the services.

Pydantic bodies use ``Id`` / ``Int32`` for integers that reach an INTEGER column.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated

import orjson
from fastapi import Request
from pydantic import Field

from app.errors import InvalidInput

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Id = Annotated[int, Field(ge=1, le=INT32_MAX, description="a row id (1 to 2^31-1)")]
Int32 = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]

# Paths whose JSON bodies are imported texts: NUL is stripped on write there, not refused.
NUL_KEPT_PATHS = ("/api/prompts/import", "/api/completions/import")

_int_params_cache: dict[int, tuple[set[str], set[str]]] = {}


def _is_int(annotation) -> bool:
    if annotation is int:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _is_int(typing.get_args(annotation)[0])
    if origin in (list, tuple, set, frozenset):  # ?id=1&id=2: each value
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return len(args) == 1 and _is_int(args[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _is_int(args[0])
    return False


def _int_params(route) -> tuple[set[str], set[str]]:
    """(path, query) parameter names the route (its dependencies included) declares as integers."""
    key = id(route)
    found = _int_params_cache.get(key)
    if found is None:
        path_names: set[str] = set()
        query_names: set[str] = set()
        stack = [route.dependant]
        while stack:
            dep = stack.pop()
            for p in dep.path_params:
                if _is_int(p.field_info.annotation):
                    path_names.add(p.alias)
            for p in dep.query_params:
                if _is_int(p.field_info.annotation):
                    query_names.add(p.alias)
            stack.extend(dep.dependencies)
        found = _int_params_cache[key] = (path_names, query_names)
    return found


def _nul_path(value, where: str) -> str | None:
    """The location of the first string holding a NUL in a parsed JSON value, or None."""
    stack = [(value, where)]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return at
        elif isinstance(v, dict):
            for k, item in v.items():
                if "\x00" in k:
                    return f"{at}.{k}" if at else k
                stack.append((item, f"{at}.{k}" if at else k))
        elif isinstance(v, list):
            stack.extend((item, f"{at}[{i}]") for i, item in enumerate(v))
    return None


def _nul(field: str) -> InvalidInput:
    return InvalidInput(f"A NUL character (\\0) is not allowed in {field}.", field=field)


def _check_int(kind: str, name: str, raw: str) -> None:
    try:
        value = int(raw)
    except ValueError:
        return  # not an integer at all: the route's own validation answers 422 naming it
    if not INT32_MIN <= value <= INT32_MAX:
        raise InvalidInput(
            f"{raw[:30]}{'...' if len(raw) > 30 else ''} is out of range for {name} "
            f"(an integer from {INT32_MIN} to {INT32_MAX} is expected in the {kind}).", field=name,
        )


async def check_inputs(request: Request) -> None:
    route = request.scope.get("route")
    path_ints, query_ints = _int_params(route) if route is not None and hasattr(route, "dependant") else (set(), set())
    for name, value in request.path_params.items():
        if isinstance(value, str):
            if "\x00" in value:
                raise _nul(name)
            if name in path_ints:
                _check_int("path", name, value)
    for name, value in request.query_params.multi_items():
        if "\x00" in value or "\x00" in name:
            raise _nul(name.replace("\x00", "\\0"))
        if name in query_ints:
            _check_int("query", name, value)
    content_type = request.headers.get("content-type", "")
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # already parsed (and cached) for the route or the CSRF check
        for name, value in form.multi_items():
            if isinstance(value, str) and ("\x00" in value or "\x00" in name):
                raise _nul(name.replace("\x00", "\\0"))
    elif "json" in content_type and request.url.path not in NUL_KEPT_PATHS:
        body = await request.body()
        if b"\\u0000" in body:
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return  # the route's own parsing answers 422
            where = _nul_path(parsed, "")
            if where is not None:
                raise _nul(where or "body")
