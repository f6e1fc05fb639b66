"""JSON API for labeling: next task, submit ranking/demonstration, drafts, skip; admin batches.

The pages (app/labeling/pages.py) call the same service functions.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app import asyncdb
from app.audit import service as audit
from app.db import unit_of_work, utcnow
from app.deps import RequireRole, RequireRoleView, SessionDep, SettingsDep
from app.errors import InvalidInput, NotFound
from app.labeling import assignment as engine
from app.labeling import batches, demonstrations, pg_functions, ranking
from app.labeling.models import TaskKind
from app.labeling.schemas import BatchIn, DemonstrationIn, DraftIn, NextIn, RankingIn, SkipIn
from app.users.models import Role



# Requests of this router past admission per server process. Measured at 200 labelers on 2 cores
# (benchmarks/README.md): 3 -> 75, 6 -> 116, 20 -> 91 rankings/s; more only adds GIL and
# thread-pool contention. Never above the pool size, so no request waits for a connection.
MAX_IN_FLIGHT = 6


async def db_slot(request: Request) -> AsyncIterator[None]:
    """Admission control: at most ``MAX_IN_FLIGHT`` (<= pool_size) of these requests per process
    are past this point.

    A request holds its database connection from its first query (the token lookup) to the
    commit, across several thread-pool hops (FastAPI runs each sync dependency and the endpoint in
    its own hop). Without a limit, 100 concurrent requests per process check out the pool's
    connections and then wait for threads, while the 40 threads wait for connections: requests
    stalled for the pool's 30 s timeout. Waiting here is asynchronous: no thread, no connection.
    """
    state = request.app.state
    slots = getattr(state, "labeling_slots", None)
    if slots is None:
        slots = state.labeling_slots = weakref.WeakKeyDictionary()
    loop = asyncio.get_running_loop()  # one semaphore per event loop (a test client may run several)
    limiter = slots.get(loop)
    if limiter is None:
        pool = state.engine.pool
        size = pool.size() if hasattr(pool, "size") else 1
        limiter = slots[loop] = asyncio.Semaphore(max(1, min(size, MAX_IN_FLIGHT)))
    async with limiter:
        yield


router = APIRouter(prefix="/api", tags=["labeling"], dependencies=[Depends(db_slot)])
# The two requests every labeler sends all day: async, one database call each on the PostgreSQL
# pool when there is one (app/labeling/pg_functions.py), else the same sync services in one
# thread-pool hop. They hold no connection across hops, so they need no admission limit.
hot_router = APIRouter(prefix="/api", tags=["labeling"])
Labeler = RequireRole(Role.labeler)
LabelerView = RequireRoleView(Role.labeler)
Admin = RequireRole(Role.admin)
AdminView = RequireRoleView(Role.admin)


def parse_kind(value: str | None) -> TaskKind | None:
    if value in (None, ""):
        return None
    try:
        return TaskKind(value)
    except ValueError:
        raise InvalidInput("kind must be 'demonstration' or 'ranking'.", field="kind") from None


def json_response(content, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def in_session(request: Request, work, *args, **kwargs):
    """Run a sync service function in one unit of work, in one thread-pool hop."""
    def run():
        with unit_of_work(request.app.state.sessionmaker) as db:
            return work(db, *args, **kwargs)

    return run_in_threadpool(run)


@hot_router.post("/labeling/next")
async def next_task(request: Request, user: LabelerView, body: NextIn | None = None):
    """Lease the next task (or resume the live one). {"assignment": null, "message": why} when
    none is free."""
    kind = parse_kind(body.kind if body else None)
    hot = asyncdb.hot_database(request)
    if hot is not None:
        view, why = await pg_functions.lease_next_async(hot, user, kind)
    else:
        view, why = await in_session(request, engine.next_or_why, user, kind)
    if view is None:
        return json_response({"assignment": None, "message": why})
    return json_response({"assignment": view})


@router.get("/labeling/assignments/{assignment_id}")
def get_assignment(assignment_id: int, db: SessionDep, user: Labeler):
    return json_response(engine.lease_view(db, engine.get_assignment(db, assignment_id, user).id))


@hot_router.post("/labeling/assignments/{assignment_id}/ranking")
async def submit_ranking(assignment_id: int, body: RankingIn, request: Request, user: LabelerView):
    """Idempotent: 201 with the new ranking, or 200 with the one already recorded for this assignment."""
    data = ranking.RankingInput(
        ranked=body.ranked,
        likert={r.completion_id: r.likert for r in body.ratings},
        flags={r.completion_id: r.flags for r in body.ratings},
        all_bad=body.all_bad, comment=body.comment, time_spent_s=body.time_spent_s,
    )
    settings = request.app.state.settings
    hot = asyncdb.hot_database(request)
    if hot is not None:
        view, created = await pg_functions.submit_ranking_async(hot, assignment_id, user, data, settings=settings)
    else:
        view, created = await in_session(request, ranking.submit_ranking, assignment_id, user, data, settings=settings)
    if not created:  # a repeat: the first answer stands; say so when this one differs
        view = {**view, **ranking.repeat_note(data, view)}
    return json_response(view, status_code=201 if created else 200)


@router.post("/labeling/assignments/{assignment_id}/demonstration")
def submit_demonstration(assignment_id: int, body: DemonstrationIn, db: SessionDep, settings: SettingsDep, user: Labeler):
    row, created = demonstrations.submit_demonstration(db, assignment_id, user, body.text, body.time_spent_s, settings=settings)
    view = {"id": row.id, "assignment_id": row.assignment_id, "prompt_id": row.prompt_id, "text": row.text}
    if not created:
        view.update(demonstrations.repeat_note(body.text, row))
    return JSONResponse(view, status_code=201 if created else 200)


@router.put("/labeling/assignments/{assignment_id}/draft")
def save_draft(assignment_id: int, body: DraftIn, db: SessionDep, settings: SettingsDep, user: Labeler):
    draft = demonstrations.save_draft(db, assignment_id, user, body.text, body.time_spent_s, settings=settings)
    return {"saved_at": draft.updated_at.isoformat(), "chars": len(draft.text)}


@router.post("/labeling/assignments/{assignment_id}/skip")
def skip(assignment_id: int, body: SkipIn, db: SessionDep, user: Labeler):
    a = engine.skip(db, assignment_id, user, body.reason, body.note)
    return {"assignment_id": a.id, "status": a.status.value, "reason": a.skip_reason.value, "note": a.skip_note or ""}


@router.get("/labeling/batches")
def list_batches(db: SessionDep, admin: Admin):
    return [
        {"id": r["batch"].id, "name": r["batch"].name, "kind": r["batch"].kind.value, "k": r["batch"].k,
         "status": r["batch"].status.value, "tasks": r["tasks"], "done": r["done"],
         "submissions": r["submissions"], "required": r["required"]}
        for r in batches.batch_rows(db)
    ]


@router.post("/labeling/batches", status_code=201)
def create_batch(body: BatchIn, db: SessionDep, admin: Admin):
    kind = parse_kind(body.kind) or TaskKind.ranking
    b = batches.create_batch(db, batches.BatchOptions(**{**body.options(), "kind": kind}), actor=admin,
                             selection=body.selection())
    return {"id": b.id, "name": b.name, "kind": b.kind.value, "selection": b.selection, "guidelines": b.guidelines}


PING_SQL = ("INSERT INTO audit_log (actor_id, action, target_type, detail, at) "
            "VALUES (%s, 'bench.ping', 'bench', '', %s) RETURNING id")


@hot_router.post("/bench/ping", status_code=201)
async def bench_ping(request: Request, admin: AdminView):
    """The benchmark's baseline: one INSERT (an audit entry) and its COMMIT, behind the same
    token check and on the same path (async pool, or the sync session on SQLite) as the hot
    labeling requests.

    Admin-only, and absent (404) in production mode: it exists to measure the server, nothing else."""
    if request.app.state.settings.mode == "production":
        raise NotFound("There is nothing at /api/bench/ping.")
    hot = asyncdb.hot_database(request)
    if hot is not None:
        async with hot.pool.connection() as conn:
            (entry_id,) = await (await conn.execute(PING_SQL, (admin.id, utcnow()))).fetchone()
    else:
        entry_id = (await in_session(request, audit.record, admin.id, "bench.ping", "bench")).id
    return Response(status_code=201, content=str(entry_id))
