"""JSON API of evaluations: create (admin), list and read results (admin, researcher)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from app.deps import RequireRole, SessionDep, SettingsDep
from app.evals import service
from app.evals.schemas import EvalCreate
from app.users.models import Role

router = APIRouter(prefix="/api/evals", tags=["evaluations"])
Admin = RequireRole(Role.admin)
Watcher = RequireRole(Role.admin, Role.researcher)


@router.get("")
def list_evaluations(db: SessionDep, user: Watcher):
    return [{"id": e.id, "name": e.name, "run_id": e.run_id, "batch_id": e.batch_id, "created_at": e.created_at.isoformat()}
            for e in service.list_evaluations(db)]


@router.post("", status_code=201)
def create_evaluation(body: EvalCreate, db: SessionDep, settings: SettingsDep, admin: Admin):
    evaluation = service.create_evaluation(db, settings, service.EvalRequest(**body.model_dump()), actor=admin)
    return service.results(db, evaluation)


@router.get("/{evaluation_id}")
def evaluation_results(
    evaluation_id: int, db: SessionDep, user: Watcher, format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
):
    """Win rates against the baseline with 95% bootstrap intervals, per category too; Likert,
    flag rates and evaluator agreement. ``?format=csv`` for a spreadsheet."""
    res = service.results(db, service.get_evaluation(db, evaluation_id))
    if format == "csv":
        return Response(service.results_csv(res), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="evaluation-{evaluation_id}.csv"'})
    return res
