"""JSON API for prompts and completions: import (admin), list (admin, researcher)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.deps import RequireRole, SessionDep, SettingsDep
from app.prompts import service
from app.users.models import Role

router = APIRouter(prefix="/api", tags=["prompts"])
Admin = RequireRole(Role.admin)
Reader = RequireRole(Role.admin, Role.researcher)


class PromptImportIn(BaseModel):
    records: list[dict] = Field(max_length=200_000)
    prefix_chars: int | None = None
    per_user_cap: int | None = None


class CompletionImportIn(BaseModel):
    records: list[dict] = Field(max_length=500_000)


@router.post("/prompts/import", status_code=201)
def import_prompts(body: PromptImportIn, db: SessionDep, settings: SettingsDep, admin: Admin):
    s = service.import_prompts(
        db, body.records, settings=settings, actor=admin, prefix_chars=body.prefix_chars, per_user_cap=body.per_user_cap
    )
    return {"read": s.read, "imported": s.imported, "near_duplicates": s.near_duplicates, "capped": s.capped,
            "scrubbed": s.scrubbed, "per_split": s.per_split}


@router.post("/completions/import", status_code=201)
def import_completions(body: CompletionImportIn, db: SessionDep, settings: SettingsDep, admin: Admin):
    s = service.import_completions(db, body.records, settings=settings, actor=admin)
    return {"read": s.read, "imported": s.imported, "duplicates": s.duplicates, "scrubbed": s.scrubbed, "prompts": s.prompts}


@router.get("/prompts")
def list_prompts(db: SessionDep, reader: Reader, limit: int = 100, offset: int = 0):
    rows = service.list_prompts(db, limit=min(max(limit, 1), 1000), offset=max(offset, 0))
    return [
        {"id": p.id, "text": p.text, "messages": p.messages, "source": p.source.value, "origin_user": p.origin_user,
         "split": p.split.value, "category": p.category.value, "scrubbed": p.scrubbed,
         "scrubbed_kinds": [k for k in p.scrubbed_kinds.split(",") if k]}
        for p in rows
    ]
