"""The admins' review of submissions: by batch, by labeler, and by agreement (per task: the share
of response pairs its overlapping labelers ordered the same way, app/datasets/agreement.py)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.agreement import task_agreements
from app.errors import InvalidInput
from app.labeling.models import Batch
from app.labeling.submissions import Filters, list_submissions
from app.users.models import User


def parse(db: Session, *, batch: str = "", labeler: str = "", max_agreement: str = "", kind: str = "") -> dict:
    """The review's filters from the page's query, checked: an unknown batch or labeler, or an
    agreement outside 0-1, is InvalidInput naming the field."""
    out: dict = {"batch": None, "labeler": None, "max_agreement": None, "kind": kind.strip() or None}
    batch, labeler, max_agreement = batch.strip(), labeler.strip(), max_agreement.strip()
    if batch:
        b = db.get(Batch, int(batch)) if batch.isdigit() else db.scalar(select(Batch).where(Batch.name == batch))
        if b is None:
            raise InvalidInput(f"No batch {batch[:100]!r}.", field="batch")
        out["batch"] = b
    if labeler:
        u = db.scalar(select(User).where(User.username == labeler))
        if u is None:
            raise InvalidInput(f"No user {labeler[:100]!r}.", field="labeler")
        out["labeler"] = u
    if max_agreement:
        try:
            value = float(max_agreement)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1:
            raise InvalidInput("Agreement at most: a share from 0 to 1 (e.g. 0.5).", field="max_agreement")
        out["max_agreement"] = value
    return out


def review_page(db: Session, chosen: dict, *, page: int) -> dict:
    """One page of submissions for the chosen filters, each ranking with its task's agreement."""
    batch = chosen["batch"]
    agreements = task_agreements(db, batch=str(batch.id) if batch is not None else None)
    f = Filters(labeler_id=chosen["labeler"].id if chosen["labeler"] else None,
                batch_id=batch.id if batch is not None else None, kind=chosen["kind"])
    if chosen["max_agreement"] is not None:
        limit = chosen["max_agreement"]
        f.task_ids = sorted(t for t, a in agreements.items() if a is not None and a <= limit + 1e-9)
    rows, total = list_submissions(db, f, page=page)
    for r in rows:
        r["agreement"] = agreements.get(r["task_id"]) if r["kind"] != "demonstration" else None
        r["overlap"] = r["task_id"] in agreements
    return {"rows": rows, "total": total, "overlap_tasks": len(agreements)}
