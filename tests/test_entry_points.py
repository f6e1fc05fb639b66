"""The `rlhf` command, run the way users start it: one fresh process per command.

Black-box: every command runs as a subprocess (the `rlhf` console script of this environment,
else ``python -m app.cli``) against a brand-new database that only `rlhf db upgrade` migrates,
with the settings in RLHF_* environment variables, in a working directory of its own (no .env).
Nothing the test process imported helps a subprocess: a command that needs a table its own
imports never load fails here as it fails for users (the `rlhf completions import` crash with
NoReferencedTableError 'models' was such a bug). The results are checked in the command output
and in the database, read with a plain SQLAlchemy engine.

One module-scoped chain of fixtures does the work once:
  ``lab``      db upgrade, users create|list, tokens create, prompts import, completions import,
               batches create (ranking K=4 with overlap 2, demonstration);
  ``served``   `rlhf serve --workers 1` (batches list while it starts): sign-ins with the CLI's
               passwords, the labeling API with the CLI's tokens (two labelers rank every task,
               one writes the demonstrations), batches list again, then a clean stop;
  ``exported`` export comparisons|pairwise|sft|prompts, --freeze, datasets list|agreement,
               import comparisons (the export, re-imported), worker --once;
  ``helps``    `--help` of every command the README lists (no database touched).
Independent commands run side by side (the --help ones from the start) to keep the module fast:
each process spends about a second importing the app.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.db_setup import fresh_database
from tests.live_server import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "entry-points-" + "x7Qp2Lm9Vr4Tz8Kd1Hs6Wb3Nc5Fg0Jy"  # >= 32 characters, not a weak value
ADMIN_PASSWORD = "admin: correct horse battery staple"
LABELER_PASSWORD = "labeler: tr0ub4dor & 3, but longer"
MODELS = ["policy-a", "policy-b", "policy-c", "policy-d"]  # every labeler's preference, best first
PROMPTS = [
    {"prompt": "Explain photosynthesis to a curious seven year old.", "origin_user": "alice", "category": "open_qa"},
    {"prompt": "Write a haiku about autumn leaves falling in the rain.", "origin_user": "bob", "category": "generation"},
    {"prompt": "Summarize: the meeting moved to Thursday; write to dana@example.com with questions.",
     "origin_user": "dana", "category": "summarization"},
    # the first prompt again, differently spaced and cased: a near-duplicate, removed
    {"prompt": "explain   PHOTOSYNTHESIS to a curious seven year old.", "origin_user": "erin"},
]
PROMPT_COUNT = 3
# Commands that are being redesigned elsewhere and are left out on purpose.
NOT_TESTED = {("runs", "create")}


def rlhf_argv() -> list[str]:
    """The `rlhf` console script of this environment (its bin folder first), else `python -m app.cli`."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    script = shutil.which("rlhf", path=search)
    return [script] if script else [sys.executable, "-m", "app.cli"]


RLHF = rlhf_argv()


def command_env(database_url: str, artifact_dir: Path) -> dict[str, str]:
    """The caller's environment without any RLHF_* setting, plus ours. PYTHONPATH names this
    checkout only so that the code under test is what runs (an editable install may point elsewhere)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_") and k not in ("PYTHONSTARTUP", "PYTHONINSPECT")}
    env.update(
        RLHF_DATABASE_URL=database_url, RLHF_SECRET_KEY=SECRET, RLHF_ARTIFACT_DIR=str(artifact_dir),
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        COLUMNS="200", NO_COLOR="1", TERM="dumb", PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return f"`rlhf {' '.join(self.args)}` exited {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and "Traceback" not in self.stderr


def assert_ok(result: Result) -> Result:
    assert result.ok, result.describe()
    return result


@dataclass
class Lab:
    """One database, its environment and everything the commands printed."""

    url: str
    home: Path  # the commands' working directory
    artifacts: Path
    env: dict[str, str]
    engine: object
    results: dict[str, Result] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    counts_before_import: dict[str, int] = field(default_factory=dict)

    def start(self, *args: str, stdin: str | None = None) -> tuple[tuple[str, ...], subprocess.Popen]:
        proc = subprocess.Popen(
            [*RLHF, *args], cwd=self.home, env=self.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        )
        return args, proc

    @staticmethod
    def finish(started, stdin: str | None = None, timeout: float = 120) -> Result:
        args, proc = started
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += f"\n(killed after {timeout} s)"
        return Result(tuple(args), proc.returncode, out, err)

    def run(self, key: str, *args: str, stdin: str | None = None) -> Result:
        result = self.results[key] = self.finish(self.start(*args, stdin=stdin), stdin)
        return result

    def run_together(self, commands: dict[str, tuple[tuple[str, ...], str | None]]) -> dict[str, Result]:
        """Several commands at once (each its own process); results under their keys."""
        started = {key: (self.start(*args, stdin=stdin), stdin) for key, (args, stdin) in commands.items()}
        for key, (s, stdin) in started.items():
            self.results[key] = self.finish(s, stdin)
        return {key: self.results[key] for key in commands}

    def rows(self, sql: str, **params) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()


# --- the setup commands, once per module ----------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("entry_points")
    home = base / "home"
    home.mkdir()
    with fresh_database(base, "entry") as url:
        engine = create_engine(url, poolclass=NullPool)
        lab = Lab(url=url, home=home, artifacts=base / "artifacts", env=command_env(url, base / "artifacts"), engine=engine)
        try:
            _set_up(lab)
            yield lab
        finally:
            engine.dispose()


def _set_up(lab: Lab) -> None:
    """Runs the commands and keeps what they printed; each test checks its own command, so a
    broken command fails its test (and those that need its data), not the whole module."""
    # Nothing is migrated in-process: the first command creates every table.
    assert_ok(lab.run("db upgrade", "db", "upgrade"))

    lab.run_together({
        "users create admin": (("users", "create", "--username", "ada", "--role", "admin", "--password-stdin"), ADMIN_PASSWORD + "\n"),
        "users create lab1": (("users", "create", "--username", "lab1", "--role", "labeler", "--password-stdin"), LABELER_PASSWORD + "\n"),
        "users create lab2": (("users", "create", "--username", "lab2", "--role", "labeler", "--password-stdin"), LABELER_PASSWORD + "\n"),
        # no --password-stdin: the password is generated and printed
        "users create heldout": (("users", "create", "--username", "hal", "--role", "labeler", "--group", "heldout"), None),
    })

    prompts_file = lab.home / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    lab.run_together({
        "users list": (("users", "list"), None),
        "tokens create lab1": (("tokens", "create", "--username", "lab1", "--name", "e2e-lab1"), None),
        "tokens create lab2": (("tokens", "create", "--username", "lab2"), None),
        "tokens create admin": (("tokens", "create", "--username", "ada", "--name", "e2e-admin"), None),
        "tokens create nobody": (("tokens", "create", "--username", "nobody"), None),
        "prompts import": (("prompts", "import", str(prompts_file)), None),
    })
    for who in ("lab1", "lab2", "admin"):
        lab.tokens[who] = lab.results[f"tokens create {who}"].stdout.strip()

    # Completions as `python -m trainers generate` writes them: by prompt text (the one with an
    # e-mail address matches after scrubbing), by prompt_id, and one line twice.
    haiku_id = lab.scalar("SELECT id FROM prompts WHERE text LIKE 'Write a haiku%'")
    records = []
    for p in PROMPTS[:PROMPT_COUNT]:
        for model in MODELS:
            record = {"completion": f"{model}: an answer to '{p['prompt'][:24]}'", "model": model,
                      "settings": {"temperature": 0.7, "max_new_tokens": 64, "seed": 1}}
            record.update({"prompt_id": haiku_id} if p["prompt"].startswith("Write a haiku") else {"prompt": p["prompt"]})
            records.append(record)
    records.append(dict(records[0]))
    completions_file = lab.home / "completions.jsonl"
    completions_file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    lab.run("completions import", "completions", "import", str(completions_file))

    lab.run_together({
        "batches create ranking": (("batches", "create", "--name", "rank-k4", "--kind", "ranking", "--k", "4",
                                    "--overlap-share", "1", "--overlap-count", "2", "--priority", "2"), None),
        "batches create demonstration": (("batches", "create", "--name", "demos", "--kind", "demonstration", "--priority", "1"), None),
    })


# --- the setup commands' results --------------------------------------------------------------------


def test_db_upgrade_creates_every_table(lab):
    assert re.search(r"is at revision head", lab.results["db upgrade"].stdout), lab.results["db upgrade"].describe()
    if lab.url.startswith("sqlite"):
        tables = {r[0] for r in lab.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
    else:
        tables = {r[0] for r in lab.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"alembic_version", "users", "api_tokens", "prompts", "completions", "models", "batches", "tasks",
            "rankings", "demonstrations", "datasets", "runs", "workers"} <= tables
    assert lab.scalar("SELECT count(*) FROM alembic_version") == 1


def test_users_create_with_password_stdin_and_generated(lab):
    for key in ("users create admin", "users create lab1", "users create lab2", "users create heldout"):
        assert_ok(lab.results[key])
    rows = {r[0]: r[1:] for r in lab.rows("SELECT username, id, role, labeler_group, active, password_hash FROM users")}
    assert set(rows) == {"ada", "lab1", "lab2", "hal"}
    for key, username, role in (("users create admin", "ada", "admin"), ("users create lab1", "lab1", "labeler"),
                                ("users create heldout", "hal", "labeler")):
        out = lab.results[key].stdout
        assert f"created {role} '{username}' (id {rows[username][0]})" in out, out
        assert rows[username][1] == role
    assert "password" not in lab.results["users create admin"].stdout  # read from stdin, never echoed
    assert rows["hal"][2] == "heldout" and rows["lab1"][2] == "train"
    generated = re.search(r"^password: (\S+)$", lab.results["users create heldout"].stdout, re.MULTILINE)
    assert generated and len(generated.group(1)) >= 12
    for _, _, _, active, password_hash in rows.values():
        assert active and password_hash.startswith("$argon2")
        assert ADMIN_PASSWORD not in password_hash and LABELER_PASSWORD not in password_hash


def test_users_list(lab):
    out = assert_ok(lab.results["users list"]).stdout
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert sorted(line[1:] for line in lines) == sorted([
        ["ada", "admin", "train", "active"], ["hal", "labeler", "heldout", "active"],
        ["lab1", "labeler", "train", "active"], ["lab2", "labeler", "train", "active"],
    ]), out
    ids = dict(lab.rows("SELECT username, id FROM users"))
    assert all(int(line[0]) == ids[line[1]] for line in lines)


def test_tokens_create_prints_a_token_stored_only_as_a_hash(lab):
    for who, username, name in (("lab1", "lab1", "e2e-lab1"), ("lab2", "lab2", "cli"), ("admin", "ada", "e2e-admin")):
        token = assert_ok(lab.results[f"tokens create {who}"]).stdout.strip()
        assert re.fullmatch(r"[A-Za-z0-9_\-]{32,}", token), lab.results[f"tokens create {who}"].describe()
        (row,) = lab.rows(
            "SELECT t.name, t.token_hash, t.prefix, t.revoked_at FROM api_tokens t JOIN users u ON u.id = t.user_id "
            "WHERE u.username = :u", u=username,
        )
        assert row[0] == name and row[3] is None
        assert len(row[1]) == 64 and token not in row[1] and token.startswith(row[2])
    assert len(set(lab.tokens.values())) == 3


def test_tokens_create_for_an_unknown_user_fails_with_a_message(lab):
    result = lab.results["tokens create nobody"]
    assert result.returncode == 2, result.describe()
    assert "error: No user named 'nobody'." in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_prompts_import(lab):
    out = assert_ok(lab.results["prompts import"]).stdout
    for line in ("read: 4", f"imported: {PROMPT_COUNT}", "near-duplicates removed: 1",
                 "dropped by the per-user cap: 0", "scrubbed for personal data: 1"):
        assert line in out.splitlines(), out
    rows = lab.rows("SELECT text, origin_user, split, category, scrubbed FROM prompts ORDER BY id")
    assert [r[1] for r in rows] == ["alice", "bob", "dana"]
    assert [r[3] for r in rows] == ["open_qa", "generation", "summarization"]
    summarize = rows[2]
    assert summarize[4] and "dana@example.com" not in summarize[0]
    # the printed split counts are the stored ones
    printed = dict(re.findall(r"(train|valid|test) (\d+)", re.search(r"^per split: (.*)$", out, re.MULTILINE).group(1)))
    stored = {s: sum(1 for r in rows if r[2] == s) for s in ("train", "valid", "test")}
    assert {k: int(v) for k, v in printed.items()} == stored


def test_completions_import(lab):
    """The command that crashed with NoReferencedTableError ('models') when run in its own process."""
    result = assert_ok(lab.results["completions import"])
    for line in ("read: 13", "imported: 12", "duplicates skipped: 1", "prompts covered: 3"):
        assert line in result.stdout.splitlines(), result.describe()
    rows = lab.rows("SELECT c.prompt_id, c.model_name, c.text, c.settings FROM completions c ORDER BY c.id")
    assert len(rows) == 12
    by_prompt: dict[int, list[str]] = {}
    for prompt_id, model, body, settings in rows:
        by_prompt.setdefault(prompt_id, []).append(model)
        assert body.startswith(f"{model}: ")
        settings = json.loads(settings) if isinstance(settings, str) else settings
        assert settings["temperature"] == 0.7
    assert sorted(by_prompt) == [r[0] for r in lab.rows("SELECT id FROM prompts ORDER BY id")]
    assert all(sorted(models) == MODELS for models in by_prompt.values())


def test_batches_create_ranking_and_demonstration(lab):
    ranking = re.search(r"created ranking batch 'rank-k4' \(id (\d+)\) with 3 tasks", assert_ok(lab.results["batches create ranking"]).stdout)
    demos = re.search(r"created demonstration batch 'demos' \(id (\d+)\) with 3 tasks", assert_ok(lab.results["batches create demonstration"]).stdout)
    assert ranking and demos, (lab.results["batches create ranking"].describe(), lab.results["batches create demonstration"].describe())
    batches = {r[0]: r[1:] for r in lab.rows("SELECT name, id, kind, k, overlap_share, overlap_count, priority FROM batches")}
    assert batches["rank-k4"][:3] == (int(ranking.group(1)), "ranking", 4)
    assert batches["rank-k4"][3:] == (1.0, 2, 2)
    assert batches["demos"][:3] == (int(demos.group(1)), "demonstration", None)
    tasks = lab.rows(
        "SELECT t.id, t.required_submissions, count(i.id) FROM tasks t LEFT JOIN task_items i ON i.task_id = t.id "
        "WHERE t.batch_id = :b GROUP BY t.id, t.required_submissions", b=batches["rank-k4"][0],
    )
    assert sorted(t[1:] for t in tasks) == [(2, 4)] * 3
    assert lab.scalar("SELECT count(*) FROM tasks WHERE batch_id = :b", b=batches["demos"][0]) == 3


def test_batches_create_from_chosen_prompts_with_guidelines(lab):
    """--prompt-ids / --category / --import choose the prompts, --preview only counts them,
    --guidelines-file sets the Markdown guidelines; a bad choice names its option and creates nothing."""
    first, second = (r[0] for r in lab.rows("SELECT id FROM prompts ORDER BY id LIMIT 2"))
    tag = lab.scalar("SELECT import_tag FROM prompts WHERE id = :i", i=first)
    assert tag and tag.startswith("import-")  # every import carries a tag, made of its time when not named
    guide = lab.home / "guide.md"
    guide.write_text("# Be brief\n\n- one **sentence**\n", encoding="utf-8")
    preview = assert_ok(lab.run("batches preview", "batches", "create", "--name", "never", "--import", tag, "--preview"))
    assert re.search(r"^\d+ active prompts match \(import tag: import-", preview.stdout), preview.stdout
    created = assert_ok(lab.run("batches create chosen", "batches", "create", "--name", "chosen", "--kind", "demonstration",
                                "--prompt-ids", f"{first},{second}", "--guidelines-file", str(guide), "--priority", "-50"))
    assert re.search(r"created demonstration batch 'chosen' \(id (\d+)\) with 2 tasks", created.stdout), created.stdout
    batch_id, guidelines, selection = lab.rows("SELECT id, guidelines, selection FROM batches WHERE name = 'chosen'")[0]
    with lab.engine.begin() as conn:  # keep it out of the labeling the served tests do
        conn.execute(text("UPDATE batches SET status = 'closed' WHERE id = :b"), {"b": batch_id})
    assert guidelines == "# Be brief\n\n- one **sentence**"
    assert sorted(r[0] for r in lab.rows("SELECT prompt_id FROM tasks WHERE batch_id = :b", b=batch_id)) == [first, second]
    selection = json.loads(selection) if isinstance(selection, str) else selection
    assert selection == {"prompt_ids": [first, second]}
    for key, args, option, words in (
        ("bad ids", ("--prompt-ids", "999999"), "--prompt-ids", "no prompt with id 999999"),
        ("bad category", ("--category", "poetry"), "--category", "Unknown category 'poetry'"),
        ("bad import", ("--import", "never-imported"), "--import", "never-imported"),
    ):
        bad = lab.run(f"batches {key}", "batches", "create", "--name", "nope", "--kind", "demonstration", *args)
        assert bad.returncode == 2 and option in bad.stderr and words in bad.stderr and "Traceback" not in bad.stderr, bad.describe()
    assert lab.scalar("SELECT count(*) FROM batches WHERE name = 'nope'") == 0


def test_batches_list_before_labeling(lab, served):
    out = assert_ok(lab.results["batches list"]).stdout
    assert re.search(r"\brank-k4\s+ranking\s+K=4\s+0/3 tasks done\s+open\b", out), out
    assert re.search(r"\bdemos\s+demonstration\s+K=-\s+0/3 tasks done\s+open\b", out), out


# --- `rlhf serve` ------------------------------------------------------------------------------------


@dataclass
class Served:
    base_url: str
    returncode: int | None = None
    stderr: str = ""
    stop_seconds: float = 0.0
    login_page: httpx.Response | None = None
    responses: dict[str, httpx.Response] = field(default_factory=dict)
    rankings: list[dict] = field(default_factory=list)  # what each labeler submitted
    no_more: dict[str, dict] = field(default_factory=dict)
    batches_list: Result | None = None


def _wait_until_up(proc: subprocess.Popen, url: str, err_file: Path, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`rlhf serve` exited {proc.returncode} before answering:\n{err_file.read_text()}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.05)
    pytest.fail(f"`rlhf serve` did not answer {url} within {timeout} s:\n{err_file.read_text()}")


def _sign_in(base_url: str, username: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=10) as browser:
        page = browser.get("/login")
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert token, page.text[:500]
        return browser.post("/login", data={"username": username, "password": password, "csrf_token": token.group(1), "next": "/"})


def _label(served: Served, client: httpx.Client, who: str, token: str, models: dict[int, str], *, swap_last_two: bool) -> None:
    """Rank every ranking task this labeler can get (by model, best first), until none is left."""
    headers = {"Authorization": f"Bearer {token}"}
    for n in range(10):
        got = client.post("/api/labeling/next", headers=headers, json={"kind": "ranking"})
        served.responses[f"{who} next ranking {n}"] = got
        assert got.status_code == 200, got.text
        assignment = got.json()["assignment"]
        if assignment is None:
            served.no_more[f"{who} ranking"] = got.json()
            return
        shown = [r["completion_id"] for r in assignment["responses"]]
        order = sorted(shown, key=lambda c: MODELS.index(models[c]))
        if swap_last_two and n == 0:
            order[-2:] = order[-1:-3:-1]
        body = {"ranked": [[c] for c in order], "ratings": [{"completion_id": c, "likert": 7 - i} for i, c in enumerate(order)],
                "time_spent_s": 12.5}
        sent = client.post(f"/api/labeling/assignments/{assignment['assignment_id']}/ranking", headers=headers, json=body)
        served.responses[f"{who} submit ranking {n}"] = sent
        assert sent.status_code == 201, sent.text
        served.rankings.append({"labeler": who, "task_id": assignment["task_id"], "shown": shown, "ranked": order})
    pytest.fail(f"{who} was given more ranking tasks than exist")


@pytest.fixture(scope="module")
def served(lab):
    """`rlhf serve --workers 1` as users start it; labels through the API; stopped with SIGTERM."""
    port = free_port()
    out_file, err_file = lab.home / "serve.out", lab.home / "serve.err"
    with out_file.open("w") as out, err_file.open("w") as err:
        proc = subprocess.Popen(
            [*RLHF, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=lab.home, env=lab.env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        )
    served = Served(base_url=f"http://127.0.0.1:{port}")
    try:
        lab.run("batches list", "batches", "list")  # while the server starts, before anyone labels
        served.login_page = _wait_until_up(proc, served.base_url + "/login", err_file)
        served.responses["sign in ada"] = _sign_in(served.base_url, "ada", ADMIN_PASSWORD)
        generated = re.search(r"^password: (\S+)$", lab.results["users create heldout"].stdout, re.MULTILINE)
        served.responses["sign in hal"] = _sign_in(served.base_url, "hal", generated.group(1) if generated else "?")
        served.responses["sign in lab1 wrong password"] = _sign_in(served.base_url, "lab1", "not the password at all")

        models = dict(lab.rows("SELECT id, model_name FROM completions"))
        with httpx.Client(base_url=served.base_url, timeout=30) as client:
            served.responses["bad token"] = client.post(
                "/api/labeling/next", headers={"Authorization": "Bearer rlhf_not-a-real-token-0123456789abcdef"}, json={})
            served.responses["labeler on admin api"] = client.get(
                "/api/labeling/batches", headers={"Authorization": f"Bearer {lab.tokens['lab1']}"})
            _label(served, client, "lab1", lab.tokens["lab1"], models, swap_last_two=False)
            _label(served, client, "lab2", lab.tokens["lab2"], models, swap_last_two=True)
            headers = {"Authorization": f"Bearer {lab.tokens['lab1']}"}
            for n in range(10):
                got = client.post("/api/labeling/next", headers=headers, json={"kind": "demonstration"})
                assert got.status_code == 200, got.text
                assignment = got.json()["assignment"]
                if assignment is None:
                    served.no_more["lab1 demonstration"] = got.json()
                    break
                assert assignment["kind"] == "demonstration" and assignment["prompt"]["text"]
                sent = client.post(f"/api/labeling/assignments/{assignment['assignment_id']}/demonstration", headers=headers,
                                   json={"text": f"Demonstration {n}: a careful answer to prompt {assignment['prompt']['id']}.",
                                         "time_spent_s": 30})
                served.responses[f"lab1 submit demonstration {n}"] = sent
                assert sent.status_code == 201, sent.text
            served.responses["admin batches"] = client.get(
                "/api/labeling/batches", headers={"Authorization": f"Bearer {lab.tokens['admin']}"})
        served.batches_list = lab.run("batches list after labeling", "batches", "list")
    finally:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            served.returncode = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            served.returncode = None
        served.stop_seconds = time.monotonic() - started
        served.stderr = err_file.read_text()
    return served


def test_serve_answers_login_page(served):
    assert served.login_page.status_code == 200
    assert served.login_page.headers["content-type"].startswith("text/html")
    assert 'name="csrf-token"' in served.login_page.text


def test_serve_signs_in_with_the_cli_passwords(served):
    # --password-stdin stored exactly the line given; the generated password printed works too
    assert served.responses["sign in ada"].status_code == 303, served.responses["sign in ada"].text[:500]
    assert served.responses["sign in hal"].status_code == 303, served.responses["sign in hal"].text[:500]
    assert served.responses["sign in lab1 wrong password"].status_code != 303


def test_serve_api_refuses_bad_tokens_and_roles(served):
    assert served.responses["bad token"].status_code == 401, served.responses["bad token"].text
    assert served.responses["labeler on admin api"].status_code == 403, served.responses["labeler on admin api"].text


def test_serve_labeling_api_with_cli_tokens(lab, served):
    # two labelers ranked each of the 3 tasks once (overlap 2), then found no more work
    assert sorted((r["labeler"], r["task_id"]) for r in served.rankings) == sorted(
        (who, t) for who in ("lab1", "lab2") for (t,) in lab.rows(
            "SELECT t.id FROM tasks t JOIN batches b ON b.id = t.batch_id WHERE b.name = 'rank-k4'"))
    for r in served.rankings:
        assert len(r["shown"]) == 4
    assert served.no_more["lab1 ranking"]["message"] and served.no_more["lab2 ranking"]["message"]
    assert served.no_more["lab1 demonstration"]["assignment"] is None
    stored = lab.rows(
        "SELECT u.username, r.task_id, r.time_spent_s, count(e.id) FROM rankings r JOIN users u ON u.id = r.labeler_id "
        "JOIN ranking_entries e ON e.ranking_id = r.id WHERE r.external_labeler IS NULL "
        "GROUP BY u.username, r.task_id, r.time_spent_s")
    assert sorted((u, t) for u, t, _, _ in stored) == sorted((r["labeler"], r["task_id"]) for r in served.rankings)
    assert all(n == 4 and spent == 12.5 for _, _, spent, n in stored)
    # the buckets stored are the order sent
    for r in served.rankings:
        entries = lab.rows(
            "SELECT e.completion_id, e.bucket, e.likert FROM ranking_entries e JOIN rankings k ON k.id = e.ranking_id "
            "JOIN users u ON u.id = k.labeler_id WHERE u.username = :u AND k.task_id = :t ORDER BY e.bucket",
            u=r["labeler"], t=r["task_id"])
        assert [e[0] for e in entries] == r["ranked"] and [e[2] for e in entries] == [7, 6, 5, 4]
    demos = lab.rows("SELECT u.username, d.text FROM demonstrations d JOIN users u ON u.id = d.author_id")
    assert len(demos) == 3 and {u for u, _ in demos} == {"lab1"}


def test_serve_admin_api_with_cli_token(served):
    response = served.responses["admin batches"]
    assert response.status_code == 200, response.text
    by_name = {b["name"]: b for b in response.json()}
    assert by_name["rank-k4"]["kind"] == "ranking" and by_name["rank-k4"]["k"] == 4
    assert (by_name["rank-k4"]["done"], by_name["rank-k4"]["tasks"]) == (3, 3)
    assert (by_name["demos"]["done"], by_name["demos"]["tasks"]) == (3, 3)


def test_batches_list_after_labeling(served):
    out = assert_ok(served.batches_list).stdout
    assert re.search(r"\brank-k4\s+ranking\s+K=4\s+3/3 tasks done\b", out), out
    assert re.search(r"\bdemos\s+demonstration\s+K=-\s+3/3 tasks done\b", out), out


def test_serve_stops_cleanly_on_sigterm(served):
    # uvicorn shuts down gracefully, then may re-raise the signal it caught: either is a clean stop
    assert served.returncode in (0, -signal.SIGTERM), f"exit {served.returncode}\n{served.stderr}"
    assert served.stop_seconds < 10
    assert "Traceback" not in served.stderr and "ERROR" not in served.stderr, served.stderr


# --- exports, frozen datasets, agreement, re-import, worker ----------------------------------------


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def exported(lab, served):
    out = lab.home / "out"
    lab.run_together({
        "export comparisons": (("export", "comparisons", "--out", str(out / "comparisons.jsonl")), None),
        "export pairwise": (("export", "pairwise", "--out", str(out / "pairwise.jsonl")), None),
        "export sft": (("export", "sft", "--out", str(out / "sft.jsonl.gz")), None),
        "export prompts": (("export", "prompts", "--out", str(out / "prompts.parquet")), None),
        "export freeze": (("export", "comparisons", "--out", str(out / "frozen.jsonl"), "--freeze", "e2e-comparisons-v1"), None),
        "datasets agreement": (("datasets", "agreement"), None),
        "worker once": (("worker", "--once", "--poll", "0.1"), None),
    })
    lab.counts_before_import = {
        "rankings": lab.scalar("SELECT count(*) FROM rankings"),
        "prompts": lab.scalar("SELECT count(*) FROM prompts"),
    }
    lab.run_together({
        "datasets list": (("datasets", "list"), None),
        "import comparisons": (("import", "comparisons", str(out / "comparisons.jsonl"), "--batch", "reimported"), None),
    })
    return out


def test_export_comparisons(lab, exported):
    result = assert_ok(lab.results["export comparisons"])
    path = exported / "comparisons.jsonl"
    assert f"wrote 6 comparisons rows to {path}" in result.stdout, result.stdout
    digest = re.search(r"^sha256 ([0-9a-f]{64})$", result.stdout, re.MULTILINE)
    assert digest and digest.group(1) == hashlib.sha256(path.read_bytes()).hexdigest()
    rows = read_rows(path)
    assert len(rows) == 6
    models = dict(lab.rows("SELECT id, model_name FROM completions"))
    for row in rows:
        assert len(row["completions"]) == 4 and row["batch"] == "rank-k4" and row["labeler_group"] == "train"
        assert row["labeler"].startswith("lab_") and "lab1" not in json.dumps(row) and "lab2" not in row["labeler"]
        assert all(len(bucket) == 1 for bucket in row["ranked"])
        assert models[row["ranked"][0][0]] == "policy-a"
    assert len({row["labeler"] for row in rows}) == 2


def test_export_pairwise(lab, exported):
    result = assert_ok(lab.results["export pairwise"])
    rows = read_rows(exported / "pairwise.jsonl")
    assert "wrote 36 pairwise rows" in result.stdout, result.stdout  # 6 rankings x C(4, 2) pairs
    assert len(rows) == 36
    assert all({"prompt", "chosen", "rejected"} <= row.keys() and row["chosen"] != row["rejected"] for row in rows)
    assert sum(row["chosen"].startswith("policy-a") for row in rows) == 6 * 3


def test_export_sft_gzip(lab, exported):
    result = assert_ok(lab.results["export sft"])
    assert "wrote 3 sft rows" in result.stdout, result.stdout
    rows = read_rows(exported / "sft.jsonl.gz")
    assert sorted(row["completion"] for row in rows) == sorted(t for (t,) in lab.rows("SELECT text FROM demonstrations"))
    assert all(row["messages"][-1] == {"role": "assistant", "content": row["completion"]} for row in rows)


def test_export_prompts_parquet(lab, exported):
    result = assert_ok(lab.results["export prompts"])
    assert f"wrote {PROMPT_COUNT} prompts rows" in result.stdout, result.stdout
    rows = read_rows(exported / "prompts.parquet")
    assert sorted(row["prompt"] for row in rows) == sorted(t for (t,) in lab.rows("SELECT text FROM prompts"))
    assert not any("dana@example.com" in row["prompt"] for row in rows)


def test_export_freeze_and_datasets_list(lab, exported):
    result = assert_ok(lab.results["export freeze"])
    match = re.search(r"^dataset (\d+) 'e2e-comparisons-v1': 6 rows, sha256 ([0-9a-f]{64})$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    dataset_id, digest = int(match.group(1)), match.group(2)
    (row,) = lab.rows("SELECT id, name, kind, format, row_count, sha256, path FROM datasets")
    assert row[:6] == (dataset_id, "e2e-comparisons-v1", "comparisons", "jsonl", 6, digest)
    stored = lab.artifacts / row[6]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest
    assert (exported / "frozen.jsonl").read_bytes() == stored.read_bytes()
    manifest = json.loads((stored.parent / "manifest.json").read_text())
    assert manifest["sha256"] == digest and manifest["row_count"] == 6 and manifest["dataset_id"] == dataset_id
    # the frozen file holds the same rows as the plain export
    assert read_rows(stored) == read_rows(exported / "comparisons.jsonl")

    listing = assert_ok(lab.results["datasets list"]).stdout
    assert re.search(rf"^\s*{dataset_id}\s+comparisons\s+jsonl\s+6 rows\s+{digest[:12]}\s+e2e-comparisons-v1$", listing, re.MULTILINE), listing


def test_datasets_agreement(lab, exported):
    report = json.loads(assert_ok(lab.results["datasets agreement"]).stdout)
    # 3 tasks ranked by both labelers, 6 response pairs each; lab2 swapped one pair on one task
    assert report["overall"]["pairs"] == 18 and report["overall"]["tasks"] == 3
    assert report["overall"]["agreement"] == pytest.approx(17 / 18)


def test_import_comparisons_reimports_the_export(lab, exported):
    result = assert_ok(lab.results["import comparisons"])
    out = result.stdout.splitlines()
    assert "read: 6" in out and "imported: 6" in out and "skipped: 0" in out, result.stdout
    before = lab.counts_before_import
    assert lab.scalar("SELECT count(*) FROM rankings") == before["rankings"] + 6
    assert lab.scalar("SELECT count(*) FROM prompts") == before["prompts"]  # matched by content
    exported_rows = read_rows(exported / "comparisons.jsonl")
    imported = lab.rows(
        "SELECT r.external_labeler, b.source FROM rankings r JOIN batches b ON b.id = r.batch_id WHERE b.name = 'reimported'")
    assert len(imported) == 6 and {s for _, s in imported} == {"import"}
    assert sorted(name for name, _ in imported) == sorted(row["labeler"] for row in exported_rows)


def test_worker_once_on_an_empty_queue(lab, exported):
    result = assert_ok(lab.results["worker once"])
    assert "worker finished 0 run(s)" in result.stdout, result.describe()
    assert lab.scalar("SELECT count(*) FROM runs") == 0


# --- every command's --help -------------------------------------------------------------------------


def readme_commands() -> dict[tuple[str, ...], set[str]]:
    """Each `rlhf ...` command of README.md's command table, with the options it documents."""
    commands: dict[tuple[str, ...], set[str]] = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `rlhf "):
            continue
        cell = line.split("|")[1]
        for usage in re.findall(r"`(rlhf [^`]*)`", cell):
            words = usage.split()[1:]
            path = []
            for word in words:
                if not re.fullmatch(r"[a-z][a-z-]*", word):
                    break
                path.append(word)
            commands.setdefault(tuple(path), set()).update(re.findall(r"--[a-z][a-z-]*", usage))
    return commands


README_COMMANDS = readme_commands()
HELP_COMMANDS = [()] + sorted(c for c in README_COMMANDS if c not in NOT_TESTED)


def test_readme_lists_the_commands():
    # a guard on the parser above: an empty or mangled table would make the --help tests vacuous
    assert {("serve",), ("db", "upgrade"), ("users", "create"), ("completions", "import"), ("export",),
            ("import",), ("worker",), ("datasets", "agreement")} <= set(README_COMMANDS)
    assert README_COMMANDS[("users", "create")] >= {"--username", "--role", "--group", "--password-stdin"}


@pytest.fixture(scope="module", autouse=True)
def help_processes(tmp_path_factory):
    """`rlhf ... --help` for every command, started with the module so that they run while the
    setup commands run; the database named in the settings must stay untouched."""
    base = tmp_path_factory.mktemp("entry_points_help")
    env = command_env(f"sqlite:///{base / 'db' / 'never-created.sqlite3'}", base / "artifacts")
    procs = {
        command: subprocess.Popen([*RLHF, *command, "--help"], cwd=base, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        for command in HELP_COMMANDS
    }
    yield base, procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def helps(help_processes):
    base, procs = help_processes
    results = {}
    for command, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[command] = Result((*command, "--help"), proc.returncode, out, err)
    assert not (base / "db").exists() and not (base / "artifacts").exists(), "--help touched the database or artifacts"
    return results


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "rlhf")
def test_help(helps, command):
    result = assert_ok(helps[command])
    usage = " ".join(["rlhf", *command])
    assert re.search(rf"Usage: (rlhf|python -m app\.cli|\S+) {re.escape(' '.join(command))}".rstrip(), result.stdout), result.describe()
    for option in README_COMMANDS.get(command, ()):  # every option the README shows is real
        assert option in result.stdout, f"{usage} --help does not mention {option}:\n{result.stdout}"
    if not command:  # the top level lists every command group the README documents
        for name in {c[0] for c in README_COMMANDS}:
            assert re.search(rf"^\W*{name}\b", result.stdout, re.MULTILINE), f"`rlhf --help` does not list {name}:\n{result.stdout}"
