"""GET /api/v1/trades: every leg, filtered and paged."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from shared.store.models import Trade

from ..deps import SessionDep, Viewer
from ..paging import Limit, Offset, fetch_page
from ..problems import ApiProblem
from ..schemas import Page, TradeOut, rupees

router = APIRouter(prefix="/trades", tags=["trades"])

TradeStatus = Literal["PENDING", "OPEN", "CLOSED", "REJECTED"]


def trade_out(r: Trade) -> TradeOut:
    return TradeOut(
        trade_id=r.trade_id,
        ladder_id=r.ladder_id,
        symbol=r.symbol,
        exchange=r.exchange,
        leg=r.position_number,
        qty=r.qty,
        entry_price=rupees(r.entry_price),
        entry_time=r.entry_time,
        exit_price=rupees(r.exit_price),
        exit_time=r.exit_time,
        stop=rupees(r.stop_loss),
        initial_stop=rupees(r.initial_stop),
        target=rupees(r.target),
        highest_price=rupees(r.highest_price),
        gtt_id=r.gtt_id,
        pnl=rupees(r.pnl),
        pnl_pct=r.pnl_pct,
        status=r.status,
        exit_reason=r.exit_reason,
    )


@router.get("", response_model=Page[TradeOut], summary="Legs (trades), newest entry first")
def list_trades(
    session: SessionDep,
    caller: Viewer,
    symbol: Annotated[str | None, Query(max_length=40)] = None,
    status: TradeStatus | None = None,
    from_: Annotated[
        datetime | None, Query(alias="from", description="entry_time at or after (ISO 8601)")
    ] = None,
    to: Annotated[datetime | None, Query(description="entry_time before (ISO 8601)")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[TradeOut]:
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value.tzinfo is None:
            raise ApiProblem(
                422, f"'{name}' needs a timezone offset (e.g. 2025-01-02T09:15:00+05:30)"
            )
    query = select(Trade).order_by(Trade.entry_time.desc().nulls_last(), Trade.trade_id)
    if symbol:
        query = query.where(Trade.symbol == symbol)
    if status:
        query = query.where(Trade.status == status)
    if from_ is not None:
        query = query.where(Trade.entry_time >= from_)
    if to is not None:
        query = query.where(Trade.entry_time < to)
    rows, total = fetch_page(session, query, limit, offset)
    return Page[TradeOut](
        items=[trade_out(r) for r in rows], total=total, limit=limit, offset=offset
    )
