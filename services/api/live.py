"""What the WebSocket feed says: stream entries turned into client messages (pure, no I/O).

Every message a client receives is ``{"channel": C, "data": {"type": T, ...}}``; events from
``exec.events`` also carry ``"id"``, their stream entry id, which a reconnecting client sends back
to resume (see :mod:`services.api.hub`). Prices travel as integer paise on the streams and leave
here as rupees (JSON numbers); times stay epoch milliseconds (UTC), named ``*_ms``.

Channels and what feeds them:

=========  ==================================================================================
ticks      ``md.ticks.{n}``: ``{"type": "Ticks", "ticks": [tick, ...]}``: the ticks of the
           symbols the client asked for, one message per feed frame (frames that the hub reads
           in one go, in a burst, share a message of at most 500 ticks)
candles    ``md.candles``: ``Candle`` (closed bars with EMA 9/21/50/200)
orders     ``exec.events``: ``OrderAccepted``, ``OrderFilled``, ``OrderRejected``
gtts       ``exec.events``: ``GttPlaced``, ``GttModified``, ``GttTriggered``, ``GttDeleted``
legs       ``exec.events``: ``LegClosed``; and ``Leg`` snapshots (opened, stop or target moved,
           closed) read from the ``trades`` table by the hub's watcher
alerts     ``exec.events``: ``Alert``
pnl        the watcher: ``Pnl`` (day and total, realised and unrealised, per open leg)
status     ``control``: ``Halt``, ``Resume``, ``Flatten``, ``StrategyStart``, ``StrategyStop``
=========  ==================================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CHANNELS = ("ticks", "candles", "orders", "gtts", "legs", "alerts", "pnl", "status")
SYMBOL_BLIND = frozenset({"pnl", "status"})  # summaries: a symbol filter does not apply

EXEC_CHANNEL = {
    "OrderAccepted": "orders",
    "OrderFilled": "orders",
    "OrderRejected": "orders",
    "GttPlaced": "gtts",
    "GttModified": "gtts",
    "GttTriggered": "gtts",
    "GttDeleted": "gtts",
    "LegClosed": "legs",
    "Alert": "alerts",
}
CONTROL_TYPES = frozenset({"Halt", "Resume", "Flatten", "StrategyStart", "StrategyStop"})
KNOWN_VERSION = 1

# Payload fields that hold paise, per message type (everything else passes through unchanged).
PAISE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "OrderFilled": ("price",),
    "GttPlaced": ("trigger", "target"),
    "GttModified": ("trigger",),
    "GttTriggered": ("price",),
    "LegClosed": ("exit_price",),
    "Candle": ("open", "high", "low", "close"),
}
EMA_NAMES = ("ema_9", "ema_21", "ema_50", "ema_200")


def rupees(paise: int | float | None) -> float | None:
    return None if paise is None else round(paise / 100, 4)


@dataclass(frozen=True, slots=True)
class Message:
    """One message for the clients of ``channel``: ``symbol`` is what a symbol filter matches
    (None: every subscriber of the channel gets it); ``event_id`` orders exec events."""

    channel: str
    symbol: str | None
    data: dict[str, Any]
    event_id: str | None = None


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id ``MS-SEQ`` as a comparable pair; ValueError when it is not one."""
    ms, _, seq = entry_id.partition("-")
    if not ms.isdigit() or (seq and not seq.isdigit()):
        raise ValueError(f"not a stream entry id: {entry_id!r}")
    return int(ms), int(seq or 0)


def tick_data(tick: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "symbol": tick["symbol"],
        "exchange": tick.get("exchange", "NSE"),
        "token": tick.get("token"),
        "ts_ms": tick["ts_ms"],
        "price": rupees(tick["price"]),
        "volume": tick.get("volume"),
    }


def ticks_of(envelope: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ticks of a ``Ticks`` envelope, in rupees; [] for anything else."""
    if envelope.get("type") != "Ticks" or envelope.get("v") != KNOWN_VERSION:
        return []
    payload = envelope.get("payload") or {}
    return [tick_data(t) for t in payload.get("ticks", ())]


def candle_message(envelope: Mapping[str, Any]) -> Message | None:
    """A ``Candle`` envelope as a message; None for ``BarEnd`` (a clock) or anything unknown."""
    if envelope.get("type") != "Candle" or envelope.get("v") != KNOWN_VERSION:
        return None
    p = envelope["payload"]
    ema = list(p.get("ema") or ())
    ema += [None] * (len(EMA_NAMES) - len(ema))
    data: dict[str, Any] = {
        "type": "Candle",
        "symbol": p["symbol"],
        "exchange": p.get("exchange", "NSE"),
        "timeframe_minutes": p["timeframe_minutes"],
        "start_ms": p["start_ms"],
        "end_ms": p["end_ms"],
        "open": rupees(p["open"]),
        "high": rupees(p["high"]),
        "low": rupees(p["low"]),
        "close": rupees(p["close"]),
        "volume": p["volume"],
    }
    for name, value in zip(EMA_NAMES, ema, strict=False):
        data[name] = rupees(value)
    return Message("candles", p["symbol"], data)


def exec_message(envelope: Mapping[str, Any], entry_id: str) -> Message | None:
    """An ``exec.events`` envelope as a message (prices in rupees), or None when unknown."""
    kind = envelope.get("type")
    channel = EXEC_CHANNEL.get(kind) if isinstance(kind, str) else None
    if channel is None or envelope.get("v") != KNOWN_VERSION:
        return None
    data: dict[str, Any] = {"type": kind, **envelope["payload"]}
    for name in PAISE_FIELDS.get(kind, ()):  # type: ignore[arg-type]
        if name in data:
            data[name] = rupees(data[name])
    return Message(channel, data.get("symbol"), data, event_id=entry_id)


def control_message(envelope: Mapping[str, Any]) -> Message | None:
    kind = envelope.get("type")
    if kind not in CONTROL_TYPES or envelope.get("v") != KNOWN_VERSION:
        return None
    data = {"type": kind, "ts_ms": envelope.get("ts"), **envelope["payload"]}
    return Message("status", None, data)


def symbol_key(name: str) -> str:
    """``NSE:INFY`` and ``INFY`` both filter on the tradingsymbol ``INFY``."""
    return name.rpartition(":")[2].strip()


def filter_ticks(
    ticks: Iterable[dict[str, Any]], symbols: frozenset[str] | None
) -> list[dict[str, Any]]:
    if symbols is None:
        return list(ticks)
    return [t for t in ticks if t["symbol"] in symbols]
