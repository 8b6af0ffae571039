"""Settles what a crash or a lost answer left open, from the broker's own book.

- SUBMITTED / UNKNOWN orders: looked up by tag. Found -> adopted. Not found -> sent again only
  after the settle window, with the same tag (one intent, at most one order).
- OPEN orders: polled until they fill, are rejected or cancelled.
- SUBMITTED / UNKNOWN GTTs: adopted when a GTT at the broker matches symbol, quantity and
  trigger and is not ours already (an active one first; one that triggered before we learned of
  it has its exit recorded at once); created again only after the settle window.
- ACTIVE GTTs that the broker shows triggered: the exit is recorded from the child order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.execution import ledger
from services.execution.brokers.base import (
    GTT_GONE,
    BrokerError,
    BrokerGtt,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerRejected,
    GttStatus,
)
from services.execution.processor import Execution
from services.execution.states import GttEvent, GttState, OrderEvent, OrderState
from shared.bus.publisher import OutboxRelay
from shared.contracts.messages import AlertLevel, GttTriggered
from shared.domain.money import to_paise
from shared.store.models import Gtt, Order

log = logging.getLogger("ratchet.execution")

STALE_SUBMISSION = timedelta(hours=12)  # older than a trading day: not found means "unknown"


class Reconciler:
    def __init__(self, execution: Execution, relay: OutboxRelay) -> None:
        self.execution = execution
        self.relay = relay
        self.sessions = execution.sessions
        self.broker = execution.broker

    def now_ms(self) -> int:
        return int(self.execution.clock() * 1000)

    def run_once(self) -> bool:
        """One pass; True when the broker answered. While it cannot be reconciled, new risk is
        halted (kind ``reconciliation``) and nothing is assumed cancelled or filled."""
        try:
            self.settle_orders()
            self.settle_gtts()
        except BrokerError as exc:
            log.warning("reconciliation failed: broker unavailable", extra={"error": str(exc)})
            with self.sessions.begin() as session:
                ledger.halt(session, "reconciliation", f"reconciliation failed: {exc}", "execution")
            return False
        else:
            with self.sessions.begin() as session:
                ledger.clear_halts(session, "execution: reconciled", ("reconciliation",))
            return True
        finally:
            self.relay.flush()

    def check_risk_book(self) -> None:
        """Compare the risk book with a recount of the orders; if they differ (a hand edit, a
        restore), rebuild it from the orders and raise a critical alert: the guards must never
        count against a wrong book for long."""
        with self.sessions.begin() as session:
            drift = ledger.risk_book_drift(session)
            if drift is None:
                return
            ledger.rebuild_risk_book(session)
            ledger.raise_alert(session, AlertLevel.CRITICAL, "risk_book_rebuilt",
                               f"the risk book did not match the orders ({drift}); rebuilt from "
                               "the orders", ts_ms=self.now_ms())
        log.error("risk book rebuilt", extra={"drift": drift})
        self.relay.flush()

    # --- orders --------------------------------------------------------------------------------

    def settle_orders(self) -> None:
        self.continue_exits()
        settle = timedelta(seconds=self.execution.settings.execution.unknown_settle_s)
        with self.sessions() as session:
            pending = list(
                session.scalars(
                    select(Order)
                    .where(Order.state.in_(
                        [OrderState.SUBMITTED, OrderState.UNKNOWN, OrderState.OPEN]))
                    .order_by(Order.id)
                )
            )
        for order in pending:
            if order.state == OrderState.OPEN and order.broker_order_id:
                found = self.broker.order(order.broker_order_id)
            else:
                found = self.broker.order_by_tag(order.tag)
            if found is not None:
                self.execution.apply_broker_order(order.id, found, self.now_ms())
                continue
            if order.state == OrderState.OPEN:
                continue
            submitted = order.submitted_at or order.created_at
            if ledger.utcnow() - submitted < settle:
                continue
            self._resubmit(order)

    def continue_exits(self) -> None:
        """Exits recorded but not yet sent (waiting for their GTT to be confirmed gone)."""
        with self.sessions() as session:
            waiting = session.scalars(
                select(Order.id).where(Order.state == OrderState.NEW, Order.adds_risk.is_(False))
            ).all()
        for order_id in waiting:
            self.execution.continue_exit(order_id, self.now_ms())

    def _resubmit(self, order: Order) -> None:
        """Not found at the broker after the settle window: it was never placed. Send it now —
        unless it adds risk and trading is halted, in which case it is rejected."""
        ts_ms = self.now_ms()
        with self.sessions.begin() as session:
            row = session.get(Order, order.id, with_for_update=True)
            if row is None or row.state not in (OrderState.SUBMITTED, OrderState.UNKNOWN):
                return
            if row.submitted_at != order.submitted_at:
                return  # another replica resubmitted it meanwhile
            # Asked again under the lock, and fresh (not from this process's cache of the book):
            # a worker of another replica that held the row while sending it may have placed it
            # and died before recording the answer — the lock was released by its death, after
            # the placement.
            found = self.broker.order_by_tag(row.tag, fresh=True)
            resent = found is None and self._resubmit_locked(session, row, ts_ms)
        if found is not None:
            self.execution.apply_broker_order(order.id, found, ts_ms)
        elif resent:
            log.info("resubmitting order not found at broker", extra={"intent_id": order.intent_id})
            self.execution.submit_orders([(row, ts_ms)])

    def _resubmit_locked(self, session: Session, row: Order, ts_ms: int) -> bool:
        """Move a locked, unplaced order on to be sent again (True), or reject it (False)."""
        halt = ledger.halt_reason(session) if row.adds_risk else None
        if halt is not None:
            self.execution.reject_halted(session, row, halt, ts_ms)
            return False
        if ledger.utcnow() - (row.submitted_at or row.created_at) > STALE_SUBMISSION:
            # Kite's order book holds today only: an order sent on an earlier day and not
            # found now may still have been placed. Never resent; a person checks holdings.
            reason = "not in today's order book and submitted on an earlier day: not resent"
            ledger.move_order(session, row, OrderEvent.REJECT, reason=reason)
            self.execution._emit_rejected(session, row, reason, None, ts_ms)
            ledger.raise_alert(session, AlertLevel.CRITICAL, "order_unresolved",
                               f"{row.side} {row.qty} {row.symbol}: {reason}; check the holdings",
                               ts_ms=ts_ms, symbol=row.symbol, ladder_id=row.ladder_id,
                               intent_id=row.intent_id)
            return False
        return ledger.move_order(
            session, row, OrderEvent.RESUBMIT, note="not found after settle window",
            submitted_at=ledger.utcnow(), attempts=row.attempts + 1,
        )

    # --- GTTs ----------------------------------------------------------------------------------

    def settle_gtts(self) -> None:
        with self.sessions() as session:
            ours = list(session.scalars(select(Gtt).where(Gtt.state.in_(
                [GttState.SUBMITTED, GttState.UNKNOWN, GttState.ACTIVE])).order_by(Gtt.id)))
            # Triggered, but the leg is not closed yet: its limit order is being followed.
            following = list(session.scalars(
                select(Gtt).join(Order, (Order.ladder_id == Gtt.ladder_id) & (Order.leg == Gtt.leg))
                .where(Gtt.state == GttState.TRIGGERED, Order.side == "BUY",
                       Order.state == OrderState.FILLED, Order.leg_closed_at.is_(None))
            ))
            known_ids = set(session.scalars(
                select(Gtt.trigger_id).where(Gtt.trigger_id.is_not(None))))
        if not ours and not following:
            return
        at_broker = {g.trigger_id: g for g in self.broker.gtts()}
        for gtt in following:
            if gtt.trigger_id in at_broker:
                self.on_triggered(gtt.id, at_broker[gtt.trigger_id], self.now_ms())
        settle = timedelta(seconds=self.execution.settings.execution.unknown_settle_s)
        for gtt in ours:
            if gtt.state == GttState.ACTIVE:
                self._check_active(gtt, at_broker.get(gtt.trigger_id or ""))
                continue
            match = self._match(gtt, at_broker.values(), known_ids)
            if match is not None:
                known_ids.add(match.trigger_id)
                self.execution.adopt_gtt(gtt.id, match.trigger_id, self.now_ms())
                if match.status == GttStatus.TRIGGERED:  # it fired, so its leg has been sold
                    self.on_triggered(gtt.id, match, self.now_ms())
            elif ledger.utcnow() - (gtt.submitted_at or gtt.created_at) >= settle:
                with self.sessions.begin() as session:
                    row = session.get(Gtt, gtt.id, with_for_update=True)
                    if row is None or row.state not in (GttState.SUBMITTED, GttState.UNKNOWN):
                        continue
                    if row.submitted_at != gtt.submitted_at:
                        continue  # another replica resubmitted it meanwhile, as in _resubmit
                    if row.delete_requested:  # never placed, and its leg is exiting: done
                        ledger.move_gtt(session, row, GttEvent.DELETE)
                        continue
                    ledger.move_gtt(session, row, GttEvent.RESUBMIT, submitted_at=ledger.utcnow())
                self.execution.submit_gtt(gtt.id, self.now_ms())

    @staticmethod
    def _match(
        gtt: Gtt, candidates: Iterable[BrokerGtt], known_ids: set[str | None]
    ) -> BrokerGtt | None:
        triggers = {to_paise(gtt.trigger_price), to_paise(gtt.desired_trigger)}
        adoptable = (GttStatus.ACTIVE, GttStatus.TRIGGERED)
        for cand in sorted(candidates, key=lambda c: c.status != GttStatus.ACTIVE):
            if (
                cand.trigger_id not in known_ids
                and cand.status in adoptable
                and cand.symbol == gtt.symbol
                and cand.exchange == gtt.exchange
                and cand.qty == gtt.qty
                and cand.stop_trigger in triggers
            ):
                return cand
        return None

    def _check_active(self, gtt: Gtt, at_broker: BrokerGtt | None) -> None:
        if at_broker is None or at_broker.status in GTT_GONE:
            if gtt.delete_requested:  # deleted as asked, the answer lost: its exit goes on
                self.execution.confirm_deleted(gtt.id, self.now_ms())
                return
            with self.sessions.begin() as session:
                ledger.raise_alert(
                    session, AlertLevel.CRITICAL, "gtt_missing",
                    f"the stop of {gtt.symbol} leg {gtt.leg} is not live at the broker",
                    ts_ms=self.now_ms(), symbol=gtt.symbol, ladder_id=gtt.ladder_id,
                    intent_id=gtt.intent_id,
                )
            return
        if at_broker.status == GttStatus.TRIGGERED:
            self.on_triggered(gtt.id, at_broker, self.now_ms())
            return
        if gtt.delete_requested or gtt.desired_trigger > gtt.trigger_price:
            self.execution.sync_gtt(gtt.id)

    def on_triggered(self, gtt_id: int, at_broker: BrokerGtt, ts_ms: int) -> None:
        """Record the trigger, and the exit once the child order has filled."""
        with self.sessions.begin() as session:
            row = session.get(Gtt, gtt_id, with_for_update=True)
            if row is None:
                return
            if row.state == GttState.ACTIVE:
                ledger.move_gtt(session, row, GttEvent.TRIGGER)
                ledger.emit(
                    session,
                    GttTriggered(**self.execution._gtt_leg(row, ts_ms),
                                 trigger_id=at_broker.trigger_id,
                                 price=to_paise(row.trigger_price)),
                    msg_id=f"{row.intent_id}:triggered",
                    ts_ms=ts_ms,
                )
        child = (self.broker.order(at_broker.triggered_order_id)
                 if at_broker.triggered_order_id else None)
        if child is not None and child.status == BrokerOrderStatus.COMPLETE:
            self.execution.record_gtt_exit(gtt_id, child, ts_ms)
            return
        self._follow_child(gtt_id, child, ts_ms)

    def _follow_child(self, gtt_id: int, child: BrokerOrder | None, ts_ms: int) -> None:
        """A triggered GTT places a LIMIT sell that may not fill (a gap, a circuit, no
        authorisation for the sale). Rejected, or still open after the timeout: cancel what is
        left and exit at market, with an alert. A leg is never left open without protection."""
        with self.sessions() as session:
            gtt = session.get(Gtt, gtt_id)
        if gtt is None or gtt.state != GttState.TRIGGERED:
            return
        timeout = timedelta(seconds=self.execution.settings.execution.gtt_child_timeout_s)
        failed = child is None or child.status in (BrokerOrderStatus.REJECTED,
                                                   BrokerOrderStatus.CANCELLED)
        if not failed and ledger.utcnow() - gtt.updated_at < timeout:
            return  # give the limit order its time
        if child is not None and child.status == BrokerOrderStatus.OPEN:
            try:
                self.broker.cancel_order(child.order_id)
            except BrokerRejected:
                return  # it filled meanwhile: the next pass records the exit
        remaining = gtt.qty - (child.filled_qty if child is not None else 0)
        if remaining > 0:
            self.execution.fallback_exit(gtt, remaining, child, ts_ms)

    def triggered_by_tick(self, trigger_ids: list[str], ts_ms: int) -> None:
        """The paper broker fired these GTTs on a tick: record them at once."""
        by_id = {g.trigger_id: g for g in self.broker.gtts() if g.trigger_id in set(trigger_ids)}
        with self.sessions() as session:
            rows = session.scalars(select(Gtt).where(Gtt.trigger_id.in_(trigger_ids))).all()
        for row in rows:
            if row.trigger_id in by_id:
                self.on_triggered(row.id, by_id[row.trigger_id], ts_ms)
        self.relay.flush()

    def stale_submissions(self) -> int:
        """Count of orders still unsettled (for readiness and metrics)."""
        with self.sessions() as session:
            return len(session.scalars(select(Order.id).where(
                Order.state.in_([OrderState.SUBMITTED, OrderState.UNKNOWN]))).all())


def wait_until_reconciled(reconciler: Reconciler, timeout_s: float = 120.0) -> None:
    """At start nothing new is placed until earlier submissions are settled."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reconciler.run_once()
        if reconciler.stale_submissions() == 0:
            return
        time.sleep(0.5)
    log.warning("start-up reconciliation still has unsettled orders; continuing")

