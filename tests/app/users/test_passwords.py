"""Password doors: a signed-in user changes their password (current one required, other sessions
end), an admin resets anyone else's (a generated password shown once, their sessions end), both
as pages and JSON, with audit entries."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from app import security
from app.audit.models import AuditEntry
from app.users import service
from app.users.models import LoginFailure, User
from tests.factories import PASSWORD, make_user

NEW = "a-brand-new-passphrase"


def hash_of(db, user) -> str:
    db.expire_all()
    return db.get(User, user.id).password_hash


def change(client, current, new, confirm=None):
    return client.post_form("/account/password", {"current_password": current, "new_password": new,
                                                  "confirm_password": new if confirm is None else confirm})


def test_change_password_keeps_this_session_and_ends_the_others(client, make_client, db):
    user = make_user(db, "labeler", username="changer")
    client.login("changer", PASSWORD)
    phone = make_client()
    phone.login("changer", PASSWORD)
    assert client.get("/account/password").status_code == 200
    posted = change(client, PASSWORD, NEW)
    assert posted.status_code == 303 and posted.headers["location"] == "/account/password"  # F5 does not post again
    assert "1 other session ended" in client.get("/account/password").text
    assert "1 other session ended" not in client.get("/account/password").text  # said once
    assert client.get("/api/me").status_code == 200
    assert phone.get("/api/me").status_code == 401
    assert security.verify_password(hash_of(db, user), NEW)
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "user.password_change", AuditEntry.actor_id == user.id))
    fresh = make_client()
    assert fresh.post("/login", data={"username": "changer", "password": PASSWORD, "csrf_token": fresh.csrf()}).status_code == 401
    fresh.login("changer", NEW)


def test_bad_password_changes_are_refused_naming_the_field_and_change_nothing(client, make_client, db):
    user = make_user(db, "researcher", username="careful")
    client.login("careful", PASSWORD)
    other = make_client()
    other.login("careful", PASSWORD)
    before = hash_of(db, user)
    cases = [
        ((("wrong-current-pass", NEW)), "current_password", "current password is not right"),
        (((PASSWORD, NEW, NEW + "x")), "confirm_password", "confirmation differ"),
        (((PASSWORD, "short")), "password", "at least 10 characters"),
        (((PASSWORD, PASSWORD)), "new_password", "must differ"),
    ]
    for args, field, words in cases:
        page = change(client, *args)
        assert page.status_code == 422, field
        assert f"<strong>{field}</strong>" in page.text and words in page.text
        assert hash_of(db, user) == before
        assert other.get("/api/me").status_code == 200  # no session ended
    # the wrong current password counted as a failed sign-in of this user and address
    assert db.scalar(select(func.count()).select_from(LoginFailure).where(LoginFailure.username == "careful")) == 1


def test_guessing_the_current_password_through_a_borrowed_session_backs_off(client, db, settings):
    make_user(db, "labeler", username="borrowed")
    client.login("borrowed", PASSWORD)
    codes = [change(client, f"guess-number-{i}", NEW).status_code for i in range(settings.login_free_attempts + 1)]
    assert codes == [422] * settings.login_free_attempts + [429]


def test_change_password_needs_a_csrf_token(client, db):
    user = make_user(db, "labeler", username="csrfpw")
    client.login("csrfpw", PASSWORD)
    before = hash_of(db, user)
    response = client.post("/account/password", data={"current_password": PASSWORD, "new_password": NEW,
                                                      "confirm_password": NEW})
    assert response.status_code == 403 and hash_of(db, user) == before
    assert client.get("/api/me").status_code == 200  # and the session survives the 403


def test_change_password_json_with_a_token_ends_every_browser_session(client, make_client, db):
    user = make_user(db, "researcher", username="apichanger")
    _, token = service.create_token(db, user, "script")
    browser = make_client()
    browser.login("apichanger", PASSWORD)
    headers = {"Authorization": f"Bearer {token}"}
    wrong = client.post("/api/me/password", json={"current_password": "nope-nope-nope", "new_password": NEW}, headers=headers)
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "current_password"
    assert db.scalar(select(func.count()).select_from(LoginFailure).where(LoginFailure.username == "apichanger")) == 1
    ok = client.post("/api/me/password", json={"current_password": PASSWORD, "new_password": NEW}, headers=headers)
    assert ok.status_code == 200 and ok.json() == {"other_sessions_ended": 1}
    assert browser.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=headers).status_code == 200  # API tokens are not sessions


def test_admin_resets_a_password_shown_once_and_ends_their_sessions(client, make_client, db):
    admin = make_user(db, "admin", username="resetter")
    user = make_user(db, "labeler", username="forgetful")
    their_browser = make_client()
    their_browser.login("forgetful", PASSWORD)
    client.login("resetter", PASSWORD)
    posted = client.post_form(f"/admin/users/{user.id}", {"action": "reset_password"})
    assert posted.status_code == 303  # redirect-after-post; the new password is shown once on the page that follows
    page = client.get(posted.headers["location"])
    assert "All their sessions were ended" in page.text
    password = re.search(r'id="reset-done">.*?<code class="secret">([^<]+)</code>', page.text, re.S).group(1)
    assert len(password) >= 12 and password not in client.get("/admin/users").text  # shown once
    assert their_browser.get("/api/me").status_code == 401
    make_client().login("forgetful", password)
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "user.password_reset", AuditEntry.target_id == str(user.id)))
    assert entry.actor_id == admin.id and password not in entry.detail
    # an admin resets their own password on the change page, which asks for the current one
    own = client.post_form(f"/admin/users/{admin.id}", {"action": "reset_password"})
    assert own.status_code == 403 and "change-password page" in own.text
    assert security.verify_password(hash_of(db, admin), PASSWORD)


def test_admin_reset_json(client, make_client, db):
    admin = make_user(db, "admin", username="apiresetter")
    user = make_user(db, "labeler", username="apiforgetful")
    _, token = service.create_token(db, admin, "t")
    headers = {"Authorization": f"Bearer {token}"}
    browser = make_client()
    browser.login("apiforgetful", PASSWORD)
    reset = client.post(f"/api/users/{user.id}/password", headers=headers)
    assert reset.status_code == 200 and reset.json()["username"] == "apiforgetful"
    assert security.verify_password(hash_of(db, user), reset.json()["password"])
    assert browser.get("/api/me").status_code == 401
    assert client.post("/api/users/999999/password", headers=headers).status_code == 404
    _, labeler_token = service.create_token(db, user, "t")
    refused = client.post(f"/api/users/{admin.id}/password", headers={"Authorization": f"Bearer {labeler_token}"})
    assert refused.status_code == 403
