"""Imports: the export formats back in (comparisons, pairwise, sft, prompts) plus Anthropic HH and
OpenAssistant trees (app/datasets/public.py).

All-or-nothing: every record is read and validated first (a bad one raises InvalidInput naming
its line and field), then everything is written and flushed in the caller's transaction. Rows
that are well-formed but unusable (an HH pair whose earlier turns differ ...) are skipped and
counted by reason in the summary.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.config import Settings
from app.db import strip_nul
from app.datasets.models import ExternalLabeler
from app.datasets.readers import read_records
from app.errors import InvalidInput
from app.labeling.models import FLAGS, Batch, BatchStatus, Demonstration, Ranking, RankingEntry, RankingFlag, TaskKind
from app.prompts import service as prompts
from app.prompts.models import Completion, Prompt, PromptSource, PromptStatus, Split
from app.prompts.scrub import scrub

KINDS = ("comparisons", "pairwise", "sft", "prompts", "hh", "oasst")
ROLES = {"system", "user", "assistant"}
SKIPPED_LINES_SHOWN = 50


@dataclass
class ImportSummary:
    kind: str
    read: int = 0
    imported: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_lines: list[str] = field(default_factory=list)
    detail: dict[str, int] = field(default_factory=dict)

    def skip(self, line: int, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.skipped_lines) < SKIPPED_LINES_SHOWN:
            self.skipped_lines.append(f"line {line}: {reason}")

    def lines(self) -> list[str]:
        out = [f"read: {self.read}", f"imported: {self.imported}"]
        out.append(f"skipped: {sum(self.skipped.values())}")
        out.extend(f"  {reason}: {n}" for reason, n in sorted(self.skipped.items()))
        out.extend(f"{k.replace('_', ' ')}: {v}" for k, v in self.detail.items())
        out.extend(f"  {line}" for line in self.skipped_lines[:10])
        return out

    def as_dict(self) -> dict:
        return {"kind": self.kind, "read": self.read, "imported": self.imported, "skipped": dict(self.skipped),
                "skipped_lines": self.skipped_lines, "detail": self.detail}


def bad(line: int, fld: str, message: str) -> InvalidInput:
    return InvalidInput(f"line {line}: {fld}: {message}", field=fld)


# --- validated, not yet written --------------------------------------------------------------------


@dataclass
class PromptSpec:
    text: str
    messages: list | None
    split: str | None = None
    origin_user: str = "import"


@dataclass
class RankingSpec:
    line: int
    prompt: PromptSpec
    completions: list[tuple[str, str | None, object]]  # (text, model, key shared across the file or None)
    buckets: list[list[int]]  # indexes into completions, best first
    ratings: dict[int, tuple[int | None, list[str]]] = field(default_factory=dict)
    all_bad: bool = False
    labeler: str = "external"
    labeler_group: str = "train"
    batch: str | None = None
    created_at: datetime | None = None
    time_spent_s: float = 0.0


def check_messages(line: int, fld: str, value, *, allow_empty=False) -> list[dict]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise bad(line, fld, "expected a non-empty list of {role, content} messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise bad(line, f"{fld}[{i}]", "each message needs a role (system, user, assistant) and a text content")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def prompt_spec(line: int, row: dict, *, text_key="prompt", msg_key="prompt_messages", split=None, origin=None) -> PromptSpec:
    """A prompt given as text and/or a message list (the message list wins for the turns)."""
    text = row.get(text_key)
    messages = row.get(msg_key)
    if isinstance(text, list):  # message-style pairwise: prompt is the message list
        messages, text = text, None
    if messages is not None:
        messages = check_messages(line, msg_key if row.get(msg_key) is not None else text_key, messages)
        if text is None:
            text = prompts.messages_to_text(messages)
    if not isinstance(text, str) or not text.strip():
        raise bad(line, text_key, "expected a non-empty text (or a message list)")
    if messages is not None and len(messages) == 1 and messages[0]["role"] == "user" and messages[0]["content"] == text:
        messages = None  # the plain form says it all
    return PromptSpec(text, messages, split, origin or "import:" + hashlib.sha256(text.encode()).hexdigest()[:12])


def _opt_str(line: int, row: dict, key: str, default=None):
    v = row.get(key, default)
    if v is not None and not isinstance(v, str):
        raise bad(line, key, f"expected a text, got {type(v).__name__}")
    return v


def _split(line: int, row: dict) -> str | None:
    v = _opt_str(line, row, "split")
    if v not in (None, "") and v not in {s.value for s in Split}:
        raise bad(line, "split", f"expected train, valid or test, got {v!r}")
    return v or None


def _int(line: int, fld: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad(line, fld, f"expected an integer, got {type(v).__name__}")
    return v


def parse_comparison(line: int, row: dict) -> RankingSpec:
    prompt = prompt_spec(line, row, split=_split(line, row))
    comps = row.get("completions")
    if not isinstance(comps, list) or len(comps) < 2:
        raise bad(line, "completions", "expected a list of at least 2 {id, text, model}")
    index: dict[int, int] = {}
    completions = []
    for i, c in enumerate(comps):
        if not isinstance(c, dict):
            raise bad(line, f"completions[{i}]", "expected an object {id, text, model}")
        cid = _int(line, f"completions[{i}].id", c.get("id"))
        if cid in index:
            raise bad(line, f"completions[{i}].id", f"duplicate id {cid}")
        text = c.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad(line, f"completions[{i}].text", "expected a non-empty text")
        model = c.get("model")
        if model is not None and not isinstance(model, str):
            raise bad(line, f"completions[{i}].model", "expected a text or null")
        index[cid] = i
        completions.append((text, model, ("id", cid)))
    ranked = row.get("ranked")
    if not isinstance(ranked, list) or not ranked:
        raise bad(line, "ranked", "expected a list of buckets (lists of completion ids), best first")
    buckets, seen = [], set()
    for b, bucket in enumerate(ranked):
        if not isinstance(bucket, list) or not bucket:
            raise bad(line, f"ranked[{b}]", "expected a non-empty list of completion ids")
        out = []
        for cid in bucket:
            cid = _int(line, f"ranked[{b}]", cid)
            if cid not in index:
                raise bad(line, f"ranked[{b}]", f"unknown completion id {cid}")
            if cid in seen:
                raise bad(line, f"ranked[{b}]", f"completion id {cid} ranked twice")
            seen.add(cid)
            out.append(index[cid])
        buckets.append(out)
    if len(seen) != len(index):
        raise bad(line, "ranked", "every completion must be in exactly one bucket")
    ratings: dict[int, tuple[int | None, list[str]]] = {}
    raw_ratings = row.get("ratings") or []
    if not isinstance(raw_ratings, list):
        raise bad(line, "ratings", "expected a list of {completion_id, likert, flags}")
    for i, r in enumerate(raw_ratings):
        if not isinstance(r, dict):
            raise bad(line, f"ratings[{i}]", "expected an object")
        cid = _int(line, f"ratings[{i}].completion_id", r.get("completion_id"))
        if cid not in index:
            raise bad(line, f"ratings[{i}].completion_id", f"unknown completion id {cid}")
        likert = r.get("likert")
        if likert is not None and (isinstance(likert, bool) or not isinstance(likert, int) or not 1 <= likert <= 7):
            raise bad(line, f"ratings[{i}].likert", "expected an integer from 1 to 7, or null")
        flags = r.get("flags") or []
        if not isinstance(flags, list) or any(f not in FLAGS for f in flags):
            raise bad(line, f"ratings[{i}].flags", f"expected a list of known flags ({', '.join(FLAGS)})")
        ratings[index[cid]] = (likert, sorted(set(flags)))
    all_bad = row.get("all_bad", False)
    if not isinstance(all_bad, bool):
        raise bad(line, "all_bad", "expected true or false")
    group = row.get("labeler_group") or "train"
    if group not in ("train", "heldout"):
        raise bad(line, "labeler_group", f"expected train or heldout, got {group!r}")
    created = _opt_str(line, row, "created_at")
    created_at = None
    if created:
        try:
            created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            raise bad(line, "created_at", f"not an ISO-8601 time: {created!r}") from None
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=UTC)
    spent = row.get("time_spent_s", 0.0) or 0.0
    if isinstance(spent, bool) or not isinstance(spent, (int, float)) or spent < 0:
        raise bad(line, "time_spent_s", "expected a non-negative number")
    return RankingSpec(
        line, prompt, completions, buckets, ratings, all_bad, _opt_str(line, row, "labeler") or "external",
        group, _opt_str(line, row, "batch"), created_at, float(spent),
    )


def _response(line: int, row: dict, key: str) -> str:
    v = row.get(key)
    if isinstance(v, list):
        msgs = check_messages(line, key, v)
        if msgs[-1]["role"] != "assistant":
            raise bad(line, key, "the last message must be the assistant's response")
        v = msgs[-1]["content"]
    if not isinstance(v, str):
        raise bad(line, key, f"expected a text or a message list, got {type(v).__name__}")
    return v


def parse_pairwise(line: int, row: dict, summary: ImportSummary) -> tuple | None:
    """One pairwise row -> (line, prompt, chosen, rejected, ranking_id or None, labeler), or a skip."""
    if "chosen" not in row or "rejected" not in row:
        raise bad(line, "chosen" if "chosen" not in row else "rejected", "missing")
    prompt = prompt_spec(line, row, msg_key="prompt_messages")
    chosen, rejected = _response(line, row, "chosen"), _response(line, row, "rejected")
    rid = row.get("ranking_id")
    if rid is not None:
        rid = _int(line, "ranking_id", rid)
    if not chosen.strip() or not rejected.strip():
        summary.skip(line, "empty response")
        return None
    if chosen == rejected:
        summary.skip(line, "chosen and rejected are the same text")
        return None
    return line, prompt, chosen, rejected, rid, _opt_str(line, row, "labeler") or "pairwise-import"


def group_pairwise(parsed: list[tuple]) -> list[RankingSpec]:
    """Consecutive pairs of one ranking (same ranking_id and prompt) become that K-wise ranking again
    when they are exactly the expansion of some buckets; otherwise every pair is a ranking of K = 2."""
    from app.datasets.pairs import expand_pairs

    specs: list[RankingSpec] = []
    i = 0
    while i < len(parsed):
        j = i + 1
        line, prompt, _, _, rid, labeler = parsed[i]
        while rid is not None and j < len(parsed) and parsed[j][4] == rid and parsed[j][1] == prompt:
            j += 1
        group = parsed[i:j]
        texts: list[str] = []
        for _, _, c, r, _, _ in group:
            for t in (c, r):
                if t not in texts:
                    texts.append(t)
        wins = Counter()
        pairs = set()
        for _, _, c, r, _, _ in group:
            wins[texts.index(c)] += 1
            pairs.add((texts.index(c), texts.index(r)))
        levels = sorted({wins[k] for k in range(len(texts))}, reverse=True)
        buckets = [[k for k in range(len(texts)) if wins[k] == lv] for lv in levels]
        if len(group) > 1 and len(pairs) == len(group) and set(expand_pairs(buckets)) == pairs:
            specs.append(RankingSpec(line, prompt, [(t, None, None) for t in texts], buckets, labeler=labeler))
        else:
            for ln, p, c, r, _, lab in group:
                specs.append(RankingSpec(ln, p, [(c, None, None), (r, None, None)], [[0], [1]], labeler=lab))
        i = j
    return specs


# --- writing ---------------------------------------------------------------------------------------


class Writer:
    """Creates prompts, completions, batches and rankings for validated specs (flush only)."""

    def __init__(self, db: Session, settings: Settings, *, source: str, default_batch: str, summary: ImportSummary):
        self.db, self.settings, self.source, self.summary = db, settings, source, summary
        self.default_batch = default_batch
        self.prompts: dict[str, Prompt] = {}
        self.completions: dict[tuple, Completion] = {}
        self.batches: dict[str, Batch] = {}
        self.labelers: dict[str, ExternalLabeler] = {}
        self.counts = Counter()

    def prompt(self, spec: PromptSpec) -> Prompt:
        text, kinds = scrub(spec.text)
        messages = None
        if spec.messages:
            messages = []
            for m in spec.messages:
                content, found = scrub(m["content"])
                kinds += [k for k in found if k not in kinds]
                messages.append({"role": m["role"], "content": content})
        digest = prompts.content_hash(text)
        found = self.prompts.get(digest)
        if found is None:
            found = self.db.scalar(select(Prompt).where(Prompt.content_hash == digest).order_by(Prompt.id).limit(1))
        if found is None:
            split = Split(spec.split) if spec.split else prompts.split_for_origin_user(spec.origin_user)
            found = Prompt(
                text=text, messages=messages, source=PromptSource.imported, origin_user=spec.origin_user[:200],
                split=split, content_hash=digest, scrubbed=bool(kinds), scrubbed_kinds=",".join(kinds),
                status=PromptStatus.active,
            )
            self.db.add(found)
            self.db.flush()
            self.counts["prompts_created"] += 1
        self.prompts[digest] = found
        return found

    def completion(self, prompt: Prompt, text: str, model: str | None, key) -> Completion:
        clean, _ = scrub(text)
        digest = prompts.content_hash(clean)
        k = ("key", key) if key is not None else (prompt.id, digest, model)
        c = self.completions.get(k)
        if c is None:
            c = Completion(prompt_id=prompt.id, text=clean, model_name=model, content_hash=digest,
                           settings={"imported_from": self.source})
            self.db.add(c)
            self.completions[k] = c
            self.counts["completions_created"] += 1
        return c

    def batch(self, name: str | None) -> Batch:
        name = (strip_nul(name or "") or self.default_batch)[:200]  # looked up: no NUL
        b = self.batches.get(name) or self.db.scalar(select(Batch).where(Batch.name == name))
        if b is None:
            b = Batch(name=name, kind=TaskKind.ranking, k=None, source=self.source, status=BatchStatus.closed)
            self.db.add(b)
            self.db.flush()
            self.counts["batches_created"] += 1
        self.batches[name] = b
        return b

    def labeler(self, name: str, group: str) -> None:
        name = strip_nul(name)  # looked up: no NUL
        if name in self.labelers:
            return
        el = self.db.scalar(select(ExternalLabeler).where(ExternalLabeler.name == name))
        if el is None:
            el = ExternalLabeler(name=name[:200], labeler_group=group, source=self.source)
            self.db.add(el)
        self.labelers[name] = el

    def ranking(self, spec: RankingSpec) -> Ranking | None:
        prompt = self.prompt(spec.prompt)
        comps = [self.completion(prompt, t, m, k) for t, m, k in spec.completions]
        if len({id(c) for c in comps}) < len(comps):
            self.summary.skip(spec.line, "two responses have the same text")
            return None
        self.labeler(spec.labeler, spec.labeler_group)
        batch = self.batch(spec.batch)
        self.db.flush()
        r = Ranking(
            prompt_id=prompt.id, batch_id=batch.id, labeler_id=None, external_labeler=spec.labeler[:200],
            all_bad=spec.all_bad, comment="", time_spent_s=spec.time_spent_s,
        )
        if spec.created_at is not None:
            r.submitted_at = spec.created_at
        for b, bucket in enumerate(spec.buckets):
            for i in bucket:
                likert, flags = spec.ratings.get(i, (None, []))
                entry = RankingEntry(completion_id=comps[i].id, bucket=b, likert=likert)
                entry.flags = [RankingFlag(flag=f) for f in flags]
                r.entries.append(entry)
        self.db.add(r)
        return r


def _default_batch_name(kind: str) -> str:
    return f"{kind}-import-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S-%f')}"


def import_file(
    db: Session, settings: Settings, kind: str, source: Path | bytes | BinaryIO, *, name: str = "",
    batch: str | None = None, include_synthetic: bool = False, actor=None, max_decompressed: int | None = None,
) -> ImportSummary:
    """Import one file of KIND, all-or-nothing; the caller's transaction commits. ``max_decompressed``
    caps what a .gz file may expand to (uploads pass ``settings.max_decompressed_bytes``)."""
    if kind not in KINDS:
        raise InvalidInput(f"Unknown import kind {kind!r}: choose one of {', '.join(KINDS)}.", field="kind")
    records = read_records(source, name, max_decompressed=max_decompressed)
    summary = ImportSummary(kind)
    summary.read = len(records)
    if kind == "prompts":
        result = prompts.import_prompts(db, (r for _, r in records), settings=settings, actor=actor)
        summary.imported = result.imported
        if result.near_duplicates:
            summary.skipped["near-duplicate prompt"] = result.near_duplicates
        if result.capped:
            summary.skipped["over the per-user cap"] = result.capped
        summary.detail = {"scrubbed": result.scrubbed, **{f"split_{k}": v for k, v in result.per_split.items()}}
        return summary
    if kind == "sft":
        return _import_sft(db, settings, records, summary, actor)

    from app.datasets import public

    specs: list[RankingSpec] = []
    pairs: list[tuple] = []
    for line, row in records:
        if kind == "comparisons":
            specs.append(parse_comparison(line, row))
        elif kind == "pairwise":
            pair = parse_pairwise(line, row, summary)
            if pair:
                pairs.append(pair)
        elif kind == "hh":
            spec = public.parse_hh(line, row, summary)
            if spec:
                specs.append(spec)
        else:
            specs.extend(public.parse_oasst(line, row, summary, include_synthetic=include_synthetic))
    specs.extend(group_pairwise(pairs))
    source_name = {"hh": "hh", "oasst": "oasst"}.get(kind, "import")
    writer = Writer(db, settings, source=source_name, default_batch=batch or _default_batch_name(kind), summary=summary)
    limit = max(settings.max_prompt_chars, 1)
    response_limit = max(settings.max_demonstration_chars, 1)
    for spec in specs:  # lengths are checked before anything is scrubbed (Writer scrubs)
        if len(spec.prompt.text) > limit:
            summary.skip(spec.line, f"prompt longer than {limit} characters")
            continue
        if any(len(text) > response_limit for text, _, _ in spec.completions):
            summary.skip(spec.line, f"response longer than {response_limit} characters")
            continue
        if batch:
            spec.batch = batch
        if writer.ranking(spec) is not None:
            summary.imported += 1
    db.flush()
    summary.detail = {"rankings": summary.imported, **dict(writer.counts)}
    audit.record(db, actor.id if actor else None, f"datasets.import.{kind}", "ranking", None,
                 f"read={summary.read} imported={summary.imported} skipped={sum(summary.skipped.values())}")
    return summary


def _import_sft(db: Session, settings: Settings, records, summary: ImportSummary, actor) -> ImportSummary:
    parsed = []
    for line, row in records:
        if row.get("messages") is not None:
            msgs = check_messages(line, "messages", row["messages"])
            if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
                raise bad(line, "messages", "the last message must be the assistant's completion, after the prompt turns")
            given = row.get("prompt") if isinstance(row.get("prompt"), str) else None
            spec = prompt_spec(line, {"prompt": given, "prompt_messages": msgs[:-1]}, split=_split(line, row))
            completion = msgs[-1]["content"]
        else:
            for key in ("prompt", "completion"):
                if not isinstance(row.get(key), str):
                    raise bad(line, key, "expected a text (or give 'messages')")
            spec = prompt_spec(line, row, split=_split(line, row))
            completion = row["completion"]
        if not completion.strip():
            summary.skip(line, "empty completion")
            continue
        if len(spec.text) > settings.max_prompt_chars:  # before scrubbing, as every import kind
            summary.skip(line, f"prompt longer than {settings.max_prompt_chars} characters")
            continue
        if len(completion) > settings.max_demonstration_chars:
            summary.skip(line, f"completion longer than {settings.max_demonstration_chars} characters")
            continue
        parsed.append((spec, completion))
    writer = Writer(db, settings, source="import", default_batch="", summary=summary)
    for spec, completion in parsed:
        prompt = writer.prompt(spec)
        text, _ = scrub(completion)
        db.add(Demonstration(prompt_id=prompt.id, author_id=None, text=text, content_hash=prompts.content_hash(text),
                             time_spent_s=0.0))
        summary.imported += 1
    db.flush()
    summary.detail = {"demonstrations": summary.imported, **dict(writer.counts)}
    audit.record(db, actor.id if actor else None, "datasets.import.sft", "demonstration", None,
                 f"read={summary.read} imported={summary.imported}")
    return summary
