"""The ranking cards in headless Chromium: a full ranking by tap at desktop and phone size (touch),
by keyboard alone with a flag and all-bad, a skip with a reason, a stale second tab, and a draft
reloaded right after typing."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.db import unit_of_work
from app.labeling.models import Assignment, AssignmentStatus, Demonstration, Ranking, SkipReason
from tests.browser.test_labeling_browser import labeler_with, login
from tests.factories import make_demonstration_batch, make_ranking_batch

pytestmark = pytest.mark.browser


def _open_ranking(live_server, new_page, *, k, priority, tasks=1, **context):
    name = labeler_with(live_server, lambda db: make_ranking_batch(db, k=k, tasks=tasks, priority=priority))
    page = new_page(**context)
    login(page, live_server, name)
    page.click("#next-ranking")
    page.wait_for_selector("html[data-labeling-ready] #board")
    return page, name


def _latest_ranking(live_server):
    with unit_of_work(live_server.factory) as db:
        r = db.scalars(select(Ranking).order_by(Ranking.id.desc())).first()
        return ({e.completion_id: (e.bucket, e.likert, sorted(f.flag for f in e.flags)) for e in r.entries}, r.all_bad, r.comment)


def _cid(page, letter):
    return int(page.get_attribute(f"#response-{letter}", "data-cid"))


def _rank_by_tap(page, tap):
    """A ties with B at rank 1 (rank buttons on the cards), C gets a new rank by selecting its
    card and tapping "new rank"; D is inserted before C by the insert line; every card rated."""
    expect(page.locator("#missing")).to_contain_text("Still to do: rank A, B, C, D · rate A, B, C, D")
    expect(page.locator("#needs-rating-A")).to_be_visible()
    tap("#place-A-new")  # "Rank 1": the first rank
    expect(page.locator("#rank-badge-A")).to_have_text("Rank 1")
    tap("#place-B-1")  # a tie with A
    expect(page.locator("#rank-badge-B")).to_have_text("Rank 1 (tie with A)")
    tap("#chip-C")  # select the card ...
    expect(page.locator("#response-C")).to_have_class(__import__("re").compile(r"\bselected\b"))
    tap("li.new-bucket h4")  # ... and tap the "new rank" target
    expect(page.locator("#rank-badge-C")).to_have_text("Rank 2")
    tap("#chip-D")
    tap("li.insert-zone[data-insert='1']")  # a new rank between rank 1 and rank 2
    expect(page.locator("#rank-badge-D")).to_have_text("Rank 2")
    expect(page.locator("#rank-badge-C")).to_have_text("Rank 3")
    for x, v in zip("ABCD", "6634"):
        tap(f"#response-{x} label.likert-option:nth-of-type({v}) span")
    expect(page.locator("#needs-rating-A")).to_be_hidden()
    expect(page.locator("#missing")).to_have_text("Ready to submit.")


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_full_ranking_by_tap(live_server, new_page, size):
    if size == "desktop":
        page, _ = _open_ranking(live_server, new_page, k=4, priority=200)
        page.set_viewport_size({"width": 1280, "height": 800})
        tap = page.click
    else:
        page, _ = _open_ranking(live_server, new_page, k=4, priority=201, viewport={"width": 390, "height": 844},
                                has_touch=True, is_mobile=True)
        tap = page.tap
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width} px)"
        box = page.locator("#response-A").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        likert = page.locator("#response-A fieldset.likert label.likert-option")
        tops = {round(likert.nth(i).bounding_box()["y"]) for i in range(7)}
        assert len(tops) == 1, "the seven rating buttons are on one row"
    _rank_by_tap(page, tap)
    cid = {x: _cid(page, x) for x in "ABCD"}
    tap("#submit-ranking")
    expect(page.locator("#submitted")).to_contain_text("Ranking submitted")
    entries, all_bad, _ = _latest_ranking(live_server)
    assert {x: entries[cid[x]][:2] for x in "ABCD"} == {"A": (0, 6), "B": (0, 6), "D": (1, 4), "C": (2, 3)}


def test_keyboard_only_ranking_with_a_flag_and_all_bad(live_server, new_page):
    page, _ = _open_ranking(live_server, new_page, k=4, priority=202)
    kb = page.keyboard
    for letter, rank, rating in [("b", "1", "7"), ("a", "2", "5"), ("d", "3", "2"), ("c", "3", "2")]:
        kb.press(letter)
        kb.press(rank)
        kb.press(f"Shift+Digit{rating}")
    kb.press("a")
    kb.press("l")  # flags of A
    expect(page.locator("#response-A input[value='fails_instruction']")).to_be_focused()
    kb.press("Tab")
    kb.press("Space")  # "inappropriate for a customer assistant"
    kb.press("Escape")
    kb.press("x")  # all responses are bad
    assert page.is_checked("#all-bad")
    kb.press("m")
    expect(page.locator("#comment")).to_be_focused()
    kb.type("All four miss the point.")
    kb.press("Escape")
    expect(page.locator("#missing")).to_have_text("Ready to submit.")
    kb.press("Control+Enter")
    expect(page.locator("#submitted")).to_be_visible()
    expect(page.locator("#next-task")).to_be_focused()  # Enter takes the next task
    entries, all_bad, comment = _latest_ranking(live_server)
    assert all_bad is True and comment == "All four miss the point."
    assert sorted(b for b, _, _ in entries.values()) == [0, 1, 2, 2]
    assert any(flags == ["inappropriate_for_customer"] and likert == 5 for _, likert, flags in entries.values())


def test_skip_a_ranking_task_with_a_reason(live_server, new_page):
    page, name = _open_ranking(live_server, new_page, k=4, priority=203, tasks=2)
    first_url = page.url
    page.keyboard.press("s")
    expect(page.locator("#skip-reason")).to_be_focused()
    page.select_option("#skip-reason", "cannot_judge")
    page.fill("#skip-note", "Needs a lawyer")
    page.click("#skip")
    expect(page.locator("#skipped")).to_contain_text("You skipped this task")
    expect(page.locator("#skipped")).to_contain_text("Needs a lawyer")
    expect(page.locator("#skipped")).to_contain_text("will not be shown to you again")
    aid = int(first_url.rsplit("/", 1)[1])
    with unit_of_work(live_server.factory) as db:
        a = db.get(Assignment, aid)
        assert (a.status, a.skip_reason, a.skip_note) == (AssignmentStatus.skipped, SkipReason.cannot_judge, "Needs a lawyer")
        skipped_task = a.task_id
    page.keyboard.press("Enter")  # "Next ranking task" is focused
    page.wait_for_selector("html[data-labeling-ready] #board")
    assert page.url != first_url
    with unit_of_work(live_server.factory) as db:
        assert db.get(Assignment, int(page.url.rsplit("/", 1)[1])).task_id != skipped_task


def test_stale_second_tab_is_told_the_first_answer_was_kept(live_server, new_page):
    page, _ = _open_ranking(live_server, new_page, k=4, priority=204)
    other = page.context.new_page()
    other.goto(page.url)
    other.wait_for_selector("html[data-labeling-ready] #board")
    for p, order, comment in [(page, "abcd", "first tab"), (other, "dcba", "second tab")]:
        for i, letter in enumerate(order):
            p.keyboard.press(letter)
            p.keyboard.press(str(i + 1))
            p.keyboard.press("Shift+Digit4")
        p.fill("#comment", comment)
    page.click("#submit-ranking")
    expect(page.locator("#submitted")).to_be_visible()
    other.click("#submit-ranking")
    expect(other.locator("#notice")).to_contain_text("The first answer was kept")
    expect(other.locator("#kept")).to_contain_text("first tab")
    expect(other.locator("#kept li").first).to_contain_text("Response A")
    _, _, comment = _latest_ranking(live_server)
    assert comment == "first tab"


def test_draft_typed_and_reloaded_at_once_is_restored_whole(live_server, new_page):
    name = labeler_with(live_server, lambda db: make_demonstration_batch(db, texts=["Explain tides to a sailor."], priority=205))
    page = new_page()
    login(page, live_server, name)
    page.click("#next-demonstration")
    page.wait_for_selector("html[data-labeling-ready] #demo-text")
    text = ("Tides come from the Moon's pull on the oceans, and the Sun's a little. Twice a day the water rises and "
            "falls; spring tides at new and full moon are the largest, neap tides at the quarters the smallest. Mind the charts.")
    assert len(text) > 200
    page.type("#demo-text", text, delay=0)
    page.reload()  # at once: the last autosave may not have reached the server
    page.wait_for_selector("#demo-text")
    assert page.input_value("#demo-text") == text
    expect(page.locator("#draft-status")).to_contain_text("saved on the server at")
    page.click("#submit-demo")
    expect(page.locator("#submitted")).to_be_visible()
    with unit_of_work(live_server.factory) as db:
        assert db.scalar(select(Demonstration.text).where(Demonstration.text == text)) == text
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('rlhf-draft-')).length") == 0


def test_ranking_in_progress_survives_a_reload(live_server, new_page):
    page, _ = _open_ranking(live_server, new_page, k=4, priority=206)
    kb = page.keyboard
    for letter, rank, rating in [("c", "1", "6"), ("a", "1", "6"), ("b", "2", "3")]:
        kb.press(letter)
        kb.press(rank)
        kb.press(f"Shift+Digit{rating}")
    page.click("#response-B summary")
    page.check("#response-B input[value='hallucination']")
    page.fill("#comment", "C and A are equally good")
    page.reload()  # nothing was sent: the answer so far is kept in this browser
    page.wait_for_selector("html[data-labeling-ready] #board")
    expect(page.locator("#draft-status")).to_contain_text("Restored your unsent answer")
    expect(page.locator("#rank-badge-C")).to_have_text("Rank 1 (tie with A)")
    expect(page.locator("#rank-badge-B")).to_have_text("Rank 2")
    expect(page.locator("#rank-badge-D")).to_have_text("Not ranked")
    assert page.is_checked("#response-B input[value='hallucination']") and page.is_checked("#response-A input[value='6']")
    assert page.input_value("#comment") == "C and A are equally good"
    expect(page.locator("#missing")).to_have_text("Still to do: rank D · rate D (1 – 7)")


def test_home_page_focuses_the_next_ranking_task(live_server, new_page):
    name = labeler_with(live_server, lambda db: None)
    page = new_page()
    login(page, live_server, name)
    expect(page.locator("#next-ranking")).to_be_focused()
