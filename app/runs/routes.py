"""JSON API for runs: queue, watch (status, progress, metric series), cancel."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import RequireRole, SessionDep
from app.runs import service
from app.runs.schemas import MetricsOut, RunCreate, RunOut
from app.users.models import Role

router = APIRouter(prefix="/api/runs", tags=["runs"])
Admin = RequireRole(Role.admin)
Watcher = RequireRole(Role.admin, Role.researcher)


@router.get("", response_model=list[RunOut])
def list_runs(db: SessionDep, user: Watcher):
    return service.list_runs(db)


@router.post("", response_model=RunOut, status_code=201)
def create_run(body: RunCreate, db: SessionDep, admin: Admin):
    return service.create_run(db, kind=body.kind, name=body.name, config=body.config, gpus=body.gpus, actor=admin)


@router.get("/{run_id}", response_model=RunOut)
def get_run(run_id: int, db: SessionDep, user: Watcher):
    return service.get_run(db, run_id)


@router.get("/{run_id}/metrics", response_model=MetricsOut)
def run_metrics(run_id: int, db: SessionDep, user: Watcher):
    service.get_run(db, run_id)
    return MetricsOut(run_id=run_id, series=service.metric_series(db, run_id))


@router.post("/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: int, db: SessionDep, admin: Admin):
    return service.request_cancel(db, run_id, actor=admin)
