"""A labeler's own history: past rankings and demonstrations, newest first, paginated, each
openable read-only; nobody else's."""

from __future__ import annotations

from app.labeling import submissions
from tests.app.labeling.test_labeling import full_ranking, signed_in, take
from tests.factories import make_demonstration_batch, make_ranking_batch


def _rank(c, *, tie=True, flag=None, comment=""):
    a = take(c)
    body = full_ranking(a, tie=tie)
    if flag:
        body["ratings"][2]["flags"] = [flag]
    body["ratings"][1]["likert"] = 6
    body["comment"] = comment
    r = c.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking", json=body)
    assert r.status_code == 201, r.text
    return a, r.json()


def test_history_lists_own_submissions_and_opens_a_ranking_with_order_ties_ratings_and_flags(make_client, db):
    make_ranking_batch(db, tasks=2, k=4)
    make_demonstration_batch(db, texts=["Describe a sunrise over the sea."])
    c, user = signed_in(make_client, db)
    other, _ = signed_in(make_client, db)
    a, ranking = _rank(c, flag="hallucination", comment="B <b>rambles</b>")
    d = take(c, "demonstration")
    demo = c.post(f"/api/labeling/assignments/{d['assignment_id']}/demonstration", json={"text": "The sun <i>rises</i>."})
    assert demo.status_code == 201
    page = c.get("/labeling/history")
    assert page.status_code == 200
    assert page.text.count('data-kind="ranking"') == 1 and page.text.count('data-kind="demonstration"') == 1
    assert f'/labeling/history/rankings/{ranking["id"]}' in page.text

    detail = c.get(f"/labeling/history/rankings/{ranking['id']}")
    assert detail.status_code == 200
    html = detail.text
    # the order as submitted, with the tie: the first two responses shown (A and B) share rank 1
    assert "<li><strong>A</strong> = <strong>B</strong> <span class=\"muted\">(tied)</span></li>" in html
    assert "rated 6/7" in html and "Hallucinates" in html
    assert "B &lt;b&gt;rambles&lt;/b&gt;" in html  # the comment is escaped
    assert "m0" not in html.split('id="submitted-order"')[1]  # a labeler never sees model names
    assert "<form" not in html.split("<main")[1].split("</main>")[0].replace('action="/logout"', "")  # read-only

    own_demo = c.get(f"/labeling/history/demonstrations/{demo.json()['id']}")
    assert own_demo.status_code == 200 and "The sun &lt;i&gt;rises&lt;/i&gt;." in own_demo.text
    # another labeler's submissions are not theirs to open
    assert other.get(f"/labeling/history/rankings/{ranking['id']}").status_code == 404
    assert other.get(f"/labeling/history/demonstrations/{demo.json()['id']}").status_code == 404
    assert 'data-kind=' not in other.get("/labeling/history").text


def test_history_is_paginated_newest_first(make_client, db):
    make_ranking_batch(db, tasks=3, k=4)
    c, user = signed_in(make_client, db)
    ids = [_rank(c)[1]["id"] for _ in range(3)]
    rows, total = submissions.list_submissions(db, submissions.Filters(labeler_id=user.id), page=1, per_page=2)
    assert total == 3 and [r["id"] for r in rows] == ids[::-1][:2]
    rows2, _ = submissions.list_submissions(db, submissions.Filters(labeler_id=user.id), page=2, per_page=2)
    assert [r["id"] for r in rows2] == [ids[0]]
    first = c.get("/labeling/history")
    assert "Page 1 of 1 · 3 submissions" in first.text
    assert c.get("/labeling/history?page=0").status_code == 422
    assert c.get("/labeling/history?kind=poems").status_code == 422
    only = c.get("/labeling/history?kind=demonstration")
    assert only.status_code == 200 and 'data-kind="ranking"' not in only.text


def test_history_is_for_labelers_only(make_client, db):
    admin, _ = signed_in(make_client, db, "admin")
    assert admin.get("/labeling/history").status_code == 403
