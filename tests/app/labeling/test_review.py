"""The review of submissions: admins (and researchers, read-only) browse by batch, labeler and
agreement, and open any one; labelers cannot."""

from __future__ import annotations

from app.labeling.models import Batch
from tests.app.labeling.test_labeling import signed_in, take
from tests.factories import make_ranking_batch


def _rank(c, reverse=False):
    a = take(c)
    ids = [r["completion_id"] for r in a["responses"]]
    ids = sorted(ids, reverse=reverse)
    body = {"ranked": [[i] for i in ids], "ratings": [{"completion_id": i, "likert": 5, "flags": []} for i in ids]}
    r = c.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_admin_browses_by_batch_labeler_and_agreement_and_opens_one(make_client, db):
    b = make_ranking_batch(db, tasks=1, k=4, overlap_share=1.0, overlap_count=2)
    other = make_ranking_batch(db, tasks=1, k=4)
    l1, u1 = signed_in(make_client, db)
    l2, u2 = signed_in(make_client, db)
    r1 = _rank(l1)
    r2 = _rank(l2, reverse=True)  # the exact opposite order: agreement 0 on b's task
    r3 = _rank(l1)  # l1's task of the other batch (single labeler)
    admin, _ = signed_in(make_client, db, "admin")
    everything = admin.get("/review")
    assert everything.status_code == 200 and everything.text.count('data-kind="ranking"') == 3

    by_batch = admin.get("/review", params={"batch": b.name})
    assert by_batch.text.count('data-kind="ranking"') == 2 and "0%" in by_batch.text
    by_labeler = admin.get("/review", params={"labeler": u1.username})
    assert by_labeler.text.count('data-kind="ranking"') == 2 and u2.username not in by_labeler.text.split('id="submissions"')[1]
    low = admin.get("/review", params={"max_agreement": "0.5"})
    listed = low.text.split('id="submissions"')[1]
    assert f"/review/rankings/{r1}" in listed and f"/review/rankings/{r2}" in listed and f"/review/rankings/{r3}" not in listed

    one = admin.get(f"/review/rankings/{r2}")
    assert one.status_code == 200 and f"by {u2.username}" in one.text and "Response A" in one.text
    assert f"Batch {b.name}" in one.text and other.name not in one.text


def test_review_filters_name_the_wrong_field(make_client, db):
    admin, _ = signed_in(make_client, db, "admin")
    for params, field in (({"batch": "no-such-batch"}, "batch"), ({"labeler": "nobody-here"}, "labeler"),
                          ({"max_agreement": "2"}, "max_agreement"), ({"kind": "poem"}, "kind")):
        r = admin.get("/review", params=params)
        assert r.status_code == 422 and f'data-field="{field}"' in r.text, (params, r.status_code)
    assert admin.get("/review/rankings/999999").status_code == 404


def test_researchers_may_review_and_labelers_may_not(make_client, db):
    make_ranking_batch(db, tasks=1, k=4)
    lab, _ = signed_in(make_client, db)
    rid = _rank(lab)
    researcher, _ = signed_in(make_client, db, "researcher")
    assert researcher.get("/review").status_code == 200
    assert researcher.get(f"/review/rankings/{rid}").status_code == 200
    assert lab.get("/review").status_code == 403 and lab.get(f"/review/rankings/{rid}").status_code == 403
    assert db.query(Batch).count() >= 1
