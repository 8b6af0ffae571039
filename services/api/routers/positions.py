"""GET /api/v1/positions: the open legs, valued at the LTP (the dashboard's hot path).

One query and one HMGET per request, both on the event loop (see ``fastpath``); prices travel as
integer paise until the JSON is written, so PnL is exact and no Decimal is made per row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from shared.store.models import Trade

from ..context import ApiContext
from ..deps import Viewer
from ..fastpath import OPEN_LEGS_COLUMNS, compile_pg
from ..ltp import field_name, read_quotes_async
from ..schemas import Position

router = APIRouter(prefix="/positions", tags=["positions"])

OPEN_LEGS_SQL = compile_pg(
    select(*OPEN_LEGS_COLUMNS)
    .where(Trade.status == "OPEN")
    .order_by(Trade.symbol, Trade.ladder_id, Trade.position_number)
)


def _rupees(paise: int | None) -> float | None:
    return None if paise is None else paise / 100


def position_dicts(rows: Sequence[Sequence[Any]], ltps: dict[str, int]) -> list[dict[str, Any]]:
    """Rows of OPEN_LEGS_COLUMNS and LTPs (paise by ``EXCHANGE:SYMBOL``) as Position objects.

    Built as plain dicts for speed; ``test_position_dicts_match_the_schema`` holds them to
    :class:`~services.api.schemas.Position`."""
    out = []
    for symbol, exchange, ladder_id, leg, qty, entry, initial, stop, target, status in rows:
        ltp = ltps.get(f"{exchange}:{symbol}")
        if ltp is None or entry is None or entry <= 0:
            pnl = pnl_pct = None
        else:
            pnl = (ltp - entry) * qty / 100
            pnl_pct = round((ltp - entry) / entry * 100, 4)
        out.append(
            {
                "symbol": symbol,
                "ladder_id": ladder_id,
                "leg": leg,
                "qty": qty,
                "entry_price": _rupees(entry),
                "initial_stop": _rupees(initial),
                "stop": _rupees(stop),
                "target": _rupees(target),
                "ltp": _rupees(ltp),
                "pnl": pnl,
                "pnl_pct": pnl_pct,
                "status": status,
            }
        )
    return out


async def open_positions(ctx: ApiContext) -> list[dict[str, Any]]:
    rows = await ctx.fast.fetch(OPEN_LEGS_SQL)
    quotes = await read_quotes_async(ctx.fast.redis, (field_name(r[1], r[0]) for r in rows))
    return position_dicts(rows, {name: q.price_paise for name, q in quotes.items()})


@router.get("", response_model=list[Position], summary="Open legs with LTP and PnL")
async def list_positions(request: Request, caller: Viewer) -> Response:
    positions = await open_positions(request.app.state.ctx)
    return Response(orjson.dumps(positions), media_type="application/json")
