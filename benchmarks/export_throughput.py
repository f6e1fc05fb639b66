"""Export throughput: 100k rankings of K = 6 (1.5M pairs) on PostgreSQL, exported as pairwise
JSONL and Parquet at 10% and 100% of the data; prints rows/s and peak memory (RSS) per run.

    python benchmarks/export_throughput.py [--rankings 100000] [--k 6]

Builds its own fresh database (COPY through psycopg), drops it afterwards. Each export runs in a
child process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

ADMIN_URL = os.environ.get("RLHF_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BASE = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "benchmark-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def conninfo(url: str) -> str:
    u = make_url(url)
    return f"host={u.host or '127.0.0.1'} port={u.port or 5432} user={u.username or 'postgres'} dbname={u.database}"


def copy_rows(cur, table: str, columns: str, rows) -> None:
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


def build(url: str, n: int, k: int) -> None:
    from app.migrate import upgrade

    upgrade(url)
    now = "2026-11-23 10:00:00+00"
    labelers = 40
    with psycopg.connect(conninfo(url)) as conn, conn.cursor() as cur:
        copy_rows(cur, "users", "id, username, password_hash, role, labeler_group, active, session_version, created_at",
                  ((i, f"lab{i}", "x", "labeler", "heldout" if i % 10 == 0 else "train", True, 1, now) for i in range(1, labelers + 1)))
        copy_rows(cur, "batches", "id, name, kind, k, overlap_share, overlap_count, lease_minutes, priority, include_heldout, status, source, created_at",
                  [(1, "bench", "ranking", k, 0.0, 1, 30, 0, True, "closed", "app", now)])
        body = "Summarise the following paragraph about topic {} in two sentences, keeping the key facts. " * 2
        copy_rows(cur, "prompts", "id, text, source, origin_user, split, category, content_hash, scrubbed, scrubbed_kinds, status, created_at",
                  ((i, body.format(i, i), "imported", f"user{i % 500}", "train", "summarization", f"{i:064x}", False, "", "active", now)
                   for i in range(1, n + 1)))
        resp = "This is candidate response number {} for prompt {}: a reasonably sized answer of a few dozen words that a labeler would read."
        copy_rows(cur, "completions", "id, prompt_id, text, model_name, content_hash, created_at",
                  ((p * k + j, p + 1, resp.format(j, p + 1), f"model-{j % 3}", f"{p * k + j:064x}", now)
                   for p in range(n) for j in range(k)))
        copy_rows(cur, "tasks", "id, batch_id, kind, prompt_id, required_submissions, submission_count, priority, status, created_at",
                  ((i, 1, "ranking", i, 1, 1, 0, "done", now) for i in range(1, n + 1)))
        copy_rows(cur, "rankings", "id, task_id, prompt_id, labeler_id, batch_id, all_bad, comment, time_spent_s, submitted_at",
                  ((i, i, i, 1 + (i % labelers) if (i % labelers) % 10 else 2, 1, False, "", 42.0, BASE + timedelta(seconds=i))
                   for i in range(1, n + 1)))
        copy_rows(cur, "ranking_entries", "id, ranking_id, completion_id, bucket, likert",
                  ((p * k + j, p + 1, p * k + j, (j * 7 + p) % k, 1 + j) for p in range(n) for j in range(k)))
        for t in ("users", "batches", "prompts", "completions", "tasks", "rankings", "ranking_entries"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT max(id) FROM {t}))")
        conn.commit()
        cur.execute("ANALYZE")


def run_export(url: str, fmt: str, until_id: int | None, out: str, q) -> None:
    from app.datasets import export as ex
    from app.datasets.schemas import ExportFilters
    from app.db import make_engine, make_sessionmaker

    db = make_sessionmaker(make_engine(url))()
    # The first rankings by submission time (ranking i was submitted at BASE + i s): the 10% run.
    until = BASE + timedelta(seconds=until_id + 1) if until_id is not None else None
    filters = ExportFilters(labeler_group="all", until=until)
    start = time.perf_counter()
    stats, _ = ex.export_to_file(db, out, "pairwise", fmt, filters, secret=SECRET, style="plain")
    took = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put((stats.rows, took, peak_mb, os.path.getsize(out)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rankings", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=6)
    args = ap.parse_args()
    name = f"rlhf_bench_{uuid.uuid4().hex[:8]}"
    admin = conninfo(ADMIN_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        t0 = time.perf_counter()
        build(url, args.rankings, args.k)
        print(f"built {args.rankings:,} rankings of K={args.k} ({args.rankings * args.k * (args.k - 1) // 2:,} pairs) "
              f"in {time.perf_counter() - t0:.1f}s")
        ctx = mp.get_context("spawn")
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            for share in (0.1, 1.0):
                for fmt in ("jsonl", "parquet"):
                    q = ctx.Queue()
                    cut = None if share == 1.0 else int(args.rankings * share)
                    p = ctx.Process(target=run_export, args=(url, fmt, cut, f"{tmp}/out.{fmt}", q))
                    p.start()
                    rows, took, peak, size = q.get()
                    p.join()
                    results.append((f"{share:.0%}", fmt, rows, took, rows / took, peak, size / 2**20))
        print(f"\n| data | format | pairwise rows | seconds | rows/s | peak RSS MB | file MB |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for share, fmt, rows, took, rate, peak, size in results:
            print(f"| {share} | {fmt} | {rows:,} | {took:.1f} | {rate:,.0f} | {peak:.0f} | {size:.0f} |")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
