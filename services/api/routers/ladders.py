"""GET /api/v1/ladders."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from shared.store.models import Ladder

from ..deps import SessionDep, Viewer
from ..paging import Limit, Offset, fetch_page
from ..schemas import LadderOut, Page

router = APIRouter(prefix="/ladders", tags=["ladders"])


@router.get("", response_model=Page[LadderOut], summary="Ladders, newest first")
def list_ladders(
    session: SessionDep,
    caller: Viewer,
    symbol: Annotated[str | None, Query(max_length=40)] = None,
    phase: Annotated[
        str | None, Query(max_length=16, description="PENDING ACTIVE ENDED CANCELLED")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[LadderOut]:
    query = select(Ladder).order_by(Ladder.opened_at.desc(), Ladder.id)
    if symbol:
        query = query.where(Ladder.symbol == symbol)
    if phase:
        query = query.where(Ladder.phase == phase)
    rows, total = fetch_page(session, query, limit, offset)
    items = [
        LadderOut(
            id=r.id,
            strategy=r.strategy,
            exchange=r.exchange,
            symbol=r.symbol,
            signal_bar=r.signal_bar,
            phase=r.phase,
            p2_done=r.p2_done,
            p3_done=r.p3_done,
            opened_at=r.opened_at,
            closed_at=r.closed_at,
        )
        for r in rows
    ]
    return Page[LadderOut](items=items, total=total, limit=limit, offset=offset)
