"""create_app(): the FastAPI application with its routers, templates, static files and error handlers."""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from app import asyncdb, web
from app.config import REPO_ROOT, Settings, get_settings
from app.db import make_engine, make_sessionmaker
from app.deps import csrf_protect
from app.errors import AppError
from app.params import check_inputs
from app import limits
from app.security import SecurityHeadersMiddleware

# Each domain contributes a JSON router and an HTML router; add new domains here.
from app.audit import pages as audit_pages
from app.datasets import pages as datasets_pages
from app.datasets import routes as datasets_routes
from app.evals import pages as evals_pages
from app.evals import routes as evals_routes
from app.labeling import admin_pages as labeling_admin_pages
from app.labeling import pages as labeling_pages
from app.labeling import review_pages as labeling_review_pages
from app.labeling import routes as labeling_routes
from app.prompts import pages as prompts_pages
from app.prompts import routes as prompts_routes
from app.registry import pages as registry_pages
from app.registry import routes as registry_routes
from app.runs import pages as runs_pages
from app.runs import routes as runs_routes
from app.users import pages as users_pages
from app.users import routes as users_routes

ROUTERS = [
    labeling_routes.hot_router,  # first: matched first (routes are tried in order)
    users_routes.router,
    users_pages.router,
    audit_pages.router,
    prompts_routes.router,
    prompts_pages.router,
    labeling_routes.router,
    labeling_pages.router,
    labeling_admin_pages.router,
    labeling_review_pages.router,
    registry_routes.router,
    registry_pages.router,
    runs_routes.router,
    runs_pages.router,
    evals_routes.router,
    evals_pages.router,
    datasets_routes.router,
    datasets_pages.router,
]


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Opens the async PostgreSQL pool of the labeling hot path for this event loop (one per
    server process; a test client runs its own loop)."""
    # A server process allocates many short-lived objects per request: collect the young
    # generation less often, and leave what start-up built out of every collection (measured:
    # the collector took ~6% of a server process's CPU under the labeling load).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    if not (app.state.hot_path_enabled and asyncdb.is_postgres(app.state.settings.database_url)):
        yield
        return
    pool = asyncdb.make_pool(app.state.settings.database_url)
    await pool.open(wait=True)
    loop = asyncio.get_running_loop()
    app.state.hot_pools[loop] = asyncdb.HotDatabase(pool)
    try:
        yield
    finally:
        await app.state.hot_pools.pop(loop).close()


def create_app(settings: Settings | None = None, *, engine=None, hot_path: bool = True) -> FastAPI:
    """The application. ``hot_path=False`` serves the labeling API through the sync services
    only (the test suite does, so that each test's rolled-back transaction sees everything)."""
    settings = settings or get_settings()
    secret_key = settings.require_secret()
    app = FastAPI(
        lifespan=lifespan,
        title="rlhf-lab",
        version="0.1.0",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        dependencies=[Depends(check_inputs), Depends(csrf_protect)],  # check_inputs: app/params.py
    )
    app.state.settings = settings
    app.state.secret_key = secret_key
    app.state.engine = engine or make_engine(settings.database_url)
    app.state.sessionmaker = make_sessionmaker(app.state.engine)
    app.state.hot_path_enabled = hot_path
    app.state.hot_pools = {}  # event loop -> asyncdb.HotDatabase, opened and removed by the lifespan
    app.state.checked_tokens = {}  # API tokens recently checked by the hot path (app/deps.py)

    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key,
        session_cookie="rlhf_session",
        max_age=settings.session_max_age_s,
        same_site="lax",
        https_only=settings.cookie_secure,
    )
    limits.install(app, settings)  # body limits: before the session, CSRF, parsing or authentication
    app.add_middleware(SecurityHeadersMiddleware)

    app.add_exception_handler(AppError, web.app_error_handler)
    app.add_exception_handler(RequestValidationError, web.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, web.http_error_handler)
    app.add_exception_handler(Exception, web.server_error_handler)

    app.mount("/static", StaticFiles(directory=str(REPO_ROOT / "static")), name="static")
    for router in ROUTERS:
        app.include_router(router)
    return app
