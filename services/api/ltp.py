"""Reading the LTP store (the Redis hash ``md.ltp`` that marketdata keeps, DESIGN.md §2)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import redis
import redis.asyncio as aioredis

from shared.contracts.streams import LTP_HASH


@dataclass(frozen=True)
class Quote:
    exchange: str
    symbol: str
    token: int | None
    price_paise: int
    ts_ms: int | None
    volume: int | None


def field_name(exchange: str, symbol: str) -> str:
    return f"{exchange}:{symbol}"


def _parse(name: str, raw: bytes | str | None) -> Quote | None:
    if raw is None:
        return None
    try:
        doc = orjson.loads(raw)
        price = doc["price"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None  # a malformed entry is treated as no price, never as an error
    if not isinstance(price, int) or isinstance(price, bool):
        return None
    exchange, _, symbol = name.partition(":")
    token, ts_ms, volume = doc.get("token"), doc.get("ts_ms"), doc.get("volume")
    return Quote(
        exchange=exchange,
        symbol=symbol,
        token=token if isinstance(token, int) else None,
        price_paise=price,
        ts_ms=ts_ms if isinstance(ts_ms, int) else None,
        volume=volume if isinstance(volume, int) else None,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_quotes(client: redis.Redis, names: Iterable[str]) -> dict[str, Quote]:
    """Quotes for the given ``EXCHANGE:SYMBOL`` names, in one HMGET; missing ones are absent."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    values = client.hmget(LTP_HASH, wanted)
    quotes = {}
    for name, raw in zip(wanted, values, strict=True):
        quote = _parse(name, raw)
        if quote is not None:
            quotes[name] = quote
    return quotes


async def read_quotes_async(client: aioredis.Redis, names: Iterable[str]) -> dict[str, Quote]:
    """:func:`read_quotes` on the event loop."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    values = await client.hmget(LTP_HASH, wanted)
    quotes = {}
    for name, raw in zip(wanted, values, strict=True):
        quote = _parse(name, raw)
        if quote is not None:
            quotes[name] = quote
    return quotes


def read_all_quotes(client: redis.Redis) -> dict[str, Quote]:
    """Every quote in the store, in one HGETALL."""
    quotes = {}
    for raw_name, raw in client.hgetall(LTP_HASH).items():
        name = _text(raw_name)
        quote = _parse(name, raw)
        if quote is not None:
            quotes[name] = quote
    return quotes
