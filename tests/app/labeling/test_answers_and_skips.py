"""Answers that never mislead (a stale second tab is told the first answer was kept, and sees
it) and skips or reports on every task kind, with a reason, kept for admins."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from app.labeling.models import Assignment, AssignmentStatus, Ranking, SkipReason
from app.labeling.ranking import KEPT_FIRST
from tests.app.labeling.test_labeling import full_ranking, signed_in, take
from tests.factories import make_demonstration_batch, make_ranking_batch


def test_api_repeat_with_a_different_ranking_says_the_first_was_kept(make_client, db):
    make_ranking_batch(db, k=4)
    c, _ = signed_in(make_client, db)
    a = take(c)
    url = f"/api/labeling/assignments/{a['assignment_id']}/ranking"
    first = c.post(url, json=full_ranking(a))
    other = full_ranking(a)
    other["ranked"] = list(reversed(other["ranked"]))
    other["ratings"][0]["flags"] = ["hallucination"]
    again = c.post(url, json=other)
    assert (first.status_code, again.status_code) == (201, 200)
    body = again.json()
    assert body["already_submitted"] is True and body["same_as_sent"] is False and body["message"] == KEPT_FIRST
    assert body["ranked"] == first.json()["ranked"] and body["ratings"] == first.json()["ratings"]
    assert db.scalar(select(func.count()).select_from(Ranking)) == 1


def _open_page(c, kind):
    r = c.post_form("/labeling/next", {"kind": kind})
    assert r.status_code == 303
    url = r.headers["location"]
    return url, int(url.rsplit("/", 1)[1])


def test_stale_tab_ranking_page_says_the_first_was_kept_and_shows_it(make_client, db):
    make_ranking_batch(db, k=4)
    c, _ = signed_in(make_client, db)
    url, aid = _open_page(c, "ranking")
    shown = db.get(Assignment, aid).shown_order
    first = {"ranked": json.dumps([[s] for s in shown]), **{f"likert_{s}": "5" for s in shown}, "comment": "first tab"}
    assert c.post_form(f"{url}/ranking", first).headers["location"] == url
    same = c.post_form(f"{url}/ranking", first)
    assert same.headers["location"] == url  # the same answer again: nothing to warn about
    second = {"ranked": json.dumps([[s] for s in reversed(shown)]), **{f"likert_{s}": "2" for s in shown}, "comment": "second tab"}
    stale = c.post_form(f"{url}/ranking", second)
    assert stale.status_code == 303 and stale.headers["location"] == f"{url}?notice=kept"
    page = c.get(stale.headers["location"]).text
    assert "The first answer was kept" in page and "The answer kept" in page
    assert "first tab" in page and "second tab" not in page
    assert 'id="next-task" autofocus' in page
    assert db.scalar(select(Ranking.comment)) == "first tab"


def test_stale_tab_demonstration_page_says_the_first_was_kept(make_client, db):
    make_demonstration_batch(db)
    c, _ = signed_in(make_client, db)
    url, _ = _open_page(c, "demonstration")
    assert c.post_form(f"{url}/demonstration", {"text": "The first answer."}).headers["location"] == url
    stale = c.post_form(f"{url}/demonstration", {"text": "A different answer."})
    assert stale.headers["location"] == f"{url}?notice=kept"
    page = c.get(stale.headers["location"]).text
    assert "The first answer was kept" in page and "The first answer." in page and "A different answer." not in page


def test_skip_a_ranking_task_with_a_reason_and_note_from_the_page(make_client, db):
    make_ranking_batch(db, tasks=2, k=4)
    c, user = signed_in(make_client, db)
    url, aid = _open_page(c, "ranking")
    page = c.get(url).text
    assert 'id="skip-form"' in page and 'value="cannot_judge"' in page
    refused = c.post_form(f"{url}/skip", {"reason": "other", "note": "  "})
    assert refused.status_code == 422 and "Say in the note why you skip" in refused.text
    assert db.get(Assignment, aid).status == AssignmentStatus.active  # nothing changed
    bad = c.post_form(f"{url}/skip", {"reason": "bored"})
    assert bad.status_code == 422 and "Choose why you skip" in bad.text
    done = c.post_form(f"{url}/skip", {"reason": "other", "note": "Needs medical knowledge"})
    assert done.status_code == 303 and done.headers["location"] == f"{url}?notice=skipped"
    shown = c.get(done.headers["location"]).text
    assert "You skipped this task" in shown and "Needs medical knowledge" in shown and "not be shown to you again" in shown
    a = db.get(Assignment, aid)
    db.refresh(a)
    assert (a.status, a.skip_reason, a.skip_note) == (AssignmentStatus.skipped, SkipReason.other, "Needs medical knowledge")
    nxt, next_aid = _open_page(c, "ranking")
    assert next_aid != aid and db.get(Assignment, next_aid).task_id != a.task_id
    # an admin can count skips by reason
    counts = dict(db.execute(select(Assignment.skip_reason, func.count()).where(Assignment.status == AssignmentStatus.skipped)
                             .group_by(Assignment.skip_reason)).all())
    assert counts == {SkipReason.other: 1}


def test_skip_by_api_keeps_the_note_and_refuses_a_long_one(make_client, db):
    make_ranking_batch(db, k=4)
    c, _ = signed_in(make_client, db)
    a = take(c)
    url = f"/api/labeling/assignments/{a['assignment_id']}/skip"
    long = c.post(url, json={"reason": "cannot_judge", "note": "x" * 2001})
    assert long.status_code == 422
    ok = c.post(url, json={"reason": "cannot_judge", "note": "Not my language"})
    assert ok.status_code == 200 and ok.json() == {"assignment_id": a["assignment_id"], "status": "skipped",
                                                   "reason": "cannot_judge", "note": "Not my language"}


def test_skip_a_demonstration_from_the_page_says_so(make_client, db):
    make_demonstration_batch(db)
    c, _ = signed_in(make_client, db)
    url, aid = _open_page(c, "demonstration")
    done = c.post_form(f"{url}/skip", {"reason": "personal_data"})
    assert done.headers["location"] == f"{url}?notice=skipped"
    page = c.get(done.headers["location"]).text
    assert "You skipped this task" in page and "It contains personal data" in page and 'id="next-task" autofocus' in page
    assert db.get(Assignment, aid).skip_reason == SkipReason.personal_data


def test_skip_a_blind_evaluation_from_the_page(make_client, db):
    from tests.app.labeling.test_eval_pages import make_eval_batch, open_next
    from tests.app.labeling.test_eval_pages import signed_in as eval_signed_in

    make_eval_batch(db, k=2)
    c, _ = eval_signed_in(make_client, db, group="heldout")
    url, aid = open_next(c)
    assert 'id="skip-form"' in c.get(url).text
    done = c.post_form(f"{url}/skip", {"reason": "cannot_judge", "note": "Both are in a language I do not read"})
    assert done.status_code == 303
    page = c.get(done.headers["location"]).text
    assert "You skipped this task" in page and "Both are in a language I do not read" in page
    a = db.get(Assignment, aid)
    db.refresh(a)
    assert a.status == AssignmentStatus.skipped


def test_home_focuses_next_ranking_task(make_client, db):
    c, _ = signed_in(make_client, db)
    assert 'id="next-ranking" autofocus' in c.get("/").text
