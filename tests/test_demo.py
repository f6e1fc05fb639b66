"""`rlhf demo` as a new user starts it: a fresh database, everything the loop needs, and a training
worker that never outlives the demo. Real processes; the results are read from the SQLite file."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.live_server import free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, "-m", "app.cli", "demo"]


def demo_env() -> dict[str, str]:
    """The caller's environment without RLHF_* settings (the demo makes its own), this checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", COLUMNS="200", NO_COLOR="1")
    return env


def query(database: Path, sql: str, *args):
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as con:
        return con.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    """A demo database set up once by `rlhf demo --no-serve` (the tiny model is built here)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    database = tmp_path_factory.mktemp("demo") / "demo.sqlite3"
    done = subprocess.run(DEMO + ["--no-serve", "--database", str(database)], cwd=ROOT, env=demo_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tiny-base" in done.stdout and "demo-corpus" in done.stdout
    return database


def test_no_serve_sets_up_the_whole_loop_and_a_second_start_reuses_it(demo_db):
    artifacts = demo_db.parent / "artifacts"
    [(kind, path)] = query(demo_db, "SELECT kind, path FROM models WHERE name = 'tiny-base'")
    assert kind == "base"
    weights = artifacts / path
    assert (weights / "config.json").is_file() and (weights / "model.safetensors").is_file()
    assert (weights / "tokenizer.json").is_file()

    [(ds_kind, rows, ds_path)] = query(demo_db, "SELECT kind, row_count, path FROM datasets WHERE name = 'demo-corpus'")
    assert ds_kind == "corpus" and rows >= 20 and (artifacts / ds_path).is_file()

    splits = dict(query(demo_db, "SELECT split, count(*) FROM prompts GROUP BY split"))
    assert splits.get("train", 0) >= 10 and splits.get("valid", 0) >= 1 and splits.get("test", 0) >= 1
    [(tasks,)] = query(demo_db, "SELECT count(*) FROM tasks t JOIN batches b ON b.id = t.batch_id "
                                "WHERE b.name = 'demo-demonstrations' AND t.kind = 'demonstration'")
    assert tasks == sum(splits.values())

    built = (weights / "model.safetensors").stat().st_mtime_ns
    again = subprocess.run(DEMO + ["--no-serve", "--database", str(demo_db)], cwd=ROOT, env=demo_env(),
                           capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "building" not in again.stdout and "worker   : pid" not in again.stdout  # --no-serve: no worker either
    assert (weights / "model.safetensors").stat().st_mtime_ns == built
    assert query(demo_db, "SELECT count(*) FROM models WHERE name = 'tiny-base'") == [(1,)]
    assert query(demo_db, "SELECT count(*) FROM datasets WHERE name = 'demo-corpus'") == [(1,)]
    assert dict(query(demo_db, "SELECT split, count(*) FROM prompts GROUP BY split")) == splits


def _state(pid: int) -> str | None:
    """The process state letter from /proc (Z: a zombie, as good as gone), None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_worker_dies_when_the_demo_is_killed(demo_db):
    port = free_port()
    log = demo_db.parent / "demo.out"
    with log.open("w") as out:
        demo = subprocess.Popen(DEMO + ["--port", str(port), "--database", str(demo_db)], cwd=ROOT, env=demo_env(),
                                stdout=out, stderr=subprocess.STDOUT)
    worker_pid = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert demo.poll() is None, log.read_text()
            found = re.search(r"^\s+worker\s+: pid (\d+)", log.read_text(), re.MULTILINE)
            if found:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/login", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        else:
            pytest.fail("the demo did not serve:\n" + log.read_text())
        worker_pid = int(found.group(1))
        assert _state(worker_pid) not in (None, "Z") and _ppid(worker_pid) == demo.pid
        assert "worker" in Path(f"/proc/{worker_pid}/cmdline").read_text()
        assert (demo_db.parent / "demo-worker.log").is_file()

        demo.send_signal(signal.SIGKILL)
        demo.wait(10)
        deadline = time.time() + 15
        while _state(worker_pid) not in (None, "Z") and time.time() < deadline:
            time.sleep(0.1)
        assert _state(worker_pid) in (None, "Z"), "the worker outlived the demo"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if worker_pid is not None and _state(worker_pid) not in (None, "Z"):
            os.kill(worker_pid, signal.SIGKILL)


def test_without_torch_the_demo_says_how_to_install_it_and_sets_up_labeling_only(tmp_path, monkeypatch, capsys):
    from app import demo
    from app.cli import DEMO_SEEDERS

    monkeypatch.setattr(demo, "missing_training_packages", lambda: ["torch"])
    database = tmp_path / "demo.sqlite3"
    demo.run_demo(port=free_port(), database=database, serve=False, worker=True, seeders=DEMO_SEEDERS)
    out = capsys.readouterr().out
    assert "training is off: torch not installed" in out and "bash scripts/demo" in out and "labeling only" in out
    assert query(database, "SELECT count(*) FROM models WHERE kind = 'base'") == [(0,)]
    assert query(database, "SELECT count(*) FROM tasks") != [(0,)]
    assert not (tmp_path / "artifacts" / "models").exists()
