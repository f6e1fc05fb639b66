"""HTML pages for runs: the queue with live progress bars, a form per run kind built from the
trainer's config dataclass, and one run with its inputs, live charts and log."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from app.datasets import frozen
from app.deps import RequireRole, SessionDep, SettingsDep
from app.errors import AppError, InvalidInput
from app.registry import service as registry
from app.runs import planning, service
from app.runs.models import RunKind
from app.runs.specs import SPECS, GenerationPlan
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Admin = RequireRole(Role.admin)
Watcher = RequireRole(Role.admin, Role.researcher)


@router.get("/runs")
def runs_page(request: Request, db: SessionDep, user: Watcher):
    return render(request, "runs/list.html", {"runs": service.list_runs(db), "specs": SPECS})


def _choices(db: Session, spec) -> dict[str, list]:
    """Per input, the registered models or frozen datasets of the kinds it accepts."""
    datasets = frozen.list_datasets(db)
    out = {}
    for item in spec.inputs:
        if item.is_model:
            out[item.role] = [m for m in registry.list_models(db, item.model_kinds) if m.path]
        else:
            out[item.role] = [d for d in datasets if d.kind in item.dataset_kinds]
    return out


def _form_page(request: Request, db: Session, kind: str, form: dict, *, error: AppError | None = None, status_code: int = 200):
    spec = planning.spec_for(kind)
    plan_fields = GenerationPlan.model_json_schema()["properties"] if spec.kind == RunKind.generate else {}
    return render(request, "runs/new.html", {
        "spec": spec, "specs": SPECS, "choices": _choices(db, spec), "options": spec.option_fields(), "plan_fields": plan_fields,
        "plan_defaults": GenerationPlan().model_dump(mode="json"), "form": form,
        "error": error.message if error else None, "error_field": error.field if error else None,
    }, status_code=status_code)


@router.get("/runs/new")
def new_run_page(request: Request, db: SessionDep, admin: Admin, kind: str = "sft"):
    """The run form; query parameters preselect inputs (``/runs/new?kind=rm&model=3``), as a
    model page's "next step" links do."""
    form = {"inputs": {k: v for k, v in request.query_params.multi_items() if k != "kind"}}
    many = {k: request.query_params.getlist(k) for k in request.query_params if k != "kind"}
    form["inputs"].update({k: v for k, v in many.items() if len(v) > 1})
    return _form_page(request, db, kind, form)


@router.post("/runs")
async def runs_create(request: Request, db: SessionDep, settings: SettingsDep, admin: Admin):
    data = await request.form()
    kind = str(data.get("kind", ""))
    spec = planning.spec_for(kind)
    inputs: dict = {}
    for item in spec.inputs:
        values = [v for v in data.getlist(f"input.{item.role}") if isinstance(v, str) and v.strip()]
        if values:
            inputs[item.role] = values if item.many else values[0]
    options = {k[4:]: v for k, v in data.multi_items() if k.startswith("opt.") and isinstance(v, str) and v.strip() != ""}
    form = {"name": data.get("name", ""), "gpus": data.get("gpus", "0"), "nodes": data.get("nodes", "1"),
            "output_name": data.get("output_name", ""), "inputs": inputs, "options": options}
    try:
        gpus_per_node = _whole(form["gpus"], 0, "GPUs per node", "gpus_per_node")
        nodes = _whole(form["nodes"], 1, "Nodes", "nodes")
        run = planning.launch_run(db, settings, planning.RunRequest(
            kind=kind, name=str(form["name"])[:200], inputs=inputs, options=options, nodes=nodes,
            gpus_per_node=gpus_per_node, output_name=str(form["output_name"]) or None), actor=admin)
    except AppError as exc:
        db.rollback()
        return _form_page(request, db, kind, form, error=exc, status_code=exc.status_code)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)


def _whole(value, default: int, label: str, field: str) -> int:
    try:
        return int(str(value or default))
    except ValueError:
        raise InvalidInput(f"{label} must be a whole number.", field=field) from None


@router.get("/runs/{run_id}")
def run_page(run_id: int, request: Request, db: SessionDep, user: Watcher):
    run = service.get_run(db, run_id)
    return render(request, "runs/detail.html", {
        "run": run, "config_json": json.dumps(run.config, indent=2), "inputs": planning.run_inputs(db, run.id),
        "output_model": planning.output_model(db, run.id),
        "generation_json": json.dumps(run.generation, indent=2) if run.generation else None,
        "worker_notice": service.worker_notice(db),
    })


@router.post("/runs/{run_id}/cancel")
def run_cancel(run_id: int, db: SessionDep, admin: Admin):
    service.request_cancel(db, run_id, actor=admin)
    return RedirectResponse(f"/runs/{run_id}", status_code=303)
