"""Execution's intent -> order path through KiteBroker and the simulator, on real Postgres and
Redis: a lost answer is found by its tag (never placed twice), a burst of orders meeting 429s is
queued and all sent once, a lost GTT create is adopted rather than duplicated."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.execution.brokers.kite import KiteBroker
from services.execution.budget import OrderBudget
from services.execution.faults import FaultPoints
from services.execution.processor import Execution
from services.execution.reconciler import Reconciler
from services.execution.states import GttState, OrderState
from shared.bus.publisher import OutboxRelay, Publisher
from shared.config import Settings
from shared.contracts.messages import PlaceGtt, PlaceOrder
from shared.domain.session import SessionRules
from shared.store.models import Gtt, Instrument, Order
from tests.integration.kite.kite_helpers import API_KEY, Sim, ist_ms, wait_for

TS = ist_ms("2025-01-06", "10:00")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    proc = Sim(Path(tmp_path_factory.mktemp("kite-exec")) / "state", symbols=20)
    yield proc
    proc.stop()


@pytest.fixture
def broker(sim: Sim) -> KiteBroker:
    sim.clear_faults()
    return KiteBroker(API_KEY, sim.login(), sim.root, timeout_s=3.0)


@pytest.fixture
def execution(sessions: sessionmaker[Session], redis_client: redis.Redis, broker: KiteBroker,
              redis_url: str, database_url: str) -> Execution:
    kite = broker.client()
    with sessions.begin() as session:
        for row in kite.instruments("NSE"):
            session.merge(Instrument(token=row["instrument_token"], exchange="NSE",
                                     tradingsymbol=row["tradingsymbol"], name=row["name"],
                                     tick_size=Decimal(str(row["tick_size"])),
                                     lot_size=row["lot_size"]))
    settings = Settings(redis_url=redis_url, database_url=database_url,
                        execution={"unknown_settle_s": 1})
    return Execution(sessions, broker, OrderBudget(redis_client, 10, 400, 5000), settings,
                     SessionRules(), FaultPoints(frozenset(), 0))


@pytest.fixture
def reconciler(execution: Execution, redis_client: redis.Redis) -> Reconciler:
    relay = OutboxRelay(execution.sessions, Publisher(redis_client, "execution"), "execution")
    return Reconciler(execution, relay)


def buy(
    broker: KiteBroker, symbol: str, leg: int = 1, qty: int = 1, bar: str = "1000"
) -> PlaceOrder:
    """An entry intent; ``bar`` keeps ids (and so tags) apart between tests on one simulator."""
    price = broker.ltp([f"NSE:{symbol}"])[f"NSE:{symbol}"]
    ladder = f"NSE:{symbol}:20250106{bar}"
    return PlaceOrder(intent_id=f"momentum:{ladder}:{leg}:buy", strategy="momentum", exchange="NSE",
                      symbol=symbol, ladder_id=ladder, leg=leg, ts_ms=TS, qty=qty, ref_price=price)


def sim_orders_with_tag(broker: KiteBroker, tag: str) -> int:
    return sum(1 for o in broker.orders() if o.tag == tag)


def order_row(sessions: sessionmaker[Session], intent_id: str) -> Order:
    with sessions() as session:
        return session.scalars(select(Order).where(Order.intent_id == intent_id)).one()


def test_lost_answer_is_found_by_tag_and_not_placed_again(
    execution, reconciler, sessions, broker, sim
):
    intent = buy(broker, "SBIN")
    sim.fault(kind="lose", count=1, paths=["/orders"], methods=["POST"])
    execution.place_order(intent)
    row = order_row(sessions, intent.intent_id)
    assert row.state == OrderState.UNKNOWN  # the answer was lost: nothing assumed
    execution.place_order(intent)  # a redelivery of the intent changes nothing
    reconciler.run_once()
    row = order_row(sessions, intent.intent_id)
    assert row.state == OrderState.FILLED and row.broker_order_id
    wait_for(lambda: sim_orders_with_tag(broker, row.tag) == 1, 5, "the order at the simulator")
    time.sleep(1.2)  # past the settle window: still one order
    reconciler.run_once()
    assert sim_orders_with_tag(broker, row.tag) == 1


def test_burst_meeting_429s_is_queued_and_all_sent_once(
    execution, reconciler, sessions, broker, sim
):
    symbols = [i["tradingsymbol"] for i in broker.client().instruments("NSE")][:15]
    sim.fault(kind="error", status=429, count=6, paths=["/orders"], methods=["POST"])
    intents = [buy(broker, s, bar="1015") for s in symbols]
    for intent in intents:
        execution.place_order(intent)
    reconciler.run_once()
    rows = [order_row(sessions, i.intent_id) for i in intents]
    assert all(r.state == OrderState.FILLED for r in rows), [(r.symbol, r.state) for r in rows]
    assert sim.state()["faults"]["hits"].get("error", 0) == 6
    book = [o for o in broker.orders() if o.tag in {r.tag for r in rows}]
    assert len(book) == len(intents)  # none dropped, none doubled
    assert broker.stats.rate_limited == 6  # only the injected ones: the rest kept to 10/s


def test_lost_gtt_create_is_adopted_not_doubled(execution, reconciler, sessions, broker, sim):
    intent = buy(broker, "ITC", qty=2, bar="1030")
    execution.place_order(intent)
    price = intent.ref_price
    stop = price * 975 // 1000 // 5 * 5
    gtt_intent = PlaceGtt(intent_id=f"momentum:{intent.ladder_id}:1:gtt", strategy="momentum",
                          exchange="NSE", symbol="ITC", ladder_id=intent.ladder_id, leg=1, ts_ms=TS,
                          qty=2, trigger=stop, target=None, last_price=price)
    sim.fault(kind="lose", count=1, paths=["/gtt/triggers"], methods=["POST"])
    execution.place_gtt(gtt_intent)
    with sessions() as session:
        assert session.scalars(select(Gtt)).one().state == GttState.UNKNOWN
    reconciler.run_once()
    with sessions() as session:
        gtt = session.scalars(select(Gtt)).one()
    assert gtt.state == GttState.ACTIVE and gtt.trigger_id
    live = [g for g in broker.gtts() if g.symbol == "ITC" and g.status.value == "active"]
    assert [g.trigger_id for g in live] == [gtt.trigger_id]


def test_not_found_means_not_placed_only_after_the_settle_window(
    execution, reconciler, sessions, broker, sim
):
    """A 503 before Kite took the order: UNKNOWN; absent from the book it is left alone until the
    settle window has passed, then sent again with the same tag: one order in the end."""
    intent = buy(broker, "HDFCBANK", bar="1045")
    sim.fault(kind="error", status=503, count=1, paths=["/orders"], methods=["POST"])
    execution.place_order(intent)
    assert order_row(sessions, intent.intent_id).state == OrderState.UNKNOWN
    reconciler.run_once()  # inside the settle window: not found is not yet "not placed"
    row = order_row(sessions, intent.intent_id)
    assert row.state == OrderState.UNKNOWN and sim_orders_with_tag(broker, row.tag) == 0
    time.sleep(1.2)
    reconciler.run_once()
    row = order_row(sessions, intent.intent_id)
    assert row.state == OrderState.FILLED and row.attempts == 2
    assert sim_orders_with_tag(broker, row.tag) == 1


def test_account_check_alerts_when_the_broker_holds_less(execution, sessions, broker):
    from services.execution.kite_orders import AccountCheck
    from shared.store.models import AlertRecord

    intent = buy(broker, "ICICIBANK", qty=2, bar="1100")
    execution.place_order(intent)
    check = AccountCheck(broker, sessions)
    check.run_once()
    assert check.last == {}  # Ratchet's leg and the account agree
    with sessions.begin() as session:  # a leg Ratchet believes open that the account lacks
        session.add(Order(intent_id="momentum:NSE:ICICIBANK:x:2:buy", tag="Rghost", exchange="NSE",
                          symbol="ICICIBANK", ladder_id="x", leg=2, side="BUY", qty=5,
                          order_type="MARKET", product="CNC", ref_price=Decimal("1"),
                          adds_risk=True, state=OrderState.FILLED, filled_qty=5, history=[]))
    check.run_once()  # seen once: could be an exit in flight
    with sessions() as session:
        assert not session.scalars(select(AlertRecord)).all()
    check.run_once()
    with sessions() as session:
        alerts = session.scalars(select(AlertRecord)).all()
    assert [a.code for a in alerts] == ["holdings_mismatch"]
    assert "hold 7" in alerts[0].message
