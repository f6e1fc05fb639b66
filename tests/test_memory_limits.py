"""Memory bound of a real server: `rlhf serve` (one process) answers an anonymous 400 MB body and an
admin's .gz upload that expands to about 1 GB within seconds, and its resident memory grows by
less than 100 MB (the peak, measured by the kernel: VmHWM after resetting it)."""

from __future__ import annotations

import gzip
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.db import make_engine, make_sessionmaker
from app.migrate import upgrade
from app.prompts.models import Prompt
from app.users import service as users
from tests.db_setup import fresh_database
from tests.factories import make_user
from tests.live_server import free_port

pytestmark = pytest.mark.slow

MB = 2**20
GROWTH_LIMIT = 100 * MB


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for {pid}")


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("memory")
    with fresh_database(tmp, "memory") as url:
        upgrade(url)
        engine = make_engine(url)
        with make_sessionmaker(engine)() as db:
            token = users.create_token(db, make_user(db, "admin"), "t")[1]
            db.commit()
        port = free_port()
        env = {**os.environ, "RLHF_DATABASE_URL": url, "RLHF_SECRET_KEY": secrets.token_urlsafe(48),
               "RLHF_ARTIFACT_DIR": str(tmp / "artifacts"), "RLHF_MODE": "production"}
        err = (tmp / "serve.err").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--workers", "1", "--port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                if proc.poll() is not None:
                    pytest.fail(f"rlhf serve exited: {(tmp / 'serve.err').read_text()}")
                try:
                    if httpx.get(f"{base}/login", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                pytest.fail("rlhf serve did not answer")
            yield base, proc.pid, {"Authorization": f"Bearer {token}"}, engine
        finally:
            proc.terminate()
            proc.wait(20)
            err.close()
            engine.dispose()


def _prompts(engine) -> int:
    with make_sessionmaker(engine)() as db:
        return db.scalar(select(func.count()).select_from(Prompt))


def _measure(pid: int, request) -> tuple[httpx.Response, float, int]:
    _reset_peak(pid)
    before = _status(pid, "VmRSS")
    started = time.monotonic()
    response = request()
    elapsed = time.monotonic() - started
    return response, elapsed, _status(pid, "VmHWM") - before


def test_anonymous_400_mb_body(server):
    base, pid, _, engine = server

    def body():  # 400 MB, made as it is sent, chunked (no Content-Length)
        piece = b"x" * MB
        for _ in range(400):
            yield piece

    with httpx.Client(timeout=60) as client:
        client.get(f"{base}/login")  # warm up
        client.cookies.clear()  # no credentials at all: 401 before the body is read
        response, elapsed, growth = _measure(pid, lambda: client.post(
            f"{base}/api/prompts/import", content=body(), headers={"content-type": "application/json"}))
        print(f"\nanonymous 400 MB chunked: {response.status_code} in {elapsed:.1f} s, peak RSS growth {growth / MB:.1f} MB")
        assert response.status_code == 401
        assert growth < GROWTH_LIMIT and elapsed < 30
        # a (made-up) session cookie: read up to the limit, then 413
        response, elapsed, growth = _measure(pid, lambda: client.post(
            f"{base}/api/prompts/import", content=body(),
            headers={"content-type": "application/json", "cookie": "rlhf_session=forged"}))
        print(f"anonymous 400 MB chunked, with a cookie: {response.status_code} in {elapsed:.1f} s, "
              f"peak RSS growth {growth / MB:.1f} MB")
        assert response.status_code == 413
        assert growth < GROWTH_LIMIT and elapsed < 30
        client.cookies.clear()
        declared, elapsed2, growth2 = _measure(pid, lambda: client.post(
            f"{base}/api/prompts/import", content=body(),
            headers={"content-type": "application/json", "content-length": str(400 * MB)}))
        print(f"anonymous 400 MB declared: {declared.status_code} in {elapsed2:.1f} s, peak RSS growth {growth2 / MB:.1f} MB")
        assert declared.status_code == 413
        assert growth2 < GROWTH_LIMIT and elapsed2 < 30
    assert _prompts(engine) == 0


def test_gz_upload_expanding_to_a_gigabyte(server, tmp_path):
    base, pid, headers, engine = server
    path = tmp_path / "bomb.jsonl.gz"
    piece = gzip.compress(b"\n" * (16 * MB), compresslevel=9)
    with path.open("wb") as f:  # 64 gzip members of 16 MiB of newlines: ~1 GiB decompressed
        for _ in range(64):
            f.write(piece)
        f.write(gzip.compress(b'{"prompt": "never imported"}\n'))
    assert path.stat().st_size < 2 * MB
    with httpx.Client(timeout=120) as client:
        with path.open("rb") as f:
            response, elapsed, growth = _measure(pid, lambda: client.post(
                f"{base}/api/datasets/import/prompts", files={"file": ("bomb.jsonl.gz", f)}, headers=headers))
    print(f"\n1 GiB .gz upload: {response.status_code} in {elapsed:.1f} s, peak RSS growth {growth / MB:.1f} MB; "
          f"{response.json()['detail']}")
    assert response.status_code == 413
    assert response.json()["errors"][0]["field"] == "file"
    assert growth < GROWTH_LIMIT and elapsed < 60
    assert _prompts(engine) == 0
