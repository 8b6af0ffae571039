"""Money in integer paise and percentages as scaled integers.

Every trading rule (stops, targets, PnL triggers, quantities) is exact integer arithmetic, so a
backtest, the live strategy and a test computing the same rule by hand always agree to the paisa.
A percentage setting such as 2.5 is carried as ``pct_s = 2.5 * PCT_SCALE = 25_000``; the fraction
it stands for is ``pct_s / ONE``.
"""

from __future__ import annotations

from decimal import Decimal

PCT_SCALE = 10_000
ONE = 100 * PCT_SCALE  # 100% as a scaled percentage (1_000_000)

_HUNDRED = Decimal(100)


def _decimal(value: Decimal | str | int | float) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # a float's repr is its shortest round-trip decimal: 0.1 -> "0.1"
        return Decimal(repr(value))
    return Decimal(value)


def to_paise(rupees: Decimal | str | int) -> int:
    """Rupees to integer paise; raises ValueError on sub-paisa precision instead of rounding."""
    if isinstance(rupees, int) and not isinstance(rupees, bool):
        return rupees * 100
    d = _decimal(rupees)
    if not d.is_finite():
        raise ValueError(f"not a finite amount: {rupees!r}")
    p = d * _HUNDRED
    if p != p.to_integral_value():
        raise ValueError(f"{rupees!r} has sub-paisa precision")
    return int(p)


def to_rupees(paise: int) -> Decimal:
    """Integer paise to a Decimal with exactly two places (for display and the API)."""
    return Decimal(paise).scaleb(-2)


def scale_pct(pct: Decimal | str | float) -> int:
    """A percentage (2.5 means 2.5%) to the scaled integer the rules use (25_000)."""
    return int((_decimal(pct) * PCT_SCALE).to_integral_value())


def floor_to_tick(paise: int, tick: int) -> int:
    return paise // tick * tick


def ceil_to_tick(paise: int, tick: int) -> int:
    return -(-paise // tick) * tick


def price_below(price: int, pct_s: int, tick: int) -> int:
    """price × (1 − pct) rounded down to the tick, exactly (stops never sit above the level)."""
    return price * (ONE - pct_s) // (ONE * tick) * tick


def price_above(price: int, pct_s: int, tick: int) -> int:
    """price × (1 + pct) rounded up to the tick, exactly (targets: never below the exact level)."""
    return -(-price * (ONE + pct_s) // (ONE * tick)) * tick


def pnl_pct_exceeds(entry: int, price: int, pct_s: int) -> bool:
    """(price − entry) / entry × 100 > pct, decided exactly (entry > 0)."""
    return (price - entry) * ONE > pct_s * entry


def mean_pnl_pct_exceeds(entry_a: int, entry_b: int, price: int, pct_s: int) -> bool:
    """The simple mean of two legs' PnL% at ``price`` > pct, exactly (the P3 trigger).

    (p−a)/a + (p−b)/b > 2·pct/100  ⇔  ((p−a)·b + (p−b)·a)·ONE > 2·pct_s·a·b.
    """
    return ((price - entry_a) * entry_b + (price - entry_b) * entry_a) * ONE > (
        2 * pct_s * entry_a * entry_b
    )


def pnl_pct(entry: int, price: int) -> float:
    """PnL% for display only; rules use the exact predicates above."""
    return (price - entry) * 100.0 / entry


def qty_for_capital(capital_paise: int, price: int) -> int:
    """floor(capital / price); 0 when the price is not positive or exceeds the capital."""
    if price <= 0 or capital_paise <= 0:
        return 0
    return capital_paise // price
