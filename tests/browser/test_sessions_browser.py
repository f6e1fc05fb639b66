"""Sessions in a real browser (Chromium): a cross-site form POST does not sign the victim out; a user
ends their other sessions from the sessions page and changes their password."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from app.db import unit_of_work
from app.users.models import User
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.browser

ATTACKER = "http://attacker.test"


def sign_in(page, live_server, username, password):
    page.goto(live_server.url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_a_cross_site_form_post_gets_403_and_leaves_the_victim_signed_in(live_server, new_page):
    with unit_of_work(live_server.factory) as db:
        make_user(db, "admin", username="csrf-victim")
    page = new_page()
    sign_in(page, live_server, "csrf-victim", PASSWORD)
    expect(page.locator("h1")).to_have_text("Admin")
    evil_form = f"""<!doctype html><form method="post" action="{live_server.url}/admin/users">
      <input name="username" value="evil-admin"><input name="role" value="admin">
      <button type="submit">Win a prize</button></form>"""
    page.route(f"{ATTACKER}/**", lambda route: route.fulfill(status=200, content_type="text/html", body=evil_form))
    page.goto(f"{ATTACKER}/prize")
    with page.expect_navigation() as navigation:
        page.click("text=Win a prize")
    assert navigation.value.status == 403
    expect(page.locator("h1")).to_have_text("Forbidden")
    page.goto(live_server.url + "/")
    expect(page.locator("h1")).to_have_text("Admin")  # still signed in
    with unit_of_work(live_server.factory) as db:
        assert db.scalar(select(User).where(User.username == "evil-admin")) is None


def test_end_other_sessions_and_change_password_in_the_browser(live_server, new_page):
    with unit_of_work(live_server.factory) as db:
        make_user(db, "labeler", username="two-laptops")
    work, home = new_page(), new_page()
    sign_in(work, live_server, "two-laptops", PASSWORD)
    sign_in(home, live_server, "two-laptops", PASSWORD)
    expect(home.locator("h1")).to_have_text("Welcome, two-laptops")

    work.click("header >> text=two-laptops")  # the username in the top bar leads to one's sessions
    expect(work.locator("h1")).to_have_text("Your sessions")
    expect(work.locator("#sessions tbody tr")).to_have_count(2)
    expect(work.locator("#sessions")).to_contain_text("this browser")
    work.click("text=End all other sessions")
    expect(work.locator(".alert.success")).to_have_text("Ended 1 other session.")
    expect(work.locator("#sessions tbody tr")).to_have_count(1)
    home.reload()
    expect(home).to_have_url(live_server.url + "/login?next=/")

    work.click("text=Change your password")
    work.fill("input[name=current_password]", PASSWORD)
    work.fill("input[name=new_password]", "two-laptops-new-pass")
    work.fill("input[name=confirm_password]", "two-laptops-new-pass")
    work.click("button:has-text('Change password')")
    expect(work.locator("#password-done")).to_contain_text("Your password is changed")
    sign_in(home, live_server, "two-laptops", "two-laptops-new-pass")
    expect(home.locator("h1")).to_have_text("Welcome, two-laptops")
