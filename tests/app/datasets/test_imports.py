"""Imports: round trips into a fresh database, HH and OASST, malformed files change nothing."""

from __future__ import annotations

import gzip

import orjson
import pytest
from sqlalchemy import func, select

from app.datasets.export import iter_export
from app.datasets.imports import import_file
from app.datasets.readers import MAX_LINE_BYTES
from app.datasets.schemas import ExportFilters
from app.errors import InvalidInput
from app.labeling.models import Demonstration, Ranking, RankingEntry
from app.prompts.models import Completion, Prompt
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, make_demonstration, make_prompt, make_ranking, make_ranking_task, make_user


def export(db, kind, fmt="jsonl", style=None, **filters):
    style = style or {"pairwise": "plain", "sft": "both"}.get(kind, "plain")
    return b"".join(iter_export(db, kind, fmt, ExportFilters(**filters), secret=TEST_SECRET, style=style))


def jsonl(*rows) -> bytes:
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def without_ids(data: bytes, kind: str) -> list[dict]:
    """Rows with the database's own ids renumbered in order of appearance (they are per database)."""
    out, ids = [], {}
    renum = lambda ns, v: ids.setdefault((ns, v), len([k for k in ids if k[0] == ns]))  # noqa: E731
    for line in data.splitlines():
        r = orjson.loads(line)
        for key in ("prompt_id", "ranking_id"):
            if key in r:
                r[key] = renum(key, r[key])
        if kind == "comparisons":
            for c in r["completions"]:
                c["id"] = renum("c", c["id"])
            r["ranked"] = [[renum("c", i) for i in b] for b in r["ranked"]]
            for x in r["ratings"]:
                x["completion_id"] = renum("c", x["completion_id"])
        out.append(r)
    return out


def counts(db) -> tuple:
    return tuple(db.scalar(select(func.count()).select_from(t)) for t in (Prompt, Completion, Ranking, RankingEntry, Demonstration))


@pytest.fixture
def source(db):
    a, h = make_user(db, "labeler"), make_user(db, "labeler", group="heldout")
    task, comps = make_ranking_task(db, k=4, models=["m1", "m2", "m1", None], required=2)
    make_ranking(db, task=task, completions=comps, labeler=a, buckets=[[1], [0, 2], [3]], likerts=[3, 6, 3, 1],
                 flags={3: ["expresses_opinion"]})
    make_ranking(db, task=task, completions=comps, labeler=h, buckets=[[0], [1], [2], [3]], all_bad=True)
    convo = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Joke?"}]
    make_ranking(db, labeler=a, k=3, prompt=make_prompt(db, "User: Hi\n\nAssistant: Hello!\n\nUser: Joke?", messages=convo, split="valid"))
    make_demonstration(db, prompt=make_prompt(db, "Explain tides."), text="The moon pulls the sea.")
    make_demonstration(db, prompt=make_prompt(db, "System: Be brief.\n\nUser: Multi", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Multi"}]), text="Ok.")


@pytest.mark.parametrize("kind,fmt,style", [
    ("comparisons", "jsonl", None), ("comparisons", "parquet", None), ("pairwise", "jsonl", "plain"),
    ("pairwise", "jsonl.gz", "messages"), ("sft", "jsonl", "both"), ("sft", "parquet", "messages"),
])
def test_round_trip_export_import_into_a_fresh_database_export(db, source, fresh_db, settings, kind, fmt, style):
    first = export(db, kind, fmt, style, labeler_group="all")
    summary = import_file(fresh_db, settings, kind, first, name=f"x.{fmt}")
    fresh_db.commit()
    assert summary.imported > 0 and not summary.skipped
    second = export(fresh_db, kind, fmt, style, labeler_group="all")
    as_jsonl = lambda d: export_rows(d, fmt)  # noqa: E731
    assert without_ids(as_jsonl(second), kind) == without_ids(as_jsonl(first), kind)
    if kind == "comparisons":  # held-out stays held out
        assert len(export(fresh_db, kind, "jsonl", labeler_group="heldout").splitlines()) == 1


def export_rows(data: bytes, fmt: str) -> bytes:
    if fmt == "jsonl.gz":
        return gzip.decompress(data)
    if fmt == "parquet":
        import io

        import pyarrow.parquet as pq

        return b"\n".join(orjson.dumps(r) for r in pq.read_table(io.BytesIO(data)).to_pylist())
    return data


def test_hh_transcripts_split_into_prompt_and_final_responses(db, settings):
    good = {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 6.",
            "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 7."}
    differ = {"chosen": "\n\nHuman: A?\n\nAssistant: x", "rejected": "\n\nHuman: B?\n\nAssistant: y"}
    empty = {"chosen": "\n\nHuman: A?\n\nAssistant: fine", "rejected": "\n\nHuman: A?\n\nAssistant: "}
    summary = import_file(db, settings, "hh", jsonl(good, differ, empty), name="hh.jsonl")
    assert (summary.read, summary.imported) == (3, 1)
    assert summary.skipped == {"earlier turns differ": 1, "empty final response": 1}
    assert "line 2: earlier turns differ" in summary.skipped_lines
    out = [orjson.loads(x) for x in export(db, "pairwise").splitlines()]
    assert out == [{"prompt": "User: What is 2+2?\n\nAssistant: 4.\n\nUser: And 3+3?", "chosen": "6.", "rejected": "7.",
                    "prompt_id": out[0]["prompt_id"], "ranking_id": out[0]["ranking_id"]}]
    msgs = orjson.loads(export(db, "pairwise", style="messages"))
    assert [m["role"] for m in msgs["prompt"]] == ["user", "assistant", "user"]


def test_oasst_trees_give_one_ranking_per_ranked_sibling_group(db, settings):
    tree = {"message_tree_id": "t1", "prompt": {
        "message_id": "p", "role": "prompter", "text": "Name a colour.", "user_id": "u1", "replies": [
            {"role": "assistant", "text": "Blue.", "rank": 1, "replies": []},
            {"role": "assistant", "text": "Red.", "rank": 0, "replies": [
                {"role": "prompter", "text": "Another?", "replies": [
                    {"role": "assistant", "text": "Green.", "rank": 0},
                    {"role": "assistant", "text": "Teal.", "rank": 1, "synthetic": True, "model_name": "gpt"},
                ]},
            ]},
            {"role": "assistant", "text": "Grey.", "rank": 2},
            {"role": "assistant", "text": "Unranked.", "rank": None},
        ]}}
    summary = import_file(db, settings, "oasst", jsonl(tree), name="trees.jsonl")
    assert summary.imported == 1 and summary.skipped == {"fewer than 2 ranked replies once synthetic ones are left out": 1}
    row = orjson.loads(export(db, "comparisons"))
    texts = {c["id"]: c["text"] for c in row["completions"]}
    assert [[texts[i] for i in b] for b in row["ranked"]] == [["Red."], ["Blue."], ["Grey."]]
    assert row["prompt"] == "Name a colour."
    with_synth = import_file(db, settings, "oasst", jsonl(tree), name="trees.jsonl", include_synthetic=True)
    assert with_synth.imported == 2


BAD_FILES = {
    "bad json": (b'{"chosen": "a", "rejected": "b", "prompt": "p"}\n{"chosen": oops}\n', "line 2: not valid JSON"),
    "missing field": (jsonl({"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a"}), "line 2: rejected"),
    "wrong type": (jsonl({"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": 3, "rejected": "b"}), "line 2: chosen"),
    "not an object": (b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n[1, 2]\n', "line 2: expected a JSON object"),
    "wrong encoding": (jsonl({"prompt": "p", "chosen": "a", "rejected": "b"}) + '{"prompt": "café", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"), "line 2: not valid UTF-8"),
    "huge row": (jsonl({"prompt": "p", "chosen": "a", "rejected": "b"}) + b'{"prompt": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n', "line 2: the record is longer"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_files_report_the_line_and_change_nothing(db, settings, case):
    data, message = BAD_FILES[case]
    before = counts(db)
    with pytest.raises(InvalidInput) as err:
        import_file(db, settings, "pairwise", data, name="bad.jsonl")
    assert message in err.value.message
    db.rollback()
    assert counts(db) == before


def test_comparisons_validation_names_the_field(db, settings):
    row = {"prompt": "p", "completions": [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}], "ranked": [[1], [3]]}
    with pytest.raises(InvalidInput, match="line 1: ranked\\[1\\]: unknown completion id 3"):
        import_file(db, settings, "comparisons", jsonl(row), name="c.jsonl")
    row["ranked"] = [[1], [2]]
    row["ratings"] = [{"completion_id": 1, "likert": 9}]
    with pytest.raises(InvalidInput, match="likert"):
        import_file(db, settings, "comparisons", jsonl(row), name="c.jsonl")


def test_admin_upload_page_and_api_are_all_or_nothing(db, client, settings):
    admin = make_user(db, "admin")
    client.login(admin.username, PASSWORD)
    before = counts(db)
    bad = client.post_form("/admin/datasets/import", {"kind": "pairwise"},
                           files={"file": ("bad.jsonl", jsonl({"prompt": "p", "chosen": "a", "rejected": "b"}) + b"{nope\n")})
    assert bad.status_code == 422 and "line 2" in bad.text
    assert counts(db) == before
    ok = client.post_form("/admin/datasets/import", {"kind": "pairwise"},
                          files={"file": ("ok.jsonl", jsonl({"prompt": "p", "chosen": "a", "rejected": "b"}))})
    assert ok.status_code == 303 and ok.headers["location"] == "/admin/datasets/import"  # F5 does not import again
    assert "imported: 1" in client.get("/admin/datasets/import").text
    researcher = make_user(db, "researcher")
    client.login(researcher.username, PASSWORD)
    denied = client.post_form("/admin/datasets/import", {"kind": "pairwise"}, files={"file": ("ok.jsonl", b"{}\n")})
    assert denied.status_code == 403


def test_prompts_import_uses_the_prompt_service(db, settings):
    summary = import_file(db, settings, "prompts", jsonl({"prompt": "Mail me at a@b.com please", "origin_user": "acme"}), name="p.jsonl")
    assert summary.imported == 1
    row = orjson.loads(export(db, "prompts"))
    assert "a@b.com" not in row["prompt"] and row["origin_user"] == "acme"
