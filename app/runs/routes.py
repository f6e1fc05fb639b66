"""JSON API for runs: launch from registered models and frozen datasets, watch, cancel."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter
from sqlalchemy.orm import Session

from app.deps import RequireRole, SessionDep, SettingsDep
from app.runs import planning, service
from app.runs.schemas import MetricsOut, RunCreate, RunDetailOut, RunInputOut, RunOut
from app.runs.specs import SPECS, GenerationPlan
from app.users.models import Role

router = APIRouter(prefix="/api/runs", tags=["runs"])
Admin = RequireRole(Role.admin)
Watcher = RequireRole(Role.admin, Role.researcher)


def detail(db: Session, run_id: int) -> RunDetailOut:
    run = service.get_run(db, run_id)
    made = planning.output_model(db, run.id)
    inputs = [
        RunInputOut(role=i.role, model_id=i.model_id, model=m.name if m else None, dataset_id=i.dataset_id,
                    dataset=d.name if d else None, sha256=i.sha256)
        for i, m, d in planning.run_inputs(db, run.id)
    ]
    return RunDetailOut(**RunOut.model_validate(run).model_dump(), inputs=inputs,
                        output_model_id=made.id if made else None, output_model=made.name if made else None)


@router.get("", response_model=list[RunOut])
def list_runs(db: SessionDep, user: Watcher):
    return service.list_runs(db)


@router.get("/kinds")
def run_kinds(user: Watcher):
    """Each run kind's inputs and options (types, defaults, help): what the run form shows."""
    out = {}
    for kind, spec in SPECS.items():
        out[kind.value] = {
            "title": spec.title,
            "inputs": [{"role": i.role, "label": i.label, "help": i.help, "required": i.required, "many": i.many,
                        "model_kinds": [k.value for k in i.model_kinds], "dataset_kinds": [k.value for k in i.dataset_kinds]}
                       for i in spec.inputs],
            "options": [dataclasses.asdict(o) for o in spec.option_fields()],
            "output_model_kind": spec.output_kind.value if spec.output_kind else None,
        }
        if kind.value == "generate":
            out[kind.value]["plan"] = GenerationPlan.model_json_schema()["properties"]
    return out


@router.post("", response_model=RunDetailOut, status_code=201)
def create_run(body: RunCreate, db: SessionDep, settings: SettingsDep, admin: Admin):
    request = planning.RunRequest(kind=body.kind, name=body.name, inputs=body.inputs, options=body.options,
                                  gpus=body.gpus, nodes=body.nodes, gpus_per_node=body.gpus_per_node,
                                  output_name=body.output_name)
    run = planning.launch_run(db, settings, request, actor=admin)
    return detail(db, run.id)


@router.get("/{run_id}", response_model=RunDetailOut)
def get_run(run_id: int, db: SessionDep, user: Watcher):
    return detail(db, run_id)


@router.get("/{run_id}/metrics", response_model=MetricsOut)
def run_metrics(run_id: int, db: SessionDep, user: Watcher):
    service.get_run(db, run_id)
    return MetricsOut(run_id=run_id, series=service.metric_series(db, run_id))


@router.post("/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: int, db: SessionDep, admin: Admin):
    return service.request_cancel(db, run_id, actor=admin)
