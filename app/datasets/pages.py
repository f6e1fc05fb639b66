"""HTML pages: exports and frozen datasets (researcher, admin), agreement (researcher, admin),
imports with upload (admin)."""

from __future__ import annotations

from dataclasses import dataclass

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import ValidationError

from app.datasets import export as exporter
from app.datasets import frozen
from app.datasets.agreement import agreement_report, flag_rates, throughput
from app.datasets.imports import KINDS as IMPORT_KINDS
from app.datasets.imports import import_file
from app.datasets.routes import FiltersDep, _blank, read_upload, stream_export
from app.datasets.schemas import ExportFilters
from app.deps import RequireRole, SessionDep, SettingsDep
from app.errors import AppError, InvalidInput
from app.flash import keep_once, take_once
from app.labeling.models import Batch
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Researcher = RequireRole(Role.admin, Role.researcher)
Admin = RequireRole(Role.admin)


def _datasets_page(request: Request, db, *, error: str | None = None, form: dict | None = None, status_code: int = 200):
    from sqlalchemy import select

    batches = db.scalars(select(Batch.name).order_by(Batch.id.desc()).limit(200)).all()
    return render(
        request, "datasets/list.html",
        {"datasets": frozen.list_datasets(db), "kinds": exporter.EXPORT_KINDS, "formats": exporter.EXPORT_FORMATS,
         "styles": exporter.STYLES, "batches": batches, "error": error, "form": form or {}},
        status_code=status_code,
    )


@router.get("/datasets")
def datasets_page(request: Request, db: SessionDep, user: Researcher):
    return _datasets_page(request, db)


@router.get("/datasets/export")
def datasets_download(
    request: Request, settings: SettingsDep, filters: FiltersDep, user: Researcher,
    kind: str = "pairwise", format: str = "jsonl", style: str | None = None,
):
    """The page's download button: the same stream as the API."""
    return stream_export(request, kind, format, _blank(style), filters, settings)


@router.post("/datasets/corpus")
def datasets_upload_corpus(
    request: Request, db: SessionDep, settings: SettingsDep, admin: Admin,
    file: Annotated[UploadFile, File()], name: Annotated[str, Form(max_length=200)] = "",
):
    try:
        ds = frozen.store_corpus(db, settings, name=name, filename=file.filename or "", stream=file.file, actor=admin,
                                max_decompressed=settings.max_decompressed_bytes)
    except AppError as exc:
        db.rollback()
        return _datasets_page(request, db, error=exc.message, form={"name": name}, status_code=exc.status_code)
    return RedirectResponse(f"/datasets/{ds.id}", status_code=303)


@router.post("/datasets/freeze")
def datasets_freeze(
    request: Request, db: SessionDep, settings: SettingsDep, user: Researcher,
    kind: Annotated[str, Form(max_length=32)], format: Annotated[str, Form(max_length=16)] = "jsonl",
    style: Annotated[str, Form(max_length=16)] = "", name: Annotated[str, Form(max_length=200)] = "",
    batch: Annotated[str, Form(max_length=200)] = "", split: Annotated[str, Form(max_length=16)] = "",
    since: Annotated[str, Form(max_length=40)] = "", until: Annotated[str, Form(max_length=40)] = "",
    labeler_group: Annotated[str, Form(max_length=16)] = "train", model: Annotated[str, Form(max_length=200)] = "",
    min_agreement: Annotated[str, Form(max_length=20)] = "", include_all_bad: Annotated[str, Form(max_length=8)] = "",
):
    form = {"kind": kind, "format": format, "style": style, "name": name, "batch": batch, "split": split, "since": since,
            "until": until, "labeler_group": labeler_group, "model": model, "min_agreement": min_agreement,
            "include_all_bad": include_all_bad}
    try:
        try:
            filters = ExportFilters(
                batch=_blank(batch), split=_blank(split), since=_blank(since), until=_blank(until),
                labeler_group=labeler_group or "train", model=_blank(model), min_agreement=_blank(min_agreement),
                include_all_bad=include_all_bad in ("true", "on", "1"),
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidInput(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None
        ds = frozen.freeze(db, settings, kind=kind, fmt=format, filters=filters, style=_blank(style), name=_blank(name), actor=user)
    except AppError as exc:
        db.rollback()
        return _datasets_page(request, db, error=exc.message, form=form, status_code=exc.status_code)
    return RedirectResponse(f"/datasets/{ds.id}", status_code=303)


@router.get("/datasets/{dataset_id}")
def dataset_page(dataset_id: int, request: Request, db: SessionDep, user: Researcher):
    import json

    ds = frozen.get_dataset(db, dataset_id)
    return render(request, "datasets/detail.html", {"ds": ds, "manifest_json": json.dumps(ds.manifest, indent=2, sort_keys=True)})


@router.get("/datasets/{dataset_id}/download")
def dataset_download(dataset_id: int, db: SessionDep, settings: SettingsDep, user: Researcher):
    ds = frozen.get_dataset(db, dataset_id)
    return FileResponse(frozen.dataset_file(settings, ds), media_type=exporter.media_type(ds.format),
                        filename=f"{ds.name}{exporter.suffix(ds.format)}")


def _chart(labelers: list[dict]) -> dict:
    """Geometry of the per-labeler agreement bar chart (drawn as SVG by the template)."""
    rows = [e for e in labelers if e["agreement"] is not None]
    bar_h, gap, left, width = 18, 6, 140, 360
    bars = []
    for i, e in enumerate(rows):
        bars.append({
            "y": i * (bar_h + gap), "w": round(e["agreement"] * width, 1), "label": e.get("username") or str(e["labeler_id"]),
            "value": f"{e['agreement']:.1%}", "pairs": e["pairs"], "group": e["group"],
        })
    return {"bars": bars, "bar_h": bar_h, "left": left, "width": width, "height": max(1, len(rows)) * (bar_h + gap) + 24}


@router.get("/agreement")
def agreement_page(request: Request, db: SessionDep, user: Researcher, batch: str | None = None):
    report = agreement_report(db, batch=_blank(batch))
    return render(request, "datasets/agreement.html", {
        "report": report, "chart": _chart(report["labelers"]), "throughput": throughput(db),
        "flag_rates": flag_rates(db), "batch": batch or "",
    })


@dataclass
class _ShownSummary:
    """An import's summary as the page after its redirect shows it."""
    kind: str
    shown: list[str]

    def lines(self) -> list[str]:
        return self.shown


@router.get("/admin/datasets/import")
def import_page(request: Request, admin: Admin):
    done = take_once(request, "dataset_import")  # the summary of the import that redirected here (app/flash.py)
    summary = _ShownSummary(done["kind"], done["lines"]) if done else None
    return render(request, "datasets/import.html", {"kinds": IMPORT_KINDS, "summary": summary, "error": None, "form": {}})



@router.post("/admin/datasets/import")
def import_upload(
    request: Request, db: SessionDep, settings: SettingsDep, admin: Admin,
    kind: Annotated[str, Form(max_length=32)], file: Annotated[UploadFile, File()],
    batch: Annotated[str, Form(max_length=200)] = "", include_synthetic: Annotated[str, Form(max_length=8)] = "",
):
    form = {"kind": kind, "batch": batch, "include_synthetic": include_synthetic}
    try:
        summary = import_file(db, settings, kind, read_upload(file), name=file.filename or "", batch=_blank(batch),
                              include_synthetic=include_synthetic in ("true", "on", "1"), actor=admin,
                              max_decompressed=settings.max_decompressed_bytes)
    except AppError as exc:
        db.rollback()
        return render(request, "datasets/import.html", {"kinds": IMPORT_KINDS, "summary": None, "error": exc.message, "form": form},
                      status_code=exc.status_code)
    keep_once(request, "dataset_import", {"kind": summary.kind, "lines": summary.lines()})
    return RedirectResponse("/admin/datasets/import", status_code=303)  # F5 does not import again
