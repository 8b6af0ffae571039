from __future__ import annotations

import json
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.candles import Bar
from shared.domain.engine import MomentumEngine, exit_for_tick, intent_id, stop_action
from shared.domain.indicators import EmaSet
from shared.domain.ladder import (
    EnterLeg,
    Ladder,
    LadderEnded,
    Leg,
    LegState,
    ProtectLeg,
    RaiseStop,
    StrategyParams,
)
from shared.domain.money import price_above, price_below
from shared.domain.session import SessionRules, ms_from_ist
from shared.domain.signals import entry_signal

RULES = SessionRules()
P = StrategyParams()
MIN = 60_000
BAR = 15 * MIN
SYM = "INFY"


def ist(d: int, h: int, m: int, s: int = 0) -> int:
    return ms_from_ist(datetime(2024, 6, d, h, m, s))


def signal_closes() -> list[int]:
    """An uptrend, a short pullback, then a rise: the last close is a signal bar."""
    closes = [100_000 + 20 * i for i in range(300)]
    closes += [closes[-1] - 40 * (i + 1) for i in range(8)]
    es = EmaSet()
    prev = es.warm(closes)
    c = closes[-1]
    for _ in range(60):
        c += 80
        cur = es.update(c)
        closes.append(c)
        if entry_signal(prev, cur, c):
            return closes
        prev = cur
    raise AssertionError("pattern gives no signal")


CLOSES = signal_closes()
SIG_CLOSE = CLOSES[-1]


def bar_at(start: int, close: int) -> Bar:
    return Bar(start, RULES.bar_end(start), close, close, close, close, 100)


def engine_with_signal(
    start: int | None = None, params: StrategyParams = P
) -> tuple[MomentumEngine, list[object]]:
    eng = MomentumEngine(params, RULES)
    eng.add_instrument(SYM, "NSE", 5)
    eng.warm(SYM, CLOSES[:-1])
    start = ist(3, 10, 0) if start is None else start
    return eng, list(eng.on_bar(SYM, bar_at(start, SIG_CLOSE)))


def open_p1(fill: int = SIG_CLOSE) -> tuple[MomentumEngine, Ladder]:
    eng, out = engine_with_signal()
    enter = out[0]
    assert isinstance(enter, EnterLeg)
    eng.on_entry_filled(enter.ladder_id, 1, fill, enter.qty, ist(3, 10, 15, 1))
    ladder = eng.active_ladder(SYM)
    assert ladder is not None
    return eng, ladder


# --- P1 -------------------------------------------------------------------------------------


def entries(decisions: list) -> list[EnterLeg]:
    return [d for d in decisions if isinstance(d, EnterLeg)]


def test_p1_signal_decision() -> None:
    eng, out = engine_with_signal()
    assert len(out) == 1
    d = out[0]
    assert isinstance(d, EnterLeg)
    assert d.leg == 1 and d.ref_price == SIG_CLOSE and d.qty == 300_000 // SIG_CLOSE
    assert d.ts_ms == ist(3, 10, 15)
    assert d.ladder_id == "NSE:INFY:202406031000"
    assert d.intent_id == "momentum:NSE:INFY:202406031000:1:buy"
    assert d.intent_id == intent_id("momentum", "NSE", SYM, "202406031000", 1, "buy")
    ladder = eng.active_ladder(SYM)
    assert ladder is not None and ladder.legs[1].state is LegState.PENDING


def test_p1_qty_zero_skips_signal() -> None:
    eng, out = engine_with_signal(params=StrategyParams(capital_per_position_paise=SIG_CLOSE - 1))
    assert out == [] and eng.active_ladder(SYM) is None


def test_p1_qty_is_floor() -> None:
    _, out = engine_with_signal(params=StrategyParams(capital_per_position_paise=3 * SIG_CLOSE - 1))
    assert isinstance(out[0], EnterLeg) and out[0].qty == 2


def test_cutoff_blocks_signal() -> None:
    _, ok = engine_with_signal(ist(3, 14, 30))  # closes 14:45
    assert len(ok) == 1
    _, late = engine_with_signal(ist(3, 14, 45))  # closes at 15:00, the cut-off
    assert late == []
    _, last = engine_with_signal(ist(3, 15, 15))
    assert last == []


def test_no_signal_while_ladder_active() -> None:
    eng = MomentumEngine(P, RULES)
    eng.add_instrument(SYM, "NSE", 5)
    eng.warm(SYM, CLOSES[:-1])
    busy = Ladder("NSE:INFY:202406030915", SYM, "NSE", ist(3, 9, 15), "202406030915")
    busy.legs[1] = Leg(1, 2, 100_000, P.p1_stop_s, state=LegState.OPEN, entry_price=100_000,
                       stop=97_500, initial_stop=97_500, target=105_000, highest=100_000)
    eng.restore_ladder(busy)
    assert eng.on_bar(SYM, bar_at(ist(3, 10, 0), SIG_CLOSE)) == []
    assert eng.emas(SYM)[0] is not None  # the EMAs still moved on


def test_duplicate_bar_is_ignored() -> None:
    eng, out = engine_with_signal()
    before = eng.emas(SYM)
    assert eng.on_bar(SYM, bar_at(ist(3, 10, 0), SIG_CLOSE)) == []
    assert eng.emas(SYM) == before


def test_fill_protects_leg_with_rounded_stop_and_target() -> None:
    eng, out = engine_with_signal()
    enter = out[0]
    assert isinstance(enter, EnterLeg)
    fill = SIG_CLOSE + 3  # a fill off the reference price
    res = eng.on_entry_filled(enter.ladder_id, 1, fill, enter.qty, ist(3, 10, 15, 2))
    assert len(res) == 1 and isinstance(res[0], ProtectLeg)
    p = res[0]
    assert p.trigger == price_below(fill, 25_000, 5) and p.trigger % 5 == 0
    assert p.target == price_above(fill, 50_000, 5) and p.target % 5 == 0
    assert p.last_price == fill and p.intent_id.endswith(":1:gtt")
    leg = eng.active_ladder(SYM).legs[1]  # type: ignore[union-attr]
    assert leg.state is LegState.OPEN and leg.highest == fill and leg.initial_stop == p.trigger
    # a redelivered fill changes nothing
    assert eng.on_entry_filled(enter.ladder_id, 1, fill, enter.qty, ist(3, 10, 16)) == []


def test_rejected_p1_leaves_no_ladder() -> None:
    eng, out = engine_with_signal()
    enter = out[0]
    assert isinstance(enter, EnterLeg)
    assert eng.on_entry_rejected(enter.ladder_id, 1, ist(3, 10, 16)) == []
    assert eng.active_ladder(SYM) is None and eng.ladders() == []


# --- P2 / P3 --------------------------------------------------------------------------------


def test_p2_trigger_strictly_above_and_once() -> None:
    eng, ladder = open_p1(100_000)
    t = ist(3, 10, 20)
    assert [d for d in eng.on_tick(SYM, t, 100_250) if isinstance(d, EnterLeg)] == []  # = 0.25%
    out = [d for d in eng.on_tick(SYM, t + 1, 100_255) if isinstance(d, EnterLeg)]
    assert len(out) == 1 and out[0].leg == 2 and out[0].ref_price == 100_255
    assert out[0].qty == 300_000 // 100_255 and out[0].intent_id.endswith(":2:buy")
    assert [d for d in eng.on_tick(SYM, t + 2, 100_400) if isinstance(d, EnterLeg)] == []
    # P2 rejected: never retried
    eng.on_entry_rejected(ladder.ladder_id, 2, t + 3)
    for i in range(5):
        assert entries(eng.on_tick(SYM, t + 4 + i, 101_000 + i)) == []


def test_p2_p3_need_confirmed_fills() -> None:
    eng, out = engine_with_signal()
    # P1 still pending: no P2 however high the price
    assert entries(eng.on_tick(SYM, ist(3, 10, 20), 2 * SIG_CLOSE)) == []


def test_p3_on_mean_pnl_once_and_one_leg_per_tick() -> None:
    eng, ladder = open_p1(100_000)
    t = ist(3, 10, 20)
    # a jump that satisfies both triggers: only P2 on this tick
    out = [d for d in eng.on_tick(SYM, t, 103_000) if isinstance(d, EnterLeg)]
    assert [d.leg for d in out] == [2]
    assert entries(eng.on_tick(SYM, t + 1, 103_000)) == []  # P2 pending
    eng.on_entry_filled(ladder.ladder_id, 2, 101_000, 2, t + 2)
    # P1 +x%, P2 at 101_000: mean at 101_500 = (1.5 + 0.495)/2 = 0.9975% -> no
    assert [d for d in eng.on_tick(SYM, t + 3, 101_000) if isinstance(d, EnterLeg)] == []
    # exact mean 1%: (p-100000)/100000 + (p-101000)/101000 = 0.02 -> p = 101502.487...: 101_500 no
    assert [d for d in eng.on_tick(SYM, t + 4, 101_500) if isinstance(d, EnterLeg)] == []
    out = [d for d in eng.on_tick(SYM, t + 5, 101_505) if isinstance(d, EnterLeg)]
    assert [d.leg for d in out] == [3]
    eng.on_entry_filled(ladder.ladder_id, 3, 101_505, 2, t + 6)
    leg3 = ladder.legs[3]
    assert leg3.stop == price_below(101_505, 50_000, 5) and leg3.target is None
    eng.on_leg_closed(ladder.ladder_id, 3, 99_000, t + 7, "stop")
    assert [d for d in eng.on_tick(SYM, t + 8, 110_000) if isinstance(d, EnterLeg)] == []


def test_p2_obeys_cutoff() -> None:
    eng, ladder = open_p1(100_000)
    assert [d for d in eng.on_tick(SYM, ist(3, 15, 0), 101_000) if isinstance(d, EnterLeg)] == []
    assert not ladder.p2_done
    out = [d for d in eng.on_tick(SYM, ist(4, 9, 20), 101_005) if isinstance(d, EnterLeg)]
    assert [d.leg for d in out] == [2]


def test_p2_not_after_p1_exit() -> None:
    eng, ladder = open_p1(100_000)
    ended = eng.on_leg_closed(ladder.ladder_id, 1, 97_500, ist(3, 11, 0), "stop")
    assert len(ended) == 1 and isinstance(ended[0], LadderEnded)
    assert eng.active_ladder(SYM) is None
    assert eng.on_tick(SYM, ist(3, 11, 1), 120_000) == []


def test_ladder_ends_with_last_leg() -> None:
    eng, ladder = open_p1(100_000)
    eng.on_tick(SYM, ist(3, 10, 20), 100_300)
    eng.on_entry_filled(ladder.ladder_id, 2, 100_300, 2, ist(3, 10, 20, 1))
    assert eng.on_leg_closed(ladder.ladder_id, 1, 105_000, ist(3, 11, 0), "target") == []
    assert eng.active_ladder(SYM) is ladder
    ended = eng.on_leg_closed(ladder.ladder_id, 2, 101_000, ist(3, 12, 0), "stop")
    assert isinstance(ended[0], LadderEnded) and eng.ladders() == []
    assert eng.on_leg_closed(ladder.ladder_id, 2, 101_000, ist(3, 12, 0), "stop") == []


# --- trailing in the engine -----------------------------------------------------------------


def test_raise_stop_decision() -> None:
    eng, ladder = open_p1(100_000)
    out = [d for d in eng.on_tick(SYM, ist(3, 10, 30), 100_110) if isinstance(d, RaiseStop)]
    assert len(out) == 1
    r = out[0]
    assert r.leg == 1 and r.trigger == 97_605 and r.target == ladder.legs[1].target
    assert r.last_price == 100_110
    assert r.intent_id == "momentum:NSE:INFY:202406031000:1:" + stop_action(97_605, 5)
    assert r.intent_id.endswith(":1:stop@19521")
    assert [d for d in eng.on_tick(SYM, ist(3, 10, 31), 100_110) if isinstance(d, RaiseStop)] == []
    assert [d for d in eng.on_tick(SYM, ist(3, 10, 32), 99_000) if isinstance(d, RaiseStop)] == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=-400, max_value=400), min_size=1, max_size=300))
def test_engine_stops_never_move_down(moves: list[int]) -> None:
    eng, ladder = open_p1(100_000)
    price = 100_000
    t = ist(3, 10, 20)
    stops: dict[int, int] = {}
    for i, m in enumerate(moves):
        price = max(5, price + m)
        for d in eng.on_tick(SYM, t + i * 1000, price):
            if isinstance(d, EnterLeg):
                eng.on_entry_filled(d.ladder_id, d.leg, d.ref_price, d.qty, t + i * 1000)
            if isinstance(d, RaiseStop):
                assert d.trigger > stops.get(d.leg, 0)
                assert d.trigger % 5 == 0
        for leg in ladder.legs.values():
            if leg.state is LegState.OPEN:
                assert leg.stop >= stops.get(leg.leg, leg.initial_stop)
                assert leg.stop >= leg.initial_stop
                stops[leg.leg] = leg.stop


# --- exits (backtest/paper rule) ------------------------------------------------------------


def test_exit_for_tick() -> None:
    leg = Leg(1, 2, 100_000, 25_000, state=LegState.OPEN, entry_price=100_000, stop=97_500,
              initial_stop=97_500, target=105_000, highest=100_000)
    assert exit_for_tick(leg, 98_000, False) is None
    assert exit_for_tick(leg, 97_500, False) == (97_500, "stop")
    assert exit_for_tick(leg, 97_000, False) == (97_500, "stop")
    assert exit_for_tick(leg, 96_000, True) == (96_000, "stop")  # gap down at the open
    assert exit_for_tick(leg, 105_000, False) == (105_000, "target")
    assert exit_for_tick(leg, 106_000, True) == (106_000, "target")  # gap up at the open
    runner = Leg(2, 2, 100_000, 25_000, state=LegState.OPEN, entry_price=100_000, stop=97_500,
                 initial_stop=97_500, target=None, highest=100_000)
    assert exit_for_tick(runner, 200_000, False) is None
    runner.state = LegState.CLOSED
    assert exit_for_tick(runner, 1, False) is None


# --- persistence ----------------------------------------------------------------------------


def test_snapshot_restore_roundtrip() -> None:
    eng, ladder = open_p1(100_000)
    eng.on_tick(SYM, ist(3, 10, 20), 100_300)
    snap = json.loads(json.dumps(eng.snapshot()))
    other = MomentumEngine(P, RULES)
    other.restore(snap)
    assert other.snapshot() == snap
    assert other.tick_size(SYM) == 5
    a = eng.on_tick(SYM, ist(3, 10, 21), 101_000)
    b = other.on_tick(SYM, ist(3, 10, 21), 101_000)
    assert a == b
    nxt = bar_at(ist(3, 10, 15), 101_000)
    assert eng.on_bar(SYM, nxt) == other.on_bar(SYM, nxt)
    assert eng.emas(SYM) == other.emas(SYM)


def test_params_from_settings() -> None:
    from shared.config import StrategySettings

    assert StrategyParams.from_settings(StrategySettings()) == StrategyParams()
