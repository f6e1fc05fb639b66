"""Read-only pages over submitted work: a labeler's own history (/labeling/history) and the
review of everyone's submissions (/review: admins and researchers)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy import select

from app.deps import RequireRole, SessionDep
from app.errors import AppError
from app.labeling import review, submissions
from app.labeling.models import Batch
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])
Labeler = RequireRole(Role.labeler)
Reviewer = RequireRole(Role.admin, Role.researcher)


def _pages(total: int, page: int) -> dict:
    last = max(1, -(-total // submissions.PER_PAGE))
    return {"page": page, "last": last, "total": total}


@router.get("/labeling/history")
def history(request: Request, db: SessionDep, user: Labeler, page: str = "1", kind: str = ""):
    n = submissions.page_number(page)
    rows, total = submissions.list_submissions(db, submissions.Filters(labeler_id=user.id, kind=kind or None), page=n)
    query = urlencode({"kind": kind} if kind else {})
    return render(request, "labeling/history.html", {"rows": rows, "kind": kind, "query": query, **_pages(total, n)})


@router.get("/labeling/history/rankings/{ranking_id}")
def history_ranking(request: Request, ranking_id: int, db: SessionDep, user: Labeler):
    detail = submissions.ranking_detail(db, ranking_id, labeler_id=user.id)  # 404 for another's
    return render(request, "labeling/submission.html", {**detail, "back": "/labeling/history", "own": True})


@router.get("/labeling/history/demonstrations/{demo_id}")
def history_demonstration(request: Request, demo_id: int, db: SessionDep, user: Labeler):
    detail = submissions.demonstration_detail(db, demo_id, labeler_id=user.id)
    return render(request, "labeling/submission.html", {**detail, "back": "/labeling/history", "own": True})


@router.get("/review")
def review_list(request: Request, db: SessionDep, user: Reviewer, batch: str = "", labeler: str = "",
                max_agreement: str = "", kind: str = "", page: str = "1"):
    form = {"batch": batch[:200], "labeler": labeler[:200], "max_agreement": max_agreement[:20], "kind": kind[:20]}
    batches = list(db.scalars(select(Batch.name).order_by(Batch.id.desc()).limit(500)))
    query = urlencode({k: v for k, v in form.items() if v})
    try:
        n = submissions.page_number(page)
        chosen = review.parse(db, **form)
        view = review.review_page(db, chosen, page=n)
    except AppError as exc:
        return render(request, "labeling/review.html",
                      {"form": form, "error": exc.message, "error_field": exc.field, "rows": [], "batches": batches,
                       "page": 1, "last": 1, "total": 0, "overlap_tasks": 0, "query": query}, status_code=exc.status_code)
    return render(request, "labeling/review.html",
                  {"form": form, "error": None, "batches": batches, "query": query, **view, **_pages(view["total"], n)})


@router.get("/review/rankings/{ranking_id}")
def review_ranking(request: Request, ranking_id: int, db: SessionDep, user: Reviewer):
    detail = submissions.ranking_detail(db, ranking_id)
    return render(request, "labeling/submission.html", {**detail, "back": "/review", "own": False})


@router.get("/review/demonstrations/{demo_id}")
def review_demonstration(request: Request, demo_id: int, db: SessionDep, user: Reviewer):
    detail = submissions.demonstration_detail(db, demo_id)
    return render(request, "labeling/submission.html", {**detail, "back": "/review", "own": False})
