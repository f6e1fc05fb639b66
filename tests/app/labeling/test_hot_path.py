"""The labeling API as token clients use it: authentication and roles and the token re-check
interval on the async hot path (PostgreSQL), and what "next" says when nothing is free."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from app.labeling.models import Ranking
from app.users import service as users
from tests.factories import make_ranking_batch, make_user

def hot_only(test):
    """Run ``test`` on the async hot path only (PostgreSQL)."""
    return pytest.mark.postgres_only(pytest.mark.parametrize("labeling_path", ["hot"], indirect=True)(test))


def token_client(make_client, db, role="labeler", **kw):
    user = make_user(db, role, **kw)
    _, token = users.create_token(db, user, "client")
    c = make_client()
    c.headers["Authorization"] = f"Bearer {token}"
    return c, user


def full_ranking(a):
    ids = [r["completion_id"] for r in a["responses"]]
    return {"ranked": [[i] for i in ids], "ratings": [{"completion_id": i, "likert": 5} for i in ids]}


@hot_only
def test_token_client_leases_and_submits_and_roles_are_checked(make_client, db):
    make_ranking_batch(db, tasks=2, k=4)
    c, _ = token_client(make_client, db)
    a = c.post("/api/labeling/next", json={"kind": "ranking"}).json()["assignment"]
    assert len(a["responses"]) == 4
    r = c.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking", json=full_ranking(a))
    assert r.status_code == 201 and r.json()["ranked"] == [[x["completion_id"]] for x in a["responses"]]
    admin, _ = token_client(make_client, db, role="admin")
    refused = admin.post("/api/labeling/next", json={"kind": "ranking"})
    assert refused.status_code == 403 and "labeler role" in refused.json()["detail"]
    stranger = make_client()
    stranger.headers["Authorization"] = "Bearer rlhf_not-a-real-token-000000000000000000000"
    assert stranger.post("/api/labeling/next", json={}).status_code == 401
    stranger.headers["Authorization"] = "Bearer nonsense"
    assert "Malformed" in stranger.post("/api/labeling/next", json={}).json()["detail"]
    assert db.scalar(select(func.count()).select_from(Ranking)) == 1


@hot_only
@pytest.mark.parametrize("recheck_s, cut_off", [(0.3, "revoke"), (0, "deactivate")])
def test_a_cut_off_token_stops_working_within_the_recheck_interval(make_client, db, app, recheck_s, cut_off):
    """RLHF_TOKEN_CACHE_S: within that many seconds (at once with 0), a revoked token or a
    deactivated labeler's token is refused."""
    make_ranking_batch(db, tasks=3, k=4)
    app.state.settings.token_cache_s = recheck_s
    admin = make_user(db, "admin")
    c, user = token_client(make_client, db)
    assert c.post("/api/labeling/next", json={}).status_code == 200
    if cut_off == "revoke":
        users.revoke_token(db, user.tokens[0].id, actor=admin)
    else:
        users.set_active(db, user.id, False, actor=admin)
    time.sleep(recheck_s * 1.2)
    r = c.post("/api/labeling/next", json={})
    assert r.status_code == 401 and ("revoked" in r.json()["detail"] or "Invalid" in r.json()["detail"])


def test_next_says_when_the_remaining_tasks_are_held_by_others(make_client, db):  # both paths
    make_ranking_batch(db, tasks=1, k=4)
    first, _ = token_client(make_client, db)
    second, _ = token_client(make_client, db)
    assert first.post("/api/labeling/next", json={}).json()["assignment"] is not None
    body = second.post("/api/labeling/next", json={}).json()
    assert body["assignment"] is None
    assert "1 task is being worked on by other labelers" in body["message"]
