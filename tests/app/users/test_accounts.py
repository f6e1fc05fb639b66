"""Accounts: signing in, sessions, roles, admin user management, API tokens."""

from __future__ import annotations

from sqlalchemy import func, select

from app.audit.models import AuditEntry
from app.users.models import ApiToken, Role, User
from tests.factories import PASSWORD, make_user


def count_users(db) -> int:
    return db.scalar(select(func.count()).select_from(User))


def test_password_is_hashed_with_argon2(db):
    user = make_user(db, "labeler")
    assert user.password_hash.startswith("$argon2")
    assert PASSWORD not in user.password_hash


def test_login_then_home_shows_the_role_home(client, db):
    make_user(db, "labeler", username="lena")
    client.login("lena", PASSWORD)
    home = client.get("/")
    assert home.status_code == 200
    assert "Welcome, lena" in home.text
    assert "Users</a>" not in home.text  # no admin navigation for a labeler


def test_session_cookie_is_httponly_and_samesite(client, db):
    make_user(db, "admin", username="root1")
    response = client.login("root1", PASSWORD)
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_wrong_password_and_unknown_user_get_the_same_message(client, db):
    make_user(db, "labeler", username="known")
    token = client.csrf()
    wrong = client.post("/login", data={"username": "known", "password": "nope-nope-nope", "csrf_token": token})
    unknown = client.post("/login", data={"username": "ghost", "password": "nope-nope-nope", "csrf_token": token})
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password." in wrong.text and "Wrong username or password." in unknown.text
    assert client.get("/", follow_redirects=False).status_code == 302  # still signed out


def test_login_without_csrf_token_is_refused_and_signs_nobody_in(client, db):
    make_user(db, "labeler", username="nocsrf")
    client.get("/login")
    response = client.post("/login", data={"username": "nocsrf", "password": PASSWORD})
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert client.get("/", follow_redirects=False).status_code == 302


def test_login_redirects_only_to_local_paths(client, db):
    make_user(db, "labeler", username="nexter")
    token = client.csrf()
    r = client.post(
        "/login", data={"username": "nexter", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_logout_ends_the_session(client, db):
    make_user(db, "labeler", username="bye")
    client.login("bye", PASSWORD)
    assert client.post_form("/logout").status_code == 303
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")


def test_admin_creates_labeler_who_can_sign_in(client, make_client, db):
    make_user(db, "admin", username="boss")
    client.login("boss", PASSWORD)
    posted = client.post_form("/admin/users", {"username": "newbie", "role": "labeler", "labeler_group": "heldout"})
    assert posted.status_code == 303 and posted.headers["location"] == "/admin/users"  # F5 does not post again
    page = client.get("/admin/users")  # the page the browser follows to shows the new password once
    assert "newbie" in page.text
    password = page.text.split('<code class="secret">')[1].split("</code>")[0]
    created = db.scalar(select(User).where(User.username == "newbie"))
    assert created.role == Role.labeler and created.labeler_group.value == "heldout"
    other = make_client()
    other.login("newbie", password)
    assert "Welcome, newbie" in other.get("/").text
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "user.create", AuditEntry.target_id == str(created.id)))


def test_duplicate_username_is_refused_with_409_and_changes_nothing(client, db):
    make_user(db, "admin", username="boss2")
    make_user(db, "labeler", username="taken")
    client.login("boss2", PASSWORD)
    before = count_users(db)
    page = client.post_form("/admin/users", {"username": "taken", "role": "labeler"})
    assert page.status_code == 409
    assert "already taken" in page.text
    assert count_users(db) == before


def test_invalid_username_is_refused_with_a_clear_message(client, db):
    make_user(db, "admin", username="boss3")
    client.login("boss3", PASSWORD)
    page = client.post_form("/admin/users", {"username": "bad name!", "role": "labeler"})
    assert page.status_code == 422 and "Username must be" in page.text


def test_deactivated_user_is_signed_out_and_cannot_sign_in(client, make_client, db):
    admin = make_user(db, "admin", username="boss4")
    victim = make_user(db, "labeler", username="leaving")
    labeler_browser = make_client()
    labeler_browser.login("leaving", PASSWORD)
    client.login(admin.username, PASSWORD)
    assert client.post_form(f"/admin/users/{victim.id}", {"action": "deactivate"}).status_code == 303
    assert labeler_browser.get("/", follow_redirects=False).status_code == 302
    token = labeler_browser.csrf()
    again = labeler_browser.post("/login", data={"username": "leaving", "password": PASSWORD, "csrf_token": token})
    assert again.status_code == 401


def test_role_change_takes_effect_and_is_audited(client, make_client, db):
    admin = make_user(db, "admin", username="boss5")
    user = make_user(db, "labeler", username="promoted")
    client.login(admin.username, PASSWORD)
    assert client.post_form(f"/admin/users/{user.id}", {"action": "role", "value": "researcher"}).status_code == 303
    db.expire_all()
    assert db.get(User, user.id).role == Role.researcher
    assert db.scalar(select(AuditEntry).where(AuditEntry.action == "user.role", AuditEntry.target_id == str(user.id)))


def test_admin_cannot_lock_themselves_out(client, db):
    admin = make_user(db, "admin", username="boss6")
    client.login(admin.username, PASSWORD)
    page = client.post_form(f"/admin/users/{admin.id}", {"action": "deactivate"})
    assert page.status_code == 403
    db.expire_all()
    assert db.get(User, admin.id).active


def test_api_token_is_shown_once_hashed_at_rest_and_revocable(client, db):
    make_user(db, "researcher", username="rita")
    client.login("rita", PASSWORD)
    posted = client.post_form("/account/tokens", {"name": "export script"})
    assert posted.status_code == 303 and posted.headers["location"] == "/account/tokens"
    assert "export script" not in posted.headers["location"] and not posted.text  # the token never in the URL
    page = client.get("/account/tokens")
    token = page.text.split('id="new-token">')[1].split("</code>")[0]
    row = db.scalar(select(ApiToken).where(ApiToken.name == "export script"))
    assert token not in row.token_hash and len(row.token_hash) == 64
    assert token not in client.get("/account/tokens").text  # never shown again
    me = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["username"] == "rita"
    assert client.post_form(f"/account/tokens/{row.id}/revoke").status_code == 303
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_malformed_and_unknown_api_tokens_get_401_with_a_reason(client):
    malformed = client.get("/api/me", headers={"Authorization": "Bearer abc"})
    assert malformed.status_code == 401 and "Malformed" in malformed.json()["detail"]
    unknown = client.get("/api/me", headers={"Authorization": "Bearer rlhf_" + "x" * 43})
    assert unknown.status_code == 401 and "Invalid or revoked" in unknown.json()["detail"]
    scheme = client.get("/api/me", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert scheme.status_code == 401


def test_api_creates_user_and_refuses_duplicates_with_409(client, db):
    admin = make_user(db, "admin", username="apiboss")
    from app.users import service

    _, token = service.create_token(db, admin, "t")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"username": "viaapi", "password": "a-long-password", "role": "labeler"}
    first = client.post("/api/users", json=body, headers=headers)
    assert first.status_code == 201 and first.json()["username"] == "viaapi"
    second = client.post("/api/users", json=body, headers=headers)
    assert second.status_code == 409 and "already taken" in second.json()["detail"]
    bad_role = client.post("/api/users", json={**body, "username": "x2", "role": "god"}, headers=headers)
    assert bad_role.status_code == 422 and bad_role.json()["errors"][0]["field"] == "role"


def test_security_headers_on_every_page(client):
    response = client.get("/login")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_error_pages_are_html_for_browsers_and_json_for_the_api(client):
    page = client.get("/no/such/page")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"] and "Not found" in page.text
    api = client.get("/api/no/such")
    assert api.status_code == 404 and api.json()["error"] == "Not found"


def test_user_supplied_text_is_escaped(client, db):
    make_user(db, "admin", username="boss7")
    client.login("boss7", PASSWORD)
    page = client.post_form("/admin/users", {"username": "<script>alert(1)</script>", "role": "labeler"})
    assert page.status_code == 422
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_audit_log_page_names_who_did_what(client, db):
    admin = make_user(db, "admin", username="auditor")
    make_user(db, "labeler", username="subject")
    from app.audit import service as audit

    audit.record(db, admin.id, "user.role", "user", 1, "labeler -> researcher")
    client.login("auditor", PASSWORD)
    page = client.get("/admin/audit")
    assert page.status_code == 200
    assert "auditor" in page.text and "user.role" in page.text and "labeler -&gt; researcher" in page.text


def test_expired_session_cookie_sends_the_user_back_to_sign_in(client, db, settings):
    import base64
    import json
    import time

    import itsdangerous

    from tests.conftest import TEST_SECRET

    from app.users import sessions

    user = make_user(db, "labeler", username="sleepy")
    _, key = sessions.start(db, user, user_agent="test", client_ip="testclient")

    class SignedLongAgo(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - settings.session_max_age_s - 60

    payload = base64.b64encode(json.dumps({"sid": "old", sessions.SESSION_KEY: key}).encode())
    client.cookies.set("rlhf_session", SignedLongAgo(TEST_SECRET).sign(payload).decode())
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"].startswith("/login")

    fresh = itsdangerous.TimestampSigner(TEST_SECRET).sign(payload).decode()
    client.cookies.set("rlhf_session", fresh)
    assert client.get("/", follow_redirects=False).status_code == 200  # the same cookie, in date, works
