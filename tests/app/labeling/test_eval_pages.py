"""The evaluator's blind A/B screen: an evaluation batch's ranking task, as a held-out labeler sees
it in the browser (no JavaScript here: the plain form), and what a preference is stored as."""

from __future__ import annotations

import itertools
import re

import pytest
from sqlalchemy import func, select

from app.labeling import batches
from app.labeling.models import Assignment, Ranking, TaskKind
from app.prompts.models import Completion
from app.prompts.service import content_hash
from tests.factories import PASSWORD, make_prompt, make_user

_n = itertools.count(1)
MODELS = ["secret-policy-alpha-7b", "secret-policy-beta-13b", "secret-policy-gamma-1b"]


def make_eval_batch(db, *, k: int = 2, texts: list[str] | None = None, heldout_only: bool = True,
                    prompt_text: str | None = None):
    """An evaluation batch of one task: one prompt of the test split, one response per model."""
    n = next(_n)
    prompt = make_prompt(db, prompt_text or f"Explain evaluation topic {n} to a new colleague.", split="test")
    texts = texts or [f"Answer number {i} on topic {n}." for i in range(k)]
    comps = [Completion(prompt_id=prompt.id, text=t, model_name=MODELS[i], model_id=None, content_hash=content_hash(t))
             for i, t in enumerate(texts)]
    db.add_all(comps)
    db.flush()
    batch = batches.create_batch(
        db, batches.BatchOptions(name=f"eval: page test {n}", kind=TaskKind.ranking, k=k, purpose="evaluation",
                                 heldout_only=heldout_only),
        items={prompt.id: [c.id for c in comps]},
    )
    return batch, comps


def signed_in(make_client, db, role="labeler", **kw):
    user = make_user(db, role, **kw)
    c = make_client()
    c.login(user.username, PASSWORD)
    c.headers["X-CSRF-Token"] = c.csrf()
    return c, user


def open_next(c) -> tuple[str, int]:
    """The page flow: 'Next ranking task' on the home page, then the task's page."""
    r = c.post_form("/labeling/next", {"kind": "ranking"})
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    return url, int(url.rsplit("/", 1)[1])


def stored_buckets(db) -> list[list[int]]:
    """The latest ranking as buckets of completion ids, best first (ties sorted)."""
    db.expire_all()
    r = db.scalars(select(Ranking).order_by(Ranking.id.desc())).first()
    by_bucket: dict[int, list[int]] = {}
    for e in r.entries:
        by_bucket.setdefault(e.bucket, []).append(e.completion_id)
    return [sorted(by_bucket[b]) for b in sorted(by_bucket)]


def ab_form(shown, preference=None, *, likert=("6", "3"), **extra):
    form = {f"likert_{cid}": v for cid, v in zip(shown, likert) if v}
    if preference is not None:
        form["preference"] = preference
    return {**form, **extra}


def test_heldout_labeler_gets_the_blind_ab_page(make_client, db):
    make_eval_batch(db)
    c, _ = signed_in(make_client, db, group="heldout")
    assert 'id="waiting-ranking">1<' in c.get("/").text
    url, aid = open_next(c)
    page = c.get(url)
    assert page.status_code == 200
    html = page.text
    for name in MODELS + ["model_name", "secret-policy"]:
        assert name not in html, name
    assert "Response A" in html and "Response B" in html and "Response C" not in html
    assert "Blind comparison" in html and 'id="blind-note"' in html
    assert 'class="responses side-by-side"' in html
    # the preference with ties, and no ranking board
    for key, label in [("a", "A is better"), ("same", "About the same"), ("b", "B is better")]:
        assert f'name="preference" value="{key}" id="pref-{key}"' in html and label in html
    assert 'id="board"' not in html and "data-ab" in html and "data-ranking" not in html
    # Likert 1-7 and the flags for each response, in the order shown to this labeler
    shown = db.get(Assignment, aid).shown_order
    for cid in shown:
        assert all(f'name="likert_{cid}" value="{v}"' in html for v in range(1, 8))
        assert f'name="flag_{cid}" value="hallucination"' in html
    assert html.index(f'data-cid="{shown[0]}" data-letter="A"') < html.index(f'data-cid="{shown[1]}" data-letter="B"')
    # the keyboard scheme is on the page
    shortcuts = re.search(r'<dl id="shortcuts">(.*?)</dl>', html, re.DOTALL).group(1)
    for keys in ["1 – 7", "<kbd>A</kbd>", "<kbd>=</kbd>", "<kbd>B</kbd>", "<kbd>Enter</kbd>", "<kbd>F</kbd>", "← / →"]:
        assert keys in shortcuts, keys
    assert "Submit judgment" in html and "<script>" not in html.split("</head>", 1)[1]


def test_train_labeler_gets_no_evaluation_task(make_client, db):
    make_eval_batch(db)
    train, _ = signed_in(make_client, db, group="train")
    assert 'id="waiting-ranking">0<' in train.get("/").text
    r = train.post_form("/labeling/next", {"kind": "ranking"})
    assert r.status_code == 200 and "No ranking tasks are waiting for you right now." in r.text
    assert train.post("/api/labeling/next", json={"kind": "ranking"}).json()["assignment"] is None
    assert train.post("/api/labeling/next", json={}).json()["assignment"] is None
    assert db.scalar(select(func.count()).select_from(Assignment)) == 0
    # the same batch is there for the held-out group
    heldout, _ = signed_in(make_client, db, group="heldout")
    a = heldout.post("/api/labeling/next", json={"kind": "ranking"}).json()["assignment"]
    assert a is not None and len(a["responses"]) == 2
    assert not any(m in str(a) for m in MODELS)


def test_evaluation_batch_open_to_everyone_when_not_heldout_only(make_client, db):
    make_eval_batch(db, heldout_only=False)
    train, _ = signed_in(make_client, db, group="train")
    url, _ = open_next(train)
    assert "A is better" in train.get(url).text


@pytest.mark.parametrize("preference, expected", [("a", "A>B"), ("same", "A=B"), ("b", "B>A")])
def test_ab_preference_is_stored_as_the_right_buckets(make_client, db, preference, expected):
    make_eval_batch(db)
    c, _ = signed_in(make_client, db, group="heldout")
    url, aid = open_next(c)
    shown = db.get(Assignment, aid).shown_order
    a, b = shown
    form = ab_form(shown, preference, **{f"flag_{b}": "hallucination", "comment": "B makes up a date",
                                         "time_spent_s": "41.5", "ranked": "[[999999]]"})  # ranked is ignored
    r = c.post_form(f"{url}/ranking", form)
    assert r.status_code == 303, r.text
    want = {"A>B": [[a], [b]], "A=B": [sorted([a, b])], "B>A": [[b], [a]]}[expected]
    assert stored_buckets(db) == want
    ranking = db.scalars(select(Ranking)).one()
    by_cid = {e.completion_id: e for e in ranking.entries}
    assert (by_cid[a].likert, by_cid[b].likert) == (6, 3)
    assert (by_cid[a].shown_position, by_cid[b].shown_position) == (0, 1)
    assert [f.flag for f in by_cid[a].flags] == [] and [f.flag for f in by_cid[b].flags] == ["hallucination"]
    assert ranking.comment == "B makes up a date" and ranking.time_spent_s == 41.5
    done = c.get(url).text
    label = {"a": "A is better", "same": "About the same", "b": "B is better"}[preference]
    assert "Judgment submitted" in done and f'<strong id="judged">{label}</strong>' in done
    assert not any(m in done for m in MODELS)
    # the same form sent again (a double click, a retry) is still one judgment; so is a bare retry
    assert c.post_form(f"{url}/ranking", form).status_code == 303
    assert c.post_form(f"{url}/ranking", {}).status_code == 303
    assert db.scalar(select(func.count()).select_from(Ranking)) == 1
    assert stored_buckets(db) == want


def test_ab_errors_are_readable_and_keep_the_input(make_client, db):
    make_eval_batch(db)
    c, _ = signed_in(make_client, db, group="heldout")
    url, aid = open_next(c)
    shown = db.get(Assignment, aid).shown_order
    extra = {f"flag_{shown[0]}": "expresses_opinion", "comment": "kept comment"}
    cases = [
        (ab_form(shown, None, **extra), "Choose which response is better", None),
        (ab_form(shown, "c", **extra), "Choose which response is better", None),
        (ab_form(shown, "b", likert=("6", ""), **extra), "B not rated yet", "b"),
    ]
    for form, phrase, kept_pref in cases:
        bad = c.post_form(f"{url}/ranking", form)
        assert bad.status_code == 422 and phrase in bad.text, (phrase, bad.text[:2000])
        assert 'id="form-error"' in bad.text and "kept comment" in bad.text
        assert f'name="likert_{shown[0]}" value="6" checked' in bad.text
        assert 'value="expresses_opinion" checked' in bad.text
        checked = re.findall(r'name="preference" value="(\w+)" id="pref-\w+" checked', bad.text)
        assert checked == ([kept_pref] if kept_pref else [])
    assert db.scalar(select(func.count()).select_from(Ranking)) == 0
    # without the CSRF token nothing is taken either
    forged = c.post(f"{url}/ranking", data=ab_form(shown, "a"), headers={"X-CSRF-Token": ""}, follow_redirects=False)
    assert forged.status_code == 403
    assert db.scalar(select(func.count()).select_from(Ranking)) == 0
    assert c.post_form(f"{url}/ranking", ab_form(shown, "a")).status_code == 303
    assert stored_buckets(db) == [[shown[0]], [shown[1]]]


def test_another_labeler_cannot_see_or_judge_the_ab_task(make_client, db):
    make_eval_batch(db)
    c, _ = signed_in(make_client, db, group="heldout")
    other, _ = signed_in(make_client, db, group="heldout")
    url, aid = open_next(c)
    shown = db.get(Assignment, aid).shown_order
    assert other.get(url).status_code == 404
    assert other.post_form(f"{url}/ranking", ab_form(shown, "a")).status_code == 404
    assert db.scalar(select(func.count()).select_from(Ranking)) == 0


def test_ab_page_escapes_prompt_and_responses(make_client, db):
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    make_eval_batch(db, prompt_text=f"Prompt {evil}", texts=[f"First {evil}", f"Second <b>bold</b> {evil}"])
    c, _ = signed_in(make_client, db, group="heldout")
    url, _ = open_next(c)
    html = c.get(url).text
    assert "<script>alert(1)" not in html and "<img src=x" not in html and "<b>bold</b>" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;") == 3
    assert "&lt;b&gt;bold&lt;/b&gt;" in html


def test_n_way_evaluation_keeps_the_ranking_board(make_client, db):
    make_eval_batch(db, k=3)
    c, _ = signed_in(make_client, db, group="heldout")
    url, aid = open_next(c)
    html = c.get(url).text
    assert not any(m in html for m in MODELS)
    assert "Blind comparison" in html and 'class="board"' in html
    assert all(f"Response {x}" in html for x in "ABC")
    assert 'id="board"' in html and "data-ranking" in html and 'name="preference"' not in html
    shown = db.get(Assignment, aid).shown_order
    form = {"ranked": f"[[{shown[2]}], [{shown[0]}, {shown[1]}]]", **{f"likert_{cid}": "4" for cid in shown}}
    assert c.post_form(f"{url}/ranking", form).status_code == 303
    assert stored_buckets(db) == [[shown[2]], sorted(shown[:2])]
    assert "Judgment submitted" in c.get(url).text


def test_training_ranking_page_is_unchanged(make_client, db):
    from tests.factories import make_ranking_batch

    make_ranking_batch(db, k=4)
    c, _ = signed_in(make_client, db, group="heldout")
    url, _ = open_next(c)
    html = c.get(url).text
    assert "Rank the responses" in html and 'id="board"' in html and "Blind comparison" not in html
    assert 'name="preference"' not in html and "Shift + 1 – 7" in html
