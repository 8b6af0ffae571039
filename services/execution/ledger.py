"""Execution's records in Postgres: intents, orders, GTTs, halts and the risk picture.

Every state change is a conditional UPDATE on the expected state, and every event that tells the
other services about it is staged in the outbox in the same transaction.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from services.execution.states import (
    GTT_LIVE,
    ORDER_TERMINAL,
    GttEvent,
    GttState,
    OrderEvent,
    OrderState,
    advance_gtt,
    advance_order,
)
from shared.bus.publisher import stage
from shared.contracts import streams
from shared.contracts.messages import Alert, AlertLevel, Payload
from shared.domain.money import to_paise, to_rupees
from shared.domain.risk import RiskState
from shared.store.models import AlertRecord, AuditEntry, Gtt, HaltRecord, Intent, Order

SOURCE = "execution"


def order_tag(intent_id: str) -> str:
    """Kite's tag: alphanumeric, at most 20 characters, one per intent."""
    return "R" + hashlib.sha256(intent_id.encode()).hexdigest()[:19]


def utcnow() -> datetime:
    return datetime.now(UTC)


def emit(session: Session, payload: Payload, *, msg_id: str, ts_ms: int) -> None:
    stage(session, streams.EXEC_EVENTS, payload, msg_id=msg_id, ts_ms=ts_ms, source=SOURCE)


def raise_alert(
    session: Session,
    level: AlertLevel,
    code: str,
    message: str,
    *,
    ts_ms: int,
    symbol: str | None = None,
    ladder_id: str | None = None,
    intent_id: str | None = None,
) -> None:
    session.add(
        AlertRecord(
            level=level,
            code=code,
            message=message,
            symbol=symbol,
            ladder_id=ladder_id,
            intent_id=intent_id,
            source=SOURCE,
        )
    )
    alert = Alert(
        level=level, code=code, message=message, symbol=symbol, ladder_id=ladder_id, intent_id=intent_id
    )
    emit(session, alert, msg_id=f"alert:{code}:{intent_id or ladder_id or symbol}:{ts_ms}", ts_ms=ts_ms)


def audit(session: Session, action: str, object_type: str, object_id: str, after: dict[str, Any]) -> None:
    session.add(
        AuditEntry(actor=SOURCE, action=action, object_type=object_type, object_id=object_id, after=after)
    )


def record_intent(session: Session, intent_id: str, kind: str, payload: dict[str, Any]) -> bool:
    """Insert the intent under its unique id; False when it was already there (a redelivery)."""
    result = session.execute(
        insert(Intent)
        .values(intent_id=intent_id, type=kind, state="RECORDED", payload=payload)
        .on_conflict_do_nothing(index_elements=["intent_id"])
    )
    return bool(result.rowcount)


def move_order(
    session: Session, order: Order, event: OrderEvent, note: str = "", **values: Any
) -> bool:
    """Advance ``order`` by ``event`` if it is still in the state we read; False if another
    worker moved it first."""
    target = advance_order(order.state, event)
    entry = {"at": utcnow().isoformat(), "from": order.state, "to": target, "event": event}
    if note:
        entry["note"] = note
    result = session.execute(
        update(Order)
        .where(Order.id == order.id, Order.state == order.state)
        .values(state=target, history=[*(order.history or []), entry], **values)
    )
    if result.rowcount:
        order.state = target
        for key, value in values.items():
            setattr(order, key, value)
        return True
    return False


def move_gtt(session: Session, gtt: Gtt, event: GttEvent, **values: Any) -> bool:
    target = advance_gtt(gtt.state, event)
    result = session.execute(
        update(Gtt).where(Gtt.id == gtt.id, Gtt.state == gtt.state).values(state=target, **values)
    )
    if result.rowcount:
        gtt.state = target
        for key, value in values.items():
            setattr(gtt, key, value)
        return True
    return False


def active_halt(session: Session) -> HaltRecord | None:
    return session.scalars(
        select(HaltRecord).where(HaltRecord.active.is_(True)).order_by(HaltRecord.id).limit(1)
    ).first()


def halt(session: Session, kind: str, reason: str, by: str) -> None:
    """Record a halt unless one of the same kind is active already."""
    existing = session.scalars(
        select(HaltRecord).where(HaltRecord.active.is_(True), HaltRecord.kind == kind)
    ).first()
    if existing is None:
        session.add(HaltRecord(kind=kind, reason=reason, by=by, active=True))


def clear_halts(session: Session, by: str, kinds: tuple[str, ...] | None = None) -> int:
    stmt = update(HaltRecord).where(HaltRecord.active.is_(True))
    if kinds:
        stmt = stmt.where(HaltRecord.kind.in_(kinds))
    return session.execute(stmt.values(active=False, cleared_at=utcnow(), cleared_by=by)).rowcount


def risk_state(
    session: Session,
    today_start: datetime,
    order: Order | None = None,
    exclude_gtt_id: int | None = None,
) -> RiskState:
    """The current risk picture from execution's own records in one query, not counting the
    order or GTT being checked."""
    exclude = order.id if order is not None else -1
    open_buy = (
        (Order.side == "BUY")
        & Order.state.not_in([OrderState.REJECTED, OrderState.CANCELLED])
        & Order.leg_closed_at.is_(None)
        & (Order.id != exclude)
    )
    legs = select(func.count()).where(open_buy).scalar_subquery()
    deployed = select(
        func.coalesce(
            func.sum(func.coalesce(Order.average_price, Order.ref_price)
                     * func.coalesce(func.nullif(Order.filled_qty, 0), Order.qty)),
            0,
        )
    ).where(open_buy).scalar_subquery()
    realised = select(func.coalesce(func.sum(Order.realised_pnl), 0)).where(
        Order.leg_closed_at >= today_start
    ).scalar_subquery()
    gtts = select(func.count()).select_from(Gtt).where(
        Gtt.state.in_(list(GTT_LIVE)), Gtt.id != (exclude_gtt_id or -1)
    ).scalar_subquery()
    halt = select(HaltRecord.reason).where(HaltRecord.active.is_(True)).order_by(
        HaltRecord.id).limit(1).scalar_subquery()
    twin = select(func.count()).where(
        Order.ladder_id == (order.ladder_id if order else ""),
        Order.leg == (order.leg if order else 0),
        Order.side == (order.side if order else ""),
        Order.state.not_in(list(ORDER_TERMINAL)),
        Order.id != exclude,
    ).scalar_subquery()
    row = session.execute(select(legs, deployed, realised, gtts, halt, twin)).one()
    n_legs, deployed_rupees, realised_rupees, n_gtts, halt_reason, twins = row
    loss = -Decimal(realised_rupees) if realised_rupees < 0 else Decimal(0)
    key = f"{order.ladder_id}:{order.leg}:{order.side}" if order is not None else ""
    return RiskState(
        halted=halt_reason is not None,
        halt_reason=halt_reason,
        market_open=True,
        open_legs=int(n_legs),
        deployed_paise=to_paise(Decimal(deployed_rupees).quantize(Decimal("0.01"))),
        realised_loss_today_paise=to_paise(loss.quantize(Decimal("0.01"))),
        active_gtts=int(n_gtts),
        live_order_keys={key} if twins else set(),
    )


def buy_order_of_leg(session: Session, ladder_id: str, leg: int) -> Order | None:
    return session.scalars(
        select(Order).where(
            Order.ladder_id == ladder_id,
            Order.leg == leg,
            Order.side == "BUY",
            Order.state == OrderState.FILLED,
        )
    ).first()


def close_leg(
    session: Session, ladder_id: str, leg: int, exit_price: int, ts_ms: int
) -> Order | None:
    """Mark the leg's entry order closed at event time ``ts_ms`` with its realised PnL; None if
    it was closed already. Event time, so that "today's loss" follows the market's day."""
    buy = buy_order_of_leg(session, ladder_id, leg)
    if buy is None or buy.leg_closed_at is not None:
        return None
    entry = buy.average_price or buy.ref_price
    pnl = (to_rupees(exit_price) - entry) * buy.filled_qty
    done = session.execute(
        update(Order)
        .where(Order.id == buy.id, Order.leg_closed_at.is_(None))
        .values(leg_closed_at=datetime.fromtimestamp(ts_ms / 1000, tz=UTC), realised_pnl=pnl)
    ).rowcount
    return buy if done else None


def gtt_of_leg(session: Session, ladder_id: str, leg: int) -> Gtt | None:
    return session.scalars(select(Gtt).where(Gtt.ladder_id == ladder_id, Gtt.leg == leg)).first()


def live_gtt_states() -> list[str]:
    return [s.value for s in GTT_LIVE]


def pending_gtts(session: Session) -> list[Gtt]:
    return list(
        session.scalars(
            select(Gtt).where(Gtt.state.in_([GttState.SUBMITTED, GttState.UNKNOWN])).order_by(Gtt.id)
        )
    )
