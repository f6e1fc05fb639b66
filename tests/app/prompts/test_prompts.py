"""Prompts: scrubbing, import summary (dedup, cap, splits), admin upload, labeler prompt writing."""

from __future__ import annotations

import json

from sqlalchemy import select

from app.prompts.models import Prompt
from app.prompts.scrub import scrub
from app.prompts.service import import_prompts, split_for_origin_user
from tests.factories import PASSWORD, make_user


def test_scrub_replaces_each_kind_with_a_typed_placeholder():
    text, kinds = scrub(
        "Mail jane.doe@example.com, call +1 (415) 555-0123, card 4111 1111 1111 1111, SSN 123-45-6789, "
        "I live at 42 Baker Street, server 10.0.0.12"
    )
    for secret in ("jane.doe", "555-0123", "4111", "123-45-6789", "42 Baker", "10.0.0.12"):
        assert secret not in text
    assert kinds == ["email", "ip", "card", "id_number", "phone", "address"]
    assert scrub("Write a haiku about 3 cats in 2024.") == ("Write a haiku about 3 cats in 2024.", [])


def test_import_summary_dedup_cap_scrub_and_splits(db, settings):
    long = "Please write a detailed essay about the history of the printing press in Europe, "
    records = [
        {"prompt": long + "part one", "origin_user": "u1"},
        {"prompt": long.upper() + "part two", "origin_user": "u2"},  # same long prefix: near-duplicate
        {"messages": [{"role": "user", "content": "Email me at a@b.org"}], "origin_user": "u3", "category": "chat"},
        *[{"prompt": f"short prompt {i}", "origin_user": "u4"} for i in range(4)],
    ]
    s = import_prompts(db, records, settings=settings, per_user_cap=3)
    assert (s.read, s.imported, s.near_duplicates, s.capped, s.scrubbed) == (7, 5, 1, 1, 1)
    assert sum(s.per_split.values()) == 5
    chat = db.scalar(select(Prompt).where(Prompt.origin_user == "u3"))
    assert chat.scrubbed and chat.scrubbed_kinds == "email" and chat.messages[0]["content"] == "Email me at [EMAIL]"
    for p in db.scalars(select(Prompt)):
        assert p.split == split_for_origin_user(p.origin_user)


def test_split_is_deterministic_and_roughly_80_10_10():
    splits = [split_for_origin_user(f"user{i}").value for i in range(2000)]
    assert splits == [split_for_origin_user(f"user{i}").value for i in range(2000)]
    assert 0.75 < splits.count("train") / 2000 < 0.85 and splits.count("valid") > 100 and splits.count("test") > 100


def test_invalid_record_imports_nothing(db, settings):
    import pytest

    from app.errors import InvalidInput

    with pytest.raises(InvalidInput, match="record 2"):
        import_prompts(db, [{"prompt": "fine"}, {"nothing": 1}], settings=settings)
    assert db.scalar(select(Prompt.id)) is None


def test_admin_uploads_prompts_then_completions(client, db):
    make_user(db, "admin", username="boss")
    client.login("boss", PASSWORD)
    jsonl = "\n".join(json.dumps({"prompt": f"Prompt number {i} about call 415-555-0199", "origin_user": f"o{i}"}) for i in range(3))
    r = client.post("/admin/prompts/import", data={"csrf_token": client.csrf(), "prefix_chars": "200", "per_user_cap": "200",
                                                   "tag": "calls-1"},
                    files={"file": ("p.jsonl", jsonl.encode(), "application/jsonl")}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/prompts"  # F5 does not import again
    page = client.get("/admin/prompts")
    assert "imported: 3" in page.text and "scrubbed for personal data: 3" in page.text
    assert "imported: 3" not in client.get("/admin/prompts").text  # the summary is shown once
    assert set(db.scalars(select(Prompt.import_tag))) == {"calls-1"}
    csv_bad = client.post("/admin/prompts/import", data={"csrf_token": client.csrf()},
                          files={"file": ("p.csv", b"text\nhello\n", "text/csv")})
    assert csv_bad.status_code == 422 and "header row" in csv_bad.text
    comp = "\n".join(json.dumps({"prompt": "Prompt number 0 about call 415-555-0199", "completion": f"c{i}", "model": "m"}) for i in range(4))
    r = client.post("/admin/completions/import", data={"csrf_token": client.csrf()},
                    files={"file": ("c.jsonl", comp.encode(), "application/jsonl")}, follow_redirects=False)
    assert r.status_code == 303 and "imported: 4" in client.get("/admin/prompts").text


def test_labeler_writes_few_shot_and_use_case_prompts(client, db):
    make_user(db, "labeler", username="writer")
    client.login("writer", PASSWORD)
    few = client.post_form("/labeling/write", {"kind": "few_shot", "instruction": "Translate to French.",
                                               "query_1": "cat", "response_1": "chat", "query_2": "dog", "response_2": "chien"})
    assert few.status_code == 303 and few.headers["location"] == "/labeling/write"
    assert 'id="saved"' in client.get("/labeling/write").text and 'id="saved"' not in client.get("/labeling/write").text
    one_pair = client.post_form("/labeling/write", {"kind": "few_shot", "instruction": "Translate.", "query_1": "a", "response_1": "b"})
    assert one_pair.status_code == 422 and "at least two" in one_pair.text and 'value="a"' in one_pair.text
    uc = client.post_form("/labeling/write", {"kind": "use_case", "use_case": "Brainstorming", "use_case_text": "Ideas for a party"})
    assert uc.status_code == 303
    again = client.post_form("/labeling/write", {"kind": "use_case", "use_case": "Brainstorming", "use_case_text": "Ideas for a party"})
    assert again.status_code == 409 and "already wrote" in again.text
    texts = list(db.scalars(select(Prompt.text).order_by(Prompt.id)))
    assert texts[0].startswith("Translate to French.") and "Query: dog\nResponse: chien" in texts[0]
    assert texts[1] == "[Use case: Brainstorming]\nIdeas for a party"
