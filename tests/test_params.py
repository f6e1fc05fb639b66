"""No 500s on bad input (app/params.py): integers beyond the database's range and NUL characters
are a 422 naming the field, on every route, before anything is looked up or written; an
unexpected error is logged once."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.labeling.models import Batch, Ranking
from app.datasets.models import Dataset
from app.users import service as users
from tests.factories import PASSWORD, make_ranking_task, make_user

BIG = "99999999999999999999"  # beyond 64 bits
BIG32 = str(2**31)  # beyond the INTEGER columns


def counts(db):
    return tuple(db.scalar(select(func.count()).select_from(t)) for t in (Batch, Ranking, Dataset))


def bearer(db, role):
    user = make_user(db, role)
    _, token = users.create_token(db, user, "t")
    db.commit()
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("url, field", [
    (f"/api/datasets/{BIG}", "dataset_id"),
    (f"/api/datasets/{BIG32}/download", "dataset_id"),
    (f"/api/models/{BIG}", "model_id"),
    (f"/api/runs/{BIG32}", "run_id"),
    (f"/api/evals/{BIG}", "evaluation_id"),
    (f"/datasets/{BIG}", "dataset_id"),
    (f"/api/prompts?offset={BIG}", "offset"),
    (f"/api/prompts?limit=-{BIG}", "limit"),
])
def test_ids_beyond_the_integer_range_are_a_422_naming_the_field(client, db, url, field):
    response = client.get(url, headers={**bearer(db, "admin"), "accept": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert "out of range" in response.json()["detail"]


def test_completion_ids_beyond_the_range_on_the_labeling_hot_path(client, db):
    headers = bearer(db, "labeler")
    make_ranking_task(db, k=2)
    db.commit()
    assignment = client.post("/api/labeling/next", json={"kind": "ranking"}, headers=headers).json()["assignment"]
    before = counts(db)
    url = f"/api/labeling/assignments/{assignment['assignment_id']}/ranking"
    for body, field in [({"ranked": [[int(BIG)], [1]]}, "ranked.0.0"), ({"ranked": [[2**31], [1]]}, "ranked.0.0"),
                        ({"ranked": [[1], [2]], "ratings": [{"completion_id": 2**40}]}, "ratings.0.completion_id")]:
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field
    response = client.post(f"/api/labeling/assignments/{BIG}/ranking", json={"ranked": [[1], [2]]}, headers=headers)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "assignment_id"
    assert counts(db) == before


def test_nul_in_the_login_username_is_a_422_naming_it(client, db):
    make_user(db, "admin", username="root")
    db.commit()
    response = client.post("/login", data={"username": "ro\x00ot", "password": PASSWORD, "csrf_token": client.csrf()},
                           follow_redirects=False)
    assert response.status_code == 422
    assert "NUL character" in response.text and "username" in response.text
    assert client.get("/api/me").status_code == 401  # not signed in


@pytest.mark.parametrize("method, url, kwargs, field", [
    ("get", "/api/agreement?batch=a%00b", {}, "batch"),
    ("get", "/agreement?batch=a%00b", {}, "batch"),
    ("get", "/api/export/pairwise?batch=a%00b", {}, "batch"),
    ("get", "/datasets/export?kind=pairwise&batch=a%00b", {}, "batch"),
    ("post", "/api/labeling/batches", {"json": {"name": "b\x00"}}, "name"),
    ("post", "/api/datasets", {"json": {"kind": "sft", "name": "d\x00"}}, "name"),
    ("post", "/api/datasets/corpus?name=c%00", {"files": {"file": ("c.txt", b"some text\n")}}, "name"),
    ("post", "/api/datasets/import/pairwise?batch=x%00", {"files": {"file": ("p.jsonl", b"{}\n")}}, "batch"),
])
def test_nul_in_names_is_a_422_naming_the_field_and_nothing_changes(client, db, method, url, kwargs, field):
    headers = {**bearer(db, "admin"), "accept": "application/json"}
    before = counts(db)
    response = getattr(client, method)(url, headers=headers, **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert "NUL character" in response.json()["detail"]
    assert response.headers["content-type"].startswith("application/json")  # not a cut-off export stream
    assert counts(db) == before


def test_nul_in_an_admin_form_field(client, db):
    admin = make_user(db, "admin")
    db.commit()
    client.login(admin.username, PASSWORD)
    before = counts(db)
    response = client.post_form("/datasets/freeze", {"kind": "sft", "name": "n\x00"})
    assert response.status_code == 422 and "NUL character" in response.text
    assert counts(db) == before


def test_an_unexpected_error_is_logged_once_and_answered_500(app, caplog):
    def boom():
        raise RuntimeError("boom")

    app.add_api_route("/api/test-boom", boom)
    with caplog.at_level(logging.ERROR), TestClient(app) as plain:  # raise_server_exceptions=True
        response = plain.get("/api/test-boom")  # does not raise: the error stops at the app
    assert response.status_code == 500
    assert response.json()["error"] == "Server error"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and tracebacks[0].name == "rlhf.web"
