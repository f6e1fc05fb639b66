"""Labeling load: simulated labelers over HTTP against `rlhf serve` and PostgreSQL.

Each simulated labeler authenticates with its own API token and loops
POST /api/labeling/next -> POST /api/labeling/assignments/{id}/ranking. The same concurrency is
then run against POST /api/bench/ping (one INSERT + COMMIT; admin-only, absent in production
mode) on the same server, and the ratio is printed. Ends with an integrity check in the database.

    python benchmarks/labeling_load.py --labelers 200 --seconds 10 --workers 2 --rate 500 650 1000

Phases: labelers in a closed loop (each starts its next task as soon as the last is submitted:
the server's capacity), labelers paced so that together they submit each --rate rankings/s (latency
at that load, measured from when each task was due), and the ping baseline in a closed loop.
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
import orjson
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


def seed_history(conninfo: str, rankings: int, k: int) -> None:
    """An earlier, finished round of labeling (closed batch: done tasks, submitted assignments,
    rankings and their entries), written with COPY: what a database in use holds. Without it the
    run starts from empty rankings/assignments tables, and PostgreSQL plans (and caches, per
    connection) its foreign-key checks against them as sequential scans."""
    now = "2026-11-01 10:00:00+00"
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        labelers = [r[0] for r in cur.execute("SELECT id FROM users WHERE role = 'labeler' ORDER BY id")]
        start = {t: cur.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {t}").fetchone()[0]
                 for t in ("batches", "prompts", "completions", "tasks", "assignments", "rankings", "ranking_entries")}
        batch = start["batches"]

        def copy(table, columns, rows):
            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)

        copy("batches", "id, name, kind, k, overlap_share, overlap_count, lease_minutes, priority, include_heldout, "
             "status, source, created_at", [(batch, "history", "ranking", k, 0.0, 1, 30, 0, True, "closed", "app", now)])
        n = range(rankings)
        copy("prompts", "id, text, source, origin_user, split, category, content_hash, scrubbed, scrubbed_kinds, status, "
             "created_at", ((start["prompts"] + i, f"Earlier prompt {i}", "imported", f"h{i % 500}", "train", "general",
                             f"{i:064x}", False, "", "active", now) for i in n))
        copy("completions", "id, prompt_id, text, model_name, content_hash, created_at",
             ((start["completions"] + i * k + j, start["prompts"] + i, f"Earlier response {j} to {i}", f"m{j}",
               f"{i * k + j:064x}", now) for i in n for j in range(k)))
        copy("tasks", "id, batch_id, kind, prompt_id, required_submissions, submission_count, priority, status, created_at",
             ((start["tasks"] + i, batch, "ranking", start["prompts"] + i, 1, 1, 0, "done", now) for i in n))
        copy("assignments", "id, task_id, labeler_id, status, leased_at, expires_at, finished_at",
             ((start["assignments"] + i, start["tasks"] + i, labelers[i % len(labelers)], "submitted", now, now, now) for i in n))
        copy("rankings", "id, task_id, assignment_id, prompt_id, labeler_id, batch_id, all_bad, comment, time_spent_s, submitted_at",
             ((start["rankings"] + i, start["tasks"] + i, start["assignments"] + i, start["prompts"] + i,
               labelers[i % len(labelers)], batch, False, "", 30.0, now) for i in n))
        copy("ranking_entries", "id, ranking_id, completion_id, bucket, likert, shown_position",
             ((start["ranking_entries"] + i * k + j, start["rankings"] + i, start["completions"] + i * k + j, j, 4, j)
              for i in n for j in range(k)))
        for t in start:
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))")


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


class HttpConnection(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive client connection: one request at a time, Content-Length
    bodies (what uvicorn sends for these endpoints). httpx costs ~10x more CPU per request, and
    the load generator shares the 2 cores with the server and PostgreSQL."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data):
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return
        body = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((int(head[0].split()[1]), body))

    async def post(self, path: str, token: str, body: bytes = b"") -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), token.encode(), len(body), body)
        )
        return await self.waiter


async def connect(host: str, port: int) -> HttpConnection:
    _, conn = await asyncio.get_running_loop().create_connection(HttpConnection, host, port)
    return conn


NEXT_BODY = orjson.dumps({"kind": "ranking"})


async def labeler_loop(host, port, token, deadline, phase, *, period=None, offset=0.0):
    """One simulated labeler: next task -> submit ranking, until the deadline.

    Closed loop (period None): the next cycle starts as soon as the last one ends. Paced: cycle k
    is due at start + offset + k * period (a labeler's think time fills the rest); its "next"
    latency counts from when it was due, so a server that falls behind shows it in the latency
    (no coordinated omission)."""
    conn = await connect(host, port)
    lat, counts = phase["lat"], phase["counts"]
    start = time.perf_counter()
    due = start + offset
    try:
        while True:
            if period is not None:
                now = time.perf_counter()
                if now < due:
                    await asyncio.sleep(due - now)
                else:
                    counts["late starts"] = counts.get("late starts", 0) + 1
            if time.perf_counter() >= deadline:
                break
            t0 = due if period is not None else time.perf_counter()
            due += period or 0
            status, raw = await conn.post("/api/labeling/next", token, NEXT_BODY)
            lat["next"].append(time.perf_counter() - t0)
            a = orjson.loads(raw).get("assignment") if status == 200 else None
            if a is None:
                counts["empty"] = counts.get("empty", 0) + 1
                if status != 200:
                    counts[f"next {status}"] = counts.get(f"next {status}", 0) + 1
                await asyncio.sleep(0.05)
                continue
            ids = [x["completion_id"] for x in a["responses"]]
            body = orjson.dumps({"ranked": [[i] for i in ids], "ratings": [{"completion_id": i, "likert": 4} for i in ids]})
            t1 = time.perf_counter()
            status, _ = await conn.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking", token, body)
            lat["submit"].append(time.perf_counter() - t1)
            lat["loop"].append(time.perf_counter() - t0)
            counts[status] = counts.get(status, 0) + 1
    except ConnectionError:
        counts["transport_error"] = counts.get("transport_error", 0) + 1
    finally:
        conn.transport.close()


async def ping_loop(host, port, token, deadline, lat, counts):
    conn = await connect(host, port)
    try:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, _ = await conn.post("/api/bench/ping", token)
            lat.append(time.perf_counter() - t0)
            counts[status] = counts.get(status, 0) + 1
    except ConnectionError:
        counts["transport_error"] = counts.get("transport_error", 0) + 1
    finally:
        conn.transport.close()


def cpu_seconds(pids) -> float:
    """user+system CPU seconds of these processes (from /proc; 0 for a vanished one)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def children(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for c in (task / "children").read_text().split():
                out.extend(children(int(c)))
        except OSError:
            pass
    return out


def postgres_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == "postgres":
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


class CpuMeter:
    """CPU seconds used during a phase by the load generator, the server processes and PostgreSQL."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid

    def start(self):
        self.t0 = time.perf_counter()
        self.server = children(self.server_pid)
        self.pg = postgres_pids()
        self.c0 = (time.process_time(), cpu_seconds(self.server), cpu_seconds(self.pg), self._total())

    @staticmethod
    def _total() -> float:
        parts = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        busy = sum(int(x) for i, x in enumerate(parts) if i not in (3, 4))  # all but idle, iowait
        return busy / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        c1 = (time.process_time(), cpu_seconds(self.server), cpu_seconds(self.pg + postgres_pids()[len(self.pg):]),
              self._total())
        used = [b - a for a, b in zip(self.c0, c1)]
        return {"wall": wall, "loadgen": used[0], "server": used[1], "postgres": used[2], "machine": used[3]}


def new_phase(name: str) -> dict:
    return {"name": name, "lat": {"next": [], "submit": [], "loop": []}, "counts": {}}


async def run(host, port, tokens, admin_token, seconds, server_pid, rates):
    """Phases at the same concurrency: labelers in a closed loop (the server's capacity), labelers
    paced at each of ``rates`` rankings/s in all (latency at that load), and the trivial ping."""
    meter = CpuMeter(server_pid)
    phases = []
    closed = new_phase("labeling, closed loop")
    meter.start()
    start = time.perf_counter()
    await asyncio.gather(*(labeler_loop(host, port, t, start + seconds, closed) for t in tokens))
    closed["elapsed"], closed["cpu"] = time.perf_counter() - start, meter.stop()
    phases.append(closed)
    for r in rates:
        paced = new_phase(f"labeling, paced at {r:g}/s")
        period = len(tokens) / r  # each labeler's cycle
        meter.start()
        start = time.perf_counter()
        await asyncio.gather(*(labeler_loop(host, port, t, start + seconds, paced, period=period,
                                            offset=period * i / len(tokens)) for i, t in enumerate(tokens)))
        paced["elapsed"], paced["cpu"] = time.perf_counter() - start, meter.stop()
        phases.append(paced)
    ping = new_phase("ping, closed loop")
    meter.start()
    start = time.perf_counter()
    await asyncio.gather(*(ping_loop(host, port, admin_token, start + seconds, ping["lat"]["next"], ping["counts"])
                           for _ in tokens))
    ping["elapsed"], ping["cpu"] = time.perf_counter() - start, meter.stop()
    phases.append(ping)
    return phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labelers", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10, help="length of each phase")
    ap.add_argument("--workers", type=int, default=2, help="rlhf serve --workers")
    ap.add_argument("--tasks", type=int, default=50000, help="ranking tasks to label (enough for every phase)")
    ap.add_argument("--rate", type=float, nargs="*", default=[500, 650, 1000],
                    help="one paced phase per value: rankings/s of all labelers together (none: skip)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--history", type=int, default=20000, help="rankings of an earlier, finished round already in the database")
    ap.add_argument("--pg-socket", metavar="DIR", default=None,
                    help="the server reaches PostgreSQL through its Unix socket in DIR (e.g. /var/run/postgresql) "
                         "instead of TCP, as a server on the database's host would")
    ap.add_argument("--keep-db", action="store_true", help="keep the benchmark database afterwards (to inspect it)")
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
        db_conninfo = f"{conninfo.rsplit('dbname=', 1)[0]}dbname={name}"
        seed_history(db_conninfo, args.history, args.k)
        with psycopg.connect(db_conninfo, autocommit=True) as c:
            c.execute("ANALYZE")  # planner statistics, as a database in use has them
        port = free_port()
        server_url = url
        if args.pg_socket:
            server_url = make_url(url).set(host=None, port=None, query={"host": args.pg_socket}).render_as_string(
                hide_password=False)
        env = {**os.environ, "RLHF_DATABASE_URL": server_url, "RLHF_SECRET_KEY": secrets.token_urlsafe(48),
               "RLHF_MODE": "demo", "RLHF_PORT": str(port)}
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--workers", str(args.workers)], env=env)
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/login", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        runner = asyncio.run
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            pass
        phases = runner(run("127.0.0.1", port, tokens, admin_token, args.seconds, server.pid, args.rate))
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)

    from app.labeling.models import Batch, Ranking, Task

    factory = make_sessionmaker(make_engine(url))
    with unit_of_work(factory) as db:  # the benchmark's batch only (not the history)
        bench = db.scalar(select(Batch.id).where(Batch.name == "bench"))
        rankings = db.scalar(select(func.count()).select_from(Ranking).where(Ranking.batch_id == bench))
        subs = db.scalar(select(func.coalesce(func.sum(Task.submission_count), 0)).where(Task.batch_id == bench))
        over = db.scalar(select(func.count()).select_from(Task).where(Task.submission_count > Task.required_submissions))
        per_task = dict(db.execute(select(Ranking.task_id, func.count()).where(Ranking.batch_id == bench)
                                   .group_by(Ranking.task_id)).all())
        task_counts = dict(db.execute(select(Task.id, Task.submission_count).where(Task.batch_id == bench)).all())
        mismatched = sum(1 for tid, n in task_counts.items() if per_task.get(tid, 0) != n)
        dup = db.scalar(select(func.count()).select_from(
            select(Ranking.task_id, Ranking.labeler_id).group_by(Ranking.task_id, Ranking.labeler_id)
            .having(func.count() > 1).subquery()))
    make_engine(url).dispose()
    if args.keep_db:
        print(f"kept database {name}")
    else:
        with psycopg.connect(conninfo, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    labeling, ping = phases[:-1], phases[-1]
    created = sum(p["counts"].get(201, 0) for p in labeling)
    print(f"\nlabeling load: {args.labelers} concurrent labelers, {args.seconds:.0f} s per phase, "
          f"rlhf serve --workers {args.workers}, {os.cpu_count()} CPUs, PostgreSQL over "
          f"{'its Unix socket' if args.pg_socket else 'TCP'}, K={args.k}, {args.history} earlier rankings")
    print(f"{'phase':<28}{'request':<22}{'ok/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'requests':>10}")
    for p in labeling:
        # a paced phase's cycles were due within --seconds; its last ones end a little later
        window = p["elapsed"] if p["name"].endswith("closed loop") else args.seconds
        rps = p["counts"].get(201, 0) / window
        for label, values in (("next", p["lat"]["next"]), ("submit ranking", p["lat"]["submit"]),
                              ("next + submit", p["lat"]["loop"])):
            ok_s = len(values) / window if label == "next" else rps
            print(f"{p['name']:<28}{label:<22}{ok_s:>9.1f}{pct(values, .5):>9.1f}{pct(values, .95):>9.1f}"
                  f"{pct(values, .99):>9.1f}{len(values):>10}")
    ping_rps = ping["counts"].get(201, 0) / ping["elapsed"]
    values = ping["lat"]["next"]
    print(f"{ping['name']:<28}{'ping (INSERT+COMMIT)':<22}{ping_rps:>9.1f}{pct(values, .5):>9.1f}"
          f"{pct(values, .95):>9.1f}{pct(values, .99):>9.1f}{len(values):>10}")
    closed_rps = labeling[0]["counts"].get(201, 0) / labeling[0]["elapsed"]
    print(f"\nclosed loop: submitted rankings/s {closed_rps:.1f}, trivial INSERT+COMMIT/s {ping_rps:.1f}, "
          f"ratio {closed_rps / ping_rps:.3f}")
    for p in labeling:
        print(f"{p['name']}: status codes {p['counts']}")
    print("\nCPU seconds per second of wall time (2.0 = both cores busy):")
    print(f"{'phase':<28}{'load gen':>10}{'server':>10}{'postgres':>10}{'machine':>10}")
    for p in phases:
        c, w = p["cpu"], p["cpu"]["wall"]
        print(f"{p['name']:<28}{c['loadgen'] / w:>10.2f}{c['server'] / w:>10.2f}{c['postgres'] / w:>10.2f}"
              f"{c['machine'] / w:>10.2f}")
    ok = rankings == created == subs and over == 0 and mismatched == 0 and dup == 0
    print(f"integrity: rankings in db {rankings}, accepted submits {created}, task submission counts {subs}, "
          f"over overlap {over}, count mismatches {mismatched}, duplicates {dup} -> {'OK' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
