"""The risk book against an oracle: the open legs counted in Python from the orders themselves
(the definition the guards used before the book existed)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.store.models import Order, RiskBook


def open_legs(session: Session) -> tuple[int, Decimal]:
    """Open legs and the capital in them, counted from the rows in Python."""
    legs, deployed = 0, Decimal(0)
    for o in session.scalars(select(Order)):
        if o.side == "BUY" and o.leg_closed_at is None and o.state not in ("REJECTED", "CANCELLED"):
            legs += 1
            price = o.average_price if o.average_price is not None else o.ref_price
            deployed += price * (o.filled_qty or o.qty)
    return legs, deployed


def book(session: Session) -> tuple[int, Decimal]:
    row = session.get(RiskBook, 1)
    assert row is not None, "the risk book's row is missing"
    return row.open_legs, row.deployed
