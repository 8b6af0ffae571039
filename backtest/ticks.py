"""The intra-bar path of DESIGN §9: one bar becomes four ticks.

Order: open, low, high, close when close >= open, else open, high, low, close. The ticks carry
times inside the bar, ``start + k × (end − start) / 4`` for k = 0..3, so a candle aggregator fed
with them rebuilds the same bar, and only the first is the bar's open (a gap exits there).

The backtester and the ``replay`` feed both take their ticks from here, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
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


def bar_steps(
    bars: Mapping[str, Sequence[Bar]], spans: Mapping[str, tuple[int, int]] | None = None
) -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """The order of a multi-symbol replay: (bar start, [(symbol, bar index), …]) per bar time,
    times ascending, symbols alphabetical within a time (DESIGN §9). ``spans`` limits each
    symbol to bars [lo, hi).

    Within a step the backtester plays tick k of every listed bar before tick k + 1, then the
    closes; a lock-step replay feed emitting in this order drives the services identically.
    """
    order = sorted(bars)
    lims = {s: (spans or {}).get(s, (0, len(bars[s]))) for s in order}
    if len(order) == 1:
        sym = order[0]
        one = bars[sym]
        for i in range(*lims[sym]):
            yield one[i].start_ms, [(sym, i)]
        return
    events = sorted((bars[s][i].start_ms, s, i) for s in order for i in range(*lims[s]))
    group: list[tuple[str, int]] = []
    current = 0
    for start, sym, i in events:
        if group and start != current:
            yield current, group
            group = []
        current = start
        group.append((sym, i))
    if group:
        yield current, group
