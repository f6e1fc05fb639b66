"""Prompts logic: importing (dedup, per-user cap, scrubbing, splits), writing, completions.

Services flush, never commit: the CLI or the request owns the transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.config import Settings
from app.db import strip_nul, utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.prompts.models import Category, Completion, Prompt, PromptSource, PromptStatus, Split
from app.prompts.scrub import scrub

# Prompts sharing this many leading characters (after normalising case and spaces) are near-duplicates.
DEFAULT_PREFIX_CHARS = 64
DEFAULT_PER_USER_CAP = 200
ROLES = {"system", "user", "assistant"}
_SPACES = re.compile(r"\s+")


def split_for_origin_user(origin_user: str) -> Split:
    """Deterministic 80/10/10 split by origin user: one user's prompts never straddle two splits."""
    bucket = int.from_bytes(hashlib.sha256(origin_user.encode("utf-8")).digest()[:8], "big") % 100
    if bucket < 80:
        return Split.train
    return Split.valid if bucket < 90 else Split.test


def normalise(text: str) -> str:
    return _SPACES.sub(" ", strip_nul(text)).strip().lower()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def prefix_key(text: str, prefix_chars: int) -> str:
    return normalise(text)[:prefix_chars]


def messages_to_text(messages: list[dict]) -> str:
    """A conversation as plain text (docs/formats.md plain prompt format, without the final turn)."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages)


def parse_category(value) -> Category:
    if value in (None, ""):
        return Category.other
    key = str(value).strip().lower().replace(" ", "_").replace("-", "_")
    aliases = {"open_qa": "open_qa", "openqa": "open_qa", "qa": "open_qa", "closedqa": "closed_qa", "extraction": "extract"}
    key = aliases.get(key, key)
    try:
        return Category(key)
    except ValueError:
        choices = ", ".join(c.value for c in Category)
        raise InvalidInput(f"Unknown category {value!r}: choose one of {choices}.", field="category") from None


@dataclass
class ImportSummary:
    read: int = 0
    imported: int = 0
    near_duplicates: int = 0
    capped: int = 0
    scrubbed: int = 0
    per_split: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Split})
    prompt_ids: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        splits = ", ".join(f"{k} {v}" for k, v in self.per_split.items())
        return [
            f"read: {self.read}",
            f"imported: {self.imported}",
            f"near-duplicates removed: {self.near_duplicates}",
            f"dropped by the per-user cap: {self.capped}",
            f"scrubbed for personal data: {self.scrubbed}",
            f"per split: {splits}",
        ]


@dataclass
class _Clean:
    text: str
    messages: list | None
    origin_user: str
    category: Category
    source: PromptSource
    scrubbed_kinds: list[str]


def _check_prompt_length(text: str, where: str, settings: Settings, field_name: str) -> None:
    if len(text) > settings.max_prompt_chars:
        raise InvalidInput(
            f"{where}: the prompt has {len(text)} characters; the limit is {settings.max_prompt_chars}.", field=field_name
        )


def _clean_record(record: dict, where: str, settings: Settings, default_source: PromptSource) -> _Clean:
    if not isinstance(record, dict):
        raise InvalidInput(f"{where}: expected an object with 'prompt' or 'messages'.", field="prompt")
    messages = record.get("messages")
    text = record.get("prompt")
    kinds: list[str] = []
    if messages not in (None, ""):
        if not isinstance(messages, list) or not messages:
            raise InvalidInput(f"{where}: 'messages' must be a non-empty list of {{role, content}}.", field="messages")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise InvalidInput(
                    f"{where}: each message needs a role (system, user or assistant) and a text content.", field="messages"
                )
        _check_prompt_length(messages_to_text(messages), where, settings, "messages")  # before scrubbing
        clean_messages = []
        for m in messages:
            content, found = scrub(m["content"])
            kinds.extend(k for k in found if k not in kinds)
            clean_messages.append({"role": m["role"], "content": content})
        messages = clean_messages
        text = messages_to_text(messages)
    elif isinstance(text, str):
        _check_prompt_length(text, where, settings, "prompt")  # before scrubbing: the scrubber's time grows with it
        text, kinds = scrub(text)
        messages = None
    else:
        raise InvalidInput(f"{where}: each record needs a 'prompt' text or a 'messages' list.", field="prompt")
    if not text.strip():
        raise InvalidInput(f"{where}: the prompt is empty.", field="prompt")
    _check_prompt_length(text, where, settings, "prompt")
    origin = record.get("origin_user")
    origin = strip_nul(str(origin)).strip()[:200] if origin not in (None, "") else ""
    origin = origin or "unknown"  # NUL-free: it is looked up (the database refuses NUL in a query)
    source = default_source
    if record.get("source") not in (None, ""):
        try:
            source = PromptSource(str(record["source"]).strip())
        except ValueError:
            choices = ", ".join(s.value for s in PromptSource)
            raise InvalidInput(f"{where}: unknown source {record['source']!r}: choose one of {choices}.", field="source") from None
    try:
        category = parse_category(record.get("category"))
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: {exc.message}", field="category") from None
    return _Clean(text, messages, origin, category, source, kinds)


def import_prompts(
    db: Session,
    records: Iterable[dict],
    *,
    settings: Settings,
    source: PromptSource = PromptSource.imported,
    actor=None,
    prefix_chars: int | None = None,
    per_user_cap: int | None = None,
    import_tag: str | None = None,
) -> ImportSummary:
    """Import prompt records all-or-nothing (an invalid record raises InvalidInput naming it).

    Near-duplicates (same first ``prefix_chars`` normalised characters as an earlier prompt, in
    the file or the database) are removed, each origin user keeps at most ``per_user_cap``
    prompts (counting those already stored), personal data is scrubbed, and every prompt gets
    the split of its origin user. Every prompt of one import carries ``import_tag`` (default: the
    import's time, "import-YYYYMMDD-HHMMSS"), so a batch can be built from one import.
    """
    import_tag = (import_tag or "").strip()[:100] or f"import-{utcnow():%Y%m%d-%H%M%S}"
    prefix_chars = prefix_chars or getattr(settings, "prompt_dedup_prefix_chars", DEFAULT_PREFIX_CHARS)
    per_user_cap = per_user_cap if per_user_cap is not None else getattr(settings, "prompts_per_user_cap", DEFAULT_PER_USER_CAP)
    if prefix_chars < 1 or per_user_cap < 1:
        raise InvalidInput("The prefix length and the per-user cap must be at least 1.", field="prefix_chars")
    summary = ImportSummary()
    cleaned: list[_Clean] = []
    for n, record in enumerate(records, start=1):
        summary.read += 1
        cleaned.append(_clean_record(record, f"record {n}", settings, source))
    if not cleaned:
        return summary

    seen = {prefix_key(t, prefix_chars) for t in db.scalars(select(Prompt.text).execution_options(yield_per=2000))}
    origins = {c.origin_user for c in cleaned}
    per_user: Counter[str] = Counter()
    for origin, count in db.execute(
        select(Prompt.origin_user, func.count()).where(Prompt.origin_user.in_(origins)).group_by(Prompt.origin_user)
    ):
        per_user[origin] = count

    rows: list[Prompt] = []
    for c in cleaned:
        key = prefix_key(c.text, prefix_chars)
        if key in seen:
            summary.near_duplicates += 1
            continue
        if per_user[c.origin_user] >= per_user_cap:
            summary.capped += 1
            continue
        seen.add(key)
        per_user[c.origin_user] += 1
        split = split_for_origin_user(c.origin_user)
        rows.append(
            Prompt(
                text=c.text, messages=c.messages, source=c.source, origin_user=c.origin_user,
                author_id=None, split=split, category=c.category, content_hash=content_hash(c.text),
                scrubbed=bool(c.scrubbed_kinds), scrubbed_kinds=",".join(c.scrubbed_kinds), status=PromptStatus.active,
                import_tag=import_tag,
            )
        )
        summary.per_split[split.value] += 1
        summary.scrubbed += bool(c.scrubbed_kinds)
    db.add_all(rows)
    db.flush()
    summary.imported = len(rows)
    summary.prompt_ids = [p.id for p in rows]
    audit.record(
        db, actor.id if actor else None, "prompts.import", "prompt", None,
        f"read={summary.read} imported={summary.imported} near_dup={summary.near_duplicates} "
        f"capped={summary.capped} scrubbed={summary.scrubbed}",
    )
    return summary


def get_prompt(db: Session, prompt_id: int) -> Prompt:
    prompt = db.get(Prompt, prompt_id)
    if prompt is None:
        raise NotFound(f"No prompt with id {prompt_id}.")
    return prompt


def list_prompts(db: Session, *, limit: int = 200, offset: int = 0) -> Sequence[Prompt]:
    return db.scalars(select(Prompt).order_by(Prompt.id.desc()).limit(limit).offset(offset)).all()


def count_prompts(db: Session) -> dict[str, int]:
    rows = db.execute(select(Prompt.split, func.count()).group_by(Prompt.split)).all()
    out = {s.value: 0 for s in Split}
    out.update({split.value: n for split, n in rows})
    return out


def write_prompt(db: Session, *, settings: Settings, author, kind: PromptSource, text: str, category=None) -> Prompt:
    """A prompt a labeler wrote (plain, few-shot or use-case). Scrubbed; the same text twice is refused."""
    if kind not in (PromptSource.plain, PromptSource.few_shot, PromptSource.use_case):
        raise InvalidInput("Choose plain, few-shot or use-case.", field="kind")
    text = (text or "").strip()
    if not text:
        raise InvalidInput("Write the prompt before saving it.", field="text")
    if len(text) > settings.max_prompt_chars:
        raise InvalidInput(
            f"The prompt has {len(text)} characters; the limit is {settings.max_prompt_chars}.", field="text"
        )
    clean, kinds = scrub(text)
    digest = content_hash(clean)
    if db.scalar(select(Prompt.id).where(Prompt.author_id == author.id, Prompt.content_hash == digest).limit(1)):
        raise Conflict("You already wrote this exact prompt.", field="text")
    origin = f"labeler:{author.username}"
    prompt = Prompt(
        text=clean, messages=None, source=kind, origin_user=origin, author_id=author.id,
        split=split_for_origin_user(origin), category=parse_category(category), content_hash=digest,
        scrubbed=bool(kinds), scrubbed_kinds=",".join(kinds), status=PromptStatus.active,
    )
    db.add(prompt)
    db.flush()
    return prompt


def render_few_shot(instruction: str, pairs: list[tuple[str, str]]) -> str:
    instruction = (instruction or "").strip()
    if not instruction:
        raise InvalidInput("A few-shot prompt needs an instruction.", field="instruction")
    pairs = [(q.strip(), a.strip()) for q, a in pairs if q.strip() or a.strip()]
    if len(pairs) < 2:
        raise InvalidInput("A few-shot prompt needs at least two query/response pairs.", field="pairs")
    for i, (q, a) in enumerate(pairs, start=1):
        if not q or not a:
            raise InvalidInput(f"Pair {i} needs both a query and a response.", field="pairs")
    body = "\n\n".join(f"Query: {q}\nResponse: {a}" for q, a in pairs)
    return f"{instruction}\n\n{body}"


def render_use_case(use_case: str, text: str) -> str:
    use_case = (use_case or "").strip()
    if not use_case:
        raise InvalidInput("Name the use case this prompt is for.", field="use_case")
    if not (text or "").strip():
        raise InvalidInput("Write the prompt for this use case.", field="text")
    return f"[Use case: {use_case}]\n{text.strip()}"


# --- completions --------------------------------------------------------------------------------


@dataclass
class CompletionImportSummary:
    read: int = 0
    imported: int = 0
    duplicates: int = 0
    scrubbed: int = 0
    prompts: int = 0
    completion_ids: list[int] = field(default_factory=list)  # the new rows, in file order
    matched_ids: list[int] = field(default_factory=list)  # earlier rows that duplicates matched

    def lines(self) -> list[str]:
        return [
            f"read: {self.read}", f"imported: {self.imported}", f"duplicates skipped: {self.duplicates}",
            f"scrubbed for personal data: {self.scrubbed}", f"prompts covered: {self.prompts}",
        ]


def import_completions(db: Session, records: Iterable[dict], *, settings: Settings, actor=None) -> CompletionImportSummary:
    """Import completions (docs/formats.md 'completions'), all-or-nothing. A prompt is found by
    ``prompt_id`` or else by its text (matched after scrubbing and normalising). A ``model``
    name links each completion to the registry: a registered model of that name, or else a new
    external model."""
    from app.registry.service import external_model

    models: dict[str, int] = {}
    summary = CompletionImportSummary()
    by_hash: dict[str, int] = {}
    seen: set[tuple[int, str, str | None]] = set()
    rows: list[Completion] = []
    prompt_ids: set[int] = set()
    for n, record in enumerate(records, start=1):
        summary.read += 1
        where = f"record {n}"
        if not isinstance(record, dict):
            raise InvalidInput(f"{where}: expected an object.", field="completion")
        text = record.get("completion")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"{where}: 'completion' must be a non-empty text.", field="completion")
        if len(text) > settings.max_demonstration_chars:
            raise InvalidInput(
                f"{where}: the completion has {len(text)} characters; the limit is {settings.max_demonstration_chars}.",
                field="completion",
            )
        prompt_id = record.get("prompt_id")
        if prompt_id not in (None, ""):
            try:
                prompt_id = int(prompt_id)
            except (TypeError, ValueError):
                raise InvalidInput(f"{where}: 'prompt_id' must be an integer.", field="prompt_id") from None
            if db.get(Prompt, prompt_id) is None:
                raise InvalidInput(f"{where}: no prompt with id {prompt_id}.", field="prompt_id")
        else:
            ptext = record.get("prompt")
            if not isinstance(ptext, str) or not ptext.strip():
                raise InvalidInput(f"{where}: give 'prompt_id' or the 'prompt' text.", field="prompt")
            _check_prompt_length(ptext, where, settings, "prompt")  # before scrubbing
            digest = content_hash(scrub(ptext)[0])
            if digest not in by_hash:
                found = db.scalar(select(Prompt.id).where(Prompt.content_hash == digest).order_by(Prompt.id).limit(1))
                if found is None:
                    raise InvalidInput(f"{where}: no imported prompt has this text; import the prompt first.", field="prompt")
                by_hash[digest] = found
            prompt_id = by_hash[digest]
        model = record.get("model")
        settings_obj = record.get("settings")
        if settings_obj is not None and not isinstance(settings_obj, dict):
            raise InvalidInput(f"{where}: 'settings' must be an object.", field="settings")
        clean, kinds = scrub(text)
        digest = content_hash(clean)
        model_name = str(model).strip()[:200] if model not in (None, "") else None
        # A duplicate is the same text for the same prompt from the same model: another model's
        # identical response is that model's answer too (a new policy may say what an old one said).
        key = (prompt_id, digest, model_name)
        if key in seen:
            summary.duplicates += 1
            continue
        earlier = db.scalar(
            select(Completion.id).where(Completion.prompt_id == prompt_id, Completion.content_hash == digest,
                                        Completion.model_name.is_(None) if model_name is None else Completion.model_name == model_name)
            .limit(1)
        )
        if earlier is not None:
            summary.duplicates += 1
            summary.matched_ids.append(earlier)
            seen.add(key)
            continue
        seen.add(key)
        prompt_ids.add(prompt_id)
        if model_name and model_name not in models:
            models[model_name] = external_model(db, model_name).id
        summary.scrubbed += bool(kinds)
        rows.append(
            Completion(
                prompt_id=prompt_id, text=clean, model_name=model_name, model_id=models.get(model_name),
                settings=settings_obj, content_hash=digest,
            )
        )
    db.add_all(rows)
    db.flush()
    summary.imported = len(rows)
    summary.completion_ids = [c.id for c in rows]
    summary.prompts = len(prompt_ids)
    audit.record(db, actor.id if actor else None, "completions.import", "completion", None,
                 f"read={summary.read} imported={summary.imported}")
    return summary
