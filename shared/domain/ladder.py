"""The strategy's state and its decisions: parameters, legs, ladders (DESIGN §3).

A *ladder* is one symbol's run of up to three long legs (P1 on the signal, P2 and P3 added to a
winner). The engine (engine.py) mutates these records and returns *decisions*, which the live
strategy turns into intents and the backtester executes itself. Everything here is plain data
with a JSON-able ``to_dict``/``from_dict`` so that a restart rebuilds the exact state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.domain.money import PCT_SCALE, scale_pct, to_paise

if TYPE_CHECKING:  # pragma: no cover - typing only
    from shared.config import StrategySettings


@dataclass(frozen=True, slots=True)
class StrategyParams:
    """Strategy settings as the rules use them: paise and scaled percentages (money.PCT_SCALE)."""

    capital_per_position_paise: int = 300_000
    p1_stop_s: int = 25 * PCT_SCALE // 10  # 2.5%
    p1_target_s: int = 5 * PCT_SCALE  # 5%
    p2_trigger_s: int = 25 * PCT_SCALE // 100  # 0.25%
    p2_stop_s: int = 25 * PCT_SCALE // 10  # 2.5%
    p3_trigger_s: int = PCT_SCALE  # 1%
    p3_stop_s: int = 5 * PCT_SCALE  # 5%
    trail_min_step_s: int = PCT_SCALE // 10  # 0.1%
    ema_periods: tuple[int, ...] = (9, 21, 50, 200)
    strategy_name: str = "momentum"

    @classmethod
    def from_settings(cls, s: StrategySettings) -> StrategyParams:
        return cls(
            capital_per_position_paise=to_paise(s.capital_per_position),
            p1_stop_s=scale_pct(s.p1_stop_pct),
            p1_target_s=scale_pct(s.p1_target_pct),
            p2_trigger_s=scale_pct(s.p2_trigger_pct),
            p2_stop_s=scale_pct(s.p2_stop_pct),
            p3_trigger_s=scale_pct(s.p3_trigger_pct),
            p3_stop_s=scale_pct(s.p3_stop_pct),
            trail_min_step_s=scale_pct(s.trail_min_step_pct),
            ema_periods=tuple(s.ema_periods),
            strategy_name=s.name,
        )

    def stop_pct_s(self, leg: int) -> int:
        return self.p1_stop_s if leg == 1 else self.p2_stop_s if leg == 2 else self.p3_stop_s


class LegState(StrEnum):
    PENDING = "pending"  # entry intent sent, fill not confirmed
    OPEN = "open"
    CLOSED = "closed"
    REJECTED = "rejected"


@dataclass(slots=True)
class Leg:
    """One position of a ladder. ``stop`` is the current GTT trigger; prices in paise."""

    leg: int
    qty: int
    ref_price: int  # the price the entry was asked at (bar close for P1, the tick for P2/P3)
    stop_pct_s: int
    state: LegState = LegState.PENDING
    entry_price: int = 0
    stop: int = 0
    initial_stop: int = 0
    target: int | None = None
    highest: int = 0
    signal_ms: int = 0  # when the entry was decided
    entry_ms: int | None = None
    exit_ms: int | None = None
    exit_price: int | None = None
    exit_reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.state is LegState.OPEN

    def to_dict(self) -> dict[str, Any]:
        return {
            "leg": self.leg,
            "qty": self.qty,
            "ref_price": self.ref_price,
            "stop_pct_s": self.stop_pct_s,
            "state": self.state.value,
            "entry_price": self.entry_price,
            "stop": self.stop,
            "initial_stop": self.initial_stop,
            "target": self.target,
            "highest": self.highest,
            "signal_ms": self.signal_ms,
            "entry_ms": self.entry_ms,
            "exit_ms": self.exit_ms,
            "exit_price": self.exit_price,
            "exit_reason": self.exit_reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Leg:
        return cls(**{**d, "state": LegState(d["state"])})


@dataclass(slots=True)
class Ladder:
    """Up to three legs of one symbol, started by one signal bar."""

    ladder_id: str  # f"{exchange}:{symbol}:{key}"
    symbol: str
    exchange: str
    signal_bar_ms: int
    key: str  # YYYYMMDDHHMM (IST) of the signal bar's start
    legs: dict[int, Leg] = field(default_factory=dict)
    p2_done: bool = False
    p3_done: bool = False

    @property
    def active(self) -> bool:
        """A leg is pending or open: the symbol takes no new signal."""
        return any(
            leg.state is LegState.OPEN or leg.state is LegState.PENDING
            for leg in self.legs.values()
        )

    def open_legs(self) -> list[Leg]:
        return [leg for leg in self.legs.values() if leg.state is LegState.OPEN]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ladder_id": self.ladder_id,
            "symbol": self.symbol,
            "exchange": self.exchange,
            "signal_bar_ms": self.signal_bar_ms,
            "key": self.key,
            "legs": [leg.to_dict() for leg in self.legs.values()],
            "p2_done": self.p2_done,
            "p3_done": self.p3_done,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ladder:
        legs = {int(x["leg"]): Leg.from_dict(x) for x in d["legs"]}
        return cls(
            ladder_id=d["ladder_id"],
            symbol=d["symbol"],
            exchange=d["exchange"],
            signal_bar_ms=int(d["signal_bar_ms"]),
            key=d["key"],
            legs=legs,
            p2_done=bool(d["p2_done"]),
            p3_done=bool(d["p3_done"]),
        )


# --- decisions (what the engine asks the outside world to do) --------------------------------


@dataclass(frozen=True, slots=True)
class EnterLeg:
    """Buy a leg (live: PlaceOrder, BUY MARKET CNC at about ref_price)."""

    ladder_id: str
    symbol: str
    exchange: str
    leg: int
    qty: int
    ref_price: int
    ts_ms: int
    intent_id: str = ""


@dataclass(frozen=True, slots=True)
class ProtectLeg:
    """Protect a filled leg (live: PlaceGtt; an OCO when ``target`` is set)."""

    ladder_id: str
    symbol: str
    exchange: str
    leg: int
    qty: int
    trigger: int
    target: int | None
    ts_ms: int
    last_price: int = 0
    intent_id: str = ""


@dataclass(frozen=True, slots=True)
class RaiseStop:
    """Move a leg's stop up (live: ModifyGtt; ``target`` is kept for an OCO)."""

    ladder_id: str
    symbol: str
    exchange: str
    leg: int
    qty: int
    trigger: int
    ts_ms: int
    target: int | None = None
    last_price: int = 0
    intent_id: str = ""


@dataclass(frozen=True, slots=True)
class LadderEnded:
    """The ladder's last leg is gone (informational)."""

    ladder_id: str
    symbol: str
    exchange: str
    ts_ms: int
    reason: str = ""


Decision = EnterLeg | ProtectLeg | RaiseStop | LadderEnded
