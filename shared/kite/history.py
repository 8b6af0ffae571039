"""Historical candles: a seeded pre-history before the sim's first day plus the bars it records.

The pre-history ends exactly at each instrument's first-day reference price, so indicators warmed
from ``historical_data`` continue smoothly into the live simulated session.
"""

from __future__ import annotations

import importlib
import math
import random
from datetime import date

from .clock import IST, fmt_candle_ts, ist, previous_trading_day, session_open_ms
from .errors import input_error
from .instruments import Instrument

MINUTE_MS = 60_000
SESSION_MINUTES = 375
INTERVAL_MINUTES = {"minute": 1, "3minute": 3, "5minute": 5, "10minute": 10, "15minute": 15,
                    "30minute": 30, "60minute": 60, "day": 0}
MAX_DAYS = {"minute": 60, "3minute": 100, "5minute": 100, "10minute": 100, "15minute": 200,
            "30minute": 200, "60minute": 400, "day": 2000}

Bar = list[int]  # [start_ms, open, high, low, close, volume], prices in paise


class BarRecorder:
    """One-minute bars of the live session, built from the simulator's trades."""

    def __init__(self) -> None:
        self.bars: dict[int, list[Bar]] = {}
        self.dirty: set[tuple[int, int]] = set()

    def record(self, token: int, ms: int, price: int, qty: int) -> None:
        start = ms - ms % MINUTE_MS
        bars = self.bars.setdefault(token, [])
        if bars and bars[-1][0] == start:
            bar = bars[-1]
            bar[2] = max(bar[2], price)
            bar[3] = min(bar[3], price)
            bar[4] = price
            bar[5] += qty
        elif not bars or bars[-1][0] < start:
            bars.append([start, price, price, price, price, qty])
        else:
            return  # never rewrite the past
        self.dirty.add((token, start))

    def take_dirty(self) -> list[tuple[int, Bar]]:
        out = []
        for token, start in self.dirty:
            for bar in reversed(self.bars.get(token, [])):
                if bar[0] == start:
                    out.append((token, list(bar)))
                    break
        self.dirty.clear()
        return out

    def load(self, rows: list[tuple[int, Bar]]) -> None:
        for token, bar in sorted(rows, key=lambda r: (r[0], r[1][0])):
            self.bars.setdefault(token, []).append(bar)


class Prehistory:
    """Deterministic minute bars for ``days`` trading days before the sim's first day."""

    def __init__(self, seed: int, first_day: date, days: int = 30) -> None:
        self._seed = seed
        self._first_day = first_day
        self._days: list[date] = []
        day = first_day
        for _ in range(days):
            day = previous_trading_day(day)
            self._days.append(day)
        self._days.reverse()
        self._cache: dict[int, list[Bar]] = {}

    def bars(self, inst: Instrument, anchor: int) -> list[Bar]:
        """Minute bars whose last close is ``anchor`` (the first day's reference price)."""
        cached = self._cache.get(inst.token)
        if cached is not None:
            return cached
        shared = self._shared_bars(inst, anchor)
        if shared is not None:
            self._cache[inst.token] = shared
            return shared
        rng = random.Random(f"kite-sim-history:{self._seed}:{inst.token}")
        vol = 0.25 / math.sqrt(252 * 22_500) * math.sqrt(60) * rng.uniform(0.8, 1.8)
        logs: list[tuple[int, float, float]] = []  # (start_ms, log open, log close)
        level = 0.0
        drift = 0.0
        for day in self._days:
            level += rng.gauss(0.0, 0.008)
            open_ms = session_open_ms(day)
            for minute in range(SESSION_MINUTES):
                if minute % 60 == 0:
                    drift = rng.choice((1.0, -1.0, 0.0)) * rng.uniform(0.0, 1.5e-4)
                start = level
                level += drift + vol * rng.gauss(0.0, 1.0)
                logs.append((open_ms + minute * MINUTE_MS, start, level))
        shift = math.log(anchor) - level
        tick = inst.tick
        out: list[Bar] = []
        for start_ms, lo_open, lo_close in logs:
            o = max(tick, round(math.exp(lo_open + shift) / tick) * tick)
            c = max(tick, round(math.exp(lo_close + shift) / tick) * tick)
            wick = abs(rng.gauss(0.0, vol / 2))
            h = max(o, c, round(max(o, c) * (1 + wick) / tick) * tick)
            low = min(o, c, max(tick, round(min(o, c) * (1 - wick) / tick) * tick))
            out.append([start_ms, o, h, low, c, 100 + int(rng.random() * 4900)])
        if out:
            out[-1][4] = anchor
            out[-1][2] = max(out[-1][2], anchor)
            out[-1][3] = min(out[-1][3], anchor)
        self._cache[inst.token] = out
        return out


    def _shared_bars(self, inst: Instrument, anchor: int) -> list[Bar] | None:
        """``shared.sim.market``'s own 15-minute history, when the live path is that module's.

        Its last close is the live path's first price; if that is not ``anchor`` the prices come
        from elsewhere (a replay, our own path) and our generator is used instead.
        """
        try:
            market = importlib.import_module("shared.sim.market")
            session = importlib.import_module("shared.domain.session")
            sim_inst = market.SimInstrument(symbol=inst.symbol, token=inst.token, tick=inst.tick,
                                            base_price=inst.base_price,
                                            lot_size=inst.lot_size, exchange=inst.exchange)
            bars = market.generate_history(sim_inst, self._seed,
                                           session_open_ms(self._first_day),
                                           len(self._days) * 25, session.SessionRules())
        except (ImportError, AttributeError, TypeError):
            return None
        if not bars or bars[-1].close != anchor:
            return None
        out: list[Bar] = []
        for b in bars:
            out.extend(split_bar(b.start_ms, b.open, b.high, b.low, b.close, b.volume, inst.tick))
        return out


def split_bar(start_ms: int, o: int, h: int, low: int, c: int, v: int, tick: int,
              minutes: int = 15) -> list[Bar]:
    """Minute bars that aggregate back exactly to one bar (open, high/low on the way, close)."""
    points = [(0, o), (minutes // 3 - 1, low if c >= o else h),
              (2 * minutes // 3 - 1, h if c >= o else low), (minutes - 1, c)]
    closes = []
    for i in range(minutes):
        for (m0, p0), (m1, p1) in zip(points, points[1:], strict=False):
            if m0 <= i <= m1:
                frac = (i - m0) / (m1 - m0) if m1 > m0 else 1.0
                closes.append(round((p0 + (p1 - p0) * frac) / tick) * tick)
                break
    out: list[Bar] = []
    prev = o
    for i, close in enumerate(closes):
        vol = v // minutes + (v % minutes if i == minutes - 1 else 0)
        out.append([start_ms + i * MINUTE_MS, prev, max(prev, close), min(prev, close), close, vol])
        prev = close
    return out


def _bucket(start_ms: int, minutes: int) -> int:
    day = ist(start_ms).date()
    if minutes == 0:
        return int(ist(start_ms).replace(hour=0, minute=0, second=0, tzinfo=IST).timestamp()
                   * 1000)
    open_ms = session_open_ms(day)
    width = minutes * MINUTE_MS
    return open_ms + (start_ms - open_ms) // width * width


def aggregate(bars: list[Bar], interval: str) -> list[Bar]:
    """Merge one-minute bars into Kite's interval, aligned to the 09:15 open (or to the day)."""
    minutes = INTERVAL_MINUTES[interval]
    if minutes == 1:
        return [list(b) for b in bars]
    out: list[Bar] = []
    for b in bars:
        start = _bucket(b[0], minutes)
        if out and out[-1][0] == start:
            cur = out[-1]
            cur[2] = max(cur[2], b[2])
            cur[3] = min(cur[3], b[3])
            cur[4] = b[4]
            cur[5] += b[5]
        else:
            out.append([start, b[1], b[2], b[3], b[4], b[5]])
    return out


def validate_range(interval: str, from_ms: int, to_ms: int) -> None:
    if interval not in INTERVAL_MINUTES:
        raise input_error("invalid interval")
    if from_ms > to_ms:
        raise input_error("invalid from date: from date cannot be after to date")
    if to_ms - from_ms > MAX_DAYS[interval] * 86_400_000:
        raise input_error(f"interval exceeds max limit: {MAX_DAYS[interval]} days")


def candles(minute_bars: list[Bar], interval: str, from_ms: int, to_ms: int,
            with_oi: bool) -> list[list[object]]:
    """Kite's ``candles`` rows: [timestamp, open, high, low, close, volume(, oi)], rupees."""
    rows: list[list[object]] = []
    for b in aggregate(minute_bars, interval):
        if from_ms <= b[0] <= to_ms:
            row: list[object] = [fmt_candle_ts(b[0]), b[1] / 100, b[2] / 100, b[3] / 100,
                                 b[4] / 100, b[5]]
            if with_oi:
                row.append(0)
            rows.append(row)
    return rows
