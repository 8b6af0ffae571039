"""Async adapters for the api's hot reads (positions, PnL, rate limits): a psycopg connection
pool in autocommit and an asyncio Redis client, so that a dashboard poll costs one query and one
HMGET on the event loop, with no thread hop and no ORM.

The sync :class:`~sqlalchemy.Engine` stays the way to everything else; this pool is built from its
URL, and the statements are compiled from the SQLAlchemy models once, so the models remain the
one spelling of the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import BigInteger, Engine, Select, cast
from sqlalchemy.dialects import postgresql

from shared.store.models import Trade


def paise(column: Any) -> Any:
    """A Numeric rupee column read as integer paise (exact, and no Decimal on the hot path)."""
    return cast(column * 100, BigInteger)


def compile_pg(query: Select[*tuple[Any, ...]]) -> str:
    """SQL text of a parameterless query for psycopg (constants inlined)."""
    return str(
        query.compile(dialect=postgresql.psycopg.dialect(), compile_kwargs={"literal_binds": True})
    )


def conninfo(engine: Engine) -> str:
    """A libpq connection string from a SQLAlchemy URL (driver suffix dropped)."""
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def async_redis_like(client: redis.Redis) -> aioredis.Redis:
    """An asyncio client to the same server and database as a sync one."""
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return aioredis.Redis(
            unix_socket_path=kw["path"], db=kw.get("db", 0), username=kw.get("username"),
            password=kw.get("password"), socket_timeout=5,
        )
    return aioredis.Redis(
        host=kw.get("host", "localhost"), port=kw.get("port", 6379), db=kw.get("db", 0),
        username=kw.get("username"), password=kw.get("password"), socket_timeout=5,
        socket_connect_timeout=3,
    )


OPEN_LEGS_COLUMNS = (
    Trade.symbol,
    Trade.exchange,
    Trade.ladder_id,
    Trade.position_number,
    Trade.qty,
    paise(Trade.entry_price),
    paise(Trade.initial_stop),
    paise(Trade.stop_loss),
    paise(Trade.target),
    Trade.status,
)


class FastReads:
    """The async pool and Redis client. They are bound to an event loop, so they are made by
    :meth:`open` (the app's startup) and dropped by :meth:`close`; an app may start again."""

    def __init__(self, engine: Engine, client: redis.Redis, *, max_size: int = 10) -> None:
        self._conninfo = conninfo(engine)
        self._sync_redis = client
        self._max_size = max_size
        self._pool: AsyncConnectionPool | None = None
        self._redis: aioredis.Redis | None = None

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError("the api has not started (FastReads.open was not awaited)")
        return self._pool

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the api has not started (FastReads.open was not awaited)")
        return self._redis

    async def open(self) -> None:
        self._pool = AsyncConnectionPool(
            self._conninfo,
            min_size=2,
            max_size=self._max_size,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": 5},
            name="api-fastpath",
        )
        await self._pool.open(wait=False)
        self._redis = async_redis_like(self._sync_redis)

    async def close(self) -> None:
        pool, client = self._pool, self._redis
        self._pool = self._redis = None
        if pool is not None:
            await pool.close()
        if client is not None:
            await client.aclose()

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[TupleRow]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql, params)  # type: ignore[arg-type]
            return await cursor.fetchall()
