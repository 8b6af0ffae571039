"""Limit/offset paging of a SELECT, with the total count of matching rows."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

Limit = Annotated[int, Query(ge=1, le=500, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="rows to skip")]


def fetch_page(
    session: Session, query: Select[Any], limit: int, offset: int
) -> tuple[list[Any], int]:
    """The rows of one page of ``query`` (already ordered) and the count of all its rows."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = list(session.scalars(query.limit(limit).offset(offset)))
    return rows, int(total or 0)
