"""Admin pages for labeling: ranking and demonstration batches, built from chosen prompts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.deps import RequireRole, SessionDep
from app.errors import AppError, InvalidInput
from app.flash import flash
from app.labeling import batches
from app.labeling import selection as prompt_selection
from app.labeling.models import BatchStatus, TaskKind
from app.labeling.routes import parse_kind
from app.prompts.models import Category, PromptSource, Split
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Admin = RequireRole(Role.admin)

DEFAULT_FORM = {"name": "", "kind": "ranking", "k": "4", "overlap_share": "0.1", "overlap_count": "3",
                "lease_minutes": "30", "priority": "0", "include_heldout": True, "limit": "", "model": "",
                "split": "", "category": "", "source": "", "import_tag": "", "prompt_ids": "", "guidelines": ""}


def _page(request, db, *, form=None, error=None, error_field=None, preview=None, status_code=200):
    return render(
        request, "labeling/admin_batches.html",
        {"rows": batches.batch_rows(db), "form": form or DEFAULT_FORM, "error": error, "error_field": error_field,
         "preview": preview, "statuses": list(BatchStatus), "splits": list(Split), "categories": list(Category),
         "sources": list(PromptSource), "imports": prompt_selection.import_tags(db),
         "describe": prompt_selection.describe},
        status_code=status_code,
    )


@router.get("/admin/batches")
def admin_batches(request: Request, db: SessionDep, admin: Admin):
    return _page(request, db)


def _number(value: str, field: str, cast=int):
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{field.replace('_', ' ').capitalize()} must be a number.", field=field) from None


@router.post("/admin/batches")
def admin_create_batch(
    request: Request, db: SessionDep, admin: Admin,
    name: Annotated[str, Form(max_length=400)] = "",
    kind: Annotated[str, Form(max_length=32)] = "ranking",
    k: Annotated[str, Form(max_length=20)] = "4",
    overlap_share: Annotated[str, Form(max_length=20)] = "0",
    overlap_count: Annotated[str, Form(max_length=20)] = "1",
    lease_minutes: Annotated[str, Form(max_length=20)] = "30",
    priority: Annotated[str, Form(max_length=20)] = "0",
    include_heldout: Annotated[str, Form(max_length=8)] = "",
    limit: Annotated[str, Form(max_length=20)] = "",
    model: Annotated[str, Form(max_length=200)] = "",
    split: Annotated[str, Form(max_length=32)] = "",
    category: Annotated[str, Form(max_length=32)] = "",
    source: Annotated[str, Form(max_length=32)] = "",
    import_tag: Annotated[str, Form(max_length=200)] = "",
    prompt_ids: Annotated[str, Form(max_length=1_000_000)] = "",
    guidelines: Annotated[str, Form(max_length=200_000)] = "",
    action: Annotated[str, Form(max_length=16)] = "create",
):
    """Creates the batch and answers 303 to the batches page (F5 does not post again), or, with
    ``action=preview``, counts the matching prompts and changes nothing."""
    form = {"name": name, "kind": kind, "k": k, "overlap_share": overlap_share, "overlap_count": overlap_count,
            "lease_minutes": lease_minutes, "priority": priority, "include_heldout": bool(include_heldout),
            "limit": limit, "model": model, "split": split, "category": category, "source": source,
            "import_tag": import_tag, "prompt_ids": prompt_ids, "guidelines": guidelines}
    try:
        chosen = prompt_selection.PromptSelection(
            split=split, category=category, source=source, import_tag=import_tag,
            prompt_ids=prompt_selection.parse_prompt_ids(prompt_ids),
        )
        if action == "preview":
            sel = prompt_selection.validate(db, chosen)
            n = prompt_selection.count(db, sel)
            return _page(request, db, form=form, preview=f"{n} active prompt{'s' if n != 1 else ''} match ({sel.describe()}).")
        task_kind = parse_kind(kind) or TaskKind.ranking
        options = batches.BatchOptions(
            name=name, kind=task_kind, k=_number(k, "k") if task_kind == TaskKind.ranking else None,
            overlap_share=_number(overlap_share, "overlap_share", float), overlap_count=_number(overlap_count, "overlap_count"),
            lease_minutes=_number(lease_minutes, "lease_minutes"), priority=_number(priority, "priority"),
            include_heldout=bool(include_heldout), limit=_number(limit, "limit") if limit.strip() else None,
            model=model.strip() or None, guidelines=guidelines,
        )
        batch = batches.create_batch(db, options, actor=admin, selection=chosen)
        tasks = sum(r["tasks"] for r in batches.batch_rows(db) if r["batch"].id == batch.id)
    except AppError as exc:
        db.rollback()
        return _page(request, db, form=form, error=exc.message, error_field=exc.field, status_code=exc.status_code)
    flash(request, f"Batch {batch.name} created with {tasks} task{'s' if tasks != 1 else ''}.")
    return RedirectResponse("/admin/batches", status_code=303)


@router.post("/admin/batches/{batch_id}/status")
def admin_batch_status(request: Request, batch_id: int, db: SessionDep, admin: Admin, status: Annotated[str, Form(max_length=16)] = ""):
    batch = batches.set_status(db, batch_id, status, actor=admin)
    flash(request, f"Batch {batch.name} is now {batch.status.value}.")
    return RedirectResponse("/admin/batches", status_code=303)
