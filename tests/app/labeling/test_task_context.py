"""Guidelines and progress above every task: the batch's Markdown guidelines (rendered safely)
and the labeler's counts (done today, left in the batch), also on the labeler home."""

from __future__ import annotations

from app.labeling import batches
from app.labeling import task_context as tc
from app.labeling.models import Task, TaskKind
from app.labeling.selection import PromptSelection
from tests.app.labeling.test_labeling import full_ranking, signed_in, take
from tests.factories import make_prompts, make_ranking_batch

GUIDE = "## How to rank\n\n- Prefer **honest** answers\n- <script>alert(1)</script> never runs\n"


def test_the_task_screen_shows_the_batch_guidelines_and_progress(make_client, db):
    b = make_ranking_batch(db, tasks=3, k=4)
    b.guidelines = GUIDE
    db.flush()
    c, user = signed_in(make_client, db)
    a = take(c)
    page = c.get(f"/labeling/assignments/{a['assignment_id']}")
    assert page.status_code == 200
    html = page.text
    assert 'id="guidelines" open' in html and "<h2>How to rank</h2>" in html and "<strong>honest</strong>" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert 'id="done-today">0<' in html and 'id="batch-left">3<' in html
    r = c.post(f"/api/labeling/assignments/{a['assignment_id']}/ranking", json=full_ranking(a))
    assert r.status_code == 201
    nxt = take(c)
    html = c.get(f"/labeling/assignments/{nxt['assignment_id']}").text
    assert 'id="done-today">1<' in html and 'id="batch-left">2<' in html
    assert 'id="guidelines" open' not in html and 'id="guidelines"' in html  # folded after the first submission
    assert 'id="home-done-today">1<' in c.get("/").text


def test_a_batch_without_guidelines_shows_progress_only(make_client, db):
    make_ranking_batch(db, tasks=1, k=4)
    c, _ = signed_in(make_client, db)
    a = take(c)
    html = c.get(f"/labeling/assignments/{a['assignment_id']}").text
    assert 'id="done-today"' in html and 'id="guidelines"' not in html


def test_progress_counts_left_for_this_labeler_and_the_batch(db):
    from tests.factories import make_user

    ps = make_prompts(db, ["Guide prompt one about owls.", "Guide prompt two about bats."])
    b = batches.create_batch(db, batches.BatchOptions(name="guided", kind=TaskKind.demonstration, guidelines="Be *brief*."),
                             selection=PromptSelection(prompt_ids=[p.id for p in ps]))
    user = make_user(db)
    task = db.query(Task).filter(Task.batch_id == b.id).first()
    ctx = tc.task_context(db, user, task)
    assert ctx["guidelines"] == "Be *brief*." and ctx["progress"] == {"total": 2, "done": 0, "left": 2, "left_for_you": 2, "yours": 0}
    assert ctx["today"] == {"rankings": 0, "demonstrations": 0, "total": 0}
