"""Streaming exports: comparisons, pairwise, sft and prompts as JSONL, gzipped JSONL or Parquet.

Rows are read from the database in id order with ``yield_per`` (a server-side cursor on
PostgreSQL), turned into dicts one ranking at a time and encoded in chunks, so memory stays
flat however large the export. The same generator feeds the CLI (a file), the API and the page
(an HTTP streaming response) and frozen datasets (a file in the artifact directory).
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.orm import Session

from app.datasets.models import ExportFormat, ExportKind, ExternalLabeler
from app.datasets.pairs import buckets_from_entries, expand_pairs
from app.datasets.schemas import ExportFilters
from app.errors import InvalidInput
from app.labeling.models import Batch, Demonstration, Ranking, RankingEntry, RankingFlag, Task
from app.prompts.models import Completion, Prompt
from app.users.models import User

SCHEMA_VERSION = 1
YIELD_PER = 5000
JSONL_CHUNK_ROWS = 2000
PARQUET_ROW_GROUP = 20_000

STYLES = {
    ExportKind.pairwise: ("plain", "messages"),
    ExportKind.sft: ("both", "plain", "messages"),
    ExportKind.comparisons: ("plain",),
    ExportKind.prompts: ("plain",),
}

_MSG = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
ARROW_SCHEMAS: dict[tuple[ExportKind, str], pa.Schema] = {
    (ExportKind.pairwise, "plain"): pa.schema(
        [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
         ("prompt_id", pa.int64()), ("ranking_id", pa.int64())]
    ),
    (ExportKind.pairwise, "messages"): pa.schema(
        [("prompt", _MSG), ("chosen", _MSG), ("rejected", _MSG), ("prompt_id", pa.int64()), ("ranking_id", pa.int64())]
    ),
    (ExportKind.sft, "both"): pa.schema(
        [("prompt", pa.string()), ("completion", pa.string()), ("messages", _MSG),
         ("prompt_id", pa.int64()), ("split", pa.string())]
    ),
    (ExportKind.sft, "plain"): pa.schema(
        [("prompt", pa.string()), ("completion", pa.string()), ("prompt_id", pa.int64()), ("split", pa.string())]
    ),
    (ExportKind.sft, "messages"): pa.schema([("messages", _MSG), ("prompt_id", pa.int64()), ("split", pa.string())]),
    (ExportKind.prompts, "plain"): pa.schema(
        [("prompt", pa.string()), ("messages", _MSG), ("prompt_id", pa.int64()), ("split", pa.string()),
         ("origin_user", pa.string()), ("category", pa.string())]
    ),
    (ExportKind.comparisons, "plain"): pa.schema(
        [
            ("ranking_id", pa.int64()), ("prompt_id", pa.int64()), ("prompt", pa.string()), ("prompt_messages", _MSG),
            ("completions", pa.list_(pa.struct([("id", pa.int64()), ("text", pa.string()), ("model", pa.string())]))),
            ("ranked", pa.list_(pa.list_(pa.int64()))),
            ("ratings", pa.list_(pa.struct(
                [("completion_id", pa.int64()), ("likert", pa.int64()), ("flags", pa.list_(pa.string()))]
            ))),
            ("all_bad", pa.bool_()), ("labeler", pa.string()), ("labeler_group", pa.string()),
            ("split", pa.string()), ("batch", pa.string()), ("created_at", pa.string()), ("time_spent_s", pa.float64()),
        ]
    ),
}


# What can be exported (corpora are uploaded, never exported).
EXPORT_KINDS = [k for k in ExportKind if k != ExportKind.corpus]
EXPORT_FORMATS = [ExportFormat.jsonl, ExportFormat.jsonl_gz, ExportFormat.parquet]


def columns(kind: ExportKind, style: str) -> list[str]:
    return ARROW_SCHEMAS[(kind, style)].names


def default_style(kind: ExportKind) -> str:
    return STYLES[kind][0]


def check_request(kind: ExportKind | str, fmt: ExportFormat | str, style: str | None, filters: ExportFilters):
    """Validate an export request up front (a clear 422 before any byte is streamed)."""
    try:
        kind = ExportKind(kind)
    except ValueError:
        raise InvalidInput(f"Unknown export kind {kind!r}: choose one of {', '.join(k.value for k in ExportKind)}.", field="kind") from None
    try:
        fmt = ExportFormat(fmt)
    except ValueError:
        raise InvalidInput(f"Unknown format {fmt!r}: choose one of {', '.join(f.value for f in ExportFormat)}.", field="format") from None
    if kind == ExportKind.corpus or fmt in (ExportFormat.txt, ExportFormat.txt_gz):
        raise InvalidInput("Pretraining corpora are uploaded as datasets, not exported: choose comparisons, pairwise, sft "
                           "or prompts as JSONL, JSONL.gz or Parquet.", field="kind" if kind == ExportKind.corpus else "format")
    style = style or default_style(kind)
    if style not in STYLES[kind]:
        raise InvalidInput(f"The {kind.value} export has no style {style!r}: choose {', '.join(STYLES[kind])}.", field="style")
    if kind in (ExportKind.sft, ExportKind.prompts):
        for name in ("model", "min_agreement"):
            if getattr(filters, name) is not None:
                raise InvalidInput(f"The {name} filter applies to comparisons and pairwise exports only.", field=name)
    if filters.since and filters.until and filters.since >= filters.until:
        raise InvalidInput("'since' must be before 'until'.", field="since")
    return kind, fmt, style


def pseudonym(secret: str, user_id: int) -> str:
    """A stable labeler id that cannot be reversed without the secret key (never the username)."""
    digest = hmac.new(secret.encode(), f"labeler:{user_id}".encode(), hashlib.sha256).hexdigest()
    return "lab_" + digest[:16]


def _iso(dt) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _messages(text: str, messages) -> list[dict]:
    return list(messages) if messages else [{"role": "user", "content": text}]


def _batch_clause(column_id, column_name, batch: str):
    return column_id == int(batch) if batch.isdigit() else column_name == batch


@dataclass
class ExportStats:
    rows: int = 0
    rankings: int = 0
    extra: dict = field(default_factory=dict)


# --- rankings (comparisons and pairwise) ---------------------------------------------------------


def _flag_agg(db: Session):
    if db.get_bind().dialect.name == "postgresql":
        agg = func.string_agg(RankingFlag.flag, ",")
    else:
        agg = func.group_concat(RankingFlag.flag, ",")
    return select(RankingFlag.entry_id.label("entry_id"), agg.label("flags")).group_by(RankingFlag.entry_id).subquery()


def iter_rankings(db: Session, filters: ExportFilters, *, secret: str) -> Iterator[dict]:
    """One comparisons row per ranking (docs/formats.md), filtered, in ranking id order."""
    flags = _flag_agg(db)
    group = func.coalesce(cast(User.labeler_group, String), ExternalLabeler.labeler_group, "train")
    stmt = (
        select(
            Ranking.id, Ranking.prompt_id, Ranking.task_id, Ranking.labeler_id, Ranking.external_labeler,
            Ranking.all_bad, Ranking.time_spent_s, Ranking.submitted_at, Prompt.text, Prompt.messages,
            cast(Prompt.split, String), Batch.name, group, RankingEntry.completion_id, RankingEntry.bucket,
            RankingEntry.likert, Completion.text, Completion.model_name, flags.c.flags,
        )
        .join(RankingEntry, RankingEntry.ranking_id == Ranking.id)
        .join(Prompt, Prompt.id == Ranking.prompt_id)
        .join(Batch, Batch.id == Ranking.batch_id)
        .join(Completion, Completion.id == RankingEntry.completion_id)
        .outerjoin(User, User.id == Ranking.labeler_id)
        .outerjoin(ExternalLabeler, ExternalLabeler.name == Ranking.external_labeler)
        .outerjoin(flags, flags.c.entry_id == RankingEntry.id)
        .order_by(Ranking.id, RankingEntry.bucket, RankingEntry.completion_id)
    )
    if filters.batch:
        stmt = stmt.where(_batch_clause(Batch.id, Batch.name, filters.batch))
    if not filters.include_evaluations:  # blind evaluations measure models; they do not train them
        stmt = stmt.where(Batch.purpose != "evaluation")
    if filters.split:
        stmt = stmt.where(Prompt.split == filters.split)
    if filters.since:
        stmt = stmt.where(Ranking.submitted_at >= filters.since)
    if filters.until:
        stmt = stmt.where(Ranking.submitted_at < filters.until)
    if filters.labeler_group != "all":
        stmt = stmt.where(group == filters.labeler_group)
    if not filters.include_all_bad:
        stmt = stmt.where(Ranking.all_bad.is_(False))
    if filters.model:
        has_model = (
            select(RankingEntry.id)
            .join(Completion, Completion.id == RankingEntry.completion_id)
            .where(RankingEntry.ranking_id == Ranking.id, Completion.model_name == filters.model)
            .exists()
        )
        stmt = stmt.where(has_model)
    keep_tasks: set[int] | None = None
    if filters.min_agreement is not None:
        from app.datasets.agreement import task_agreements

        keep_tasks = {t for t, a in task_agreements(db).items() if a is not None and a >= filters.min_agreement}

    pseudonyms: dict[int, str] = {}
    current = None
    entries: list = []
    for row in db.execute(stmt.execution_options(yield_per=YIELD_PER)):
        if current is not None and row[0] != current[0]:
            if keep_tasks is None or current[2] in keep_tasks:
                yield _ranking_row(current, entries, pseudonyms, secret)
            entries = []
        current = row
        entries.append(row)
    if current is not None and (keep_tasks is None or current[2] in keep_tasks):
        yield _ranking_row(current, entries, pseudonyms, secret)


def _ranking_row(head, entries, pseudonyms: dict[int, str], secret: str) -> dict:
    (rid, prompt_id, _task, labeler_id, external, all_bad, spent, submitted, ptext, pmessages, split, batch, group) = head[:13]
    if labeler_id is not None:
        labeler = pseudonyms.get(labeler_id)
        if labeler is None:
            labeler = pseudonyms[labeler_id] = pseudonym(secret, labeler_id)
    else:
        labeler = external or "external"
    by_id = sorted(entries, key=lambda e: e[13])
    return {
        "ranking_id": rid,
        "prompt_id": prompt_id,
        "prompt": ptext,
        "prompt_messages": _messages(ptext, pmessages),
        "completions": [{"id": e[13], "text": e[16], "model": e[17]} for e in by_id],
        "ranked": buckets_from_entries((e[13], e[14]) for e in entries),
        "ratings": [
            {"completion_id": e[13], "likert": e[15], "flags": sorted(e[18].split(",")) if e[18] else []} for e in by_id
        ],
        "all_bad": bool(all_bad),
        "labeler": labeler,
        "labeler_group": group,
        "split": split,
        "batch": batch,
        "created_at": _iso(submitted),
        "time_spent_s": float(spent or 0.0),
    }


def iter_pairwise(db: Session, filters: ExportFilters, *, secret: str, style: str = "plain", stats=None) -> Iterator[dict]:
    messages = style == "messages"
    for r in iter_rankings(db, filters, secret=secret):
        if stats is not None:
            stats.rankings += 1
        texts = {c["id"]: c["text"] for c in r["completions"]}
        prompt = r["prompt_messages"] if messages else r["prompt"]
        pid, rid = r["prompt_id"], r["ranking_id"]
        for w, lo in expand_pairs(r["ranked"]):
            if messages:
                yield {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": texts[w]}],
                    "rejected": [{"role": "assistant", "content": texts[lo]}],
                    "prompt_id": pid, "ranking_id": rid,
                }
            else:
                yield {"prompt": prompt, "chosen": texts[w], "rejected": texts[lo], "prompt_id": pid, "ranking_id": rid}


# --- sft and prompts ----------------------------------------------------------------------------


def iter_sft(db: Session, filters: ExportFilters, *, style: str = "both") -> Iterator[dict]:
    group = func.coalesce(cast(User.labeler_group, String), "train")
    stmt = (
        select(Demonstration.text, Demonstration.prompt_id, Prompt.text, Prompt.messages, cast(Prompt.split, String))
        .join(Prompt, Prompt.id == Demonstration.prompt_id)
        .outerjoin(User, User.id == Demonstration.author_id)
        .order_by(Demonstration.id)
    )
    if filters.batch:
        stmt = stmt.join(Task, Task.id == Demonstration.task_id).join(Batch, Batch.id == Task.batch_id)
        stmt = stmt.where(_batch_clause(Batch.id, Batch.name, filters.batch))
    if filters.split:
        stmt = stmt.where(Prompt.split == filters.split)
    if filters.since:
        stmt = stmt.where(Demonstration.created_at >= filters.since)
    if filters.until:
        stmt = stmt.where(Demonstration.created_at < filters.until)
    if filters.labeler_group != "all":
        stmt = stmt.where(group == filters.labeler_group)
    for text, pid, ptext, pmessages, split in db.execute(stmt.execution_options(yield_per=YIELD_PER)):
        row: dict = {}
        if style in ("both", "plain"):
            row["prompt"] = ptext
            row["completion"] = text
        if style in ("both", "messages"):
            row["messages"] = _messages(ptext, pmessages) + [{"role": "assistant", "content": text}]
        row["prompt_id"] = pid
        row["split"] = split
        yield row


def iter_prompts(db: Session, filters: ExportFilters) -> Iterator[dict]:
    stmt = select(
        Prompt.id, Prompt.text, Prompt.messages, cast(Prompt.split, String), Prompt.origin_user, cast(Prompt.category, String)
    ).where(Prompt.status == "active").order_by(Prompt.id)
    if filters.batch:
        in_batch = select(Task.prompt_id).join(Batch, Batch.id == Task.batch_id).where(
            _batch_clause(Batch.id, Batch.name, filters.batch)
        )
        ranked = select(Ranking.prompt_id).join(Batch, Batch.id == Ranking.batch_id).where(
            _batch_clause(Batch.id, Batch.name, filters.batch)
        )
        stmt = stmt.where(or_(Prompt.id.in_(in_batch), Prompt.id.in_(ranked)))
    if filters.split:
        stmt = stmt.where(Prompt.split == filters.split)
    if filters.since:
        stmt = stmt.where(Prompt.created_at >= filters.since)
    if filters.until:
        stmt = stmt.where(Prompt.created_at < filters.until)
    for pid, text, messages, split, origin, category in db.execute(stmt.execution_options(yield_per=YIELD_PER)):
        yield {
            "prompt": text, "messages": _messages(text, messages), "prompt_id": pid,
            "split": split, "origin_user": origin, "category": category,
        }


def iter_rows(db: Session, kind: ExportKind, filters: ExportFilters, *, secret: str, style: str, stats=None) -> Iterator[dict]:
    if kind == ExportKind.comparisons:
        for row in iter_rankings(db, filters, secret=secret):
            if stats is not None:
                stats.rankings += 1
            yield row
    elif kind == ExportKind.pairwise:
        yield from iter_pairwise(db, filters, secret=secret, style=style, stats=stats)
    elif kind == ExportKind.sft:
        yield from iter_sft(db, filters, style=style)
    else:
        yield from iter_prompts(db, filters)


# --- encoders -----------------------------------------------------------------------------------


class _Sink:
    """A write-only file object that hands its bytes back to the caller between row groups."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0
        self.closed = False

    def write(self, data) -> int:
        b = bytes(data)
        self.parts.append(b)
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts = []
        return out


def encode_jsonl(rows: Iterator[dict], stats: ExportStats) -> Iterator[bytes]:
    dumps = orjson.dumps
    buf: list[bytes] = []
    for row in rows:
        buf.append(dumps(row))
        if len(buf) >= JSONL_CHUNK_ROWS:
            stats.rows += len(buf)
            buf.append(b"")
            yield b"\n".join(buf)
            buf = []
    if buf:
        stats.rows += len(buf)
        buf.append(b"")
        yield b"\n".join(buf)


def encode_gzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Gzip with a fixed header (no file name, mtime 0): the same rows always give the same bytes."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    for chunk in chunks:
        out = comp.compress(chunk)
        if out:
            yield out
    yield comp.flush()


def encode_parquet(rows: Iterator[dict], schema: pa.Schema, stats: ExportStats) -> Iterator[bytes]:
    sink = _Sink()
    names = schema.names
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    cols: dict[str, list] = {n: [] for n in names}
    n = 0
    for row in rows:
        for name in names:
            cols[name].append(row.get(name))
        n += 1
        if n >= PARQUET_ROW_GROUP:
            writer.write_table(pa.Table.from_pydict(cols, schema=schema))
            stats.rows += n
            cols = {name: [] for name in names}
            n = 0
            yield sink.drain()
    if n:
        writer.write_table(pa.Table.from_pydict(cols, schema=schema))
        stats.rows += n
    writer.close()
    yield sink.drain()


def iter_export(
    db: Session, kind: ExportKind, fmt: ExportFormat, filters: ExportFilters, *, secret: str, style: str,
    stats: ExportStats | None = None,
) -> Iterator[bytes]:
    """The export as a stream of byte chunks. ``stats.rows`` is final once the stream is exhausted."""
    stats = stats if stats is not None else ExportStats()
    rows = iter_rows(db, kind, filters, secret=secret, style=style, stats=stats)
    if fmt == ExportFormat.parquet:
        yield from encode_parquet(rows, ARROW_SCHEMAS[(kind, style)], stats)
    elif fmt == ExportFormat.jsonl_gz:
        yield from encode_gzip(encode_jsonl(rows, stats))
    else:
        yield from encode_jsonl(rows, stats)


def suffix(fmt: ExportFormat) -> str:
    return {"jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "parquet": ".parquet", "txt": ".txt",
            "txt.gz": ".txt.gz"}[ExportFormat(fmt).value]


def media_type(fmt: ExportFormat) -> str:
    return {
        "jsonl": "application/x-ndjson", "jsonl.gz": "application/gzip", "parquet": "application/vnd.apache.parquet",
        "txt": "text/plain; charset=utf-8", "txt.gz": "application/gzip",
    }[ExportFormat(fmt).value]


def format_for_path(path: str) -> ExportFormat:
    name = str(path).lower()
    if name.endswith(".jsonl.gz") or name.endswith(".json.gz"):
        return ExportFormat.jsonl_gz
    if name.endswith(".parquet"):
        return ExportFormat.parquet
    return ExportFormat.jsonl


def export_to_file(
    db: Session, path, kind, fmt, filters: ExportFilters, *, secret: str, style: str | None = None
) -> tuple[ExportStats, str]:
    """Write an export to ``path`` (through a temporary file); returns (stats, sha256 of the bytes)."""
    from pathlib import Path

    kind, fmt, style = check_request(kind, fmt, style, filters)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    stats = ExportStats()
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as f:
            for chunk in iter_export(db, kind, fmt, filters, secret=secret, style=style, stats=stats):
                digest.update(chunk)
                f.write(chunk)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return stats, digest.hexdigest()
