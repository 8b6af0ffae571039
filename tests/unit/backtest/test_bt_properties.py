"""Properties of the backtester on seeded random walks (hypothesis, capped)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.bars import BarSeries
from backtest.core import run_backtest
from shared.domain.candles import Bar
from shared.domain.ladder import StrategyParams
from shared.domain.money import price_above, price_below
from shared.domain.risk import RiskLimits
from shared.domain.session import SessionRules

OFF = SessionRules(enabled=False)
TF = 3_600_000
P = StrategyParams()


def walk(symbol: str, seed: int, n: int, vol: int) -> BarSeries:
    rng = random.Random(seed)
    price, drift, bars = 100_000, 0, []
    for i in range(n):
        if i % 50 == 0:
            drift = rng.choice((-2, -1, 0, 1, 2, 3)) * vol // 4
        o = price
        c = max(1000, o + 5 * ((drift + int(rng.gauss(0, vol))) // 5))
        h = max(o, c) + 5 * rng.randrange(0, vol // 5 + 1)
        lo = max(5, min(o, c) - 5 * rng.randrange(0, vol // 5 + 1))
        bars.append(Bar(i * TF, (i + 1) * TF, o, h, lo, c, 1))
        price = c if rng.random() > 0.05 else max(1000, c + 5 * int(rng.gauss(0, 3 * vol) // 5))
    return BarSeries(symbol, bars, [str(b.start_ms) for b in bars], "NSE", 5, TF)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 10_000), st.sampled_from([200, 600, 1500]))
def test_legs_obey_the_rules_and_symbols_are_independent(seed_a: int, seed_b: int,
                                                         vol: int) -> None:
    a, b = walk("AAA", seed_a, 700, vol), walk("BBB", seed_b, 700, vol)
    both = run_backtest([a, b], P, RiskLimits(), OFF)
    alone = run_backtest([a], P, RiskLimits(), OFF).legs + run_backtest([b], P, RiskLimits(),
                                                                        OFF).legs
    assert sorted(both.legs, key=lambda r: r.trade_id) == sorted(alone, key=lambda r: r.trade_id)
    assert sum(r.pnl for r in both.legs) == both.equity[-1]
    entries: dict[str, dict[int, int]] = {}
    for r in both.legs:
        assert r.leg in (1, 2, 3) and r.exit_reason in ("stop", "target", "end")
        pct = (P.p1_stop_s, P.p2_stop_s, P.p3_stop_s)[r.leg - 1]
        assert r.initial_stop == price_below(r.entry_price, pct, 5)
        assert r.stop_loss >= r.initial_stop and r.highest_price >= r.entry_price
        assert r.exit_ms >= r.entry_ms
        if r.leg == 1:
            assert r.target == price_above(r.entry_price, P.p1_target_s, 5)
        else:
            assert r.target is None
        if r.exit_reason == "stop":
            assert r.exit_price <= r.stop_loss
        if r.exit_reason == "target":
            assert r.target is not None and r.exit_price >= r.target
        entries.setdefault(r.ladder_id, {})[r.leg] = r.entry_ms
    for legs in entries.values():
        assert 1 in legs and sorted(legs) == list(range(1, len(legs) + 1))
        assert [legs[n] for n in sorted(legs)] == sorted(legs.values())
