"""An admin in Chromium builds a batch from chosen prompts with guidelines (F5 after creating
posts nothing again); a labeler sees the guidelines and progress on the task, then the work in
their history; the admin opens it from the review page."""

from __future__ import annotations

import itertools

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from app.db import unit_of_work
from app.labeling.models import Batch
from tests.browser.test_labeling_browser import login
from tests.factories import make_prompts, make_user

pytestmark = pytest.mark.browser
_n = itertools.count(1)


def test_admin_builds_a_guided_batch_from_chosen_prompts_and_the_labeler_sees_the_guidelines(live_server, new_page):
    n = next(_n)
    with unit_of_work(live_server.factory) as db:
        admin = make_user(db, "admin", username=f"review-admin{n}")
        labeler = make_user(db, "labeler", username=f"review-labeler{n}")
        chosen = make_prompts(db, [f"Chosen prompt {n}: describe a lighthouse at night."])
        make_prompts(db, [f"Not chosen {n}: describe a desert."])
        chosen_id = chosen[0].id
    page = new_page()
    login(page, live_server, admin.username)
    page.goto(f"{live_server.url}/admin/batches")
    page.fill("input[name=name]", f"guided {n}")
    page.select_option("select[name=kind]", "demonstration")
    page.fill("input[name=priority]", "990")
    page.fill("textarea[name=prompt_ids]", str(chosen_id))
    page.fill("textarea[name=guidelines]", "## Lighthouses\n\n- Mention the **beam**\n- <script>bad()</script>")
    page.click("button[value=preview]")
    expect(page.locator("[data-preview]")).to_contain_text("1 active prompt match")
    page.click("button[value=create]")
    expect(page.locator("[data-flash]")).to_contain_text(f"Batch guided {n} created with 1 task.")
    assert page.url == f"{live_server.url}/admin/batches"
    page.reload()  # F5 after the 303 repeats the GET: no second batch, no "already exists"
    expect(page.locator("[data-flash]")).to_have_count(0)
    with unit_of_work(live_server.factory) as db:
        assert db.scalar(select(func.count()).select_from(Batch).where(Batch.name == f"guided {n}")) == 1

    lab = new_page()
    login(lab, live_server, labeler.username)
    lab.click("#next-demonstration")
    lab.wait_for_selector("#demo-text")
    guide = lab.locator("#guidelines")
    expect(guide.locator("h2")).to_have_text("Lighthouses")
    expect(guide.locator("strong")).to_have_text("beam")
    expect(guide).to_contain_text("<script>bad()</script>")  # shown as text, never run
    expect(lab.locator("#task-progress")).to_contain_text(f"guided {n}: 1 of 1 tasks left")
    expect(lab.locator("#done-today")).to_have_text("0")

    # the labeler submits, then finds it in their history, read-only
    lab.fill("#demo-text", "The lighthouse sweeps its beam across the dark sea.")
    lab.click("#submit-demo")
    lab.wait_for_selector("#submitted")
    lab.goto(f"{live_server.url}/")
    expect(lab.locator("#home-done-today")).to_have_text("1")
    lab.click("text=Your history")
    expect(lab.locator("#submissions tbody tr")).to_have_count(1)
    lab.click("#submissions >> text=Open")
    expect(lab.locator("#submission-text")).to_have_text("The lighthouse sweeps its beam across the dark sea.")
    expect(lab.locator("#submission-prompt")).to_contain_text("describe a lighthouse at night")
    expect(lab.locator("main textarea, main button[type=submit]")).to_have_count(0)  # nothing to change

    # the admin finds it on the review page by labeler and opens it
    page.goto(f"{live_server.url}/review")
    page.fill("input[name=labeler]", labeler.username)
    page.click("form[aria-label=Filters] button[type=submit]")
    expect(page.locator("#submissions tbody tr")).to_have_count(1)
    page.click("#submissions >> text=Open")
    expect(page.locator("h1")).to_contain_text(f"by {labeler.username}")
    expect(page.locator("#submission-text")).to_contain_text("beam")
