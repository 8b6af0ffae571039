from __future__ import annotations

from datetime import date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.session import SessionRules, ist_datetime, ist_ordinal, ms_from_ist

RULES = SessionRules()
MON = date(2024, 6, 3)  # a Monday


def ist(y: int, mo: int, d: int, h: int, mi: int, s: int = 0, ms: int = 0) -> int:
    return ms_from_ist(datetime(y, mo, d, h, mi, s, ms * 1000))


def test_ist_roundtrip() -> None:
    ts = ist(2024, 6, 3, 9, 15)
    assert ts == 1717386300000  # 2024-06-03T03:45:00Z
    assert ist_datetime(ts) == datetime(2024, 6, 3, 9, 15)
    assert ist_ordinal(ts) == MON.toordinal()


def test_bar_alignment() -> None:
    assert RULES.bar_start(ist(2024, 6, 3, 9, 15)) == ist(2024, 6, 3, 9, 15)
    assert RULES.bar_start(ist(2024, 6, 3, 9, 29, 59, 999)) == ist(2024, 6, 3, 9, 15)
    assert RULES.bar_start(ist(2024, 6, 3, 9, 30)) == ist(2024, 6, 3, 9, 30)
    assert RULES.bar_start(ist(2024, 6, 3, 15, 29, 59)) == ist(2024, 6, 3, 15, 15)
    assert RULES.bar_end(ist(2024, 6, 3, 15, 15)) == ist(2024, 6, 3, 15, 30)
    assert RULES.bar_end(ist(2024, 6, 3, 9, 15)) == ist(2024, 6, 3, 9, 30)


def test_outside_session() -> None:
    assert RULES.bar_start(ist(2024, 6, 3, 9, 14, 59)) is None
    assert RULES.bar_start(ist(2024, 6, 3, 15, 30)) is None
    assert RULES.bar_start(ist(2024, 6, 8, 10, 0)) is None  # Saturday
    assert not RULES.in_session(ist(2024, 6, 9, 10, 0))  # Sunday
    hol = SessionRules(holidays=frozenset({MON.toordinal()}))
    assert hol.bar_start(ist(2024, 6, 3, 10, 0)) is None
    assert RULES.in_session(ist(2024, 6, 3, 15, 29, 59, 999))


def test_uneven_timeframe_last_bar_cut_at_close() -> None:
    r = SessionRules(timeframe_minutes=60)
    assert r.bar_start(ist(2024, 6, 3, 15, 20)) == ist(2024, 6, 3, 15, 15)
    assert r.bar_end(ist(2024, 6, 3, 15, 15)) == ist(2024, 6, 3, 15, 30)


def test_session_bar_starts() -> None:
    starts = RULES.session_bar_starts(MON.toordinal())
    assert len(starts) == 25
    assert starts[0] == ist(2024, 6, 3, 9, 15) and starts[-1] == ist(2024, 6, 3, 15, 15)


def test_entry_cutoff() -> None:
    assert RULES.entry_allowed(ist(2024, 6, 3, 14, 45))
    assert not RULES.entry_allowed(ist(2024, 6, 3, 15, 0))  # closes at the cut-off
    assert not RULES.entry_allowed(ist(2024, 6, 3, 15, 30))
    assert RULES.entry_allowed_at(ist(2024, 6, 3, 14, 59, 59, 999))
    assert not RULES.entry_allowed_at(ist(2024, 6, 3, 15, 0))
    assert not RULES.entry_allowed_at(ist(2024, 6, 3, 9, 0))
    off = SessionRules(enabled=False)
    assert off.entry_allowed(ist(2024, 6, 3, 15, 30))
    assert off.entry_allowed_at(ist(2024, 6, 8, 23, 0))


def test_disabled_session_aligns_to_ist_epoch() -> None:
    off = SessionRules(enabled=False, timeframe_minutes=60)
    assert off.bar_start(ist(2024, 6, 8, 23, 59)) == ist(2024, 6, 8, 23, 0)
    assert off.bar_end(ist(2024, 6, 8, 23, 0)) == ist(2024, 6, 9, 0, 0)


def test_next_session_open_and_previous_days() -> None:
    fri = ist(2024, 6, 7, 16, 0)
    assert RULES.next_session_open_ms(fri) == ist(2024, 6, 10, 9, 15)
    assert RULES.next_session_open_ms(ist(2024, 6, 3, 9, 0)) == ist(2024, 6, 3, 9, 15)
    assert RULES.next_session_open_ms(ist(2024, 6, 3, 9, 15)) == ist(2024, 6, 4, 9, 15)
    days = RULES.previous_trading_days(MON.toordinal(), 3)
    assert [date.fromordinal(d) for d in days] == [
        date(2024, 5, 29), date(2024, 5, 30), date(2024, 5, 31)
    ]


def test_ladder_key() -> None:
    assert RULES.format_ladder_key(ist(2024, 6, 3, 14, 30)) == "202406031430"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1_600_000_000_000, max_value=1_900_000_000_000))
def test_bar_contains_its_ticks(ts: int) -> None:
    start = RULES.bar_start(ts)
    assert (start is not None) == RULES.in_session(ts)
    if start is not None:
        end = RULES.bar_end(start)
        assert start <= ts < end
        assert RULES.bar_start(start) == start
        assert (start - RULES.session_open_ms(ist_ordinal(ts))) % (15 * 60_000) == 0
