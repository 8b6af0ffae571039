"""Where simulated prices come from, behind one small protocol.

``PriceSource.next_price(dt_s)`` is the interface of ``shared.sim.market.PricePath``; until that
module exists (or with ``prefer_shared=False``) a simple seeded path of our own is used, and a
replay of stored bars is a third source. The market adds gaps, circuits and admin overrides on top,
so a source only has to produce a plausible tick-aligned walk.
"""

from __future__ import annotations

import csv
import importlib
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .instruments import Instrument

# ~25% annualised volatility expressed per sqrt(second) of session time (252 days x 22,500 s).
_VOL_PER_SQRT_S = 0.25 / math.sqrt(252 * 22_500)


class PriceSource(Protocol):
    def next_price(self, dt_s: float) -> int:
        """The price (int paise, on the tick) ``dt_s`` simulated seconds after the last one."""
        ...


class SeededPath:
    """A seeded log-random walk with trending regimes (up, down, chop) of 20-90 minutes."""

    __slots__ = ("_rng", "_base", "_tick", "_log", "_drift", "_left", "_vol")

    def __init__(self, instrument: Instrument, seed: int) -> None:
        self._rng = random.Random(f"kite-sim:{seed}:{instrument.token}")
        self._base = instrument.base_price
        self._tick = instrument.tick
        self._log = 0.0
        self._drift = 0.0
        self._left = 0.0
        self._vol = _VOL_PER_SQRT_S * self._rng.uniform(0.8, 1.8)

    def next_price(self, dt_s: float) -> int:
        if dt_s > 0:
            self._left -= dt_s
            if self._left <= 0:
                self._left = self._rng.uniform(1200, 5400)
                # up to ~1.5% an hour of trend, so momentum entries happen within a session
                self._drift = self._rng.choice((1.0, -1.0, 0.0)) * self._rng.uniform(1e-6, 4e-6)
            self._log += self._drift * dt_s + self._vol * math.sqrt(dt_s) * self._rng.gauss(0, 1)
        price = self._base * math.exp(self._log)
        return max(self._tick, int(price / self._tick) * self._tick)


class ReplayPath:
    """Replays bars (open, high, low, close in paise) as four ticks each, one tick per ``step_s``.

    The tick order is the backtester's (DESIGN §9): open, low, high, close when close >= open,
    else open, high, low, close. At the end of the data it holds the last close.
    """

    __slots__ = ("_ticks", "_i", "_step_s", "_acc")

    def __init__(self, bars: Sequence[tuple[int, int, int, int]], step_s: float = 225.0) -> None:
        ticks: list[int] = []
        for o, h, low, c in bars:
            ticks.extend((o, low, h, c) if c >= o else (o, h, low, c))
        if not ticks:
            raise ValueError("no bars to replay")
        self._ticks = ticks
        self._i = 0
        self._step_s = step_s
        self._acc = 0.0

    def next_price(self, dt_s: float) -> int:
        self._acc += dt_s
        while self._acc >= self._step_s and self._i < len(self._ticks) - 1:
            self._acc -= self._step_s
            self._i += 1
        return self._ticks[self._i]


def load_replay_bars(path: Path) -> list[tuple[int, int, int, int]]:
    """Bars from a CSV with open, high, low, close columns in rupees (other columns ignored)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    lower = [{k.strip().lower(): v for k, v in row.items() if k} for row in rows]
    return [
        tuple(round(float(r[col]) * 100) for col in ("open", "high", "low", "close"))  # type: ignore[misc]
        for r in lower
    ]


def make_source(instrument: Instrument, seed: int, replay_dir: Path | None = None,
                prefer_shared: bool = True) -> PriceSource:
    """A replay when ``replay_dir/SYMBOL.csv`` exists, else the shared sim path, else our own."""
    if replay_dir is not None:
        csv_path = replay_dir / f"{instrument.symbol}.csv"
        if csv_path.exists():
            return ReplayPath(load_replay_bars(csv_path))
    if prefer_shared:
        try:
            market = importlib.import_module("shared.sim.market")
            sim_instrument = market.SimInstrument(
                symbol=instrument.symbol, exchange=instrument.exchange, token=instrument.token,
                tick=instrument.tick, lot_size=instrument.lot_size,
                base_price=instrument.base_price)
            source: PriceSource = market.PricePath(sim_instrument, seed)
            return source
        except (ImportError, AttributeError, TypeError):
            pass
    return SeededPath(instrument, seed)
