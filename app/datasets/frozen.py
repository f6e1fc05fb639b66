"""Frozen datasets: an export written once into the artifact directory with its manifest.

A manifest says what the file is (kind, style, format, filters), how many rows it holds, the
sha256 of its bytes, the schema version, when and by whom it was frozen, and the labeler
agreement at that time. A training run names the dataset; the hash ties it to the exact data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.config import Settings
from app.datasets import export
from app.datasets.agreement import manifest_summary
from app.datasets.models import Dataset, ExportFormat, ExportKind
from app.datasets.schemas import ExportFilters
from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound

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


CORPUS_SUFFIXES = {".txt": ExportFormat.txt, ".txt.gz": ExportFormat.txt_gz, ".jsonl": ExportFormat.jsonl,
                   ".jsonl.gz": ExportFormat.jsonl_gz}
CORPUS_MAX_LINE_BYTES = 16_000_000  # one line of a corpus file
MAX_CORPUS_BYTES = 2 * 1024**3


def corpus_format(filename: str) -> tuple[str, ExportFormat]:
    name = filename.lower()
    for suffix in sorted(CORPUS_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix, CORPUS_SUFFIXES[suffix]
    raise InvalidInput(f"{filename or 'the file'}: a corpus is a .txt, .txt.gz, .jsonl or .jsonl.gz file.", field="file")


def store_corpus(db: Session, settings: Settings, *, name: str, filename: str, stream: BinaryIO, actor=None,
                 max_decompressed: int | None = None) -> Dataset:
    """Keep an uploaded pretraining corpus as a dataset (kind corpus) that PPO-ptx runs can pick:
    copied into the artifact directory in chunks, hashed, its documents counted (plain text:
    separated by blank lines; JSONL: one row each). Nothing is kept when the file is refused.
    ``max_decompressed`` caps what a .gz corpus may expand to (web uploads pass the setting)."""
    name = (name or "").strip() or Path(filename or "corpus").name.split(".")[0]
    if db.scalar(select(Dataset.id).where(Dataset.name == name)):
        raise Conflict(f"A dataset named {name!r} already exists; choose another name.", field="name")
    suffix, fmt = corpus_format(filename)
    now = utcnow()
    ds = Dataset(name=name, kind=ExportKind.corpus, format=fmt, style="plain", filters={}, sha256="", path="",
                 schema_version=export.SCHEMA_VERSION, created_by_id=actor.id if actor else None, created_at=now, manifest={})
    db.add(ds)
    db.flush()
    rel = Path("datasets") / f"{ds.id:06d}-{_slug(name)}" / f"corpus{suffix}"
    target = Path(settings.artifact_dir) / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with target.open("wb") as out:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                size += len(chunk)
                if size > MAX_CORPUS_BYTES:
                    raise InvalidInput(f"The corpus is larger than {MAX_CORPUS_BYTES // 1024**3} GiB.", field="file")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise InvalidInput("The file is empty.", field="file")
        documents = count_documents(target, suffix, max_decompressed=max_decompressed)
    except BaseException:
        shutil.rmtree(target.parent, ignore_errors=True)
        raise
    ds.row_count, ds.size_bytes, ds.sha256, ds.path = documents, size, digest.hexdigest(), str(rel)
    ds.manifest = {"dataset_id": ds.id, "name": name, "kind": "corpus", "format": fmt.value, "file": rel.name,
                   "source_file": filename, "documents": documents, "sha256": ds.sha256, "size_bytes": size,
                   "created_at": now.isoformat(), "created_by": actor.username if actor else None}
    (target.parent / "manifest.json").write_text(json.dumps(ds.manifest, indent=2, sort_keys=True) + "\n")
    audit.record(db, actor.id if actor else None, "datasets.corpus", "dataset", ds.id, f"{name} documents={documents} sha256={ds.sha256[:12]}")
    db.flush()
    return ds


def count_documents(path: Path, suffix: str, *, max_decompressed: int | None = None) -> int:
    """Documents in a corpus file, read as UTF-8: plain text counts runs of non-blank lines,
    JSONL counts non-blank lines. A file that is not UTF-8 (or not gzip, for .gz) is refused.
    Read as a stream (app/datasets/readers.py): lines capped at CORPUS_MAX_LINE_BYTES, runs of
    blank lines skipped in one scan, a .gz capped at ``max_decompressed`` when given."""
    from app.datasets.readers import iter_lines, open_stream

    documents, previous = 0, -1
    stream = open_stream(path, suffix, max_decompressed=max_decompressed)
    try:
        for lineno, raw in iter_lines(stream, max_line=CORPUS_MAX_LINE_BYTES):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"{path.name}: not UTF-8 text (line {lineno}).", field="file") from None
            if suffix.startswith(".jsonl") or lineno != previous + 1:
                documents += 1  # a JSONL row, or the first line after a blank one
            previous = lineno
    except (OSError, EOFError) as exc:
        raise InvalidInput(f"{path.name}: cannot read the file ({exc}).", field="file") from None
    finally:
        stream.close()
    if documents == 0:
        raise InvalidInput("The corpus has no text.", field="file")
    return documents


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
