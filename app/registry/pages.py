"""HTML pages of the model registry: the list with a register form, and a model's lineage page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse

from app.deps import RequireRole, SessionDep, SettingsDep
from app.errors import AppError
from app.registry import service
from app.registry.models import ModelKind
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Admin = RequireRole(Role.admin)
Watcher = RequireRole(Role.admin, Role.researcher)


def _list_page(request: Request, db, *, error: AppError | None = None, form: dict | None = None, status_code: int = 200):
    models = service.list_models(db)
    return render(request, "registry/list.html", {
        "models": models, "metrics": service.metrics_of(db, [m.id for m in models]), "form": form or {},
        "error": error.message if error else None, "error_field": error.field if error else None,
    }, status_code=status_code)


@router.get("/models")
def models_page(request: Request, db: SessionDep, user: Watcher):
    return _list_page(request, db)


@router.post("/models")
def models_register(
    request: Request, db: SessionDep, settings: SettingsDep, admin: Admin,
    name: Annotated[str, Form(max_length=200)], path: Annotated[str, Form(max_length=1000)],
    description: Annotated[str, Form(max_length=4000)] = "",
):
    form = {"name": name, "path": path, "description": description}
    try:
        model = service.register_model(db, settings, name=name, path=path, kind=ModelKind.base,
                                       description=description, actor=admin)
    except AppError as exc:
        db.rollback()
        return _list_page(request, db, error=exc, form=form, status_code=exc.status_code)
    return RedirectResponse(f"/models/{model.id}", status_code=303)


def next_steps(model) -> list[tuple[str, str]]:
    """What a user would do next with this model: (label, run form link)."""
    mid = model.id
    steps = {
        ModelKind.base: [("Fine-tune on demonstrations (SFT)", f"/runs/new?kind=sft&model={mid}"),
                         ("Generate for ranking", f"/runs/new?kind=generate&model={mid}")],
        ModelKind.sft: [("Train a reward model", f"/runs/new?kind=rm&model={mid}"),
                        ("Generate for ranking", f"/runs/new?kind=generate&model={mid}"),
                        ("PPO-ptx from this policy", f"/runs/new?kind=ppo&policy={mid}")],
        ModelKind.rm: [("PPO-ptx with this RM", f"/runs/new?kind=ppo&reward_model={mid}"),
                       ("Select SFT epochs with this RM", f"/runs/new?kind=sft&reward_model={mid}")],
        ModelKind.ppo: [("Generate for ranking (next round)", f"/runs/new?kind=generate&model={mid}"),
                        ("Continue PPO from this policy", f"/runs/new?kind=ppo&policy={mid}")],
    }
    return steps.get(model.kind, [])


@router.get("/models/compare")
def compare_page(request: Request, db: SessionDep, user: Watcher, model: Annotated[list[int], Query()] = []):  # noqa: B006
    """Models side by side: every headline and automatic metric, and the blind evaluations
    that compared them (win rate against each evaluation's baseline)."""
    from app.evals import service as evals

    models = [service.get_model(db, mid) for mid in dict.fromkeys(model)]
    metrics = service.metrics_of(db, [m.id for m in models])
    names = sorted({n for values in metrics.values() for n in values})
    ids = {m.id for m in models}
    human = []
    for evaluation in evals.list_evaluations(db):
        compared = {m.id for m in evals.compared_models(db, evaluation)}
        if len(compared & ids) >= 1 and evaluation.batch_id is not None:
            res = evals.results(db, evaluation, reps=500)
            human.append((evaluation, res, {s["model_id"]: s for s in res["models"]}))
    return render(request, "registry/compare.html", {"models": models, "metrics": metrics, "names": names, "human": human,
                                                     "all_models": service.list_models(db)})


@router.get("/models/{model_id}")
def model_page(model_id: int, request: Request, db: SessionDep, user: Watcher):
    model = service.get_model(db, model_id)
    return render(request, "registry/detail.html", {
        "node": service.lineage(db, model), "children": service.children(db, model), "next_steps": next_steps(model),
    })
