"""The NSE session calendar on event time (epoch milliseconds, UTC; IST is UTC+05:30, no DST).

Bars are aligned to the session open (09:15 IST) and the last bar is cut at the close
(15:15–15:30). Nothing here reads a clock: every question is asked about a timestamp that came in
on an event. With ``enabled=False`` (data that is not NSE intraday) every time is tradeable, bars
align to the IST epoch and there is no cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

IST_OFFSET_MS = 19_800_000  # +05:30
MINUTE_MS = 60_000
DAY_MS = 86_400_000
EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1)


def ist_ordinal(ts_ms: int) -> int:
    """The IST calendar date of ``ts_ms`` as a proleptic ordinal (date.toordinal())."""
    return (ts_ms + IST_OFFSET_MS) // DAY_MS + EPOCH_ORDINAL


def ist_datetime(ts_ms: int) -> datetime:
    """Naive IST wall time of ``ts_ms`` (for display and ids; pure arithmetic, no tz database)."""
    return _EPOCH + timedelta(milliseconds=ts_ms + IST_OFFSET_MS)


def ms_from_ist(dt: datetime) -> int:
    """Epoch ms of a naive IST wall time (naive timestamps in NSE data are IST, DESIGN §9)."""
    delta = dt - _EPOCH
    return (delta.days * DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000) - IST_OFFSET_MS


@dataclass(frozen=True, slots=True)
class SessionRules:
    """When the market is open, where bars start and end, and the entry cut-off."""

    timeframe_minutes: int = 15
    open_minute: int = 9 * 60 + 15
    close_minute: int = 15 * 60 + 30
    entry_cutoff_minutes: int = 30
    enabled: bool = True
    holidays: frozenset[int] = frozenset()

    # --- calendar -------------------------------------------------------------------------------

    def is_trading_day(self, ist_date_ordinal: int) -> bool:
        """Mon–Fri and not an exchange holiday (with the session off, every day)."""
        if not self.enabled:
            return True
        return (ist_date_ordinal - 1) % 7 < 5 and ist_date_ordinal not in self.holidays

    def session_open_ms(self, ist_date_ordinal: int) -> int:
        return (ist_date_ordinal - EPOCH_ORDINAL) * DAY_MS + self.open_minute * MINUTE_MS - (
            IST_OFFSET_MS
        )

    def session_close_ms(self, ist_date_ordinal: int) -> int:
        return (ist_date_ordinal - EPOCH_ORDINAL) * DAY_MS + self.close_minute * MINUTE_MS - (
            IST_OFFSET_MS
        )

    def cutoff_ms(self, ist_date_ordinal: int) -> int:
        """The entry cut-off of that day (15:00 IST by default)."""
        return self.session_close_ms(ist_date_ordinal) - self.entry_cutoff_minutes * MINUTE_MS

    def in_session(self, ts_ms: int) -> bool:
        """09:15 <= t < 15:30 IST on a trading day."""
        if not self.enabled:
            return True
        local = ts_ms + IST_OFFSET_MS
        day = local // DAY_MS
        if not self.is_trading_day(day + EPOCH_ORDINAL):
            return False
        minute_ms = local - day * DAY_MS
        return self.open_minute * MINUTE_MS <= minute_ms < self.close_minute * MINUTE_MS

    def next_session_open_ms(self, ts_ms: int) -> int:
        """The first session open strictly after ``ts_ms``."""
        day = ist_ordinal(ts_ms)
        while True:
            if self.is_trading_day(day):
                opening = self.session_open_ms(day)
                if opening > ts_ms:
                    return opening
            day += 1

    def previous_trading_days(self, ist_date_ordinal: int, count: int) -> list[int]:
        """The ``count`` trading days before ``ist_date_ordinal`` (exclusive), oldest first."""
        days: list[int] = []
        day = ist_date_ordinal - 1
        while len(days) < count:
            if self.is_trading_day(day):
                days.append(day)
            day -= 1
        days.reverse()
        return days

    # --- bars -----------------------------------------------------------------------------------

    @property
    def timeframe_ms(self) -> int:
        return self.timeframe_minutes * MINUTE_MS

    def bar_start(self, ts_ms: int) -> int | None:
        """Start of the bar holding ``ts_ms``, or None outside the session (weekend, holiday)."""
        tf = self.timeframe_minutes * MINUTE_MS
        local = ts_ms + IST_OFFSET_MS
        if not self.enabled:
            return local - local % tf - IST_OFFSET_MS
        day = local // DAY_MS
        if not self.is_trading_day(day + EPOCH_ORDINAL):
            return None
        day_ms = day * DAY_MS
        minute_ms = local - day_ms
        opening = self.open_minute * MINUTE_MS
        if minute_ms < opening or minute_ms >= self.close_minute * MINUTE_MS:
            return None
        return day_ms + opening + (minute_ms - opening) // tf * tf - IST_OFFSET_MS

    def bar_end(self, start_ms: int) -> int:
        """start + timeframe, but never past the session close (the last bar is 15:15–15:30)."""
        end = start_ms + self.timeframe_minutes * MINUTE_MS
        if not self.enabled:
            return end
        close = self.session_close_ms(ist_ordinal(start_ms))
        return end if end < close else close

    def session_bar_starts(self, ist_date_ordinal: int) -> list[int]:
        """Every bar start of one trading day, in order (empty on a non-trading day)."""
        if not self.enabled or not self.is_trading_day(ist_date_ordinal):
            return []
        tf = self.timeframe_minutes * MINUTE_MS
        first = self.session_open_ms(ist_date_ordinal)
        return list(range(first, self.session_close_ms(ist_date_ordinal), tf))

    # --- entries --------------------------------------------------------------------------------

    def entry_allowed(self, bar_end_ms: int) -> bool:
        """A signal may come from a bar that closes strictly before the cut-off (15:00)."""
        if not self.enabled:
            return True
        return bar_end_ms < self.cutoff_ms(ist_ordinal(bar_end_ms - 1))

    def entry_allowed_at(self, ts_ms: int) -> bool:
        """P2/P3 on a tick: inside the session and before that day's cut-off."""
        if not self.enabled:
            return True
        return self.in_session(ts_ms) and ts_ms < self.cutoff_ms(ist_ordinal(ts_ms))

    def format_ladder_key(self, bar_start_ms: int) -> str:
        """'YYYYMMDDHHMM' in IST: the ladder part of every intent id."""
        return ist_datetime(bar_start_ms).strftime("%Y%m%d%H%M")


def ist_date(ist_date_ordinal: int) -> date:
    return date.fromordinal(ist_date_ordinal)
