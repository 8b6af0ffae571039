"""Keys, users and the audit log (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from shared.auth import (
    Role,
    create_api_key,
    create_user,
    hash_secret,
    list_api_keys,
    revoke_api_key,
)
from shared.store.models import ApiKey, AuditEntry, User

from ..commands import command
from ..deps import IDEMPOTENCY_PROBLEMS, IDEMPOTENT, Admin, ContextDep, SessionDep
from ..paging import Limit, Offset, fetch_page
from ..problems import ApiProblem, problem_responses
from ..schemas import Page
from ..schemas_control import AuditOut, KeyIn, KeyOut, NewKeyOut, UserIn, UserOut
from ..security import end_user_sessions

keys_router = APIRouter(prefix="/keys", tags=["keys"])
users_router = APIRouter(prefix="/users", tags=["users"])
audit_router = APIRouter(prefix="/audit", tags=["audit"])

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


def key_out(k: ApiKey) -> KeyOut:
    return KeyOut(id=k.id, name=k.name, prefix=k.prefix, role=Role(k.role),
                  created_at=k.created_at, expires_at=k.expires_at, revoked_at=k.revoked_at)


def user_out(u: User) -> UserOut:
    return UserOut(id=u.id, username=u.username, role=Role(u.role), created_at=u.created_at,
                   disabled=u.disabled)


@keys_router.get("", response_model=list[KeyOut], summary="API keys (never their secrets)")
def list_keys(session: SessionDep, caller: Admin) -> list[KeyOut]:
    return [key_out(k) for k in list_api_keys(session)]


@keys_router.post(
    "", response_model=NewKeyOut, status_code=status.HTTP_201_CREATED,
    summary="Create an API key (the secret is in this response only)",
    dependencies=IDEMPOTENT, responses=IDEMPOTENCY_PROBLEMS,
)
def create_key(ctx: ContextDep, caller: Admin, body: KeyIn) -> NewKeyOut:
    with command(ctx, caller) as cmd:
        secret = create_api_key(cmd.session, body.name, body.role, body.expires_at)
        key = cmd.session.scalars(
            select(ApiKey).where(ApiKey.key_hash == hash_secret(secret))
        ).one()
        cmd.session.refresh(key)
        out = key_out(key)
        cmd.audit("key.create", "api_key", str(key.id), after=out.model_dump(mode="json"))
    return NewKeyOut(**out.model_dump(), secret=secret)


@keys_router.delete("/{key_id}", response_model=KeyOut, summary="Revoke an API key",
                    responses=problem_responses(404))
def revoke_key(ctx: ContextDep, caller: Admin, key_id: Id) -> KeyOut:
    with command(ctx, caller) as cmd:
        before = cmd.session.get(ApiKey, key_id)
        if before is None:
            raise ApiProblem(404, f"no API key {key_id}")
        was_revoked = before.revoked_at is not None
        key = revoke_api_key(cmd.session, key_id)
        assert key is not None
        out = key_out(key)
        if not was_revoked:
            cmd.audit("key.revoke", "api_key", str(key_id), after=out.model_dump(mode="json"))
    ctx.keys.drop_key(key_id)
    return out


@users_router.get("", response_model=list[UserOut], summary="Users")
def list_users(session: SessionDep, caller: Admin) -> list[UserOut]:
    return [user_out(u) for u in session.scalars(select(User).order_by(User.id))]


@users_router.post(
    "", response_model=UserOut, status_code=status.HTTP_201_CREATED, summary="Create a user",
    dependencies=IDEMPOTENT, responses=IDEMPOTENCY_PROBLEMS,
)
def add_user(ctx: ContextDep, caller: Admin, body: UserIn) -> UserOut:
    try:
        with command(ctx, caller) as cmd:
            user = create_user(cmd.session, body.username, body.password, body.role)
            cmd.session.refresh(user)
            out = user_out(user)
            cmd.audit("user.create", "user", str(user.id), after=out.model_dump(mode="json"))
    except IntegrityError as exc:
        raise ApiProblem(409, f"user {body.username!r} exists") from exc
    return out


@users_router.delete("/{user_id}", response_model=UserOut,
                     summary="Disable a user and end their sessions",
                     responses=problem_responses(404))
async def disable_user(request: Request, caller: Admin, user_id: Id) -> UserOut:
    ctx = request.app.state.ctx

    def disable() -> UserOut:
        with command(ctx, caller) as cmd:
            user = cmd.session.get(User, user_id)
            if user is None:
                raise ApiProblem(404, f"no user {user_id}")
            if not user.disabled:
                user.disabled = True
                cmd.audit("user.disable", "user", str(user_id), before={"disabled": False},
                          after={"disabled": True})
            return user_out(user)

    out = await run_in_threadpool(disable)
    await end_user_sessions(ctx.fast.redis, user_id)
    return out


@audit_router.get("", response_model=Page[AuditOut], summary="Audit log, newest first")
def list_audit(
    session: SessionDep,
    caller: Admin,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=60)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AuditOut]:
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        query = query.where(AuditEntry.action == action)
    rows, total = fetch_page(session, query, limit, offset)
    items = [
        AuditOut(id=r.id, ts=r.ts, actor=r.actor, action=r.action, object_type=r.object_type,
                 object_id=r.object_id, before=r.before, after=r.after)
        for r in rows
    ]
    return Page[AuditOut](items=items, total=total, limit=limit, offset=offset)
