"""Pre-trade guards (DESIGN §4), pure: execution and the backtester ask the same questions.

Every refusal is a reason, never an exception. Orders that reduce risk (exits) are never blocked
by a halt, the market clock or a cap, and protective GTTs are never blocked by a halt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from shared.domain.money import to_paise

if TYPE_CHECKING:  # pragma: no cover - typing only
    from shared.config import RiskSettings


class RejectReason(StrEnum):
    HALTED = "halted"
    MARKET_CLOSED = "market_closed"
    QTY_ZERO = "qty_zero"
    QTY_TOO_LARGE = "qty_too_large"
    FREEZE_QTY = "freeze_qty"
    ORDER_VALUE = "order_value"
    CIRCUIT = "circuit"
    OFF_TICK = "off_tick"
    MAX_OPEN_LEGS = "max_open_legs"
    MAX_CAPITAL = "max_capital"
    DAILY_LOSS = "daily_loss"
    GTT_CAP = "gtt_cap"
    DUPLICATE_LIVE_ORDER = "duplicate_live_order"


RiskRejected = RejectReason  # the spec's name for the same enum


@dataclass(frozen=True, slots=True)
class RiskLimits:
    max_open_legs: int = 90
    max_capital_paise: int = 24_000_000
    max_order_value_paise: int = 1_000_000
    max_qty_per_order: int = 5000
    daily_loss_limit_paise: int = 500_000
    max_active_gtts: int = 250

    @classmethod
    def from_settings(cls, s: RiskSettings) -> RiskLimits:
        return cls(
            max_open_legs=s.max_open_legs,
            max_capital_paise=to_paise(s.max_capital),
            max_order_value_paise=to_paise(s.max_order_value),
            max_qty_per_order=s.max_qty_per_order,
            daily_loss_limit_paise=to_paise(s.daily_loss_limit),
            max_active_gtts=s.max_active_gtts,
        )


@dataclass(slots=True)
class RiskState:
    """What the guards need to know right now (built by the caller from Postgres or its book)."""

    halted: bool = False
    halt_reason: str | None = None
    market_open: bool = True
    open_legs: int = 0
    deployed_paise: int = 0
    realised_loss_today_paise: int = 0  # a loss is positive; a net gain counts as 0
    active_gtts: int = 0
    live_order_keys: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class OrderCheck:
    symbol: str
    leg_key: str  # e.g. "NSE:INFY:1" — one live order per symbol and leg
    qty: int
    price_paise: int  # limit price, or the reference price of a market order
    tick: int
    freeze_qty: int | None = None
    lower_circuit: int | None = None
    upper_circuit: int | None = None
    adds_risk: bool = True


def check_order(check: OrderCheck, state: RiskState, limits: RiskLimits) -> RejectReason | None:
    """The first guard an order fails, or None. An exit (adds_risk=False) only needs a qty."""
    qty = check.qty
    if qty <= 0:
        return RejectReason.QTY_ZERO
    if not check.adds_risk:
        return None
    if state.halted:
        return RejectReason.HALTED
    if not state.market_open:
        return RejectReason.MARKET_CLOSED
    if qty > limits.max_qty_per_order:
        return RejectReason.QTY_TOO_LARGE
    if check.freeze_qty is not None and qty > check.freeze_qty:
        return RejectReason.FREEZE_QTY
    price = check.price_paise
    value = qty * price
    if value > limits.max_order_value_paise:
        return RejectReason.ORDER_VALUE
    if (check.lower_circuit is not None and price < check.lower_circuit) or (
        check.upper_circuit is not None and price > check.upper_circuit
    ):
        return RejectReason.CIRCUIT
    if check.tick <= 0 or price <= 0 or price % check.tick:
        return RejectReason.OFF_TICK
    if state.open_legs + 1 > limits.max_open_legs:
        return RejectReason.MAX_OPEN_LEGS
    if state.deployed_paise + value > limits.max_capital_paise:
        return RejectReason.MAX_CAPITAL
    if state.realised_loss_today_paise >= limits.daily_loss_limit_paise:
        return RejectReason.DAILY_LOSS
    if state.active_gtts >= limits.max_active_gtts:  # the leg will need a GTT of its own
        return RejectReason.GTT_CAP
    if check.leg_key in state.live_order_keys:
        return RejectReason.DUPLICATE_LIVE_ORDER
    return None


def count_order(check: OrderCheck, state: RiskState) -> None:
    """Add an order that passed to ``state``, so that orders checked together see each other
    as a picture read after each one was recorded would: a buy that adds risk opens a leg and
    deploys its value; every live order holds its leg."""
    if check.adds_risk:
        state.open_legs += 1
        state.deployed_paise += check.qty * check.price_paise
    state.live_order_keys.add(check.leg_key)


def check_gtt_create(state: RiskState, limits: RiskLimits) -> RejectReason | None:
    """A protective GTT: only Kite's cap on active GTTs can refuse it (never a halt)."""
    if state.active_gtts >= limits.max_active_gtts:
        return RejectReason.GTT_CAP
    return None

