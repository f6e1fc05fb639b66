"""HTML pages for runs: the queue with live progress bars, one run with live charts and its log."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.deps import RequireRole, SessionDep
from app.errors import AppError
from app.runs import service
from app.runs.models import RunKind
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Admin = RequireRole(Role.admin)
Watcher = RequireRole(Role.admin, Role.researcher)


def _list_page(request: Request, db, *, error: str | None = None, form: dict | None = None, status_code: int = 200):
    return render(
        request, "runs/list.html",
        {"runs": service.list_runs(db), "kinds": list(RunKind), "error": error, "form": form or {}},
        status_code=status_code,
    )


@router.get("/runs")
def runs_page(request: Request, db: SessionDep, user: Watcher):
    return _list_page(request, db)


@router.post("/runs")
def runs_create(
    request: Request,
    db: SessionDep,
    admin: Admin,
    kind: Annotated[str, Form()],
    name: Annotated[str, Form(max_length=200)] = "",
    config: Annotated[str, Form(max_length=100_000)] = "{}",
    gpus: Annotated[int, Form(ge=0, le=64)] = 0,
):
    form = {"kind": kind, "name": name, "config": config, "gpus": gpus}
    try:
        try:
            options = json.loads(config or "{}")
        except json.JSONDecodeError as exc:
            raise service.InvalidInput(f"Config is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).", field="config") from None
        run = service.create_run(db, kind=kind, name=name, config=options, gpus=gpus, actor=admin)
    except AppError as exc:
        db.rollback()
        return _list_page(request, db, error=exc.message, form=form, status_code=exc.status_code)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)


@router.get("/runs/{run_id}")
def run_page(run_id: int, request: Request, db: SessionDep, user: Watcher):
    run = service.get_run(db, run_id)
    return render(request, "runs/detail.html", {"run": run, "config_json": json.dumps(run.config, indent=2)})


@router.post("/runs/{run_id}/cancel")
def run_cancel(run_id: int, db: SessionDep, admin: Admin):
    service.request_cancel(db, run_id, actor=admin)
    return RedirectResponse(f"/runs/{run_id}", status_code=303)
