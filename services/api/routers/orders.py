"""GET /api/v1/orders and GET /api/v1/gtts: what execution has sent to the broker."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from shared.store.models import Gtt, Order

from ..deps import SessionDep, Viewer
from ..paging import Limit, Offset, fetch_page
from ..schemas import GttOut, OrderOut, Page, rupees

orders_router = APIRouter(prefix="/orders", tags=["orders"])
gtts_router = APIRouter(prefix="/gtts", tags=["gtts"])

Symbol = Annotated[str | None, Query(max_length=40)]
State = Annotated[str | None, Query(max_length=16)]


@orders_router.get("", response_model=Page[OrderOut], summary="Orders, newest first")
def list_orders(
    session: SessionDep,
    caller: Viewer,
    symbol: Symbol = None,
    state: State = None,
    ladder_id: Annotated[str | None, Query(max_length=80)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[OrderOut]:
    query = select(Order).order_by(Order.id.desc())
    if symbol:
        query = query.where(Order.symbol == symbol)
    if state:
        query = query.where(Order.state == state)
    if ladder_id:
        query = query.where(Order.ladder_id == ladder_id)
    rows, total = fetch_page(session, query, limit, offset)
    items = [
        OrderOut(
            id=r.id,
            intent_id=r.intent_id,
            tag=r.tag,
            exchange=r.exchange,
            symbol=r.symbol,
            ladder_id=r.ladder_id,
            leg=r.leg,
            side=r.side,
            qty=r.qty,
            order_type=r.order_type,
            product=r.product,
            ref_price=float(r.ref_price),
            adds_risk=r.adds_risk,
            broker_order_id=r.broker_order_id,
            state=r.state,
            filled_qty=r.filled_qty,
            average_price=rupees(r.average_price),
            reason=r.reason,
            created_at=r.created_at,
            submitted_at=r.submitted_at,
            updated_at=r.updated_at,
        )
        for r in rows
    ]
    return Page[OrderOut](items=items, total=total, limit=limit, offset=offset)


@gtts_router.get("", response_model=Page[GttOut], summary="Protective GTTs, newest first")
def list_gtts(
    session: SessionDep,
    caller: Viewer,
    symbol: Symbol = None,
    state: State = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[GttOut]:
    query = select(Gtt).order_by(Gtt.id.desc())
    if symbol:
        query = query.where(Gtt.symbol == symbol)
    if state:
        query = query.where(Gtt.state == state)
    rows, total = fetch_page(session, query, limit, offset)
    items = [
        GttOut(
            id=r.id,
            intent_id=r.intent_id,
            ladder_id=r.ladder_id,
            leg=r.leg,
            exchange=r.exchange,
            symbol=r.symbol,
            qty=r.qty,
            trigger_price=float(r.trigger_price),
            target_price=rupees(r.target_price),
            trigger_id=r.trigger_id,
            state=r.state,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )
        for r in rows
    ]
    return Page[GttOut](items=items, total=total, limit=limit, offset=offset)
