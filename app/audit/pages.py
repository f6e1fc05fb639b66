"""The audit log page (admins)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.audit import service
from app.deps import RequireRole, SessionDep
from app.users.models import Role
from app.web import render

router = APIRouter(tags=["pages"])


@router.get("/admin/audit")
def audit_log(request: Request, db: SessionDep, admin: RequireRole(Role.admin)):
    return render(request, "audit/log.html", {"entries": service.recent(db, 200)})
