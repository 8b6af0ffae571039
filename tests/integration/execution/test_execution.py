"""Execution against the paper broker on real Postgres and Redis: intents in, orders and GTTs out,
and the crash windows of RELIABILITY.md settled from the broker's book."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import redis
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from services.execution import ledger
from services.execution.brokers.base import (
    BrokerOrder,
    BrokerOrderStatus,
    BrokerRejected,
    BrokerUnavailable,
    OrderRequest,
)
from services.execution.brokers.paper import PaperBroker, placements_engine
from services.execution.budget import OrderBudget
from services.execution.faults import FaultPoints
from services.execution.processor import Execution
from services.execution.reconciler import Reconciler
from services.execution.states import GttState, OrderState
from shared.bus.publisher import OutboxRelay, Publisher
from shared.config import Settings
from shared.contracts import streams
from shared.contracts.messages import ExitLeg, ModifyGtt, PlaceGtt, PlaceOrder, Side, decode
from shared.domain.session import SessionRules, ms_from_ist
from shared.store.models import (
    AlertRecord,
    Gtt,
    HaltRecord,
    Order,
    PaperGtt,
    PaperHolding,
    PaperOrder,
)
from tests.integration.execution.faulty_broker import FaultyBroker

TS = ms_from_ist(datetime(2026, 11, 24, 10, 0))  # a Tuesday, in session


@pytest.fixture
def settings(redis_url: str, database_url: str) -> Settings:
    return Settings(redis_url=redis_url, database_url=database_url,
                    execution={"unknown_settle_s": 0})


@pytest.fixture
def execution(
    sessions: sessionmaker[Session], redis_client: redis.Redis, settings: Settings
) -> Execution:
    budget = OrderBudget(redis_client, 10, 400, 5000)
    return Execution(sessions, PaperBroker(sessions), budget, settings, SessionRules(),
                     FaultPoints(frozenset(), 0))


@pytest.fixture
def reconciler(execution: Execution, redis_client: redis.Redis) -> Reconciler:
    relay = OutboxRelay(execution.sessions, Publisher(redis_client, "execution"), "execution")
    return Reconciler(execution, relay)


def buy(
    leg: int = 1, qty: int = 10, price: int = 100_000, ladder: str = "NSE:INFY:202611240945"
) -> PlaceOrder:
    return PlaceOrder(intent_id=f"momentum:{ladder}:{leg}:buy", strategy="momentum", exchange="NSE",
                      symbol="INFY", ladder_id=ladder, leg=leg, ts_ms=TS, qty=qty, ref_price=price)


def events(client: redis.Redis) -> list[str]:
    return [decode(f[b"d"]).type for _, f in client.xrange(streams.EXEC_EVENTS)]


def paper_orders(sessions: sessionmaker[Session], tag: str) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(PaperOrder).where(PaperOrder.tag == tag))


def test_entry_fills_and_is_placed_once_under_redelivery(
    execution, reconciler, sessions, redis_client
):
    intent = buy()
    execution.place_order(intent)
    execution.place_order(intent)  # a redelivery of the same intent
    reconciler.run_once()
    with sessions() as s:
        order = s.scalars(select(Order)).one()
    assert order.state == OrderState.FILLED
    assert paper_orders(sessions, order.tag) == 1
    answers = [decode(f[b"d"]) for _, f in redis_client.xrange(streams.EXEC_EVENTS)]
    # the redelivery is answered again, under the same message id (consumers dedupe by it)
    assert [a.type for a in answers] == ["OrderFilled", "OrderFilled"]
    assert len({a.id for a in answers}) == 1


def test_gtt_placed_raised_and_triggered_closes_the_leg(
    execution, reconciler, sessions, redis_client
):
    execution.place_order(buy())
    ladder = "NSE:INFY:202611240945"
    execution.place_gtt(PlaceGtt(intent_id=f"momentum:{ladder}:1:gtt", strategy="momentum",
                                 exchange="NSE", symbol="INFY", ladder_id=ladder, leg=1, ts_ms=TS,
                                 qty=10, trigger=97_500, target=105_000, last_price=100_000))
    execution.modify_gtt(ModifyGtt(intent_id=f"momentum:{ladder}:1:stop@19600", strategy="momentum",
                                   exchange="NSE", symbol="INFY", ladder_id=ladder, leg=1, ts_ms=TS,
                                   qty=10, trigger=98_000, target=105_000, last_price=100_600))
    with sessions() as s:
        gtt = s.scalars(select(Gtt)).one()
        paper = s.scalars(select(PaperGtt)).one()
    assert gtt.state == GttState.ACTIVE and gtt.trigger_price == paper.stop_trigger
    assert int(paper.stop_trigger * 100) == 98_000
    broker: PaperBroker = execution.broker  # type: ignore[assignment]
    assert broker.on_tick("INFY", 98_500) == []
    fired = broker.on_tick("INFY", 97_900)
    reconciler.triggered_by_tick(fired, TS + 1000)
    with sessions() as s:
        buy_row = s.scalars(select(Order).where(Order.side == "BUY")).one()
        assert s.scalars(select(Gtt)).one().state == GttState.TRIGGERED
    assert buy_row.leg_closed_at is not None
    assert float(buy_row.realised_pnl) == pytest.approx(-200.0)  # (980 - 1000) x 10
    assert events(redis_client)[-2:] == ["GttTriggered", "LegClosed"]


def test_crash_before_broker_call_places_exactly_once(execution, reconciler, sessions):
    """SIGKILL after SUBMITTED was committed, before the broker call: found nowhere, sent once."""
    intent = buy()
    order_id = execution._record_order(intent)
    with sessions.begin() as s:
        s.execute(update(Order).where(Order.id == order_id).values(
            state=OrderState.SUBMITTED, submitted_at=func.now() - timedelta(seconds=30)))
    execution.place_order(intent)  # the redelivered intent leaves it to the reconciler
    reconciler.run_once()
    reconciler.run_once()
    with sessions() as s:
        order = s.get(Order, order_id)
    assert order.state == OrderState.FILLED
    assert paper_orders(sessions, order.tag) == 1


def test_crash_after_broker_accepted_adopts_by_tag(execution, reconciler, sessions):
    """SIGKILL after the broker accepted, before the record: adopted by its tag, not re-sent."""
    intent = buy()
    order_id = execution._record_order(intent)
    with sessions.begin() as s:
        s.execute(update(Order).where(Order.id == order_id).values(
            state=OrderState.SUBMITTED, submitted_at=func.now() - timedelta(seconds=30)))
    with sessions() as s:
        tag = s.get(Order, order_id).tag
    from services.execution.brokers.base import OrderRequest
    execution.broker.place_order(OrderRequest(tag=tag, exchange="NSE", symbol="INFY", side="BUY",
                                              qty=10, order_type="MARKET", reference_price=100_000))
    reconciler.run_once()
    with sessions() as s:
        assert s.get(Order, order_id).state == OrderState.FILLED
    assert paper_orders(sessions, tag) == 1


def test_halt_blocks_entries_but_not_exits(execution, reconciler, sessions, redis_client):
    execution.place_order(buy(leg=1))
    with sessions.begin() as s:
        s.add(HaltRecord(kind="kill_switch", reason="test", by="admin", active=True))
    execution.place_order(buy(leg=2))
    ladder = "NSE:INFY:202611240945"
    execution.exit_leg(ExitLeg(intent_id=f"momentum:{ladder}:1:exit", strategy="momentum",
                               exchange="NSE", symbol="INFY", ladder_id=ladder, leg=1, ts_ms=TS,
                               qty=10, ref_price=101_000))
    reconciler.run_once()
    with sessions() as s:
        states = {(o.leg, o.side): (o.state, o.reason) for o in s.scalars(select(Order))}
    assert states[(2, "BUY")][0] == OrderState.REJECTED and "halted" in states[(2, "BUY")][1]
    assert states[(1, "SELL")][0] == OrderState.FILLED
    assert events(redis_client) == [
        "OrderFilled", "OrderRejected", "Alert", "OrderFilled", "LegClosed",
    ]


def test_order_from_an_earlier_day_not_found_is_not_resent(execution, reconciler, sessions):
    """Kite's book holds today only: yesterday's unresolved order is an alert, never a resend."""
    intent = buy()
    order_id = execution._record_order(intent)
    with sessions.begin() as s:
        s.execute(update(Order).where(Order.id == order_id).values(
            state=OrderState.UNKNOWN, submitted_at=func.now() - timedelta(hours=20)))
    reconciler.run_once()
    with sessions() as s:
        order = s.get(Order, order_id)
        alert = s.scalars(select(AlertRecord).where(AlertRecord.code == "order_unresolved")).one()
    assert order.state == OrderState.REJECTED and "earlier day" in order.reason
    assert alert.level == "critical"
    assert paper_orders(sessions, order.tag) == 0


def test_a_dropped_paper_book_connection_is_an_unknown_outcome_settled_by_tag(
    sessions: sessionmaker[Session], redis_client: redis.Redis, settings: Settings,
    database_url: str, request: pytest.FixtureRequest,
) -> None:
    """The paper book's placements skip the ping at checkout: a connection Postgres dropped
    fails that one call as outcome-unknown (never as a rejection, never retried blindly); the
    reconciler finds no order with its tag and sends it once; the pool then reconnects."""
    placements = placements_engine(database_url)
    request.addfinalizer(placements.dispose)
    execution = Execution(sessions, PaperBroker(sessions, placements),
                          OrderBudget(redis_client, 10, 400, 5000), settings, SessionRules(),
                          FaultPoints(frozenset(), 0))
    first, second = buy(), buy(ladder="NSE:INFY:202611241000")
    execution.place_order(first)
    with placements.connect() as conn:  # the one pooled connection the first order used
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with sessions() as session:
        session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    execution.place_order(second)
    with sessions() as session:
        lost = session.scalars(select(Order).where(Order.intent_id == second.intent_id)).one()
    assert lost.state == OrderState.UNKNOWN and "paper book unreachable" in lost.history[-1]["note"]
    relay = OutboxRelay(sessions, Publisher(redis_client, "execution"), "execution")
    Reconciler(execution, relay).run_once()
    with sessions() as session:
        settled = session.scalars(select(Order).where(Order.intent_id == second.intent_id)).one()
    assert settled.state == OrderState.FILLED
    assert paper_orders(sessions, settled.tag) == 1


def test_held_orders_are_updated_together_or_not_at_all(
    execution: Execution, sessions: sessionmaker[Session]
) -> None:
    """Queued updates of held rows are checked as they are sent: one that matches no row (its
    state moved, which holding the row should make impossible) fails the whole transaction."""
    execution.place_order(buy())
    execution.place_order(buy(ladder="NSE:INFY:202611241000"))
    with pytest.raises(ledger.HeldOrderMoved), sessions.begin() as session:
        held = session.scalars(select(Order).order_by(Order.id).with_for_update()).all()
        set_committed_value(held[1], "state", OrderState.SUBMITTED)  # a stale copy: it is FILLED
        with ledger.held_orders_updated_together(session):
            for order in held:
                assert ledger.update_order(session, order, reason="noted")
    with sessions() as session:
        assert session.scalars(select(Order.reason)).all() == [None, None]


def test_a_leg_bought_and_sold_in_one_send_run_is_closed(
    execution: Execution, sessions: sessionmaker[Session]
) -> None:
    """The entry's fill is queued when the sale's fill closes the leg in the same transaction:
    the close looks for the filled entry only after the queued updates are sent."""
    entry = buy()
    sale = entry.model_copy(update={"intent_id": f"{entry.intent_id}:sell", "side": Side.SELL})
    execution.place_orders([entry, sale])
    with sessions() as session:
        bought = session.scalars(select(Order).where(Order.intent_id == entry.intent_id)).one()
        sold = session.scalars(select(Order).where(Order.intent_id == sale.intent_id)).one()
    assert (bought.state, sold.state) == (OrderState.FILLED, OrderState.FILLED)
    assert bought.leg_closed_at is not None and bought.realised_pnl == 0


def _request(tag: str, symbol: str, qty: int, price: int, side: str = "BUY") -> OrderRequest:
    return OrderRequest(tag=tag, exchange="NSE", symbol=symbol, side=side, qty=qty,
                        order_type="MARKET", product="CNC", reference_price=price)


def test_a_waves_buys_go_into_the_paper_book_together_and_each_sale_alone(
    sessions: sessionmaker[Session],
) -> None:
    """One statement takes a wave's market buys (two of one symbol among them: the holding
    takes both, at their weighted price); a sale without holdings and a malformed order are
    refused on their own, and the answers keep the requests' order."""
    broker = PaperBroker(sessions)
    requests = [_request("Rb1", "INFY", 10, 100_000), _request("Rs1", "ITC", 5, 40_000, "SELL"),
                _request("Rb2", "INFY", 30, 110_000), _request("Rz1", "TCS", 0, 300_000),
                _request("Rb3", "TCS", 2, 300_000)]
    with ThreadPoolExecutor(2) as calls:
        outcomes = broker.place_orders(requests, calls)
    assert [type(o) for o in outcomes] == [BrokerOrder, BrokerRejected, BrokerOrder, BrokerRejected,
                                           BrokerOrder]
    assert [o.tag for o in outcomes if isinstance(o, BrokerOrder)] == ["Rb1", "Rb2", "Rb3"]
    assert "insufficient holdings of ITC" in str(outcomes[1])
    assert {tag: broker.order_by_tag(tag).status for tag in ("Rb1", "Rb2", "Rb3")} == {  # type: ignore[union-attr]
        "Rb1": BrokerOrderStatus.COMPLETE, "Rb2": BrokerOrderStatus.COMPLETE,
        "Rb3": BrokerOrderStatus.COMPLETE}
    assert broker.order_by_tag("Rs1") is None and broker.order_by_tag("Rz1") is None
    with sessions() as session:
        infy = session.get(PaperHolding, ("NSE", "INFY"))
        assert (infy.qty, infy.average_price) == (40, Decimal("1075.00"))  # type: ignore[union-attr]
    assert broker.holdings() == {("NSE", "INFY"): 40, ("NSE", "TCS"): 2}


def test_a_wave_whose_paper_book_connection_dropped_is_unknown_for_every_order(
    sessions: sessionmaker[Session], database_url: str, request: pytest.FixtureRequest,
) -> None:
    """The wave's one statement either placed all its buys or none; with the connection gone,
    nobody knows which, so each answer is outcome-unknown (settled by tag later), none a refusal."""
    placements = placements_engine(database_url, connections=1)
    request.addfinalizer(placements.dispose)
    broker = PaperBroker(sessions, placements)
    with placements.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with sessions() as session:
        session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with ThreadPoolExecutor(2) as calls:
        outcomes = broker.place_orders([_request("Ru1", "INFY", 1, 100_000),
                                        _request("Ru2", "TCS", 1, 300_000)], calls)
    assert all(isinstance(o, BrokerUnavailable) and "paper book unreachable" in str(o)
               for o in outcomes)
    assert broker.order_by_tag("Ru1") is None and broker.order_by_tag("Ru2") is None


def test_a_lost_gtt_that_fired_before_it_was_adopted_closes_its_leg(
    sessions: sessionmaker[Session], redis_client: redis.Redis, settings: Settings
) -> None:
    """The GTT was created but its answer lost, and the price fell through it before the
    reconciler looked. Matching adopts the triggered GTT and records the exit from its child
    order: the leg is closed, and no second GTT is made for a leg the broker already sold
    (found by the state-machine test: the leg stayed open with no stop)."""
    broker = FaultyBroker(sessions)
    execution = Execution(sessions, broker, OrderBudget(redis_client, 10, 400, 5000), settings,
                          SessionRules(), FaultPoints(frozenset(), 0))
    relay = OutboxRelay(sessions, Publisher(redis_client, "execution"), "execution")
    execution.place_order(buy())
    ladder = "NSE:INFY:202611240945"
    broker.next_gtt = ["lose"]
    execution.place_gtt(PlaceGtt(intent_id=f"momentum:{ladder}:1:gtt", strategy="momentum",
                                 exchange="NSE", symbol="INFY", ladder_id=ladder, leg=1, ts_ms=TS,
                                 qty=10, trigger=97_500, target=105_000, last_price=100_000))
    with sessions() as s:
        assert s.scalars(select(Gtt)).one().state == GttState.UNKNOWN
    broker._active = None  # the book's view of its GTTs, reloaded
    assert broker.on_tick("INFY", 97_000)  # fired at the broker, under an id execution never got
    Reconciler(execution, relay).run_once()
    with sessions() as s:
        buy_row = s.scalars(select(Order).where(Order.side == "BUY")).one()
        assert s.scalars(select(Gtt)).one().state == GttState.TRIGGERED
        assert s.scalar(select(func.count()).select_from(PaperGtt)) == 1
    assert buy_row.leg_closed_at is not None
    assert broker.holdings().get(("NSE", "INFY"), 0) == 0


def test_a_partly_filled_exit_books_what_sold_and_sells_the_rest(
    execution, reconciler, sessions, redis_client
):
    """A market-protected sale of a 10-share leg fills 4 and the rest is cancelled: the leg is
    not closed on 4 (6 shares held, their stop gone); the 4 are booked, a critical alert is
    raised and the other 6 are sold at market under one deterministic id; once they are, the
    leg closes with the PnL of all 10."""
    from dataclasses import replace

    from services.execution.brokers.base import BrokerInterface, BrokerTimeout

    class PartlyFilling(PaperBroker):
        place_orders = BrokerInterface.place_orders  # each order a call of its own
        rest_calls = 0

        def place_order(self, request: OrderRequest) -> BrokerOrder:
            if request.side == "SELL" and request.qty == 10:  # 4 fill, the rest is cancelled
                placed = super().place_order(replace(request, qty=4))
                return replace(placed, qty=10, status=BrokerOrderStatus.CANCELLED)
            if request.side == "SELL":
                self.rest_calls += 1
                if self.rest_calls == 1:
                    raise BrokerTimeout("scripted: timed out before the broker saw it")
            return super().place_order(request)

    execution.broker = reconciler.broker = PartlyFilling(sessions)
    execution.place_order(buy(qty=10, price=100_000))
    ladder = "NSE:INFY:202611240945"
    exit_id = f"momentum:{ladder}:1:exit"
    execution.exit_leg(ExitLeg(intent_id=exit_id, strategy="momentum", exchange="NSE",
                               symbol="INFY", ladder_id=ladder, leg=1, ts_ms=TS, qty=10,
                               ref_price=90_000))

    def rows() -> tuple[Order, Order, Order | None]:
        with sessions() as s:
            by_intent = {o.intent_id: o for o in s.scalars(select(Order))}
        return (by_intent[f"momentum:{ladder}:1:buy"], by_intent[exit_id],
                by_intent.get(f"{exit_id}:rest"))

    entry, sale, rest = rows()
    assert (sale.state, sale.filled_qty) == (OrderState.FILLED, 4)
    assert entry.leg_closed_at is None  # 6 shares still held
    assert entry.realised_pnl == Decimal("-400.00")  # the 4 sold at ₹900
    assert rest is not None and (rest.side, rest.qty, rest.state) == ("SELL", 6, "UNKNOWN")
    with sessions() as s:
        alert = s.scalars(select(AlertRecord)
                          .where(AlertRecord.code == "exit_partly_filled")).one()
    assert alert.level == "critical" and alert.intent_id == exit_id
    assert "LegClosed" not in events(redis_client)

    reconciler.run_once()  # the rest was never placed: sent again, and it fills
    entry, sale, rest = rows()
    assert rest is not None and (rest.state, rest.filled_qty) == (OrderState.FILLED, 6)
    assert entry.leg_closed_at is not None
    assert entry.realised_pnl == Decimal("-1000.00")  # (900 - 1000) x 10, booked once
    with sessions() as s:
        assert s.get(PaperHolding, ("NSE", "INFY")).qty == 0
    assert events(redis_client).count("LegClosed") == 1
