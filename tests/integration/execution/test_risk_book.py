"""The risk book (migration 0004) stays equal to the open legs it stands for, whatever is written
to ``orders``: inserts, any column changed, deletes, rolled-back transactions and TRUNCATE. The
oracle here is the guards' old definition, counted in Python from the rows themselves."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from services.execution import ledger
from services.execution.brokers.paper import PaperBroker
from services.execution.budget import OrderBudget
from services.execution.faults import FaultPoints
from services.execution.processor import Execution
from services.execution.reconciler import Reconciler
from shared.bus.publisher import OutboxRelay, Publisher
from shared.config import Settings
from shared.domain.session import SessionRules
from shared.store.models import AlertRecord, Order, RiskBook
from tests.integration.execution.book_oracle import book, open_legs

STATES = ("NEW", "SUBMITTED", "OPEN", "UNKNOWN", "FILLED", "REJECTED", "CANCELLED")
CLOSED_AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


prices = st.decimals(min_value=Decimal("0.05"), max_value=Decimal("5000"), places=2)
new_order = st.fixed_dictionaries({
    "side": st.sampled_from(("BUY", "SELL")), "state": st.sampled_from(STATES),
    "qty": st.integers(1, 500), "filled_qty": st.integers(0, 500), "ref_price": prices,
    "average_price": st.none() | prices, "closed": st.sampled_from((False, False, True))})
change = st.one_of(
    st.fixed_dictionaries({"state": st.sampled_from(STATES)}),
    st.fixed_dictionaries({"filled_qty": st.integers(0, 500), "average_price": st.none() | prices}),
    st.fixed_dictionaries({"leg_closed_at": st.sampled_from((None, CLOSED_AT))}),
    st.fixed_dictionaries({"side": st.sampled_from(("BUY", "SELL"))}),
    st.fixed_dictionaries({"qty": st.integers(1, 500), "ref_price": prices}),
)
OPEN_BUY = {"side": "BUY", "state": "SUBMITTED", "qty": 10, "filled_qty": 0,
            "ref_price": Decimal("100"), "average_price": None, "closed": False}
step = st.one_of(
    st.tuples(st.just("insert"), st.lists(new_order, min_size=1, max_size=5)),
    st.tuples(st.just("update"), st.integers(0, 40), change),
    st.tuples(st.just("delete"), st.integers(0, 40)),
    st.tuples(st.just("rolled_back"), new_order),
    st.tuples(st.just("truncate"), st.none()),
    # several changes to the same rows in one transaction: inserted, changed twice, deleted
    st.tuples(st.just("together"), new_order, st.lists(change, min_size=1, max_size=3),
              st.booleans()),
)


def an_order(n: int, **fields: object) -> Order:
    values: dict[str, object] = {"side": "BUY", "qty": 10, "ref_price": Decimal("100"),
                                 "state": "FILLED", "filled_qty": 0, "average_price": None,
                                 "leg_closed_at": None, **fields}
    return Order(intent_id=f"i{n}", tag=f"T{n}", exchange="NSE", symbol="INFY", ladder_id=f"L{n}",
                 leg=1, order_type="MARKET", adds_risk=values["side"] == "BUY", attempts=0,
                 history=[], **values)


def apply(sessions: sessionmaker[Session], serial: list[int], kind: str, arg: object,
          more: object = None, deleted: bool = False) -> None:
    """One step, in a transaction of its own (committed, or rolled back for ``rolled_back``)."""
    with sessions() as session:
        if kind == "truncate":
            session.execute(text("TRUNCATE orders CASCADE"))
        elif kind == "together":
            serial[0] += 1
            fields = {k: v for k, v in arg.items() if k != "closed"}  # type: ignore[union-attr]
            order = an_order(serial[0], **fields)
            session.add(order)
            session.flush()
            for values in more:  # type: ignore[union-attr]
                session.execute(update(Order).where(Order.id == order.id).values(**values))
            if deleted:
                session.execute(delete(Order).where(Order.id == order.id))
        elif kind in ("insert", "rolled_back"):
            for spec in arg if kind == "insert" else [arg]:  # type: ignore[union-attr]
                serial[0] += 1
                fields = {k: v for k, v in spec.items() if k != "closed"}
                session.add(an_order(serial[0], **fields,
                                     leg_closed_at=CLOSED_AT if spec["closed"] else None))
            session.flush()  # the deferred triggers fire at commit, or never
            if kind == "rolled_back":
                session.rollback()
                return
        else:
            ids = session.scalars(select(Order.id).order_by(Order.id)).all()
            if not ids:
                return
            target = Order.id == ids[arg % len(ids)]  # type: ignore[operator]
            if kind == "update":
                session.execute(update(Order).where(target).values(**more))  # type: ignore[arg-type]
            else:
                session.execute(delete(Order).where(target))
        session.commit()


@settings(max_examples=int(os.environ.get("RATCHET_PROPERTY_EXAMPLES", "100")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=2, max_size=25))
# The edges, always tried: a leg's side changed both ways, filled at another price, closed.
@example(steps=[("insert", [OPEN_BUY]), ("update", 0, {"side": "SELL"}),
                ("update", 0, {"side": "BUY"})])
@example(steps=[("insert", [OPEN_BUY]),
                ("update", 0, {"filled_qty": 7, "average_price": Decimal("101.5")}),
                ("update", 0, {"leg_closed_at": CLOSED_AT}),
                ("update", 0, {"leg_closed_at": None})])
def test_the_risk_book_equals_the_open_legs(sessions: sessionmaker[Session],
                                            steps: list[tuple]) -> None:
    with sessions.begin() as session:
        session.execute(text("TRUNCATE orders CASCADE"))
    serial = [0]
    for kind, *args in steps:
        apply(sessions, serial, kind, *args)
        with sessions() as session:
            assert book(session) == open_legs(session), (kind, args)


def test_the_guards_picture_is_the_book_less_the_orders_checked(
        sessions: sessionmaker[Session]) -> None:
    """Orders being checked that are already stored count neither as legs nor as capital."""
    with sessions.begin() as session:
        session.add_all(an_order(n, state=s) for n, s in enumerate(("FILLED", "NEW", "REJECTED")))
    with sessions() as session:
        checking = session.scalars(select(Order).where(Order.state == "NEW")).all()
        everything = ledger.risk_state(session, CLOSED_AT)
        without = ledger.risk_state(session, CLOSED_AT, checking)
    assert (everything.open_legs, everything.deployed_paise) == (2, 2 * 10 * 100_00)
    assert (without.open_legs, without.deployed_paise) == (1, 10 * 100_00)


def test_without_its_row_the_guards_refuse_every_order(sessions: sessionmaker[Session]) -> None:
    """A book deleted by hand is not an empty book: the guards fail closed."""
    with sessions.begin() as session:
        session.execute(delete(RiskBook))
    with sessions() as session, pytest.raises(ledger.RiskBookMissing):
        ledger.risk_state(session, CLOSED_AT)


@pytest.mark.parametrize("damage", ["UPDATE risk_book SET open_legs = 7", "DELETE FROM risk_book"])
def test_a_damaged_book_is_found_and_rebuilt_from_the_orders(
    sessions: sessionmaker[Session], redis_client: redis.Redis, database_url: str, damage: str
) -> None:
    """The execution service's minute check: a book that no longer matches the orders (edited by
    hand, lost in a restore) is rebuilt from them, with a critical alert saying what it was."""
    with sessions.begin() as session:
        session.add_all(an_order(n, state=s)
                        for n, s in enumerate(("FILLED", "SUBMITTED", "REJECTED")))
    with sessions.begin() as session:
        session.execute(text(damage))
    execution = Execution(sessions, PaperBroker(sessions), OrderBudget(redis_client, 10, 400, 5000),
                          Settings(database_url=database_url), SessionRules(),
                          FaultPoints(frozenset(), 0))
    relay = OutboxRelay(sessions, Publisher(redis_client, "execution"), "execution")
    reconciler = Reconciler(execution, relay)
    reconciler.check_risk_book()
    with sessions() as session:
        assert book(session) == open_legs(session) == (2, Decimal("2000.00"))
        alert = session.scalars(select(AlertRecord)).one()
    assert alert.code == "risk_book_rebuilt" and alert.level == "critical"
    reconciler.check_risk_book()  # in step now: nothing more to say
    with sessions() as session:
        assert len(session.scalars(select(AlertRecord)).all()) == 1
