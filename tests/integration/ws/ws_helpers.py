"""Helpers of the WebSocket tests: publish like the services do, talk like a client does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
from websockets.sync.client import ClientConnection, connect

from shared.contracts import streams
from shared.contracts.messages import FIELD, Payload, encode, encode_ticks

TS = 1_735_790_400_000  # 2025-01-02 04:00 UTC, 09:30 IST


def publish_ticks(client: redis.Redis, prices: dict[str, int], ts_ms: int = TS) -> str:
    """One feed frame on md.ticks.0: ``prices`` are paise by symbol."""
    ticks = [
        {"token": 1000 + i, "symbol": s, "exchange": "NSE", "ts_ms": ts_ms, "price": p,
         "volume": 10}
        for i, (s, p) in enumerate(sorted(prices.items()))
    ]
    data = encode_ticks(ticks, msg_id=f"t{ts_ms}", ts_ms=ts_ms, source="test")
    return client.xadd(streams.ticks_stream(0), {FIELD: data}).decode()


def publish(client: redis.Redis, stream: str, payload: Payload, msg_id: str = "m") -> str:
    data = encode(payload, msg_id=msg_id, ts_ms=TS, source="test")
    return client.xadd(stream, {FIELD: data}).decode()


def open_ws(url: str, **kwargs: Any) -> ClientConnection:
    return connect(url, open_timeout=30, close_timeout=5, **kwargs)


def recv(conn: ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    return orjson.loads(conn.recv(timeout=timeout))  # type: ignore[no-any-return]


def recv_until(
    conn: ClientConnection, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Messages up to and including the first for which ``done`` is true."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; saw {seen[-5:]}"
        message = recv(conn, left)
        seen.append(message)
        if done(message):
            return seen


def is_system(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["channel"] == "system" and m["data"]["type"] == kind


def subscribe(conn: ClientConnection, **request: Any) -> dict[str, Any]:
    """Send a subscribe and return the server's ``subscribed`` answer (after ``hello``)."""
    conn.send(orjson.dumps({"action": "subscribe", **request}).decode())
    return recv_until(conn, is_system("subscribed"))[-1]
