"""A labeler in headless Chromium: demonstration with a closed tab, ranking by mouse and by keyboard."""

from __future__ import annotations

import itertools
import json

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.db import unit_of_work
from app.labeling.models import Demonstration, Ranking
from tests.factories import PASSWORD, make_demonstration_batch, make_ranking_batch, make_user

pytestmark = pytest.mark.browser
_n = itertools.count(1)


def labeler_with(live_server, setup):
    with unit_of_work(live_server.factory) as db:
        user = make_user(db, "labeler", username=f"browser{next(_n)}")
        setup(db)
        return user.username


def login(page, live_server, username):
    page.goto(f"{live_server.url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def open_ranking_by_keyboard(live_server, page, *, k: int, priority: int):
    """A new labeler with a ranking batch of their own signs in and opens it with the keyboard."""
    name = labeler_with(live_server, lambda db: make_ranking_batch(db, k=k, priority=priority))
    login(page, live_server, name)
    page.focus("#next-ranking")
    page.keyboard.press("Enter")
    page.wait_for_selector("#board")
    return page


def test_demonstration_draft_survives_a_closed_tab(live_server, new_page):
    name = labeler_with(live_server, lambda db: make_demonstration_batch(db, texts=["Describe a thunderstorm to a child."], priority=50))
    page = new_page()
    login(page, live_server, name)
    page.click("#next-demonstration")
    page.wait_for_selector("#demo-text")
    assignment_url = page.url
    page.fill("#demo-text", "Thunder is the sound lightning makes")
    expect(page.locator("#draft-status")).to_contain_text("Draft saved")
    page.context.close()  # the tab (and the whole browser session) is gone

    page = new_page()
    login(page, live_server, name)
    assert "draft of 36 characters" in page.text_content("#unfinished")
    page.goto(assignment_url)
    assert page.input_value("#demo-text") == "Thunder is the sound lightning makes"
    page.fill("#demo-text", "Thunder is the sound lightning makes when it heats the air very fast.")
    page.click("#submit-demo")
    page.wait_for_selector("#submitted")
    with unit_of_work(live_server.factory) as db:
        texts = list(db.scalars(select(Demonstration.text)))
    assert "Thunder is the sound lightning makes when it heats the air very fast." in texts


def _rate_all(page):
    for article in page.query_selector_all("article.response"):
        article.query_selector("input[type=radio][value='5']").check()


def test_rank_k5_with_the_mouse_including_a_tie(live_server, new_page):
    name = labeler_with(live_server, lambda db: make_ranking_batch(db, k=5, priority=60))
    page = new_page(viewport={"width": 1280, "height": 2400})  # dragged card and drop target both in view
    login(page, live_server, name)
    page.click("#next-ranking")
    page.wait_for_selector("#board")
    _rate_all(page)
    page.click("#response-B summary")
    page.check("#response-B input[value='hallucination']")
    # A into a new rank 1; B tied with A; C, D, E each a new rank
    page.drag_and_drop("#chip-A", "li.new-bucket")
    page.drag_and_drop("#chip-B", "li.bucket[data-index='0']")
    for letter in "CDE":
        page.drag_and_drop(f"#chip-{letter}", "li.new-bucket")
    assert page.text_content("li.bucket[data-index='0'] h4") == "Rank 1 (tie)"
    page.click("#submit-ranking")
    page.wait_for_selector("#submitted")
    with unit_of_work(live_server.factory) as db:
        r = db.scalars(select(Ranking).order_by(Ranking.id.desc())).first()
        buckets = sorted((e.bucket, e.shown_position) for e in r.entries)
        flags = [f.flag for e in r.entries for f in e.flags]
    assert buckets == [(0, 0), (0, 1), (1, 2), (2, 3), (3, 4)]
    assert flags == ["hallucination"] and r.time_spent_s > 0


def test_rank_by_keyboard_alone_with_a_tie_and_an_error_that_keeps_input(live_server, new_page):
    page = open_ranking_by_keyboard(live_server, new_page(), k=5, priority=70)
    assert "Ctrl + Enter" in page.text_content("#shortcuts")
    page.locator("body").click(position={"x": 5, "y": 5})  # nothing focused in a text field
    for letter, rank, rating in [("B", "1", "7"), ("C", "1", "6"), ("A", "2", "3"), ("D", "3", "2")]:
        page.keyboard.press(letter.lower())
        page.keyboard.press(rank)
        page.keyboard.press(f"Shift+Digit{rating}")
    page.keyboard.press("Control+Enter")  # E is not ranked or rated yet: refused, input kept
    page.wait_for_selector("#form-error")
    assert "not rated yet" in page.text_content("#form-error") or "not ranked yet" in page.text_content("#form-error")
    assert page.is_checked("#response-B input[value='7']")
    page.wait_for_selector("li.bucket[data-index='0'] #chip-B")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("e")
    page.keyboard.press("4")
    page.keyboard.press("Shift+Digit1")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#submitted")
    with unit_of_work(live_server.factory) as db:
        r = db.scalars(select(Ranking).order_by(Ranking.id.desc())).first()
        by_pos = {e.shown_position: (e.bucket, e.likert) for e in r.entries}
    assert by_pos == {0: (1, 3), 1: (0, 7), 2: (0, 6), 3: (2, 2), 4: (3, 1)}


def test_prompt_with_script_and_html_renders_as_inert_text(live_server, new_page):
    evil = "<script>window.pwned=1</script><img src=x onerror='window.pwned=2'><b>bold?</b>"
    name = labeler_with(live_server, lambda db: make_ranking_batch(db, k=4, priority=80, prompt_texts=[evil]))
    page = new_page()
    login(page, live_server, name)
    page.click("#next-ranking")
    page.wait_for_selector("#prompt-text")
    assert page.text_content("#prompt-text") == evil
    assert page.evaluate("window.pwned === undefined")
    assert page.query_selector("#prompt-text b") is None and page.query_selector("#prompt-text img") is None


def _cids(page):
    return {letter: int(page.get_attribute(f"#chip-{letter}", "data-cid")) for letter in "ABCD"}


def _stored_buckets(live_server):
    """The latest stored ranking as buckets of completion ids, best first (ties sorted)."""
    with unit_of_work(live_server.factory) as db:
        r = db.scalars(select(Ranking).order_by(Ranking.id.desc())).first()
        by_bucket: dict[int, list[int]] = {}
        for e in r.entries:
            by_bucket.setdefault(e.bucket, []).append(e.completion_id)
    return [sorted(by_bucket[b]) for b in sorted(by_bucket)]


def test_insert_a_new_rank_between_two_ranks_with_the_mouse(live_server, new_page):
    name = labeler_with(live_server, lambda db: make_ranking_batch(db, k=4, priority=90))
    page = new_page(viewport={"width": 1280, "height": 2400})  # dragged card and drop target both in view
    login(page, live_server, name)
    page.click("#next-ranking")
    page.wait_for_selector("#board")
    _rate_all(page)
    cid = _cids(page)
    page.drag_and_drop("#chip-A", "li.new-bucket")
    page.drag_and_drop("#chip-B", "li.new-bucket")
    zones = page.locator("li.insert-zone")
    expect(zones).to_have_count(2)
    expect(zones.nth(0)).to_have_text("Drop here to insert a new rank before Rank 1")
    expect(zones.nth(1)).to_have_text("Drop here to insert a new rank between Rank 1 and Rank 2")
    page.drag_and_drop("#chip-C", "li.insert-zone[data-insert='1']")
    expect(page.locator("li.bucket[data-index='1'] #chip-C")).to_be_visible()
    assert [page.text_content(f"li.bucket[data-index='{i}'] h4") for i in range(3)] == ["Rank 1", "Rank 2", "Rank 3"]
    expect(page.locator("li.bucket[data-index='2'] #chip-B")).to_be_visible()
    page.drag_and_drop("#chip-D", "li.new-bucket")
    assert json.loads(page.input_value("#ranked-input")) == [[cid["A"]], [cid["C"]], [cid["B"]], [cid["D"]]]
    page.click("#submit-ranking")
    page.wait_for_selector("#submitted")
    assert _stored_buckets(live_server) == [[cid["A"]], [cid["C"]], [cid["B"]], [cid["D"]]]


def test_insert_a_new_rank_between_two_ranks_by_keyboard_alone(live_server, new_page):
    page = open_ranking_by_keyboard(live_server, new_page(), k=4, priority=100)
    assert "N, then 1 – 9" in page.text_content("#shortcuts")
    cid = _cids(page)
    page.locator("body").click(position={"x": 5, "y": 5})  # nothing focused in a text field

    def ranked():
        return json.loads(page.input_value("#ranked-input"))

    for letter, keys in [("a", ["1"]), ("b", ["2"]), ("c", ["n", "2"]), ("d", ["4"])]:
        page.keyboard.press(letter)
        for key in keys:
            page.keyboard.press(key)
        page.keyboard.press("Shift+Digit5")
    assert ranked() == [[cid["A"]], [cid["C"]], [cid["B"]], [cid["D"]]]
    # moving a ranked response to a new rank leaves no empty rank behind: B (rank 3) becomes rank 1, then back
    page.keyboard.press("b")
    page.keyboard.press("n")
    page.keyboard.press("1")
    assert ranked() == [[cid["B"]], [cid["A"]], [cid["C"]], [cid["D"]]]
    expect(page.locator("#selected-status")).to_have_text("Response B is now rank 1 of 4 on its own")
    page.keyboard.press("n")
    page.keyboard.press("3")
    assert ranked() == [[cid["A"]], [cid["C"]], [cid["B"]], [cid["D"]]]
    # Escape cancels a pending new rank: the next digit is a plain rank again (a tie with A)
    page.keyboard.press("d")
    page.keyboard.press("n")
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    assert ranked() == [[cid["A"], cid["D"]], [cid["C"]], [cid["B"]]]
    page.keyboard.press("n")
    page.keyboard.press("9")  # past the end: a new last rank
    assert ranked() == [[cid["A"]], [cid["C"]], [cid["B"]], [cid["D"]]]
    assert page.locator("li.bucket:not(.new-bucket)").count() == 4
    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#submitted")
    assert _stored_buckets(live_server) == [[cid["A"]], [cid["C"]], [cid["B"]], [cid["D"]]]
