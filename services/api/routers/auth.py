"""Login for people: POST /auth/login sets a session cookie, POST /auth/logout ends it,
GET /auth/me tells who is calling (any credential)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from shared.auth import Role, verify_password

from ..context import ApiContext
from ..deps import CallerDep, ContextDep, client_ip, session_cookie_scheme
from ..problems import ApiProblem
from ..schemas_control import LoginIn, Me, SessionOut
from ..security import (
    SESSION_COOKIE,
    SESSION_TTL,
    create_session,
    end_session,
    hit_rate_limit,
)

router = APIRouter(prefix="/auth", tags=["auth"])

# Guessing is limited per client address (every attempt counts). There is no limit per account:
# failed attempts from anywhere would then lock its owner out, and a dashboard login may be how an
# admin reaches the kill switch. Passwords are argon2-hashed, so each guess is slow as well.
LOGINS_PER_MINUTE = 10


def _check_password(ctx: ApiContext, username: str, password: str) -> tuple[int, str, Role] | None:
    with ctx.sessions.begin() as session:  # begin: a rehashed password is committed
        user = verify_password(session, username, password)
        return (user.id, user.username, Role(user.role)) if user else None


@router.post("/login", response_model=SessionOut, summary="Log in; sets the session cookie",
             openapi_extra={"security": []})
async def login(request: Request, response: Response, ctx: ContextDep, body: LoginIn) -> SessionOut:
    decision = await hit_rate_limit(ctx.fast.redis, f"login-ip:{client_ip(request)}",
                                    LOGINS_PER_MINUTE)
    if not decision.allowed:
        raise ApiProblem(429, "too many login attempts from this address",
                         headers={"Retry-After": str(decision.retry_after_s)})
    found = await run_in_threadpool(_check_password, ctx, body.username, body.password)
    if found is None:
        raise ApiProblem(401, "wrong username or password")
    user_id, username, role = found
    new = await create_session(ctx.fast.redis, user_id, username, role)
    response.set_cookie(
        SESSION_COOKIE,
        new.token,
        max_age=int(SESSION_TTL.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return SessionOut(username=username, role=role, csrf_token=new.csrf_token,
                      expires_at=new.expires_at)


@router.post("/logout", status_code=204, summary="End the session", response_class=Response)
async def logout(
    ctx: ContextDep,
    caller: CallerDep,
    token: Annotated[str | None, Depends(session_cookie_scheme)],
) -> Response:
    response = Response(status_code=204)
    if caller.via_cookie and token:
        await end_session(ctx.fast.redis, token)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/me", response_model=Me, response_model_exclude_none=True, summary="Who is calling")
async def me(caller: CallerDep) -> Me:
    return Me(kind="user" if caller.kind == "user" else "key", name=caller.name, role=caller.role,
              via_cookie=caller.via_cookie,
              csrf_token=caller.csrf_token if caller.via_cookie else None)
