"""Closed bars into ``ohlcv`` (prices in rupees, EMAs in rupees) and history back out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from shared.contracts.messages import Candle
from shared.domain.candles import Bar
from shared.domain.money import to_paise, to_rupees
from shared.store.models import Ohlcv


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def dt_to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _ema_rupees(value: float | None) -> float | None:
    return None if value is None else value / 100.0


class OhlcvWriter:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def write(self, candles: Sequence[Candle]) -> None:
        """Insert closed bars; a bar already stored (a replay, a restart) is left as it was."""
        rows = [
            {
                "exchange": c.exchange,
                "symbol": c.symbol,
                "timeframe": c.timeframe_minutes,
                "ts": ms_to_dt(c.start_ms),
                "open": to_rupees(c.open),
                "high": to_rupees(c.high),
                "low": to_rupees(c.low),
                "close": to_rupees(c.close),
                "volume": c.volume,
                "ema_9": _ema_rupees(c.ema[0]),
                "ema_21": _ema_rupees(c.ema[1]),
                "ema_50": _ema_rupees(c.ema[2]),
                "ema_200": _ema_rupees(c.ema[3]),
            }
            for c in candles
        ]
        if not rows:
            return
        with self.sessions.begin() as session:
            session.execute(insert(Ohlcv).values(rows).on_conflict_do_nothing())


def load_bars(
    sessions: sessionmaker[Session], exchange: str, symbol: str, timeframe: int, limit: int,
    timeframe_ms: int,
) -> list[Bar]:
    """The newest ``limit`` stored bars of a symbol, oldest first."""
    with sessions() as session:
        rows = session.scalars(
            select(Ohlcv)
            .where(Ohlcv.exchange == exchange, Ohlcv.symbol == symbol, Ohlcv.timeframe == timeframe)
            .order_by(Ohlcv.ts.desc())
            .limit(limit)
        ).all()
    bars = [
        Bar(
            start_ms=dt_to_ms(r.ts),
            end_ms=dt_to_ms(r.ts) + timeframe_ms,
            open=to_paise(r.open),
            high=to_paise(r.high),
            low=to_paise(r.low),
            close=to_paise(r.close),
            volume=r.volume,
        )
        for r in rows
    ]
    bars.reverse()
    return bars
