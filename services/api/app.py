"""The api's composition root: :func:`create_app` builds the clients and wires the routers.

Nothing is built at import. Tests pass their own ``engine`` and ``redis``; a process calls
:func:`services.api.main.main`, which builds them from the settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis as redis_lib
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from shared.bus.publisher import OutboxRelay, Publisher
from shared.config import ApiSettings, Settings
from shared.store.db import make_engine, make_sessions

from . import problems
from .commands import SOURCE, flush_outbox
from .context import ApiContext, KeyCache
from .deps import credential_is_live
from .fastpath import FastReads
from .hub import Hub, HubOptions
from .idempotency import IdempotencyMiddleware
from .metrics import ApiMetrics, MetricsMiddleware
from .middleware import BodyLimitMiddleware, NulGuardMiddleware, SecurityHeadersMiddleware
from .routers import (
    admin,
    alerts,
    auth,
    control,
    health,
    ladders,
    market,
    orders,
    pnl,
    positions,
    settings,
    trades,
    ws,
)

STATIC = Path(__file__).parent / "static"
API_PREFIX = "/api/v1"
VERSION = "1.0.0"
MAX_BODY_BYTES = 64 * 1024
RELAY_INTERVAL_S = 2.0

log = logging.getLogger("ratchet.api")


def _api_router() -> APIRouter:
    # Every /api/v1 route may answer these problems (401 without valid credentials, 403 for a
    # role that does not allow it, 413 for a body over the limit, 422 for a bad request, 429 over
    # the rate limit, 503 when a store it needs is away).
    router = APIRouter(
        prefix=API_PREFIX, responses=problems.problem_responses(401, 403, 413, 422, 429, 503)
    )
    router.include_router(positions.router)
    router.include_router(ladders.router)
    router.include_router(trades.router)
    router.include_router(orders.orders_router)
    router.include_router(orders.gtts_router)
    router.include_router(market.candles_router)
    router.include_router(market.ltp_router)
    router.include_router(pnl.router)
    router.include_router(alerts.router)
    router.include_router(control.strategy_router)
    router.include_router(control.halts_router)
    router.include_router(control.legs_router)
    router.include_router(settings.router)
    router.include_router(admin.keys_router)
    router.include_router(admin.users_router)
    router.include_router(admin.audit_router)
    router.include_router(auth.router)
    router.include_router(ws.router)
    return router


def _load_stored_api_settings(ctx: ApiContext) -> None:
    """The api's own section (rate limit) as last changed through PUT /settings/api; it takes
    effect when the api starts."""
    from .routers.settings import current_section

    try:
        with ctx.sessions() as session:
            stored = current_section(session, ctx.settings, "api")
    except Exception:  # noqa: BLE001 - defaults stand; /readyz reports the database
        log.warning("could not read stored api settings; using the process settings")
        return
    ctx.settings.api = ApiSettings.model_validate(stored.model_dump())


async def _relay_loop(ctx: ApiContext) -> None:
    """Publish control messages a request committed but could not publish (Redis was away)."""
    while True:
        await asyncio.sleep(RELAY_INTERVAL_S)
        await run_in_threadpool(flush_outbox, ctx)


def _build_clients(
    settings: Settings, engine: Engine | None, client: redis_lib.Redis | None
) -> tuple[Engine, redis_lib.Redis, bool, bool]:
    owns_engine, owns_redis = engine is None, client is None
    if engine is None:
        engine = make_engine(settings.require_database_url(), pool_size=10)
    if client is None:
        client = redis_lib.Redis.from_url(
            settings.require_redis_url(), socket_timeout=5, socket_connect_timeout=3
        )
    return engine, client, owns_engine, owns_redis


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    redis: redis_lib.Redis | None = None,
    hub_options: HubOptions | None = None,
) -> FastAPI:
    """The api as an ASGI app. Clients not given are built from ``settings`` and closed on
    shutdown; given ones belong to the caller. ``hub_options`` tunes the WebSocket hub."""
    settings = settings.model_copy(deep=True)  # the api may update its own section at start
    engine, client, owns_engine, owns_redis = _build_clients(settings, engine, redis)
    sessions = make_sessions(engine)
    ctx = ApiContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        redis=client,
        keys=KeyCache(),
        fast=FastReads(engine, client),
        relay=OutboxRelay(sessions, Publisher(client, SOURCE), SOURCE),
        owns_engine=owns_engine,
        owns_redis=owns_redis,
    )
    hub = Hub(ctx.fast, client, settings.tick_shards, hub_options or HubOptions())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ctx.open()
        await run_in_threadpool(_load_stored_api_settings, ctx)
        relay = asyncio.create_task(_relay_loop(ctx), name="api-outbox-relay")
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await ctx.close()

    app = FastAPI(
        title="Ratchet API",
        version=VERSION,
        description="Positions, ladders, trades, orders, PnL and controls of a Ratchet system. "
        "Send an API key in the `X-API-Key` header. Prices are rupees. "
        "Errors are RFC 9457 problem details. Live feed: the WebSocket `/api/v1/ws` (ticks, "
        "candles, orders, GTTs, legs, alerts, PnL, status; see services/api/routers/ws.py).",
        lifespan=lifespan,
        docs_url=None,  # served below from vendored files: no CDN, works offline
        redoc_url=None,
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="Ratchet API",
            swagger_js_url="/static/vendor/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui.css",
            swagger_favicon_url="/static/vendor/favicon-32x32.png",
        )

    app.state.ctx = ctx
    app.state.hub = hub
    app.state.metrics = ApiMetrics()
    problems.install(app)

    app.include_router(health.router)
    app.include_router(_api_router())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = problems.add_problem_schema(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # add_middleware puts each new layer outside the previous ones. Request order: metrics,
    # security headers, body limit, NUL guard, idempotency, then FastAPI's routing.
    app.add_middleware(
        IdempotencyMiddleware, redis=lambda: ctx.fast.redis,
        is_live=lambda presented: credential_is_live(ctx, presented),
        secret_paths=frozenset({f"{API_PREFIX}/keys"}),  # POST /keys answers with a new secret
        prefix=API_PREFIX + "/")
    app.add_middleware(NulGuardMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
