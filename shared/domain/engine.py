"""The momentum strategy as a pure state machine, driven alike by the live service and backtests.

Inputs are closed bars, ticks and execution outcomes (fills, rejections, closed legs); outputs
are decisions (ladder.py). Exits are not decided here: in live trading the broker's GTT decides,
and the backtester applies :func:`exit_for_tick` before calling :meth:`MomentumEngine.on_tick`
(DESIGN §9: exits, then trailing, then the ladder).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.domain.candles import Bar
from shared.domain.indicators import EmaSet
from shared.domain.ladder import (
    Decision,
    EnterLeg,
    Ladder,
    LadderEnded,
    Leg,
    LegState,
    ProtectLeg,
    RaiseStop,
    StrategyParams,
)
from shared.domain.money import (
    ONE,
    mean_pnl_pct_exceeds,
    pnl_pct_exceeds,
    price_above,
    price_below,
    qty_for_capital,
)
from shared.domain.session import SessionRules
from shared.domain.signals import entry_signal

_OPEN = LegState.OPEN
_PENDING = LegState.PENDING


def intent_id(
    strategy: str, exchange: str, symbol: str, ladder_key: str, leg: int, action: str
) -> str:
    """``{strategy}:{exchange}:{symbol}:{ladder}:{leg}:{action}`` (DESIGN §4)."""
    return f"{strategy}:{exchange}:{symbol}:{ladder_key}:{leg}:{action}"


def stop_action(trigger: int, tick: int) -> str:
    """The action of a stop update: its new trigger in ticks, so every step has its own id."""
    return f"stop@{trigger // tick}"


def exit_for_tick(leg: Leg, price: int, is_bar_open: bool) -> tuple[int, str] | None:
    """The backtest/paper exit rule: (exit price, reason) when this tick ends the leg.

    A stop at or above the price exits at the stop, a target at or below it at the target; when
    the crossing tick is the bar's open (a gap), the exit is at the open instead.
    """
    if leg.state is not _OPEN:
        return None
    if price <= leg.stop:
        return (price if is_bar_open else leg.stop), "stop"
    target = leg.target
    if target is not None and price >= target:
        return (price if is_bar_open else target), "target"
    return None


class _Instrument:
    __slots__ = ("symbol", "exchange", "tick", "emas", "prev", "ladder", "last_bar_ms")

    def __init__(self, symbol: str, exchange: str, tick: int, periods: tuple[int, ...]) -> None:
        self.symbol = symbol
        self.exchange = exchange
        self.tick = tick
        self.emas = EmaSet(periods)
        self.prev: tuple[float | None, ...] | None = None
        self.ladder: Ladder | None = None
        self.last_bar_ms: int | None = None


class MomentumEngine:
    """One strategy instance over many symbols; at most one active ladder per symbol."""

    __slots__ = ("params", "rules", "_inst", "_ladders", "_min_step_factor")

    def __init__(self, params: StrategyParams, rules: SessionRules) -> None:
        self.params = params
        self.rules = rules
        self._inst: dict[str, _Instrument] = {}
        self._ladders: dict[str, Ladder] = {}
        self._min_step_factor = ONE + params.trail_min_step_s

    # --- set-up ---------------------------------------------------------------------------------

    def add_instrument(self, symbol: str, exchange: str, tick: int) -> None:
        if tick <= 0:
            raise ValueError(f"tick of {symbol} must be positive paise")
        inst = self._inst.get(symbol)
        if inst is None:
            self._inst[symbol] = _Instrument(symbol, exchange, tick, self.params.ema_periods)
        else:  # a re-announced instrument keeps its EMAs and ladder; the tick may change
            inst.exchange, inst.tick = exchange, tick

    def remove_instrument(self, symbol: str) -> None:
        """Stop following a symbol (its shard moved to another replica); its ladder goes too —
        the new owner rebuilds both from the stored state."""
        inst = self._inst.pop(symbol, None)
        if inst is not None and inst.ladder is not None:
            self._ladders.pop(inst.ladder.ladder_id, None)

    def last_bar_ms(self, symbol: str) -> int | None:
        """Start of the last bar the symbol's EMAs have seen."""
        inst = self._inst.get(symbol)
        return None if inst is None else inst.last_bar_ms

    def set_params(self, params: StrategyParams) -> None:
        """Settings changed at run time: new legs use them; open legs keep their stop %."""
        if params.ema_periods != self.params.ema_periods:
            raise ValueError("EMA periods cannot change while running (re-warm instead)")
        self.params = params
        self._min_step_factor = ONE + params.trail_min_step_s

    def warm(
        self, symbol: str, closes: Iterable[int | float], last_bar_ms: int | None = None
    ) -> tuple[float | None, ...]:
        """Feed history closes to the EMAs (no signals); ``last_bar_ms`` = the last bar's start."""
        inst = self._inst[symbol]
        emas = inst.emas
        for close in closes:
            emas.update(float(close))
        if emas.count:
            inst.prev = emas.values
        if last_bar_ms is not None:
            inst.last_bar_ms = last_bar_ms
        return emas.values

    def warm_bars(self, symbol: str, bars: Iterable[Bar]) -> tuple[float | None, ...]:
        inst = self._inst[symbol]
        values = inst.emas.values
        for bar in bars:
            if inst.last_bar_ms is not None and bar.start_ms <= inst.last_bar_ms:
                continue
            values = inst.emas.update(float(bar.close))
            inst.prev = values
            inst.last_bar_ms = bar.start_ms
        return values

    # --- queries --------------------------------------------------------------------------------

    def emas(self, symbol: str) -> tuple[float | None, ...]:
        return self._inst[symbol].emas.values

    def tick_size(self, symbol: str) -> int:
        return self._inst[symbol].tick

    def symbols(self) -> list[str]:
        return list(self._inst)

    def ladders(self) -> list[Ladder]:
        """Every ladder not yet ended (P1 pending included)."""
        return list(self._ladders.values())

    def ladder(self, ladder_id: str) -> Ladder | None:
        return self._ladders.get(ladder_id)

    def active_ladder(self, symbol: str) -> Ladder | None:
        inst = self._inst.get(symbol)
        return None if inst is None else inst.ladder

    # --- market events --------------------------------------------------------------------------

    def on_bar(self, symbol: str, bar: Bar) -> list[Decision]:
        """A closed bar: update the EMAs, then maybe signal P1 at its close.

        A bar not newer than the last one seen (a redelivered candle) changes nothing.
        """
        inst = self._inst.get(symbol)
        if inst is None:
            return []
        if inst.last_bar_ms is not None and bar.start_ms <= inst.last_bar_ms:
            return []
        inst.last_bar_ms = bar.start_ms
        close = bar.close
        cur = inst.emas.update(float(close))
        prev = inst.prev
        inst.prev = cur
        if not entry_signal(prev, cur, close):
            return []
        if inst.ladder is not None or not self.rules.entry_allowed(bar.end_ms):
            return []
        params = self.params
        qty = qty_for_capital(params.capital_per_position_paise, close)
        if qty <= 0:
            return []
        key = self.rules.format_ladder_key(bar.start_ms)
        ladder_id = f"{inst.exchange}:{symbol}:{key}"
        ladder = Ladder(ladder_id, symbol, inst.exchange, bar.start_ms, key)
        ladder.legs[1] = Leg(1, qty, close, params.p1_stop_s, signal_ms=bar.end_ms)
        inst.ladder = ladder
        self._ladders[ladder_id] = ladder
        iid = intent_id(params.strategy_name, inst.exchange, symbol, key, 1, "buy")
        return [EnterLeg(ladder_id, symbol, inst.exchange, 1, qty, close, bar.end_ms, iid)]

    def on_tick(self, symbol: str, ts_ms: int, price: int) -> list[Decision]:
        """A tick: trail every open leg (RaiseStop per step), then at most one new leg (P2/P3)."""
        inst = self._inst.get(symbol)
        if inst is None:
            return []
        ladder = inst.ladder
        if ladder is None:
            return []
        out: list[Decision] = []
        legs = ladder.legs
        tick = inst.tick
        for leg in legs.values():
            if leg.state is not _OPEN or price <= leg.highest:
                continue
            # trailing.trail inlined: highest only rises, and the stop follows in steps
            leg.highest = price
            stop = leg.stop
            candidate = price * (ONE - leg.stop_pct_s) // (ONE * tick) * tick
            if candidate - stop >= tick and candidate * ONE >= stop * self._min_step_factor:
                leg.stop = candidate
                out.append(
                    RaiseStop(
                        ladder.ladder_id,
                        symbol,
                        ladder.exchange,
                        leg.leg,
                        leg.qty,
                        candidate,
                        ts_ms,
                        leg.target,
                        price,
                        intent_id(
                            self.params.strategy_name,
                            ladder.exchange,
                            symbol,
                            ladder.key,
                            leg.leg,
                            f"stop@{candidate // tick}",
                        ),
                    )
                )
        if ladder.p3_done:
            return out
        p1 = legs.get(1)
        if p1 is None or p1.state is not _OPEN:
            return out
        params = self.params
        if not ladder.p2_done:
            if pnl_pct_exceeds(p1.entry_price, price, params.p2_trigger_s) and (
                self.rules.entry_allowed_at(ts_ms)
            ):
                ladder.p2_done = True
                self._add_leg(ladder, inst, 2, params.p2_stop_s, ts_ms, price, out)
            return out
        p2 = legs.get(2)
        if p2 is None or p2.state is not _OPEN:
            return out
        if mean_pnl_pct_exceeds(p1.entry_price, p2.entry_price, price, params.p3_trigger_s) and (
            self.rules.entry_allowed_at(ts_ms)
        ):
            ladder.p3_done = True
            self._add_leg(ladder, inst, 3, params.p3_stop_s, ts_ms, price, out)
        return out

    def _add_leg(
        self,
        ladder: Ladder,
        inst: _Instrument,
        n: int,
        stop_pct_s: int,
        ts_ms: int,
        price: int,
        out: list[Decision],
    ) -> None:
        qty = qty_for_capital(self.params.capital_per_position_paise, price)
        if qty <= 0:  # cannot afford one share: the leg is spent, not retried
            return
        ladder.legs[n] = Leg(n, qty, price, stop_pct_s, signal_ms=ts_ms)
        exchange, symbol = ladder.exchange, inst.symbol
        iid = intent_id(self.params.strategy_name, exchange, symbol, ladder.key, n, "buy")
        out.append(EnterLeg(ladder.ladder_id, symbol, exchange, n, qty, price, ts_ms, iid))

    # --- execution outcomes ---------------------------------------------------------------------

    def on_entry_filled(
        self, ladder_id: str, leg: int, fill_price: int, qty: int, ts_ms: int
    ) -> list[Decision]:
        """The entry is confirmed: the leg opens with its stop (and target for P1) -> ProtectLeg.

        A repeated fill event for a leg already open changes nothing.
        """
        ladder = self._ladders.get(ladder_id)
        if ladder is None:
            return []
        rec = ladder.legs.get(leg)
        if rec is None or rec.state is not _PENDING:
            return []
        tick = self._inst[ladder.symbol].tick
        stop = price_below(fill_price, rec.stop_pct_s, tick)
        target = price_above(fill_price, self.params.p1_target_s, tick) if leg == 1 else None
        rec.state = _OPEN
        rec.qty = qty
        rec.entry_price = fill_price
        rec.highest = fill_price
        rec.stop = rec.initial_stop = stop
        rec.target = target
        rec.entry_ms = ts_ms
        iid = intent_id(
            self.params.strategy_name, ladder.exchange, ladder.symbol, ladder.key, leg, "gtt"
        )
        return [
            ProtectLeg(
                ladder_id, ladder.symbol, ladder.exchange, leg, qty, stop, target, ts_ms,
                fill_price, iid,
            )
        ]

    def on_entry_rejected(self, ladder_id: str, leg: int, ts_ms: int) -> list[Decision]:
        """P1 rejected: the signal is consumed and no ladder remains. P2/P3: spent, not retried."""
        ladder = self._ladders.get(ladder_id)
        if ladder is None:
            return []
        rec = ladder.legs.get(leg)
        if rec is None or rec.state is not _PENDING:
            return []
        rec.state = LegState.REJECTED
        rec.exit_ms = ts_ms
        if leg == 1:
            self._drop(ladder)
            return []
        return self._end_if_done(ladder, ts_ms, "rejected")

    def on_leg_closed(
        self, ladder_id: str, leg: int, exit_price: int, ts_ms: int, reason: str
    ) -> list[Decision]:
        """A leg exited (GTT triggered, manual, flatten): the ladder ends with its last leg."""
        ladder = self._ladders.get(ladder_id)
        if ladder is None:
            return []
        rec = ladder.legs.get(leg)
        if rec is None or rec.state is LegState.CLOSED or rec.state is LegState.REJECTED:
            return []
        rec.state = LegState.CLOSED
        rec.exit_ms = ts_ms
        rec.exit_price = exit_price
        rec.exit_reason = str(reason)
        return self._end_if_done(ladder, ts_ms, str(reason))

    def _end_if_done(self, ladder: Ladder, ts_ms: int, reason: str) -> list[Decision]:
        if ladder.active:
            return []
        self._drop(ladder)
        return [LadderEnded(ladder.ladder_id, ladder.symbol, ladder.exchange, ts_ms, reason)]

    def _drop(self, ladder: Ladder) -> None:
        self._ladders.pop(ladder.ladder_id, None)
        inst = self._inst.get(ladder.symbol)
        if inst is not None and inst.ladder is ladder:
            inst.ladder = None

    # --- persistence ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume, as plain JSON-able data."""
        return {
            "instruments": {
                s: {
                    "exchange": i.exchange,
                    "tick": i.tick,
                    "emas": i.emas.state(),
                    "prev": None if i.prev is None else list(i.prev),
                    "last_bar_ms": i.last_bar_ms,
                }
                for s, i in self._inst.items()
            },
            "ladders": [ladder.to_dict() for ladder in self._ladders.values()],
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the state with a snapshot's (instruments it names are added if missing)."""
        self._ladders.clear()
        for symbol, d in snapshot.get("instruments", {}).items():
            self.add_instrument(symbol, d["exchange"], int(d["tick"]))
            inst = self._inst[symbol]
            inst.emas = EmaSet.from_state(d["emas"])
            inst.prev = None if d["prev"] is None else tuple(d["prev"])
            inst.last_bar_ms = d["last_bar_ms"]
            inst.ladder = None
        for ld in snapshot.get("ladders", []):
            self.restore_ladder(Ladder.from_dict(ld))

    def restore_ladder(self, ladder: Ladder) -> None:
        """Adopt one ladder rebuilt elsewhere (e.g. from the ``ladders``/``trades`` tables)."""
        inst = self._inst[ladder.symbol]
        if inst.ladder is not None and inst.ladder.ladder_id != ladder.ladder_id:
            raise ValueError(f"{ladder.symbol} already has active ladder {inst.ladder.ladder_id}")
        inst.ladder = ladder
        self._ladders[ladder.ladder_id] = ladder
