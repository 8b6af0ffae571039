"""GET /api/v1/pnl: realised (closed legs) plus unrealised (open legs at the LTP)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from shared.store.models import Trade

from ..deps import ContextDep, Viewer
from ..ltp import field_name, read_quotes
from ..schemas import EquityOut, EquityPoint, PnlFigures, PnlOut, SymbolPnl
from ..valuation import realised_pnl, value_leg

router = APIRouter(prefix="/pnl", tags=["pnl"])

IST = timezone(timedelta(hours=5, minutes=30), "IST")


def ist_day_start(now: datetime) -> datetime:
    local = now.astimezone(IST)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _figures(realised: Decimal, unrealised: Decimal) -> PnlFigures:
    return PnlFigures(
        realised=float(realised), unrealised=float(unrealised), total=float(realised + unrealised)
    )


@router.get("", response_model=PnlOut, summary="PnL today and in total, by symbol")
def get_pnl(ctx: ContextDep, caller: Viewer) -> PnlOut:
    now = datetime.now(UTC)
    day_start = ist_day_start(now)
    query = select(
        Trade.symbol,
        Trade.exchange,
        Trade.status,
        Trade.qty,
        Trade.entry_price,
        Trade.exit_price,
        Trade.exit_time,
        Trade.pnl,
    ).where(Trade.status.in_(("OPEN", "CLOSED")))
    with ctx.engine.connect() as conn:
        rows = conn.execute(query).all()
    open_rows = [r for r in rows if r.status == "OPEN"]
    quotes = read_quotes(ctx.redis, (field_name(r.exchange, r.symbol) for r in open_rows))

    zero = Decimal(0)
    realised: dict[str, Decimal] = defaultdict(lambda: zero)
    realised_day: dict[str, Decimal] = defaultdict(lambda: zero)
    unrealised: dict[str, Decimal] = defaultdict(lambda: zero)
    open_legs: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.status == "CLOSED":
            amount = realised_pnl(r.pnl, r.entry_price, r.exit_price, r.qty)
            realised[r.symbol] += amount
            if r.exit_time is not None and r.exit_time >= day_start:
                realised_day[r.symbol] += amount
        else:
            open_legs[r.symbol] += 1
            quote = quotes.get(field_name(r.exchange, r.symbol))
            value = value_leg(r.entry_price, r.qty, quote.price_paise if quote else None)
            unrealised[r.symbol] += value.pnl if value else zero

    symbols = sorted(set(realised) | set(open_legs))
    by_symbol = [
        SymbolPnl(
            symbol=s,
            realised=float(realised[s]),
            realised_day=float(realised_day[s]),
            unrealised=float(unrealised[s]),
            total=float(realised[s] + unrealised[s]),
            open_legs=open_legs[s],
        )
        for s in symbols
    ]
    total_unrealised = sum(unrealised.values(), zero)
    return PnlOut(
        day=_figures(sum(realised_day.values(), zero), total_unrealised),
        total=_figures(sum(realised.values(), zero), total_unrealised),
        by_symbol=by_symbol,
        as_of=now,
    )


@router.get("/equity", response_model=EquityOut, summary="Equity curve: realised PnL over time")
def get_equity(
    ctx: ContextDep,
    caller: Viewer,
    limit: Annotated[int, Query(ge=1, le=10_000, description="latest points")] = 2000,
) -> EquityOut:
    query = (
        select(Trade.exit_time, Trade.pnl, Trade.entry_price, Trade.exit_price, Trade.qty)
        .where(Trade.status == "CLOSED", Trade.exit_time.is_not(None))
        .order_by(Trade.exit_time, Trade.trade_id)
    )
    open_query = select(Trade.symbol, Trade.exchange, Trade.qty, Trade.entry_price).where(
        Trade.status == "OPEN"
    )
    with ctx.engine.connect() as conn:
        closed = conn.execute(query).all()
        open_rows = conn.execute(open_query).all()
    running = Decimal(0)
    points = []
    for r in closed:
        running += realised_pnl(r.pnl, r.entry_price, r.exit_price, r.qty)
        points.append(EquityPoint(ts=r.exit_time, realised=float(running)))
    quotes = read_quotes(ctx.redis, (field_name(r.exchange, r.symbol) for r in open_rows))
    unrealised = Decimal(0)
    for leg in open_rows:
        quote = quotes.get(field_name(leg.exchange, leg.symbol))
        value = value_leg(leg.entry_price, leg.qty, quote.price_paise if quote else None)
        unrealised += value.pnl if value else 0
    return EquityOut(points=points[-limit:], realised=float(running),
                     unrealised=float(unrealised), total=float(running + unrealised))
