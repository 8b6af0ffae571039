"""Async adapters for the api's hot reads (positions, PnL, rate limits): a psycopg connection
pool in autocommit and an asyncio Redis client, so that a dashboard poll costs one query and one
HMGET on the event loop, with no thread hop and no ORM.

The sync :class:`~sqlalchemy.Engine` stays the way to everything else; this pool is built from its
URL, and the statements are compiled from the SQLAlchemy models once, so the models remain the
one spelling of the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def compile_pg(query: Select[Any]) -> str:
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


@dataclass
class FastReads:
    """The async pool and Redis client; opened and closed by the app's lifespan."""

    pool: AsyncConnectionPool
    redis: aioredis.Redis

    @classmethod
    def build(cls, engine: Engine, client: redis.Redis, *, max_size: int = 10) -> FastReads:
        pool = AsyncConnectionPool(
            conninfo(engine),
            min_size=2,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "connect_timeout": 5},
            name="api-fastpath",
        )
        return cls(pool=pool, redis=async_redis_like(client))

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()
        await self.redis.aclose()

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[TupleRow]:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(sql, params)  # type: ignore[arg-type]
            return await cursor.fetchall()
