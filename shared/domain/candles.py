"""Ticks to session-aligned bars (DESIGN §2), one aggregator per instrument.

open = first tick, high/low = extremes, close = last tick; volume = increase of the cumulative day
volume over the bar, or the tick count when the feed carries no volume. A bar closes when a tick at
or past its end arrives, or when the feed clock passes its end plus a grace. Bars with no ticks
are never invented; ticks older than the last one (or inside a bar already closed) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.session import DAY_MS, EPOCH_ORDINAL, IST_OFFSET_MS, SessionRules


@dataclass(slots=True)
class Bar:
    start_ms: int
    end_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int


class CandleAggregator:
    """Builds the bars of one instrument from its ticks (pure; time comes in on the ticks)."""

    __slots__ = (
        "rules",
        "grace_ms",
        "dropped_outside",
        "dropped_late",
        "_cur",
        "_last_ts",
        "_closed_until",
        "_vol_base",
        "_last_vol",
        "_last_vol_day",
    )

    def __init__(self, rules: SessionRules, grace_ms: int = 2000) -> None:
        self.rules = rules
        self.grace_ms = grace_ms
        self.dropped_outside = 0
        self.dropped_late = 0
        self._cur: Bar | None = None
        self._last_ts: int | None = None
        self._closed_until = -(1 << 62)  # end of the last bar closed: older ticks are late
        self._vol_base = 0  # cumulative day volume before the current bar
        self._last_vol: int | None = None  # cumulative day volume at the last accepted tick
        self._last_vol_day = -1  # IST day index of _last_vol

    @property
    def current(self) -> Bar | None:
        """The bar being built (not yet closed)."""
        return self._cur

    def on_tick(self, ts_ms: int, price: int, day_volume: int | None) -> Bar | None:
        """Add a tick; return the bar this tick closed, if it closed one."""
        last = self._last_ts
        if last is not None and ts_ms < last:
            self.dropped_late += 1
            return None
        cur = self._cur
        if cur is not None and ts_ms < cur.end_ms:  # fast path: same bar
            self._last_ts = ts_ms
            if price > cur.high:
                cur.high = price
            elif price < cur.low:
                cur.low = price
            cur.close = price
            if day_volume is None:
                cur.volume += 1
            else:
                inc = day_volume - self._vol_base
                if inc > cur.volume:
                    cur.volume = inc
                self._last_vol = day_volume
            return None
        if ts_ms < self._closed_until:
            self.dropped_late += 1
            return None
        self._last_ts = ts_ms
        closed = cur
        if cur is not None:
            self._cur = None
            self._closed_until = cur.end_ms
        start = self.rules.bar_start(ts_ms)
        if start is None:
            self.dropped_outside += 1
            return closed
        day = (ts_ms + IST_OFFSET_MS) // DAY_MS
        if day_volume is None:
            volume = 1
        else:
            if self._last_vol is not None and self._last_vol_day == day:
                base = self._last_vol
            elif not self.rules.enabled or start != self.rules.session_open_ms(
                day + EPOCH_ORDINAL
            ):
                # first tick seen mid-day (a restart): we cannot know what traded before it
                base = day_volume
            else:
                base = 0  # the session's first bar: the day's volume so far is this bar's
            if day_volume < base:
                base = day_volume
            self._vol_base = base
            self._last_vol = day_volume
            self._last_vol_day = day
            volume = day_volume - base
        self._cur = Bar(start, self.rules.bar_end(start), price, price, price, price, volume)
        return closed

    def on_clock(self, now_ms: int) -> Bar | None:
        """Close the current bar once the feed clock passes its end plus the grace."""
        cur = self._cur
        if cur is not None and now_ms >= cur.end_ms + self.grace_ms:
            self._cur = None
            self._closed_until = cur.end_ms
            return cur
        return None

    def flush(self) -> Bar | None:
        """Close the current bar now (end of data); None when no bar is open."""
        cur = self._cur
        if cur is not None:
            self._cur = None
            self._closed_until = cur.end_ms
        return cur
