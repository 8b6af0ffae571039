from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.money import ONE, price_below
from shared.domain.signals import entry_signal
from shared.domain.trailing import trail

# --- entry signal ---------------------------------------------------------------------------


def test_cross_up_above_trend() -> None:
    assert entry_signal((99.0, 100.0, 90.0, 80.0), (101.0, 100.5, 91.0, 81.0), 102.0)


def test_equal_previous_counts_as_below() -> None:
    assert entry_signal((100.0, 100.0, 90.0, 80.0), (101.0, 100.5, 91.0, 81.0), 102.0)


def test_no_cross_when_already_above() -> None:
    assert not entry_signal((100.1, 100.0, 90.0, 80.0), (101.0, 100.5, 91.0, 81.0), 102.0)


def test_no_signal_when_not_strictly_above_now() -> None:
    assert not entry_signal((99.0, 100.0, 90.0, 80.0), (100.5, 100.5, 91.0, 81.0), 102.0)


def test_trend_filters() -> None:
    prev = (99.0, 100.0, 90.0, 80.0)
    assert not entry_signal(prev, (101.0, 100.5, 91.0, 81.0), 91.0)  # close == ema50
    assert not entry_signal(prev, (101.0, 100.5, 91.0, 91.0), 102.0)  # ema50 == ema200
    assert not entry_signal(prev, (101.0, 100.5, 80.0, 81.0), 102.0)  # ema50 < ema200


def test_undefined_emas_give_no_signal() -> None:
    cur = (101.0, 100.5, 91.0, 81.0)
    assert not entry_signal(None, cur, 102.0)
    assert not entry_signal((None, 100.0, 90.0, 80.0), cur, 102.0)
    assert not entry_signal((99.0, 100.0, None, None), (101.0, 100.5, 91.0, None), 102.0)


# --- trailing -------------------------------------------------------------------------------

STOP, MIN_STEP = 25_000, 1_000  # 2.5%, 0.1%


def test_trail_from_entry() -> None:
    entry = 100_000
    stop = price_below(entry, STOP, 5)  # 97_500
    # a rise to 100_050 -> candidate 97_545 -> floor 97_545: 45 paise >= tick but < 0.1% (97.5)
    assert trail(stop, entry, 100_050, STOP, 5, MIN_STEP) == (100_050, stop)
    # a rise to 100_110 -> candidate 97_607.25 -> 97_605 ; 97_605*1e6 >= 97_500*1.001e6 (97_597.5)
    assert trail(stop, 100_050, 100_110, STOP, 5, MIN_STEP) == (100_110, 97_605)


def test_trail_never_down_and_ignores_lower_prices() -> None:
    assert trail(97_605, 100_110, 90_000, STOP, 5, MIN_STEP) == (100_110, 97_605)


def test_trail_needs_a_full_tick() -> None:
    # with a zero minimum step, the one-tick rule alone decides
    stop = 975
    assert trail(stop, 1000, 1004, STOP, 5, 0) == (1004, stop)  # 978.9 -> 975: no step
    assert trail(stop, 1000, 1006, STOP, 5, 0) == (1006, 980)


def test_trail_rounds_down_to_tick() -> None:
    highest, stop = trail(0, 0, 123_457, STOP, 10, MIN_STEP)
    assert highest == 123_457 and stop % 10 == 0 and stop == 120_370  # 120_370.575


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1_000, max_value=1_000_000),
    st.lists(st.integers(min_value=-3_000, max_value=3_000), min_size=1, max_size=200),
    st.sampled_from([1, 5, 10]),
    st.integers(min_value=1, max_value=50 * 10_000),
    st.integers(min_value=0, max_value=5 * 10_000),
)
def test_stop_never_moves_down(
    entry: int, moves: list[int], tick: int, pct: int, step: int
) -> None:
    stop = price_below(entry, pct, tick)
    highest = entry
    price = entry
    for m in moves:
        price = max(tick, price + m)
        new_highest, new_stop = trail(stop, highest, price, pct, tick, step)
        assert new_stop >= stop
        assert new_highest == max(highest, price)
        if new_stop != stop:
            assert new_stop % tick == 0
            assert new_stop - stop >= tick
            assert new_stop * ONE >= stop * (ONE + step)
            assert new_stop == price_below(new_highest, pct, tick)
        assert new_stop <= new_highest
        highest, stop = new_highest, new_stop
