"""RFC 9457 problem details: every 4xx and 5xx the api sends is ``application/problem+json``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, ConfigDict
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("ratchet.api")

PROBLEM_JSON = "application/problem+json"

# Errors that mean Postgres or Redis cannot be reached (answered 503, not 500).
STORE_OUTAGES: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    sa_exc.OperationalError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    PoolTimeout,
)


class Problem(BaseModel):
    """The body of every error response (RFC 9457)."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class ApiProblem(Exception):
    """Raise from a handler to answer with a problem; ``extra`` members join the body."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.detail = detail
        self.title = title or _phrase(status)
        self.type = type_
        self.headers = headers or {}
        self.extra = extra


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    instance: str | None = None,
    title: str | None = None,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {"type": type_, "title": title or _phrase(status), "status": status}
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


async def _api_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    return problem_response(
        exc.status,
        exc.detail,
        instance=request.url.path,
        title=exc.title,
        type_=exc.type,
        headers=exc.headers,
        **exc.extra,
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail == _phrase(exc.status_code):
        detail = None
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, detail, instance=request.url.path, headers=headers)


def _clean_error(error: Any) -> dict[str, Any]:
    # pydantic's ctx may hold exceptions; keep the parts a client can use, JSON-safe.
    return {
        "loc": [str(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [_clean_error(e) for e in exc.errors()]
    return problem_response(
        422,
        "the request does not match the schema",
        instance=request.url.path,
        title="Unprocessable Content",
        errors=errors,
    )


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: a store is unavailable (%s)", request.method, request.url.path,
                type(exc).__name__)
    return problem_response(
        503, "a data store is unavailable; retry shortly", instance=request.url.path,
        headers={"Retry-After": "5"},
    )


async def _unstorable(request: Request, exc: Exception) -> Response:
    """A value the database refuses (out of a column's range, say) that validation let through:
    the client's to fix, and the transaction was rolled back."""
    log.warning("%s %s: a value the database cannot store (%s)", request.method,
                request.url.path, type(getattr(exc, "orig", exc)).__name__)
    return problem_response(422, "a value in the request cannot be stored",
                            instance=request.url.path)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal error", instance=request.url.path)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation)
    for unavailable in STORE_OUTAGES:
        app.add_exception_handler(unavailable, _store_unavailable)
    app.add_exception_handler(sa_exc.DataError, _unstorable)
    app.add_exception_handler(Exception, _unexpected)


def add_problem_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put the Problem schema into an OpenAPI document's components (the responses refer to it)."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema()
    return openapi


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem bodies for the given statuses."""
    return {
        status: {
            "description": _phrase(status),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
