"""The model registry: registering base models, outputs of runs, lineage, and the pages and API."""

from __future__ import annotations

import pytest

from app.errors import Conflict, InvalidInput
from app.prompts.service import import_completions
from app.registry import service as registry
from app.registry.models import ModelKind
from app.runs import launch
from app.runs.models import RunInput
from app.runs.planning import RunRequest, launch_run
from tests.factories import PASSWORD, make_frozen, make_model, make_model_folder, make_prompt, make_user


def test_register_a_folder_or_a_hub_name_and_refuse_what_is_neither(db, settings, tmp_path):
    folder = make_model_folder(tmp_path / "my-base")
    model = registry.register_model(db, settings, name="my-base", path=folder)
    assert model.kind == ModelKind.base and model.path == folder
    assert registry.register_model(db, settings, name="gpt2-hub", path="openai-community/gpt2").path == "openai-community/gpt2"
    with pytest.raises(Conflict, match="already registered"):
        registry.register_model(db, settings, name="my-base", path=folder)
    with pytest.raises(InvalidInput, match="no config.json") as bad_folder:
        registry.register_model(db, settings, name="empty", path=str(tmp_path))
    assert bad_folder.value.field == "path"
    with pytest.raises(InvalidInput, match="not a hub name"):
        registry.register_model(db, settings, name="missing", path="/no/such/folder")
    with pytest.raises(InvalidInput, match="no spaces or commas") as bad_name:
        registry.register_model(db, settings, name="a,b", path=folder)
    assert bad_name.value.field == "name"


def test_imported_completions_link_to_registered_or_new_external_models(db, settings):
    prompt = make_prompt(db, "Say hello.")
    base = make_model(db, settings, name="known-model")
    summary = import_completions(db, [
        {"prompt_id": prompt.id, "completion": "Hello!", "model": "known-model"},
        {"prompt_id": prompt.id, "completion": "Hi there.", "model": "vendor-x"},
    ], settings=settings)
    assert summary.imported == 2
    from app.prompts.models import Completion

    rows = {c.text: c for c in db.query(Completion).filter(Completion.id.in_(summary.completion_ids))}
    assert rows["Hello!"].model_id == base.id
    external = registry.find_model(db, "vendor-x")
    assert external.kind == ModelKind.external and rows["Hi there."].model_id == external.id


def test_a_succeeded_run_registers_its_model_with_metrics_and_lineage(db, settings, tmp_path):
    admin = make_user(db, "admin")
    base = make_model(db, settings, name="tiny-base")
    data = make_frozen(db, settings, "sft", name="demos-v1")
    run = launch_run(db, settings, RunRequest(kind="sft", name="sft v1", inputs={"model": "tiny-base", "data": "demos-v1"},
                                              output_name="sft-v1"), actor=admin)
    folder = tmp_path / "run"
    folder.mkdir()
    config_path = launch.prepare(db, settings, run, folder)
    assert db.query(RunInput).filter_by(run_id=run.id, role="data").one().sha256 == data.sha256
    import json

    config = json.loads(config_path.read_text())
    assert config["model"].endswith("models/tiny-base") and config["data"].endswith(data.path)
    # the trainer's output: a model folder and a metrics stream
    out = launch.output_dir(settings.artifact_dir / "runs" / str(run.id))
    make_model_folder(out / "model")
    (out / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "name": "valid/loss", "value": 2.5}, {"step": 2, "name": "valid/loss", "value": 2.0},
        {"step": 2, "name": "train/loss", "value": 1.0}]) + "\n")
    assert "registered model sft-v1" in launch.complete(db, settings, run, out.parent)
    sft = registry.find_model(db, "sft-v1")
    assert sft.kind == ModelKind.sft and sft.run_id == run.id
    node = registry.lineage(db, sft)
    assert node.metrics == {"valid/loss": 2.0}
    assert [(role, p.model.name) for role, p in node.parents] == [("model", "tiny-base")]
    assert [(role, d.name) for role, d, _ in node.datasets] == [("data", "demos-v1")]
    assert registry.children(db, base)[0][2].id == sft.id


def test_models_pages_and_api_register_show_lineage_and_offer_next_steps(client, db, settings, tmp_path):
    admin = make_user(db, "admin")
    client.login(admin.username, PASSWORD)
    folder = make_model_folder(tmp_path / "weights")
    bad = client.post_form("/models", {"name": "with space", "path": folder})
    assert bad.status_code == 422 and "no spaces" in bad.text and 'value="with space"' in bad.text
    ok = client.post_form("/models", {"name": "page-base", "path": folder, "description": "<b>tiny</b>"})
    assert ok.status_code == 303
    page = client.get(ok.headers["location"])
    assert page.status_code == 200 and "&lt;b&gt;tiny&lt;/b&gt;" in page.text
    assert "/runs/new?kind=sft&amp;model=" in page.text  # the next step
    listed = client.get("/api/models").json()
    assert [m["name"] for m in listed] == ["page-base"]
    shown = client.get(f"/api/models/{listed[0]['id']}").json()
    assert shown["model"]["kind"] == "base" and shown["parents"] == [] and shown["run_id"] is None
    api = client.post("/api/models", json={"name": "api-base", "path": "org/model"}, headers={"X-CSRF-Token": client.csrf()})
    assert api.status_code == 201 and api.json()["path"] == "org/model"


def test_labelers_cannot_see_models_and_researchers_cannot_register(client, db, tmp_path):
    labeler, researcher = make_user(db, "labeler"), make_user(db, "researcher")
    client.login(labeler.username, PASSWORD)
    assert client.get("/api/models").status_code == 403
    client.post_form("/logout")
    client.login(researcher.username, PASSWORD)
    assert client.get("/models").status_code == 200
    assert client.post("/api/models", json={"name": "x", "path": "org/x"}, headers={"X-CSRF-Token": client.csrf()}).status_code == 403


def test_compare_page_puts_models_metrics_side_by_side(client, db, settings):
    admin = make_user(db, "admin")
    a, b = make_model(db, settings, kind="sft", name="cmp-a"), make_model(db, settings, kind="ppo", name="cmp-b")
    registry.set_metrics(db, a, {"auto/corpus_ppl": 12.5, "valid/loss": 2.0})
    registry.set_metrics(db, b, {"auto/corpus_ppl": 14.25})
    client.login(admin.username, PASSWORD)
    page = client.get(f"/models/compare?model={a.id}&model={b.id}")
    assert page.status_code == 200
    table = page.text.split('id="compare-metrics"')[1].split("</table>")[0]
    assert "auto/corpus_ppl" in table and "12.5" in table and "14.25" in table and "valid/loss" in table
    assert "No evaluation has compared these models yet" in page.text
