"""The ceiling for any Python web app on this machine: a bare ASGI app (no framework, no ORM)
doing one INSERT + COMMIT per request through a psycopg 3 async pool, served by uvicorn, under
the same closed-loop load generator as labeling_load.py (200 keep-alive clients).

It tells how much of the labeling benchmark's gap is our stack (FastAPI, sync SQLAlchemy
sessions, thread-pool hops) rather than Python, HTTP or PostgreSQL on 2 cores.

    python benchmarks/asgi_ceiling.py [--clients 200] [--seconds 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labeling_load import connect, free_port, pct  # noqa: E402

APP = '''
import os
from psycopg_pool import AsyncConnectionPool
pool = None
async def app(scope, receive, send):
    global pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                pool = AsyncConnectionPool(os.environ["CEILING_DB"], min_size=8, max_size=8, open=False)
                await pool.open()
                await send({"type": "lifespan.startup.complete"})
            else:
                await pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):
        pass
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO ping (at) VALUES (now())")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
'''

FASTAPI_APP = '''
import os
from contextlib import asynccontextmanager
from fastapi import Depends, FastAPI, Header
from psycopg_pool import AsyncConnectionPool
pool = AsyncConnectionPool(os.environ["CEILING_DB"], min_size=8, max_size=8, open=False)
@asynccontextmanager
async def lifespan(app):
    await pool.open()
    yield
    await pool.close()
app = FastAPI(lifespan=lifespan)
async def auth(authorization: str = Header("")):
    async with pool.connection() as conn:  # stands for the token lookup
        await conn.execute("SELECT 1")
    return authorization
@app.post("/ping")
async def ping(user: str = Depends(auth)):
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO ping (at) VALUES (now())")
    return {"ok": 1}
'''

VARIANTS = {
    "bare ASGI + async psycopg pool": APP,
    "FastAPI async endpoint + auth dependency (1 SELECT) + async pool": FASTAPI_APP,
}


async def load(port: int, clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        conn = await connect("127.0.0.1", port)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await conn.post("/ping", "none")
            latencies.append(time.perf_counter() - t0)
        conn.transport.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    admin = "host=127.0.0.1 user=postgres dbname=postgres"
    name = f"rlhf_ceiling_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = f"host=127.0.0.1 user=postgres dbname={name}"
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / name
    folder.mkdir()
    results = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE ping (id serial PRIMARY KEY, at timestamptz)")
        for label, source in VARIANTS.items():
            (folder / "ceiling_app.py").write_text(source)
            port = free_port()
            server = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "ceiling_app:app", "--port", str(port), "--workers",
                 str(args.workers), "--log-level", "warning", "--no-access-log"],
                cwd=folder, env={**os.environ, "CEILING_DB": dsn},
            )
            try:
                time.sleep(3)
                latencies = asyncio.run(load(port, args.clients, args.seconds))
            finally:
                server.terminate()
                server.wait(10)
            results.append((label, latencies))
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM ping").fetchone()[0]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"one INSERT + COMMIT per request, {args.clients} closed-loop clients, {args.workers} uvicorn workers")
    print(f"{'server':<66} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for label, latencies in results:
        print(f"{label:<66} {len(latencies) / args.seconds:>8.0f} {pct(latencies, 0.50):>8.1f} "
              f"{pct(latencies, 0.95):>8.1f} {pct(latencies, 0.99):>8.1f}")
    print(f"rows stored: {stored} (requests answered: {sum(len(lat) for _, lat in results)})")

if __name__ == "__main__":
    main()
