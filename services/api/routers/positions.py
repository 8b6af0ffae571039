"""GET /api/v1/positions: the open legs, valued at the LTP (the dashboard's hot path).

One SQL query and one HMGET per request; the handler runs in the thread pool."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from shared.store.models import Trade

from ..deps import ContextDep, Viewer
from ..ltp import field_name, read_quotes
from ..schemas import Position, rupees
from ..valuation import value_leg

router = APIRouter(prefix="/positions", tags=["positions"])

_OPEN_LEGS = (
    select(
        Trade.symbol,
        Trade.exchange,
        Trade.ladder_id,
        Trade.position_number,
        Trade.qty,
        Trade.entry_price,
        Trade.initial_stop,
        Trade.stop_loss,
        Trade.target,
        Trade.status,
    )
    .where(Trade.status == "OPEN")
    .order_by(Trade.symbol, Trade.ladder_id, Trade.position_number)
)


@router.get("", response_model=list[Position], summary="Open legs with LTP and PnL")
def list_positions(ctx: ContextDep, caller: Viewer) -> list[Position]:
    with ctx.engine.connect() as conn:
        rows = conn.execute(_OPEN_LEGS).all()
    quotes = read_quotes(ctx.redis, (field_name(r.exchange, r.symbol) for r in rows))
    positions = []
    for r in rows:
        quote = quotes.get(field_name(r.exchange, r.symbol))
        value = value_leg(r.entry_price, r.qty, quote.price_paise if quote else None)
        positions.append(
            Position(
                symbol=r.symbol,
                ladder_id=r.ladder_id,
                leg=r.position_number,
                qty=r.qty,
                entry_price=rupees(r.entry_price),
                initial_stop=rupees(r.initial_stop),
                stop=rupees(r.stop_loss),
                target=rupees(r.target),
                ltp=rupees(value.ltp) if value else (quote.price_paise / 100 if quote else None),
                pnl=rupees(value.pnl) if value else None,
                pnl_pct=value.pnl_pct if value else None,
                status=r.status,
            )
        )
    return positions
