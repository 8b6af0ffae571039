from __future__ import annotations

from datetime import datetime

import pytest

from shared.domain.candles import CandleAggregator
from shared.domain.engine import MomentumEngine, exit_for_tick
from shared.domain.ladder import EnterLeg, LegState, RaiseStop, StrategyParams
from shared.domain.session import SessionRules, ms_from_ist
from shared.sim.market import (
    SIM_UNIVERSE,
    PricePath,
    generate_history,
    sim_instruments,
)

RULES = SessionRules()
OPEN = ms_from_ist(datetime(2024, 6, 3, 9, 15))  # a Monday: the sim session's open
BAR_MS = 15 * 60_000


def test_universe_is_realistic() -> None:
    assert len(SIM_UNIVERSE) >= 60
    assert len({i.symbol for i in SIM_UNIVERSE}) == len(SIM_UNIVERSE)
    assert len({i.token for i in SIM_UNIVERSE}) == len(SIM_UNIVERSE)
    for i in SIM_UNIVERSE:
        assert i.exchange == "NSE" and i.lot_size == 1
        assert i.tick in (5, 10)
        assert 50_00 <= i.base_price <= 2_500_00 and i.base_price % i.tick == 0
    assert sum(i.tick == 5 for i in SIM_UNIVERSE) > len(SIM_UNIVERSE) * 3 // 4
    by_symbol = {i.symbol: i.token for i in SIM_UNIVERSE}
    assert by_symbol["RELIANCE"] == 738561 and by_symbol["INFY"] == 408065


def test_sim_instruments() -> None:
    fifty = sim_instruments(50, 1)
    assert fifty == SIM_UNIVERSE[:50] == sim_instruments(50, 7)
    many = sim_instruments(120, 3)
    assert len(many) == 120 and len({i.token for i in many}) == 120
    assert all(50_00 <= i.base_price <= 2_500_00 for i in many)


def test_path_is_deterministic_on_tick_and_in_range() -> None:
    for inst in sim_instruments(50, 4):
        a, b = PricePath(inst, 4), PricePath(inst, 4)
        c = PricePath(inst, 5)
        pa = [a.next_price(5.0) for _ in range(4_500)]  # a whole session at 5 s steps
        assert pa == [b.next_price(5.0) for _ in range(4_500)]
        assert pa != [c.next_price(5.0) for _ in range(4_500)]
        assert all(p % inst.tick == 0 for p in pa)
        assert 40_00 <= min(pa) and max(pa) <= 3_000_00
        assert a.day_volume > 0 and a.day_volume == b.day_volume
        a.new_day()
        assert a.day_volume == 0


def test_history_shape_and_continuity() -> None:
    inst = SIM_UNIVERSE[1]
    hist = generate_history(inst, 9, OPEN, 260, RULES)
    assert len(hist) == 260
    starts = [b.start_ms for b in hist]
    assert starts == sorted(set(starts))
    assert all(RULES.bar_start(s) == s for s in starts)  # session-aligned, trading days only
    assert hist[-1].end_ms <= OPEN and RULES.bar_end(hist[-1].start_ms) == hist[-1].end_ms
    for b in hist:
        assert b.high >= max(b.open, b.close) and b.low <= min(b.open, b.close)
        assert b.volume > 0 and b.close % inst.tick == 0
    # the live path starts at the last close, and more history only adds older bars
    path = PricePath(inst, 9)
    assert path.start_price == hist[-1].close == path.price
    assert generate_history(inst, 9, OPEN, 100, RULES) == hist[-100:]
    assert generate_history(inst, 9, OPEN, 260, RULES) == hist


def test_history_bars_follow_the_previous_sessions() -> None:
    hist = generate_history(SIM_UNIVERSE[0], 1, OPEN, 50, RULES)
    # 2 full sessions (25 bars each) before Monday: Thursday and Friday
    assert hist[-1].start_ms == ms_from_ist(datetime(2024, 5, 31, 15, 15))
    assert hist[0].start_ms == ms_from_ist(datetime(2024, 5, 30, 9, 15))


def run_sim(seed: int, symbols: int = 50, bars: int = 12) -> tuple[list[float], list[float]]:
    """Warm the engine on history, then drive it with live ticks (1 tick/s per symbol) as the
    live system would, filling entries at once; return when P1 fills and stop raises happen."""
    eng = MomentumEngine(StrategyParams(), RULES)
    insts = sim_instruments(symbols, seed)
    paths, aggs = {}, {}
    for inst in insts:
        eng.add_instrument(inst.symbol, inst.exchange, inst.tick)
        eng.warm_bars(inst.symbol, generate_history(inst, seed, OPEN, 260, RULES))
        paths[inst.symbol] = PricePath(inst, seed)
        aggs[inst.symbol] = CandleAggregator(RULES)
    fills: list[float] = []
    raises: list[float] = []
    end = OPEN + bars * BAR_MS
    t = OPEN + 1000  # as the sim feed does: step the clock, then price every instrument
    while t < end and not (fills and raises):
        for inst in insts:
            sym = inst.symbol
            path = paths[sym]
            price = path.next_price(1.0)
            bar = aggs[sym].on_tick(t, price, path.day_volume)
            if bar is not None:
                for d in eng.on_bar(sym, bar):
                    if isinstance(d, EnterLeg):
                        eng.on_entry_filled(d.ladder_id, d.leg, d.ref_price, d.qty, t)
                        fills.append((t - OPEN) / BAR_MS)
            ladder = eng.active_ladder(sym)
            if ladder is None:
                continue
            for leg in list(ladder.legs.values()):
                hit = exit_for_tick(leg, price, False)
                if hit is not None:
                    eng.on_leg_closed(ladder.ladder_id, leg.leg, hit[0], t, hit[1])
            for d in eng.on_tick(sym, t, price):
                if isinstance(d, EnterLeg):
                    eng.on_entry_filled(d.ladder_id, d.leg, d.ref_price, d.qty, t)
                elif isinstance(d, RaiseStop):
                    ladder_now = eng.ladder(d.ladder_id)
                    assert ladder_now is not None
                    assert ladder_now.legs[d.leg].state is LegState.OPEN
                    raises.append((t - OPEN) / BAR_MS)
        t += 1000
    return fills, raises


@pytest.mark.parametrize("seed", range(1, 21))
def test_every_seed_fills_p1_and_trails_within_12_bars(seed: int) -> None:
    """The system's acceptance test relies on this: every seed gives a P1 fill and a trailing
    raise on an open leg within the first 12 live bars (3 sim hours)."""
    fills, raises = run_sim(seed)
    assert fills, f"seed {seed}: no P1 filled in 12 bars"
    assert raises, f"seed {seed}: no stop raised in 12 bars"
    assert fills[0] < 12 and raises[0] < 12
