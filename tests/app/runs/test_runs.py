"""Runs: queueing, claiming, cancel, requeue of dead workers, the pages and the API."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from app.db import make_engine, make_sessionmaker, unit_of_work, utcnow
from app.errors import Conflict, InvalidInput
from app.migrate import upgrade
from app.runs import service
from app.runs.models import RunStatus
from tests.db_setup import backend, fresh_database
from tests.factories import PASSWORD, make_user


def test_claim_takes_the_oldest_queued_run_once(db):
    first = service.create_run(db, kind="sft", name="a", config={})
    second = service.create_run(db, kind="rm", name="b", config={})
    claimed = service.claim_next(db, "w1")
    assert claimed.id == first.id and claimed.status == RunStatus.running and claimed.attempts == 1
    assert service.claim_next(db, "w2").id == second.id
    assert service.claim_next(db, "w3") is None


def test_unknown_kind_and_bad_config_are_refused(db):
    with pytest.raises(InvalidInput, match="Unknown run kind"):
        service.create_run(db, kind="dpo-magic", name="x", config={})
    with pytest.raises(InvalidInput, match="JSON object"):
        service.create_run(db, kind="sft", name="x", config=["not", "a", "dict"])


def test_stale_running_run_is_requeued_then_failed_after_max_attempts(db):
    run = service.create_run(db, kind="sft", name="stale", config={})
    run.max_attempts = 2
    for attempt in (1, 2):
        claimed = service.claim_next(db, f"dead-worker-{attempt}")
        assert claimed.id == run.id
        claimed.heartbeat_at = utcnow() - timedelta(minutes=10)
        assert service.requeue_stale(db, stale_after_s=60) == [run.id]
    assert run.status == RunStatus.failed and "gave up after 2 attempts" in run.message


def test_cancel_a_queued_run_ends_it_and_a_finished_run_cannot_be_cancelled(db):
    admin = make_user(db, "admin")
    run = service.create_run(db, kind="sft", name="c", config={})
    service.request_cancel(db, run.id, actor=admin)
    assert run.status == RunStatus.cancelled
    with pytest.raises(Conflict, match="already cancelled"):
        service.request_cancel(db, run.id, actor=admin)


def test_metrics_are_returned_as_series(db):
    run = service.create_run(db, kind="sft", name="m", config={})
    service.record_metrics(db, run.id, [(1, "loss", 2.0), (2, "loss", 1.5), (1, "lr", 1e-4)])
    assert service.metric_series(db, run.id) == {"loss": [(1, 2.0), (2, 1.5)], "lr": [(1, 1e-4)]}


def test_researcher_watches_runs_but_cannot_queue_or_cancel(client, db):
    researcher = make_user(db, "researcher")
    run = service.create_run(db, kind="rm", name="r", config={})
    client.login(researcher.username, PASSWORD)
    assert client.get("/api/runs").json()[0]["id"] == run.id
    assert client.post_form(f"/runs/{run.id}/cancel").status_code == 403
    assert client.post("/api/runs", json={"kind": "sft"}, headers={"X-CSRF-Token": client.csrf()}).status_code == 403


@pytest.mark.postgres_only
@pytest.mark.skipif(backend() != "postgres", reason="SKIP LOCKED concurrency is a PostgreSQL feature")
def test_concurrent_workers_never_claim_the_same_run(tmp_path):
    with fresh_database(tmp_path, "claims") as url:
        upgrade(url)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        with unit_of_work(factory) as db:
            for i in range(40):
                service.create_run(db, kind="sft", name=f"r{i}", config={})
        claims: list[int] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            while True:
                with unit_of_work(factory) as db:
                    run = service.claim_next(db, f"w{n}")
                    if run is None:
                        return
                    with lock:
                        claims.append(run.id)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        engine.dispose()
    assert len(claims) == 40 and len(set(claims)) == 40


def test_a_local_worker_leaves_multi_node_runs_to_slurm_workers(db):
    wide = service.create_run(db, kind="sft", name="2 nodes", config={}, nodes=2, gpus_per_node=8)
    narrow = service.create_run(db, kind="sft", name="1 node", config={}, gpus=2)
    assert (wide.gpus, narrow.nodes, narrow.gpus_per_node) == (16, 1, 2)
    assert service.claim_next(db, "local", max_nodes=1).id == narrow.id  # the local launcher's limit
    assert service.claim_next(db, "local", max_nodes=1) is None and wide.status == RunStatus.queued
    assert service.claim_next(db, "slurm").id == wide.id
