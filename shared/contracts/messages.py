"""Message contracts: versioned envelopes around frozen pydantic payloads (DESIGN.md §5).

On the wire every stream entry has one field ``d`` holding the JSON envelope
``{"type", "v", "id", "ts", "source", "payload"}``. Prices inside payloads are integer paise and
times are epoch milliseconds (UTC), the units of the domain core; the api converts to rupees.
A consumer that meets an unknown type or version raises :class:`UnknownMessage`, and the bus
parks the entry in ``dead.letters`` instead of crashing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

FIELD = b"d"


class UnknownMessage(ValueError):
    """An entry whose type or version this consumer does not understand (parked, not fatal)."""


class MalformedMessage(ValueError):
    """An entry that is not a valid envelope or whose payload breaks its schema."""


class Payload(BaseModel):
    """Base of every message payload. Subclasses set TYPE (and VERSION when it changes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


_REGISTRY: dict[tuple[str, int], type[Payload]] = {}


def _register(cls: type[Payload]) -> type[Payload]:
    _REGISTRY[(cls.TYPE, cls.VERSION)] = cls
    return cls


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    type: str
    v: int
    id: str
    ts: int
    source: str
    payload: Payload


def encode(payload: Payload, *, msg_id: str, ts_ms: int, source: str) -> bytes:
    """Serialise a payload into its envelope (bytes for the stream field ``d``)."""
    return orjson.dumps(
        {
            "type": payload.TYPE,
            "v": payload.VERSION,
            "id": msg_id,
            "ts": ts_ms,
            "source": source,
            "payload": payload.model_dump(mode="json"),
        }
    )


def decode(raw: bytes | str) -> Envelope:
    """Parse an envelope; raise UnknownMessage or MalformedMessage with a clear reason."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedMessage("envelope is not an object")
    try:
        kind, version = doc["type"], doc["v"]
        body = doc["payload"]
    except KeyError as exc:
        raise MalformedMessage(f"envelope lacks {exc}") from exc
    if not isinstance(kind, str):
        raise MalformedMessage(f"envelope type is not a string: {kind!r}")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedMessage(f"envelope version is not an integer: {version!r}")
    cls = _REGISTRY.get((kind, version))
    if cls is None:
        raise UnknownMessage(f"unknown message type/version {kind!r} v{version!r}")
    try:
        payload = cls.model_validate(body)
        return Envelope(
            type=kind, v=version, id=doc["id"], ts=doc["ts"], source=doc["source"], payload=payload
        )
    except (ValidationError, KeyError, TypeError) as exc:
        raise MalformedMessage(f"invalid {kind} v{version}: {exc}") from exc


# --- enums -----------------------------------------------------------------------------------


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class ExitReason(StrEnum):
    STOP = "stop"
    TARGET = "target"
    MANUAL = "manual"
    FLATTEN = "flatten"
    GTT_UNFILLED = "gtt_unfilled"
    END = "end"


class AlertLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


# --- market data -----------------------------------------------------------------------------


class Tick(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    token: int
    symbol: str
    exchange: str = "NSE"
    ts_ms: int
    price: int
    volume: int | None = None  # cumulative day volume when the feed has it


@_register
class Ticks(Payload):
    """One feed frame: many ticks travel together so that ingest is batched per frame."""

    TYPE: ClassVar[str] = "Ticks"
    ticks: list[Tick]
    bar_open: bool = False  # replay: this frame holds each symbol's bar-opening tick (a gap)


@_register
class Candle(Payload):
    TYPE: ClassVar[str] = "Candle"
    token: int
    symbol: str
    exchange: str = "NSE"
    timeframe_minutes: int
    start_ms: int
    end_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    ema: tuple[float | None, float | None, float | None, float | None]


@_register
class BarEnd(Payload):
    """The feed clock passed a bar boundary (replay lock-step and sim)."""

    TYPE: ClassVar[str] = "BarEnd"
    ts_ms: int


# --- intents (strategy -> execution) ---------------------------------------------------------


class _Intent(Payload):
    intent_id: str
    strategy: str
    exchange: str
    symbol: str
    ladder_id: str
    leg: int
    ts_ms: int


@_register
class PlaceOrder(_Intent):
    """Buy a leg (adds risk): MARKET with market protection, product CNC."""

    TYPE: ClassVar[str] = "PlaceOrder"
    side: Side = Side.BUY
    qty: int
    ref_price: int


@_register
class PlaceGtt(_Intent):
    """Protect a filled leg: an OCO when a target is given, else a single stop."""

    TYPE: ClassVar[str] = "PlaceGtt"
    qty: int
    trigger: int
    target: int | None = None
    last_price: int


@_register
class ModifyGtt(_Intent):
    """Raise a leg's stop (the trigger moves up only)."""

    TYPE: ClassVar[str] = "ModifyGtt"
    qty: int
    trigger: int
    target: int | None = None
    last_price: int


@_register
class DeleteGtt(_Intent):
    TYPE: ClassVar[str] = "DeleteGtt"


@_register
class ExitLeg(_Intent):
    """Sell a leg now (manual exit, flatten): reduces risk, never blocked by a halt."""

    TYPE: ClassVar[str] = "ExitLeg"
    qty: int
    ref_price: int
    reason: ExitReason = ExitReason.MANUAL


Intent = PlaceOrder | PlaceGtt | ModifyGtt | DeleteGtt | ExitLeg


# --- execution events (execution -> strategy, api) -------------------------------------------


class _LegEvent(Payload):
    intent_id: str
    exchange: str
    symbol: str
    ladder_id: str
    leg: int
    ts_ms: int


@_register
class OrderAccepted(_LegEvent):
    TYPE: ClassVar[str] = "OrderAccepted"
    order_id: str
    tag: str


@_register
class OrderFilled(_LegEvent):
    TYPE: ClassVar[str] = "OrderFilled"
    order_id: str
    side: Side
    qty: int
    price: int


@_register
class OrderRejected(_LegEvent):
    TYPE: ClassVar[str] = "OrderRejected"
    reason: str
    guard: str | None = None  # the risk guard that refused it, when one did


@_register
class GttPlaced(_LegEvent):
    TYPE: ClassVar[str] = "GttPlaced"
    trigger_id: str
    trigger: int
    target: int | None = None


@_register
class GttModified(_LegEvent):
    TYPE: ClassVar[str] = "GttModified"
    trigger_id: str
    trigger: int


@_register
class GttTriggered(_LegEvent):
    TYPE: ClassVar[str] = "GttTriggered"
    trigger_id: str
    price: int


@_register
class GttDeleted(_LegEvent):
    TYPE: ClassVar[str] = "GttDeleted"
    trigger_id: str


@_register
class LegClosed(_LegEvent):
    TYPE: ClassVar[str] = "LegClosed"
    qty: int
    exit_price: int
    reason: ExitReason


@_register
class Alert(Payload):
    TYPE: ClassVar[str] = "Alert"
    level: AlertLevel
    code: str
    message: str
    symbol: str | None = None
    ladder_id: str | None = None
    intent_id: str | None = None


# --- control (api -> strategy, execution; broadcast) -----------------------------------------


@_register
class Halt(Payload):
    TYPE: ClassVar[str] = "Halt"
    reason: str
    by: str
    cancel_entries: bool = True


@_register
class Resume(Payload):
    TYPE: ClassVar[str] = "Resume"
    by: str


@_register
class Flatten(Payload):
    TYPE: ClassVar[str] = "Flatten"
    by: str


@_register
class StrategyStart(Payload):
    TYPE: ClassVar[str] = "StrategyStart"
    by: str


@_register
class StrategyStop(Payload):
    TYPE: ClassVar[str] = "StrategyStop"
    by: str


@_register
class ParamsChanged(Payload):
    TYPE: ClassVar[str] = "ParamsChanged"
    section: str
    values: dict[str, str]
    by: str


@_register
class ExitRequested(Payload):
    """A person asked to exit one leg (api -> strategy, which emits the ExitLeg intent)."""

    TYPE: ClassVar[str] = "ExitRequested"
    ladder_id: str
    leg: int
    by: str


# --- dead letters ----------------------------------------------------------------------------


@_register
class DeadLetter(Payload):
    TYPE: ClassVar[str] = "DeadLetter"
    stream: str
    group: str
    entry_id: str
    data: str
    error: str
    failures: int



def encode_ticks(
    ticks: list[dict[str, object]], *, msg_id: str, ts_ms: int, source: str, bar_open: bool = False
) -> bytes:
    """The hot path of ingest: a Ticks envelope built from plain dicts shaped exactly like
    :class:`Tick` (tests check that :func:`decode` reads it back through the model)."""
    return orjson.dumps(
        {
            "type": Ticks.TYPE,
            "v": Ticks.VERSION,
            "id": msg_id,
            "ts": ts_ms,
            "source": source,
            "payload": {"ticks": ticks, "bar_open": bar_open},
        }
    )
