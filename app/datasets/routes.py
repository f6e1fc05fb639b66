"""JSON API for datasets (API token or session; researcher or admin; imports admin only)."""

from __future__ import annotations

from typing import Annotated, BinaryIO

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import ValidationError

from app.datasets import export as exporter
from app.datasets import frozen
from app.datasets.agreement import agreement_report, flag_rates, throughput
from app.datasets.imports import import_file
from app.datasets.schemas import DatasetOut, ExportFilters, FreezeRequest, ImportSummaryOut
from app.deps import RequireRole, SessionDep, SettingsDep
from app.errors import InvalidInput
from app.users.models import Role

router = APIRouter(prefix="/api", tags=["datasets"])
Researcher = RequireRole(Role.admin, Role.researcher)
Admin = RequireRole(Role.admin)


def _blank(v: str | None) -> str | None:
    return v if v not in (None, "") else None


def export_filters(
    batch: Annotated[str | None, Query(max_length=200)] = None,
    split: Annotated[str | None, Query(max_length=16)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    labeler_group: Annotated[str | None, Query(max_length=16)] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    min_agreement: Annotated[str | None, Query(max_length=20)] = None,
    include_all_bad: Annotated[str | None, Query(max_length=8)] = None,
    include_evaluations: Annotated[str | None, Query(max_length=8)] = None,
) -> ExportFilters:
    """Export filters from query parameters (blank values mean 'no filter', as HTML forms send them)."""
    raw = {
        "batch": _blank(batch), "split": _blank(split), "since": _blank(since), "until": _blank(until),
        "labeler_group": _blank(labeler_group) or "train", "model": _blank(model),
        "min_agreement": _blank(min_agreement), "include_all_bad": _blank(include_all_bad) or "true",
        "include_evaluations": _blank(include_evaluations) or "false",
    }
    try:
        return ExportFilters(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"{name}: {err['msg']} (got {raw.get(name)!r})", field=name) from None


FiltersDep = Annotated[ExportFilters, Depends(export_filters)]


def stream_export(request: Request, kind: str, fmt: str, style: str | None, filters: ExportFilters, settings) -> StreamingResponse:
    """Validate, then stream the export from a session of its own (the request's is closed by then)."""
    kind, fmt, style = exporter.check_request(kind, fmt, style, filters)
    secret = settings.require_secret()
    factory = request.app.state.sessionmaker

    def body():
        session = factory()
        try:
            yield from exporter.iter_export(session, kind, fmt, filters, secret=secret, style=style)
        finally:
            session.close()

    filename = f"{kind.value}{'-' + style if style not in ('plain', 'both') else ''}{exporter.suffix(fmt)}"
    return StreamingResponse(
        body(), media_type=exporter.media_type(fmt),
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


@router.get("/export/{kind}")
def api_export(
    kind: str, request: Request, settings: SettingsDep, filters: FiltersDep, user: Researcher,
    format: Annotated[str, Query(max_length=16)] = "jsonl",
    style: Annotated[str | None, Query(max_length=16)] = None,
):
    """Stream an export: JSONL (default), jsonl.gz or parquet."""
    return stream_export(request, kind, format, _blank(style), filters, settings)


@router.get("/datasets", response_model=list[DatasetOut])
def api_list_datasets(db: SessionDep, user: Researcher):
    return frozen.list_datasets(db)


@router.post("/datasets", response_model=DatasetOut, status_code=201)
def api_freeze(body: FreezeRequest, db: SessionDep, settings: SettingsDep, user: Researcher):
    return frozen.freeze(db, settings, kind=body.kind, fmt=body.format, filters=body.filters, style=body.style,
                         name=body.name, actor=user)


@router.post("/datasets/corpus", response_model=DatasetOut, status_code=201)
def api_upload_corpus(
    db: SessionDep, settings: SettingsDep, admin: Admin, file: Annotated[UploadFile, File()],
    name: Annotated[str | None, Query(max_length=200)] = None,
):
    """Upload a pretraining corpus (.txt, .txt.gz or JSONL 'text' rows) for PPO-ptx runs."""
    return frozen.store_corpus(db, settings, name=_blank(name) or "", filename=file.filename or "", stream=file.file, actor=admin,
                                max_decompressed=settings.max_decompressed_bytes)


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def api_get_dataset(dataset_id: int, db: SessionDep, user: Researcher):
    return frozen.get_dataset(db, dataset_id)


@router.get("/datasets/{dataset_id}/download")
def api_download_dataset(dataset_id: int, db: SessionDep, settings: SettingsDep, user: Researcher):
    ds = frozen.get_dataset(db, dataset_id)
    path = frozen.dataset_file(settings, ds)
    return FileResponse(path, media_type=exporter.media_type(ds.format), filename=f"{ds.name}{exporter.suffix(ds.format)}",
                        headers={"X-Content-SHA256": ds.sha256})


@router.get("/agreement")
def api_agreement(db: SessionDep, user: Researcher, batch: Annotated[str | None, Query(max_length=200)] = None):
    return {"agreement": agreement_report(db, batch=_blank(batch)), "throughput": throughput(db), "flag_rates": flag_rates(db)}


def read_upload(file: UploadFile) -> BinaryIO:
    """The uploaded file as a stream: it stays in its spooled temporary file (on disk past 1 MiB);
    its size was capped by the body limit (app/limits.py) before it was read."""
    stream = file.file
    stream.seek(0)
    if not stream.read(1):
        raise InvalidInput("The file is empty.", field="file")
    stream.seek(0)
    return stream


@router.post("/datasets/import/{kind}", response_model=ImportSummaryOut)
def api_import(
    kind: str, db: SessionDep, settings: SettingsDep, admin: Admin, file: Annotated[UploadFile, File()],
    batch: Annotated[str | None, Query(max_length=200)] = None, include_synthetic: bool = False,
):
    summary = import_file(db, settings, kind, read_upload(file), name=file.filename or "", batch=_blank(batch),
                          include_synthetic=include_synthetic, actor=admin,
                          max_decompressed=settings.max_decompressed_bytes)
    return summary.as_dict()
