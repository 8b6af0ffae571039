"""Kite's streaming protocol: binary tick frames, heartbeats, subscriptions and order updates.

A frame is a big-endian uint16 packet count followed by (uint16 length, packet) pairs; NSE prices
are int paise. Packets: ltp (8 bytes), quote (44) and full (184, with last trade time, exchange
timestamp and five depth levels a side). A 1-byte binary message is a heartbeat. Order updates are
JSON text messages ``{"type": "order", "data": {...}}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from shared.aio import wait_event

from .book import order_to_kite
from .market import InstrumentState
from .models import Order

LTP = struct.Struct(">II")
QUOTE = struct.Struct(">11I")
FULL = struct.Struct(">16I" + "IIH2x" * 10)
HEARTBEAT = b"\x00"
HEARTBEAT_S = 1.0
MODES = ("ltp", "quote", "full")
assert QUOTE.size == 44 and FULL.size == 184


def pack_ltp(st: InstrumentState) -> bytes:
    return LTP.pack(st.inst.token, st.ltp)


def quote_fields(st: InstrumentState) -> tuple[int, ...]:
    buy, sell = st.depth()
    return (st.inst.token, st.ltp, st.last_qty, st.average_price, st.volume,
            sum(q for _, q, _ in buy) * 40, sum(q for _, q, _ in sell) * 40,
            st.open, st.high, st.low, st.close)


def pack_quote(st: InstrumentState) -> bytes:
    return QUOTE.pack(*quote_fields(st))


def pack_full(st: InstrumentState, exchange_ms: int) -> bytes:
    buy, sell = st.depth()
    depth: list[int] = []
    for price, qty, orders in (*buy, *sell):
        depth += (qty, price, orders)
    return FULL.pack(*quote_fields(st), st.last_trade_ms // 1000, 0, 0, 0, exchange_ms // 1000,
                     *depth)


def frame(packets: Iterable[bytes]) -> bytes:
    packets = list(packets)
    parts = [struct.pack(">H", len(packets))]
    for p in packets:
        parts.append(struct.pack(">H", len(p)))
        parts.append(p)
    return b"".join(parts)


def order_update_message(o: Order, app_id: int, api_secret: str) -> bytes:
    """The order as a postback: Kite's order fields plus user, app and a checksum."""
    data = order_to_kite(o)
    checksum = hashlib.sha256(
        (o.order_id + str(data["order_timestamp"]) + api_secret).encode()).hexdigest()
    data.update(user_id=o.placed_by, unfilled_quantity=o.pending_quantity, app_id=app_id,
                checksum=checksum)
    return orjson.dumps({"type": "order", "id": "", "data": data})


@dataclass(eq=False)
class Connection:
    ws: WebSocket
    api_key: str
    modes: dict[int, str] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    texts: list[bytes] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    sent_ticks: int = 0


class TickerHub:
    """Every open ticker socket; the simulator publishes changed instruments and order updates."""

    def __init__(self, states: dict[int, InstrumentState], now_ms: Callable[[], int]) -> None:
        self.states = states
        self.now_ms = now_ms
        self.conns: set[Connection] = set()
        self.stalled_until = 0.0
        self.stall_heartbeats = False
        self.refuse_until = 0.0
        self._cache: dict[tuple[int, str], tuple[int, bytes]] = {}

    # -- simulator side ----------------------------------------------------------------------
    def publish(self, changed: Iterable[InstrumentState]) -> None:
        tokens = {st.inst.token for st in changed}
        for conn in self.conns:
            hit = tokens.intersection(conn.modes)
            if hit:
                conn.dirty |= hit
                conn.wake.set()

    def order_update(self, api_key: str, message: bytes) -> None:
        for conn in self.conns:
            if conn.api_key == api_key:
                conn.texts.append(message)
                conn.wake.set()

    def drop_all(self, refuse_s: float = 0.0) -> int:
        """Cut every socket without a close frame; refuse reconnects for ``refuse_s``."""
        self.refuse_until = time.monotonic() + refuse_s
        for conn in self.conns:
            conn.dropped.set()
        return len(self.conns)

    def stall(self, seconds: float, heartbeats: bool = False) -> None:
        self.stalled_until = time.monotonic() + seconds
        self.stall_heartbeats = heartbeats

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self.stalled_until

    def packet(self, st: InstrumentState, mode: str) -> bytes:
        key = (st.inst.token, mode)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == st.version:
            return cached[1]
        if mode == "ltp":
            data = pack_ltp(st)
        elif mode == "full":
            data = pack_full(st, self.now_ms())
        else:
            data = pack_quote(st)
        self._cache[key] = (st.version, data)
        return data

    # -- socket side -------------------------------------------------------------------------
    async def serve(self, ws: WebSocket, api_key: str) -> None:
        """Run one accepted socket until the client leaves or a fault drops it."""
        conn = Connection(ws=ws, api_key=api_key)
        self.conns.add(conn)
        tasks = [asyncio.create_task(self._receive(conn)), asyncio.create_task(self._send(conn)),
                 asyncio.create_task(conn.dropped.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.conns.discard(conn)
            for task in tasks:
                task.cancel()
        # returning without a close frame makes the server drop the TCP connection

    async def _receive(self, conn: Connection) -> None:
        try:
            while True:
                msg = await conn.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                raw = msg.get("text") or msg.get("bytes")
                if raw:
                    self._command(conn, raw)
        except WebSocketDisconnect:
            return

    def _command(self, conn: Connection, raw: str | bytes) -> None:
        try:
            msg: Any = orjson.loads(raw)
            action, value = msg["a"], msg["v"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if action == "subscribe":
            tokens = [t for t in value if isinstance(t, int) and t in self.states]
            for t in tokens:
                conn.modes.setdefault(t, "quote")
        elif action == "unsubscribe":
            tokens = []
            for t in value:
                conn.modes.pop(t, None)
                conn.dirty.discard(t)
        elif action == "mode" and isinstance(value, list) and len(value) == 2:
            mode, tokens = value[0], [t for t in value[1] if t in self.states]
            if mode not in MODES:
                return
            for t in tokens:
                conn.modes[t] = mode
        else:
            return
        if tokens:  # a snapshot of what was just subscribed, as Kite sends one
            conn.dirty.update(tokens)
            conn.wake.set()

    async def _send(self, conn: Connection) -> None:
        last = time.monotonic()
        while True:
            await wait_event(conn.wake, HEARTBEAT_S)
            now = time.monotonic()
            if self.stalled:
                if self.stall_heartbeats and now - last >= HEARTBEAT_S:
                    await conn.ws.send_bytes(HEARTBEAT)
                    last = now
                await asyncio.sleep(min(0.05, self.stalled_until - now + 0.001))
                continue
            conn.wake.clear()
            texts, conn.texts = conn.texts, []
            for text in texts:
                await conn.ws.send_text(text.decode())
            dirty, conn.dirty = conn.dirty, set()
            packets = [self.packet(self.states[t], conn.modes[t]) for t in dirty
                       if t in conn.modes]
            for i in range(0, len(packets), 4000):
                chunk = packets[i:i + 4000]
                await conn.ws.send_bytes(frame(chunk))
                conn.sent_ticks += len(chunk)
            if texts or packets:
                last = now
            elif now - last >= HEARTBEAT_S:
                await conn.ws.send_bytes(HEARTBEAT)
                last = now
