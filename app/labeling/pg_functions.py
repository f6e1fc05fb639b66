"""On PostgreSQL, "next task" and "submit ranking" are one call each to a database function
(created by migration 0004: ``rlhf_lease_next``, ``rlhf_submit_ranking``), so that the lease
engine's locking happens inside the database in one round trip.

This module calls them from both sides of the app:

- sync, with the request's SQLAlchemy session: the services (assignment.next_or_why,
  ranking.submit_ranking) on PostgreSQL, i.e. the pages and the CLI;
- async, on the psycopg pool (app/asyncdb.py): the JSON API's hot path, which every labeler's
  client calls all day, without a thread-pool hop. There, the calls that arrive while the
  previous one runs go out together (asyncdb.CallBatcher) as one call of ``rlhf_lease_next_many``
  or ``rlhf_submit_ranking_many``: one statement and one transaction for the lot.

On SQLite the same rules run in Python (app/labeling/assignment.py, ranking.py). Both go through
the same tests. Shape checks, refusal messages and wire views are shared with the Python path.
"""

from __future__ import annotations

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import strip_nul, utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.labeling import assignment as engine
from app.labeling import ranking
from app.labeling.models import TaskKind
from app.users.models import LabelerGroup

LEASE_SQL = ("SELECT * FROM rlhf_lease_next(CAST(%(uid)s AS integer), CAST(%(heldout)s AS boolean), "
             "CAST(%(kind)s AS varchar), CAST(%(now)s AS timestamptz))")
SUBMIT_SQL = (
    "SELECT * FROM rlhf_submit_ranking(CAST(%(aid)s AS integer), CAST(%(uid)s AS integer), CAST(%(now)s AS timestamptz), "
    "CAST(%(all_bad)s AS boolean), CAST(%(comment)s AS text), CAST(%(spent)s AS float8), CAST(%(max_spent)s AS float8), "
    "CAST(%(cids)s AS integer[]), CAST(%(buckets)s AS integer[]), CAST(%(likerts)s AS integer[]), "
    "CAST(%(flag_cids)s AS integer[]), CAST(%(flag_names)s AS varchar[]))"
)
LEASE_MANY_SQL = ("SELECT * FROM rlhf_lease_next_many(CAST(%s AS integer[]), CAST(%s AS boolean[]), "
                  "CAST(%s AS varchar[]), CAST(%s AS timestamptz)) ORDER BY i")
SUBMIT_MANY_SQL = ("SELECT * FROM rlhf_submit_ranking_many(CAST(%s AS json), CAST(%s AS timestamptz), "
                   "CAST(%s AS float8)) ORDER BY i")
# Only for a refused or repeated submit: what validation and the stored answer need.
SHOWN_SQL = """SELECT a.labeler_id, a.shown_order, t.kind, r.id FROM assignments a JOIN tasks t ON t.id = a.task_id
LEFT JOIN rankings r ON r.assignment_id = a.id WHERE a.id = %s"""
STORED_SQL = """
SELECT r.id, r.task_id, r.all_bad, r.comment, r.time_spent_s, e.completion_id, e.bucket, e.likert, e.shown_position,
       ARRAY(SELECT f.flag FROM ranking_flags f WHERE f.entry_id = e.id)
FROM rankings r JOIN ranking_entries e ON e.ranking_id = r.id WHERE r.assignment_id = %s"""


def _sa(sql: str):
    """The same statement for a SQLAlchemy session (named binds)."""
    return text(sql.replace("%(", ":").replace(")s", "").replace("%s", ":p"))


# --- next task --------------------------------------------------------------------------------

def lease_params(user, kind: TaskKind | None) -> dict:
    return {"uid": user.id, "heldout": user.labeler_group == LabelerGroup.heldout,
            "kind": kind.value if kind else None, "now": utcnow()}


def lease_result(row, wanted: TaskKind | None) -> tuple[dict | None, str]:
    """(wire view, "") for a lease, or (None, why there is no work)."""
    aid, task_id, kind, status, expires, shown, prompt_id, prompt_text, cids, texts, busy = row
    if aid is None:
        return None, engine.no_work_message(busy, wanted)
    responses = None
    if kind == TaskKind.ranking:
        by_id = dict(zip(cids or [], texts or []))
        responses = [{"completion_id": c, "text": by_id[c]} for c in (shown or [])]
    return engine.lease_wire(aid, task_id, kind, status, expires, (prompt_id, prompt_text), responses), ""


def lease_next(db: Session, user, kind: TaskKind | None) -> tuple[dict | None, str]:
    return lease_result(db.execute(_sa(LEASE_SQL), lease_params(user, kind)).one(), kind)


async def lease_one(conn, params: dict):
    return await (await conn.execute(LEASE_SQL, params)).fetchone()


async def lease_many(conn, items: list[dict]) -> list:
    """Several labelers' "next" in one call (asyncdb.CallBatcher); rows in the order of items."""
    if len(items) == 1:
        return [await lease_one(conn, items[0])]
    rows = await (await conn.execute(LEASE_MANY_SQL, (
        [p["uid"] for p in items], [p["heldout"] for p in items], [p["kind"] for p in items], utcnow(),
    ))).fetchall()
    return [row[1:] for row in rows]


async def lease_next_async(hot, user, kind: TaskKind | None) -> tuple[dict | None, str]:
    """lease_next on the hot path: batched with the other labelers' calls of this moment."""
    return lease_result(await hot.leases.call(lease_params(user, kind)), kind)


# --- submit ranking ---------------------------------------------------------------------------

def submit_params(assignment_id: int, user, data: ranking.RankingInput, placed) -> dict:
    flags = [(cid, f) for cid, _ in placed for f in dict.fromkeys(data.flags.get(cid) or [])]
    return {
        "aid": assignment_id, "uid": user.id, "now": utcnow(), "all_bad": bool(data.all_bad),
        "comment": strip_nul((data.comment or "").strip()), "spent": data.time_spent_s,
        "max_spent": float(ranking.MAX_TIME_S),
        "cids": [c for c, _ in placed], "buckets": [b for _, b in placed], "likerts": [data.likert.get(c) for c, _ in placed],
        "flag_cids": [c for c, _ in flags], "flag_names": [f for _, f in flags],
    }


def created_view(params: dict, row) -> dict:
    """The new ranking's wire view, from what was sent (no read back)."""
    _, ranking_id, task_id, spent, shown = row
    position = {cid: i for i, cid in enumerate(shown or [])}
    flags: dict[int, list[str]] = {}
    for cid, name in zip(params["flag_cids"], params["flag_names"]):
        flags.setdefault(cid, []).append(name)
    entries = [(c, b, lk, position.get(c), flags.get(c, [])) for c, b, lk in zip(params["cids"], params["buckets"], params["likerts"])]
    return ranking.ranking_wire(ranking_id, params["aid"], task_id, params["all_bad"], params["comment"], spent, entries)


def refusal(outcome: str, assignment_id: int) -> Exception:
    """The error for an outcome that is neither created, stored nor invalid."""
    return {
        "not_found": NotFound(f"No assignment with id {assignment_id} for you."),
        "not_ranking": InvalidInput("This assignment is not a ranking task.", field="ranked"),
        "skipped": Conflict(engine.REFUSED_SKIPPED),
        "same_comment": Conflict(ranking.REFUSED_SAME_COMMENT, field="comment"),
        "late": Conflict(engine.REFUSED_LATE),
    }[outcome]


def explain_invalid(row, assignment_id: int, user, data: ranking.RankingInput, settings: Settings) -> None:
    """Raise the readable error for a submission that is not valid (the checks, in the order of
    ranking.submit_ranking, with the order shown); ``row`` is SHOWN_SQL's."""
    if row is None or row[0] != user.id:
        raise NotFound(f"No assignment with id {assignment_id} for you.")
    if row[2] != TaskKind.ranking:
        raise InvalidInput("This assignment is not a ranking task.", field="ranked")
    ranking.validate(data, list(row[1] or []), settings)
    raise InvalidInput("Rank and rate exactly the responses shown.", field="ranked")  # not reached


def stored_view(rows, assignment_id: int) -> dict:
    rid, task_id, all_bad, comment, spent = rows[0][:5]
    return ranking.ranking_wire(rid, assignment_id, task_id, all_bad, comment, spent, [r[5:] for r in rows])


def submit_ranking(db: Session, assignment_id: int, user, data: ranking.RankingInput, *,
                   settings: Settings) -> tuple[dict, bool]:
    """ranking.submit_ranking on PostgreSQL: (wire view, created)."""
    placed = ranking.shape_ok(data, settings)
    if placed is not None:
        params = submit_params(assignment_id, user, data, placed)
        row = db.execute(_sa(SUBMIT_SQL), params).one()
        if row[0] == "created":
            return created_view(params, row), True
        if row[0] == "stored":
            return stored_view(db.execute(_sa(STORED_SQL), {"p": assignment_id}).all(), assignment_id), False
        if row[0] != "invalid":
            raise refusal(row[0], assignment_id)
    shown = db.execute(_sa(SHOWN_SQL), {"p": assignment_id}).first()
    if shown is not None and shown[0] == user.id and shown[3] is not None:
        return stored_view(db.execute(_sa(STORED_SQL), {"p": assignment_id}).all(), assignment_id), False
    explain_invalid(shown, assignment_id, user, data, settings)


async def submit_one(conn, params: dict):
    return await (await conn.execute(SUBMIT_SQL, params)).fetchone()


async def submit_many(conn, items: list[dict]) -> list:
    """Several submits in one call (asyncdb.CallBatcher); rows in the order of items."""
    if len(items) == 1:
        return [await submit_one(conn, items[0])]
    keys = ("aid", "uid", "all_bad", "comment", "spent", "cids", "buckets", "likerts", "flag_cids", "flag_names")
    batch = orjson.dumps([{k: p[k] for k in keys} for p in items]).decode()
    rows = await (await conn.execute(SUBMIT_MANY_SQL, (batch, utcnow(), float(ranking.MAX_TIME_S)))).fetchall()
    return [row[1:] for row in rows]


async def submit_ranking_async(hot, assignment_id: int, user, data: ranking.RankingInput, *,
                               settings: Settings) -> tuple[dict, bool]:
    """The same on the hot path: the submit is batched with the other labelers' of this moment."""
    placed = ranking.shape_ok(data, settings)
    if placed is not None:
        params = submit_params(assignment_id, user, data, placed)
        row = await hot.submits.call(params)
        if row[0] == "created":
            return created_view(params, row), True
        if row[0] != "stored" and row[0] != "invalid":
            raise refusal(row[0], assignment_id)
    async with hot.pool.connection() as conn:
        if placed is not None and row[0] == "stored":
            return stored_view(await (await conn.execute(STORED_SQL, (assignment_id,))).fetchall(), assignment_id), False
        shown = await (await conn.execute(SHOWN_SQL, (assignment_id,))).fetchone()
        if shown is not None and shown[0] == user.id and shown[3] is not None:
            return stored_view(await (await conn.execute(STORED_SQL, (assignment_id,))).fetchall(), assignment_id), False
    explain_invalid(shown, assignment_id, user, data, settings)
