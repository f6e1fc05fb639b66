"""The labeling API's hot path on PostgreSQL: "next task" and "submit ranking" on the async pool.

These two requests are what every labeler sends all day, so they skip the ORM and the thread
pool: a handful of prepared statements on an async psycopg connection (app/asyncdb.py). The
rules and the locking protocol are exactly those of the sync services, which serve the pages
and SQLite (app/labeling/assignment.py, app/labeling/ranking.py); validation, wire views and
refusal messages are shared with them, and the test suite runs the same scenarios on both.

Next task (one transaction, two statements):
  1. PICK: the labeler's live lease if any (resume), else ONE eligible task with room, walking the
     queue index (status, priority DESC, id), locked ``FOR UPDATE SKIP LOCKED``, with its prompt
     and responses. Full tasks (``leased_until`` ahead) are passed without counting their leases.
  2. CLAIM, holding the row lock: re-count the room with a fresh snapshot (every lease of this
     task committed before we got the lock), insert the lease if there is room, and record
     ``leased_until`` when this lease takes the last slot. No room: pick again (rare).

Submit ranking:
  1. READ the assignment, its task and any ranking already stored (one statement).
  2. Validate in Python against the order shown (ranking.validate).
  3. WRITE, in one transaction: one statement that counts the submission under the overshoot
     guard, closes the assignment unless it was skipped or submitted meanwhile, inserts the
     ranking (ON CONFLICT on its assignment: a racing twin) and its entries and flags. Unless all
     three happened, roll back and report the stored ranking (idempotent) or the refusal.
     A late submit (expired lease) first locks the task, so that others' live leases are counted
     exactly.
"""

from __future__ import annotations

import random
from datetime import timedelta

from psycopg import Rollback
from psycopg.types.json import Json

from app.config import Settings
from app.db import strip_nul, utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.labeling import assignment as engine
from app.labeling import ranking
from app.labeling.models import AssignmentStatus, TaskKind
from app.users.models import LabelerGroup

LIVE = "a.status = 'active' AND a.expires_at > %(now)s"

PICK_SQL = f"""
WITH live AS (
    SELECT a.id FROM assignments a JOIN tasks t ON t.id = a.task_id
    WHERE a.labeler_id = %(uid)s AND {LIVE} AND t.status = 'open'
      AND (%(kind)s::varchar IS NULL OR t.kind = %(kind)s::varchar)
    ORDER BY a.id LIMIT 1
), pick AS (
    SELECT t.id, t.kind, t.prompt_id, b.lease_minutes
    FROM tasks t JOIN batches b ON b.id = t.batch_id
    WHERE NOT EXISTS (SELECT 1 FROM live)
      AND t.status = 'open'
      AND (t.leased_until IS NULL OR t.leased_until <= %(now)s)
      AND (%(kind)s::varchar IS NULL OR t.kind = %(kind)s::varchar)
      AND t.id <> ALL(%(tried)s::int[])
      AND b.status = 'open' AND (b.include_heldout OR NOT %(heldout)s)
      AND t.submission_count + (SELECT count(*) FROM assignments a WHERE a.task_id = t.id AND {LIVE})
          < t.required_submissions
      AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.task_id = t.id AND a.labeler_id = %(uid)s)
      AND NOT EXISTS (SELECT 1 FROM assignments a JOIN tasks s ON s.id = a.task_id
                      WHERE a.labeler_id = %(uid)s AND a.status = 'skipped' AND s.prompt_id = t.prompt_id)
      AND NOT EXISTS (SELECT 1 FROM prompts p WHERE p.id = t.prompt_id AND p.author_id = %(uid)s)
      AND NOT EXISTS (SELECT 1 FROM task_items i JOIN completions c ON c.id = i.completion_id
                      WHERE i.task_id = t.id AND c.author_id = %(uid)s)
    ORDER BY t.priority DESC, t.id
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
)
SELECT (SELECT id FROM live), pick.id, pick.kind, pick.lease_minutes, p.id, p.text,
       (SELECT array_agg(i.completion_id ORDER BY i.position) FROM task_items i WHERE i.task_id = pick.id),
       (SELECT array_agg(c.text ORDER BY i.position) FROM task_items i JOIN completions c ON c.id = i.completion_id
        WHERE i.task_id = pick.id)
FROM (SELECT 1) AS one LEFT JOIN pick ON true LEFT JOIN prompts p ON p.id = pick.prompt_id
"""

CLAIM_SQL = f"""
WITH room AS (
    SELECT t.required_submissions - t.submission_count - count(a.id) AS free, min(a.expires_at) AS first_expiry
    FROM tasks t LEFT JOIN assignments a ON a.task_id = t.id AND {LIVE}
    WHERE t.id = %(task)s GROUP BY t.id
), lease AS (
    INSERT INTO assignments (task_id, labeler_id, status, leased_at, expires_at, shown_order)
    SELECT %(task)s, %(uid)s, 'active', %(now)s, %(expires)s, %(shown)s FROM room WHERE room.free > 0
    RETURNING id
), mark AS (
    UPDATE tasks SET leased_until = CASE WHEN room.free = 1 THEN LEAST(room.first_expiry, %(expires)s) END
    FROM room WHERE tasks.id = %(task)s AND room.free > 0
)
SELECT (SELECT id FROM lease)
"""

BUSY_SQL = f"""
SELECT count(*) FROM tasks t JOIN batches b ON b.id = t.batch_id
WHERE t.status = 'open' AND b.status = 'open'
  AND EXISTS (SELECT 1 FROM assignments a WHERE a.task_id = t.id AND {LIVE} AND a.labeler_id <> %(uid)s)
"""

VIEW_SQL = """
SELECT a.id, a.task_id, t.kind, a.status, a.expires_at, a.shown_order, p.id, p.text,
       (SELECT array_agg(i.completion_id) FROM task_items i WHERE i.task_id = t.id),
       (SELECT array_agg(c.text) FROM task_items i JOIN completions c ON c.id = i.completion_id WHERE i.task_id = t.id)
FROM assignments a JOIN tasks t ON t.id = a.task_id JOIN prompts p ON p.id = t.prompt_id
WHERE a.id = %s
"""

async def lease_next(pool, user, kind: TaskKind | None) -> tuple[dict | None, str]:
    """Lease the next task for ``user`` (or resume their live lease): (wire view, "") or
    (None, why there is no work)."""
    now = utcnow()
    params = {"uid": user.id, "now": now, "kind": kind.value if kind else None,
              "heldout": user.labeler_group == LabelerGroup.heldout, "tried": []}
    async with pool.connection() as conn:
        async with conn.transaction():
            for _attempt in range(6):
                row = await (await conn.execute(PICK_SQL, params)).fetchone()
                live_id, task_id, task_kind, minutes, prompt_id, prompt_text, cids, texts = row
                if live_id is not None:
                    return await _view(conn, live_id), ""
                if task_id is None:
                    break
                params["tried"].append(task_id)
                shown = None
                if task_kind == TaskKind.ranking:
                    shown = list(cids or [])
                    random.SystemRandom().shuffle(shown)  # a fresh order per labeler; recorded
                expires = now + timedelta(minutes=minutes)
                claim = {"task": task_id, "uid": user.id, "now": now, "expires": expires,
                         "shown": Json(shown) if shown is not None else None}
                (aid,) = await (await conn.execute(CLAIM_SQL, claim)).fetchone()
                if aid is None:  # filled meanwhile: the exact count said no room
                    continue
                responses = None
                if shown is not None:
                    by_id = dict(zip(cids, texts))
                    responses = [{"completion_id": c, "text": by_id[c]} for c in shown]
                return engine.lease_wire(aid, task_id, task_kind, AssignmentStatus.active, expires,
                                         (prompt_id, prompt_text), responses), ""
        (busy,) = await (await conn.execute(BUSY_SQL, {"uid": user.id, "now": now})).fetchone()
    return None, engine.no_work_message(busy)


async def _view(conn, assignment_id: int) -> dict:
    aid, task_id, kind, status, expires, shown, prompt_id, prompt_text, cids, texts = await (
        await conn.execute(VIEW_SQL, (assignment_id,))).fetchone()
    responses = None
    if kind == TaskKind.ranking:
        by_id = dict(zip(cids or [], texts or []))
        responses = [{"completion_id": c, "text": by_id[c]} for c in (shown or [])]
    return engine.lease_wire(aid, task_id, kind, status, expires, (prompt_id, prompt_text), responses)


# --- submit ------------------------------------------------------------------------------------

READ_SQL = """
SELECT a.labeler_id, a.status, a.expires_at, a.leased_at, a.shown_order, a.task_id,
       t.kind, t.prompt_id, t.batch_id, r.id,
       %(comment)s <> '' AND EXISTS (SELECT 1 FROM rankings x WHERE x.labeler_id = %(uid)s AND x.comment = %(comment)s)
FROM assignments a JOIN tasks t ON t.id = a.task_id LEFT JOIN rankings r ON r.assignment_id = a.id
WHERE a.id = %(aid)s
"""

LOCK_TASK_SQL = "SELECT id FROM tasks WHERE id = %s FOR UPDATE"

WRITE_SQL = """
WITH counted AS (
    UPDATE tasks t
    SET submission_count = t.submission_count + 1,
        status = CASE WHEN t.submission_count + 1 >= t.required_submissions THEN 'done' ELSE t.status END
    WHERE t.id = %(task)s
      AND t.submission_count
          + CASE WHEN %(late)s THEN (SELECT count(*) FROM assignments o WHERE o.task_id = t.id AND o.id <> %(aid)s
                                     AND o.status = 'active' AND o.expires_at > %(now)s) ELSE 0 END
          < t.required_submissions
    RETURNING t.id
), closed AS (
    UPDATE assignments a SET status = 'submitted', finished_at = %(now)s
    FROM counted WHERE a.id = %(aid)s AND a.status IN ('active', 'expired')
    RETURNING a.id
), ranked AS (
    INSERT INTO rankings (task_id, assignment_id, prompt_id, labeler_id, batch_id, all_bad, comment,
                          time_spent_s, submitted_at)
    SELECT %(task)s, %(aid)s, %(prompt)s, %(uid)s, %(batch)s, %(all_bad)s, %(comment)s, %(spent)s, %(now)s
    FROM closed
    ON CONFLICT (assignment_id) DO NOTHING
    RETURNING id
), entries AS (
    INSERT INTO ranking_entries (ranking_id, completion_id, bucket, likert, shown_position)
    SELECT ranked.id, e.cid, e.bucket, e.likert, e.pos
    FROM ranked, unnest(%(cids)s::int[], %(buckets)s::int[], %(likerts)s::int[], %(positions)s::int[])
         AS e(cid, bucket, likert, pos)
    RETURNING id, completion_id
), flagged AS (
    INSERT INTO ranking_flags (entry_id, flag)
    SELECT entries.id, f.flag
    FROM entries JOIN unnest(%(flag_cids)s::int[], %(flag_names)s::varchar[]) AS f(cid, flag)
         ON f.cid = entries.completion_id
)
SELECT (SELECT id FROM counted), (SELECT id FROM closed), (SELECT id FROM ranked)
"""

STORED_SQL = """
SELECT r.id, r.task_id, r.all_bad, r.comment, r.time_spent_s, e.completion_id, e.bucket, e.likert, e.shown_position,
       ARRAY(SELECT f.flag FROM ranking_flags f WHERE f.entry_id = e.id)
FROM rankings r JOIN ranking_entries e ON e.ranking_id = r.id
WHERE r.assignment_id = %s
"""

STATUS_SQL = "SELECT status FROM assignments WHERE id = %s"


async def submit_ranking(pool, assignment_id: int, user, data: ranking.RankingInput, *,
                         settings: Settings) -> tuple[dict, bool]:
    """Record the ranking of an assignment: (wire view, created). Idempotent, like
    ranking.submit_ranking: a repeated submit returns the ranking already stored."""
    comment = strip_nul((data.comment or "").strip())
    async with pool.connection() as conn:
        row = await (await conn.execute(READ_SQL, {"aid": assignment_id, "uid": user.id, "comment": comment})).fetchone()
        if row is None or row[0] != user.id:
            raise NotFound(f"No assignment with id {assignment_id} for you.")
        _, status, expires_at, leased_at, shown, task_id, kind, prompt_id, batch_id, stored_id, same_comment = row
        if stored_id is not None:
            return await _stored(conn, assignment_id), False
        if kind != TaskKind.ranking:
            raise InvalidInput("This assignment is not a ranking task.", field="ranked")
        shown = list(shown or [])
        placed = ranking.validate(data, shown, settings)
        if status == AssignmentStatus.skipped:
            raise Conflict(engine.REFUSED_SKIPPED)
        if same_comment:
            raise Conflict(ranking.REFUSED_SAME_COMMENT, field="comment")
        now = utcnow()
        spent = data.time_spent_s if data.time_spent_s is not None else (now - leased_at).total_seconds()
        spent = min(max(spent, 0.0), ranking.MAX_TIME_S)
        position = {cid: i for i, cid in enumerate(shown)}
        flags = [(cid, f) for cid, _ in placed for f in dict.fromkeys(data.flags.get(cid) or [])]
        late = not (status == AssignmentStatus.active and expires_at > now)
        params = {
            "task": task_id, "aid": assignment_id, "prompt": prompt_id, "uid": user.id, "batch": batch_id,
            "all_bad": bool(data.all_bad), "comment": comment, "spent": spent, "now": now, "late": late,
            "cids": [c for c, _ in placed], "buckets": [b for _, b in placed],
            "likerts": [data.likert.get(c) for c, _ in placed], "positions": [position[c] for c, _ in placed],
            "flag_cids": [c for c, _ in flags], "flag_names": [f for _, f in flags],
        }
        async with conn.transaction() as tx:
            if late:  # others' live leases must be counted exactly: hold the task row first
                await conn.execute(LOCK_TASK_SQL, (task_id,))
            _counted, _closed, ranking_id = await (await conn.execute(WRITE_SQL, params)).fetchone()
            if ranking_id is None:
                raise Rollback(tx)  # undo a count or a close without its ranking; leaves the block
        if ranking_id is not None:
            return ranking.ranking_wire(ranking_id, assignment_id, task_id, params["all_bad"], comment, spent, [
                (c, b, data.likert.get(c), position[c], [f for fc, f in flags if fc == c]) for c, b in placed
            ]), True
        # Refused or beaten by a twin request: say which.
        if await (await conn.execute("SELECT 1 FROM rankings WHERE assignment_id = %s", (assignment_id,))).fetchone():
            return await _stored(conn, assignment_id), False
        (now_status,) = await (await conn.execute(STATUS_SQL, (assignment_id,))).fetchone()
        if now_status == AssignmentStatus.skipped:
            raise Conflict(engine.REFUSED_SKIPPED)
        raise Conflict(engine.REFUSED_LATE)


async def _stored(conn, assignment_id: int) -> dict:
    rows = await (await conn.execute(STORED_SQL, (assignment_id,))).fetchall()
    rid, task_id, all_bad, comment, spent = rows[0][:5]
    return ranking.ranking_wire(rid, assignment_id, task_id, all_bad, comment, spent, [r[5:] for r in rows])
