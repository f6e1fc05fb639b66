"""The `rlhf` command as a user runs it: real processes, a real database."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import select

from app.db import make_engine, make_sessionmaker, unit_of_work
from app.migrate import upgrade
from app.users.models import ApiToken, Role, User
from tests.db_setup import fresh_database

RLHF = [sys.executable, "-m", "app.cli"]


def run_cli(args, env_extra, stdin: str | None = None):
    env = {**os.environ, **env_extra}
    return subprocess.run(RLHF + args, input=stdin, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("cli"), "cli") as url:
        yield url


def test_db_upgrade_users_and_tokens_from_the_command_line(cli_db):
    env = {"RLHF_DATABASE_URL": cli_db}
    up = run_cli(["db", "upgrade"], env)
    assert up.returncode == 0, up.stderr

    generated = run_cli(["users", "create", "--username", "ada", "--role", "researcher"], env)
    assert generated.returncode == 0, generated.stderr
    password = re.search(r"password: (\S+)", generated.stdout).group(1)
    assert len(password) >= 12

    piped = run_cli(["users", "create", "--username", "bob", "--role", "labeler", "--group", "heldout",
                     "--password-stdin"], env, stdin="a-very-long-password\n")
    assert piped.returncode == 0 and "password:" not in piped.stdout

    duplicate = run_cli(["users", "create", "--username", "ada", "--role", "admin"], env)
    assert duplicate.returncode == 2 and "already taken" in duplicate.stderr and "Traceback" not in duplicate.stderr

    bad_role = run_cli(["users", "create", "--username", "eve", "--role", "king"], env)
    assert bad_role.returncode == 2 and "Unknown role" in bad_role.stderr

    token = run_cli(["tokens", "create", "--username", "ada"], env)
    assert token.returncode == 0 and token.stdout.strip().startswith("rlhf_")
    missing = run_cli(["tokens", "create", "--username", "nobody"], env)
    assert missing.returncode == 2 and "No user named" in missing.stderr

    engine = make_engine(cli_db)
    with unit_of_work(make_sessionmaker(engine)) as db:
        bob = db.scalar(select(User).where(User.username == "bob"))
        assert bob.role == Role.labeler and bob.labeler_group.value == "heldout"
        from app import security

        assert security.verify_password(bob.password_hash, "a-very-long-password")
        assert db.scalar(select(ApiToken).where(ApiToken.token_hash == security.hash_api_token(token.stdout.strip())))
    engine.dispose()


def test_serve_refuses_to_start_without_a_real_secret(cli_db):
    result = run_cli(["serve"], {"RLHF_DATABASE_URL": cli_db, "RLHF_SECRET_KEY": "changeme"})
    assert result.returncode == 2
    assert "RLHF_SECRET_KEY must be set" in result.stderr
    repeated = run_cli(["serve"], {"RLHF_DATABASE_URL": cli_db, "RLHF_SECRET_KEY": "changeme" * 4})
    assert repeated.returncode == 2 and "too predictable" in repeated.stderr
    assert "secrets.token_urlsafe(48)" in repeated.stderr and "Traceback" not in repeated.stderr


def test_users_password_sets_a_password_and_ends_the_sessions(cli_db):
    from app import security
    from app.users import sessions

    env = {"RLHF_DATABASE_URL": cli_db}
    assert run_cli(["db", "upgrade"], env).returncode == 0
    assert run_cli(["users", "create", "--username", "carol", "--role", "labeler"], env).returncode == 0
    engine = make_engine(cli_db)
    factory = make_sessionmaker(engine)
    with unit_of_work(factory) as db:
        carol = db.scalar(select(User).where(User.username == "carol"))
        row, _ = sessions.start(db, carol, user_agent="browser", client_ip="192.0.2.1")
        row_id = row.id

    generated = run_cli(["users", "password", "--username", "carol"], env)
    assert generated.returncode == 0, generated.stderr
    password = re.search(r"password: (\S+)", generated.stdout).group(1)
    piped = run_cli(["users", "password", "--username", "carol", "--password-stdin"], env, stdin="carols-own-passphrase\n")
    assert piped.returncode == 0 and "password:" not in piped.stdout
    short = run_cli(["users", "password", "--username", "carol", "--password-stdin"], env, stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    nobody = run_cli(["users", "password", "--username", "nobody"], env)
    assert nobody.returncode == 2 and "No user named" in nobody.stderr

    from app.audit.models import AuditEntry
    from app.users.models import UserSession

    with unit_of_work(factory) as db:
        carol = db.scalar(select(User).where(User.username == "carol"))
        assert security.verify_password(carol.password_hash, "carols-own-passphrase")  # the short one changed nothing
        assert not security.verify_password(carol.password_hash, password)
        assert db.get(UserSession, row_id).end_reason == "reset"
        resets = db.scalars(select(AuditEntry).where(AuditEntry.action == "user.password_reset",
                                                     AuditEntry.target_id == str(carol.id))).all()
        assert len(resets) == 2 and all(e.actor_id is None for e in resets)
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_serves_a_page_where_the_printed_admin_creates_a_labeler_who_signs_in(tmp_path):
    port = _free_port()
    database = tmp_path / "demo.sqlite3"
    proc = subprocess.Popen(
        RLHF + ["demo", "--port", str(port), "--database", str(database)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        output = ""
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300  # the demo builds its data first; generous for a loaded CI machine
        while time.time() < deadline:
            line = proc.stdout.readline()
            output += line
            if "labeler" in line and line.strip().startswith("labeler"):
                break
            if not line and proc.poll() is not None:
                break
        found = re.search(r"^\s+admin\s+admin\s+(\S+)$", output, re.M)
        assert found, f"rlhf demo did not print the admin's password (exit code {proc.poll()}):\n{output[-3000:]}"
        admin_password = found.group(1)
        for _ in range(100):
            try:
                httpx.get(base + "/login", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)

        def csrf(client: httpx.Client, path: str = "/login") -> str:
            return re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text).group(1)

        with httpx.Client(base_url=base, follow_redirects=True) as admin:
            signed_in = admin.post("/login", data={"username": "admin", "password": admin_password, "csrf_token": csrf(admin)})
            assert "Admin" in signed_in.text
            created = admin.post("/admin/users", data={"username": "newlabeler", "role": "labeler", "csrf_token": csrf(admin, "/")})
            assert created.status_code == 200 and str(created.url) == base + "/admin/users"  # after the 303
            password = re.search(r'<code class="secret">([^<]+)</code>', created.text).group(1)
        with httpx.Client(base_url=base, follow_redirects=True) as labeler:
            home = labeler.post("/login", data={"username": "newlabeler", "password": password, "csrf_token": csrf(labeler)})
            assert home.status_code == 200 and "Welcome, newlabeler" in home.text
            assert labeler.get("/admin/users").status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=20)
