"""Labeling as a labeler and an admin see it: next task, leases, ranking and demonstration submits."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import func, select

from app.db import utcnow
from app.labeling.models import Assignment, Demonstration, Draft, Ranking, RankingFlag, Task
from tests.factories import PASSWORD, expire_lease, make_demonstration_batch, make_ranking_batch, make_user


def signed_in(make_client, db, role="labeler", **kw):
    user = make_user(db, role, **kw)
    c = make_client()
    c.login(user.username, PASSWORD)
    c.headers["X-CSRF-Token"] = c.csrf()
    return c, user


def take(c, kind="ranking"):
    r = c.post("/api/labeling/next", json={"kind": kind})
    assert r.status_code == 200, r.text
    return r.json()["assignment"]


def full_ranking(a, *, tie=False):
    ids = [r["completion_id"] for r in a["responses"]]
    ranked = [[ids[0], ids[1]], *[[i] for i in ids[2:]]] if tie else [[i] for i in ids]
    return {"ranked": ranked, "ratings": [{"completion_id": i, "likert": 4, "flags": []} for i in ids], "time_spent_s": 12.5}


def test_ranking_roundtrip_records_order_shown_ratings_flags_and_time(make_client, db):
    make_ranking_batch(db, k=5)
    c, user = signed_in(make_client, db)
    a = take(c)
    assert len(a["responses"]) == 5
    body = full_ranking(a, tie=True)
    body["ratings"][0]["flags"] = ["hallucination", "expresses_opinion"]
    body["ratings"][1]["likert"] = 7
    r = c.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["ranked"][0] == sorted(body["ranked"][0], key=body["ranked"][0].index) and len(out["ranked"]) == 4
    ranking = db.get(Ranking, out["id"])
    shown = db.get(Assignment, a["assignment_id"]).shown_order
    assert shown == [x["completion_id"] for x in a["responses"]]
    assert {e.completion_id: e.shown_position for e in ranking.entries} == {cid: i for i, cid in enumerate(shown)}
    assert ranking.time_spent_s == 12.5
    assert sorted(f.flag for f in db.scalars(select(RankingFlag))) == ["expresses_opinion", "hallucination"]
    assert db.get(Task, ranking.task_id).status.value == "done"


def test_double_submit_returns_the_same_ranking(make_client, db):
    make_ranking_batch(db, k=4)
    c, _ = signed_in(make_client, db)
    a = take(c)
    url = f"/api/labeling/assignments/{a['assignment_id']}/ranking"
    first = c.post(url, json=full_ranking(a))
    second = c.post(url, json=full_ranking(a))
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert db.scalar(select(func.count()).select_from(Ranking)) == 1


def test_invalid_rankings_get_readable_errors_and_change_nothing(make_client, db):
    make_ranking_batch(db, k=4)
    c, _ = signed_in(make_client, db)
    a = take(c)
    ids = [r["completion_id"] for r in a["responses"]]
    url = f"/api/labeling/assignments/{a['assignment_id']}/ranking"
    ratings = [{"completion_id": i, "likert": 3} for i in ids]
    cases = {
        "not ranked yet": {"ranked": [[ids[0]], [ids[1]], [ids[2]]], "ratings": ratings},
        "more than once": {"ranked": [[ids[0]], [ids[0], ids[1]], [ids[2]], [ids[3]]], "ratings": ratings},
        "is empty": {"ranked": [[ids[0]], [], [ids[1], ids[2], ids[3]]], "ratings": ratings},
        "not one of the responses": {"ranked": [[ids[0], ids[1], ids[2], ids[3], 999999]], "ratings": ratings},
        "from 1 to 7": {"ranked": [[i] for i in ids], "ratings": [{**r, "likert": 8} for r in ratings]},
        "Unknown flag": {"ranked": [[i] for i in ids], "ratings": [{**r, "flags": ["nope"]} for r in ratings]},
    }
    for phrase, body in cases.items():
        r = c.post(url, json=body)
        assert r.status_code == 422 and phrase in r.json()["detail"], (phrase, r.text)
    assert db.scalar(select(func.count()).select_from(Ranking)) == 0


def test_all_bad_is_a_valid_answer_and_long_comment_is_refused(make_client, db, settings):
    make_ranking_batch(db, k=4)
    c, _ = signed_in(make_client, db)
    a = take(c)
    url = f"/api/labeling/assignments/{a['assignment_id']}/ranking"
    too_long = c.post(url, json={**full_ranking(a), "comment": "x" * (settings.max_comment_chars + 1)})
    assert too_long.status_code == 422 and "limit" in too_long.json()["detail"]
    ok = c.post(url, json={**full_ranking(a, tie=True), "all_bad": True, "comment": "all off-topic"})
    assert ok.status_code == 201 and ok.json()["all_bad"] is True


def test_never_twice_never_another_labelers_lease_and_overlap(make_client, db):
    make_ranking_batch(db, tasks=2, k=4, overlap_share=1.0, overlap_count=2)
    c1, _ = signed_in(make_client, db)
    c2, _ = signed_in(make_client, db)
    c3, _ = signed_in(make_client, db)
    a1 = take(c1)
    assert take(c1)["assignment_id"] == a1["assignment_id"]  # resumes the live lease
    # another labeler cannot see or submit someone else's assignment
    assert c2.get(f"/api/labeling/assignments/{a1['assignment_id']}").status_code == 404
    assert c2.post(f"/api/labeling/assignments/{a1['assignment_id']}/ranking", json=full_ranking(a1)).status_code == 404
    c1.post(f"/api/labeling/assignments/{a1['assignment_id']}/ranking", json=full_ranking(a1))
    a1b = take(c1)
    assert a1b["task_id"] != a1["task_id"]  # never the same task twice
    c1.post(f"/api/labeling/assignments/{a1b['assignment_id']}/ranking", json=full_ranking(a1b))
    assert c1.post("/api/labeling/next", json={"kind": "ranking"}).json()["assignment"] is None
    a2 = take(c2)
    c2.post(f"/api/labeling/assignments/{a2['assignment_id']}/ranking", json=full_ranking(a2))
    a2b = take(c2)
    c2.post(f"/api/labeling/assignments/{a2b['assignment_id']}/ranking", json=full_ranking(a2b))
    # both tasks have their 2 submissions: nothing left for a third labeler
    assert c3.post("/api/labeling/next", json={"kind": "ranking"}).json()["assignment"] is None
    assert [t.submission_count for t in db.scalars(select(Task).order_by(Task.id))] == [2, 2]


def test_expired_lease_returns_the_task_and_late_submit_rules(make_client, db):
    make_ranking_batch(db, k=4)
    c1, _ = signed_in(make_client, db)
    c2, _ = signed_in(make_client, db)
    a1 = take(c1)
    assert c2.post("/api/labeling/next", json={"kind": "ranking"}).json()["assignment"] is None  # leased
    expire_lease(db, a1["assignment_id"])
    a2 = take(c2)  # back in the pool
    assert a2["task_id"] == a1["task_id"]
    late = c1.post(f"/api/labeling/assignments/{a1['assignment_id']}/ranking", json=full_ranking(a1))
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    assert c2.post(f"/api/labeling/assignments/{a2['assignment_id']}/ranking", json=full_ranking(a2)).status_code == 201


def test_late_submit_is_accepted_while_the_task_still_needs_it(make_client, db):
    make_ranking_batch(db, k=4)
    c1, _ = signed_in(make_client, db)
    a1 = take(c1)
    expire_lease(db, a1["assignment_id"], minutes_ago=5)
    assert c1.post(f"/api/labeling/assignments/{a1['assignment_id']}/ranking", json=full_ranking(a1)).status_code == 201


def test_heldout_labelers_stay_out_of_batches_that_exclude_them(make_client, db):
    make_ranking_batch(db, k=4, include_heldout=False)
    c, _ = signed_in(make_client, db, group="heldout")
    assert c.post("/api/labeling/next", json={"kind": "ranking"}).json()["assignment"] is None


def test_priority_order(make_client, db):
    low = make_ranking_batch(db, k=4, priority=0)
    high = make_ranking_batch(db, k=4, priority=5)
    c, _ = signed_in(make_client, db)
    a = take(c)
    assert db.get(Task, a["task_id"]).batch_id == high.id != low.id


def test_demonstration_draft_submit_duplicate_and_skip(make_client, db, settings):
    make_demonstration_batch(db, texts=["Describe a sunset.", "Describe a sunrise.", "Describe rain."])
    c, user = signed_in(make_client, db)
    a = take(c, "demonstration")
    url = f"/api/labeling/assignments/{a['assignment_id']}"
    assert c.put(f"{url}/draft", json={"text": "The sky turns", "time_spent_s": 30}).status_code == 200
    page = c.get(f"/labeling/assignments/{a['assignment_id']}")
    assert "The sky turns" in page.text and "Draft restored" in page.text
    too_long = c.post(f"{url}/demonstration", json={"text": "x" * (settings.max_demonstration_chars + 1)})
    assert too_long.status_code == 422 and "limit" in too_long.json()["detail"]
    first = c.post(f"{url}/demonstration", json={"text": "The sky turns orange and the sun sets."})
    again = c.post(f"{url}/demonstration", json={"text": "The sky turns orange and the sun sets."})
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["id"] == again.json()["id"]
    assert db.scalar(select(func.count()).select_from(Draft)) == 0
    b = take(c, "demonstration")
    dup = c.post(f"/api/labeling/assignments/{b['assignment_id']}/demonstration", json={"text": "The sky turns orange and the sun sets."})
    assert dup.status_code == 409 and "already submitted this exact text" in dup.json()["detail"]
    skipped = c.post(f"/api/labeling/assignments/{b['assignment_id']}/skip", json={"reason": "unclear"})
    assert skipped.status_code == 200
    d = take(c, "demonstration")
    assert d["prompt"]["id"] not in (a["prompt"]["id"], b["prompt"]["id"])
    assert db.scalar(select(func.count()).select_from(Demonstration)) == 1


def test_labeler_never_gets_a_prompt_they_wrote(make_client, db):
    c, user = signed_in(make_client, db)
    r = c.post_form("/labeling/write", {"kind": "plain", "text": "My own prompt about whales.", "category": "generation"})
    assert r.status_code == 303 and "saved" in c.get(r.headers["location"]).text
    from app.labeling import batches
    from app.labeling.models import TaskKind

    batches.create_batch(db, batches.BatchOptions(name="own", kind=TaskKind.demonstration))
    assert c.post("/api/labeling/next", json={"kind": "demonstration"}).json()["assignment"] is None
    other, _ = signed_in(make_client, db)
    assert take(other, "demonstration")["prompt"]["text"] == "My own prompt about whales."


def test_ranking_page_keeps_input_after_an_error(make_client, db):
    make_ranking_batch(db, k=4)
    c, _ = signed_in(make_client, db)
    r = c.post_form("/labeling/next", {"kind": "ranking"})
    assert r.status_code == 303
    url = r.headers["location"]
    aid = int(url.rsplit("/", 1)[1])
    shown = db.get(Assignment, aid).shown_order
    form = {"ranked": json.dumps([[shown[0]], [shown[1]]]), f"likert_{shown[0]}": "6", f"flag_{shown[0]}": "hallucination",
            "comment": "kept comment"}
    bad = c.post_form(f"{url}/ranking", form)
    assert bad.status_code == 422
    assert "not ranked yet" in bad.text and "kept comment" in bad.text
    assert f'name="likert_{shown[0]}" value="6" checked' in bad.text
    assert 'value="hallucination" checked' in bad.text
    good = {"ranked": json.dumps([[s] for s in shown]), **{f"likert_{s}": "5" for s in shown}}
    ok = c.post_form(f"{url}/ranking", good)
    assert ok.status_code == 303
    assert "Ranking submitted" in c.get(url).text
    assert c.post_form(f"{url}/ranking", good).status_code == 303  # resubmitted form: still one ranking
    assert db.scalar(select(func.count()).select_from(Ranking)) == 1


def test_prompt_text_is_escaped_on_the_ranking_page(make_client, db):
    make_ranking_batch(db, k=4, prompt_texts=["<script>alert(1)</script><b>bold</b>"])
    c, _ = signed_in(make_client, db)
    page = c.get(c.post_form("/labeling/next", {"kind": "ranking"}).headers["location"])
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in page.text


def test_labeler_home_shows_waiting_work_and_own_counts(make_client, db):
    make_ranking_batch(db, tasks=3, k=4)
    make_demonstration_batch(db)
    c, _ = signed_in(make_client, db)
    home = c.get("/")
    assert 'id="waiting-ranking">3<' in home.text and 'id="waiting-demonstration">1<' in home.text
    a = take(c)
    c.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking", json=full_ranking(a))
    home = c.get("/")
    assert 'id="waiting-ranking">2<' in home.text and "1 rankings" in home.text


def test_admin_creates_batch_from_page_and_labeler_is_refused(make_client, db):
    make_ranking_batch(db, k=4)  # prompts with 4 completions exist
    admin, _ = signed_in(make_client, db, "admin")
    labeler, _ = signed_in(make_client, db)
    bad = admin.post_form("/admin/batches", {"name": "b1", "kind": "ranking", "k": "3"})
    assert bad.status_code == 422 and "from 4 to 9" in bad.text and 'value="b1"' in bad.text
    ok = admin.post_form("/admin/batches", {"name": "b1", "kind": "ranking", "k": "4", "overlap_share": "0.5",
                                            "overlap_count": "3", "lease_minutes": "10", "priority": "2"})
    assert ok.status_code == 303 and ok.headers["location"] == "/admin/batches"  # F5 does not post again
    page = admin.get("/admin/batches")
    assert "Batch b1 created" in page.text and "Batch b1 created" not in admin.get("/admin/batches").text
    assert labeler.get("/admin/batches").status_code == 403
    assert labeler.post_form("/admin/batches", {"name": "b2"}).status_code == 403


def test_created_and_repeated_submit_answer_the_same_view_and_skip_then_submit_counts_nothing(make_client, db):
    """The fast submit path builds its answer from the input; a repeat reads it back from the database."""
    make_ranking_batch(db, tasks=2, k=4)
    c, _ = signed_in(make_client, db)
    a = take(c)
    body = full_ranking(a, tie=True)
    body["ratings"][2]["flags"] = ["violent_content", "hallucination", "violent_content"]
    url = f"/api/labeling/assignments/{a['assignment_id']}/ranking"
    first, second = c.post(url, json=body), c.post(url, json=body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == {**first.json(), "already_submitted": True, "same_as_sent": True}
    b = take(c)
    assert c.post(f"/api/labeling/assignments/{b['assignment_id']}/skip", json={"reason": "unclear"}).status_code == 200
    late = c.post(f"/api/labeling/assignments/{b['assignment_id']}/ranking", json=full_ranking(b))
    assert late.status_code == 409 and "skipped" in late.json()["detail"]
    assert db.get(Task, b["task_id"]).submission_count == 0
    assert db.scalar(select(func.count()).select_from(Ranking)) == 1
