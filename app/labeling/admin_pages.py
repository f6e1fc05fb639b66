"""Admin pages for labeling: ranking and demonstration batches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.deps import RequireRole, SessionDep
from app.errors import AppError
from app.labeling import batches
from app.labeling.models import BatchStatus, TaskKind
from app.labeling.routes import parse_kind
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Admin = RequireRole(Role.admin)

DEFAULT_FORM = {"name": "", "kind": "ranking", "k": "4", "overlap_share": "0.1", "overlap_count": "3",
                "lease_minutes": "30", "priority": "0", "include_heldout": True, "limit": "", "model": ""}


def _page(request, db, *, form=None, error=None, created=None, status_code=200):
    return render(
        request, "labeling/admin_batches.html",
        {"rows": batches.batch_rows(db), "form": form or DEFAULT_FORM, "error": error, "created": created,
         "statuses": list(BatchStatus)},
        status_code=status_code,
    )


@router.get("/admin/batches")
def admin_batches(request: Request, db: SessionDep, admin: Admin):
    return _page(request, db)


@router.post("/admin/batches")
def admin_create_batch(
    request: Request, db: SessionDep, admin: Admin,
    name: Annotated[str, Form(max_length=400)] = "",
    kind: Annotated[str, Form()] = "ranking",
    k: Annotated[str, Form()] = "4",
    overlap_share: Annotated[str, Form()] = "0",
    overlap_count: Annotated[str, Form()] = "1",
    lease_minutes: Annotated[str, Form()] = "30",
    priority: Annotated[str, Form()] = "0",
    include_heldout: Annotated[str, Form()] = "",
    limit: Annotated[str, Form()] = "",
    model: Annotated[str, Form(max_length=200)] = "",
):
    form = {"name": name, "kind": kind, "k": k, "overlap_share": overlap_share, "overlap_count": overlap_count,
            "lease_minutes": lease_minutes, "priority": priority, "include_heldout": bool(include_heldout),
            "limit": limit, "model": model}
    try:
        def number(value, field, cast=int):
            from app.errors import InvalidInput

            try:
                return cast(value)
            except (TypeError, ValueError):
                raise InvalidInput(f"{field.replace('_', ' ').capitalize()} must be a number.", field=field) from None

        task_kind = parse_kind(kind) or TaskKind.ranking
        options = batches.BatchOptions(
            name=name, kind=task_kind, k=number(k, "k") if task_kind == TaskKind.ranking else None,
            overlap_share=number(overlap_share, "overlap_share", float), overlap_count=number(overlap_count, "overlap_count"),
            lease_minutes=number(lease_minutes, "lease_minutes"), priority=number(priority, "priority"),
            include_heldout=bool(include_heldout), limit=number(limit, "limit") if limit.strip() else None,
            model=model.strip() or None,
        )
        batch = batches.create_batch(db, options, actor=admin)
    except AppError as exc:
        db.rollback()
        return _page(request, db, form=form, error=exc.message, status_code=exc.status_code)
    return _page(request, db, created=batch.name, status_code=201)


@router.post("/admin/batches/{batch_id}/status")
def admin_batch_status(batch_id: int, db: SessionDep, admin: Admin, status: Annotated[str, Form()] = ""):
    batches.set_status(db, batch_id, status, actor=admin)
    return RedirectResponse("/admin/batches", status_code=303)
