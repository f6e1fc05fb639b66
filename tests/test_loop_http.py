"""The whole loop inside the product, as users run it: `rlhf serve` and `rlhf worker` as
subprocesses on a fresh PostgreSQL database, driven only through the HTTP API.

prompts -> demonstrations -> frozen SFT dataset -> SFT from a registered tiny base -> a generate
run builds a ranking batch -> labelers rank -> frozen comparisons -> RM -> PPO-ptx with an
uploaded .txt corpus -> the PPO policy's samples become round 2. At the end the registry shows
base -> SFT -> RM -> PPO with their datasets and metrics, and no path was typed anywhere.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.migrate import upgrade
from tests.conftest import TEST_SECRET
from tests.db_setup import backend, fresh_database
from tests.live_server import free_port

pytest.importorskip("torch")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres_only,
    pytest.mark.skipif(backend() != "postgres", reason="the loop test runs on PostgreSQL, as deployments do"),
]

RLHF = [sys.executable, "-m", "app.cli"]
TINY = {"hidden_size": 32, "num_layers": 1, "intermediate_size": 64}


def rlhf(env: dict, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([*RLHF, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"rlhf {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def product(tmp_path_factory) -> Iterator[dict]:
    """A migrated database, an admin and two labelers with API tokens, `rlhf serve` and `rlhf worker`."""
    tmp = tmp_path_factory.mktemp("loop")
    with fresh_database(tmp, "loop") as url:
        env = {**os.environ, "RLHF_DATABASE_URL": url, "RLHF_SECRET_KEY": TEST_SECRET,
               "RLHF_ARTIFACT_DIR": str(tmp / "artifacts"), "TRAINERS_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
        upgrade(url)
        tokens = {}
        for username, role, group in (("admin", "admin", "train"), ("ann", "labeler", "train"), ("bob", "labeler", "train"),
                                      ("hana", "labeler", "heldout"), ("hugo", "labeler", "heldout")):
            rlhf(env, "users", "create", "--username", username, "--role", role, "--group", group, "--password-stdin",
                 stdin="pw-" + "x" * 20 + "\n")
            tokens[username] = rlhf(env, "tokens", "create", "--username", username).strip().split()[-1]
        port = free_port()
        logs = {name: (tmp / f"{name}.log").open("w") for name in ("serve", "worker")}
        serve = subprocess.Popen([*RLHF, "serve", "--port", str(port), "--workers", "1"], env=env,
                                 stdout=logs["serve"], stderr=subprocess.STDOUT)
        worker = subprocess.Popen([*RLHF, "worker", "--poll", "0.5"], env=env, stdout=logs["worker"], stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/login", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            clients = {u: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {t}"}, timeout=30) for u, t in tokens.items()}
            yield {"clients": clients, "tmp": tmp, "logs": logs, "url": url}
        finally:
            for process in (worker, serve):
                process.terminate()
            for process in (worker, serve):
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()


def ok(response: httpx.Response, status: int = 200) -> dict | list:
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
    return response.json()


def run_to_end(admin: httpx.Client, body: dict, product: dict, timeout_s: float = 240) -> dict:
    """Queue a run through the API and wait for the worker to finish it."""
    return wait_for_run(admin, ok(admin.post("/api/runs", json=body), 201), product, timeout_s)


def wait_for_run(admin: httpx.Client, run: dict, product: dict, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = ok(admin.get(f"/api/runs/{run['id']}"))
        if run["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    product["logs"]["worker"].flush()
    assert run["status"] == "succeeded", f"run {run['id']} ({run['kind']}) {run['status']}: {run['message']}\n" + \
        (product["tmp"] / "worker.log").read_text()[-3000:]
    return run


def label_demonstrations(labeler: httpx.Client) -> int:
    done = 0
    while (a := ok(labeler.post("/api/labeling/next", json={"kind": "demonstration"}))["assignment"]) is not None:
        text = f"Here is a short, helpful answer to: {a['prompt']['text'][:40]}"
        ok(labeler.post(f"/api/labeling/assignments/{a['assignment_id']}/demonstration", json={"text": text}), 201)
        done += 1
    return done


def rank_everything(labeler: httpx.Client, rng: random.Random) -> int:
    done = 0
    while (a := ok(labeler.post("/api/labeling/next", json={"kind": "ranking"}))["assignment"]) is not None:
        ids = [r["completion_id"] for r in a["responses"]]
        rng.shuffle(ids)
        body = {"ranked": [[i] for i in ids], "ratings": [{"completion_id": i, "likert": 7 - n} for n, i in enumerate(ids)]}
        ok(labeler.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking", json=body), 201)
        done += 1
    return done


def test_the_loop_turns_through_the_http_api(product):
    admin, ann, bob = (product["clients"][u] for u in ("admin", "ann", "bob"))
    rng = random.Random(0)

    # 0. a tiny base model, built offline by an init-tiny run and registered by the worker
    run_to_end(admin, {"kind": "init-tiny", "name": "tiny base", "output_name": "tiny-base", "options": TINY}, product)

    # 1. prompts, 2. demonstrations by labelers
    records = [{"prompt": f"Describe colour number {i} in one short sentence.", "origin_user": f"customer-{i % 7}",
                "category": "generation"} for i in range(14)]
    summary = ok(admin.post("/api/prompts/import", json={"records": records}), 201)
    assert summary["imported"] == 14
    ok(admin.post("/api/labeling/batches", json={"name": "demos", "kind": "demonstration"}), 201)
    assert label_demonstrations(ann) + label_demonstrations(bob) == 14

    # 3. freeze an SFT dataset and fine-tune the registered base on it
    ok(admin.post("/api/datasets", json={"kind": "sft", "name": "sft-data-1"}), 201)
    sft_run = run_to_end(admin, {"kind": "sft", "name": "sft 1", "output_name": "sft-1",
                                 "inputs": {"model": "tiny-base", "data": "sft-data-1"},
                                 "options": {"epochs": 2, "batch_size": 4, "max_length": 64}}, product)
    assert sft_run["output_model"] == "sft-1"

    # 4. a generate run samples from the SFT policy and builds the ranking batch itself
    gen = run_to_end(admin, {"kind": "generate", "name": "round 1", "inputs": {"model": ["sft-1"]},
                             "options": {"split": "train", "k": 4, "batch_name": "round-1", "max_new_tokens": 12}}, product)
    assert gen["output_batch_id"] is not None
    batches = {b["name"]: b for b in ok(admin.get("/api/labeling/batches"))}
    assert batches["round-1"]["tasks"] >= 5

    # 5. labelers rank
    assert rank_everything(ann, rng) + rank_everything(bob, rng) == batches["round-1"]["tasks"]

    # 6. freeze comparisons, train the RM, upload a .txt corpus, PPO-ptx
    ok(admin.post("/api/datasets", json={"kind": "comparisons", "name": "cmp-1"}), 201)
    ok(admin.post("/api/datasets", json={"kind": "prompts", "name": "ppo-prompts-1"}), 201)
    run_to_end(admin, {"kind": "rm", "name": "rm 1", "output_name": "rm-1", "inputs": {"model": "sft-1", "data": "cmp-1"},
                       "options": {"epochs": 1, "batch_size": 2, "max_length": 64, "valid_fraction": 0.3}}, product)
    corpus = "\n\n".join(f"Document {i}. The sea is wide and the sky is blue.\nA second line of text {i}." for i in range(20))
    uploaded = ok(admin.post("/api/datasets/corpus", params={"name": "corpus-1"},
                             files={"file": ("pretrain.txt", corpus.encode(), "text/plain")}), 201)
    assert uploaded["kind"] == "corpus" and uploaded["row_count"] == 20
    run_to_end(admin, {"kind": "ppo", "name": "ppo 1", "output_name": "ppo-1",
                       "inputs": {"policy": "sft-1", "reward_model": "rm-1", "prompts": "ppo-prompts-1", "pretrain_data": "corpus-1"},
                       "options": {"steps": 2, "rollout_batch_size": 4, "minibatch_size": 2, "generation_batch_size": 4,
                                   "max_new_tokens": 8, "ptx_coef": 1.0, "ptx_batch_size": 2, "ptx_max_length": 32,
                                   "eval_prompts": 4}}, product)

    # 7. the new policy's samples go back to the labelers
    round2 = run_to_end(admin, {"kind": "generate", "name": "round 2", "inputs": {"model": ["ppo-1"]},
                                "options": {"split": "train", "k": 4, "batch_name": "round-2", "max_new_tokens": 12, "priority": 5}},
                        product)
    assert round2["output_batch_id"] is not None, round2["message"]
    task = ok(ann.post("/api/labeling/next", json={"kind": "ranking"}))["assignment"]
    assert task is not None and len(task["responses"]) == 4
    assert "ppo-1" not in str(task)  # labelers never see which model wrote a response

    # the registry shows base -> SFT -> RM -> PPO with datasets and metrics
    models = {m["name"]: m for m in ok(admin.get("/api/models"))}
    assert {"tiny-base", "sft-1", "rm-1", "ppo-1"} <= set(models)
    ppo = ok(admin.get(f"/api/models/{models['ppo-1']['id']}"))
    assert ppo["model"]["kind"] == "ppo" and {"eval/reward", "eval/kl"} <= set(ppo["metrics"])
    parents = {role: node for role, node in ppo["parents"]}
    assert parents["policy"]["model"]["name"] == "sft-1" and parents["reward_model"]["model"]["name"] == "rm-1"
    assert {d["name"] for d in ppo["datasets"]} == {"ppo-prompts-1", "corpus-1"}
    assert all(d["checked_sha256"] == d["sha256"] for d in ppo["datasets"])
    sft = parents["policy"]
    assert sft["metrics"] and [(r, n["model"]["name"]) for r, n in sft["parents"]] == [("model", "tiny-base")]
    assert sft["datasets"][0]["name"] == "sft-data-1"
    rm = parents["reward_model"]
    assert "valid/accuracy" in rm["metrics"] and rm["parents"][0][1]["model"]["name"] == "sft-1"
    # every run's config holds trainer options only; the paths were filled in by the worker
    for run in ok(admin.get("/api/runs")):
        assert not any(isinstance(v, str) and "/" in v for v in run["config"].values()), run["config"]
    assert Path(product["tmp"] / "artifacts" / "runs").is_dir()


def judge_blind(judge: httpx.Client, engine, prefer: str, rng: random.Random, p_prefer: float, limit: int) -> int:
    """A scripted evaluator who prefers the responses of model ``prefer`` with probability
    ``p_prefer``. The page and API show texts only; the script looks the model up in the database."""
    from sqlalchemy import text

    done = 0
    while done < limit and (a := ok(judge.post("/api/labeling/next", json={"kind": "ranking"}))["assignment"]) is not None:
        ids = [r["completion_id"] for r in a["responses"]]
        if len(ids) != 2:  # the evaluation tasks (priority 10) are done; this is round 2's ranking work
            break
        with engine.connect() as conn:
            names = dict(conn.execute(text("SELECT id, model_name FROM completions WHERE id = ANY(:ids)"), {"ids": ids}).all())
        fav = next(i for i in ids if names[i] == prefer)
        other = next(i for i in ids if i != fav)
        ranked = [[fav], [other]] if rng.random() < p_prefer else [[other], [fav]]
        ok(judge.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking",
                      json={"ranked": ranked, "ratings": [{"completion_id": fav, "likert": 6}, {"completion_id": other, "likert": 4}]}),
           201)
        done += 1
    return done


def test_blind_evaluation_of_the_sft_and_ppo_policies(product):
    """Held-out prompts, held-out judges with a known preference: the reported win rate's
    interval holds the scripted rate, and narrows as more tasks are judged."""
    from sqlalchemy import create_engine

    from app.prompts.models import Split
    from app.prompts.service import split_for_origin_user

    admin, hana, hugo, ann = (product["clients"][u] for u in ("admin", "hana", "hugo", "ann"))
    customers = [u for u in (f"held-out-customer-{i}" for i in range(1000)) if split_for_origin_user(u) == Split.test][:40]
    records = [{"prompt": f"Question {i} from a held-out customer: name a fruit and its colour.", "origin_user": u,
                "category": "open_qa" if i % 2 else "brainstorming"} for i, u in enumerate(customers)]
    assert ok(admin.post("/api/prompts/import", json={"records": records}), 201)["imported"] == 40
    bad = admin.post("/api/evals", json={"name": "bad", "models": ["sft-1"]})
    assert bad.status_code == 422
    created = ok(admin.post("/api/evals", json={"name": "ppo-1 vs sft-1", "models": ["sft-1", "ppo-1"], "overlap_share": 0.25,
                                                "overlap_count": 2, "options": {"max_new_tokens": 8}}), 201)
    assert created["baseline"] == "sft-1" and created["batch_id"] is None
    wait_for_run(admin, {"id": created["run_id"]}, product)
    evaluation = ok(admin.get(f"/api/evals/{created['id']}"))
    n = evaluation["tasks"]  # the 40 held-out prompts, and any earlier prompt of the test split
    assert n >= 40 and evaluation["judgments"] == 0
    # a training-group labeler is never offered the blind comparisons
    offered = ann.post("/api/labeling/next", json={"kind": "ranking"}).json()["assignment"]
    assert offered is None or len(offered["responses"]) == 4

    engine = create_engine(product["url"])
    rng = random.Random(3)
    try:
        judge_blind(hana, engine, "ppo-1", rng, 0.75, limit=12)
        early = ok(admin.get(f"/api/evals/{created['id']}"))
        judge_blind(hana, engine, "ppo-1", rng, 0.75, limit=100)
        judge_blind(hugo, engine, "ppo-1", rng, 0.75, limit=100)
    finally:
        engine.dispose()
    final = ok(admin.get(f"/api/evals/{created['id']}"))
    assert final["tasks_done"] == n and final["judgments"] == n + round(0.25 * n)  # a quarter judged twice
    ppo_early = next(s for s in early["models"] if s["model"] == "ppo-1")["win_rate"]
    ppo = next(s for s in final["models"] if s["model"] == "ppo-1")["win_rate"]
    low, high = ppo["ci"]
    assert low <= 0.75 <= high, ppo
    assert high - low < ppo_early["ci"][1] - ppo_early["ci"][0], (ppo_early, ppo)
    assert {"open_qa", "brainstorming"} <= set(final["categories"])
    assert final["agreement"]["pairs"] >= 1
    csv_rows = admin.get(f"/api/evals/{created['id']}", params={"format": "csv"}).text.splitlines()
    assert len(csv_rows) == 1 + 2 * (1 + len(final["categories"]))  # header, both models overall and per category
    page = admin.get(f"/evals/{created['id']}")
    assert page.status_code == 200 and 'id="win-chart"' in page.text
