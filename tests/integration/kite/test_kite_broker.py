"""KiteBroker through the official SDK against the simulator: every method of the broker
interface, and Kite's errors as the typed broker errors (what may be retried, what is
reconciled)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.execution.brokers.base import (
    BrokerAuthError,
    BrokerOrderStatus,
    BrokerRateLimited,
    BrokerRejected,
    BrokerTimeout,
    BrokerUnavailable,
    GttRequest,
    GttStatus,
    OrderRequest,
)
from services.execution.brokers.kite import KiteBroker
from tests.integration.kite.kite_helpers import API_KEY, Sim


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    proc = Sim(Path(tmp_path_factory.mktemp("kite-broker")) / "state")
    yield proc
    proc.stop()


@pytest.fixture
def broker(sim: Sim) -> Iterator[KiteBroker]:
    sim.clear_faults()
    refused: list[str] = []
    b = KiteBroker(API_KEY, sim.login(), sim.root, timeout_s=2.0, sleep=lambda _s: None,
                   on_auth_error=refused.append)
    b.refused = refused  # type: ignore[attr-defined]
    yield b
    sim.clear_faults()


def ltp(broker: KiteBroker, symbol: str) -> int:
    return broker.ltp([f"NSE:{symbol}"])[f"NSE:{symbol}"]


def market(tag: str, symbol: str = "SBIN", side: str = "BUY", qty: int = 2) -> OrderRequest:
    return OrderRequest(tag=tag, exchange="NSE", symbol=symbol, side=side, qty=qty,
                        order_type="MARKET", market_protection_pct="2", algo_id="ALGO1")


def test_market_order_fills_and_is_found_by_tag_and_id(broker: KiteBroker) -> None:
    price = ltp(broker, "SBIN")
    placed = broker.place_order(market("Rtest1"))
    assert placed.status == BrokerOrderStatus.COMPLETE
    assert placed.filled_qty == 2 and placed.average_price == price
    assert placed.tag == "Rtest1" and placed.side == "BUY" and placed.symbol == "SBIN"
    assert broker.order_by_tag("Rtest1") == placed
    assert broker.order(placed.order_id) == placed
    assert broker.order_by_tag("Rnothere") is None
    assert broker.order("999999999999") is None
    assert broker.holdings()[("NSE", "SBIN")] >= 2
    assert broker.positions()[("NSE", "SBIN")] >= 2


def test_a_fresh_look_by_tag_sees_what_another_replica_placed(
    sim: Sim, broker: KiteBroker
) -> None:
    """The order book is cached for half a second per process; the look before an order is sent
    again must not trust it: another replica may have placed the order just now (and died)."""
    assert broker.order_by_tag("Rother1") is None  # the book is now cached here
    other = KiteBroker(API_KEY, sim.login(), sim.root, timeout_s=2.0, sleep=lambda _s: None)
    placed = other.place_order(market("Rother1"))
    broker.orders_cache_s = 60.0  # however slow this machine, the cache is still warm
    assert broker.order_by_tag("Rother1") is None  # from the cache, taken before
    assert broker.order_by_tag("Rother1", fresh=True) == placed


def test_limit_order_rests_and_cancels_once(broker: KiteBroker) -> None:
    price = ltp(broker, "INFY")
    below = (price * 95 // 100) // 10 * 10
    placed = broker.place_order(OrderRequest(tag="Rlimit1", exchange="NSE", symbol="INFY",
                                             side="BUY", qty=1, order_type="LIMIT", price=below))
    assert placed.status == BrokerOrderStatus.OPEN and placed.filled_qty == 0
    broker.cancel_order(placed.order_id)
    assert broker.order(placed.order_id).status == BrokerOrderStatus.CANCELLED  # type: ignore[union-attr]
    with pytest.raises(BrokerRejected):
        broker.cancel_order(placed.order_id)


def test_rejections_are_final(broker: KiteBroker, sim: Sim) -> None:
    with pytest.raises(BrokerRejected):  # not a valid tag: refused before any request
        broker.place_order(market("bad-tag!"))
    with pytest.raises(BrokerRejected):  # Kite's InputException: unknown instrument
        broker.place_order(market("Rnosuch", symbol="NOSUCHSYMBOL"))
    sim.admin("POST", "/faults/reject", {"count": 1, "message": "RMS: margin exceeds"})
    placed = broker.place_order(market("Rrms1"))
    assert placed.status == BrokerOrderStatus.REJECTED
    assert placed.status_message == "RMS: margin exceeds"


def test_gtt_oco_lifecycle_to_its_child_order(broker: KiteBroker, sim: Sim) -> None:
    broker.place_order(market("Rgttbuy", symbol="ITC", qty=3))
    price = ltp(broker, "ITC")
    stop, target = price * 97 // 100 // 5 * 5, price * 105 // 100 // 5 * 5
    request = GttRequest(exchange="NSE", symbol="ITC", qty=3, last_price=price, stop_trigger=stop,
                         stop_limit=stop - 50, target_trigger=target, target_limit=target - 50)
    trigger_id = broker.place_gtt(request)
    gtt = next(g for g in broker.gtts() if g.trigger_id == trigger_id)
    assert (gtt.status, gtt.symbol, gtt.qty, gtt.stop_trigger, gtt.target_trigger) == (
        GttStatus.ACTIVE, "ITC", 3, stop, target)
    raised = GttRequest(exchange="NSE", symbol="ITC", qty=3, last_price=price,
                        stop_trigger=stop + 100, stop_limit=stop + 50, target_trigger=target,
                        target_limit=target - 50)
    broker.modify_gtt(trigger_id, raised)
    assert next(g for g in broker.gtts() if g.trigger_id == trigger_id).stop_trigger == stop + 100
    sim.set_price("ITC", (stop + 90) / 100)  # through the stop, above its limit: the child fills
    fired = next(g for g in broker.gtts() if g.trigger_id == trigger_id)
    assert fired.status == GttStatus.TRIGGERED and fired.triggered_order_id
    child = broker.order(fired.triggered_order_id)
    assert child is not None and child.status == BrokerOrderStatus.COMPLETE and child.side == "SELL"
    assert child.gtt_trigger_id == trigger_id and child.tag is None
    with pytest.raises(BrokerRejected):  # a triggered GTT can be neither modified nor deleted
        broker.delete_gtt(trigger_id)
    with pytest.raises(BrokerRejected):
        broker.modify_gtt(trigger_id, raised)


def test_single_gtt_is_deleted(broker: KiteBroker) -> None:
    price = ltp(broker, "SBIN")
    stop = price * 97 // 100 // 5 * 5
    trigger_id = broker.place_gtt(GttRequest(exchange="NSE", symbol="SBIN", qty=1, last_price=price,
                                             stop_trigger=stop, stop_limit=stop - 50))
    broker.delete_gtt(trigger_id)
    assert next(g for g in broker.gtts() if g.trigger_id == trigger_id).status == GttStatus.DELETED


def test_writes_are_never_retried_reads_are(broker: KiteBroker, sim: Sim) -> None:
    sim.fault(kind="error", status=429, count=1, paths=["/orders"], methods=["POST"])
    with pytest.raises(BrokerRateLimited):
        broker.place_order(market("R429"))
    assert broker.order_by_tag("R429") is None  # nothing was placed: sending again is safe

    sim.fault(kind="error", status=503, count=1, paths=["/orders"], methods=["POST"])
    with pytest.raises(BrokerUnavailable):
        broker.place_order(market("R503"))

    sim.fault(kind="error", status=502, html=True, count=1, paths=["/gtt"], methods=["POST"])
    price = ltp(broker, "SBIN")
    with pytest.raises(BrokerUnavailable):  # a proxy's HTML page is no answer at all
        broker.place_gtt(GttRequest(exchange="NSE", symbol="SBIN", qty=1, last_price=price,
                                    stop_trigger=price - 1000, stop_limit=price - 1050))

    sim.fault(kind="error", status=503, count=2, paths=["/orders"], methods=["GET"])
    before = broker.stats.retries
    assert isinstance(broker.orders(), list)  # two 503s, then an answer
    assert broker.stats.retries == before + 2


def test_lost_response_and_timeout_leave_the_outcome_to_reconciliation(
    broker: KiteBroker, sim: Sim
) -> None:
    sim.fault(kind="lose", count=1, paths=["/orders"], methods=["POST"])
    with pytest.raises(BrokerUnavailable):
        broker.place_order(market("Rlost1"))
    found = broker.order_by_tag("Rlost1")  # it was accepted: the tag finds it
    assert found is not None and found.status == BrokerOrderStatus.COMPLETE

    sim.fault(kind="delay", delay_ms=3000, count=1, paths=["/orders"], methods=["POST"])
    with pytest.raises(BrokerTimeout):
        broker.place_order(market("Rslow1"))


def test_expired_token_is_an_auth_error_and_reported(broker: KiteBroker, sim: Sim) -> None:
    sim.admin("POST", "/sessions/expire")
    with pytest.raises(BrokerAuthError):
        broker.orders()
    with pytest.raises(BrokerAuthError):
        broker.place_order(market("Rexpired"))
    assert len(broker.refused) == 2  # type: ignore[attr-defined]
    broker.set_access_token(sim.login())
    assert broker.profile()["user_id"]
