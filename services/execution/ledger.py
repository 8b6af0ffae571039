"""Execution's records in Postgres: intents, orders, GTTs, halts and the risk picture.

Every state change is a conditional UPDATE on the expected state, and every event that tells the
other services about it is staged in the outbox in the same transaction.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import Select, String, Update, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

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
from shared.store.bulk import ColumnsInsert, ColumnsUpdate, any_of, none_of
from shared.store.models import AlertRecord, AuditEntry, Gtt, HaltRecord, Intent, Order, RiskBook

SOURCE = "execution"
RISK_LOCK = zlib.crc32(b"execution:risk")  # the advisory lock of the guards
HALT_LOCK = zlib.crc32(b"execution:halts")  # shared by runs of broker calls; writes to halts wait


def order_tag(intent_id: str) -> str:
    """Kite's tag: alphanumeric, at most 20 characters, one per intent."""
    return "R" + hashlib.sha256(intent_id.encode()).hexdigest()[:19]


def utcnow() -> datetime:
    return datetime.now(UTC)


def emit(session: Session, payload: Payload, *, msg_id: str, ts_ms: int) -> None:
    stage(session, streams.EXEC_EVENTS, payload, msg_id=msg_id, ts_ms=ts_ms, source=SOURCE)


def rows_updated(session: Session, stmt: Update) -> int:
    """Run an UPDATE; the number of rows it matched."""
    result = session.execute(stmt)
    assert isinstance(result, CursorResult)  # what an UPDATE returns, though typed as a Result
    return result.rowcount


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
        level=level, code=code, message=message, symbol=symbol, ladder_id=ladder_id,
        intent_id=intent_id,
    )
    emit(session, alert, msg_id=f"alert:{code}:{intent_id or ladder_id or symbol}:{ts_ms}",
         ts_ms=ts_ms)


def audit(
    session: Session, action: str, object_type: str, object_id: str, after: dict[str, Any]
) -> None:
    audit_all(session, [(action, object_type, object_id, after)])


def audit_all(session: Session, entries: Sequence[tuple[str, str, str, dict[str, Any]]]) -> None:
    """Audit rows (action, object type, object id, after) by execution, in one statement."""
    _INSERT_AUDIT.execute(session, [
        {"actor": SOURCE, "action": action, "object_type": object_type, "object_id": object_id,
         "after": after} for action, object_type, object_id, after in entries])


def record_intent(session: Session, intent_id: str, kind: str, payload: dict[str, Any]) -> bool:
    """Insert the intent under its unique id; False when it was already there (a redelivery)."""
    return bool(record_intents(session, [(intent_id, kind, payload)]))


def record_intents(
    session: Session, intents: Sequence[tuple[str, str, dict[str, Any]]]
) -> set[str]:
    """Insert intents (id, type, payload) in one statement; those already there are left as
    they were. Returns the ids that were new."""
    rows = {intent_id: {"intent_id": intent_id, "type": kind, "state": "RECORDED",
                        "payload": payload}
            for intent_id, kind, payload in intents}
    if not rows:
        return set()
    return set(_INSERT_INTENTS.execute(session, list(rows.values())).scalars())


def insert_orders(session: Session, orders: Sequence[Order]) -> None:
    """Store the orders not stored yet (no id) in one INSERT, each in the state it has now, with
    an audit row each; their ids are set on them."""
    new = [o for o in orders if o.id is None]
    if not new:
        return
    ids: dict[str, int] = dict(_INSERT_ORDERS.execute(  # type: ignore[arg-type]
        session, [{key: getattr(o, key) for key in _ORDER_FIELDS} for o in new]).all())
    for order in new:
        order.id = ids[order.intent_id]
    audit_all(session, [("order.recorded", "order", o.intent_id, {"side": o.side, "qty": o.qty})
                        for o in new])


def lock_risk(session: Session) -> None:
    """Serialise the guards of every replica until this transaction ends: two orders checked at
    once would each see room for one more leg and both pass."""
    session.execute(_LOCK_RISK)


# The hot path's statements, built once (SQLAlchemy then reuses their compiled form).
_ORDER_FIELDS = (
    "intent_id", "tag", "exchange", "symbol", "ladder_id", "leg", "side", "qty", "order_type",
    "product", "ref_price", "adds_risk", "state", "filled_qty", "attempts", "reason", "history",
    "submitted_at",
)
_INSERT_INTENTS = ColumnsInsert(Intent.__table__, ("intent_id", "type", "state", "payload"),
                                skip_existing=("intent_id",), returning=("intent_id",))
_INSERT_ORDERS = ColumnsInsert(Order.__table__, _ORDER_FIELDS, returning=("intent_id", "id"))
_INSERT_AUDIT = ColumnsInsert(AuditEntry.__table__,
                              ("actor", "action", "object_type", "object_id", "after"))
_LOCK_RISK = select(func.pg_advisory_xact_lock(RISK_LOCK))
_HOLD_HALTS = select(func.pg_advisory_xact_lock_shared(HALT_LOCK))
_HALT_REASON = (select(HaltRecord.__table__.c.reason).where(HaltRecord.__table__.c.active.is_(True))
                .order_by(HaltRecord.__table__.c.id).limit(1))


@cache
def _order_update(keys: tuple[str, ...]) -> ColumnsUpdate:
    """``UPDATE orders SET <keys> WHERE id = order_id AND state = expected`` for one order or
    many in one statement, one per key set."""
    return ColumnsUpdate(Order.__table__, {"order_id": "id", "expected": "state"}, keys)


def move_order(
    session: Session, order: Order, event: OrderEvent, note: str = "", **values: Any
) -> bool:
    """Advance ``order`` by ``event`` if it is still in the state we read; False if another
    worker moved it first. An order not yet in the database takes its first state in place,
    so it is inserted once, in that state."""
    target = advance_order(order.state, event)
    entry = {"at": utcnow().isoformat(), "from": order.state, "to": target, "event": event}
    if note:
        entry["note"] = note
    values = {"state": target, "history": [*(order.history or []), entry], **values}
    if order.id is None:  # not stored yet
        for key, value in values.items():
            setattr(order, key, value)
        return True
    return update_order(session, order, **values)


def update_order(session: Session, order: Order, **values: Any) -> bool:
    """One conditional UPDATE of a stored order (``WHERE state`` is still what we read), kept
    in step on ``order`` without marking it dirty, so no second UPDATE follows at the flush.
    Inside :func:`held_orders_updated_together` it is queued instead, and counts as done."""
    params = {"order_id": order.id, "expected": order.state, **values}
    queued: _QueuedUpdates | None = session.info.get(_QUEUED_UPDATES)
    if queued is not None:
        queued.add(session, tuple(sorted(values)), params)
    elif not _order_update(tuple(sorted(values))).execute(session, [params]):
        return False
    for key, value in values.items():
        set_committed_value(order, key, value)
    return True


_QUEUED_UPDATES = "ratchet.queued_order_updates"


class HeldOrderMoved(RuntimeError):
    """An order row this transaction holds locked was not in the state read: a bug, so the
    transaction is rolled back rather than recorded."""


class _QueuedUpdates:
    """Order updates waiting to be sent, by set of columns."""

    def __init__(self) -> None:
        self.by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self.orders: set[int] = set()

    def add(self, session: Session, columns: tuple[str, ...], params: dict[str, Any]) -> None:
        if params["order_id"] in self.orders:  # a second change of one order goes after the first
            self.send(session)
        self.by_columns.setdefault(columns, []).append(params)
        self.orders.add(params["order_id"])

    def send(self, session: Session) -> None:
        for columns, params in self.by_columns.items():
            matched = _order_update(columns).execute(session, params)
            if matched != len(params):
                raise HeldOrderMoved(f"{len(params) - matched} of {len(params)} held orders moved")
        self.by_columns.clear()
        self.orders.clear()


def send_queued_updates(session: Session) -> None:
    """Send the order updates queued so far, so that a query that follows sees them."""
    queued: _QueuedUpdates | None = session.info.get(_QUEUED_UPDATES)
    if queued is not None:
        queued.send(session)


@contextmanager
def held_orders_updated_together(session: Session) -> Iterator[None]:
    """Within, the order updates of :func:`update_order` are queued, then sent as one
    statement per set of columns (one round trip, not one each);
    a query of orders within calls :func:`send_queued_updates` first. Only for orders this
    transaction holds locked: no other worker can move them, so every update must match its
    row; the total row count checks it."""
    queued = _QueuedUpdates()
    session.info[_QUEUED_UPDATES] = queued
    try:
        yield
    finally:
        del session.info[_QUEUED_UPDATES]
    queued.send(session)


def move_gtt(session: Session, gtt: Gtt, event: GttEvent, **values: Any) -> bool:
    target = advance_gtt(gtt.state, event)
    if rows_updated(
        session,
        update(Gtt).where(Gtt.id == gtt.id, Gtt.state == gtt.state).values(state=target, **values),
    ):
        gtt.state = target
        for key, value in values.items():
            setattr(gtt, key, value)
        return True
    return False


def hold_halts(session: Session) -> None:
    """Hold the halts lock shared until this transaction ends: any write to ``halts`` (its
    trigger takes the lock exclusively, migration 0005) waits until then. Never write a halt
    from the thread that holds it: that write would wait for itself."""
    session.execute(_HOLD_HALTS)


def halt_reason(session: Session) -> str | None:
    """Why new risk is halted right now, or None (one small query)."""
    return session.execute(_HALT_REASON).scalar()


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
    return rows_updated(session, stmt.values(active=False, cleared_at=utcnow(), cleared_by=by))


def _exposure() -> Any:
    """An order's capital as an open leg (NULL if it is none): migration 0004's SQL function."""
    o = Order.__table__.c
    return func.order_exposure(o.side, o.leg_closed_at, o.state, o.average_price, o.ref_price,
                               o.filled_qty, o.qty)


def _open_leg_totals() -> tuple[Any, Any]:
    """The number of open legs among the orders selected, and the capital in them."""
    exposure = _exposure()
    return func.count(exposure), func.coalesce(func.sum(exposure), 0)


def _book_row() -> tuple[Any, Any]:
    """The book's two figures as scalar subqueries (NULL without its row)."""
    b = RiskBook.__table__.c
    return (select(b.open_legs).where(b.id == 1).scalar_subquery(),
            select(b.deployed).where(b.id == 1).scalar_subquery())


def _risk_picture() -> Select[Any]:
    """The guards' picture in one statement (built once): open legs and the capital in them
    (the risk book, less the orders being checked), today's realised PnL, live GTTs, the active
    halt, and the live orders on the legs being checked. Parameters: ``exclude`` (order ids),
    ``today``, ``gtt`` (an id), ``ladders`` and ``legs`` (``ladder:leg:side`` keys)."""
    o = Order.__table__.c
    legs, deployed = _open_leg_totals()
    checked = select(legs.label("legs"), deployed.label("deployed")).where(
        any_of(o.id, "exclude")).subquery()
    book_legs, book_deployed = _book_row()
    realised = select(func.coalesce(func.sum(o.realised_pnl), 0)).where(
        o.leg_closed_at.is_not(None), o.leg_closed_at >= bindparam("today")).scalar_subquery()
    g = Gtt.__table__.c
    gtts = select(func.count()).where(
        g.state.in_([s.value for s in GTT_LIVE]), g.id != bindparam("gtt")).scalar_subquery()
    halt = _HALT_REASON.scalar_subquery()
    leg_key = func.concat(o.ladder_id, ":", o.leg, ":", o.side)
    live = select(func.array_agg(leg_key)).where(
        any_of(o.ladder_id, "ladders", String()),  # by the ladder's index, then the exact leg
        any_of(leg_key, "legs", String()),
        o.state.not_in([s.value for s in ORDER_TERMINAL]),
        none_of(o.id, "exclude"),
    ).scalar_subquery()
    return select(book_legs - checked.c.legs, book_deployed - checked.c.deployed,
                  realised, gtts, halt, live)


_RISK_PICTURE = _risk_picture()


_RECOUNT = select(*(select(total).scalar_subquery() for total in _open_leg_totals()))
_BOOK_AND_RECOUNT = select(*_book_row(), *_RECOUNT.selected_columns)


def risk_book_drift(session: Session) -> str | None:
    """How the risk book differs from a recount of the orders, or None when they agree. One
    statement, so one snapshot: a commit changes its orders and the book together."""
    legs, deployed, counted, capital = session.execute(_BOOK_AND_RECOUNT).one()
    if (legs, deployed) == (counted, capital):
        return None
    return f"book {legs} legs / ₹{deployed}, orders {counted} legs / ₹{capital}"


def rebuild_risk_book(session: Session) -> None:
    """Set the book to a recount, with every change to orders held off until this transaction
    ends (a change committed meanwhile would be in neither)."""
    session.execute(text("LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE"))
    counted, capital = session.execute(_RECOUNT).one()
    session.execute(insert(RiskBook.__table__).values(id=1, open_legs=counted, deployed=capital)
                    .on_conflict_do_update(index_elements=["id"],
                                           set_={"open_legs": counted, "deployed": capital}))


class RiskBookMissing(RuntimeError):
    """The risk book's one row is gone (deleted by hand, or a restore without it)."""


def risk_state(
    session: Session,
    today_start: datetime,
    checking: Sequence[Order] = (),
    exclude_gtt_id: int | None = None,
) -> RiskState:
    """The current risk picture from execution's own records in one query, not counting the
    orders being checked (nor the GTT being placed). Call it before this transaction changes
    any order: the book holds what is committed, while the orders it subtracts are read as this
    transaction sees them. Without a book row it raises (the guards fail closed)."""
    row = session.execute(_RISK_PICTURE, {
        "exclude": [o.id for o in checking if o.id is not None],
        "today": today_start,
        "gtt": exclude_gtt_id or -1,
        "ladders": sorted({o.ladder_id for o in checking}),
        "legs": sorted({f"{o.ladder_id}:{o.leg}:{o.side}" for o in checking}),
    }).one()
    n_legs, deployed_rupees, realised_rupees, n_gtts, halt_reason, live = row
    if n_legs is None:
        raise RiskBookMissing("the risk_book row is missing: no order is guarded until the "
                              "minute's check rebuilds it from the orders")
    loss = -Decimal(realised_rupees) if realised_rupees < 0 else Decimal(0)
    return RiskState(
        halted=halt_reason is not None,
        halt_reason=halt_reason,
        market_open=True,
        open_legs=int(n_legs),
        deployed_paise=to_paise(Decimal(deployed_rupees).quantize(Decimal("0.01"))),
        realised_loss_today_paise=to_paise(loss.quantize(Decimal("0.01"))),
        active_gtts=int(n_gtts),
        live_order_keys=set(live or ()),
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
    it was closed already. Event time, so that "today's loss" follows the market's day. What
    partly filled exits sold before (:func:`book_sold_part`) is booked already; the rest of the
    leg is booked here at ``exit_price``."""
    send_queued_updates(session)  # the entry's fill may be queued in this very transaction
    buy = buy_order_of_leg(session, ladder_id, leg)
    if buy is None or buy.leg_closed_at is not None:
        return None
    sold = session.scalar(select(func.coalesce(func.sum(Order.filled_qty), 0)).where(
        Order.ladder_id == ladder_id, Order.leg == leg, Order.side == "SELL",
        Order.state == OrderState.FILLED, Order.filled_qty < Order.qty))
    done = rows_updated(
        session,
        update(Order)
        .where(Order.id == buy.id, Order.leg_closed_at.is_(None))
        .values(leg_closed_at=datetime.fromtimestamp(ts_ms / 1000, tz=UTC),
                realised_pnl=_plus_pnl(buy, exit_price, max(buy.filled_qty - (sold or 0), 0))),
    )
    return buy if done else None


def book_sold_part(session: Session, ladder_id: str, leg: int, exit_price: int, qty: int) -> None:
    """Add the PnL of ``qty`` shares of an open leg sold by a partly filled exit to its entry
    order, which stays open: the rest is still held, and :func:`close_leg` books it."""
    send_queued_updates(session)
    buy = buy_order_of_leg(session, ladder_id, leg)
    if buy is None or buy.leg_closed_at is not None:
        return
    session.execute(update(Order).where(Order.id == buy.id, Order.leg_closed_at.is_(None))
                    .values(realised_pnl=_plus_pnl(buy, exit_price, qty)))


def _plus_pnl(buy: Order, exit_price: int, qty: int) -> Any:
    """The entry order's realised PnL plus that of ``qty`` shares sold at ``exit_price``, in
    SQL, so parts booked by other transactions are added to, never overwritten."""
    entry = buy.average_price or buy.ref_price
    return func.coalesce(Order.realised_pnl, 0) + (to_rupees(exit_price) - entry) * qty


def gtt_of_leg(session: Session, ladder_id: str, leg: int) -> Gtt | None:
    return session.scalars(select(Gtt).where(Gtt.ladder_id == ladder_id, Gtt.leg == leg)).first()


def live_gtt_states() -> list[str]:
    return [s.value for s in GTT_LIVE]


def pending_gtts(session: Session) -> list[Gtt]:
    return list(
        session.scalars(
            select(Gtt).where(Gtt.state.in_([GttState.SUBMITTED, GttState.UNKNOWN]))
            .order_by(Gtt.id)
        )
    )
