"""``ratchet backfill``: Kite's historical candles into ``ohlcv`` through the official SDK.

- Instruments are found in Kite's instruments dump (one call), candles fetched in windows of
  Kite's maximum span per interval (60 days of minutes, 200 of 15 minutes, …).
- Requests are paced to at most 3 a second (Kite's limit for historical data); a rate-limit or
  network error is retried with back-off, an input error (unknown token, bad interval) stops.
- Each window is committed as it arrives, so an interrupted backfill resumes from the last stored
  bar: only the range after it (and before the first stored bar, if ``--from`` is earlier) is
  fetched again. Rows already stored are left as they are.
- A bar still forming (its end in the future) is not stored. EMAs of new bars continue the
  stored series (TA-Lib convention, as marketdata writes them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from shared.domain.indicators import EmaSet
from shared.store.models import Ohlcv

IST = timezone(timedelta(hours=5, minutes=30))
MINUTES = {"minute": 1, "3minute": 3, "5minute": 5, "10minute": 10, "15minute": 15,
           "30minute": 30, "60minute": 60, "day": 1440}
MAX_DAYS = {"minute": 60, "3minute": 100, "5minute": 100, "10minute": 100, "15minute": 200,
            "30minute": 200, "60minute": 400, "day": 2000}
KITE_HISTORICAL_PER_S = 3.0


class BackfillError(RuntimeError):
    """Backfill cannot go on (no session, unknown symbol, an input error from Kite)."""


def kite_client(settings: Any, access_token: str | None, request_token: str | None) -> Any:
    """A KiteConnect client at ``settings.kite_root`` with a session."""
    from kiteconnect import KiteConnect  # type: ignore[import-untyped]

    kite = KiteConnect(settings.kite_api_key, root=settings.kite_root, timeout=15)
    if request_token:
        if not settings.kite_api_secret:
            raise BackfillError("--request-token needs RATCHET_KITE_API_SECRET")
        session = kite.generate_session(request_token, settings.kite_api_secret)
        kite.set_access_token(session["access_token"])
    elif access_token:
        kite.set_access_token(access_token)
    else:
        raise BackfillError("no Kite session: pass --access-token (or RATCHET_KITE_ACCESS_TOKEN)"
                            " or --request-token")
    return kite


class Pacer:
    """At most ``rate`` calls a second: each call starts ``margin``/rate s after the previous
    one (5% slack, so network jitter cannot put four calls inside Kite's one-second window)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, margin: float = 1.05) -> None:
        self.gap = margin / rate
        self.clock, self.sleep = clock, sleep
        self.last = -1e18

    def wait(self) -> None:
        delay = self.last + self.gap - self.clock()
        if delay > 0:
            self.sleep(delay)
        self.last = self.clock()


@dataclass
class Backfill:
    kite: Any
    sessions: sessionmaker[Session]
    exchange: str = "NSE"
    interval: str = "15minute"
    rate_per_s: float = KITE_HISTORICAL_PER_S
    window_days: int | None = None  # default: Kite's maximum for the interval
    retries: int = 5
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        if self.interval not in MINUTES:
            raise BackfillError(f"unknown interval {self.interval!r}; one of {', '.join(MINUTES)}")
        self.pacer = Pacer(min(self.rate_per_s, KITE_HISTORICAL_PER_S))
        self.requests = 0
        self.timeframe = MINUTES[self.interval]

    # --- planning --------------------------------------------------------------------------------

    def tokens(self, symbols: list[str]) -> dict[str, int]:
        dump = self._call(self.kite.instruments, self.exchange)
        found = {row["tradingsymbol"]: int(row["instrument_token"]) for row in dump}
        missing = [s for s in symbols if s not in found]
        if missing:
            raise BackfillError(f"not in the {self.exchange} instruments: {', '.join(missing)}")
        return {s: found[s] for s in symbols}

    def stored_span(self, symbol: str) -> tuple[datetime | None, datetime | None]:
        with self.sessions() as session:
            lo, hi = session.execute(select(func.min(Ohlcv.ts), func.max(Ohlcv.ts)).where(
                Ohlcv.exchange == self.exchange, Ohlcv.symbol == symbol,
                Ohlcv.timeframe == self.timeframe)).one()
        return lo, hi

    def windows(self, symbol: str, first: date, last: date) -> list[tuple[datetime, datetime]]:
        """The (from, to) IST ranges still to fetch, each within Kite's maximum span."""
        start = datetime(first.year, first.month, first.day, tzinfo=IST)
        end = datetime(last.year, last.month, last.day, 23, 59, 59, tzinfo=IST)
        lo, hi = self.stored_span(symbol)
        ranges = [(start, end)]
        if lo is not None and hi is not None:
            bar = timedelta(minutes=self.timeframe)
            ranges = [(start, min(end, lo - timedelta(seconds=1))), (max(start, hi + bar), end)]
        span = timedelta(days=self.window_days or MAX_DAYS[self.interval])
        out = []
        for a, b in ranges:
            while a <= b:
                c = min(b, a + span - timedelta(seconds=1))
                out.append((a, c))
                a = c + timedelta(seconds=1)
        return out

    # --- fetching --------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kiteconnect import exceptions as kex  # type: ignore[import-untyped]

        for attempt in range(self.retries + 1):
            self.pacer.wait()
            self.requests += 1
            try:
                return fn(*args, **kwargs)
            except (kex.NetworkException, kex.DataException, kex.GeneralException) as exc:
                if attempt == self.retries:
                    raise BackfillError(f"Kite kept failing: {exc}") from exc
                time.sleep(min(8.0, 0.5 * 2**attempt))
            except (kex.InputException, kex.TokenException, kex.PermissionException) as exc:
                raise BackfillError(f"Kite refused: {exc}") from exc
        raise AssertionError("unreachable")

    def fetch(self, token: int, a: datetime, b: datetime) -> list[dict[str, Any]]:
        fmt = "%Y-%m-%d %H:%M:%S"
        return list(self._call(self.kite.historical_data, token, a.strftime(fmt),
                               b.strftime(fmt), self.interval))

    def store(self, symbol: str, candles: list[dict[str, Any]]) -> int:
        """Insert complete bars after the stored ones; returns how many were new."""
        horizon = self.now() - timedelta(minutes=self.timeframe)
        rows = []
        for c in candles:
            ts = c["date"]
            if not isinstance(ts, datetime):
                ts = datetime.fromisoformat(str(ts))
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=IST)
            if ts > horizon:
                continue  # still forming
            rows.append((ts, c))
        if not rows:
            return 0
        rows.sort(key=lambda r: r[0])
        emas = self._warm(symbol, rows[0][0])
        values = []
        for ts, c in rows:
            close = float(Decimal(str(c["close"])) * 100)
            ema = emas.update(close) if emas is not None else (None,) * 4
            values.append({
                "exchange": self.exchange, "symbol": symbol, "timeframe": self.timeframe,
                "ts": ts, "open": Decimal(str(c["open"])), "high": Decimal(str(c["high"])),
                "low": Decimal(str(c["low"])), "close": Decimal(str(c["close"])),
                "volume": int(c.get("volume") or 0),
                **{f"ema_{p}": (None if v is None else v / 100.0)
                   for p, v in zip((9, 21, 50, 200), ema, strict=True)},
            })
        with self.sessions.begin() as session:
            result = session.execute(insert(Ohlcv).values(values).on_conflict_do_nothing()
                                     .returning(Ohlcv.ts))
            return len(result.all())

    def _warm(self, symbol: str, before: datetime) -> EmaSet | None:
        """EMAs over every stored close before ``before`` (None when bars exist after it: the
        stored EMAs there would not follow from these, so new earlier bars get none)."""
        with self.sessions() as session:
            later = session.scalar(select(func.count()).select_from(Ohlcv).where(
                Ohlcv.exchange == self.exchange, Ohlcv.symbol == symbol,
                Ohlcv.timeframe == self.timeframe, Ohlcv.ts >= before))
            if later:
                return None
            closes = session.scalars(select(Ohlcv.close).where(
                Ohlcv.exchange == self.exchange, Ohlcv.symbol == symbol,
                Ohlcv.timeframe == self.timeframe, Ohlcv.ts < before).order_by(Ohlcv.ts)).all()
        emas = EmaSet((9, 21, 50, 200))
        for close in closes:
            emas.update(float(Decimal(close) * 100))
        return emas

    def run(self, symbols: list[str], first: date, last: date,
            progress: Callable[[int, int], None] | None = None,
            log: Callable[[str], None] = lambda _line: None) -> dict[str, int]:
        """Backfill every symbol; returns the new bars stored per symbol."""
        if first > last:
            raise BackfillError("--from is after --to")
        tokens = self.tokens(symbols)
        plan = [(s, w) for s in symbols for w in self.windows(s, first, last)]
        added = dict.fromkeys(symbols, 0)
        for done, (symbol, (a, b)) in enumerate(plan, start=1):
            new = self.store(symbol, self.fetch(tokens[symbol], a, b))
            added[symbol] += new
            log(f"{self.exchange}:{symbol} {a:%Y-%m-%d}..{b:%Y-%m-%d}: {new} new bars "
                f"[{done}/{len(plan)}]")
            if progress is not None:
                progress(done, len(plan))
        return added
