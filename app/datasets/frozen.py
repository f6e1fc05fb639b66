"""Frozen datasets: an export written once into the artifact directory with its manifest.

A manifest says what the file is (kind, style, format, filters), how many rows it holds, the
sha256 of its bytes, the schema version, when and by whom it was frozen, and the labeler
agreement at that time. A training run names the dataset; the hash ties it to the exact data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.config import Settings
from app.datasets import export
from app.datasets.agreement import manifest_summary
from app.datasets.models import Dataset, ExportFormat, ExportKind
from app.datasets.schemas import ExportFilters
from app.db import utcnow
from app.errors import Conflict, NotFound

_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(name: str) -> str:
    return _SLUG.sub("-", name.lower()).strip("-")[:60] or "dataset"


def freeze(
    db: Session, settings: Settings, *, kind: ExportKind | str, fmt: ExportFormat | str = ExportFormat.jsonl,
    filters: ExportFilters | None = None, style: str | None = None, name: str | None = None, actor=None,
) -> Dataset:
    filters = filters or ExportFilters()
    kind, fmt, style = export.check_request(kind, fmt, style, filters)
    now = utcnow()
    name = (name or "").strip() or f"{kind.value}-{now.strftime('%Y%m%d-%H%M%S-%f')}"
    if db.scalar(select(Dataset.id).where(Dataset.name == name)):
        raise Conflict(f"A dataset named {name!r} already exists; choose another name.", field="name")
    secret = settings.require_secret()
    ds = Dataset(
        name=name, kind=kind, format=fmt, style=style, filters=filters.described(), sha256="", path="",
        schema_version=export.SCHEMA_VERSION, created_by_id=actor.id if actor else None, created_at=now, manifest={},
    )
    db.add(ds)
    db.flush()
    folder = Path("datasets") / f"{ds.id:06d}-{_slug(name)}"
    rel = folder / f"data{export.suffix(fmt)}"
    target = Path(settings.artifact_dir) / rel
    stats, digest = export.export_to_file(db, target, kind, fmt, filters, secret=secret, style=style)
    ds.row_count = stats.rows
    ds.size_bytes = target.stat().st_size
    ds.sha256 = digest
    ds.path = str(rel)
    manifest = {
        "dataset_id": ds.id,
        "name": name,
        "kind": kind.value,
        "style": style,
        "format": fmt.value,
        "file": rel.name,
        "columns": export.columns(kind, style),
        "filters": filters.described(),
        "row_count": stats.rows,
        "rankings": stats.rankings if kind in (ExportKind.comparisons, ExportKind.pairwise) else None,
        "sha256": digest,
        "size_bytes": ds.size_bytes,
        "schema_version": export.SCHEMA_VERSION,
        "created_at": now.isoformat(),
        "created_by": actor.username if actor else None,
        "agreement": manifest_summary(db, secret=secret),
    }
    ds.manifest = manifest
    (target.parent / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    audit.record(db, actor.id if actor else None, "datasets.freeze", "dataset", ds.id, f"{name} {kind.value} rows={stats.rows} sha256={digest[:12]}")
    db.flush()
    return ds


def list_datasets(db: Session) -> Sequence[Dataset]:
    return db.scalars(select(Dataset).order_by(Dataset.id.desc())).all()


def get_dataset(db: Session, dataset_id: int) -> Dataset:
    ds = db.get(Dataset, dataset_id)
    if ds is None:
        raise NotFound(f"No dataset with id {dataset_id}.")
    return ds


def dataset_file(settings: Settings, ds: Dataset) -> Path:
    path = Path(settings.artifact_dir) / ds.path
    if not path.is_file():
        raise NotFound(f"The file of dataset {ds.id} is missing from the artifact directory ({ds.path}).")
    return path
