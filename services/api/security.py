"""Login sessions and rate limits, both in Redis so that every api replica shares them.

Sessions: an opaque 256-bit token in an HttpOnly, SameSite=Strict cookie (Secure over TLS); Redis
holds only its SHA-256, with the user, role, CSRF token and expiry. A cookie-authenticated
request that changes anything must echo the CSRF token in ``X-CSRF-Token``.

Rate limits: a sliding-window counter per caller per minute (two fixed windows, the previous one
weighted by how much of it still overlaps), one Redis round trip per request.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.auth import Role

from .context import Caller

log = logging.getLogger("ratchet.api")

SESSION_COOKIE = "ratchet_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = timedelta(hours=8)
_SESSION_KEY = "api:session:"
_USER_SESSIONS_KEY = "api:user-sessions:"
_RATE_KEY = "api:rate:"
WINDOW_S = 60


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewSession:
    token: str
    csrf_token: str
    expires_at: datetime


async def create_session(
    client: aioredis.Redis, user_id: int, username: str, role: Role
) -> NewSession:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + SESSION_TTL
    doc = {"user_id": user_id, "username": username, "role": role.value, "csrf": csrf,
           "expires_at": expires_at.isoformat()}
    ttl = int(SESSION_TTL.total_seconds())
    digest = _digest(token)
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(_SESSION_KEY + digest, orjson.dumps(doc), ex=ttl)
        pipe.sadd(_USER_SESSIONS_KEY + str(user_id), digest)
        pipe.expire(_USER_SESSIONS_KEY + str(user_id), ttl)
        await pipe.execute()
    return NewSession(token=token, csrf_token=csrf, expires_at=expires_at)


async def load_session(client: aioredis.Redis, token: str) -> Caller | None:
    if not token or len(token) > 200:
        return None
    raw = await client.get(_SESSION_KEY + _digest(token))
    if raw is None:
        return None
    doc = orjson.loads(raw)
    return Caller(
        kind="user",
        id=int(doc["user_id"]),
        name=str(doc["username"]),
        role=Role(doc["role"]),
        via_cookie=True,
        csrf_token=str(doc["csrf"]),
        expires_at=datetime.fromisoformat(doc["expires_at"]),
    )


async def end_session(client: aioredis.Redis, token: str) -> None:
    await client.delete(_SESSION_KEY + _digest(token))


async def end_user_sessions(client: aioredis.Redis, user_id: int) -> None:
    """Log a user out everywhere (when the user is disabled)."""
    members = await client.smembers(_USER_SESSIONS_KEY + str(user_id))
    keys = [_SESSION_KEY + (m.decode() if isinstance(m, bytes) else m) for m in members]
    if keys:
        await client.delete(*keys)
    await client.delete(_USER_SESSIONS_KEY + str(user_id))


# Count a request in the current window and read the previous one: one round trip, atomic.
_COUNT_LUA = """
local current = redis.call('INCR', KEYS[1])
if current == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {current, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after_s: int = 0


async def hit_rate_limit(
    client: aioredis.Redis, scope: str, limit_per_minute: int, now: float | None = None
) -> RateDecision:
    """Count one request of ``scope``; refuse it when the sliding-window rate passes the limit.

    When Redis cannot be reached the request is let through (and logged): the limiter protects
    the service, and it must never be what keeps an operator from the kill switch."""
    now = time.time() if now is None else now
    window = int(now // WINDOW_S)
    elapsed = now - window * WINDOW_S
    current_key = f"{_RATE_KEY}{scope}:{window}"
    try:
        count = client.register_script(_COUNT_LUA)  # EVALSHA (EVAL once per server)
        current, previous = await count(
            keys=[current_key, f"{_RATE_KEY}{scope}:{window - 1}"], args=[2 * WINDOW_S]
        )
    except RedisError as exc:
        log.warning("rate limiter unavailable (%s); request allowed", type(exc).__name__)
        return RateDecision(True)
    weight = (WINDOW_S - elapsed) / WINDOW_S
    rate = int(previous or 0) * weight + int(current)
    if rate <= limit_per_minute:
        return RateDecision(True)
    return RateDecision(False, max(1, math.ceil(WINDOW_S - elapsed)))
