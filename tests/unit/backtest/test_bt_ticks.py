"""The §9 intra-bar path and the bar loader."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.bars import (
    DataError,
    bar_end,
    infer_tick,
    infer_timeframe_ms,
    parse_ms,
    parse_paise,
    read_csv,
)
from backtest.ticks import BarTick, replay_ticks, tick_path
from shared.domain.candles import Bar, CandleAggregator
from shared.domain.session import SessionRules, ms_from_ist

OFF = SessionRules(enabled=False)


def test_up_bar_goes_open_low_high_close() -> None:
    bar = Bar(0, 900_000, 100, 130, 90, 120, 5)
    assert list(replay_ticks(bar)) == [BarTick(0, 100, True), BarTick(225_000, 90, False),
                                       BarTick(450_000, 130, False), BarTick(675_000, 120, False)]


def test_down_bar_goes_open_high_low_close() -> None:
    bar = Bar(0, 900_000, 100, 130, 90, 95, 5)
    assert [p for _, p in tick_path(bar)] == [100, 130, 90, 95]


def test_flat_bar_is_an_up_bar() -> None:
    assert [p for _, p in tick_path(Bar(0, 4, 7, 9, 6, 7, 1))] == [7, 6, 9, 7]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10_000), st.integers(0, 500), st.integers(0, 500), st.integers(0, 1000),
       st.integers(1, 400))
def test_ticks_rebuild_their_bar(low: int, up: int, down: int, span: int, minutes: int) -> None:
    """A candle aggregator fed with a bar's ticks closes exactly that bar (the replay feed)."""
    high = low + span
    o = min(high, low + up)
    c = max(low, high - down)
    rules = SessionRules(timeframe_minutes=minutes, enabled=False)
    start = rules.bar_start(1_717_386_300_000)
    assert start is not None
    bar = Bar(start, start + minutes * 60_000, o, high, low, c, 4)
    agg = CandleAggregator(rules)
    for ts, price, _ in replay_ticks(bar):
        assert start <= ts < bar.end_ms
        agg.on_tick(ts, price, None)
    rebuilt = agg.flush()
    assert rebuilt is not None
    assert (rebuilt.open, rebuilt.high, rebuilt.low, rebuilt.close) == (o, high, low, c)


def test_timestamps_naive_is_ist_offsets_are_honoured() -> None:
    assert parse_ms("2024-06-03 09:15:00") == ms_from_ist(datetime(2024, 6, 3, 9, 15))
    assert parse_ms("2024-06-03T09:15:00+05:30") == parse_ms("2024-06-03 09:15")
    assert parse_ms("2024-06-03T03:45:00Z") == parse_ms("2024-06-03 09:15")
    assert parse_ms("2024-06-03") == ms_from_ist(datetime(2024, 6, 3))
    assert parse_ms("1717386300") == parse_ms("1717386300000") == parse_ms("2024-06-03 09:15")
    with pytest.raises(DataError):
        parse_ms("June 3rd")


def test_prices_to_paise() -> None:
    assert parse_paise("1234.5") == (123_450, False)
    assert parse_paise("7") == (700, False)
    assert parse_paise("0.05") == (5, False)
    assert parse_paise("1.07219") == (107, True)
    assert parse_paise("1e3") == (100_000, False)


def test_tick_and_timeframe_inference() -> None:
    bars = [Bar(0, 1, 100_005, 100_010, 100_000, 100_005, 1)]
    assert infer_tick(bars) == 5
    assert infer_tick([Bar(0, 1, 10_001, 10_002, 10_000, 10_001, 1)]) == 1
    day = 86_400_000
    assert infer_timeframe_ms([0, day, 2 * day, 5 * day, 6 * day], 60_000) == day


def test_last_bar_of_the_session_ends_at_the_close() -> None:
    rules = SessionRules()
    start = ms_from_ist(datetime(2024, 6, 3, 15, 15))
    assert bar_end(start, 15 * 60_000, rules) == ms_from_ist(datetime(2024, 6, 3, 15, 30))
    hourly = ms_from_ist(datetime(2024, 6, 3, 15, 15))
    assert bar_end(hourly, 60 * 60_000, rules) == ms_from_ist(datetime(2024, 6, 3, 15, 30))


def test_csv_keeps_stamps_and_sorts(tmp_path: Path) -> None:
    path = tmp_path / "ABC.csv"
    path.write_text("Timestamp,Open,High,Low,Close,Volume\n"
                    "2024-06-03 09:30:00,101,102,100,101.5,10\n"
                    "2024-06-03 09:15:00,100,101,99.95,101,20\n")
    s = read_csv(path, SessionRules())
    assert s.symbol == "ABC" and s.stamps == ["2024-06-03 09:15:00", "2024-06-03 09:30:00"]
    assert [b.close for b in s.bars] == [10_100, 10_150]
    assert s.tick == 5 and s.timeframe_ms == 900_000


def test_csv_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text("timestamp,open,high,low,close\n2024-06-03,1,1,1,1\n")
    with pytest.raises(DataError, match="volume"):
        read_csv(path, OFF)
    path.write_text("timestamp,open,high,low,close,volume\n2024-06-03,1,x,1,1,1\n")
    with pytest.raises(DataError, match="X.csv:2"):
        read_csv(path, OFF)
