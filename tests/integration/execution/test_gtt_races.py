"""GTTs under lost answers and concurrent workers: a delete whose answer was lost, two
reconcilers settling one GTT, a PlaceGtt handled after its leg's exit, two raises at once."""

from __future__ import annotations

import threading

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.execution.brokers.base import BrokerGtt, BrokerTimeout, GttRequest
from services.execution.brokers.paper import PaperBroker
from services.execution.processor import Execution
from services.execution.reconciler import Reconciler
from services.execution.states import GttState, OrderState
from shared.contracts import streams
from shared.contracts.messages import DeleteGtt, ExitLeg, ModifyGtt, PlaceGtt, decode
from shared.store.models import Gtt, Order, PaperGtt, PaperOrder
from tests.integration.execution import test_execution
from tests.integration.execution.test_execution import TS, buy

# test_execution's fixtures, shared: a paper broker on real Postgres, settle window 0
settings = test_execution.settings
execution = test_execution.execution
reconciler = test_execution.reconciler

LADDER = "NSE:INFY:202611240945"


def place_gtt_intent(trigger: int = 97_500) -> PlaceGtt:
    return PlaceGtt(intent_id=f"momentum:{LADDER}:1:gtt", strategy="momentum", exchange="NSE",
                    symbol="INFY", ladder_id=LADDER, leg=1, ts_ms=TS, qty=10, trigger=trigger,
                    target=105_000, last_price=100_000)


def exit_intent() -> ExitLeg:
    return ExitLeg(intent_id=f"momentum:{LADDER}:1:exit", strategy="momentum", exchange="NSE",
                   symbol="INFY", ladder_id=LADDER, leg=1, ts_ms=TS, qty=10, ref_price=101_000)


def paper(execution: Execution) -> PaperBroker:
    broker = execution.broker
    assert isinstance(broker, PaperBroker)
    return broker


def test_a_gtt_deleted_with_its_answer_lost_lets_the_exit_go_out(
    execution: Execution, reconciler: Reconciler, sessions: sessionmaker[Session]
) -> None:
    """The delete reached the broker but its answer was lost; the retry is refused ("not
    active"). That refusal is checked against the broker's book, which shows the GTT deleted:
    ours is DELETED and the sale goes out (it stayed NEW for ever, the leg with no stop)."""
    execution.place_order(buy())
    execution.place_gtt(place_gtt_intent())
    broker = paper(execution)
    delete = broker.delete_gtt
    calls: list[str] = []

    def answer_lost_once(trigger_id: str) -> None:
        calls.append(trigger_id)
        delete(trigger_id)
        if len(calls) == 1:
            raise BrokerTimeout("deleted, answer lost")

    broker.delete_gtt = answer_lost_once  # type: ignore[method-assign]
    execution.exit_leg(exit_intent())
    reconciler.run_once()
    with sessions() as s:
        assert s.scalars(select(Gtt)).one().state == GttState.DELETED
        assert s.scalars(select(Order).where(Order.side == "SELL")).one().state == OrderState.FILLED
        assert s.scalars(select(Order).where(Order.side == "BUY")).one().leg_closed_at is not None
    assert broker.holdings().get(("NSE", "INFY"), 0) == 0


def test_the_reconciler_records_a_requested_delete_it_finds_done(
    execution: Execution, reconciler: Reconciler, sessions: sessionmaker[Session]
) -> None:
    """Every delete call times out after the broker deleted: the reconciler, finding the GTT
    deleted as asked, records it DELETED (not a 'gtt_missing' alert for ever)."""
    execution.place_order(buy())
    execution.place_gtt(place_gtt_intent())
    broker = paper(execution)
    delete = broker.delete_gtt

    def answer_always_lost(trigger_id: str) -> None:
        delete(trigger_id)
        raise BrokerTimeout("deleted, answer lost")

    broker.delete_gtt = answer_always_lost  # type: ignore[method-assign]
    execution.delete_gtt(DeleteGtt(intent_id=f"momentum:{LADDER}:1:delete", strategy="momentum",
                                   exchange="NSE", symbol="INFY", ladder_id=LADDER, leg=1,
                                   ts_ms=TS))
    with sessions() as s:
        assert s.scalars(select(Gtt)).one().state == GttState.ACTIVE
    reconciler.run_once()
    with sessions() as s:
        assert s.scalars(select(Gtt)).one().state == GttState.DELETED


def test_an_exit_whose_gtt_fired_unseen_is_left_to_the_gtt(
    execution: Execution, reconciler: Reconciler, sessions: sessionmaker[Session]
) -> None:
    """The delete is refused because the GTT triggered (not yet recorded): that is not taken
    as deleted. The trigger closes the leg, and the exit is not sent: the leg is sold once."""
    execution.place_order(buy())
    execution.place_gtt(place_gtt_intent())
    broker = paper(execution)
    assert broker.on_tick("INFY", 97_000)  # fired at the broker; execution has not seen it
    execution.exit_leg(exit_intent())
    reconciler.run_once()
    reconciler.run_once()
    with sessions() as s:
        assert s.scalars(select(Gtt)).one().state == GttState.TRIGGERED
        assert s.scalars(select(Order).where(Order.side == "SELL")).one().state == (
            OrderState.REJECTED)
        assert s.scalars(select(Order).where(Order.side == "BUY")).one().leg_closed_at is not None
        assert s.scalar(select(func.count()).select_from(PaperOrder)
                        .where(PaperOrder.side == "SELL")) == 1
    assert broker.holdings().get(("NSE", "INFY"), 0) == 0
    with sessions() as s:
        assert s.scalars(select(PaperGtt)).one().status == "triggered"


def test_two_reconcilers_settling_one_gtt_place_it_once(
    execution: Execution, reconciler: Reconciler, sessions: sessionmaker[Session]
) -> None:
    """Replica B reads the unsettled GTT and the broker's book; replica A then resubmits it and
    is placing it when B locks the row. B sees it resubmitted since its read and leaves it to
    A (it resubmitted and placed it too: two live GTTs for one leg)."""
    execution.place_order(buy())
    broker = paper(execution)
    place, book = broker.place_gtt, broker.gtts

    def never_reached(request: GttRequest) -> str:
        raise BrokerTimeout("never reached")

    broker.place_gtt = never_reached  # type: ignore[method-assign]
    execution.place_gtt(place_gtt_intent())
    with sessions() as s:
        assert s.scalars(select(Gtt)).one().state == GttState.UNKNOWN
    b_read, a_placing = threading.Event(), threading.Event()

    def b_book() -> list[BrokerGtt]:
        if threading.current_thread() is threading.main_thread():
            return book()
        seen = book()  # B's view, taken before A acts
        b_read.set()
        assert a_placing.wait(5)
        return seen

    b = threading.Thread(target=Reconciler(execution, reconciler.relay).settle_gtts)

    def a_place(request: GttRequest) -> str:
        if threading.current_thread() is threading.main_thread():
            a_placing.set()
            b.join(5)  # A's request is still in flight while B settles
        return place(request)

    broker.gtts = b_book  # type: ignore[method-assign]
    broker.place_gtt = a_place  # type: ignore[method-assign]
    b.start()
    assert b_read.wait(5)
    reconciler.settle_gtts()  # A
    b.join(5)
    broker.gtts = book  # type: ignore[method-assign]
    reconciler.run_once()
    with sessions() as s:
        gtt = s.scalars(select(Gtt)).one()
        live = s.scalars(select(PaperGtt).where(PaperGtt.status == "active")).all()
    assert [str(p.trigger_id) for p in live] == [gtt.trigger_id]
    assert gtt.state == GttState.ACTIVE


def test_a_place_gtt_handled_after_its_legs_exit_is_refused(
    execution: Execution, reconciler: Reconciler, sessions: sessionmaker[Session],
    redis_client: redis.Redis,
) -> None:
    """The PlaceGtt was lost (or handled late by another replica) and re-sent after the leg was
    sold: no GTT is placed (it would be live with no leg), and the producer is answered."""
    execution.place_order(buy())
    execution.exit_leg(exit_intent())
    execution.place_gtt(place_gtt_intent())
    execution.place_gtt(place_gtt_intent())  # re-sent again: answered again, still not placed
    reconciler.run_once()
    with sessions() as s:
        gtt = s.scalars(select(Gtt)).one()
        assert s.scalars(select(Order).where(Order.side == "BUY")).one().leg_closed_at is not None
        assert s.scalar(select(func.count()).select_from(PaperGtt)) == 0
        assert s.scalar(select(func.count()).select_from(Order)) == 2  # no fallback exit
    assert gtt.state == GttState.REJECTED and gtt.reason == "leg already closed"
    answers = [e for _, f in redis_client.xrange(streams.EXEC_EVENTS)
               if (e := decode(f[b"d"])).type == "OrderRejected"]
    assert {(a.payload.intent_id, a.id) for a in answers} == {
        (place_gtt_intent().intent_id, f"{place_gtt_intent().intent_id}:rejected")}


def test_an_exit_racing_a_place_gtt_takes_the_new_gtt_down(
    execution: Execution, reconciler: Reconciler, sessions: sessionmaker[Session]
) -> None:
    """An exit is recorded while another replica's PlaceGtt has checked the leg but not yet
    committed its GTT. The exit waits for it (both take the entry order's lock), finds the GTT
    and deletes it before selling (it found none and sold, and the GTT then went live)."""
    execution.place_order(buy())
    asked_stop = execution._asked_stop
    exiting = threading.Thread(target=execution.exit_leg, args=(exit_intent(),))

    def exit_meanwhile(session: Session, intent: PlaceGtt) -> int:
        exiting.start()
        exiting.join(1)  # the old code let it record, find no GTT and sell, all in this time
        return asked_stop(session, intent)

    execution._asked_stop = exit_meanwhile  # type: ignore[method-assign]
    execution.place_gtt(place_gtt_intent())
    exiting.join(5)
    reconciler.run_once()  # an exit that found its GTT still in flight is carried on here
    with sessions() as s:
        assert s.scalars(select(Order).where(Order.side == "BUY")).one().leg_closed_at is not None
        assert s.scalars(select(Gtt)).one().state == GttState.DELETED
        assert [p.status for p in s.scalars(select(PaperGtt))] == ["deleted"]
    assert paper(execution).holdings().get(("NSE", "INFY"), 0) == 0


def test_two_raises_at_once_leave_the_broker_at_the_higher_stop(
    execution: Execution, reconciler: Reconciler, sessions: sessionmaker[Session]
) -> None:
    """Raise A (to 980) is slow to reach the broker; raise B (to 985) comes meanwhile. B waits
    for A (raises of one GTT are serialised), so A's request cannot land after B's and leave
    the broker at 980 while 985 is recorded."""
    execution.place_order(buy())
    execution.place_gtt(place_gtt_intent())
    broker = paper(execution)
    modify = broker.modify_gtt
    a_sending, release = threading.Event(), threading.Event()

    def slow_for_a(trigger_id: str, request: GttRequest) -> None:
        if request.stop_trigger == 98_000:
            a_sending.set()
            release.wait(5)
        modify(trigger_id, request)

    def step(trigger: int, last: int) -> ModifyGtt:
        return ModifyGtt(intent_id=f"momentum:{LADDER}:1:stop@{trigger // 5}",
                         strategy="momentum", exchange="NSE", symbol="INFY", ladder_id=LADDER,
                         leg=1, ts_ms=TS, qty=10, trigger=trigger, target=105_000,
                         last_price=last)

    broker.modify_gtt = slow_for_a  # type: ignore[method-assign]
    a = threading.Thread(target=execution.modify_gtt, args=(step(98_000, 100_500),))
    b = threading.Thread(target=execution.modify_gtt, args=(step(98_500, 101_000),))
    a.start()
    assert a_sending.wait(5)
    b.start()
    b.join(1)  # the old code sent and recorded B's raise in this time
    release.set()
    a.join(5)
    b.join(5)
    reconciler.run_once()
    with sessions() as s:
        gtt = s.scalars(select(Gtt)).one()
        at_broker = s.scalars(select(PaperGtt)).one()
    assert gtt.trigger_price == gtt.desired_trigger == at_broker.stop_trigger
    assert int(at_broker.stop_trigger * 100) == 98_500


def test_a_fallback_exit_left_new_by_a_crash_is_sent_by_the_reconciler(
    execution: Execution, reconciler: Reconciler, sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GTT fired and its limit order did not fill: the market exit that follows is recorded,
    then the process dies before sending it. The reconciler's pass over unsent exits sends it
    (it was rejected as 'leg already closed by its GTT', leaving the leg held with no stop)."""
    execution.place_order(buy())
    execution.place_gtt(place_gtt_intent())
    broker = paper(execution)
    monkeypatch.setattr(broker, "_child_fills", lambda symbol, price: False)
    monkeypatch.setattr(execution.settings.execution, "gtt_child_timeout_s", 0)  # gives up now

    def crash(order_id: int, ts_ms: int) -> None:
        raise RuntimeError("killed after the fallback exit was recorded")

    with monkeypatch.context() as dying:
        dying.setattr(execution, "_guard_and_submit", crash)
        broker._active = None
        fired = broker.on_tick("INFY", 90_000)
        with pytest.raises(RuntimeError):
            reconciler.triggered_by_tick(fired, TS)
    with sessions() as s:
        fallback = s.scalars(select(Order).where(Order.side == "SELL")).one()
        assert fallback.state == OrderState.NEW and fallback.intent_id.endswith(":fallback-exit")
    reconciler.run_once()
    with sessions() as s:
        assert s.get(Order, fallback.id).state == OrderState.FILLED  # type: ignore[union-attr]
        assert s.scalars(select(Order).where(Order.side == "BUY")).one().leg_closed_at is not None
    assert broker.holdings().get(("NSE", "INFY"), 0) == 0
