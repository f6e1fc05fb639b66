"""Many labelers requesting and submitting at once, on PostgreSQL with real transactions."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.labeling import assignment as engine_mod
from app.labeling import ranking
from app.labeling.models import Ranking, Task
from app.migrate import upgrade
from tests.db_setup import fresh_database
from tests.factories import make_ranking_batch, make_user


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
        with unit_of_work(factory) as db:
            tasks = db.scalars(select(Task)).all()
            assert all(t.submission_count == t.required_submissions for t in tasks)  # none lost, none over
            per_task = dict(db.execute(select(Ranking.task_id, func.count()).group_by(Ranking.task_id)).all())
            assert all(per_task[t.id] == t.submission_count for t in tasks)  # none double-counted
            pairs = db.execute(select(Ranking.task_id, Ranking.labeler_id)).all()
            assert len(pairs) == len(set(pairs)) == required == len(accepted)
        eng.dispose()
