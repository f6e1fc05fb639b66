"""The labeling hot path (async PostgreSQL pool, app/deps.py ``_hot_path_user``) honours ended
sessions at once: it reads the session on every request, through its own connections, so this
test runs against a committed database of its own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.config import Settings
from app.db import make_engine, make_sessionmaker, unit_of_work, utcnow
from app.main import create_app
from app.migrate import upgrade
from app.users import service, sessions
from app.users.models import UserSession
from tests.conftest import TEST_SECRET, AppClient
from tests.db_setup import backend, fresh_database
from tests.factories import PASSWORD, make_user

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(backend() != "postgres", reason="the async hot path exists on PostgreSQL only"),
]


@pytest.fixture(scope="module")
def hot_app(tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("hot-sessions"), "hotsess") as url:
        upgrade(url)
        engine = make_engine(url)
        settings = Settings(mode="test", database_url=url, secret_key=TEST_SECRET,
                            artifact_dir=tmp_path_factory.mktemp("artifacts"))
        yield create_app(settings, engine=engine), make_sessionmaker(engine)
        engine.dispose()


def test_sign_out_and_ended_sessions_take_effect_on_the_hot_path(hot_app):
    app, factory = hot_app
    with unit_of_work(factory) as db:
        make_user(db, "labeler", username="hot-labeler")
        admin = make_user(db, "admin", username="hot-admin")
        admin_id = admin.id
    with AppClient(app, raise_server_exceptions=False) as client, \
            AppClient(app, raise_server_exceptions=False) as second:
        assert app.state.hot_pools, "the app did not open its hot-path pool"
        client.login("hot-labeler", PASSWORD)
        token = client.csrf()
        saved = client.cookies.get("rlhf_session")
        first = client.post("/api/labeling/next", headers={"X-CSRF-Token": token})
        assert first.status_code not in (401, 403), first.text

        # the session's last-seen time is kept fresh by the hot path too (at most once a minute)
        with unit_of_work(factory) as db:
            row = db.scalar(select(UserSession).where(UserSession.token_hash == sessions.security.hash_session_key(
                _key_of(app, saved))))
            row.last_seen_at = utcnow() - timedelta(minutes=10)
            row_id = row.id
        assert client.post("/api/labeling/next", headers={"X-CSRF-Token": token}).status_code not in (401, 403)
        with unit_of_work(factory) as db:
            assert utcnow() - db.get(UserSession, row_id).last_seen_at < timedelta(minutes=1)

        assert client.post_form("/logout").status_code == 303
        with AppClient(app, raise_server_exceptions=False) as thief:
            thief.cookies.set("rlhf_session", saved)
            replayed = thief.post("/api/labeling/next", headers={"X-CSRF-Token": token})
            assert replayed.status_code == 401 and replayed.json()["detail"] == "Sign in to continue."

        # a session ended from elsewhere (deactivation) stops on the very next hot-path request
        second.login("hot-labeler", PASSWORD)
        second_token = second.csrf()
        assert second.post("/api/labeling/next", headers={"X-CSRF-Token": second_token}).status_code not in (401, 403)
        with unit_of_work(factory) as db:
            labeler = service.get_by_username(db, "hot-labeler")
            service.set_active(db, labeler.id, False, actor=service.get_user(db, admin_id))
        assert second.post("/api/labeling/next", headers={"X-CSRF-Token": second_token}).status_code == 401


def _key_of(app, cookie: str) -> str:
    """The session key inside a signed session cookie (read as the server reads it)."""
    import base64
    import json

    import itsdangerous

    data = itsdangerous.TimestampSigner(app.state.secret_key).unsign(cookie.encode())
    return json.loads(base64.b64decode(data))[sessions.SESSION_KEY]
