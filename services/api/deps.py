"""FastAPI dependencies as ``Annotated`` aliases: the context, a DB session, the caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from shared.auth import Role, hash_secret, key_is_usable
from shared.store.models import ApiKey

from .context import ApiContext, Caller
from .problems import ApiProblem

API_KEY_HEADER = "X-API-Key"

# auto_error=False: we answer 401 ourselves, as problem+json; this object documents the scheme.
api_key_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


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


async def current_caller(
    request: Request,
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Caller:
    """The authenticated caller, or a 401 problem."""
    ctx = get_context(request)
    if not api_key:
        raise unauthorized("missing credentials: send an API key in the X-API-Key header")
    if len(api_key) > 200:
        raise unauthorized("invalid API key")
    key_hash = hash_secret(api_key)
    caller = ctx.keys.get(key_hash)
    if caller is None:
        caller = await run_in_threadpool(_lookup_key, ctx, key_hash)
        if caller is None:
            raise unauthorized("invalid, expired or revoked API key")
        ctx.keys.put(key_hash, caller)
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
