"""Blind evaluations: creation (validated, a generate run queued), the evaluation batch (held-out
judges, kept out of training exports), and results (win rates with bootstrap intervals)."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import select

from app.datasets.export import export_to_file
from app.datasets.schemas import ExportFilters
from app.errors import AppError
from app.evals import service
from app.evals.models import Evaluation
from app.labeling.assignment import lease_next
from app.labeling.models import Batch, TaskKind
from app.labeling.ranking import RankingInput, submit_ranking
from app.runs import launch
from app.runs.models import Run
from tests.factories import PASSWORD, make_model, make_prompt, make_user


@pytest.fixture
def policies(db, settings):
    return make_model(db, settings, kind="sft", name="sft-a"), make_model(db, settings, kind="ppo", name="ppo-b")


def _sample(db, settings, evaluation: Evaluation, texts=lambda model, prompt: f"{model} answers {prompt}") -> Batch:
    """What the worker does for the evaluation's generate run: prepare, trainer output, complete."""
    run = db.get(Run, evaluation.run_id)
    folder = settings.artifact_dir / "runs" / str(run.id)
    folder.mkdir(parents=True)
    config = json.loads(launch.prepare(db, settings, run, folder).read_text())
    assert config["k"] == 1  # one response per model and prompt
    prompts = [json.loads(line) for line in open(config["prompts"])]
    rows = [{"prompt_id": p["prompt_id"], "prompt": p["prompt"], "completion": texts(name, p["prompt_id"]), "model": name}
            for name in config["model_name"].split(",") for p in prompts]
    out = launch.output_dir(folder)
    out.mkdir()
    (out / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    launch.complete(db, settings, run, folder)
    return db.get(Batch, evaluation.batch_id)


def _judge(db, settings, judge, prefer: str, rng: random.Random, p_prefer: float, tie_rate: float = 0.0) -> int:
    """A scripted evaluator: prefers the model named ``prefer`` with probability ``p_prefer``."""
    from app.prompts.models import Completion

    done = 0
    while (view := lease_next(db, judge, TaskKind.ranking)) is not None:
        ids = [r["completion_id"] for r in view["responses"]]
        names = {c.id: c.model_name for c in db.scalars(select(Completion).where(Completion.id.in_(ids)))}
        fav = next(i for i in ids if names[i] == prefer)
        other = next(i for i in ids if i != fav)
        roll = rng.random()
        ranked = [[fav, other]] if roll < tie_rate else ([[fav], [other]] if roll < tie_rate + p_prefer * (1 - tie_rate) else [[other], [fav]])
        submit_ranking(db, view["assignment_id"], judge, RankingInput(ranked=ranked, likert={fav: 6, other: 3},
                       flags={other: ["hallucination"]}), settings=settings)
        done += 1
    return done


def test_a_bad_evaluation_is_refused_and_nothing_is_queued(db, settings, policies):
    make_prompt(db, "Held-out prompt.", split="test")
    cases = [
        (service.EvalRequest(name="one", models=["sft-a"]), "models"),
        (service.EvalRequest(name="base", models=["sft-a", "ppo-b"], baseline="nope"), "baseline"),
        (service.EvalRequest(name="", models=["sft-a", "ppo-b"]), "name"),
        (service.EvalRequest(name="cat", models=["sft-a", "ppo-b"], category="chat"), "split"),
    ]
    for request, field in cases:
        with pytest.raises(AppError) as err:
            service.create_evaluation(db, settings, request)
        assert err.value.status_code == 422 and err.value.field == field, err.value.message
    assert db.scalar(select(Run.id)) is None and db.scalar(select(Evaluation.id)) is None


def test_held_out_judges_prefer_one_model_and_the_win_rate_says_so(db, settings, policies):
    for i in range(30):
        make_prompt(db, f"Held-out question {i}?", split="test", origin_user=f"cust-{i}")
    make_prompt(db, "A training prompt.", split="train")
    evaluation = service.create_evaluation(db, settings, service.EvalRequest(
        name="ppo vs sft", models=["sft-a", "ppo-b"], overlap_share=0.2, overlap_count=2))
    assert service.results(db, evaluation)["batch_id"] is None
    batch = _sample(db, settings, evaluation)
    assert batch.purpose == "evaluation" and batch.heldout_only and batch.k == 2
    train_labeler = make_user(db, "labeler")
    assert lease_next(db, train_labeler, TaskKind.ranking) is None  # judged by held-out labelers only

    rng = random.Random(7)
    judges = [make_user(db, "labeler", group="heldout") for _ in range(2)]
    _judge(db, settings, judges[0], "ppo-b", rng, p_prefer=0.8, tie_rate=0.1)
    _judge(db, settings, judges[1], "ppo-b", rng, p_prefer=0.8, tie_rate=0.1)
    res = service.results(db, evaluation)
    assert res["tasks_done"] == res["tasks"] == 30 and res["judgments"] == 36
    ppo = next(s for s in res["models"] if s["model"] == "ppo-b")
    sft = next(s for s in res["models"] if s["model"] == "sft-a")
    assert "win_rate" not in sft  # the baseline
    low, high = ppo["win_rate"]["ci"]
    assert low <= ppo["win_rate"]["value"] <= high and low > 0.5  # clearly better than the baseline
    assert ppo["likert"]["value"] > sft["likert"]["value"]
    assert sft["flag_rates"]["hallucination"] > ppo["flag_rates"]["hallucination"]
    assert 1 <= res["agreement"]["tasks"] <= 6 and res["agreement"]["pairs"] >= 1  # 6 shared tasks; ties give no pair
    csv_text = service.results_csv(res)
    assert csv_text.splitlines()[0].startswith("evaluation,category,model") and "ppo-b" in csv_text

    # evaluation judgments stay out of training exports unless asked for
    secret = settings.require_secret()
    path = settings.artifact_dir / "cmp.jsonl"
    stats, _ = export_to_file(db, path, "comparisons", "jsonl", ExportFilters(labeler_group="all"), secret=secret)
    assert stats.rows == 0
    stats, _ = export_to_file(db, path, "comparisons", "jsonl", ExportFilters(labeler_group="all", include_evaluations=True),
                              secret=secret)
    assert stats.rows == 36


def test_ties_count_half_and_the_interval_narrows_with_more_prompts(db, settings, policies):
    from app.evals.service import Judgment, _rate, _win_units

    a, b = policies
    def judgments(n):
        out = []
        for p in range(n):  # per prompt: one win, one tie, one loss -> 50%
            out += [Judgment(p, "other", 1, {a.id: 1, b.id: 0}, {}, {}), Judgment(p, "other", 2, {a.id: 0, b.id: 0}, {}, {}),
                    Judgment(p, "other", 3, {a.id: 0, b.id: 1}, {}, {})]
        out += [Judgment(n + p, "other", 1, {a.id: 1, b.id: 0}, {}, {}) for p in range(n // 4)]  # and some clean wins
        return out
    small, large = (_rate(_win_units(judgments(n), b.id, a.id), reps=500, seed=1) for n in (8, 80))
    assert small["value"] == pytest.approx(large["value"]) == pytest.approx((8 * 3 + 2 * 2) / (8 * 6 + 2 * 2))
    assert (large["ci"][1] - large["ci"][0]) < (small["ci"][1] - small["ci"][0])


def test_pages_and_api_show_results_to_admins_and_researchers_only(client, db, settings, policies):
    for i in range(4):
        make_prompt(db, f"Held-out question {i}?", split="test", origin_user=f"c{i}")
    admin, researcher = make_user(db, "admin"), make_user(db, "researcher")
    client.login(admin.username, PASSWORD)
    bad = client.post_form("/evals", {"name": "x", "models": [str(policies[0].id)]})
    assert bad.status_code == 422 and "2 to 9 models" in bad.text
    ok = client.post_form("/evals", {"name": "page eval", "models": [str(policies[0].id), str(policies[1].id)],
                                     "heldout_only": "1", "split": "test"})
    assert ok.status_code == 303
    evaluation = db.scalar(select(Evaluation).where(Evaluation.name == "page eval"))
    pending = client.get(ok.headers["location"])
    assert pending.status_code == 200 and 'id="eval-pending"' in pending.text
    _sample(db, settings, evaluation)
    judge = make_user(db, "labeler", group="heldout")
    _judge(db, settings, judge, "ppo-b", random.Random(1), p_prefer=1.0)
    page = client.get(f"/evals/{evaluation.id}")
    assert page.status_code == 200 and 'id="win-chart"' in page.text and 'class="win-bar"' in page.text
    assert "100.0%" in page.text  # ppo-b won every judgment
    client.post_form("/logout")
    client.login(researcher.username, PASSWORD)
    body = client.get(f"/api/evals/{evaluation.id}").json()
    assert body["models"][1]["win_rate"]["value"] == 1.0
    assert client.get(f"/api/evals/{evaluation.id}?format=csv").headers["content-type"].startswith("text/csv")
    assert client.post("/api/evals", json={"name": "r", "models": ["sft-a", "ppo-b"]},
                       headers={"X-CSRF-Token": client.csrf()}).status_code == 403
    client.post_form("/logout")
    client.login(judge.username, PASSWORD)
    assert client.get(f"/api/evals/{evaluation.id}").status_code == 403


def test_a_train_labeler_is_not_told_to_wait_for_evaluation_tasks_held_by_judges(db, settings, policies):
    from app.labeling.assignment import next_or_why

    make_prompt(db, "Held-out question?", split="test")
    evaluation = service.create_evaluation(db, settings, service.EvalRequest(name="busy", models=["sft-a", "ppo-b"]))
    _sample(db, settings, evaluation)
    judge, trainee = make_user(db, "labeler", group="heldout"), make_user(db, "labeler")
    assert lease_next(db, judge, TaskKind.ranking) is not None  # the only task, now held
    view, why = next_or_why(db, trainee, TaskKind.ranking)
    assert view is None and why == "No ranking tasks are waiting for you right now."
    view, why = next_or_why(db, make_user(db, "labeler", group="heldout"), TaskKind.ranking)
    assert view is None and "1 task is being worked on" in why
