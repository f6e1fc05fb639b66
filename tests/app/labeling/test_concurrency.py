"""Many labelers requesting and submitting at once, on PostgreSQL with real transactions."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.labeling import assignment as engine_mod
from app.labeling import ranking
from app.labeling.models import Assignment, Ranking, Task
from app.main import create_app
from app.migrate import upgrade
from app.users import service as users
from tests.db_setup import fresh_database
from tests.factories import make_ranking_batch, make_user
from tests.live_server import serving


def assert_every_task_done_once_per_submission(factory, required: int, accepted: list[int]) -> None:
    """Every task has exactly its required submissions, each a ranking of its own (none lost, none
    over, none double-counted), no labeler ranked a task twice, every accepted submit is one of
    them, and no lease is left open."""
    with unit_of_work(factory) as db:
        tasks = db.scalars(select(Task)).all()
        assert all(t.submission_count == t.required_submissions for t in tasks)
        per_task = dict(db.execute(select(Ranking.task_id, func.count()).group_by(Ranking.task_id)).all())
        assert all(per_task[t.id] == t.submission_count for t in tasks)
        pairs = db.execute(select(Ranking.task_id, Ranking.labeler_id)).all()
        assert len(pairs) == len(set(pairs)) == required == len(accepted) == len(set(accepted))
        assert db.scalar(select(func.count()).select_from(Assignment).where(Assignment.status == "active")) == 0


@pytest.mark.postgres_only
def test_racing_labelers_never_overshoot_lose_or_double_count(tmp_path):
    with fresh_database(tmp_path, "race") as url:
        upgrade(url)
        eng = make_engine(url, pool_size=30, max_overflow=10)
        factory = make_sessionmaker(eng)
        settings = Settings(mode="test", database_url=url, secret_key="x" * 40)
        with unit_of_work(factory) as db:
            make_ranking_batch(db, tasks=30, k=4, overlap_share=0.3, overlap_count=3)
            labelers = [make_user(db, "labeler").id for _ in range(24)]
            required = sum(db.scalars(select(Task.required_submissions)))
        accepted: list[int] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(labelers))

        def work(uid):
            try:
                barrier.wait()
                idle = 0
                while True:
                    with unit_of_work(factory) as db:
                        from app.users.models import User

                        user = db.get(User, uid)
                        a = engine_mod.next_assignment(db, user, None)
                        if a is None:  # nothing free right now (others hold the rest locked): retry a little
                            idle += 1
                            if idle > 30:
                                return
                            time.sleep(0.02)
                            continue
                        idle = 0
                        shown = list(a.shown_order)
                        aid = a.id
                    data = ranking.RankingInput(ranked=[[c] for c in shown], likert={c: 4 for c in shown})
                    for _ in range(2):  # a retried request: still one ranking
                        with unit_of_work(factory) as db:
                            user = db.get(User, uid)
                            row, created = ranking.submit_ranking(db, aid, user, data, settings=settings)
                        with lock:
                            if created:
                                accepted.append(row["id"])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(uid,)) for uid in labelers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert_every_task_done_once_per_submission(factory, required, accepted)
        eng.dispose()


@pytest.mark.postgres_only
def test_racing_token_clients_over_http_on_the_hot_path(tmp_path):
    """The same race through the real server: uvicorn with the async pool, 30 labelers' clients
    at once, each submit sent twice at the same moment (a double click)."""
    with fresh_database(tmp_path, "race_http") as url:
        upgrade(url)
        eng = make_engine(url)
        factory = make_sessionmaker(eng)
        with unit_of_work(factory) as db:
            make_ranking_batch(db, tasks=40, k=4, overlap_share=0.25, overlap_count=3)
            tokens = [users.create_token(db, make_user(db, "labeler"), "race")[1] for _ in range(30)]
            required = sum(db.scalars(select(Task.required_submissions)))
        app = create_app(Settings(mode="test", database_url=url, secret_key="concurrency-Zk3uQ9vN2bR7xW4pL8sD1fH6jT0yC5mA"))
        created: list[int] = []
        statuses: list[int] = []

        async def labeler(base_url: str, token: str) -> None:
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as c:
                idle = 0
                while idle < 20:
                    a = (await c.post("/api/labeling/next", json={"kind": "ranking"})).json()["assignment"]
                    if a is None:  # the rest is leased by others right now, or all done
                        idle += 1
                        await asyncio.sleep(0.05)
                        continue
                    idle = 0
                    ids = [r["completion_id"] for r in a["responses"]]
                    body = {"ranked": [[i] for i in ids], "ratings": [{"completion_id": i, "likert": 3} for i in ids]}
                    url_ = f"/api/labeling/assignments/{a['assignment_id']}/ranking"
                    twins = await asyncio.gather(c.post(url_, json=body), c.post(url_, json=body))
                    statuses.extend(r.status_code for r in twins)
                    assert len({r.json()["id"] for r in twins}) == 1  # both answers name the same ranking
                    created.extend(r.json()["id"] for r in twins if r.status_code == 201)

        async def everyone(base_url: str) -> None:
            await asyncio.gather(*(labeler(base_url, t) for t in tokens))

        with serving(app) as base_url:
            assert app.state.hot_pools, "the server did not open its hot-path pool"
            (hot,) = app.state.hot_pools.values()
            asyncio.run(everyone(base_url))
        assert sorted(set(statuses)) == [200, 201]  # each twin pair: one created, one repeat
        # the calls really went through the batcher, and some shared a statement
        assert hot.submits.calls == len(statuses) and hot.submits.largest_batch > 1
        assert_every_task_done_once_per_submission(factory, required, created)
        eng.dispose()
