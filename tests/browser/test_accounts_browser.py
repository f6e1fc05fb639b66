"""Accounts in a real browser: an admin creates a labeler, who signs in and sees the labeler home."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from app.db import unit_of_work
from tests.factories import PASSWORD, make_user

pytestmark = pytest.mark.browser


def sign_in(page, live_server, username, password):
    page.goto(live_server.url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_admin_creates_a_labeler_who_signs_in_and_cannot_reach_admin_pages(live_server, new_page):
    with unit_of_work(live_server.factory) as db:
        make_user(db, "admin", username="browseradmin")
    admin = new_page()
    sign_in(admin, live_server, "browseradmin", PASSWORD)
    expect(admin.locator("h1")).to_have_text("Admin")
    admin.click("nav >> text=Users")
    admin.fill("input[name=username]", "freshlabeler")
    admin.select_option("select[name=role]", "labeler")
    admin.click("text=Create user")
    secret = admin.locator("code.secret")
    expect(secret).to_be_visible()
    password = secret.inner_text()

    labeler = new_page()
    sign_in(labeler, live_server, "freshlabeler", password)
    expect(labeler.locator("h1")).to_have_text("Welcome, freshlabeler")
    expect(labeler.locator("nav")).not_to_contain_text("Users")
    response = labeler.goto(live_server.url + "/admin/users")
    assert response.status == 403
    expect(labeler.locator("h1")).to_have_text("Forbidden")

    labeler.click("text=Sign out")
    expect(labeler).to_have_url(live_server.url + "/login")


def test_wrong_password_shows_a_message_and_keeps_the_username(live_server, new_page):
    with unit_of_work(live_server.factory) as db:
        make_user(db, "labeler", username="typo-user")
    page = new_page()
    sign_in(page, live_server, "typo-user", "not-the-password")
    expect(page.locator(".alert.error")).to_have_text("Wrong username or password.")
    expect(page.locator("input[name=username]")).to_have_value("typo-user")
