"""/healthz (the process answers), /readyz (Postgres and Redis answer), /metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..context import ApiContext
from ..deps import ContextDep
from ..problems import problem_response, problem_responses
from ..schemas import Health, Readiness

log = logging.getLogger("ratchet.api")

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 2.0


def _check_postgres(ctx: ApiContext) -> None:
    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _check_redis(ctx: ApiContext) -> None:
    ctx.redis.ping()


async def _probe(name: str, check: Callable[[ApiContext], None], ctx: ApiContext) -> str:
    try:
        with anyio.fail_after(CHECK_TIMEOUT_S):
            await run_in_threadpool(check, ctx)
    except TimeoutError:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; logged, not raised
        log.warning("readiness check %s failed: %s", name, type(exc).__name__)
        return "error"
    return "ok"


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: Postgres and Redis answer",
    responses=problem_responses(503),
)
async def readyz(ctx: ContextDep) -> Readiness | Response:
    checks = {
        "postgres": await _probe("postgres", _check_postgres, ctx),
        "redis": await _probe("redis", _check_redis, ctx),
    }
    if all(v == "ok" for v in checks.values()):
        return Readiness(status="ready", checks=checks)
    failing = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem_response(503, f"not ready: {failing}", instance="/readyz", checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

