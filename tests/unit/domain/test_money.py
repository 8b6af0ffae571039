from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.money import (
    ONE,
    PCT_SCALE,
    ceil_to_tick,
    floor_to_tick,
    mean_pnl_pct_exceeds,
    pnl_pct,
    pnl_pct_exceeds,
    price_above,
    price_below,
    qty_for_capital,
    scale_pct,
    to_paise,
    to_rupees,
)

prices = st.integers(min_value=100, max_value=10_000_000)
pcts = st.integers(min_value=1, max_value=50 * PCT_SCALE)
ticks = st.sampled_from([1, 5, 10, 50])


def test_constants() -> None:
    assert PCT_SCALE == 10_000 and ONE == 1_000_000


def test_to_paise_exact() -> None:
    assert to_paise("1949.05") == 194905
    assert to_paise(Decimal("0.05")) == 5
    assert to_paise(3000) == 300000
    assert to_paise("12") == 1200
    with pytest.raises(ValueError):
        to_paise("1.005")
    with pytest.raises(ValueError):
        to_paise(Decimal("NaN"))


def test_to_rupees_two_places() -> None:
    assert str(to_rupees(194905)) == "1949.05"
    assert str(to_rupees(100)) == "1.00"
    assert str(to_rupees(5)) == "0.05"
    assert str(to_rupees(-5)) == "-0.05"


def test_scale_pct() -> None:
    assert scale_pct(Decimal("2.5")) == 25_000
    assert scale_pct("0.25") == 2_500
    assert scale_pct(0.1) == 1_000
    assert scale_pct(5) == 50_000


def test_tick_rounding() -> None:
    assert floor_to_tick(194907, 5) == 194905
    assert ceil_to_tick(194907, 5) == 194910
    assert floor_to_tick(194905, 5) == ceil_to_tick(194905, 5) == 194905


def test_p1_stop_and_target_examples() -> None:
    # ₹1,000.00 entry: stop 975.00, target 1050.00 (exact, on tick)
    assert price_below(100_000, 25_000, 5) == 97_500
    assert price_above(100_000, 50_000, 5) == 105_000
    # ₹123.45: 123.45*0.975 = 120.36375 -> 120.35 ; 123.45*1.05 = 129.6225 -> 129.65
    assert price_below(12_345, 25_000, 5) == 12_035
    assert price_above(12_345, 50_000, 5) == 12_965


@settings(max_examples=200, deadline=None)
@given(prices, pcts, ticks)
def test_price_below_is_floor_of_exact(price: int, pct_s: int, tick: int) -> None:
    exact = Fraction(price) * (1 - Fraction(pct_s, ONE))
    got = price_below(price, pct_s, tick)
    assert got % tick == 0
    assert got <= exact < got + tick
    d = (Decimal(price) * (1 - Decimal(pct_s) / ONE) / tick).to_integral_value(ROUND_FLOOR)
    assert got == int(d) * tick


@settings(max_examples=200, deadline=None)
@given(prices, pcts, ticks)
def test_price_above_is_ceil_of_exact(price: int, pct_s: int, tick: int) -> None:
    exact = Fraction(price) * (1 + Fraction(pct_s, ONE))
    got = price_above(price, pct_s, tick)
    assert got % tick == 0
    assert got - tick < exact <= got
    d = (Decimal(price) * (1 + Decimal(pct_s) / ONE) / tick).to_integral_value(ROUND_CEILING)
    assert got == int(d) * tick


@settings(max_examples=200, deadline=None)
@given(prices, st.integers(min_value=1, max_value=20_000_000), pcts)
def test_pnl_pct_exceeds_exact(entry: int, price: int, pct_s: int) -> None:
    exact = Fraction(price - entry, entry) * 100
    assert pnl_pct_exceeds(entry, price, pct_s) == (exact > Fraction(pct_s, PCT_SCALE))


@settings(max_examples=200, deadline=None)
@given(prices, prices, st.integers(min_value=1, max_value=20_000_000), pcts)
def test_mean_pnl_pct_exceeds_exact(a: int, b: int, price: int, pct_s: int) -> None:
    mean = (Fraction(price - a, a) * 100 + Fraction(price - b, b) * 100) / 2
    assert mean_pnl_pct_exceeds(a, b, price, pct_s) == (mean > Fraction(pct_s, PCT_SCALE))


def test_pnl_pct_boundary_is_strict() -> None:
    # exactly +0.25% does not exceed 0.25%
    assert not pnl_pct_exceeds(100_000, 100_250, 2_500)
    assert pnl_pct_exceeds(100_000, 100_255, 2_500)
    assert pnl_pct(100_000, 100_250) == pytest.approx(0.25)


def test_qty_for_capital() -> None:
    assert qty_for_capital(300_000, 194_905) == 1
    assert qty_for_capital(300_000, 300_005) == 0
    assert qty_for_capital(300_000, 10_000) == 30
    assert qty_for_capital(300_000, 0) == 0
