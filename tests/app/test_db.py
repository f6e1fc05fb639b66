"""Database layer: text with NUL characters (model output, pasted text) never breaks a write."""

from __future__ import annotations

from app.prompts import service as prompts
from tests.factories import make_prompt, make_user


def test_nul_characters_are_dropped_from_every_orm_text(db):
    user = make_user(db, "labeler")
    prompt = make_prompt(db, "Say hi\x00 politely.")
    from app.audit import service as audit

    entry = audit.record(db, user.id, "test", "prompt", prompt.id, "detail\x00with nul")
    db.flush()
    db.expire_all()
    assert prompt.text == "Say hi politely." and entry.detail == "detailwith nul"


def test_prompt_import_with_nul_imports_cleanly(db, settings):
    summary = prompts.import_prompts(db, [{"prompt": "Tell a joke\x00 about cats.", "origin_user": "u1"}], settings=settings)
    assert summary.imported == 1
    assert prompts.content_hash("Tell a joke\x00 about cats.") == prompts.content_hash("Tell a joke about cats.")
