"""An admin in headless Chromium takes a base model through one turn of the loop: registers it,
launches SFT on frozen demonstrations from the model page, watches a real worker train it live,
and follows the output to the new model's lineage.

This module serves the app itself (its own database and artifact folder) because the worker, a
separate process, needs the server's settings: database URL, secret key and artifact folder.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from app.config import Settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.main import create_app
from app.migrate import upgrade
from app.runs.models import Run
from tests.db_setup import fresh_database
from tests.factories import PASSWORD, make_demonstration, make_prompt, make_user
from tests.live_server import serving

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
SECRET = "runs-browser-secret-Hn4tW8qZ1cK6vR3xP9mL2bJ7sD5fG0yA"
RUN_TIMEOUT_MS = 45_000  # queue -> claimed -> torch import -> 3 tiny epochs -> registered


class RunsServer:
    def __init__(self, url: str, factory, settings: Settings):
        self.url = url
        self.factory = factory
        self.settings = settings


@pytest.fixture(scope="module")
def runs_server(tmp_path_factory):
    """The app on a free port with settings a worker process can share."""
    with fresh_database(tmp_path_factory.mktemp("runs-browser"), "runsbrowser") as url:
        upgrade(url)
        settings = Settings(mode="test", database_url=url, secret_key=SECRET,
                            artifact_dir=tmp_path_factory.mktemp("runs-artifacts"))
        engine = make_engine(url)
        with serving(create_app(settings, engine=engine)) as base_url:
            yield RunsServer(base_url, make_sessionmaker(engine), settings)
        engine.dispose()


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "RLHF_DATABASE_URL": settings.database_url, "RLHF_SECRET_KEY": SECRET,
            "RLHF_ARTIFACT_DIR": str(settings.artifact_dir), "TRAINERS_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}


def _dies_with_pytest():
    """preexec_fn: the kernel sends SIGTERM to the child if this test process dies outright
    (kill -9, a CI timeout), so no worker outlives the test even then."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _stop(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM (a worker then stops its trainer and gives its run back), SIGKILL if still there.
    The worker runs in a session of its own, so the signals reach it and nothing of pytest; its
    trainer (a session of its own too) is stopped by the worker, or by the kernel when it dies."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)


@pytest.fixture
def worker(runs_server, tmp_path):
    """`rlhf worker --poll 0.5` against the server's database and artifact folder, always stopped
    at the end (its trainer dies with it: PR_SET_PDEATHSIG in app/worker.py)."""
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--poll", "0.5", "--gpus", "0"],
            cwd=tmp_path, env=_env(runs_server.settings), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_dies_with_pytest(),  # noqa: PLW1509 - as app/worker.py does
        )
    try:
        yield process, log_path
    finally:
        _stop(process)
        assert process.poll() is not None, f"worker {process.pid} is still running"


@pytest.fixture(scope="module")
def tiny_model_build(tmp_path_factory):
    """A tiny offline model folder, built in the background (torch's import alone takes seconds)
    while the server starts and the browser work begins; call it to wait for the folder."""
    folder = tmp_path_factory.mktemp("tiny-model")
    out = folder / "tiny-base"
    log_path = folder / "init-tiny.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainers", "init-tiny", "--out", str(out), "--hidden-size", "32",
             "--num-layers", "1", "--intermediate-size", "64"],
            cwd=REPO, env={**os.environ, "TRAINERS_NO_PROGRESS": "1"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_dies_with_pytest(),  # noqa: PLW1509 - as app/worker.py does
        )

    def wait() -> Path:
        assert process.wait(90) == 0, log_path.read_text(errors="replace")
        assert (out / "config.json").is_file()
        return out

    wait.path = out
    try:
        yield wait
    finally:
        _stop(process, grace_s=5)


def _seed(runs_server) -> tuple[str, int]:
    """An admin, and demonstrations by a training-group labeler on eight train prompts."""
    tag = uuid.uuid4().hex[:6]
    with unit_of_work(runs_server.factory) as db:
        admin = make_user(db, "admin", username=f"runs-admin-{tag}")
        author = make_user(db, "labeler", username=f"runs-writer-{tag}")
        for i in range(8):
            prompt = make_prompt(db, f"Name a colour, example {i} ({tag}).")
            make_demonstration(db, prompt=prompt, author=author, text=f"Blue is a colour, number {i}.")
    return admin.username, 8


def _login(page, server, username):
    page.goto(f"{server.url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/")


def _submit(page, selector: str, path: str):
    """Click a form's submit button; return the response to its POST (its status before redirects)."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(path)) as info:
        page.click(selector)
    page.wait_for_load_state("domcontentloaded")
    return info.value


# Installed before runs.js: records every aria-valuenow the progress bar shows, from the server-
# rendered value on, so the test sees each step the page showed, however quickly they came.
RECORD_PROGRESS = """
document.addEventListener("DOMContentLoaded", function () {
  var bar = document.querySelector("#run-detail .progress");
  if (!bar) return;
  window.__progress = [Number(bar.getAttribute("aria-valuenow"))];
  new MutationObserver(function () {
    var v = Number(bar.getAttribute("aria-valuenow"));
    if (window.__progress[window.__progress.length - 1] !== v) window.__progress.push(v);
  }).observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
});
"""


def test_admin_registers_a_model_launches_sft_watches_it_and_sees_the_lineage(tiny_model_build, runs_server, worker, new_page):
    started = time.monotonic()
    server = runs_server
    worker_process, worker_log = worker
    admin, n_demos = _seed(server)
    page = new_page()
    page.add_init_script(RECORD_PROGRESS)
    _login(page, server, admin)

    # --- freeze the demonstrations as an SFT dataset on the Datasets page
    dataset_name = f"sft-demos-{uuid.uuid4().hex[:6]}"
    page.goto(f"{server.url}/datasets")
    freeze = page.locator("form[action='/datasets/freeze']")
    freeze.locator("input[name=name]").fill(dataset_name)
    freeze.locator("select[name=kind]").select_option("sft")
    _submit(page, "form[action='/datasets/freeze'] button[type=submit]", "/datasets/freeze")
    page.wait_for_url(re.compile(r"/datasets/\d+$"))
    dataset_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("body")).to_contain_text(dataset_name)

    # --- register a base model: a name with a space is refused next to the field, input kept
    page.goto(f"{server.url}/models")
    form = page.locator("#register-model")
    form.locator("input[name=name]").fill("tiny base")
    form.locator("input[name=path]").fill(str(tiny_model_build.path))
    response = _submit(page, "#register-model button[type=submit]", "/models")
    assert response.status == 422
    expect(page.locator("#form-error")).to_contain_text("no spaces")
    expect(page.locator("#register-model input[name=name]")).to_have_class(re.compile(r"\bfield-error\b"))
    expect(page.locator("#register-model input[name=name]")).to_have_value("tiny base")
    expect(page.locator("#register-model input[name=path]")).to_have_value(str(tiny_model_build.path))
    expect(page.locator("#register-model input[name=path]")).not_to_have_class(re.compile(r"\bfield-error\b"))

    # fixed on the same form, once the tiny model folder is built
    base_name = f"tiny-base-{uuid.uuid4().hex[:6]}"
    model_dir = tiny_model_build()
    page.fill("#register-model input[name=name]", base_name)
    _submit(page, "#register-model button[type=submit]", "/models")
    page.wait_for_url(re.compile(r"/models/\d+$"))
    base_id = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("h1")).to_contain_text(base_name)
    expect(page.locator("#lineage")).to_contain_text(str(model_dir))

    # --- from the model page, the next step: SFT; the model is preselected
    page.goto(f"{server.url}/models/{base_id}")
    page.click("#next-steps a:has-text('Fine-tune on demonstrations (SFT)')")
    page.wait_for_url(re.compile(r"/runs/new\?kind=sft"))
    expect(page.locator("select[name='input.model']")).to_have_value(str(base_id))
    page.select_option("select[name='input.data']", str(dataset_id))
    expect(page.locator("select[name='input.data'] option:checked")).to_contain_text(f"{n_demos} rows")
    output_name = f"tiny-sft-{uuid.uuid4().hex[:6]}"
    page.fill("input[name=output_name]", output_name)
    page.fill("#opt-epochs", "lots")
    page.fill("#opt-batch_size", "2")
    page.fill("#opt-max_length", "64")
    page.click("#run-form details summary")  # save_every is an advanced option
    page.fill("#opt-save_every", "1")

    # a bad option: 422, the form again with the message at the field, nothing queued, input kept
    response = _submit(page, "#run-form button[type=submit]", "/runs")
    assert response.status == 422
    expect(page.locator("#form-error")).to_contain_text("epochs")
    expect(page.locator("#error-epochs")).to_contain_text("expected int, got 'lots'")
    expect(page.locator("#opt-epochs")).to_have_class(re.compile(r"\bfield-error\b"))
    expect(page.locator("#opt-epochs")).to_have_value("lots")
    expect(page.locator("#opt-batch_size")).not_to_have_class(re.compile(r"\bfield-error\b"))
    expect(page.locator("#opt-batch_size")).to_have_value("2")
    expect(page.locator("#opt-save_every")).to_have_value("1")
    expect(page.locator("select[name='input.model']")).to_have_value(str(base_id))
    expect(page.locator("select[name='input.data']")).to_have_value(str(dataset_id))
    expect(page.locator("input[name=output_name]")).to_have_value(output_name)
    with unit_of_work(server.factory) as db:
        assert db.scalar(select(func.count(Run.id))) == 0

    page.fill("#opt-epochs", "3")
    _submit(page, "#run-form button[type=submit]", "/runs")
    page.wait_for_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])

    # --- the run page, live: the worker claims the run, the bar moves, charts appear, it succeeds
    try:
        expect(page.locator("#run-detail .run-status")).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)
    except AssertionError:
        raise AssertionError(
            f"run {run_id} did not succeed; page log:\n{page.text_content('#run-message')}\n"
            f"worker (exit {worker_process.poll()}):\n{worker_log.read_text(errors='replace')}") from None
    expect(page.locator("#run-detail .progress")).to_have_attribute("aria-valuenow", "100")
    seen = page.evaluate("window.__progress")
    assert seen[0] < 100 and seen[-1] == 100, seen
    assert seen == sorted(seen), f"the progress bar went backwards: {seen}"
    chart = page.locator("#charts figure.chart svg path.line")
    expect(chart.first).to_be_visible()
    expect(page.locator("#charts svg[aria-label='train/loss'] path.line")).to_have_count(1)
    expect(page.locator("#charts figcaption").first).to_contain_text("at step")
    assert page.locator("#charts figure.chart").count() >= 1

    # --- the output model appears on the page without a reload, and the Cancel button goes
    expect(page.locator("#output-model")).to_have_text(output_name)
    expect(page.locator("#output-pending")).to_have_count(0)
    expect(page.locator("#cancel-run")).to_have_count(0)

    # --- its lineage: the SFT model <- its dataset, and <- the base model as parent
    page.click("#output-model")
    page.wait_for_url(re.compile(r"/models/\d+$"))
    sft_id = int(page.url.rsplit("/", 1)[1])
    assert sft_id != base_id
    expect(page.locator("h1")).to_contain_text(output_name)
    expect(page.locator("h1 .badge")).to_have_text("sft")
    top = page.locator(f"#lineage > ul > li[data-model-id='{sft_id}']")
    expect(top.locator(f":scope > a[href='/models/{sft_id}']")).to_have_text(output_name)
    expect(top.locator(":scope > span.badge")).to_have_text("sft")
    expect(top.locator(f":scope > a[href='/runs/{run_id}']")).to_have_count(1)
    data_row = top.locator(":scope > ul.lineage > li").filter(has=page.locator(f"a[href='/datasets/{dataset_id}']"))
    expect(data_row).to_have_count(1)
    expect(data_row).to_contain_text(f"data ← dataset {dataset_name}")
    expect(data_row).to_contain_text(f"{n_demos} rows")
    parent = top.locator(f":scope > ul.lineage > li[data-model-id='{base_id}']")
    expect(parent).to_have_count(1)
    expect(parent.locator(":scope > code")).to_have_text("model")
    expect(parent.locator(f":scope > a[href='/models/{base_id}']")).to_have_text(base_name)
    expect(parent.locator(":scope > span.badge")).to_have_text("base")

    print(f"\nprogress seen by the page: {seen}; test body {time.monotonic() - started:.1f}s")
