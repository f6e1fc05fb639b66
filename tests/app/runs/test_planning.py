"""Runs launched from registered models and frozen datasets: validated when created (422 naming
the field, nothing queued), resolved to files by the worker, and generate runs that feed labelers."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select

from app.datasets.frozen import store_corpus
from app.errors import AppError, Conflict, InvalidInput
from app.labeling.models import Batch, TaskItem
from app.prompts.models import Completion
from app.registry import service as registry
from app.runs import launch
from app.runs.models import Run
from app.runs.planning import RunRequest, launch_run
from tests.factories import PASSWORD, make_frozen, make_model, make_prompt, make_user


def _runs(db) -> int:
    return db.scalar(select(func.count()).select_from(Run))


@pytest.fixture
def loop(db, settings):
    """A base model, an SFT model, an RM, and frozen sft / comparisons / prompts datasets."""
    make_prompt(db, "Name a colour.", split="train")
    return {
        "base": make_model(db, settings, name="base-1"), "sft": make_model(db, settings, kind="sft", name="sft-1"),
        "rm": make_model(db, settings, kind="rm", name="rm-1"), "sft_data": make_frozen(db, settings, "sft", name="demos"),
        "comparisons": make_frozen(db, settings, "comparisons", name="cmp"), "prompts": make_frozen(db, settings, "prompts", name="ppo-prompts"),
    }


@pytest.mark.parametrize("request_, field, message", [
    (RunRequest(kind="sft", inputs={"model": "base-1", "data": "demos"}, options={"epochs": "two"}), "epochs", "expected int"),
    (RunRequest(kind="sft", inputs={"model": "base-1", "data": "demos"}, options={"learning_rate": 1}), "learning_rate", "Unknown option"),
    (RunRequest(kind="sft", inputs={"model": "base-1", "data": "demos"}, options={"out": "/tmp/x"}), "out", "set by the worker"),
    (RunRequest(kind="sft", inputs={"model": "base-1", "data": "demos"}, options={"data": "/data/sft.jsonl"}), "data", "not a path"),
    (RunRequest(kind="sft", inputs={"model": "base-1"}), "data", "choose a sft dataset"),
    (RunRequest(kind="sft", inputs={"model": "no-such-model", "data": "demos"}), "model", "No registered model"),
    (RunRequest(kind="sft", inputs={"model": "base-1", "data": "cmp"}), "data", "holds comparisons rows"),
    (RunRequest(kind="rm", inputs={"model": "rm-1", "data": "demos"}), "data", "needs a comparisons or pairwise dataset"),
    (RunRequest(kind="ppo", inputs={"policy": "rm-1", "reward_model": "rm-1", "prompts": "ppo-prompts"}), "policy", "is a rm model"),
    (RunRequest(kind="ppo", inputs={"policy": "sft-1", "reward_model": "rm-1", "prompts": "ppo-prompts"}), "pretrain_data", "ptx_coef > 0 needs"),
    (RunRequest(kind="sft", inputs={"model": "base-1", "data": "demos", "prompts": "ppo-prompts"}), "prompts", "has no input"),
    (RunRequest(kind="sft", inputs={"model": "base-1", "data": "demos"}, options={"epochs": 0}), "epochs", "at least 1"),
    (RunRequest(kind="generate", inputs={"model": ["sft-1"]}, options={"k": 12}), "k", "less than or equal to 9"),
    (RunRequest(kind="generate", inputs={"model": ["sft-1"]}, options={"split": "test"}), "split", "No active prompts"),
    (RunRequest(kind="generate", inputs={"model": ["sft-1", "rm-1"]}), "model", "is a rm model"),
    (RunRequest(kind="dpo"), "kind", "Unknown run kind"),
])
def test_a_bad_run_is_refused_with_its_field_and_nothing_is_queued(db, settings, loop, request_, field, message):
    with pytest.raises(AppError, match=message) as err:
        launch_run(db, settings, request_)
    assert err.value.status_code == 422 and err.value.field == field
    assert _runs(db) == 0


def test_output_names_are_unique(db, settings, loop):
    with pytest.raises(Conflict, match="already registered"):
        launch_run(db, settings, RunRequest(kind="sft", inputs={"model": "base-1", "data": "demos"}, output_name="sft-1"))


def test_a_valid_run_keeps_typed_options_and_its_inputs(db, settings, loop):
    run = launch_run(db, settings, RunRequest(
        kind="ppo", name="ppo v1", inputs={"policy": "sft-1", "reward_model": str(loop["rm"].id), "prompts": "ppo-prompts",
                                           "pretrain_data": "demos"},
        options={"steps": "3", "ptx_coef": "1.5"}))
    assert run.config == {"steps": 3, "ptx_coef": 1.5} and run.output_name == f"ppo-{run.id}"
    folder = settings.artifact_dir / "runs" / str(run.id)
    folder.mkdir(parents=True)
    config = json.loads(launch.prepare(db, settings, run, folder).read_text())
    assert config["policy"].endswith("models/sft-1") and config["reward_model"].endswith("models/rm-1")
    assert config["pretrain_data"].endswith(loop["sft_data"].path) and config["out"] == str(folder / "output")
    assert config["resume"] is True


def test_a_dataset_file_changed_since_freezing_stops_the_run_at_claim(db, settings, loop):
    run = launch_run(db, settings, RunRequest(kind="sft", inputs={"model": "base-1", "data": "demos"}))
    (settings.artifact_dir / loop["sft_data"].path).write_text('{"prompt": "tampered", "completion": "x"}\n')
    folder = settings.artifact_dir / "runs" / str(run.id)
    folder.mkdir(parents=True)
    with pytest.raises(launch.InputError, match="changed since it was frozen"):
        launch.prepare(db, settings, run, folder)


def test_generate_from_two_policies_mixes_them_in_every_ranking_task(db, settings, loop):
    prompts = [make_prompt(db, f"Write a line about the sea ({i}).", split="test") for i in range(3)]
    run = launch_run(db, settings, RunRequest(
        kind="generate", name="round 2", inputs={"model": ["sft-1", "base-1"]},
        options={"split": "test", "k": 4, "temperature": "0.7", "batch_name": "round-2"}))
    folder = settings.artifact_dir / "runs" / str(run.id)
    folder.mkdir(parents=True)
    config = json.loads(launch.prepare(db, settings, run, folder).read_text())
    assert config["model_name"] == "sft-1,base-1" and config["k"] == 3 and config["temperature"] == 0.7
    written = [json.loads(line) for line in open(config["prompts"])]
    assert [r["prompt_id"] for r in written] == [p.id for p in prompts]
    # what the trainer writes: k samples per prompt from each model, in turn
    out = launch.output_dir(folder)
    out.mkdir()
    rows = [{"prompt_id": p.id, "prompt": p.text, "completion": f"{name} says {j} about {p.id}", "model": name}
            for name in ("sft-1", "base-1") for p in prompts for j in range(3)]
    (out / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    message = launch.complete(db, settings, run, folder)
    assert "imported 18 completions" in message and "3 tasks of K=4" in message
    batch = db.get(Batch, run.output_batch_id)
    assert batch.name == "round-2" and batch.k == 4
    for task in batch_tasks(db, batch.id):
        models = [c.model_id for c in task]
        assert sorted(models) == sorted([loop["sft"].id, loop["base"].id] * 2)


def batch_tasks(db, batch_id):
    from app.labeling.models import Task

    for task in db.scalars(select(Task).where(Task.batch_id == batch_id)):
        yield db.scalars(select(Completion).join(TaskItem, TaskItem.completion_id == Completion.id)
                         .where(TaskItem.task_id == task.id)).all()


def test_run_form_shows_typed_options_and_a_bad_option_gets_its_field_error(client, db, settings, loop):
    admin = make_user(db, "admin")
    client.login(admin.username, PASSWORD)
    form = client.get(f"/runs/new?kind=sft&model={loop['base'].id}")
    assert form.status_code == 200
    assert 'name="opt.epochs"' in form.text and 'placeholder="3"' in form.text  # the trainer's default
    assert "Advanced options" in form.text and 'name="opt.out"' not in form.text
    assert f'<option value="{loop["base"].id}" selected>' in form.text
    bad = client.post_form("/runs", {"kind": "sft", "input.model": str(loop["base"].id), "input.data": str(loop["sft_data"].id),
                                     "opt.epochs": "lots"})
    assert bad.status_code == 422 and 'id="error-epochs"' in bad.text and 'value="lots"' in bad.text
    assert _runs(db) == 0
    ok = client.post_form("/runs", {"kind": "sft", "name": "from form", "input.model": str(loop["base"].id),
                                    "input.data": str(loop["sft_data"].id), "opt.epochs": "2", "opt.lr": ""})
    assert ok.status_code == 303
    run = db.scalar(select(Run).where(Run.name == "from form"))
    assert run.config == {"epochs": 2}
    page = client.get(f"/runs/{run.id}")
    assert page.status_code == 200 and "demos" in page.text and "base-1" in page.text and 'role="progressbar"' in page.text


def test_api_launches_from_names_and_refuses_bad_options_with_422(client, db, settings, loop):
    admin = make_user(db, "admin")
    client.login(admin.username, PASSWORD)
    headers = {"X-CSRF-Token": client.csrf()}
    bad = client.post("/api/runs", json={"kind": "rm", "inputs": {"model": "sft-1", "data": "cmp"}, "options": {"epochs": 1.5}},
                      headers=headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "epochs"
    ok = client.post("/api/runs", json={"kind": "rm", "inputs": {"model": "sft-1", "data": "cmp"}, "options": {"epochs": 2},
                                        "output_name": "rm-2"}, headers=headers)
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert body["output_name"] == "rm-2" and body["config"] == {"epochs": 2}
    assert {(i["role"], i["model"] or i["dataset"]) for i in body["inputs"]} == {("model", "sft-1"), ("data", "cmp")}
    kinds = client.get("/api/runs/kinds").json()
    assert {o["name"] for o in kinds["rm"]["options"]} >= {"epochs", "lr"} and kinds["ppo"]["inputs"][0]["role"] == "policy"
    with pytest.raises(InvalidInput):  # the service refuses the same thing the API does
        launch_run(db, settings, RunRequest(kind="rm", inputs={"model": "sft-1", "data": "cmp"}, options={"epochs": 1.5}))


def test_an_automatic_evaluation_run_records_its_results_in_the_registry(db, settings, loop):
    corpus = store_corpus(db, settings, name="held-out-text", filename="text.txt", stream=io.BytesIO(b"one doc\n\nanother doc\n"))
    with pytest.raises(InvalidInput, match="nothing to evaluate"):
        launch_run(db, settings, RunRequest(kind="eval", inputs={"model": ["sft-1"]}))
    run = launch_run(db, settings, RunRequest(
        kind="eval", name="alignment tax", inputs={"model": ["sft-1", "base-1"], "reward_model": "rm-1", "prompts": "ppo-prompts",
                                                   "corpus": corpus.name, "comparisons": "cmp", "reference": "sft-1"},
        options={"max_new_tokens": 16}))
    folder = settings.artifact_dir / "runs" / str(run.id)
    folder.mkdir(parents=True)
    config = json.loads(launch.prepare(db, settings, run, folder).read_text())
    assert config["model_name"] == "sft-1,base-1" and config["corpus"].endswith("corpus.txt") and config["max_new_tokens"] == 16
    out = launch.output_dir(folder)
    out.mkdir()
    (out / "results.json").write_text(json.dumps({
        "models": {"sft-1": {"rm_score": 0.5, "kl": 0.0, "corpus_nll": 3.0, "corpus_ppl": 20.1, "corpus_tokens": 9},
                   "base-1": {"rm_score": -0.2, "kl": 1.5, "corpus_nll": 2.5, "corpus_ppl": 12.2, "corpus_tokens": 9}},
        "rm_accuracy": {"all": 0.7, "train": 0.72, "heldout": 0.69, "pairs": {"all": 10, "train": 5, "heldout": 5}}}))
    assert "recorded in the registry" in launch.complete(db, settings, run, folder)
    metrics = registry.metrics_of(db, [loop["sft"].id, loop["base"].id, loop["rm"].id])
    assert metrics[loop["base"].id]["auto/corpus_ppl"] == 12.2 and metrics[loop["sft"].id]["auto/kl"] == 0.0
    assert metrics[loop["rm"].id] == {"auto/rm_accuracy": 0.7, "auto/rm_accuracy_train": 0.72, "auto/rm_accuracy_heldout": 0.69}


def test_api_takes_nodes_and_gpus_per_node_and_refuses_bad_ones_with_422(client, db, settings, loop):
    admin = make_user(db, "admin")
    client.login(admin.username, PASSWORD)
    headers = {"X-CSRF-Token": client.csrf()}
    body = {"kind": "rm", "inputs": {"model": "sft-1", "data": "cmp"}}
    for shape, field, words in (
        ({"nodes": 0}, "nodes", "greater than or equal to 1"),
        ({"nodes": 65}, "nodes", "less than or equal to 64"),
        ({"nodes": 2, "gpus_per_node": 65}, "gpus_per_node", "less than or equal to 64"),
        ({"nodes": 2, "gpus_per_node": -1}, "gpus_per_node", "greater than or equal to 0"),
        ({"nodes": "two"}, "nodes", "integer"),
        ({"nodes": 2, "gpus": 3}, "gpus", "split evenly over 2 nodes"),
        ({"nodes": 2, "gpus_per_node": 4, "gpus": 6}, "gpus", "2 nodes x 4 GPUs per node = 8, not 6"),
    ):
        bad = client.post("/api/runs", json={**body, **shape}, headers=headers)
        assert bad.status_code == 422, (shape, bad.text)
        assert field in bad.text and words in bad.text, (shape, bad.text)
    assert db.scalar(select(Run).where(Run.kind == "rm")) is None  # nothing was queued

    ok = client.post("/api/runs", json={**body, "nodes": 2, "gpus_per_node": 4}, headers=headers)
    assert ok.status_code == 201, ok.text
    assert (ok.json()["nodes"], ok.json()["gpus_per_node"], ok.json()["gpus"]) == (2, 4, 8)
    single = client.post("/api/runs", json={**body, "gpus": 2}, headers=headers).json()  # gpus alone: one node, as before
    assert (single["nodes"], single["gpus_per_node"], single["gpus"]) == (1, 2, 2)
    page = client.get(f"/runs/{ok.json()['id']}")
    assert "2 nodes × 4 GPU(s)" in page.text
