"""Labeling load: simulated labelers over HTTP against `rlhf serve` and PostgreSQL.

Each simulated labeler authenticates with its own API token and loops
POST /api/labeling/next -> POST /api/labeling/assignments/{id}/ranking. The same concurrency is
then run against POST /api/bench/ping (one INSERT + COMMIT; admin-only, absent in production
mode) on the same server, and the ratio is printed. Ends with an integrity check in the database.

    python benchmarks/labeling_load.py --labelers 200 --seconds 15 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import Settings  # noqa: E402
from app.db import make_engine, make_sessionmaker, unit_of_work  # noqa: E402
from app.migrate import upgrade  # noqa: E402

PG = os.environ.get("RLHF_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(url: str, labelers: int, tasks: int, k: int) -> tuple[list[str], str]:
    from app.labeling.models import Batch, BatchStatus, Task, TaskItem, TaskKind, TaskStatus
    from app.prompts.models import Completion, Prompt, PromptSource, Split
    from app.users import service as users

    factory = make_sessionmaker(make_engine(url))
    with unit_of_work(factory) as db:
        tokens = []
        for i in range(labelers):
            u = users.create_user(db, username=f"bench{i}", password="bench-password-1", role="labeler")
            tokens.append(users.create_token(db, u, "bench")[1])
        admin = users.create_user(db, username="benchadmin", password="bench-password-1", role="admin")
        admin_token = users.create_token(db, admin, "bench")[1]
        batch = Batch(name="bench", kind=TaskKind.ranking, k=k, overlap_share=0.1, overlap_count=3,
                      lease_minutes=30, priority=0, include_heldout=True, status=BatchStatus.open)
        db.add(batch)
        db.flush()
        prompt_ids = db.execute(insert(Prompt).returning(Prompt.id), [
            {"text": f"Bench prompt {i}", "source": PromptSource.imported, "origin_user": f"o{i % 500}",
             "split": Split.train, "content_hash": uuid.uuid4().hex} for i in range(tasks)]).scalars().all()
        comp = db.execute(insert(Completion).returning(Completion.id, Completion.prompt_id), [
            {"prompt_id": p, "text": f"Response {j} to {p}", "model_name": f"m{j}", "content_hash": uuid.uuid4().hex}
            for p in prompt_ids for j in range(k)]).all()
        task_ids = db.execute(insert(Task).returning(Task.id, Task.prompt_id), [
            {"batch_id": batch.id, "kind": TaskKind.ranking, "prompt_id": p, "status": TaskStatus.open,
             "required_submissions": 3 if i % 10 == 0 else 1, "submission_count": 0, "priority": 0}
            for i, p in enumerate(prompt_ids)]).all()
        by_prompt: dict[int, list[int]] = {}
        for cid, pid in comp:
            by_prompt.setdefault(pid, []).append(cid)
        db.execute(insert(TaskItem), [{"task_id": t, "completion_id": c, "position": n}
                                      for t, p in task_ids for n, c in enumerate(by_prompt[p])])
    return tokens, admin_token


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def labeler_loop(client, token, deadline, lat, counts):
    h = {"Authorization": f"Bearer {token}"}
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            r = await client.post("/api/labeling/next", json={"kind": "ranking"}, headers=h)
        except httpx.HTTPError:
            counts["transport_error"] = counts.get("transport_error", 0) + 1
            continue
        lat["next"].append(time.perf_counter() - t0)
        a = r.json().get("assignment") if r.status_code == 200 else None
        if a is None:
            counts["empty"] += 1
            await asyncio.sleep(0.05)
            continue
        ids = [x["completion_id"] for x in a["responses"]]
        body = {"ranked": [[i] for i in ids], "ratings": [{"completion_id": i, "likert": 4} for i in ids]}
        t0 = time.perf_counter()
        try:
            r = await client.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking", json=body, headers=h)
        except httpx.HTTPError:
            counts["transport_error"] = counts.get("transport_error", 0) + 1
            continue
        lat["submit"].append(time.perf_counter() - t0)
        counts[r.status_code] = counts.get(r.status_code, 0) + 1


async def ping_loop(client, token, deadline, lat, counts):
    h = {"Authorization": f"Bearer {token}"}
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            r = await client.post("/api/bench/ping", headers=h)
        except httpx.HTTPError:
            counts["transport_error"] = counts.get("transport_error", 0) + 1
            continue
        lat.append(time.perf_counter() - t0)
        counts[r.status_code] = counts.get(r.status_code, 0) + 1


async def run(base, tokens, admin_token, seconds):
    limits = httpx.Limits(max_connections=len(tokens) + 10, max_keepalive_connections=len(tokens) + 10)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        lat = {"next": [], "submit": []}
        counts: dict = {"empty": 0}
        start = time.perf_counter()
        await asyncio.gather(*(labeler_loop(client, t, start + seconds, lat, counts) for t in tokens))
        rank_elapsed = time.perf_counter() - start
        plat: list[float] = []
        pcounts: dict = {}
        start = time.perf_counter()
        await asyncio.gather(*(ping_loop(client, admin_token, start + seconds, plat, pcounts) for _ in tokens))
        ping_elapsed = time.perf_counter() - start
    return lat, counts, rank_elapsed, plat, pcounts, ping_elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labelers", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--workers", type=int, default=2, help="rlhf serve --workers")
    ap.add_argument("--tasks", type=int, default=8000)
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args()

    from sqlalchemy.engine import make_url

    name = f"rlhf_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(PG)
    conninfo = f"host={admin.host} port={admin.port or 5432} user={admin.username} dbname={admin.database}"
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    server = None
    try:
        upgrade(url)
        print(f"seeding {args.labelers} labelers and {args.tasks} ranking tasks (K={args.k}) ...", flush=True)
        tokens, admin_token = seed(url, args.labelers, args.tasks, args.k)
        port = free_port()
        env = {**os.environ, "RLHF_DATABASE_URL": url, "RLHF_SECRET_KEY": secrets.token_urlsafe(48),
               "RLHF_MODE": "demo", "RLHF_PORT": str(port)}
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--workers", str(args.workers)], env=env)
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/login", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        lat, counts, relapsed, plat, pcounts, pelapsed = asyncio.run(run(base, tokens, admin_token, args.seconds))
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)

    from app.labeling.models import Ranking, Task

    factory = make_sessionmaker(make_engine(url))
    with unit_of_work(factory) as db:
        rankings = db.scalar(select(func.count()).select_from(Ranking))
        subs = db.scalar(select(func.coalesce(func.sum(Task.submission_count), 0)))
        over = db.scalar(select(func.count()).select_from(Task).where(Task.submission_count > Task.required_submissions))
        per_task = db.execute(select(Ranking.task_id, func.count()).group_by(Ranking.task_id)).all()
        mismatched = sum(1 for tid, n in per_task if db.get(Task, tid).submission_count != n)
        dup = db.scalar(select(func.count()).select_from(
            select(Ranking.task_id, Ranking.labeler_id).group_by(Ranking.task_id, Ranking.labeler_id)
            .having(func.count() > 1).subquery()))
    make_engine(url).dispose()
    with psycopg.connect(conninfo, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    created = counts.get(201, 0)
    rps = created / relapsed
    ping_ok = pcounts.get(201, 0)
    ping_rps = ping_ok / pelapsed
    loop = [a + b for a, b in zip(lat["next"], lat["submit"])]
    print(f"\nlabeling load: {args.labelers} concurrent labelers, {args.seconds:.0f} s per phase, "
          f"rlhf serve --workers {args.workers}, {os.cpu_count()} CPUs, PostgreSQL")
    print(f"{'endpoint':<28}{'ok/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'requests':>10}")
    for label, values, ok_s in [
        ("POST /api/labeling/next", lat["next"], len(lat["next"]) / relapsed),
        ("POST .../ranking (submit)", lat["submit"], rps),
        ("next + submit (one task)", loop, rps),
        ("POST /api/bench/ping", plat, ping_rps),
    ]:
        print(f"{label:<28}{ok_s:>10.1f}{pct(values, .5):>10.1f}{pct(values, .95):>10.1f}{pct(values, .99):>10.1f}{len(values):>10}")
    print(f"\nsubmitted rankings/s: {rps:.1f}   trivial INSERT+COMMIT/s: {ping_rps:.1f}   ratio: {rps / ping_rps:.3f}")
    print(f"submit status codes: { {k: v for k, v in counts.items() if k != 'empty'} }   empty next: {counts['empty']}")
    ok = rankings == created == subs and over == 0 and mismatched == 0 and dup == 0
    print(f"integrity: rankings in db {rankings}, accepted submits {created}, task submission counts {subs}, "
          f"over overlap {over}, count mismatches {mismatched}, duplicates {dup} -> {'OK' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
