"""Which prompts a new batch is built from: by split, category, source, import, or a list of ids.

Every filter given must hold (they combine with AND). Retired prompts never match. Prompts of the
demo (import tag ``demo``) are only taken when chosen: by their ids, or by the import tag itself.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.prompts.models import Category, Prompt, PromptSource, PromptStatus, Split

DEMO_TAG = "demo"
MAX_IDS = 100_000


@dataclass
class PromptSelection:
    split: str | None = None
    category: str | None = None
    source: str | None = None
    import_tag: str | None = None
    prompt_ids: list[int] | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, "", [])}

    def describe(self) -> str:
        d = self.as_dict()
        if "prompt_ids" in d:
            d["prompt_ids"] = f"{len(d['prompt_ids'])} chosen"
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in d.items()) or "all active prompts (not the demo's)"


def describe(stored: dict | None) -> str:
    """A batch's stored selection in words ("" for batches made by the app itself)."""
    if stored is None:
        return ""
    return PromptSelection(**{k: v for k, v in stored.items() if k in PromptSelection.__dataclass_fields__}).describe()


def parse_prompt_ids(text: str | None, field: str = "prompt_ids") -> list[int] | None:
    """``"3, 5 9-12"`` -> [3, 5, 9, 10, 11, 12]; blank -> None."""
    text = (text or "").strip()
    if not text:
        return None
    ids: list[int] = []
    for part in re.split(r"[\s,;]+", text):
        if not part:
            continue
        m = re.fullmatch(r"(\d{1,12})(?:-(\d{1,12}))?", part)
        if not m:
            raise InvalidInput(f"Prompt ids: {part[:40]!r} is not a prompt id or a range like 10-20.", field=field)
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi - lo + len(ids) >= MAX_IDS:
            raise InvalidInput(f"Prompt ids: the range {part!r} is reversed or too long.", field=field)
        ids.extend(range(lo, hi + 1))
    return list(dict.fromkeys(ids))


def _enum(value: str | None, enum, field: str, what: str):
    value = (value or "").strip()
    if not value:
        return None
    try:
        return enum(value).value
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise InvalidInput(f"Unknown {what} {value[:40]!r}: choose one of {choices}.", field=field) from None


def validate(db: Session, sel: PromptSelection) -> PromptSelection:
    """The selection with its values normalised; InvalidInput naming the field when one is wrong."""
    out = PromptSelection(
        split=_enum(sel.split, Split, "split", "split"),
        category=_enum(sel.category, Category, "category", "category"),
        source=_enum(sel.source, PromptSource, "source", "source"),
        import_tag=(sel.import_tag or "").strip() or None,
        prompt_ids=list(dict.fromkeys(sel.prompt_ids)) if sel.prompt_ids else None,
    )
    if out.import_tag and db.scalar(select(Prompt.id).where(Prompt.import_tag == out.import_tag).limit(1)) is None:
        raise InvalidInput(f"No prompts came from an import named {out.import_tag[:100]!r}.", field="import_tag")
    if out.prompt_ids:
        known = {}
        for chunk in range(0, len(out.prompt_ids), 5000):
            part = out.prompt_ids[chunk:chunk + 5000]
            known.update(db.execute(select(Prompt.id, Prompt.status).where(Prompt.id.in_(part))).all())
        unknown = [i for i in out.prompt_ids if i not in known]
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
            raise InvalidInput(f"Prompt ids: no prompt with id {shown}.", field="prompt_ids")
        retired = [i for i in out.prompt_ids if known[i] != PromptStatus.active]
        if retired:
            raise InvalidInput(f"Prompt ids: prompt {', '.join(map(str, retired[:10]))} is retired.", field="prompt_ids")
    return out


def conditions(sel: PromptSelection) -> list:
    """WHERE clauses on Prompt for a validated selection."""
    where = [Prompt.status == PromptStatus.active]
    if sel.split:
        where.append(Prompt.split == Split(sel.split))
    if sel.category:
        where.append(Prompt.category == Category(sel.category))
    if sel.source:
        where.append(Prompt.source == PromptSource(sel.source))
    if sel.import_tag:
        where.append(Prompt.import_tag == sel.import_tag)
    if sel.prompt_ids:
        where.append(Prompt.id.in_(sel.prompt_ids))
    elif sel.import_tag != DEMO_TAG:
        where.append(or_(Prompt.import_tag.is_(None), Prompt.import_tag != DEMO_TAG))
    return where


def matching_ids(db: Session, sel: PromptSelection) -> list[int]:
    return list(db.scalars(select(Prompt.id).where(*conditions(sel)).order_by(Prompt.id)))


def count(db: Session, sel: PromptSelection) -> int:
    return db.scalar(select(func.count()).select_from(Prompt).where(*conditions(sel))) or 0


def import_tags(db: Session) -> list[tuple[str, int]]:
    """Every import tag with its number of active prompts, newest import first."""
    rows = db.execute(
        select(Prompt.import_tag, func.count(), func.max(Prompt.id)).where(
            Prompt.import_tag.is_not(None), Prompt.status == PromptStatus.active
        ).group_by(Prompt.import_tag).order_by(func.max(Prompt.id).desc())
    )
    return [(tag, n) for tag, n, _ in rows]
