"""HTML pages for prompts: admin import (prompts and completions, with upload) and the labeler's
prompt-writing screen (plain, few-shot, use-case)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from app.datasets.routes import read_upload
from app.deps import RequireRole, SessionDep, SettingsDep
from app.errors import AppError, InvalidInput
from app.flash import keep_once, take_once
from app.prompts import service
from app.prompts.files import parse_records
from app.prompts.models import Category, PromptSource
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Admin = RequireRole(Role.admin)
Labeler = RequireRole(Role.labeler)

USE_CASES = ["Generation", "Open QA", "Brainstorming", "Chat", "Rewrite", "Summarization", "Classification",
             "Closed QA", "Extract", "Other"]
FEW_SHOT_PAIRS = 4


async def _form_data(request: Request) -> FormData:
    return await request.form()


FormDep = Annotated[FormData, Depends(_form_data)]


def _admin_page(request, db, *, summary=None, kind=None, error=None, status_code=200):
    return render(
        request, "prompts/admin.html",
        {"summary": summary, "summary_kind": kind, "error": error, "counts": service.count_prompts(db),
         "prompts": service.list_prompts(db, limit=50), "default_prefix": service.DEFAULT_PREFIX_CHARS,
         "default_cap": service.DEFAULT_PER_USER_CAP},
        status_code=status_code,
    )


@router.get("/admin/prompts")
def admin_prompts(request: Request, db: SessionDep, admin: Admin):
    done = take_once(request, "import_summary") or {}  # an import's summary, after its redirect (app/flash.py)
    return _admin_page(request, db, summary=done.get("lines"), kind=done.get("kind"))


@router.post("/admin/prompts/import")
def admin_import_prompts(
    request: Request, db: SessionDep, settings: SettingsDep, admin: Admin,
    file: Annotated[UploadFile | None, File()] = None,
    prefix_chars: Annotated[int, Form(ge=1, le=100_000)] = service.DEFAULT_PREFIX_CHARS,
    per_user_cap: Annotated[int, Form(ge=1, le=1_000_000)] = service.DEFAULT_PER_USER_CAP,
    tag: Annotated[str, Form(max_length=100)] = "",
):
    try:
        if file is None or not file.filename:
            raise InvalidInput("Choose a JSONL or CSV file to import.", field="file")
        records = parse_records(read_upload(file), file.filename, max_decompressed=settings.max_decompressed_bytes)
        summary = service.import_prompts(
            db, records, settings=settings, actor=admin, prefix_chars=prefix_chars, per_user_cap=per_user_cap,
            import_tag=tag,
        )
    except AppError as exc:
        db.rollback()
        return _admin_page(request, db, error=exc.message, status_code=exc.status_code)
    keep_once(request, "import_summary", {"lines": summary.lines(), "kind": "prompts"})
    return RedirectResponse("/admin/prompts", status_code=303)  # F5 does not import again


@router.post("/admin/completions/import")
def admin_import_completions(
    request: Request, db: SessionDep, settings: SettingsDep, admin: Admin,
    file: Annotated[UploadFile | None, File()] = None,
):
    try:
        if file is None or not file.filename:
            raise InvalidInput("Choose a JSONL file of completions to import.", field="file")
        records = parse_records(read_upload(file), file.filename, max_decompressed=settings.max_decompressed_bytes)
        summary = service.import_completions(db, records, settings=settings, actor=admin)
    except AppError as exc:
        db.rollback()
        return _admin_page(request, db, error=exc.message, status_code=exc.status_code)
    keep_once(request, "import_summary", {"lines": summary.lines(), "kind": "completions"})
    return RedirectResponse("/admin/prompts", status_code=303)


# --- labeler: writing prompts ------------------------------------------------------------------


def _write_page(request, *, form=None, error=None, saved=None, status_code=200):
    return render(
        request, "prompts/write.html",
        {"form": form or {"kind": "plain"}, "error": error, "saved": saved, "use_cases": USE_CASES,
         "categories": list(Category), "pairs": range(1, FEW_SHOT_PAIRS + 1)},
        status_code=status_code,
    )


@router.get("/labeling/write")
def write_page(request: Request, user: Labeler):
    saved = take_once(request, "prompt_saved")  # after the redirect of a successful post (app/flash.py)
    return _write_page(request, form={"kind": saved["kind"]} if saved else None, saved=saved)


@router.post("/labeling/write")
def write_prompt(request: Request, db: SessionDep, settings: SettingsDep, user: Labeler, raw: FormDep):
    form = {k: v for k, v in raw.items() if isinstance(v, str) and k != "csrf_token"}
    kind = form.get("kind", "plain")
    try:
        try:
            source = PromptSource(kind)
        except ValueError:
            raise InvalidInput("Choose plain, few-shot or use-case.", field="kind") from None
        if source == PromptSource.few_shot:
            pairs = [(form.get(f"query_{i}", ""), form.get(f"response_{i}", "")) for i in range(1, FEW_SHOT_PAIRS + 1)]
            text = service.render_few_shot(form.get("instruction", ""), pairs)
        elif source == PromptSource.use_case:
            text = service.render_use_case(form.get("use_case", ""), form.get("use_case_text", ""))
        else:
            text = form.get("text", "")
        prompt = service.write_prompt(
            db, settings=settings, author=user, kind=source, text=text, category=form.get("category") or None
        )
    except AppError as exc:
        db.rollback()
        return _write_page(request, form=form, error=exc.message, status_code=exc.status_code)
    keep_once(request, "prompt_saved", {"id": prompt.id, "scrubbed": prompt.scrubbed_kinds, "kind": kind})
    return RedirectResponse("/labeling/write", status_code=303)  # F5 does not submit the prompt again
