"""Uploads are read as streams: .gz decompressed chunk by chunk with a cap on the decompressed
size, lines checked while reading, CSV errors named by line, lengths checked before scrubbing in
every import kind. Each refusal is a 4xx naming the field, and nothing is written."""

from __future__ import annotations

import gzip
import io

import orjson
import pytest
from sqlalchemy import func, select

from app.datasets.imports import import_file
from app.datasets.readers import iter_lines
from app.labeling.models import Demonstration, Ranking
from app.prompts.models import Completion, Prompt
from app.users import service as users
from tests.factories import make_prompt, make_user


def counts(db) -> tuple:
    return tuple(db.scalar(select(func.count()).select_from(t)) for t in (Prompt, Completion, Ranking, Demonstration))


def gz_of_newlines(total: int, tail: bytes = b"") -> bytes:
    """A gzip file of ``total`` newlines and then ``tail``, made in 1 MiB pieces (one member each)."""
    out, piece = io.BytesIO(), gzip.compress(b"\n" * 2**20)
    for _ in range(total // 2**20):
        out.write(piece)
    out.write(gzip.compress(b"\n" * (total % 2**20) + tail))
    return out.getvalue()


@pytest.fixture
def admin_headers(db):
    admin = make_user(db, "admin")
    _, token = users.create_token(db, admin, "t")
    db.commit()
    return {"Authorization": f"Bearer {token}"}


def test_gz_expanding_past_the_cap_is_a_413_naming_the_file(client, db, settings, admin_headers):
    settings.max_decompressed_bytes = 4 * 2**20
    before = counts(db)
    bomb = gz_of_newlines(8 * 2**20, b'{"prompt": "never imported"}\n')
    assert len(bomb) < 64 * 1024
    response = client.post("/api/datasets/import/prompts", files={"file": ("p.jsonl.gz", bomb)}, headers=admin_headers)
    assert response.status_code == 413
    assert response.json()["errors"] == [{"field": "file", "message": response.json()["detail"]}]
    assert "decompresses to more than 4 MiB" in response.json()["detail"]
    # the prompts page (CSV or JSONL, gz too) has the same cap
    client.login(*_admin_login(db))
    csv_bomb = gzip.compress(b"prompt,origin_user\n") + gz_of_newlines(8 * 2**20)
    page = client.post_form("/admin/prompts/import", files={"file": ("p.csv.gz", csv_bomb)})
    assert page.status_code == 413 and "decompresses to more than 4 MiB" in page.text
    assert counts(db) == before


def _admin_login(db):
    from tests.factories import PASSWORD

    user = make_user(db, "admin")
    db.commit()
    return user.username, PASSWORD


def test_a_run_of_blank_lines_costs_one_scan_and_keeps_line_numbers(client, db, admin_headers):
    before = counts(db)
    data = gz_of_newlines(3 * 2**20, b"not json\n")  # 3 million blank lines, then a bad line
    response = client.post("/api/datasets/import/prompts", files={"file": ("p.jsonl.gz", data)}, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"line {3 * 2**20 + 1}: not valid JSON")
    assert response.json()["errors"][0]["field"] == "file"
    assert counts(db) == before
    good = gz_of_newlines(2**20, b'{"prompt": "After a million blank lines."}\n')
    ok = client.post("/api/datasets/import/prompts", files={"file": ("p.jsonl.gz", good)}, headers=admin_headers)
    assert ok.status_code == 200 and ok.json()["imported"] == 1


def test_line_numbers_and_the_line_cap_while_reading():
    lines = list(iter_lines(io.BytesIO(b"\n\n  \n{\"a\": 1}\r\n\n{}"), max_line=100))
    assert lines == [(4, b'{"a": 1}\r\n'), (6, b"{}")]
    with pytest.raises(Exception) as exc:
        list(iter_lines(io.BytesIO(b"{}\n" + b"x" * 5000), max_line=1000))
    assert "line 2: the record is longer than 1,000 bytes" in str(exc.value)


def test_csv_field_over_the_csv_limit_is_a_422_naming_the_line(client, db):
    client.login(*_admin_login(db))
    before = counts(db)
    data = b"prompt,origin_user\nfine,u1\n\"" + b"x" * 200_000 + b"\",u2\n"
    response = client.post_form("/admin/prompts/import", files={"file": ("p.csv", data)})
    assert response.status_code == 422
    assert "line 3: not valid CSV" in response.text and "131,072 characters" in response.text
    assert counts(db) == before


def test_prompt_longer_than_the_limit_is_refused_before_scrubbing(client, db, settings, admin_headers):
    before = counts(db)
    long_prompt = "write to a.b@" * (settings.max_prompt_chars // 10)
    response = client.post("/api/prompts/import", json={"records": [{"prompt": long_prompt}]}, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "prompt"
    assert f"the limit is {settings.max_prompt_chars}" in response.json()["detail"]
    messages = [{"role": "user", "content": long_prompt}]
    response = client.post("/api/prompts/import", json={"records": [{"messages": messages}]}, headers=admin_headers)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "messages"
    # completions matched by prompt text: the text is checked before it is scrubbed
    response = client.post("/api/completions/import", json={"records": [{"prompt": long_prompt, "completion": "c"}]},
                           headers=admin_headers)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "prompt"
    assert counts(db) == before


def test_sft_and_comparison_imports_check_every_length(db, settings):
    before = counts(db)
    long_text = "x" * (settings.max_prompt_chars + 1)
    sft = orjson.dumps({"prompt": long_text, "completion": "fine"}) + b"\n"
    summary = import_file(db, settings, "sft", sft, name="s.jsonl")
    assert summary.imported == 0
    assert summary.skipped == {f"prompt longer than {settings.max_prompt_chars} characters": 1}
    long_response = "y" * (settings.max_demonstration_chars + 1)
    comparison = orjson.dumps({
        "prompt": "A fine prompt.", "completions": [{"id": 1, "text": long_response}, {"id": 2, "text": "short"}],
        "ranked": [[1], [2]],
    }) + b"\n"
    summary = import_file(db, settings, "comparisons", comparison, name="c.jsonl")
    assert summary.imported == 0
    assert summary.skipped == {f"response longer than {settings.max_demonstration_chars} characters": 1}
    pairwise = orjson.dumps({"prompt": "A fine prompt.", "chosen": long_response, "rejected": "short"}) + b"\n"
    summary = import_file(db, settings, "pairwise", pairwise, name="p.jsonl")
    assert summary.imported == 0 and sum(summary.skipped.values()) == 1
    assert counts(db) == before


def test_nul_in_import_lookup_keys_is_dropped_not_a_500(client, db, admin_headers):
    make_prompt(db, "An earlier prompt.", origin_user="u")
    db.commit()
    response = client.post("/api/prompts/import", json={"records": [{"prompt": "A new prompt.", "origin_user": "u\x00v"}]},
                           headers=admin_headers)
    assert response.status_code == 201, response.text
    assert db.scalar(select(Prompt.origin_user).where(Prompt.text == "A new prompt.")) == "uv"
    rows = orjson.dumps({"prompt": "P", "chosen": "a", "rejected": "b", "labeler": "x\x00y"}) + b"\n"
    response = client.post("/api/datasets/import/pairwise?batch=b1", files={"file": ("p.jsonl", rows)},
                           headers=admin_headers)
    assert response.status_code == 200, response.text
    assert db.scalar(select(Ranking.external_labeler).order_by(Ranking.id.desc()).limit(1)) == "xy"


def test_corpus_upload_is_read_as_a_stream_with_the_same_caps(client, db, settings, admin_headers):
    from app.datasets.models import Dataset

    settings.max_decompressed_bytes = 4 * 2**20
    before = db.scalar(select(func.count()).select_from(Dataset))
    bomb = gzip.compress(b"A document.\n") + gz_of_newlines(8 * 2**20)
    response = client.post("/api/datasets/corpus?name=bomb", files={"file": ("c.txt.gz", bomb)}, headers=admin_headers)
    assert response.status_code == 413 and response.json()["errors"][0]["field"] == "file"
    assert db.scalar(select(func.count()).select_from(Dataset)) == before
    # documents are runs of non-blank lines, however long the blank runs between them
    text = gzip.compress(b"one\ndoc\n" + b"\n" * 2**20 + b"  \t\nsecond doc\n\n\nthird\n")
    response = client.post("/api/datasets/corpus?name=ok", files={"file": ("c.txt.gz", text)}, headers=admin_headers)
    assert response.status_code == 201, response.text
    assert response.json()["row_count"] == 3
