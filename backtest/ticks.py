"""The intra-bar path of DESIGN §9: one bar becomes four ticks.

Order: open, low, high, close when close >= open, else open, high, low, close. The ticks carry
times inside the bar, ``start + k × (end − start) / 4`` for k = 0..3, so a candle aggregator fed
with them rebuilds the same bar, and only the first is the bar's open (a gap exits there).

The backtester and the ``replay`` feed both take their ticks from here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from shared.domain.candles import Bar


class BarTick(NamedTuple):
    ts_ms: int
    price: int  # paise
    is_bar_open: bool


TickPath = tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]


def tick_path(bar: Bar) -> TickPath:
    """The four (ts_ms, price) of a bar, in the §9 order (the first is the open)."""
    start = bar.start_ms
    step = (bar.end_ms - start) // 4
    if bar.close >= bar.open:
        second, third = bar.low, bar.high
    else:
        second, third = bar.high, bar.low
    return (
        (start, bar.open),
        (start + step, second),
        (start + 2 * step, third),
        (start + 3 * step, bar.close),
    )


def replay_ticks(bar: Bar) -> Iterator[BarTick]:
    """Yield the bar's four ticks (what the replay feed publishes before the bar's close)."""
    for k, (ts_ms, price) in enumerate(tick_path(bar)):
        yield BarTick(ts_ms, price, k == 0)
