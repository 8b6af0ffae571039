"""Candles from Kite's REST API for the ``kite`` feed: the instruments dump, and the historical
endpoint for the bars a token missed (at start, and after a gap in the ticker), within Kite's
rate limit of 3 historical requests a second.

Requests run in one worker thread; answers are handed back on a queue so that the feed's own
thread stays the only one that touches the ingestor.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from shared.domain.candles import Bar
from shared.domain.session import SessionRules
from shared.store.models import Instrument

log = logging.getLogger("ratchet.marketdata.kite")

IST = timezone(timedelta(hours=5, minutes=30))
KITE_INTERVALS = {1: "minute", 3: "3minute", 5: "5minute", 10: "10minute", 15: "15minute",
                  30: "30minute", 60: "60minute"}
MAX_DAYS = {"minute": 60, "3minute": 100, "5minute": 100, "10minute": 100, "15minute": 200,
            "30minute": 200, "60minute": 400}
SEGMENTS = {"NSE", "BSE"}  # equities: prices in paise on the ticker


@dataclass(frozen=True)
class KiteInstrument:
    token: int
    exchange: str
    symbol: str
    name: str
    tick: int  # paise
    lot_size: int


def paise(value: float | int | str) -> int:
    return int((Decimal(str(value)) * 100).to_integral_value())


def equities(rows: list[dict[str, Any]], symbols: list[str] | None,
             limit: int = 3000) -> list[KiteInstrument]:
    """The instruments to subscribe: NSE/BSE equities from Kite's dump, the named ones (``NSE:SBIN``
    or ``SBIN``) when given, at most ``limit`` (one ticker connection's worth)."""
    wanted = {s.strip().upper() for s in symbols or [] if s.strip()}
    out: list[KiteInstrument] = []
    for row in rows:
        exchange = str(row.get("exchange", ""))
        if exchange not in SEGMENTS or row.get("instrument_type", "EQ") != "EQ":
            continue
        symbol = str(row["tradingsymbol"])
        if wanted and symbol.upper() not in wanted and f"{exchange}:{symbol}".upper() not in wanted:
            continue
        out.append(KiteInstrument(int(row["instrument_token"]), exchange, symbol,
                                  str(row.get("name") or ""), paise(row.get("tick_size") or 0.05),
                                  int(row.get("lot_size") or 1)))
    if len(out) > limit:
        log.warning("more instruments than one ticker connection takes; the first are used",
                    extra={"found": len(out), "used": limit})
        out = out[:limit]
    return out


def upsert_instruments(sessions: sessionmaker[Session], instruments: list[KiteInstrument]) -> None:
    if not instruments:
        return
    rows = [{"token": i.token, "exchange": i.exchange, "tradingsymbol": i.symbol, "name": i.name,
             "tick_size": Decimal(i.tick).scaleb(-2), "lot_size": i.lot_size, "freeze_qty": None}
            for i in instruments]
    stmt = insert(Instrument).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["token"],
        set_={"exchange": stmt.excluded.exchange, "tradingsymbol": stmt.excluded.tradingsymbol,
              "tick_size": stmt.excluded.tick_size, "lot_size": stmt.excluded.lot_size},
    )
    with sessions.begin() as session:
        session.execute(stmt)


def to_bars(records: list[dict[str, Any]], rules: SessionRules) -> list[Bar]:
    """Kite's candles (any interval that divides the timeframe) merged into the session's bars."""
    bars: list[Bar] = []
    for rec in records:
        when = rec["date"]
        if when.tzinfo is None:
            when = when.replace(tzinfo=IST)
        ms = int(when.timestamp() * 1000)
        start = rules.bar_start(ms)
        if start is None:
            continue
        o, h, low, c = (paise(rec[k]) for k in ("open", "high", "low", "close"))
        volume = int(rec.get("volume") or 0)
        if bars and bars[-1].start_ms == start:
            cur = bars[-1]
            cur.high, cur.low, cur.close = max(cur.high, h), min(cur.low, low), c
            cur.volume += volume
        elif not bars or start > bars[-1].start_ms:
            bars.append(Bar(start, rules.bar_end(start), o, h, low, c, volume))
    return bars


def ist_naive(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=IST).replace(tzinfo=None)


@dataclass
class FillJob:
    """Bars of one token with ``from_ms <= start < cutoff_ms`` are wanted."""

    token: int
    from_ms: int
    cutoff_ms: int
    publish: bool  # to md.candles too (bars the strategy has not seen), or only stored (warm-up)
    attempts: int = 0


@dataclass
class FillResult:
    job: FillJob
    bars: list[Bar]  # complete bars, from_ms <= start < cutoff_ms
    partial: Bar | None = None  # the bar at cutoff_ms so far: it seeds the live bar
    error: str | None = None


@dataclass
class Backfiller:
    """Fetches candles for :class:`FillJob`s, one request at a time, spaced to the rate limit."""

    api_key: str
    root: str
    rules: SessionRules
    per_second: float = 3.0
    on_auth_error: Callable[[str], None] | None = None
    max_attempts: int = 5
    jobs: queue.Queue[FillJob] = field(default_factory=queue.Queue)
    results: queue.Queue[FillResult] = field(default_factory=queue.Queue)
    requests: int = 0
    rate_limited: int = 0
    _token: str | None = None
    _next_at: float = 0.0
    _kite: KiteConnect | None = None

    def set_access_token(self, token: str) -> None:
        self._token = token

    def interval(self) -> str:
        return KITE_INTERVALS.get(self.rules.timeframe_minutes, "minute")

    def _client(self) -> KiteConnect:
        if self._kite is None:
            self._kite = KiteConnect(self.api_key, access_token=self._token, root=self.root,
                                     timeout=15)
        elif self._kite.access_token != self._token:
            self._kite.set_access_token(self._token)
        return self._kite

    def _pace(self, stop: threading.Event) -> None:
        """Kite counts per second; spacing requests 5% wider than 1/rate never bursts past it."""
        gap = 1.05 / self.per_second
        now = time.monotonic()
        if now < self._next_at:
            stop.wait(self._next_at - now)
        self._next_at = max(now, self._next_at) + gap

    def fetch(self, job: FillJob, stop: threading.Event) -> FillResult:
        """The complete bars of the job's range, and the bar at its cutoff as far as it goes
        (Kite's history includes the running candle)."""
        interval = self.interval()
        lo = max(job.from_ms, job.cutoff_ms - MAX_DAYS[interval] * 86_400_000 + 86_400_000)
        last = job.cutoff_ms + self.rules.timeframe_ms - 1000
        bars: list[Bar] = []
        start = lo
        while start <= last and not stop.is_set():  # long ranges in Kite's chunks
            end = min(last, start + (MAX_DAYS[interval] - 1) * 86_400_000)
            self._pace(stop)
            self.requests += 1
            records = self._client().historical_data(job.token, ist_naive(start), ist_naive(end),
                                                     interval)
            bars.extend(b for b in to_bars(records, self.rules)
                        if job.from_ms <= b.start_ms <= job.cutoff_ms
                        and (not bars or b.start_ms > bars[-1].start_ms))
            start = end + 1000
        partial = bars.pop() if bars and bars[-1].start_ms == job.cutoff_ms else None
        return FillResult(job, bars, partial)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                job = self.jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.results.put(self.fetch(job, stop))
            except kex.TokenException as exc:
                if self.on_auth_error is not None:
                    self.on_auth_error(str(exc))
                self._retry(job, stop, 5.0, "token refused")
            except kex.NetworkException as exc:
                if exc.code == 429:
                    self.rate_limited += 1
                self._retry(job, stop, 1.0, str(exc))
            except (kex.KiteException, OSError, ValueError, KeyError) as exc:
                self._retry(job, stop, 1.0, f"{type(exc).__name__}: {exc}")

    def _retry(self, job: FillJob, stop: threading.Event, pause: float, why: str) -> None:
        job.attempts += 1
        if job.attempts >= self.max_attempts:
            log.warning("backfill given up", extra={"token": job.token, "error": why})
            self.results.put(FillResult(job, [], None, why))
            return
        stop.wait(pause)
        self.jobs.put(job)
