"""Server-side sessions: signing out ends the session (a saved cookie stops working), a user lists
their sessions and ends any or all others, credential changes end sessions, and a cross-site
form POST (CSRF failure) does not sign the victim out."""

from __future__ import annotations

from sqlalchemy import func, select

from app.audit.models import AuditEntry
from app.users.models import User, UserSession
from tests.conftest import AppClient
from tests.factories import PASSWORD, make_user


def cookie_of(client) -> str:
    return client.cookies.get("rlhf_session")


def replay(app, cookie: str) -> AppClient:
    """Another browser holding a saved copy of someone's session cookie."""
    thief = AppClient(app, raise_server_exceptions=False)
    thief.cookies.set("rlhf_session", cookie)
    return thief


def alive_sessions(db, user) -> int:
    return db.scalar(select(func.count()).select_from(UserSession)
                     .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None)))


def test_sign_out_ends_the_session_on_the_server(app, client, make_client, db):
    user = make_user(db, "labeler", username="leaver")
    client.login("leaver", PASSWORD)
    token = client.csrf()
    saved = cookie_of(client)  # as it is after the page with the token
    other_browser = make_client()
    other_browser.login("leaver", PASSWORD)
    assert client.get("/api/me").status_code == 200

    assert client.post_form("/logout").status_code == 303

    with replay(app, saved) as thief:
        me = thief.get("/api/me")
        assert me.status_code == 401 and me.json()["detail"] == "Sign in to continue."
        nxt = thief.post("/api/labeling/next", headers={"X-CSRF-Token": token})
        assert nxt.status_code == 401, nxt.text
        assert thief.get("/", follow_redirects=False).headers["location"].startswith("/login")
    row = db.scalar(select(UserSession).where(UserSession.user_id == user.id, UserSession.end_reason.is_not(None)))
    assert row.end_reason == "signed-out" and row.revoked_at is not None
    # only that session ended: the same user's other browser is still signed in
    assert other_browser.get("/api/me").json()["username"] == "leaver"
    assert alive_sessions(db, user) == 1


def test_sessions_page_lists_own_sessions_and_ends_one(app, client, make_client, db):
    user = make_user(db, "researcher", username="many")
    someone = make_user(db, "labeler", username="someone")
    client.login("many", PASSWORD)
    laptop = AppClient(app, raise_server_exceptions=False, headers={"User-Agent": "Laptop <b>Firefox</b>"},
                       client=("10.1.2.3", 5000))
    laptop.__enter__()
    try:
        laptop.login("many", PASSWORD)
        stranger = make_client()
        stranger.login("someone", PASSWORD)
        page = client.get("/account/sessions")
        assert page.status_code == 200
        assert "this browser" in page.text and "10.1.2.3" in page.text
        assert "Laptop &lt;b&gt;Firefox&lt;/b&gt;" in page.text  # escaped
        laptop_row = db.scalar(select(UserSession).where(UserSession.client_ip == "10.1.2.3"))
        # someone else's session is "not found", and stays alive
        theirs = db.scalar(select(UserSession).where(UserSession.user_id == someone.id))
        assert client.post_form(f"/account/sessions/{theirs.id}/end").status_code == 404
        assert stranger.get("/api/me").status_code == 200
        # ending the laptop's session signs the laptop out, not this browser
        assert client.post_form(f"/account/sessions/{laptop_row.id}/end").status_code == 303
        assert laptop.get("/api/me").status_code == 401
        assert client.get("/api/me").status_code == 200
        assert db.scalar(select(AuditEntry).where(AuditEntry.action == "session.end", AuditEntry.target_id == str(laptop_row.id)))
        assert "10.1.2.3" not in client.get("/account/sessions").text
    finally:
        laptop.__exit__(None, None, None)
    assert alive_sessions(db, user) == 1


def test_end_all_other_sessions_keeps_this_one(client, make_client, db):
    user = make_user(db, "labeler", username="tidy")
    client.login("tidy", PASSWORD)
    others = [make_client() for _ in range(3)]
    for other in others:
        other.login("tidy", PASSWORD)
    posted = client.post_form("/account/sessions/end-others")
    assert posted.status_code == 303 and posted.headers["location"] == "/account/sessions"
    assert "Ended 3 other sessions." in client.get("/account/sessions").text
    assert [o.get("/api/me").status_code for o in others] == [401, 401, 401]
    assert client.get("/api/me").status_code == 200
    assert alive_sessions(db, user) == 1


def test_ending_this_very_session_signs_out(client, db):
    user = make_user(db, "labeler", username="self-ender")
    client.login("self-ender", PASSWORD)
    row = db.scalar(select(UserSession).where(UserSession.user_id == user.id))
    response = client.post_form(f"/account/sessions/{row.id}/end")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert client.get("/api/me").status_code == 401


def test_sessions_json_api(client, make_client, db):
    make_user(db, "labeler", username="jsonner")
    client.login("jsonner", PASSWORD)
    other = make_client()
    other.login("jsonner", PASSWORD)
    headers = {"X-CSRF-Token": client.csrf()}
    listed = client.get("/api/sessions").json()
    assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
    other_id = next(s["id"] for s in listed if not s["current"])
    ended = client.delete(f"/api/sessions/{other_id}", headers=headers)
    assert ended.status_code == 200 and ended.json()["id"] == other_id
    assert other.get("/api/me").status_code == 401
    assert client.delete("/api/sessions/999999", headers=headers).status_code == 404
    third = make_client()
    third.login("jsonner", PASSWORD)
    assert client.post("/api/sessions/end-others", headers=headers).json() == {"ended": 1}
    assert third.get("/api/me").status_code == 401
    assert [s["current"] for s in client.get("/api/sessions").json()] == [True]


def test_expired_server_side_session_is_refused_even_with_a_fresh_cookie(client, db, settings):
    from datetime import timedelta

    from app.db import utcnow

    user = make_user(db, "labeler", username="dozer")
    client.login("dozer", PASSWORD)
    row = db.scalar(select(UserSession).where(UserSession.user_id == user.id))
    row.last_seen_at = utcnow() - timedelta(seconds=settings.session_max_age_s + 60)
    db.flush()
    assert client.get("/api/me").status_code == 401


def test_deactivation_role_change_and_reset_end_sessions(client, make_client, db):
    admin = make_user(db, "admin", username="ender-admin")
    victims = {action: make_user(db, "labeler", username=f"victim-{action}") for action in ("deactivate", "role", "reset_password")}
    browsers = {}
    for action, victim in victims.items():
        browsers[action] = make_client()
        browsers[action].login(victim.username, PASSWORD)
    client.login(admin.username, PASSWORD)
    for action, victim in victims.items():
        data = {"action": action, "value": "researcher"} if action == "role" else {"action": action}
        assert client.post_form(f"/admin/users/{victim.id}", data).status_code in (200, 303)
        assert browsers[action].get("/api/me").status_code == 401, action
        assert alive_sessions(db, victim) == 0
    reasons = set(db.scalars(select(UserSession.end_reason).where(UserSession.user_id.in_([v.id for v in victims.values()]))))
    assert reasons == {"deactivated", "role", "reset"}
    assert client.get("/api/me").status_code == 200  # the admin's own session is untouched


def test_cross_site_post_does_not_sign_the_victim_out(app, client, db):
    """A cross-site form arrives without the SameSite=Lax cookie: its 403 page must not set a new
    cookie (the browser would replace the victim's session). A same-site POST with a bad token
    gets 403 and the session keeps working."""
    make_user(db, "admin", username="victim-admin")
    client.login("victim-admin", PASSWORD)
    before = cookie_of(client)

    with AppClient(app, raise_server_exceptions=False) as cross_site:  # no cookies: what the browser sends
        forged = cross_site.post("/admin/users", data={"username": "evil", "role": "admin"},
                                 headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403 and "CSRF" in forged.text
        assert "set-cookie" not in forged.headers
        assert cross_site.post("/logout").headers.get("set-cookie") is None  # public POST: same
        assert "set-cookie" not in cross_site.get("/no/such/page").headers

    bad = client.post("/admin/users", data={"username": "evil2", "role": "admin", "csrf_token": "forged"})
    assert bad.status_code == 403
    assert client.get("/api/me").json()["username"] == "victim-admin"
    assert client.get("/admin/users").status_code == 200
    assert cookie_of(client) == before or client.get("/api/me").status_code == 200
    assert db.scalar(select(func.count()).select_from(User).where(User.username.in_(["evil", "evil2"]))) == 0


def test_sessions_over_for_months_are_forgotten_at_the_next_sign_in(client, db):
    from datetime import timedelta

    from app.db import utcnow

    user = make_user(db, "labeler", username="returning")
    client.login("returning", PASSWORD)
    old = db.scalar(select(UserSession).where(UserSession.user_id == user.id))
    old.created_at = old.last_seen_at = utcnow() - timedelta(days=100)
    old_hash = old.token_hash
    db.flush()
    client.post_form("/logout")
    client.login("returning", PASSWORD)
    db.expire_all()
    hashes = db.scalars(select(UserSession.token_hash).where(UserSession.user_id == user.id)).all()
    assert len(hashes) == 1 and old_hash not in hashes  # only the new session remains
