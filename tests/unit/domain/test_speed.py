"""Lenient speed guards: the engine runs per tick at 50k ticks/s (generous bounds, no flakes)."""

from __future__ import annotations

import time

from shared.domain.candles import Bar, CandleAggregator
from shared.domain.engine import MomentumEngine
from shared.domain.ladder import Ladder, Leg, LegState, StrategyParams
from shared.domain.session import SessionRules

OPEN = 1_717_386_300_000  # 2024-06-03 09:15 IST


def test_on_tick_with_1000_open_ladders_is_microseconds() -> None:
    eng = MomentumEngine(StrategyParams(), SessionRules())
    symbols = [f"S{i}" for i in range(1000)]
    for s in symbols:
        eng.add_instrument(s, "NSE", 5)
        ladder = Ladder(f"NSE:{s}:202406031000", s, "NSE", OPEN, "202406031000", p2_done=True)
        for n in (1, 2):
            ladder.legs[n] = Leg(n, 2, 100_000, 25_000, state=LegState.OPEN, entry_price=100_000,
                                 stop=97_500, initial_stop=97_500, highest=100_000)
        eng.restore_ladder(ladder)
    n = 50_000
    t0 = time.perf_counter()
    for i in range(n):
        eng.on_tick(symbols[i % 1000], OPEN + 3_600_000 + i, 99_700 + (i * 7919) % 600)
    per_tick_us = (time.perf_counter() - t0) / n * 1e6
    assert per_tick_us < 10, per_tick_us


def test_bars_per_second() -> None:
    eng = MomentumEngine(StrategyParams(), SessionRules(enabled=False))
    eng.add_instrument("X", "NSE", 5)
    bars = [Bar(i * 900_000, (i + 1) * 900_000, p, p, p, p, 1)
            for i, p in enumerate(100_000 + (i * 7919) % 3000 for i in range(50_000))]
    t0 = time.perf_counter()
    for b in bars:
        eng.on_bar("X", b)
    assert len(bars) / (time.perf_counter() - t0) > 100_000


def test_candle_aggregator_speed() -> None:
    agg = CandleAggregator(SessionRules())
    t0 = time.perf_counter()
    for i in range(100_000):
        agg.on_tick(OPEN + i * 200, 100_000 + (i * 7919) % 300, i)
    assert (time.perf_counter() - t0) / 100_000 * 1e6 < 10
