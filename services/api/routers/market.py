"""GET /api/v1/candles/{symbol} (bars with EMAs) and GET /api/v1/ltp (last traded prices)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from shared.store.models import Ohlcv

from ..deps import ContextDep, SessionDep, Viewer
from ..ltp import Quote, field_name, read_all_quotes, read_quotes
from ..problems import ApiProblem
from ..schemas import CandleOut, LtpOut

candles_router = APIRouter(prefix="/candles", tags=["market data"])
ltp_router = APIRouter(prefix="/ltp", tags=["market data"])

SYMBOL_PATTERN = r"^[A-Za-z0-9&._-]{1,40}$"
Exchange = Annotated[str, Query(pattern=r"^[A-Z]{2,8}$", description="exchange, e.g. NSE")]


@candles_router.get(
    "/{symbol}", response_model=list[CandleOut], summary="Latest bars with EMAs, oldest first"
)
def get_candles(
    session: SessionDep,
    caller: Viewer,
    symbol: Annotated[str, Path(pattern=SYMBOL_PATTERN)],
    exchange: Exchange = "NSE",
    timeframe: Annotated[int, Query(ge=1, le=375, description="minutes per bar")] = 15,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> list[CandleOut]:
    query = (
        select(Ohlcv)
        .where(Ohlcv.exchange == exchange, Ohlcv.symbol == symbol, Ohlcv.timeframe == timeframe)
        .order_by(Ohlcv.ts.desc())
        .limit(limit)
    )
    rows = list(session.scalars(query))
    rows.reverse()
    return [
        CandleOut(
            ts=r.ts,
            open=float(r.open),
            high=float(r.high),
            low=float(r.low),
            close=float(r.close),
            volume=r.volume,
            ema_9=r.ema_9,
            ema_21=r.ema_21,
            ema_50=r.ema_50,
            ema_200=r.ema_200,
        )
        for r in rows
    ]


def _ltp_out(q: Quote) -> LtpOut:
    ts = datetime.fromtimestamp(q.ts_ms / 1000, UTC) if q.ts_ms is not None else None
    return LtpOut(
        exchange=q.exchange,
        symbol=q.symbol,
        token=q.token,
        price=q.price_paise / 100,
        ts=ts,
        volume=q.volume,
    )


def _names(symbols: str) -> list[str]:
    names = []
    for part in symbols.split(","):
        part = part.strip()
        if not part:
            continue
        exchange, sep, symbol = part.rpartition(":")
        name = field_name(exchange if sep else "NSE", symbol)
        if len(name) > 50:
            raise ApiProblem(422, f"symbol too long: {part[:50]!r}")
        names.append(name)
    if len(names) > 500:
        raise ApiProblem(422, "at most 500 symbols per request")
    return names


@ltp_router.get("", response_model=list[LtpOut], summary="Last traded prices")
def get_ltp(
    ctx: ContextDep,
    caller: Viewer,
    symbols: Annotated[
        str | None,
        Query(
            max_length=25_000,
            description="comma-separated SYMBOL or EXCHANGE:SYMBOL (NSE by default); all if absent",
        ),
    ] = None,
) -> list[LtpOut]:
    if symbols is None:
        quotes = read_all_quotes(ctx.redis)
    else:
        quotes = read_quotes(ctx.redis, _names(symbols))
    return [_ltp_out(quotes[name]) for name in sorted(quotes)]
