"""HTML pages of evaluations: the list with a create form, and one evaluation's results with a
chart in the spirit of the paper's Figure 1 (drawn as SVG on the server: no script, no CDN)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from app.deps import RequireRole, SessionDep, SettingsDep
from app.errors import AppError, InvalidInput
from app.evals import service
from app.labeling.models import FLAGS
from app.prompts.models import Category, Split
from app.registry import service as registry
from app.registry.models import ModelKind
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Admin = RequireRole(Role.admin)
Watcher = RequireRole(Role.admin, Role.researcher)
POLICY_KINDS = (ModelKind.base, ModelKind.sft, ModelKind.ppo)


def _list_page(request: Request, db, *, error: AppError | None = None, form: dict | None = None, status_code: int = 200):
    return render(request, "evals/list.html", {
        "evaluations": [(e, service.results(db, e, reps=200)) for e in service.list_evaluations(db)],
        "policies": [m for m in registry.list_models(db, POLICY_KINDS) if m.path], "splits": list(Split),
        "categories": list(Category), "form": form or {"split": "test", "heldout_only": True},
        "error": error.message if error else None, "error_field": error.field if error else None,
    }, status_code=status_code)


@router.get("/evals")
def evals_page(request: Request, db: SessionDep, user: Watcher):
    return _list_page(request, db)


def _number(value: str, name: str, cast=int):
    try:
        return cast(value) if value.strip() else None
    except ValueError:
        raise InvalidInput(f"{name} must be a number.", field=name) from None


@router.post("/evals")
async def evals_create(request: Request, db: SessionDep, settings: SettingsDep, admin: Admin):
    data = await request.form()
    form = {k: str(data.get(k, "")) for k in ("name", "baseline", "split", "category", "limit", "overlap_share",
                                              "overlap_count", "max_new_tokens", "temperature")}
    form["models"] = [str(v) for v in data.getlist("models")]
    form["heldout_only"] = data.get("heldout_only") == "1"
    try:
        options = {k: form[k] for k in ("max_new_tokens", "temperature") if form[k].strip()}
        evaluation = service.create_evaluation(db, settings, service.EvalRequest(
            name=form["name"], models=form["models"], baseline=form["baseline"] or None, split=form["split"] or None,
            category=form["category"] or None, limit=_number(form["limit"], "limit"),
            heldout_only=form["heldout_only"], overlap_share=_number(form["overlap_share"], "overlap_share", float) or 0.0,
            overlap_count=_number(form["overlap_count"], "overlap_count") or 1, options=options), actor=admin)
    except AppError as exc:
        db.rollback()
        return _list_page(request, db, error=exc, form=form, status_code=exc.status_code)
    return RedirectResponse(f"/evals/{evaluation.id}", status_code=303)


def win_chart(stats: list[dict], *, width: int = 560, row: int = 34) -> dict:
    """Bars of each model's win rate against the baseline (0-100%) with its 95% interval."""
    left, right = 170, 20
    span = width - left - right
    bars = []
    for i, s in enumerate(x for x in stats if x.get("win_rate")):
        win = s["win_rate"]
        y = 12 + i * row
        value, ci = win["value"], win["ci"]
        bars.append({
            "label": s["model"], "y": y, "value": value, "prompts": win["prompts"],
            "w": 0 if value is None else value * span,
            "lo": left + ci[0] * span if ci else None, "hi": left + ci[1] * span if ci else None,
        })
    height = 30 + max(1, len(bars)) * row
    ticks = [{"x": left + t / 100 * span, "label": f"{t}%"} for t in (0, 25, 50, 75, 100)]
    return {"bars": bars, "width": width, "height": height, "left": left, "span": span, "ticks": ticks,
            "half": left + span / 2, "axis_y": height - 16}


@router.get("/evals/{evaluation_id}")
def eval_page(evaluation_id: int, request: Request, db: SessionDep, user: Watcher):
    res = service.results(db, service.get_evaluation(db, evaluation_id))
    return render(request, "evals/detail.html", {"res": res, "chart": win_chart(res["models"]), "flags": FLAGS})
