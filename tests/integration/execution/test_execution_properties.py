"""A hypothesis state machine over execution and a broker that accepts and loses the response,
rejects, times out, fills partly, and leaves a GTT's limit order unfilled (real Postgres).

Invariants after every step: at most one broker order per intent (by tag, from the broker's own
book); an order's terminal state never changes; filled quantity never exceeds the order's; at most
one live GTT per leg and none for a closed leg. After settling: every intent terminal, and exactly
one live GTT per open leg.
"""

from __future__ import annotations

import os
from datetime import datetime

import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.execution.budget import OrderBudget
from services.execution.faults import FaultPoints
from services.execution.processor import Execution
from services.execution.reconciler import Reconciler
from services.execution.states import ORDER_TERMINAL, OrderState
from shared.bus.publisher import OutboxRelay, Publisher
from shared.config import Settings
from shared.contracts.messages import ExitLeg, ModifyGtt, PlaceGtt, PlaceOrder
from shared.domain.money import price_below
from shared.domain.session import SessionRules, ms_from_ist
from shared.store.models import Base, Gtt, Order, PaperGtt, PaperOrder
from tests.integration.execution.book_oracle import book, open_legs
from tests.integration.execution.faulty_broker import BEHAVIOURS, GTT_BEHAVIOURS, FaultyBroker

TS = ms_from_ist(datetime(2026, 11, 24, 10, 0))
SYMBOLS = ("AAA", "BBB", "CCC")
PRICE = 100_000  # ₹1,000


def make_machine(
    engine: Engine, sessions: sessionmaker[Session], client: redis.Redis, url: tuple[str, str]
):
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)

    class ExecutionMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            client.flushall()
            config = Settings(redis_url=url[0], database_url=url[1],
                              execution={"unknown_settle_s": 0, "gtt_child_timeout_s": 0})
            self.broker = FaultyBroker(sessions)
            self.execution = Execution(sessions, self.broker,
                                       OrderBudget(client, 1000, 10_000, 100_000),
                                       config, SessionRules(), FaultPoints(frozenset(), 0))
            self.reconciler = Reconciler(
                self.execution, OutboxRelay(sessions, Publisher(client, "x"), "execution"))
            self.entries: list[PlaceOrder] = []
            self.stops: dict[str, int] = {}
            self.terminal: dict[int, str] = {}

        # --- rules -------------------------------------------------------------------------

        @rule(symbol=st.sampled_from(SYMBOLS), behaviour=st.sampled_from(BEHAVIOURS))
        def enter(self, symbol: str, behaviour: str) -> None:
            n = len(self.entries)
            ladder = f"NSE:{symbol}:2026112410{n:02d}"
            intent = PlaceOrder(intent_id=f"m:{ladder}:1:buy", strategy="m", exchange="NSE",
                                symbol=symbol, ladder_id=ladder, leg=1, ts_ms=TS + n, qty=4,
                                ref_price=PRICE)
            self.entries.append(intent)
            self.broker.next_place = [behaviour]
            self.execution.place_order(intent)

        @rule(data=st.data())
        def redeliver(self, data: st.DataObject) -> None:
            if self.entries:
                self.execution.place_order(data.draw(st.sampled_from(self.entries)))

        @rule()
        def reconcile(self) -> None:
            self.reconciler.run_once()

        @rule(data=st.data(), behaviour=st.sampled_from(GTT_BEHAVIOURS))
        def protect(self, data: st.DataObject, behaviour: str) -> None:
            filled = self._open_legs()
            if filled:
                self.broker.next_gtt = [behaviour]
                order = data.draw(st.sampled_from(filled))
                stop = price_below(PRICE, 25_000, 5)
                self.stops.setdefault(order.ladder_id, stop)
                self.execution.place_gtt(PlaceGtt(
                    intent_id=f"m:{order.ladder_id}:1:gtt", strategy="m", exchange="NSE",
                    symbol=order.symbol, ladder_id=order.ladder_id, leg=1, ts_ms=TS,
                    qty=order.filled_qty, trigger=stop, target=PRICE * 105 // 100,
                    last_price=PRICE))

        @rule(data=st.data(), step=st.integers(1, 50))
        def raise_stop(self, data: st.DataObject, step: int) -> None:
            if self.stops:
                ladder = data.draw(st.sampled_from(sorted(self.stops)))
                self.stops[ladder] += step * 5
                symbol = ladder.split(":")[1]
                self.execution.modify_gtt(ModifyGtt(
                    intent_id=f"m:{ladder}:1:stop@{self.stops[ladder] // 5}", strategy="m",
                    exchange="NSE", symbol=symbol, ladder_id=ladder, leg=1, ts_ms=TS, qty=4,
                    trigger=self.stops[ladder], target=PRICE * 105 // 100, last_price=PRICE))

        @rule(symbol=st.sampled_from(SYMBOLS), fills=st.booleans())
        def crash(self, symbol: str, fills: bool) -> None:
            """The price falls through every stop of the symbol; the limit orders may not fill."""
            self.broker.children_fill = fills
            self.broker._active = None
            fired = self.broker.on_tick(symbol, PRICE // 2)
            self.broker.children_fill = True
            self.reconciler.triggered_by_tick(fired, TS)

        @rule(data=st.data())
        def exit_leg(self, data: st.DataObject) -> None:
            legs = self._open_legs()
            if legs:
                order = data.draw(st.sampled_from(legs))
                self.execution.exit_leg(ExitLeg(
                    intent_id=f"m:{order.ladder_id}:1:exit", strategy="m", exchange="NSE",
                    symbol=order.symbol, ladder_id=order.ladder_id, leg=1, ts_ms=TS,
                    qty=order.filled_qty, ref_price=PRICE))

        # --- invariants ----------------------------------------------------------------------

        def _open_legs(self) -> list[Order]:
            with sessions() as session:
                return list(session.scalars(select(Order).where(
                    Order.side == "BUY", Order.state == OrderState.FILLED,
                    Order.leg_closed_at.is_(None),
                ).order_by(Order.id)))

        @invariant()
        def one_order_per_intent(self) -> None:
            with sessions() as session:
                doubled = session.execute(text(
                    "SELECT tag FROM paper_orders WHERE tag IS NOT NULL "
                    "GROUP BY tag HAVING count(*) > 1"
                )).all()
            assert not doubled

        @invariant()
        def terminal_states_stay_and_fills_bounded(self) -> None:
            with sessions() as session:
                orders = session.scalars(select(Order)).all()
                paper = session.scalars(select(PaperOrder)).all()
            for order in orders:
                assert 0 <= order.filled_qty <= order.qty
                if order.id in self.terminal:
                    assert order.state == self.terminal[order.id]
                elif order.state in ORDER_TERMINAL:
                    self.terminal[order.id] = order.state
            assert all(p.filled_qty <= p.qty for p in paper)

        @invariant()
        def at_most_one_live_gtt_per_leg_and_none_for_closed(self) -> None:
            live = self._live_gtts_by_leg(settled=False)
            assert all(n == 1 for n in live.values()), live
            with sessions() as session:
                closed = set(session.scalars(select(Order.ladder_id).where(
                    Order.side == "BUY", Order.leg_closed_at.is_not(None))))
            assert not closed & set(live), closed & set(live)

        @invariant()
        def the_risk_book_matches_the_open_legs(self) -> None:
            with sessions() as session:
                assert book(session) == open_legs(session)

        def _live_gtts_by_leg(self, settled: bool = True) -> dict[str, int]:
            """Live GTTs at the broker per leg. Once settled, none may be unknown to execution
            (mid-flight, one whose answer was lost is not adopted yet)."""
            with sessions() as session:
                rows = session.execute(select(Gtt.ladder_id).join(
                    PaperGtt, PaperGtt.trigger_id == Gtt.trigger_id.cast(PaperGtt.trigger_id.type)
                ).where(PaperGtt.status == "active")).all()
                unmatched = session.execute(text(
                    "SELECT count(*) FROM paper_gtts p WHERE p.status = 'active' AND NOT EXISTS "
                    "(SELECT 1 FROM gtts g WHERE g.trigger_id = p.trigger_id::text)")).scalar_one()
            assert not settled or unmatched == 0, (
                "an active GTT at the broker that execution does not know")
            counts: dict[str, int] = {}
            for (ladder,) in rows:
                counts[ladder] = counts.get(ladder, 0) + 1
            return counts

        def teardown(self) -> None:
            """Settle: every intent ends terminal; every open leg has exactly one live GTT."""
            for _ in range(4):
                self.reconciler.run_once()
            for order in self._open_legs():
                self.execution.place_gtt(PlaceGtt(
                    intent_id=f"m:{order.ladder_id}:1:gtt", strategy="m", exchange="NSE",
                    symbol=order.symbol, ladder_id=order.ladder_id, leg=1, ts_ms=TS,
                    qty=order.filled_qty, trigger=price_below(PRICE, 25_000, 5), target=None,
                    last_price=PRICE))
            for _ in range(3):
                self.reconciler.run_once()
            with sessions() as session:
                states = [o.state for o in session.scalars(select(Order))]
            assert all(s in ORDER_TERMINAL for s in states), states
            live = self._live_gtts_by_leg()
            open_legs = {o.ladder_id for o in self._open_legs()}
            assert set(live) == open_legs and all(n == 1 for n in live.values()), (live, open_legs)

    return ExecutionMachine


def test_execution_state_machine(engine: Engine, redis_url: str, database_url: str) -> None:
    from shared.store.db import make_sessions

    client = redis.Redis.from_url(redis_url)
    machine = make_machine(engine, make_sessions(engine), client, (redis_url, database_url))
    run_state_machine_as_test(
        machine,
        # CI runs a capped number; RATCHET_PROPERTY_EXAMPLES=500 searches harder.
        settings=settings(max_examples=int(os.environ.get("RATCHET_PROPERTY_EXAMPLES", "30")),
                          stateful_step_count=25, deadline=None,
                          suppress_health_check=list(HealthCheck)),
    )
    client.close()
