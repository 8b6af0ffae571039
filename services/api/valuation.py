"""Valuing open legs at the last traded price (pure; DESIGN.md §3: PnL% gross of charges)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

_HUNDRED = Decimal(100)
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class Valuation:
    ltp: Decimal
    pnl: Decimal
    pnl_pct: float


def value_leg(entry_price: Decimal | None, qty: int, ltp_paise: int | None) -> Valuation | None:
    """PnL of ``qty`` bought at ``entry_price`` rupees, marked at ``ltp_paise``; None without
    either price. PnL is rounded to the paisa; PnL% = (ltp - entry) / entry x 100."""
    if entry_price is None or ltp_paise is None or entry_price <= 0:
        return None
    ltp = Decimal(ltp_paise) / _HUNDRED
    pnl = ((ltp - entry_price) * qty).quantize(_CENT)
    pnl_pct = float((ltp - entry_price) / entry_price * _HUNDRED)
    return Valuation(ltp=ltp, pnl=pnl, pnl_pct=round(pnl_pct, 4))


def realised_pnl(
    pnl: Decimal | None, entry_price: Decimal | None, exit_price: Decimal | None, qty: int
) -> Decimal:
    """A closed leg's PnL: the stored figure, else computed from its prices (0 when unknown)."""
    if pnl is not None:
        return pnl
    if entry_price is None or exit_price is None:
        return Decimal(0)
    return ((exit_price - entry_price) * qty).quantize(_CENT)
