"""The hub's watcher of legs and PnL: the ``legs`` snapshots and the ``pnl`` figures.

Leg rows are written by the strategy when it decides (a stop step, a fill it has seen, an exit),
so a leg's truth is the ``trades`` table, not any one event. The watcher reads the open legs and
the realised totals once a second (two indexed queries and one HMGET per api replica, whatever
the number of clients) while someone listens, and publishes what changed: a ``Leg`` message for a
leg that opened, moved its stop or target, or closed, and a ``Pnl`` message when a figure moved.
An exec event wakes it early, so a fill or a stop step shows within a fraction of a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg import Error as PsycopgError
from redis.exceptions import RedisError
from sqlalchemy import BigInteger, cast, func, select

from shared.aio import wait_event
from shared.store.models import Trade

from .fastpath import FastReads, compile_pg, paise
from .live import Message, rupees
from .ltp import field_name, read_quotes_async
from .routers.pnl import ist_day_start

log = logging.getLogger("ratchet.api.hub")

INTERVAL_S = 1.0
EARLY_S = 0.15  # after an exec event: let the strategy commit its row first

LEG_COLUMNS = (
    Trade.trade_id,
    Trade.symbol,
    Trade.exchange,
    Trade.ladder_id,
    Trade.position_number,
    Trade.qty,
    paise(Trade.entry_price),
    paise(Trade.initial_stop),
    paise(Trade.stop_loss),
    paise(Trade.target),
    paise(Trade.highest_price),
    Trade.status,
    Trade.entry_time,
    paise(Trade.exit_price),
    Trade.exit_time,
    Trade.exit_reason,
)
# What makes a leg "changed" (not its LTP: prices move every tick; that is the pnl channel's job).
_STATE = slice(5, 16)


OPEN_LEGS_SQL = compile_pg(select(*LEG_COLUMNS).where(Trade.status == "OPEN"))
LEGS_BY_ID_SQL = compile_pg(select(*LEG_COLUMNS)) + " WHERE trades.trade_id = ANY(%(ids)s)"
_realised = cast(
    func.coalesce(Trade.pnl, (Trade.exit_price - Trade.entry_price) * Trade.qty) * 100, BigInteger
)
# The day's realised figure needs a parameter; written out so it stays one round trip.
_closed = select(_realised.label("v"), Trade.exit_time).where(Trade.status == "CLOSED")
REALISED_SQL = (
    "SELECT COALESCE(SUM(v), 0), COALESCE(SUM(v) FILTER (WHERE exit_time >= %(day)s), 0) "
    f"FROM ({compile_pg(_closed)}) AS closed"
)


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def leg_data(row: Sequence[Any], ltp: int | None) -> dict[str, Any]:
    (trade_id, symbol, exchange, ladder_id, leg, qty, entry, initial, stop, target, highest,
     status, entry_time, exit_price, exit_time, exit_reason) = row
    mark = exit_price if status == "CLOSED" else ltp
    pnl = pnl_pct = None
    if mark is not None and entry:
        pnl = (mark - entry) * qty / 100
        pnl_pct = round((mark - entry) / entry * 100, 4)
    return {
        "type": "Leg",
        "trade_id": trade_id,
        "symbol": symbol,
        "exchange": exchange,
        "ladder_id": ladder_id,
        "leg": leg,
        "qty": qty,
        "entry_price": rupees(entry),
        "entry_time_ms": _ms(entry_time),
        "initial_stop": rupees(initial),
        "stop": rupees(stop),
        "target": rupees(target),
        "highest_price": rupees(highest),
        "ltp": rupees(ltp),
        "pnl": pnl,
        "pnl_pct": pnl_pct,
        "status": status,
        "exit_price": rupees(exit_price),
        "exit_time_ms": _ms(exit_time),
        "exit_reason": exit_reason,
    }


def _figures(realised: int, unrealised: int) -> dict[str, float]:
    return {"realised": realised / 100, "unrealised": unrealised / 100,
            "total": (realised + unrealised) / 100}


class Watcher:
    """Polls legs and PnL while ``wanted()`` says someone listens; hands messages to ``emit``."""

    def __init__(
        self,
        fast: FastReads,
        emit: Callable[[list[Message]], None],
        wanted: Callable[[], bool],
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.fast = fast
        self.emit = emit
        self.wanted = wanted
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._legs: dict[str, tuple[Any, ...]] | None = None  # None: not watching
        self._leg_messages: dict[str, Message] = {}
        self._pnl: Message | None = None
        self._pnl_key: Any = None

    def wake(self, delay_s: float = 0.0) -> None:
        if delay_s <= 0:
            self._wake.set()
        else:
            asyncio.get_running_loop().call_later(delay_s, self._wake.set)

    def snapshot(self) -> list[Message]:
        """The current open legs and PnL, for a client that subscribes while the watcher runs."""
        out = list(self._leg_messages.values())
        if self._pnl is not None:
            out.append(self._pnl)
        return out

    async def run(self) -> None:
        while True:
            await wait_event(self._wake, self.interval_s)
            self._wake.clear()
            if not self.wanted():
                self._legs, self._leg_messages, self._pnl, self._pnl_key = None, {}, None, None
                continue
            try:
                await self.poll()
            except (PsycopgError, RedisError, OSError) as exc:
                log.warning("legs/pnl watcher: %s", exc)

    async def poll(self) -> None:
        rows = await self.fast.fetch(OPEN_LEGS_SQL)
        names = {field_name(r[2], r[1]) for r in rows}
        quotes = await read_quotes_async(self.fast.redis, names)
        ltps = {name: q.price_paise for name, q in quotes.items()}
        day = ist_day_start(datetime.now(UTC))
        async with self.fast.pool.connection() as conn:
            cursor = await conn.execute(REALISED_SQL, {"day": day})  # type: ignore[arg-type]
            realised, realised_day = await cursor.fetchone()  # type: ignore[misc]

        out: list[Message] = []
        before = self._legs or {}
        now: dict[str, tuple[Any, ...]] = {}
        messages: dict[str, Message] = {}
        for row in rows:
            trade_id = row[0]
            state = tuple(row[_STATE])
            now[trade_id] = state
            message = Message("legs", row[1], leg_data(row, ltps.get(field_name(row[2], row[1]))))
            messages[trade_id] = message
            if before.get(trade_id) != state:
                out.append(message)
        gone = [t for t in before if t not in now]
        if gone:
            for row in await self.fast.fetch(LEGS_BY_ID_SQL, {"ids": gone}):  # type: ignore[arg-type]
                out.append(Message("legs", row[1], leg_data(row, None)))
        self._legs, self._leg_messages = now, messages

        pnl = self._pnl_message(rows, ltps, messages, int(realised), int(realised_day))
        if pnl is not None:
            out.append(pnl)
        if out:
            self.emit(out)

    def _pnl_message(
        self,
        rows: Sequence[Sequence[Any]],
        ltps: dict[str, int],
        legs: dict[str, Message],
        realised: int,
        realised_day: int,
    ) -> Message | None:
        """The ``Pnl`` message when a figure moved since the last one, else None."""
        unrealised, deployed, per_leg = 0, 0, []
        for row in rows:
            entry, qty = row[6], row[5]
            ltp = ltps.get(field_name(row[2], row[1]))
            deployed += (entry or 0) * qty
            if ltp is not None and entry:
                unrealised += (ltp - entry) * qty
            data = legs[row[0]].data
            per_leg.append({k: data[k] for k in ("trade_id", "symbol", "ltp", "pnl", "pnl_pct")})
        key = (realised, realised_day, unrealised, [(p["trade_id"], p["ltp"]) for p in per_leg])
        if key == self._pnl_key:
            return None
        self._pnl_key = key
        self._pnl = Message("pnl", None, {
            "type": "Pnl",
            "day": _figures(realised_day, unrealised),
            "total": _figures(realised, unrealised),
            "open_legs": len(rows),
            "deployed": deployed / 100,
            "legs": per_leg,
            "as_of_ms": int(time.time() * 1000),
        })
        return self._pnl
