from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.indicators import Ema, EmaSet


def direct_ema(closes: list[float], n: int) -> list[float | None]:
    """TA-Lib convention computed independently, in exact rational arithmetic."""
    out: list[float | None] = []
    k = Fraction(2, n + 1)
    value: Fraction | None = None
    for i, c in enumerate(closes):
        if i + 1 < n:
            out.append(None)
            continue
        if i + 1 == n:
            value = sum((Fraction(x) for x in closes[:n]), Fraction(0)) / n
        else:
            assert value is not None
            value = value + k * (Fraction(c) - value)
        out.append(float(value))
    return out


def close_enough(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-9 * max(abs(b), 1.0)


def test_ema_seed_is_sma_and_none_before() -> None:
    e = Ema(3)
    assert e.update(1.0) is None and e.update(2.0) is None
    assert e.update(6.0) == pytest.approx(3.0)
    assert e.update(5.0) == pytest.approx(4.0)  # 3 + 0.5*(5-3)
    assert e.count == 4


def test_ta_lib_reference_values() -> None:
    # TA-Lib EMA(5) on 1..10: first value at index 4 = 3.0, then +1 each step (linear input)
    closes = [float(i) for i in range(1, 11)]
    e = Ema(5)
    out = [e.update(c) for c in closes]
    assert out[:4] == [None] * 4
    assert out[4:] == pytest.approx([3.0, 4.0, 5.0, 6.0, 7.0, 8.0])


closes_st = st.lists(
    st.integers(min_value=5_000, max_value=250_000).map(float), min_size=1, max_size=300
)


@settings(max_examples=200, deadline=None)
@given(closes_st, st.sampled_from([1, 2, 9, 21, 50, 200]))
def test_ema_matches_direct_computation(closes: list[float], n: int) -> None:
    e = Ema(n)
    got = [e.update(c) for c in closes]
    want = direct_ema(closes, n)
    assert all(close_enough(a, b) for a, b in zip(got, want, strict=True))


@settings(max_examples=50, deadline=None)
@given(closes_st, st.integers(min_value=0, max_value=300))
def test_emaset_state_roundtrip_and_warm(closes: list[float], cut: int) -> None:
    full = EmaSet()
    full.warm(closes)
    head = EmaSet()
    head.warm(closes[:cut])
    resumed = EmaSet.from_state(head.state())
    resumed.warm(closes[cut:])
    assert resumed.values == full.values
    assert full.count == len(closes)
    for v, n in zip(full.values, (9, 21, 50, 200), strict=True):
        assert close_enough(v, direct_ema(closes, n)[-1])


def test_bad_period() -> None:
    with pytest.raises(ValueError):
        Ema(0)
