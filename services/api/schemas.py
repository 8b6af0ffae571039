"""Output schemas of the read endpoints (pydantic v2, frozen). Prices are rupees as JSON numbers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def rupees(value: Decimal | int | float | None) -> float | None:
    """A price or amount held as exact rupees (Numeric) as a JSON number."""
    return None if value is None else float(value)


class Page(Out, Generic[T]):
    items: list[T]
    total: int = Field(description="rows matching the filters, all pages")
    limit: int
    offset: int


class Position(Out):
    """One open leg, valued at the last traded price."""

    symbol: str
    ladder_id: str
    leg: int = Field(ge=1, le=3, description="position number in the ladder (P1, P2, P3)")
    qty: int
    entry_price: float | None
    initial_stop: float | None
    stop: float | None = Field(description="the current GTT trigger")
    target: float | None = Field(description="null for runners (P2, P3)")
    ltp: float | None = Field(description="last traded price; null when the feed has none")
    pnl: float | None
    pnl_pct: float | None
    status: str


class LadderOut(Out):
    id: str
    strategy: str
    exchange: str
    symbol: str
    signal_bar: datetime
    phase: str
    p2_done: bool
    p3_done: bool
    opened_at: datetime
    closed_at: datetime | None


class TradeOut(Out):
    trade_id: str
    ladder_id: str
    symbol: str
    exchange: str
    leg: int
    qty: int
    entry_price: float | None
    entry_time: datetime | None
    exit_price: float | None
    exit_time: datetime | None
    stop: float | None
    initial_stop: float | None
    target: float | None
    highest_price: float | None
    gtt_id: str | None
    pnl: float | None
    pnl_pct: float | None
    status: str
    exit_reason: str | None


class OrderOut(Out):
    id: int
    intent_id: str
    tag: str
    exchange: str
    symbol: str
    ladder_id: str
    leg: int
    side: str
    qty: int
    order_type: str
    product: str
    ref_price: float
    adds_risk: bool
    broker_order_id: str | None
    state: str
    filled_qty: int
    average_price: float | None
    reason: str | None
    created_at: datetime
    submitted_at: datetime | None
    updated_at: datetime


class GttOut(Out):
    id: int
    intent_id: str
    ladder_id: str
    leg: int
    exchange: str
    symbol: str
    qty: int
    trigger_price: float
    target_price: float | None
    trigger_id: str | None
    state: str
    created_at: datetime
    updated_at: datetime


class CandleOut(Out):
    ts: datetime = Field(description="bar start")
    open: float
    high: float
    low: float
    close: float
    volume: int
    ema_9: float | None
    ema_21: float | None
    ema_50: float | None
    ema_200: float | None


class LtpOut(Out):
    exchange: str
    symbol: str
    token: int | None
    price: float
    ts: datetime | None
    volume: int | None


class PnlFigures(Out):
    realised: float
    unrealised: float
    total: float


class SymbolPnl(Out):
    symbol: str
    realised: float
    realised_day: float
    unrealised: float
    total: float
    open_legs: int


class PnlOut(Out):
    day: PnlFigures = Field(description="realised today (IST) plus unrealised now")
    total: PnlFigures = Field(description="all realised plus unrealised now")
    by_symbol: list[SymbolPnl]
    as_of: datetime


class EquityPoint(Out):
    ts: datetime = Field(description="exit time of the leg that closed")
    realised: float = Field(description="realised PnL of every leg closed up to then")


class EquityOut(Out):
    points: list[EquityPoint] = Field(description="oldest first; the latest ones when many")
    realised: float
    unrealised: float = Field(description="open legs at the LTP, now")
    total: float


class AlertOut(Out):
    id: int
    ts: datetime
    level: str
    code: str
    message: str
    symbol: str | None
    ladder_id: str | None
    intent_id: str | None
    source: str


class Health(Out):
    status: str


class Readiness(Out):
    status: str
    checks: dict[str, str]
