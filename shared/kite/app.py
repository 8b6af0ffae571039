"""The FastAPI application: Kite's envelope, errors, authentication, rate limits and the ticker.

Kite answers ``{"status": "success", "data": ...}`` or an error envelope whose ``error_type`` the
SDK turns into its own exception class; the instruments dump is CSV. Handlers are ``async`` so that
every change runs on the one event loop that also steps the market.
"""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .errors import KiteError, not_found
from .faults import FaultMiddleware, RateLimiter
from .sim import Simulator


def ok(data: Any) -> Response:
    return Response(orjson.dumps({"status": "success", "data": data},
                                 option=orjson.OPT_NON_STR_KEYS),
                    media_type="application/json")


def kite_error(err: KiteError) -> Response:
    return Response(orjson.dumps(err.body()), status_code=err.status,
                    media_type="application/json")


async def form(request: Request) -> dict[str, str]:
    """Kite's SDK sends form-encoded bodies (no multipart), so a plain parse is enough."""
    body = (await request.body()).decode()
    return dict(parse_qsl(body, keep_blank_values=False))


def get_sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def get_session(request: Request) -> dict[str, Any]:
    return get_sim(request).authenticate(request.headers.get("authorization"))


def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.limiter
    return limiter


SimDep = Annotated[Simulator, Depends(get_sim)]
SessionDep = Annotated[dict[str, Any], Depends(get_session)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]


def build_app(sim: Simulator, rates: dict[str, int]) -> Any:
    """The ASGI app: Kite routes and ``/ws`` behind the fault middleware, plus ``/_sim`` admin."""
    from . import routes_admin, routes_kite
    from .ticker import TickerHub

    app = FastAPI(title="Ratchet Kite simulator", docs_url="/_sim/docs",
                  openapi_url="/_sim/openapi.json", redoc_url=None)
    app.state.sim = sim
    app.state.limiter = RateLimiter(rates)
    hub = TickerHub(sim.market.states, lambda: sim.clock.now_ms)
    app.state.hub = hub
    sim.tick_listeners.append(hub.publish)
    sim.order_listeners.append(
        lambda o: hub.order_update(sim.cfg.api_key, _order_message(sim, o)))

    @app.exception_handler(KiteError)
    async def _kite(_: Request, exc: KiteError) -> Response:
        return kite_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": ["input"]}
        name = str(first["loc"][-1])
        return kite_error(KiteError("InputException", f"Invalid `{name}`.", 400))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return kite_error(KiteError("InputException", "Method not allowed", 405))
        return kite_error(not_found() if exc.status_code == 404 else
                          KiteError("GeneralException", str(exc.detail), exc.status_code))

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> Response:
        return kite_error(KiteError("GeneralException", f"Simulator error: {exc}", 500))

    async def ticker(websocket: WebSocket) -> None:
        params = websocket.query_params
        if time.monotonic() < hub.refuse_until:  # fault: the feed is "down" for a while
            await websocket.close(code=1013)
            return
        if not sim.check_ws(params.get("api_key"), params.get("access_token")):
            await websocket.close(code=1008)  # rejected before the handshake: HTTP 403
            return
        await websocket.accept()
        await hub.serve(websocket, params.get("api_key", ""))

    app.add_api_websocket_route("/ws", ticker)
    app.add_api_websocket_route("/", ticker)
    app.include_router(routes_kite.router)
    app.include_router(routes_admin.router)
    return FaultMiddleware(app, sim.faults)


def _order_message(sim: Simulator, order: Any) -> bytes:
    from .ticker import order_update_message

    return order_update_message(order, app_id=1, api_secret=sim.cfg.api_secret)
