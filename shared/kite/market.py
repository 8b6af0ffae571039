"""The simulated market: last price, day OHLC, volume, circuit limits and depth per instrument.

Prices come from a ``PriceSource`` per instrument, scaled by a factor that gaps at each open and
that an admin override sets, then clamped into the day's circuit band: a price at its circuit is
frozen there (no sellers at the upper circuit, no buyers at the lower), which stops fills.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from .clock import SimClock
from .instruments import Instrument
from .prices import PriceSource

DEPTH_LEVELS = 5
GAP_SIGMA = 0.008  # overnight gap, as a fraction of the close


def floor_tick(paise: int, tick: int) -> int:
    return paise - paise % tick


def ceil_tick(paise: int, tick: int) -> int:
    return -((-paise) // tick) * tick


@dataclass(slots=True)
class InstrumentState:
    """Everything a quote or a tick packet says about one instrument (prices in paise)."""

    inst: Instrument
    ltp: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    turnover: int = 0
    last_qty: int = 0
    last_trade_ms: int = 0
    lower: int = 0
    upper: int = 0
    factor: float = 1.0
    raw: int = 0
    version: int = 0

    @property
    def average_price(self) -> int:
        return self.turnover // self.volume if self.volume else self.ltp

    @property
    def at_upper(self) -> bool:
        return self.ltp >= self.upper

    @property
    def at_lower(self) -> bool:
        return self.ltp <= self.lower

    def set_circuits(self) -> None:
        band = self.inst.band_pct
        tick = self.inst.tick
        self.lower = max(tick, ceil_tick(self.close * (100 - band) // 100, tick))
        self.upper = floor_tick(self.close * (100 + band) // 100, tick)

    def depth(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Five (price, quantity, orders) levels a side; the frozen side of a circuit is empty."""
        tick = self.inst.tick
        seed = self.ltp // tick + self.version
        buy = [(self.ltp - i * tick, 50 + (seed * 7 + i * 31) % 900, 1 + (seed + i) % 9)
               for i in range(DEPTH_LEVELS)]
        sell = [(self.ltp + (i + 1) * tick, 40 + (seed * 11 + i * 17) % 900, 1 + (seed + 2 * i) % 9)
                for i in range(DEPTH_LEVELS)]
        if self.at_upper:
            sell = [(0, 0, 0)] * DEPTH_LEVELS
        if self.at_lower:
            buy = [(0, 0, 0)] * DEPTH_LEVELS
        return buy, sell

    def total_buy_quantity(self) -> int:
        return sum(q for _, q, _ in self.depth()[0]) * 40

    def total_sell_quantity(self) -> int:
        return sum(q for _, q, _ in self.depth()[1]) * 40

    def to_state(self) -> dict[str, object]:
        return {"ltp": self.ltp, "open": self.open, "high": self.high, "low": self.low,
                "close": self.close, "volume": self.volume, "turnover": self.turnover,
                "last_qty": self.last_qty, "last_trade_ms": self.last_trade_ms,
                "factor": self.factor, "raw": self.raw}


class Market:
    """All instruments' state, stepped by the simulator and overridden by admin calls."""

    def __init__(self, instruments: Iterable[Instrument], sources: dict[int, PriceSource],
                 clock: SimClock, seed: int) -> None:
        self.clock = clock
        self._sources = sources
        self._rng = random.Random(f"kite-sim-market:{seed}")
        self.states: dict[int, InstrumentState] = {}
        self.by_key: dict[str, InstrumentState] = {}
        for inst in instruments:
            first = sources[inst.token].next_price(0.0)
            st = InstrumentState(inst=inst, ltp=first, open=first, high=first, low=first,
                                 close=first, raw=first, last_trade_ms=clock.now_ms)
            st.set_circuits()
            self.states[inst.token] = st
            self.by_key[inst.key] = st

    def lookup(self, key: str) -> InstrumentState | None:
        """By ``EXCHANGE:SYMBOL`` or by instrument token (as Kite's ``i=`` accepts both)."""
        if key.isdigit():
            return self.states.get(int(key))
        return self.by_key.get(key)

    def _trade(self, st: InstrumentState, price: int, qty: int) -> None:
        price = min(max(price, st.lower), st.upper)
        st.ltp = price
        if st.volume == 0:
            st.open = st.high = st.low = price
        st.high = max(st.high, price)
        st.low = min(st.low, price)
        st.volume += qty
        st.turnover += price * qty
        st.last_qty = qty
        st.last_trade_ms = self.clock.now_ms
        st.version += 1

    def step(self, sim_s: float) -> list[InstrumentState]:
        """Advance every source by ``sim_s`` seconds; every instrument trades once."""
        changed = []
        rand = self._rng.random
        for token, st in self.states.items():
            raw = self._sources[token].next_price(sim_s)
            st.raw = raw
            tick = st.inst.tick
            price = int(raw * st.factor / tick + 0.5) * tick
            self._trade(st, price, 1 + int(rand() * 20 * max(1.0, min(sim_s, 60.0))))
            changed.append(st)
        return changed

    def set_price(self, st: InstrumentState, price: int) -> None:
        """Trade at ``price`` now (clamped to the circuit) and keep the path there from now on."""
        price = max(st.inst.tick, floor_tick(price, st.inst.tick))
        if st.raw > 0:
            st.factor = price / st.raw
        self._trade(st, price, 1 + int(self._rng.random() * 20))

    def roll_day(self) -> None:
        """Close the day: yesterday's last price becomes the close, circuits move, the open gaps."""
        for st in self.states.values():
            new_day = getattr(self._sources[st.inst.token], "new_day", None)
            if new_day is not None:
                new_day()
            st.close = st.ltp
            st.set_circuits()
            st.factor *= 1.0 + self._rng.gauss(0.0, GAP_SIGMA)
            tick = st.inst.tick
            opening = min(max(int(st.raw * st.factor / tick + 0.5) * tick, st.lower), st.upper)
            st.volume = st.turnover = 0
            self._trade(st, opening, 1 + int(self._rng.random() * 500))

    def to_state(self) -> dict[str, dict[str, object]]:
        return {str(t): st.to_state() for t, st in self.states.items()}

    def restore(self, state: dict[str, dict[str, object]]) -> None:
        """Continue from a saved book: prices carry on from where they were (paths restart)."""
        for token_s, saved in state.items():
            st = self.states.get(int(token_s))
            if st is None:
                continue
            for name in ("ltp", "open", "high", "low", "close", "volume", "turnover",
                         "last_qty", "last_trade_ms"):
                setattr(st, name, int(str(saved[name])))
            st.set_circuits()
            st.factor = st.ltp / st.raw if st.raw else 1.0
            st.version += 1
