from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.candles import Bar, CandleAggregator
from shared.domain.session import SessionRules, ms_from_ist

RULES = SessionRules()
OPEN = ms_from_ist(datetime(2024, 6, 3, 9, 15))
MIN = 60_000
BAR = 15 * MIN


def test_ohlc_and_close_on_next_bar_tick() -> None:
    agg = CandleAggregator(RULES)
    assert agg.on_tick(OPEN, 100_00, 1000) is None
    assert agg.on_tick(OPEN + MIN, 102_00, 1500) is None
    assert agg.on_tick(OPEN + 2 * MIN, 99_00, 1700) is None
    assert agg.on_tick(OPEN + 14 * MIN, 101_00, 2000) is None
    bar = agg.on_tick(OPEN + BAR, 101_05, 2100)  # at the end: closes it, opens the next
    assert bar == Bar(OPEN, OPEN + BAR, 100_00, 102_00, 99_00, 101_00, 2000)
    cur = agg.current
    assert cur is not None and cur.start_ms == OPEN + BAR and cur.open == 101_05
    # the second bar's volume counts only its own increase
    assert cur.volume == 100
    agg.on_tick(OPEN + BAR + MIN, 101_10, 2600)
    assert agg.current is not None and agg.current.volume == 600


def test_volume_tick_count_without_feed_volume() -> None:
    agg = CandleAggregator(RULES)
    for i in range(7):
        agg.on_tick(OPEN + i * 1000, 100_00, None)
    bar = agg.on_clock(OPEN + BAR + 2000)
    assert bar is not None and bar.volume == 7


def test_mid_day_start_does_not_count_earlier_volume() -> None:
    agg = CandleAggregator(RULES)
    agg.on_tick(OPEN + 3 * BAR + 5, 100_00, 1_000_000)
    agg.on_tick(OPEN + 3 * BAR + 10, 100_00, 1_000_300)
    assert agg.current is not None and agg.current.volume == 300


def test_grace_close() -> None:
    agg = CandleAggregator(RULES, grace_ms=2000)
    agg.on_tick(OPEN + 5, 100_00, None)
    assert agg.on_clock(OPEN + BAR) is None
    assert agg.on_clock(OPEN + BAR + 1999) is None
    bar = agg.on_clock(OPEN + BAR + 2000)
    assert bar is not None and bar.end_ms == OPEN + BAR
    assert agg.on_clock(OPEN + BAR + 5000) is None
    # a straggler inside the closed bar is dropped, not a second bar
    assert agg.on_tick(OPEN + BAR - 1, 100_00, None) is None
    assert agg.current is None and agg.dropped_late == 1


def test_no_invented_bars_over_gaps() -> None:
    agg = CandleAggregator(RULES)
    agg.on_tick(OPEN + 1, 100_00, None)
    bar = agg.on_tick(OPEN + 5 * BAR + 7, 100_50, None)  # 4 empty bars in between
    assert bar is not None and bar.start_ms == OPEN
    assert agg.current is not None and agg.current.start_ms == OPEN + 5 * BAR
    bar2 = agg.flush()
    assert bar2 is not None and bar2.start_ms == OPEN + 5 * BAR and agg.current is None


def test_out_of_order_dropped() -> None:
    agg = CandleAggregator(RULES)
    agg.on_tick(OPEN + 10_000, 100_00, None)
    assert agg.on_tick(OPEN + 9_999, 50_00, None) is None
    assert agg.dropped_late == 1
    assert agg.current is not None and agg.current.low == 100_00
    agg.on_tick(OPEN + 10_000, 100_05, None)  # same timestamp is not late
    assert agg.current.close == 100_05 and agg.dropped_late == 1


def test_outside_session_dropped_and_closes_last_bar() -> None:
    agg = CandleAggregator(RULES)
    assert agg.on_tick(OPEN - 1, 100_00, None) is None
    assert agg.dropped_outside == 1 and agg.current is None
    last = OPEN + 24 * BAR
    agg.on_tick(last + 5, 100_00, None)
    assert agg.current is not None and agg.current.end_ms == last + BAR  # 15:15-15:30
    bar = agg.on_tick(last + BAR, 100_00, None)  # 15:30:00 is outside, but past the end
    assert bar is not None and bar.start_ms == last and agg.current is None
    assert agg.dropped_outside == 2


@st.composite
def tick_streams(draw: st.DrawFn) -> list[tuple[int, int]]:
    n = draw(st.integers(min_value=1, max_value=200))
    gaps = draw(st.lists(st.integers(min_value=-5_000, max_value=400_000), min_size=n, max_size=n))
    pxs = draw(st.lists(st.integers(min_value=1, max_value=1_000_000), min_size=n, max_size=n))
    out, t = [], OPEN - 60_000
    for g, p in zip(gaps, pxs, strict=True):
        t += g
        out.append((t, p))
    return out


@settings(max_examples=200, deadline=None)
@given(tick_streams())
def test_bar_invariants(ticks: list[tuple[int, int]]) -> None:
    agg = CandleAggregator(RULES)
    bars: list[Bar] = []
    accepted = 0
    last = None
    for ts, px in ticks:
        b = agg.on_tick(ts, px, None)
        if b is not None:
            bars.append(b)
        if (last is None or ts >= last) and RULES.in_session(ts):
            accepted += 1
        if last is None or ts >= last:
            last = ts
    tail = agg.flush()
    if tail is not None:
        bars.append(tail)
    for b in bars:
        assert b.high >= b.open and b.high >= b.close
        assert b.low <= b.open and b.low <= b.close
        assert b.start_ms < b.end_ms
        assert RULES.bar_start(b.start_ms) == b.start_ms
    starts = [b.start_ms for b in bars]
    assert starts == sorted(set(starts))
    assert sum(b.volume for b in bars) == accepted


def test_day_volume_restarts_each_session() -> None:
    agg = CandleAggregator(RULES)
    agg.on_tick(OPEN + 24 * BAR + 5, 100_00, 9_000_000)
    agg.on_tick(OPEN + 24 * BAR + 10, 100_00, 9_000_500)
    tomorrow = OPEN + 86_400_000
    last = agg.on_tick(tomorrow, 101_00, 1_200)  # the new day's first tick, pre-open volume in it
    assert last is not None and last.volume == 500
    assert agg.current is not None and agg.current.volume == 1_200
