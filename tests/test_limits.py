"""Body-size limits (app/limits.py): applied per route class before the body is parsed and before
anyone is authenticated; 413 naming the limit and the setting; nothing written."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEntry
from app.prompts.models import Prompt
from app.users import service as users
from tests.factories import make_user


def prompt_count(db) -> int:
    return db.scalar(select(func.count()).select_from(Prompt))


def audit_count(db) -> int:
    return db.scalar(select(func.count()).select_from(AuditEntry))


def chunks(total: int, piece: bytes = b" " * 65536):
    """A body of ``total`` bytes, made as it is sent (never held whole)."""
    sent = 0
    while sent < total:
        part = piece[: total - sent]
        sent += len(part)
        yield part


@pytest.fixture
def admin_headers(db):
    admin = make_user(db, "admin")
    _, token = users.create_token(db, admin, "t")
    db.commit()
    return {"Authorization": f"Bearer {token}"}


def test_declared_length_over_the_limit_is_refused_before_the_body_is_read(client, db):
    before = prompt_count(db), audit_count(db)
    # An anonymous 400 MB import: the Content-Length alone decides; the body is never read.
    response = client.post(
        "/api/prompts/import", content=chunks(400 * 2**20),
        headers={"content-type": "application/json", "content-length": str(400 * 2**20)},
    )
    assert response.status_code == 413
    body = response.json()
    assert body["errors"][0]["field"] == "body"
    assert "32 MiB" in body["detail"] and "RLHF_MAX_JSON_IMPORT_BYTES" in body["detail"]
    assert (prompt_count(db), audit_count(db)) == before


def test_streamed_body_is_cut_off_at_the_limit_even_for_an_admin(client, db, admin_headers):
    before = prompt_count(db)
    record = orjson.dumps({"prompt": "A prompt that would be imported.", "origin_user": "u"}) + b","

    def records():
        yield b'{"records": ['
        for _ in range(40 * 2**20 // len(record) + 1):  # > 32 MiB, no Content-Length: chunked
            yield record
        yield b'{"prompt": "last"}]}'

    response = client.post("/api/prompts/import", content=records(),
                           headers={**admin_headers, "content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert "RLHF_MAX_JSON_IMPORT_BYTES" in response.json()["detail"]
    assert prompt_count(db) == before


@pytest.mark.parametrize("path, content_type", [
    ("/api/labeling/next", "application/json"),
    ("/login", "application/x-www-form-urlencoded"),
    ("/api/datasets", "application/json"),
])
def test_json_and_form_bodies_get_the_small_limit(client, db, path, content_type):
    response = client.post(path, content=chunks(2 * 2**20), headers={"content-type": content_type})
    assert response.status_code == 413
    assert "1 MiB" in response.text and "RLHF_MAX_BODY_BYTES" in response.text


def test_upload_limit_is_a_setting_and_applies_to_every_upload_route(client, db, settings, admin_headers):
    settings.max_upload_bytes = 256 * 1024
    before = prompt_count(db)
    big = b'{"prompt": "x"}\n' * (300 * 1024 // 16)
    for path in ("/api/datasets/import/prompts", "/admin/prompts/import", "/api/datasets/corpus"):
        response = client.post(path, files={"file": ("p.jsonl", big)}, headers=admin_headers)
        assert response.status_code == 413, (path, response.text[:200])
        assert "256 KiB" in response.text and "RLHF_MAX_UPLOAD_BYTES" in response.text
    # under the limit, the same route imports
    small = b'{"prompt": "A small upload under the limit."}\n'
    assert client.post("/api/datasets/import/prompts", files={"file": ("p.jsonl", small)},
                       headers=admin_headers).status_code == 200
    assert prompt_count(db) == before + 1


def test_html_clients_get_a_413_page(client, db):
    response = client.post("/login", content=chunks(2 * 2**20),
                           headers={"content-type": "application/x-www-form-urlencoded", "accept": "text/html"})
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert "larger than 1 MiB" in response.text


def test_uploads_without_any_credentials_are_refused_before_the_body_is_read(client, db):
    before = prompt_count(db), audit_count(db)
    consumed = []

    def body():  # 100 MB, under the upload limit; counts what the server pulled
        for _ in range(100):
            consumed.append(1)
            yield b"x" * 2**20

    fresh = type(client)(client.app, raise_server_exceptions=False)  # no session cookie yet
    response = fresh.post("/api/datasets/import/prompts", content=body(),
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert len(consumed) <= 2  # the body was not read
    assert (prompt_count(db), audit_count(db)) == before
