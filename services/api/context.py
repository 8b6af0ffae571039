"""What every request handler may use, built once by :func:`services.api.app.create_app`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.auth import Role
from shared.bus.publisher import OutboxRelay
from shared.config import Settings

from .fastpath import FastReads


@dataclass(frozen=True)
class Caller:
    """Who is calling: an API key or a logged-in user (``kind``), with the role it holds."""

    kind: str  # "key" | "user"
    id: int
    name: str
    role: Role
    via_cookie: bool = False
    csrf_token: str | None = None
    expires_at: datetime | None = None

    @property
    def scope(self) -> str:
        """Stable identity used for rate limits and idempotency keys."""
        return f"{self.kind}:{self.id}"

    @property
    def actor(self) -> str:
        """How the audit log names this caller: ``user:NAME`` (names are unique) or
        ``key:ID:NAME`` (key names are not); at most 80 characters, the column's width."""
        label = f"user:{self.name}" if self.kind == "user" else f"key:{self.id}:{self.name}"
        return label[:80]


@dataclass
class KeyCache:
    """Verified API keys by secret hash, for ``ttl`` seconds, so the hot path skips Postgres.

    A revocation through this process drops the entry at once; another replica sees it within
    ``ttl``. Expiry is checked on every use. Unknown secrets are not cached.
    """

    ttl: float = 5.0
    max_entries: int = 10_000
    _entries: dict[str, tuple[float, Caller]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key_hash: str) -> Caller | None:
        hit = self._entries.get(key_hash)
        if hit is None:
            return None
        stored_at, caller = hit
        if time.monotonic() - stored_at > self.ttl:
            self._entries.pop(key_hash, None)
            return None
        if caller.expires_at is not None and caller.expires_at <= datetime.now(UTC):
            self._entries.pop(key_hash, None)
            return None
        return caller

    def put(self, key_hash: str, caller: Caller) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key_hash] = (time.monotonic(), caller)

    def drop_key(self, key_id: int) -> None:
        with self._lock:
            for key_hash, (_, caller) in list(self._entries.items()):
                if caller.kind == "key" and caller.id == key_id:
                    del self._entries[key_hash]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class ApiContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    keys: KeyCache
    fast: FastReads
    relay: OutboxRelay
    owns_engine: bool = False
    owns_redis: bool = False

    async def open(self) -> None:
        await self.fast.open()

    async def close(self) -> None:
        await self.fast.close()
        if self.owns_redis:
            self.redis.close()
        if self.owns_engine:
            self.engine.dispose()
