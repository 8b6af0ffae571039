"""GET /api/v1/alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from shared.store.models import AlertRecord

from ..deps import SessionDep, Viewer
from ..paging import Limit, Offset, fetch_page
from ..problems import ApiProblem
from ..schemas import AlertOut, Page

router = APIRouter(prefix="/alerts", tags=["alerts"])


@router.get("", response_model=Page[AlertOut], summary="Alerts, newest first")
def list_alerts(
    session: SessionDep,
    caller: Viewer,
    level: Literal["info", "warning", "critical"] | None = None,
    since: Annotated[
        datetime | None, Query(description="at or after (ISO 8601 with offset)")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AlertOut]:
    if since is not None and since.tzinfo is None:
        raise ApiProblem(422, "'since' needs a timezone offset")
    query = select(AlertRecord).order_by(AlertRecord.id.desc())
    if level:
        query = query.where(AlertRecord.level == level)
    if since is not None:
        query = query.where(AlertRecord.ts >= since)
    rows, total = fetch_page(session, query, limit, offset)
    items = [
        AlertOut(
            id=r.id,
            ts=r.ts,
            level=r.level,
            code=r.code,
            message=r.message,
            symbol=r.symbol,
            ladder_id=r.ladder_id,
            intent_id=r.intent_id,
            source=r.source,
        )
        for r in rows
    ]
    return Page[AlertOut](items=items, total=total, limit=limit, offset=offset)
