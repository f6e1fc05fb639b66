"""labeling hot path: lease and submit as PostgreSQL functions; tasks.leased_until; two indexes

- rlhf_lease_next(...) and rlhf_submit_ranking(...): on PostgreSQL, "next task" and "submit
  ranking" are one call each, whoever calls (the pages' sync services or the API's async hot
  path); the rules are those of app/labeling/assignment.py and ranking.py, which run them in
  Python on SQLite. How to call them: app/labeling/pg_functions.py. The *_many variants run the
  calls that a busy server process has queued in one statement and one transaction.
- tasks.leased_until: set by the lease that takes a task's last free slot (the first expiry among
  its live leases); "next task" passes the task until then without counting its leases.
- ix_completions_author_id: "next task" checks that the labeler wrote none of a task's responses.
- ix_ranking_entries_ranking_id dropped: uq_ranking_entries_ranking_completion starts with
  ranking_id and serves the same lookups, one index write less per ranked response.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 08:45:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import app.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# Lease the next task for a labeler, or resume their live lease. One row (the assignment's view)
# or, when nothing is free, one row with assignment_id NULL and in `busy` the number of open
# tasks that other labelers' leases fill right now.
LEASE_NEXT = r"""
CREATE OR REPLACE FUNCTION rlhf_lease_next(p_uid integer, p_heldout boolean, p_kind varchar, p_now timestamptz)
RETURNS TABLE (assignment_id integer, task_id integer, kind varchar, status varchar, expires_at timestamptz,
               shown_order json, prompt_id integer, prompt_text text, completion_ids integer[],
               completion_texts text[], busy bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_aid integer;
    v_task integer;
    v_kind varchar;
    v_minutes integer;
    v_free bigint;
    v_first timestamptz;
    v_expires timestamptz;
    v_shown integer[];
    v_tried integer[] := '{}';
BEGIN
    -- The labeler's live lease, if any: "next" resumes it.
    SELECT a.id INTO v_aid
    FROM assignments a JOIN tasks t ON t.id = a.task_id
    WHERE a.labeler_id = p_uid AND a.status = 'active' AND a.expires_at > p_now AND t.status = 'open'
      AND (p_kind IS NULL OR t.kind = p_kind)
    ORDER BY a.id LIMIT 1;
    IF v_aid IS NULL THEN
        FOR attempt IN 1..6 LOOP
            -- PICK one task this labeler may do, with room, in queue order (the index
            -- ix_tasks_queue: status, priority DESC, id), and lock it, skipping rows others hold.
            SELECT t.id, t.kind, b.lease_minutes INTO v_task, v_kind, v_minutes
            FROM tasks t JOIN batches b ON b.id = t.batch_id
            WHERE t.status = 'open'
              AND (t.leased_until IS NULL OR t.leased_until <= p_now)
              AND (p_kind IS NULL OR t.kind = p_kind)
              AND t.id <> ALL (v_tried)
              AND b.status = 'open' AND (b.include_heldout OR NOT p_heldout)
              AND t.submission_count + (SELECT count(*) FROM assignments a
                                        WHERE a.task_id = t.id AND a.status = 'active' AND a.expires_at > p_now)
                  < t.required_submissions
              -- never the same task twice, never a prompt they skipped, never content they wrote
              AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.task_id = t.id AND a.labeler_id = p_uid)
              AND NOT EXISTS (SELECT 1 FROM assignments a JOIN tasks s ON s.id = a.task_id
                              WHERE a.labeler_id = p_uid AND a.status = 'skipped' AND s.prompt_id = t.prompt_id)
              AND NOT EXISTS (SELECT 1 FROM prompts p WHERE p.id = t.prompt_id AND p.author_id = p_uid)
              AND NOT EXISTS (SELECT 1 FROM task_items i JOIN completions c ON c.id = i.completion_id
                              WHERE i.task_id = t.id AND c.author_id = p_uid)
            ORDER BY t.priority DESC, t.id
            LIMIT 1
            FOR UPDATE OF t SKIP LOCKED;
            EXIT WHEN v_task IS NULL;
            v_tried := v_tried || v_task;
            -- CLAIM. Each statement of this function takes a new snapshot, and we hold the row
            -- lock that every lease of this task took: this count of its live leases is exact.
            SELECT t.required_submissions - t.submission_count - count(a.id), min(a.expires_at)
            INTO v_free, v_first
            FROM tasks t LEFT JOIN assignments a ON a.task_id = t.id AND a.status = 'active' AND a.expires_at > p_now
            WHERE t.id = v_task GROUP BY t.id;
            IF v_free > 0 THEN
                v_expires := p_now + make_interval(mins => v_minutes);
                IF v_kind = 'ranking' THEN  -- a fresh order per labeler, recorded
                    SELECT array_agg(i.completion_id ORDER BY random()) INTO v_shown
                    FROM task_items i WHERE i.task_id = v_task;
                END IF;
                INSERT INTO assignments (task_id, labeler_id, status, leased_at, expires_at, shown_order)
                VALUES (v_task, p_uid, 'active', p_now, v_expires, to_json(v_shown))
                RETURNING id INTO v_aid;
                -- Taking the last slot marks the task full until the first of its leases expires.
                UPDATE tasks SET leased_until = CASE WHEN v_free = 1 THEN LEAST(v_first, v_expires) END
                WHERE id = v_task;
                EXIT;
            END IF;
            v_task := NULL;
        END LOOP;
    END IF;
    IF v_aid IS NULL THEN
        RETURN QUERY SELECT NULL::integer, NULL::integer, NULL::varchar, NULL::varchar, NULL::timestamptz,
            NULL::json, NULL::integer, NULL::text, NULL::integer[], NULL::text[],
            (SELECT count(*) FROM tasks t JOIN batches b ON b.id = t.batch_id
             WHERE t.status = 'open' AND b.status = 'open' AND t.leased_until > p_now
               AND (p_kind IS NULL OR t.kind = p_kind));
        RETURN;
    END IF;
    RETURN QUERY
    SELECT a.id, a.task_id, t.kind, a.status, a.expires_at, a.shown_order, p.id, p.text,
           (SELECT array_agg(i.completion_id ORDER BY i.position) FROM task_items i WHERE i.task_id = t.id),
           (SELECT array_agg(c.text ORDER BY i.position) FROM task_items i JOIN completions c ON c.id = i.completion_id
            WHERE i.task_id = t.id),
           0::bigint
    FROM assignments a JOIN tasks t ON t.id = a.task_id JOIN prompts p ON p.id = t.prompt_id
    WHERE a.id = v_aid;
END
$$;
"""

# Record a ranking. The caller has checked its shape (buckets non-empty, no repeats, ratings 1-7,
# known flags, comment length); this checks it against the responses shown and every rule that
# needs the database, in the order of app/labeling/ranking.py, and answers with an outcome:
# created | stored (this assignment's ranking exists: idempotent) | not_found | not_ranking |
# invalid (not exactly the responses shown, or one unrated) | skipped | same_comment | late.
SUBMIT_RANKING = r"""
CREATE OR REPLACE FUNCTION rlhf_submit_ranking(
    p_aid integer, p_uid integer, p_now timestamptz, p_all_bad boolean, p_comment text,
    p_spent double precision, p_max_spent double precision,
    p_cids integer[], p_buckets integer[], p_likerts integer[], p_flag_cids integer[], p_flag_names varchar[])
RETURNS TABLE (outcome varchar, ranking_id integer, task_id integer, time_spent_s double precision, shown_order json)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_task integer;
    v_kind varchar;
    v_count integer;
    v_required integer;
    v_prompt integer;
    v_batch integer;
    v_status varchar;
    v_leased timestamptz;
    v_expires timestamptz;
    v_shown_json json;
    v_shown integer[];
    v_others bigint := 0;
    v_rid integer;
    v_spent double precision;
BEGIN
    SELECT a.task_id INTO v_task FROM assignments a WHERE a.id = p_aid AND a.labeler_id = p_uid;
    IF v_task IS NULL THEN
        RETURN QUERY SELECT 'not_found'::varchar, NULL::integer, NULL::integer, NULL::float8, NULL::json; RETURN;
    END IF;
    -- Every change to a task's leases or submissions holds the task's row lock: take it first,
    -- then read the assignment with a snapshot newer than the lock.
    SELECT t.kind, t.submission_count, t.required_submissions, t.prompt_id, t.batch_id
    INTO v_kind, v_count, v_required, v_prompt, v_batch FROM tasks t WHERE t.id = v_task FOR UPDATE;
    SELECT a.status, a.leased_at, a.expires_at, a.shown_order INTO v_status, v_leased, v_expires, v_shown_json
    FROM assignments a WHERE a.id = p_aid;
    SELECT r.id INTO v_rid FROM rankings r WHERE r.assignment_id = p_aid;
    IF v_rid IS NOT NULL THEN
        RETURN QUERY SELECT 'stored'::varchar, v_rid, v_task, NULL::float8, v_shown_json; RETURN;
    END IF;
    IF v_kind <> 'ranking' THEN
        RETURN QUERY SELECT 'not_ranking'::varchar, NULL::integer, v_task, NULL::float8, NULL::json; RETURN;
    END IF;
    SELECT array_agg(x::integer ORDER BY n) INTO v_shown FROM json_array_elements_text(v_shown_json) WITH ORDINALITY AS j(x, n);
    IF (SELECT array_agg(x ORDER BY x) FROM unnest(p_cids) x) IS DISTINCT FROM (SELECT array_agg(x ORDER BY x) FROM unnest(v_shown) x)
       OR array_position(p_likerts, NULL) IS NOT NULL THEN
        RETURN QUERY SELECT 'invalid'::varchar, NULL::integer, v_task, NULL::float8, v_shown_json; RETURN;
    END IF;
    IF v_status = 'skipped' THEN
        RETURN QUERY SELECT 'skipped'::varchar, NULL::integer, v_task, NULL::float8, NULL::json; RETURN;
    END IF;
    IF p_comment <> '' AND EXISTS (SELECT 1 FROM rankings r WHERE r.labeler_id = p_uid AND r.comment = p_comment) THEN
        RETURN QUERY SELECT 'same_comment'::varchar, NULL::integer, v_task, NULL::float8, NULL::json; RETURN;
    END IF;
    IF NOT (v_status = 'active' AND v_expires > p_now) THEN
        -- a late submit takes a slot only if nobody else holds it
        SELECT count(*) INTO v_others FROM assignments a
        WHERE a.task_id = v_task AND a.id <> p_aid AND a.status = 'active' AND a.expires_at > p_now;
    END IF;
    IF v_status NOT IN ('active', 'expired') OR v_count + v_others >= v_required THEN
        RETURN QUERY SELECT 'late'::varchar, NULL::integer, v_task, NULL::float8, NULL::json; RETURN;
    END IF;
    v_spent := LEAST(GREATEST(COALESCE(p_spent, extract(epoch FROM p_now - v_leased)), 0), p_max_spent);
    INSERT INTO rankings (task_id, assignment_id, prompt_id, labeler_id, batch_id, all_bad, comment, time_spent_s, submitted_at)
    VALUES (v_task, p_aid, v_prompt, p_uid, v_batch, p_all_bad, p_comment, v_spent, p_now)
    ON CONFLICT (assignment_id) DO NOTHING
    RETURNING id INTO v_rid;
    IF v_rid IS NULL THEN  -- a twin request on the sync path won the race
        SELECT r.id INTO v_rid FROM rankings r WHERE r.assignment_id = p_aid;
        RETURN QUERY SELECT 'stored'::varchar, v_rid, v_task, NULL::float8, v_shown_json; RETURN;
    END IF;
    UPDATE tasks SET submission_count = submission_count + 1,
                     status = CASE WHEN submission_count + 1 >= required_submissions THEN 'done' ELSE status END
    WHERE id = v_task;
    UPDATE assignments SET status = 'submitted', finished_at = p_now WHERE id = p_aid;
    INSERT INTO ranking_entries (ranking_id, completion_id, bucket, likert, shown_position)
    SELECT v_rid, e.cid, e.bucket, e.likert, array_position(v_shown, e.cid) - 1
    FROM unnest(p_cids, p_buckets, p_likerts) AS e(cid, bucket, likert);
    IF cardinality(p_flag_cids) > 0 THEN
        INSERT INTO ranking_flags (entry_id, flag)
        SELECT e.id, f.flag
        FROM ranking_entries e JOIN unnest(p_flag_cids, p_flag_names) AS f(cid, flag) ON f.cid = e.completion_id
        WHERE e.ranking_id = v_rid;
    END IF;
    RETURN QUERY SELECT 'created'::varchar, v_rid, v_task, v_spent, v_shown_json;
END
$$;
"""

# Many labelers' calls at once, in one transaction: what a busy server process has queued while
# its previous call ran (app/asyncdb.py, CallBatcher). Results carry the item's 1-based index.
LEASE_NEXT_MANY = r"""
CREATE OR REPLACE FUNCTION rlhf_lease_next_many(p_uids integer[], p_heldouts boolean[], p_kinds varchar[],
                                                p_now timestamptz)
RETURNS TABLE (i integer, assignment_id integer, task_id integer, kind varchar, status varchar,
               expires_at timestamptz, shown_order json, prompt_id integer, prompt_text text,
               completion_ids integer[], completion_texts text[], busy bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    FOR k IN 1 .. coalesce(cardinality(p_uids), 0) LOOP
        RETURN QUERY SELECT k, l.* FROM rlhf_lease_next(p_uids[k], p_heldouts[k], p_kinds[k], p_now) AS l;
    END LOOP;
END
$$;
"""

# Items: a JSON array of {aid, uid, all_bad, comment, spent, cids, buckets, likerts, flag_cids,
# flag_names}. Taken in the order of their tasks' ids, so that two batches that lock the same
# tasks always lock them in the same order (no deadlock).
SUBMIT_RANKING_MANY = r"""
CREATE OR REPLACE FUNCTION rlhf_submit_ranking_many(p_items json, p_now timestamptz, p_max_spent double precision)
RETURNS TABLE (i integer, outcome varchar, ranking_id integer, task_id integer, time_spent_s double precision,
               shown_order json)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT x.*, a.task_id AS lock_order
        FROM ROWS FROM (json_to_recordset(p_items) AS (aid integer, uid integer, all_bad boolean, comment text,
                        spent double precision, cids integer[], buckets integer[], likerts integer[],
                        flag_cids integer[], flag_names varchar[]))
             WITH ORDINALITY AS x(aid, uid, all_bad, comment, spent, cids, buckets, likerts, flag_cids, flag_names, n)
        LEFT JOIN assignments a ON a.id = x.aid
        ORDER BY a.task_id NULLS FIRST, x.n
    LOOP
        RETURN QUERY SELECT r.n::integer, s.* FROM rlhf_submit_ranking(
            r.aid, r.uid, p_now, r.all_bad, r.comment, r.spent, p_max_spent, r.cids, r.buckets, r.likerts,
            r.flag_cids, r.flag_names) AS s;
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('leased_until', app.db.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('completions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_completions_author_id'), ['author_id'], unique=False)
    with op.batch_alter_table('ranking_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ranking_entries_ranking_id'))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(LEASE_NEXT)
        op.execute(SUBMIT_RANKING)
        op.execute(LEASE_NEXT_MANY)
        op.execute(SUBMIT_RANKING_MANY)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP FUNCTION IF EXISTS rlhf_submit_ranking_many(json, timestamptz, double precision)")
        op.execute("DROP FUNCTION IF EXISTS rlhf_lease_next_many(integer[], boolean[], varchar[], timestamptz)")
        op.execute("DROP FUNCTION IF EXISTS rlhf_submit_ranking(integer, integer, timestamptz, boolean, text, "
                   "double precision, double precision, integer[], integer[], integer[], integer[], varchar[])")
        op.execute("DROP FUNCTION IF EXISTS rlhf_lease_next(integer, boolean, varchar, timestamptz)")
    with op.batch_alter_table('ranking_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ranking_entries_ranking_id'), ['ranking_id'], unique=False)
    with op.batch_alter_table('completions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_completions_author_id'))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('leased_until')
