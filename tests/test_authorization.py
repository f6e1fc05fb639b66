"""The authorization matrix: every route, every role, and anonymous.

Each route states the roles it admits through ``RequireRole(...)`` (or ``CurrentUser`` for any
signed-in user) in its signature. This test reads those declarations from the app itself, so a new
route is covered the moment it is added, and checks what the server really answers:

- anonymous: 302 to /login for pages (GET), 401 for the JSON API and for POSTs;
- a role not admitted: 403;
- an admitted role: anything but 401/403 (200, 303, or 404/422 for made-up ids and empty bodies).

Routes open to everyone must be listed in PUBLIC; a route with no declaration fails the test.
"""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute

from app.users.models import Role
from tests.factories import PASSWORD, make_user

PUBLIC = {("GET", "/login"), ("POST", "/login"), ("POST", "/logout")}
ALL_ROLES = frozenset(Role)

# Spot checks of the declared policy itself, so that a too-generous declaration is caught too.
MUST_BE_ONLY = {
    "/admin/users": {Role.admin},
    "/api/users": {Role.admin},
    "/admin/audit": {Role.admin},
    # issue 11: everyone's submissions are for admins and researchers; one's own history for labelers
    "/review": {Role.admin, Role.researcher},
    "/review/rankings/{ranking_id}": {Role.admin, Role.researcher},
    "/review/demonstrations/{demo_id}": {Role.admin, Role.researcher},
    "/labeling/history": {Role.labeler},
    "/labeling/history/rankings/{ranking_id}": {Role.labeler},
    "/labeling/history/demonstrations/{demo_id}": {Role.labeler},
    "/admin/batches": {Role.admin},
    # issue 12: the admin reset; one's own sessions and password for every signed-in role
    "/api/users/{user_id}/password": {Role.admin},
    "/account/sessions": ALL_ROLES,
    "/account/sessions/{session_id}/end": ALL_ROLES,
    "/account/sessions/end-others": ALL_ROLES,
    "/account/password": ALL_ROLES,
    "/api/sessions": ALL_ROLES,
    "/api/sessions/{session_id}": ALL_ROLES,
    "/api/sessions/end-others": ALL_ROLES,
    "/api/me/password": ALL_ROLES,
}
LABELER_NEVER = re.compile(r"^/(api/)?(export|datasets|admin|runs|agreement|review)")


def _allowed_roles(route: APIRoute) -> frozenset[Role] | None:
    """Roles admitted by the route's dependencies; ALL_ROLES for CurrentUser; None if undeclared."""
    found: frozenset[Role] | None = None
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        allowed = getattr(dep.call, "allowed_roles", None)
        if allowed is not None:
            found = allowed if found is None else found & allowed
        elif getattr(dep.call, "__name__", "") == "current_user" and found is None:
            found = ALL_ROLES
        stack.extend(dep.dependencies)
    return found


def _flatten(routes):
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI >= 0.120 wraps included routers
        if inner is not None:
            yield from _flatten(inner.routes)
        elif isinstance(route, APIRoute):
            yield route


def _routes(app):
    for route in _flatten(app.routes):
        for method in sorted(route.methods - {"HEAD"}):
            yield method, route


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "999999", path)


@pytest.fixture
def browsers(make_client, db):
    clients = {"anonymous": make_client()}
    for role in Role:
        user = make_user(db, role.value)
        c = make_client()
        c.login(user.username, PASSWORD)
        clients[role.value] = c
    return clients


def test_every_route_declares_who_may_use_it(app):
    undeclared = [
        f"{method} {route.path}"
        for method, route in _routes(app)
        if (method, route.path) not in PUBLIC and _allowed_roles(route) is None
        and not route.path.startswith(("/api/docs", "/api/openapi"))
    ]
    assert undeclared == [], f"routes without RequireRole/CurrentUser: {undeclared}"


def test_declared_policy_spot_checks(app):
    paths = {route.path for _, route in _routes(app)}
    assert set(MUST_BE_ONLY) <= paths, f"spot-checked routes that do not exist: {set(MUST_BE_ONLY) - paths}"
    for method, route in _routes(app):
        roles = _allowed_roles(route)
        if route.path in MUST_BE_ONLY:
            assert roles == MUST_BE_ONLY[route.path], f"{method} {route.path} admits {roles}"
        if LABELER_NEVER.match(route.path) and roles is not None:
            assert Role.labeler not in roles, f"labelers must not reach {method} {route.path}"


def test_authorization_matrix(app, browsers):
    checked = 0
    for method, route in _routes(app):
        if (method, route.path) in PUBLIC or route.path.startswith(("/api/docs", "/api/openapi")):
            continue
        allowed = _allowed_roles(route)
        url = _concrete(route.path)
        is_api = route.path.startswith("/api/")
        for who, client in browsers.items():
            headers = {"X-CSRF-Token": client.csrf(), "Accept": "application/json" if is_api else "text/html"}
            response = client.request(method, url, headers=headers, follow_redirects=False)
            code = response.status_code
            where = f"{who} {method} {url}"
            if who == "anonymous":
                if method == "GET" and not is_api:
                    assert code == 302 and response.headers["location"].startswith("/login"), where
                else:
                    assert code == 401, f"{where}: {code}"
            elif Role(who) in allowed:
                assert code not in (401, 403), f"{where}: {code} {response.text[:200]}"
            else:
                assert code == 403, f"{where}: {code}"
            checked += 1
    assert checked >= 4 * 10  # the matrix really walked the app


def test_api_routes_accept_tokens_and_refuse_wrong_roles(client, db):
    from app.users import service

    labeler = make_user(db, "labeler")
    _, token = service.create_token(db, labeler, "t")
    response = client.get("/api/users", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert "admin role" in response.json()["detail"]
