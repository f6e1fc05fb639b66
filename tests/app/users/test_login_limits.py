"""Sign-in limits: a guesser is slowed per (username, address), and stopped per username and per
address, while the owner, from their own browser or address, with the right password, gets in.
X-Forwarded-For is believed only from configured proxies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.db import utcnow
from app.users.models import LoginFailure, UserSession
from tests.conftest import AppClient
from tests.factories import PASSWORD, make_user

WRONG = "not-the-password"


@pytest.fixture
def browser(app):
    """browser(address) -> a fresh browser (own cookie jar) connecting from that address."""
    opened: list[AppClient] = []

    def _open(address: str = "198.51.100.1", **kwargs) -> AppClient:
        c = AppClient(app, raise_server_exceptions=False, client=(address, 40000), **kwargs)
        c.__enter__()
        opened.append(c)
        return c

    yield _open
    for c in opened:
        c.__exit__(None, None, None)


def attempt(client: AppClient, username: str, password: str, **headers):
    return client.post("/login", data={"username": username, "password": password, "csrf_token": client.csrf()},
                       headers=headers, follow_redirects=False)


def failures(db, **where) -> int:
    query = select(func.count()).select_from(LoginFailure)
    for column, value in where.items():
        query = query.where(getattr(LoginFailure, column) == value)
    return db.scalar(query)


def age_failures(db, seconds: int) -> None:
    """Pretend the recorded failures happened ``seconds`` ago (instead of waiting)."""
    db.execute(update(LoginFailure).values(at=utcnow() - timedelta(seconds=seconds)))
    db.flush()


def test_one_address_backs_off_exponentially_and_only_itself(browser, db, settings):
    make_user(db, "labeler", username="typist")
    guesser, owner = browser("203.0.113.9"), browser("198.51.100.7")
    codes = [attempt(guesser, "typist", WRONG).status_code for _ in range(settings.login_free_attempts)]
    assert codes == [401] * settings.login_free_attempts
    blocked = attempt(guesser, "typist", PASSWORD)  # even the right password waits its turn
    assert blocked.status_code == 429 and blocked.headers["Retry-After"] == "1"
    assert "Try again in 1 second" in blocked.text
    assert failures(db, username="typist") == settings.login_free_attempts  # a refused try is not a failure
    # the owner, from their own address, is not slowed by the guesser's mistakes
    assert attempt(owner, "typist", PASSWORD).status_code == 303
    # once the wait is over, the next try is checked; each failure doubles the wait
    age_failures(db, 2)
    assert attempt(guesser, "typist", WRONG).status_code == 401
    second = attempt(guesser, "typist", WRONG)
    assert second.status_code == 429 and second.headers["Retry-After"] == "2"
    age_failures(db, 3)
    assert attempt(guesser, "typist", PASSWORD).status_code == 303


def test_backoff_is_capped(db, settings):
    from app.users.throttle import backoff_s

    assert [backoff_s(n, settings) for n in range(6)] == [0, 0, 0, 1, 2, 4]
    assert backoff_s(100, settings) == settings.login_backoff_max_s


def test_many_addresses_guessing_one_account_cannot_lock_the_owner_out(browser, db, settings):
    owner = make_user(db, "admin", username="chief")
    laptop = browser("192.0.2.10")
    laptop.login("chief", PASSWORD)  # the owner's browser, signed in before (device cookie)
    assert laptop.post_form("/logout").status_code == 303
    for i in range(settings.login_max_failures):  # a botnet: one guess per address
        assert attempt(browser(f"203.0.113.{i + 1}"), "chief", WRONG).status_code == 401
    # a stranger's browser, from a new address, is refused even with the right password
    stranger = attempt(browser("203.0.113.200"), "chief", PASSWORD)
    assert stranger.status_code == 429 and "too many failed sign-in attempts" in stranger.text
    assert int(stranger.headers["Retry-After"]) == settings.login_window_s
    # the owner's own browser, even from a new address (travelling), gets in with the right password
    laptop_elsewhere = browser("100.64.0.5", cookies={"rlhf_device": laptop.cookies.get("rlhf_device")})
    assert attempt(laptop_elsewhere, "chief", PASSWORD).status_code == 303
    # and so does a new browser from the address the owner signed in from before
    assert attempt(browser("192.0.2.10"), "chief", PASSWORD).status_code == 303
    # a wrong password from the owner's browser is still a failure, not a free pass
    assert attempt(laptop, "chief", WRONG).status_code == 401
    assert db.scalar(select(func.count()).select_from(UserSession).where(UserSession.user_id == owner.id)) == 3


def test_a_forged_device_cookie_earns_no_trust(browser, db, settings):
    make_user(db, "labeler", username="forgee")
    for i in range(settings.login_max_failures):
        attempt(browser(f"203.0.113.{i + 1}"), "forgee", WRONG)
    from itsdangerous import URLSafeTimedSerializer

    forged = URLSafeTimedSerializer("another-secret-key-of-the-attacker-0123", salt="rlhf-device").dumps([1, 2, 3])
    assert attempt(browser("203.0.113.99", cookies={"rlhf_device": forged}), "forgee", PASSWORD).status_code == 429


def test_a_guesser_behind_a_nat_does_not_lock_out_the_others_behind_it(browser, db, settings):
    office = "192.0.2.50"
    regular = make_user(db, "labeler", username="regular")
    make_user(db, "labeler", username="newcomer")
    first = browser(office)
    first.login("regular", PASSWORD)  # signed in from the office before
    attacker = browser(office)
    for i in range(settings.login_max_failures_per_ip):  # many usernames: no (user, address) backoff
        assert attempt(attacker, f"guess{i}", WRONG).status_code == 401
    # someone who never signed in from here must wait...
    assert attempt(browser(office), "newcomer", PASSWORD).status_code == 429
    # ...but the office's known users still get in, from a new browser too
    assert attempt(browser(office), "regular", PASSWORD).status_code == 303
    # and the attacker gets nothing more out of the address
    assert attempt(attacker, "guess-more", WRONG).status_code == 429
    assert regular.active


def test_unknown_and_known_usernames_are_limited_alike(browser, db, settings):
    make_user(db, "labeler", username="exists")
    answers = {}
    for name in ("exists", "does-not-exist"):
        for i in range(settings.login_max_failures):
            attempt(browser(f"203.0.113.{i + 1}"), name, WRONG)
        answer = attempt(browser("203.0.113.250"), name, WRONG)
        answers[name] = (answer.status_code, answer.headers.get("Retry-After"))
    assert answers["exists"] == answers["does-not-exist"] == (429, str(settings.login_window_s))


def test_forwarded_for_is_ignored_without_trusted_proxies(browser, db, settings):
    make_user(db, "labeler", username="spoofed")
    local = browser("127.0.0.1")
    for i in range(settings.login_free_attempts):  # a new made-up address on every try
        assert attempt(local, "spoofed", WRONG, **{"X-Forwarded-For": f"10.9.9.{i}"}).status_code == 401
    assert attempt(local, "spoofed", WRONG, **{"X-Forwarded-For": "10.9.9.200"}).status_code == 429
    assert failures(db, client_ip="127.0.0.1") == settings.login_free_attempts


def test_forwarded_for_is_believed_from_a_trusted_proxy_only_as_far_as_the_chain(app, browser, db, settings):
    app.state.settings.trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]
    make_user(db, "labeler", username="proxied")
    proxy = browser("127.0.0.1")
    # the client wrote a fake first hop; the proxies appended the real one
    response = attempt(proxy, "proxied", WRONG, **{"X-Forwarded-For": "6.6.6.6, 203.0.113.77, 10.0.0.3"})
    assert response.status_code == 401
    assert failures(db, client_ip="203.0.113.77") == 1
    # a client that is not a trusted proxy cannot choose its address
    assert attempt(browser("198.51.100.3"), "proxied", WRONG, **{"X-Forwarded-For": "203.0.113.1"}).status_code == 401
    assert failures(db, client_ip="198.51.100.3") == 1 and failures(db, client_ip="203.0.113.1") == 0
    # the session records the client's address, as the sessions page shows it
    assert attempt(proxy, "proxied", PASSWORD, **{"X-Forwarded-For": "198.51.100.44"}).status_code == 303
    assert db.scalar(select(UserSession.client_ip).where(UserSession.client_ip == "198.51.100.44"))


def test_failures_older_than_the_window_are_forgotten(browser, db, settings):
    make_user(db, "labeler", username="old-mistakes")
    for i in range(3):
        attempt(browser(f"203.0.113.{i + 1}"), "old-mistakes", WRONG)
    age_failures(db, settings.login_window_s + 1)
    attempt(browser("203.0.113.50"), "old-mistakes", WRONG)
    assert failures(db, username="old-mistakes") == 1  # only the new one is kept
