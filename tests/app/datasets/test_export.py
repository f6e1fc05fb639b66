"""Exports as researchers and training code use them: content, filters, formats, doors, frozen datasets."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from datetime import timedelta

import orjson
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from app.datasets.export import iter_export, pseudonym
from app.datasets.frozen import freeze
from app.datasets.schemas import ExportFilters
from app.db import utcnow
from app.users import service as users
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, make_batch, make_demonstration, make_prompt, make_ranking, make_ranking_task, make_user


def rows(db, kind, fmt="jsonl", style=None, **filters):
    style = style or {"pairwise": "plain", "sft": "both"}.get(kind, "plain")
    data = b"".join(iter_export(db, kind, fmt, ExportFilters(**filters), secret=TEST_SECRET, style=style))
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pylist()
    if fmt == "jsonl.gz":
        data = gzip.decompress(data)
    return [orjson.loads(line) for line in data.splitlines()]


@pytest.fixture
def labeled(db):
    alice = make_user(db, "labeler")
    held = make_user(db, "labeler", group="heldout")
    batch = make_batch(db, "batch-a")
    task, comps = make_ranking_task(db, k=4, batch=batch, models=["m1", "m1", "m2", "m2"])
    r1 = make_ranking(db, task=task, completions=comps, labeler=alice, buckets=[[2], [0, 1], [3]],
                      likerts=[5, 5, 7, 1], flags={3: ["hallucination", "harmful_advice"]})
    r2 = make_ranking(db, labeler=held, k=3, all_bad=True, buckets=[[0, 1, 2]],
                      prompt=make_prompt(db, "Held-out prompt", split="test"))
    return {"alice": alice, "held": held, "r1": r1, "r2": r2, "comps": comps, "task": task}


def test_comparisons_row_holds_everything_with_a_pseudonymous_labeler(db, labeled):
    out = rows(db, "comparisons")
    assert [r["ranking_id"] for r in out] == [labeled["r1"].id]  # held-out excluded by default
    row = out[0]
    c = labeled["comps"]
    assert row["ranked"] == [[c[2].id], [c[0].id, c[1].id], [c[3].id]]
    assert [x["id"] for x in row["completions"]] == sorted(x.id for x in c)
    assert {x["model"] for x in row["completions"]} == {"m1", "m2"}
    ratings = {r["completion_id"]: r for r in row["ratings"]}
    assert ratings[c[3].id] == {"completion_id": c[3].id, "likert": 1, "flags": ["hallucination", "harmful_advice"]}
    assert row["labeler"] == pseudonym(TEST_SECRET, labeled["alice"].id) and labeled["alice"].username not in row["labeler"]
    assert row["labeler_group"] == "train" and row["split"] == "train" and row["batch"] == "batch-a"
    assert row["all_bad"] is False and row["created_at"].endswith("Z") and row["time_spent_s"] == 30.0
    assert row["prompt_messages"] == [{"role": "user", "content": row["prompt"]}]


def test_pairwise_expands_buckets_and_drops_ties(db, labeled):
    out = rows(db, "pairwise")
    c = {x.id: x.text for x in labeled["comps"]}
    ids = labeled["comps"]
    expected = [(ids[2], ids[0]), (ids[2], ids[1]), (ids[2], ids[3]), (ids[0], ids[3]), (ids[1], ids[3])]
    assert [(r["chosen"], r["rejected"]) for r in out] == [(c[w.id], c[lo.id]) for w, lo in expected]
    assert {r["ranking_id"] for r in out} == {labeled["r1"].id}
    msgs = rows(db, "pairwise", style="messages")
    assert msgs[0]["prompt"] == [{"role": "user", "content": out[0]["prompt"]}]
    assert msgs[0]["chosen"] == [{"role": "assistant", "content": out[0]["chosen"]}]


def test_filters(db, labeled):
    assert [r["ranking_id"] for r in rows(db, "comparisons", labeler_group="heldout")] == [labeled["r2"].id]
    assert len(rows(db, "comparisons", labeler_group="all")) == 2
    assert rows(db, "comparisons", labeler_group="all", include_all_bad=False)[0]["ranking_id"] == labeled["r1"].id
    assert len(rows(db, "comparisons", labeler_group="all", split="test")) == 1
    assert len(rows(db, "comparisons", labeler_group="all", batch="batch-a")) == 1
    assert len(rows(db, "comparisons", labeler_group="all", model="m2")) == 1
    assert rows(db, "comparisons", labeler_group="all", model="nope") == []
    now = utcnow()
    assert len(rows(db, "comparisons", labeler_group="all", since=now - timedelta(hours=1))) == 2
    assert rows(db, "comparisons", labeler_group="all", until=now - timedelta(hours=1)) == []
    # No task ranked by two labelers yet: a minimum agreement keeps nothing.
    assert rows(db, "comparisons", min_agreement=0.5) == []
    other = make_user(db, "labeler")
    make_ranking(db, task=labeled["task"], completions=labeled["comps"], labeler=other, buckets=[[2], [0], [1], [3]])
    assert {r["ranking_id"] for r in rows(db, "comparisons", min_agreement=0.9)} >= {labeled["r1"].id}


def test_three_formats_hold_the_same_rows(db, labeled):
    for kind in ("comparisons", "pairwise", "sft", "prompts"):
        make_demonstration(db)
        plain = rows(db, kind)
        assert rows(db, kind, "jsonl.gz") == plain
        assert rows(db, kind, "parquet") == plain


def test_pairwise_and_sft_load_with_datasets_and_match_trl_columns(db, labeled, tmp_path):
    from trl.data_utils import is_conversational

    make_demonstration(db, prompt=make_prompt(db, "Explain tides."), text="The moon pulls the sea.")
    cases = {
        ("pairwise", "plain"): {"prompt", "chosen", "rejected"},
        ("pairwise", "messages"): {"prompt", "chosen", "rejected"},
        ("sft", "plain"): {"prompt", "completion"},
        ("sft", "messages"): {"messages"},
    }
    for (kind, style), trl_columns in cases.items():
        for fmt, loader in (("jsonl", "json"), ("parquet", "parquet")):
            path = tmp_path / f"{kind}-{style}.{fmt}"
            path.write_bytes(b"".join(iter_export(db, kind, fmt, ExportFilters(), secret=TEST_SECRET, style=style)))
            ds = load_dataset(loader, data_files=str(path), split="train")
            assert set(ds.column_names) - {"prompt_id", "ranking_id", "split"} == trl_columns
            assert is_conversational(ds[0]) == (style == "messages")
            if style == "messages":
                key = "messages" if kind == "sft" else "chosen"
                assert ds[0][key][-1]["role"] == "assistant"


def test_freeze_writes_file_and_manifest_with_hash_and_agreement(db, labeled, settings):
    researcher = make_user(db, "researcher")
    ds = freeze(db, settings, kind="pairwise", fmt="jsonl", filters=ExportFilters(split="train"), name="rm v1", actor=researcher)
    path = settings.artifact_dir / ds.path
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == ds.sha256 and ds.row_count == len(data.splitlines()) == 5
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["sha256"] == ds.sha256 and manifest["kind"] == "pairwise" and manifest["row_count"] == 5
    assert manifest["filters"]["split"] == "train" and manifest["filters"]["labeler_group"] == "train"
    assert manifest["created_by"] == researcher.username and manifest["schema_version"] == 1
    assert set(manifest["agreement"]) >= {"overall", "groups", "krippendorff_alpha_likert", "labelers"}
    again = freeze(db, settings, kind="pairwise", fmt="jsonl", filters=ExportFilters(split="train"), name="rm v2")
    assert again.sha256 == ds.sha256  # same data, same bytes


def test_api_export_by_token_researcher_only(db, client, labeled):
    researcher = make_user(db, "researcher")
    _, token = users.create_token(db, researcher, "export")
    labeler = make_user(db, "labeler")
    resp = client.get("/api/export/pairwise?format=jsonl", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    assert len(resp.content.splitlines()) == 5
    gz = client.get("/api/export/comparisons?format=jsonl.gz&labeler_group=all", headers={"Authorization": f"Bearer {token}"})
    assert len(gzip.decompress(gz.content).splitlines()) == 2
    bad = client.get("/api/export/pairwise?split=nope", headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 422 and "split" in bad.json()["detail"]
    client.login(labeler.username, PASSWORD)
    assert client.get("/api/export/pairwise").status_code == 403
    assert client.get("/datasets/export?kind=pairwise").status_code == 403


def test_pages_download_and_freeze(db, client, labeled):
    researcher = make_user(db, "researcher")
    client.login(researcher.username, PASSWORD)
    page = client.get("/datasets")
    assert page.status_code == 200 and "Freeze" in page.text
    dl = client.get("/datasets/export?kind=comparisons&format=parquet&batch=&split=&since=&min_agreement=")
    assert dl.status_code == 200 and pq.read_table(io.BytesIO(dl.content)).num_rows == 1
    made = client.post_form("/datasets/freeze", {"kind": "comparisons", "format": "jsonl", "name": "cmp-1",
                                                 "labeler_group": "all", "include_all_bad": "true"})
    assert made.status_code == 303
    detail = client.get(made.headers["location"])
    assert "cmp-1" in detail.text and "sha256" in detail.text
    file = client.get(made.headers["location"] + "/download")
    assert len(file.content.splitlines()) == 2
    listed = client.get("/datasets")
    assert "cmp-1" in listed.text
    assert client.get("/agreement").status_code == 200
