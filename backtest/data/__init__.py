"""Real market data for tests and examples, converted by ``python -m backtest.convert_samples``
from the bars inside the ``backtesting`` package: GOOG (daily) and EURUSD (hourly, US cents)."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).resolve().parent


def sample(name: str) -> Path:
    """The CSV of one sample symbol (``GOOG`` or ``EURUSD``)."""
    return SAMPLES / f"{name}.csv"
