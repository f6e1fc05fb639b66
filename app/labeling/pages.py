"""HTML pages for labelers: next task, ranking (and blind A/B evaluation) and demonstration screens, skip; home sections."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from starlette.datastructures import FormData

from app.deps import RequireRole, SessionDep, SettingsDep
from app.errors import AppError, InvalidInput
from app.labeling import assignment as engine
from app.labeling import batches, demonstrations, ranking
from app.labeling.models import (
    FLAGS,
    Assignment,
    AssignmentStatus,
    Batch,
    SkipReason,
    Task,
    TaskKind,
    TaskStatus,
)
from app.labeling.routes import parse_kind
from app.prompts.models import Prompt
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Labeler = RequireRole(Role.labeler)

SKIP_REASONS = {
    SkipReason.unclear: "The task is unclear",
    SkipReason.harmful: "Offensive or harmful content",
    SkipReason.personal_data: "It contains personal data",
    SkipReason.cannot_judge: "I cannot judge it (expertise, language)",
    SkipReason.other: "Other (say why in the note)",
}
# What the task page says after a redirect (fixed texts; the query string only picks one).
NOTICES = {
    "kept": "You had already submitted this task (perhaps in another tab or window). The first answer was kept; "
            "the one you just sent was not recorded. The answer kept is shown below.",
    "skipped": "You skipped this task. It will not be shown to you again.",
}
SHORTCUTS = [
    ("A – I", "select response A, B, C … (J / K: the next / previous one)"),
    ("1 – 9", "put the selected response into rank 1 – 9 (same number = tie)"),
    ("N, then 1 – 9", "insert the selected response as a new rank 1 – 9 on its own; the ranks from there on move down"),
    ("0 or Backspace", "take the selected response out of the ranking"),
    ("Shift + 1 – 7", "rate the selected response 1 – 7"),
    ("L", "open the flags of the selected response (Space ticks, Tab moves, Escape goes back)"),
    ("X", "all responses are bad (on / off)"),
    ("M", "write a comment (Escape leaves the box)"),
    ("T", "show the responses as plain text / formatted"),
    ("P", "show the whole prompt / fold it"),
    ("S", "skip or report this task"),
    ("Ctrl + Enter", "submit"),
]
DEMO_SHORTCUTS = [
    ("Ctrl + Enter", "submit (from the editor too)"),
    ("Escape, then P", "show the whole prompt / fold it"),
    ("Escape, then S", "skip or report this task"),
    ("Escape, then E", "back to the editor"),
]
NEXT_SHORTCUTS = [("Enter", "next task (the button is focused)"), ("H", "home page")]
# The blind A/B screen (an evaluation task with two responses). Digits only ever rate, letters
# A / B and "=" only ever give the preference: no key means two things.
AB_SHORTCUTS = [
    ("Tab / Shift + Tab", "move through the page; the response you are in is the selected one"),
    ("← / →", "select Response A / Response B (on a radio button the arrows move that choice, as in any form)"),
    ("1 – 7", "rate the selected response 1 – 7"),
    ("F", "open the flags of the selected response (Space ticks a flag, Tab moves on, Escape goes back)"),
    ("A", "A is better"),
    ("=", "About the same"),
    ("B", "B is better"),
    ("Enter", "submit (Ctrl + Enter from the comment box)"),
    ("P", "show the whole prompt / fold it"),
    ("S", "skip or report this task"),
]
# A/B preference -> buckets of the order shown (A = shown first), best first; "same" is a tie.
PREFERENCES = {"a": "A is better", "same": "About the same", "b": "B is better"}
NO_PREFERENCE = "Choose which response is better: A is better, About the same or B is better."


def preference_buckets(preference: str, shown: list[int]) -> list[list[int]]:
    """The ranking payload of an A/B preference over the two responses in the order shown."""
    a, b = shown
    return {"a": [[a], [b]], "same": [[a, b]], "b": [[b], [a]]}[preference]


def preference_of(buckets: list[list[int]], shown: list[int]) -> str | None:
    """The A/B preference that a stored ranking (buckets best first) says, if it is one."""
    for key in PREFERENCES:
        if [sorted(x) for x in buckets] == [sorted(x) for x in preference_buckets(key, shown)]:
            return key
    return None


def is_evaluation(db, task: Task) -> bool:
    batch = db.get(Batch, task.batch_id) if task.batch_id is not None else None
    return batch is not None and getattr(batch, "purpose", "training") == "evaluation"


def is_ab(db, task: Task, shown: list[int]) -> bool:
    """An evaluation task with two responses: the side-by-side screen with a preference."""
    return len(shown) == 2 and is_evaluation(db, task)


async def form_data(request: Request) -> FormData:
    return await request.form()


Form_ = Annotated[FormData, Depends(form_data)]


@router.post("/labeling/next")
def next_task(request: Request, db: SessionDep, user: Labeler, kind: Annotated[str, Form()] = ""):
    try:
        view, why = engine.next_or_why(db, user, parse_kind(kind))
    except AppError as exc:
        return render(request, "labeling/no_work.html", {"message": exc.message}, status_code=exc.status_code)
    if view is None:
        return render(request, "labeling/no_work.html", {"message": why})
    return RedirectResponse(f"/labeling/assignments/{view['assignment_id']}", status_code=303)


def _notice(request) -> str:
    return NOTICES.get(request.query_params.get("notice", ""), "")


def _task_context(db, user, task) -> dict:
    """Batch guidelines and the labeler's progress for the task screens' header (issue 11b's
    app/labeling/task_context.py and templates/labeling/_task_context.html), when present."""
    try:
        from app.labeling import task_context
    except ImportError:
        return {}
    return task_context.task_context(db, user, task)


def _common(request, db, settings, a: Assignment, task: Task) -> dict:
    return {
        "notice": _notice(request), "reasons": SKIP_REASONS, "skip_reason_labels": SKIP_REASONS,
        "next_shortcuts": NEXT_SHORTCUTS, "task_context": _task_context(db, request.state.user, task),
        "live": engine.is_live(a), "max_skip_note": engine.MAX_SKIP_NOTE_CHARS,
    }


def _ranking_page(request, db, settings, a: Assignment, *, form: dict | None = None, error=None, status_code=200):
    task, prompt, responses = ranking.assignment_for_ranking(db, a)
    letters = [chr(ord("A") + i) for i in range(len(responses))]
    done = ranking.existing_ranking(db, a.id)
    form = form or {"ranked": "[]", "likert": {}, "flags": {}, "all_bad": False, "comment": "", "time_spent_s": "0",
                    "preference": ""}
    evaluation = is_evaluation(db, task)
    ab = evaluation and len(responses) == 2
    judged = None
    kept = None
    if done:
        view = ranking.ranking_view(done)
        if ab:
            judged = PREFERENCES.get(preference_of(view["ranked"], [c.id for c in responses]) or "")
        letter_of = {c.id: letter for letter, c in zip(letters, responses)}
        rating = {r["completion_id"]: r for r in view["ratings"]}
        kept = {
            "ranks": [[{"letter": letter_of.get(cid, "?"), "likert": rating[cid]["likert"],
                        "flags": [FLAGS.get(f, f) for f in rating[cid]["flags"]]} for cid in bucket]
                      for bucket in view["ranked"]],
            "all_bad": view["all_bad"], "comment": view["comment"],
        }
    return render(
        request, "labeling/rank.html",
        {
            "a": a, "task": task, "prompt": prompt, "responses": list(zip(letters, responses)), "flags": FLAGS,
            "form": form, "error": error, "done": done, "kept": kept,
            "shortcuts": AB_SHORTCUTS if ab else SHORTCUTS, "max_comment": settings.max_comment_chars,
            "evaluation": evaluation, "ab": ab, "preferences": PREFERENCES, "judged": judged,
            **_common(request, db, settings, a, task),
        },
        status_code=status_code,
    )


def _demo_page(request, db, settings, a: Assignment, *, text=None, error=None, status_code=200):
    task = db.get(Task, a.task_id)
    prompt = db.get(Prompt, task.prompt_id)
    draft = demonstrations.get_draft(db, request.state.user, task.id)
    done = demonstrations.existing_demonstration(db, a.id)
    return render(
        request, "labeling/demonstrate.html",
        {
            "a": a, "task": task, "prompt": prompt, "draft": draft, "done": done, "error": error,
            "text": text if text is not None else (draft.text if draft else ""),
            "time_spent": draft.time_spent_s if draft else 0.0, "max_chars": settings.max_demonstration_chars,
            "shortcuts": DEMO_SHORTCUTS, **_common(request, db, settings, a, task),
        },
        status_code=status_code,
    )


@router.get("/labeling/assignments/{assignment_id}")
def assignment_page(request: Request, assignment_id: int, db: SessionDep, settings: SettingsDep, user: Labeler):
    a = engine.get_assignment(db, assignment_id, user)
    task = db.get(Task, a.task_id)
    if task.kind == TaskKind.ranking:
        return _ranking_page(request, db, settings, a)
    return _demo_page(request, db, settings, a)


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float_or_none(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@router.post("/labeling/assignments/{assignment_id}/ranking")
def submit_ranking(
    request: Request, assignment_id: int, db: SessionDep, settings: SettingsDep, user: Labeler, form: Form_
):
    a = engine.get_assignment(db, assignment_id, user)
    shown = list(a.shown_order or [])
    raw_ranked = str(form.get("ranked") or "[]")
    preference = str(form.get("preference") or "")
    kept = {
        "ranked": raw_ranked,
        "likert": {cid: str(form.get(f"likert_{cid}") or "") for cid in shown},
        "flags": {cid: [str(f) for f in form.getlist(f"flag_{cid}")] for cid in shown},
        "all_bad": bool(form.get("all_bad")),
        "comment": str(form.get("comment") or ""),
        "time_spent_s": str(form.get("time_spent_s") or "0"),
        "preference": preference if preference in PREFERENCES else "",
    }
    try:
        if is_ab(db, db.get(Task, a.task_id), shown):
            # The A/B screen sends a preference; it maps onto the ranking payload of the order shown.
            if preference in PREFERENCES:
                ranked = preference_buckets(preference, shown)
                kept["ranked"] = json.dumps(ranked)
            elif ranking.existing_ranking(db, a.id) is not None:
                ranked = []  # a repeated submit: answered with the ranking already stored
            else:
                raise InvalidInput(NO_PREFERENCE, field="preference")
        else:
            try:
                ranked = json.loads(raw_ranked)
            except json.JSONDecodeError:
                ranked = None
            if not isinstance(ranked, list):
                raise InvalidInput("The ranking could not be read; arrange the responses again.", field="ranked")
        data = ranking.RankingInput(
            ranked=ranked,
            likert={cid: _int_or_none(kept["likert"][cid]) for cid in shown},
            flags=kept["flags"], all_bad=kept["all_bad"], comment=kept["comment"],
            time_spent_s=_float_or_none(kept["time_spent_s"]),
        )
        view, created = ranking.submit_ranking(db, assignment_id, user, data, settings=settings)
    except AppError as exc:
        db.rollback()
        a = engine.get_assignment(db, assignment_id, user)
        return _ranking_page(request, db, settings, a, form=kept, error=exc.message, status_code=exc.status_code)
    differs = not created and ranked and not ranking.same_answer(data, view)
    return RedirectResponse(f"/labeling/assignments/{assignment_id}{'?notice=kept' if differs else ''}", status_code=303)


@router.post("/labeling/assignments/{assignment_id}/demonstration")
def submit_demonstration(
    request: Request, assignment_id: int, db: SessionDep, settings: SettingsDep, user: Labeler,
    text: Annotated[str, Form(max_length=1_000_000)] = "", time_spent_s: Annotated[str, Form()] = "",
):
    try:
        demo, created = demonstrations.submit_demonstration(
            db, assignment_id, user, text, _float_or_none(time_spent_s), settings=settings)
    except AppError as exc:
        db.rollback()
        a = engine.get_assignment(db, assignment_id, user)
        return _demo_page(request, db, settings, a, text=text, error=exc.message, status_code=exc.status_code)
    differs = not created and not demonstrations.same_text(text, demo)
    return RedirectResponse(f"/labeling/assignments/{assignment_id}{'?notice=kept' if differs else ''}", status_code=303)


@router.post("/labeling/assignments/{assignment_id}/skip")
def skip(request: Request, assignment_id: int, db: SessionDep, settings: SettingsDep, user: Labeler,
         reason: Annotated[str, Form()] = "", note: Annotated[str, Form(max_length=100_000)] = ""):
    """Skip or report a task of any kind; lands on the task's page, which says it was skipped."""
    try:
        engine.skip(db, assignment_id, user, reason, note)
    except AppError as exc:
        db.rollback()
        a = engine.get_assignment(db, assignment_id, user)
        page = _ranking_page if db.get(Task, a.task_id).kind == TaskKind.ranking else _demo_page
        return page(request, db, settings, a, error=exc.message, status_code=exc.status_code)
    return RedirectResponse(f"/labeling/assignments/{assignment_id}?notice=skipped", status_code=303)


# --- home sections -----------------------------------------------------------------------------


def unfinished(db, user) -> list[dict]:
    """The labeler's assignments not yet submitted or skipped (live or expired) whose task is open."""
    rows = db.execute(
        select(Assignment, Task.kind)
        .join(Task, Task.id == Assignment.task_id)
        .where(Assignment.labeler_id == user.id, Assignment.status == AssignmentStatus.active,
               Task.status == TaskStatus.open)
        .order_by(Assignment.id.desc())
        .limit(20)
    ).all()
    out = []
    for a, kind in rows:
        draft = demonstrations.get_draft(db, user, a.task_id) if kind == TaskKind.demonstration else None
        out.append({"a": a, "kind": kind.value, "live": engine.is_live(a), "draft_chars": len(draft.text) if draft else 0})
    return out


def labeler_home_section(request, db, user) -> dict:
    return {
        "template": "labeling/home_section.html",
        "waiting": batches.waiting_per_kind(db, user),
        "stats": batches.labeler_stats(db, user),
        "unfinished": unfinished(db, user),
    }


def admin_home_section(request, db, user) -> dict:
    return {"template": "labeling/admin_home_section.html", "overview": batches.overview(db)}


def _register_home_sections() -> None:
    from app.users.pages import HOME_SECTIONS

    if labeler_home_section not in HOME_SECTIONS[Role.labeler]:
        HOME_SECTIONS[Role.labeler].append(labeler_home_section)
    if admin_home_section not in HOME_SECTIONS[Role.admin]:
        HOME_SECTIONS[Role.admin].append(admin_home_section)


_register_home_sections()
