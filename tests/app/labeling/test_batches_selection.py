"""Batches from chosen prompts (split, category, source, import, ids) with guidelines: service,
admin form (preview, 303 after create, errors naming the field) and JSON API."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.config import Settings
from app.errors import InvalidInput
from app.labeling import batches
from app.labeling import selection as sel
from app.labeling.models import Batch, Task, TaskKind
from app.prompts import service as prompts
from app.prompts.models import Prompt
from tests.app.labeling.test_labeling import signed_in

SETTINGS = Settings(mode="test", secret_key="k3y-for-tests-" + "Qz8#vT1!pL" * 4)


def _import(db, texts, *, tag, category="other", origin="selector"):
    s = prompts.import_prompts(
        db, [{"prompt": t, "origin_user": origin, "category": category} for t in texts],
        settings=SETTINGS, prefix_chars=10_000, import_tag=tag,
    )
    return s.prompt_ids


@pytest.fixture
def pool(db):
    demo = _import(db, ["Demo prompt: say hi.", "Demo prompt: say bye."], tag=sel.DEMO_TAG)
    poems = _import(db, ["Write a poem about rain.", "Write a poem about snow."], tag="poems-1", category="generation")
    qa = _import(db, ["What is the capital of France?"], tag="qa-1", category="open_qa", origin="asker")
    db.flush()
    return {"demo": demo, "poems": poems, "qa": qa}


def _tasks(db, batch):
    return sorted(db.scalars(select(Task.prompt_id).where(Task.batch_id == batch.id)))


def _demo_batch(db, name, selection=None, **kw):
    return batches.create_batch(db, batches.BatchOptions(name=name, kind=TaskKind.demonstration, **kw), selection=selection)


def test_a_plain_batch_never_sweeps_in_the_demo_prompts(db, pool):
    b = _demo_batch(db, "everything")
    got = _tasks(db, b)
    assert not set(got) & set(pool["demo"]) and set(pool["poems"] + pool["qa"]) <= set(got)


def test_demo_prompts_are_taken_when_chosen_by_import_or_id(db, pool):
    by_tag = _demo_batch(db, "demo-by-tag", sel.PromptSelection(import_tag="demo"))
    assert _tasks(db, by_tag) == sorted(pool["demo"])
    by_id = _demo_batch(db, "demo-by-id", sel.PromptSelection(prompt_ids=[pool["demo"][0]]))
    assert _tasks(db, by_id) == [pool["demo"][0]]


def test_filters_combine_and_the_batch_keeps_its_selection_and_guidelines(db, pool):
    b = _demo_batch(db, "poems", sel.PromptSelection(category="generation", import_tag="poems-1"),
                    guidelines="# Be kind\r\n\r\n- short answers\n")
    assert _tasks(db, b) == sorted(pool["poems"])
    assert b.selection == {"category": "generation", "import_tag": "poems-1"}
    assert b.guidelines == "# Be kind\n\n- short answers"
    split = db.get(Prompt, pool["qa"][0]).split.value
    only = _demo_batch(db, "qa", sel.PromptSelection(split=split, category="open_qa"))
    assert _tasks(db, only) == pool["qa"]


@pytest.mark.parametrize("choice, field, words", [
    (sel.PromptSelection(prompt_ids=[10**9]), "prompt_ids", "no prompt with id 1000000000"),
    (sel.PromptSelection(category="poetry"), "category", "Unknown category 'poetry'"),
    (sel.PromptSelection(split="dev"), "split", "Unknown split 'dev'"),
    (sel.PromptSelection(source="web"), "source", "Unknown source 'web'"),
    (sel.PromptSelection(import_tag="never-imported"), "import_tag", "never-imported"),
    (sel.PromptSelection(category="rewrite"), "category", "No active prompts match"),
])
def test_bad_selections_name_the_field_and_create_nothing(db, pool, choice, field, words):
    before = db.scalar(select(func.count()).select_from(Batch))
    with pytest.raises(InvalidInput) as err:
        _demo_batch(db, "bad", choice)
    assert err.value.field == field and words in err.value.message
    assert db.scalar(select(func.count()).select_from(Batch)) == before


def test_prompt_ids_parse_lists_and_ranges_and_refuse_garbage():
    assert sel.parse_prompt_ids(" 3, 5\n9-11 5") == [3, 5, 9, 10, 11]
    assert sel.parse_prompt_ids("  ") is None
    for bad in ("3, x", "9-3", "1-999999999"):
        with pytest.raises(InvalidInput) as err:
            sel.parse_prompt_ids(bad)
        assert err.value.field == "prompt_ids"


def test_admin_previews_then_creates_a_batch_from_chosen_prompts_and_f5_does_not_repost(make_client, db, pool):
    admin, _ = signed_in(make_client, db, "admin")
    ids = ", ".join(map(str, pool["poems"]))
    form = {"name": "chosen poems", "kind": "demonstration", "prompt_ids": ids, "guidelines": "Use **plain** words."}
    preview = admin.post_form("/admin/batches", {**form, "action": "preview"})
    assert preview.status_code == 200 and "2 active prompts match" in preview.text
    assert db.scalar(select(Batch.id).where(Batch.name == "chosen poems")) is None  # a preview creates nothing
    created = admin.post_form("/admin/batches", {**form, "action": "create"})
    assert created.status_code == 303 and created.headers["location"] == "/admin/batches"
    page = admin.get(created.headers["location"])  # what the browser does after the 303; F5 repeats only this GET
    assert "Batch chosen poems created with 2 tasks." in page.text and "prompt ids: 2 chosen" in page.text
    assert "Batch chosen poems created" not in admin.get("/admin/batches").text  # the message is shown once
    batch = db.scalar(select(Batch).where(Batch.name == "chosen poems"))
    assert _tasks(db, batch) == sorted(pool["poems"]) and batch.guidelines == "Use **plain** words."


def test_admin_form_errors_rerender_with_the_field_named_and_nothing_created(make_client, db, pool):
    admin, _ = signed_in(make_client, db, "admin")
    bad = admin.post_form("/admin/batches", {"name": "nope", "kind": "demonstration", "prompt_ids": "1, 999999999"})
    assert bad.status_code == 422 and 'data-field="prompt_ids"' in bad.text and "999999999" in bad.text
    assert 'value="nope"' in bad.text  # the form keeps what was typed
    none = admin.post_form("/admin/batches", {"name": "nope", "kind": "demonstration", "category": "rewrite"})
    assert none.status_code == 422 and 'data-field="category"' in none.text
    assert db.scalar(select(Batch.id).where(Batch.name == "nope")) is None


def test_api_creates_a_batch_from_chosen_prompts_and_refuses_unknown_ids(make_client, db, pool):
    admin, _ = signed_in(make_client, db, "admin")
    ok = admin.post("/api/labeling/batches", json={"name": "api poems", "kind": "demonstration", "import_tag": "poems-1",
                                                   "guidelines": "Be brief."})
    assert ok.status_code == 201, ok.text
    assert ok.json()["selection"] == {"import_tag": "poems-1"} and ok.json()["guidelines"] == "Be brief."
    bad = admin.post("/api/labeling/batches", json={"name": "api bad", "kind": "demonstration", "prompt_ids": [999999999]})
    assert bad.status_code == 422 and "prompt_ids" in bad.text
    assert db.scalar(select(Batch.id).where(Batch.name == "api bad")) is None
