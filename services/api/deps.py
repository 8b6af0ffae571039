"""FastAPI dependencies as ``Annotated`` aliases: the context, a DB session, the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyCookie, APIKeyHeader
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from shared.auth import Role, constant_time_equals, hash_secret, key_is_usable
from shared.store.models import ApiKey

from .context import ApiContext, Caller
from .idempotency import Credential
from .problems import ApiProblem, problem_responses
from .security import CSRF_HEADER, SESSION_COOKIE, hit_rate_limit, load_session

API_KEY_HEADER = "X-API-Key"

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# auto_error=False: we answer 401 ourselves, as problem+json; these objects document the schemes.
api_key_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
session_cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False)


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[ApiContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    with ctx.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, detail, headers={"WWW-Authenticate": API_KEY_HEADER})


def _lookup_key(ctx: ApiContext, key_hash: str) -> Caller | None:
    with ctx.sessions() as session:
        key = session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()
        if key is None or not key_is_usable(key):
            return None
        return Caller(
            kind="key", id=key.id, name=key.name, role=Role(key.role), expires_at=key.expires_at
        )


def client_ip(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


async def _limit(request: HTTPConnection, ctx: ApiContext, scope: str) -> None:
    decision = await hit_rate_limit(ctx.fast.redis, scope, ctx.settings.api.rate_limit_per_minute)
    if not decision.allowed:
        raise ApiProblem(
            429,
            f"more than {ctx.settings.api.rate_limit_per_minute} requests a minute",
            headers={"Retry-After": str(decision.retry_after_s)},
        )


async def _refuse(request: HTTPConnection, ctx: ApiContext, detail: str) -> ApiProblem:
    # Failed attempts count against the client address, so guessing is rate limited too.
    await _limit(request, ctx, f"anon:{client_ip(request)}")
    return unauthorized(detail)


async def _key_caller(ctx: ApiContext, api_key: str) -> Caller | None:
    if len(api_key) > 200:
        return None
    key_hash = hash_secret(api_key)
    caller = ctx.keys.get(key_hash)
    if caller is None:
        caller = await run_in_threadpool(_lookup_key, ctx, key_hash)
        if caller is not None:
            ctx.keys.put(key_hash, caller)
    return caller


async def credential_is_live(ctx: ApiContext, presented: Credential) -> bool:
    """Whether an API key or session token names a caller now (no rate limit, no CSRF check):
    a stored response is replayed only to a caller who could still make the request."""
    kind, secret = presented
    try:
        if kind == "key":
            return await _key_caller(ctx, secret) is not None
        return await load_session(ctx.fast.redis, secret) is not None
    except RedisError:
        return False  # the route then answers as it does when the session store is down


async def _session_caller(request: Request, ctx: ApiContext, token: str) -> Caller | None:
    try:
        caller = await load_session(ctx.fast.redis, token)
    except RedisError as exc:
        raise ApiProblem(503, "session store unavailable; use an API key") from exc
    if caller is None:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not caller.csrf_token or not constant_time_equals(sent, caller.csrf_token):
            raise ApiProblem(403, f"a cookie-authenticated change needs the {CSRF_HEADER} header")
    return caller


async def current_caller(
    request: Request,
    api_key: Annotated[str | None, Depends(api_key_scheme)],
    session_token: Annotated[str | None, Depends(session_cookie_scheme)],
) -> Caller:
    """The authenticated caller (API key first, else the session cookie), rate limited; or a
    401 problem. Verified keys are cached for a few seconds (see :class:`KeyCache`)."""
    ctx = get_context(request)
    if api_key:
        caller = await _key_caller(ctx, api_key)
        if caller is None:
            raise await _refuse(request, ctx, "invalid, expired or revoked API key")
    elif session_token:
        caller = await _session_caller(request, ctx, session_token)
        if caller is None:
            raise await _refuse(request, ctx, "the session has expired or was ended; log in again")
    else:
        raise await _refuse(
            request, ctx, "missing credentials: send an API key in the X-API-Key header"
        )
    await _limit(request, ctx, caller.scope)
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


def require(role: Role) -> Callable[[Caller], Awaitable[Caller]]:
    """A dependency that lets a caller through only when its role allows ``role``."""

    async def check(caller: CallerDep) -> Caller:  # async: no thread hop for a comparison
        if not caller.role.allows(role):
            raise ApiProblem(403, f"this action needs the {role.value} role")
        return caller

    check.__name__ = f"require_{role.value}"
    return check


Viewer = Annotated[Caller, Depends(require(Role.VIEWER))]
Trader = Annotated[Caller, Depends(require(Role.TRADER))]
Admin = Annotated[Caller, Depends(require(Role.ADMIN))]


def idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="Send the same key again to get the first response back, with the "
            "effect applied once (keys are kept 24 h, per caller).",
        ),
    ] = None,
) -> None:
    """Documents the header; :mod:`services.api.idempotency` acts on it before the route runs."""


IDEMPOTENT = [Depends(idempotency_key)]
# A keyed request may be refused: a malformed key (400), the same key still running (409).
IDEMPOTENCY_PROBLEMS = problem_responses(400, 409)
