"""`rlhf export` / `rlhf import` as a user runs them: real processes, a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from tests.conftest import TEST_SECRET
from tests.db_setup import fresh_database


def run(args, env):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_import_then_export_from_the_command_line(tmp_path):
    with fresh_database(tmp_path, "dscli") as url:
        env = {"RLHF_DATABASE_URL": url, "RLHF_SECRET_KEY": TEST_SECRET, "RLHF_ARTIFACT_DIR": str(tmp_path / "art")}
        assert run(["db", "upgrade"], env).returncode == 0
        hh = tmp_path / "hh.jsonl"
        hh.write_bytes(b"\n".join(orjson.dumps(r) for r in [
            {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."},
            {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"},
        ]))
        imported = run(["import", "hh", str(hh)], env)
        assert imported.returncode == 0, imported.stderr
        assert "read: 2" in imported.stdout and "imported: 1" in imported.stdout and "earlier turns differ: 1" in imported.stdout
        out = tmp_path / "pairs.parquet"
        exported = run(["export", "pairwise", "--out", str(out), "--freeze", "hh-v1"], env)
        assert exported.returncode == 0, exported.stderr
        assert "wrote 1 pairwise rows" in exported.stdout and out.stat().st_size > 0
        bad = tmp_path / "bad.jsonl"
        bad.write_bytes(b'{"chosen": "a"}\n')
        failed = run(["import", "hh", str(bad)], env)
        assert failed.returncode == 2 and "line 1: rejected" in failed.stderr and "Traceback" not in failed.stderr
