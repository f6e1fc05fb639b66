"""Browser tests: the real app served by uvicorn in a background thread on a free port, against
its own fresh database, driven by headless Debian Chromium through Playwright."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.migrate import upgrade
from tests.db_setup import fresh_database
from tests.live_server import serving

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class LiveServer:
    def __init__(self, url: str, factory):
        self.url = url
        self.factory = factory


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    with fresh_database(tmp_path_factory.mktemp("browser"), "browser") as url:
        upgrade(url)
        settings = Settings(mode="test", database_url=url, secret_key="browser-secret-Vq8nR2kX7pL4wT9zB3mH6sJ1dF5gC0yE",
                            artifact_dir=tmp_path_factory.mktemp("artifacts"))
        engine = make_engine(url)
        with serving(create_app(settings, engine=engine)) as base_url:
            yield LiveServer(base_url, make_sessionmaker(engine))
        engine.dispose()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def new_page(browser):
    contexts = []

    def _make(**options):  # options of browser.new_context: viewport, has_touch, is_mobile ...
        ctx = browser.new_context(**options)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        return page

    yield _make
    for ctx in contexts:
        ctx.close()
