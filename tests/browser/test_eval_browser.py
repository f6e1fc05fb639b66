"""A held-out evaluator in headless Chromium judges a blind A/B task by keyboard alone; the admin
then reads the result on the evaluation's page (win-rate table and chart)."""

from __future__ import annotations

import itertools
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.config import Settings
from app.db import unit_of_work
from app.evals.models import Evaluation, EvaluationModel
from app.labeling import batches
from app.labeling.models import Ranking, TaskKind
from app.prompts.models import Completion
from app.prompts.service import content_hash
from tests.factories import PASSWORD, make_model, make_prompt, make_user

pytestmark = pytest.mark.browser
_n = itertools.count(1)


def login(page, live_server, username):
    page.goto(f"{live_server.url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def make_evaluation(live_server, tmp_path, *, priority: int) -> dict:
    """Two registered policies, one held-out prompt with a response from each, the evaluation
    batch (held-out evaluators only) and the Evaluation over it; a held-out labeler and an admin."""
    n = next(_n)
    settings = Settings(mode="test", secret_key="x" * 40, artifact_dir=tmp_path)
    with unit_of_work(live_server.factory) as db:
        labeler = make_user(db, "labeler", username=f"evaluator{n}", group="heldout")
        admin = make_user(db, "admin", username=f"evaladmin{n}")
        baseline = make_model(db, settings, kind="sft", name=f"eval-sft-baseline-{n}")
        candidate = make_model(db, settings, kind="ppo", name=f"eval-ppo-candidate-{n}")
        prompt = make_prompt(db, f"Explain to a child why the sky is blue (evaluation {n}).", split="test")
        texts = {baseline.id: "Because of the ocean reflecting on it.",
                 candidate.id: "Sunlight scatters off the air; blue light scatters the most, so the sky looks blue."}
        comps = {}
        for m in (baseline, candidate):
            c = Completion(prompt_id=prompt.id, text=texts[m.id], model_name=m.name, model_id=m.id,
                           content_hash=content_hash(texts[m.id]))
            db.add(c)
            db.flush()
            comps[m.id] = c.id
        batch = batches.create_batch(
            db, batches.BatchOptions(name=f"eval: browser {n}", kind=TaskKind.ranking, k=2, purpose="evaluation",
                                     heldout_only=True, priority=priority),
            items={prompt.id: [comps[baseline.id], comps[candidate.id]]},
        )
        evaluation = Evaluation(name=f"browser eval {n}", baseline_model_id=baseline.id, batch_id=batch.id,
                                heldout_only=True, prompt_selection={"split": "test"})
        db.add(evaluation)
        db.flush()
        db.add_all([EvaluationModel(evaluation_id=evaluation.id, model_id=baseline.id, position=0),
                    EvaluationModel(evaluation_id=evaluation.id, model_id=candidate.id, position=1)])
        db.flush()
        return {"labeler": labeler.username, "admin": admin.username, "evaluation_id": evaluation.id,
                "batch_id": batch.id, "baseline": baseline.name, "candidate": candidate.name,
                "baseline_cid": comps[baseline.id], "candidate_cid": comps[candidate.id]}


def open_next_by_keyboard(page, live_server, username):
    login(page, live_server, username)
    page.focus("#next-ranking")
    page.keyboard.press("Enter")
    page.wait_for_selector("#preference")


def letters_of(page) -> dict[int, str]:
    return {int(page.get_attribute(f"#response-{x}", "data-cid")): x for x in "AB"}


def stored(live_server, batch_id):
    """The batch's ranking: buckets (completion ids, best first, ties sorted), Likert and flags per id."""
    with unit_of_work(live_server.factory) as db:
        r = db.scalars(select(Ranking).where(Ranking.batch_id == batch_id)).one()
        by_bucket: dict[int, list[int]] = {}
        for e in r.entries:
            by_bucket.setdefault(e.bucket, []).append(e.completion_id)
        return ([sorted(by_bucket[b]) for b in sorted(by_bucket)],
                {e.completion_id: e.likert for e in r.entries},
                {e.completion_id: sorted(f.flag for f in e.flags) for e in r.entries}, r.time_spent_s)


def test_heldout_evaluator_judges_ab_by_keyboard_alone_and_admin_sees_the_win_rate(live_server, new_page, tmp_path):
    ev = make_evaluation(live_server, tmp_path, priority=900)
    page = new_page()
    open_next_by_keyboard(page, live_server, ev["labeler"])
    # a blind comparison: no model name anywhere, the responses are A and B, the keys are on screen
    html = page.content()
    assert ev["baseline"] not in html and ev["candidate"] not in html and "eval-" not in html
    expect(page.locator("#blind-note")).to_contain_text("Blind comparison")
    expect(page.locator("#response-A h3")).to_have_text("Response A")
    expect(page.locator("#response-B h3")).to_have_text("Response B")
    shortcuts = page.text_content("#shortcuts")
    for keys in ["1 – 7", "A is better", "About the same", "B is better", "Enter", "Tab"]:
        assert keys in shortcuts, keys
    box_a, box_b = page.locator("#response-A").bounding_box(), page.locator("#response-B").bounding_box()
    assert box_b["x"] > box_a["x"] + box_a["width"] / 2 and abs(box_a["y"] - box_b["y"]) < 2  # side by side
    letter = letters_of(page)
    cand, base = letter[ev["candidate_cid"]], letter[ev["baseline_cid"]]

    # Likert for A by the arrow key and a digit; Tab (through A's rating and flags) onto B, rate it
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#response-A")).to_be_focused()
    page.keyboard.press("6")
    page.keyboard.press("Tab")  # A's rating (the checked radio)
    page.keyboard.press("Tab")  # A's "Flags"
    page.keyboard.press("Tab")  # Response B
    expect(page.locator("#response-B")).to_be_focused()
    expect(page.locator("#response-B")).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("3")
    assert page.is_checked("#response-A input[type=radio][value='6']")
    assert page.is_checked("#response-B input[type=radio][value='3']")
    # a flag on the baseline's response: F opens the selected response's flags, Space ticks the first
    page.keyboard.press("ArrowLeft" if base == "A" else "ArrowRight")
    expect(page.locator(f"#response-{base}")).to_be_focused()
    page.keyboard.press("f")
    expect(page.locator(f"#response-{base} input[value='fails_instruction']")).to_be_focused()
    page.keyboard.press("Space")
    page.keyboard.press("Escape")
    expect(page.locator(f"#response-{base}")).to_be_focused()
    # the preference: first "about the same", then the candidate is better (digits never touch it)
    page.keyboard.press("=")
    assert page.is_checked("#pref-same")
    page.keyboard.press(cand.lower())
    assert page.is_checked(f"#pref-{cand.lower()}")
    expect(page.locator("#ab-status")).to_contain_text(f"{cand} is better")
    page.keyboard.press("Enter")
    page.wait_for_selector("#submitted")
    expect(page.locator("#judged")).to_have_text(f"{cand} is better")

    buckets, likert, flags, spent = stored(live_server, ev["batch_id"])
    assert buckets == [[ev["candidate_cid"]], [ev["baseline_cid"]]]
    assert likert == {ev["candidate_cid"]: 6 if cand == "A" else 3, ev["baseline_cid"]: 6 if base == "A" else 3}
    assert flags == {ev["baseline_cid"]: ["fails_instruction"], ev["candidate_cid"]: []}
    assert spent > 0

    # the admin reads the result: the candidate won its only comparison
    admin = new_page()
    login(admin, live_server, ev["admin"])
    admin.goto(f"{live_server.url}/evals/{ev['evaluation_id']}")
    row = admin.locator(f"#win-rates tr[data-model='{ev['candidate']}']")
    expect(row.locator("td.win-rate")).to_have_text("100.0%")
    expect(admin.locator(f"#win-rates tr[data-model='{ev['baseline']}']")).to_contain_text("baseline")
    expect(admin.locator("#win-chart rect.win-bar")).to_have_count(1)
    expect(admin.locator("#win-chart rect.win-bar title")).to_contain_text(f"{ev['candidate']}: 100.0%")
    assert float(admin.get_attribute("#win-chart rect.win-bar", "width")) > 0


def test_submit_without_a_preference_is_refused_and_keeps_the_input(live_server, new_page, tmp_path):
    ev = make_evaluation(live_server, tmp_path, priority=901)
    page = new_page()
    open_next_by_keyboard(page, live_server, ev["labeler"])
    page.keyboard.press("5")  # Response A is selected at first
    page.keyboard.press("ArrowRight")
    page.keyboard.press("4")
    page.keyboard.press("Enter")  # no preference yet
    expect(page.locator("#form-error")).to_contain_text("Choose which response is better")
    assert page.is_checked("#response-A input[type=radio][value='5']")
    assert page.is_checked("#response-B input[type=radio][value='4']")
    assert not page.is_checked("#pref-same")
    page.keyboard.press("=")
    page.keyboard.press("Enter")
    page.wait_for_selector("#submitted")
    expect(page.locator("#judged")).to_have_text("About the same")
    buckets, likert, _, _ = stored(live_server, ev["batch_id"])
    assert buckets == [sorted([ev["candidate_cid"], ev["baseline_cid"]])]
    assert sorted(likert.values()) == [4, 5]
