"""Intent in, order out: the execution service's handlers (DESIGN.md §4).

The order of every placement is: commit the intent under its unique id (NEW) -> run the guards ->
commit SUBMITTED -> call the broker with the intent's tag -> commit what the broker said. A crash
anywhere leaves a row whose state says what to do next; nothing is ever sent twice blindly:
SUBMITTED/UNKNOWN rows are settled by :mod:`services.execution.reconciler` from the broker's book.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypedDict

from sqlalchemy import String, select
from sqlalchemy.orm import Session, sessionmaker

from services.execution import ledger
from services.execution.brokers.base import (
    GTT_GONE,
    BrokerError,
    BrokerInterface,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerRateLimited,
    BrokerRejected,
    BrokerUnavailable,
    GttRequest,
    OrderRequest,
)
from services.execution.budget import OrderBudget
from services.execution.faults import FaultPoints
from services.execution.states import ORDER_TERMINAL, GttEvent, GttState, OrderEvent, OrderState
from shared.config import Settings
from shared.contracts.messages import (
    AlertLevel,
    DeleteGtt,
    Envelope,
    ExitLeg,
    ExitReason,
    GttDeleted,
    GttModified,
    GttPlaced,
    LegClosed,
    ModifyGtt,
    OrderAccepted,
    OrderFilled,
    OrderRejected,
    PlaceGtt,
    PlaceOrder,
)
from shared.domain.money import price_below, scale_pct, to_paise, to_rupees
from shared.domain.risk import (
    OrderCheck,
    RejectReason,
    RiskLimits,
    RiskState,
    check_gtt_create,
    check_order,
    count_order,
)
from shared.domain.session import SessionRules, ist_ordinal
from shared.store.bulk import any_of
from shared.store.models import Gtt, Instrument, Intent, Order

log = logging.getLogger("ratchet.execution")


# By symbol alone: the exchanges are sorted out after.
_INSTRUMENTS = select(
    Instrument.exchange, Instrument.tradingsymbol, Instrument.tick_size, Instrument.freeze_qty
).where(any_of(Instrument.__table__.c.tradingsymbol, "symbols", String()))


_LOCK_SUBMITTED = (
    select(Order.__table__.c.id, Order.__table__.c.attempts)
    .where(any_of(Order.__table__.c.id, "ids"),
           Order.__table__.c.state == OrderState.SUBMITTED.value)
    .order_by(Order.__table__.c.id).with_for_update()
)


SEND_RUN_S = 0.05  # the longest run of broker calls between two looks for a halt
RATE_LIMITED_PAUSE_S = 0.2  # after the broker's "too many requests", before sending again


def _log_intent(envelope: Envelope) -> None:
    log.info("intent", extra={"intent_id": envelope.id, "type": envelope.type,
                              "from": envelope.source})


def _fallback_exit_id(gtt: Gtt) -> str:
    """The intent id of the market exit that follows a GTT whose stop could not protect its leg
    (its limit order did not fill, or the stop was refused); the rest of a part-filled one
    extends it."""
    return f"{gtt.intent_id}:fallback-exit"


@dataclass(frozen=True)
class InstrumentInfo:
    tick: int
    freeze_qty: int | None


class _Known(TypedDict, total=False):
    """What the broker's answer adds to an order's row, beside its state."""

    broker_order_id: str
    filled_qty: int


class Execution:
    """Applies intents against one broker. Safe to run in several replicas at once."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        broker: BrokerInterface,
        budget: OrderBudget,
        settings: Settings,
        rules: SessionRules,
        faults: FaultPoints,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions = sessions
        self.broker = broker
        self.budget = budget
        self.settings = settings
        self.rules = rules
        self.faults = faults
        self.clock = clock
        self._instruments: dict[str, InstrumentInfo] = {}
        self._broker_calls = ThreadPoolExecutor(settings.execution.broker_concurrency,
                                                thread_name_prefix="broker-call")

    # --- helpers -------------------------------------------------------------------------------

    def limits(self) -> RiskLimits:
        return RiskLimits.from_settings(self.settings.risk)

    def instrument(self, exchange: str, symbol: str) -> InstrumentInfo:
        key = f"{exchange}:{symbol}"
        if key not in self._instruments:
            with self.sessions() as session:
                self._load_instruments(session, [(exchange, symbol)])
        return self._instruments[key]

    def _load_instruments(self, session: Session, pairs: Sequence[tuple[str, str]]) -> None:
        """Tick size and freeze quantity of the instruments not cached yet, in one query; an
        instrument missing from the dump gets the NSE equity tick (5 paise) and no freeze limit."""
        missing = {(e, s) for e, s in pairs if f"{e}:{s}" not in self._instruments}
        if not missing:
            return
        rows = session.execute(_INSTRUMENTS, {"symbols": sorted({s for _, s in missing})}).all()
        found = {(r.exchange, r.tradingsymbol): r for r in rows}
        for exchange, symbol in missing:
            row = found.get((exchange, symbol))
            self._instruments[f"{exchange}:{symbol}"] = InstrumentInfo(
                tick=to_paise(row.tick_size) if row else 5,
                freeze_qty=row.freeze_qty if row else None,
            )

    def _today_start(self, ts_ms: int) -> datetime:
        open_ms = self.rules.session_open_ms(ist_ordinal(ts_ms)) - 10 * 3_600_000
        return datetime.fromtimestamp(open_ms / 1000, tz=UTC)

    # --- dispatch ------------------------------------------------------------------------------

    def handle(self, _stream: str, _entry_id: str, envelope: Envelope) -> None:
        payload = envelope.payload
        _log_intent(envelope)
        if isinstance(payload, PlaceOrder):
            self.place_order(payload)
        elif isinstance(payload, ExitLeg):
            self.exit_leg(payload)
        elif isinstance(payload, PlaceGtt):
            self.place_gtt(payload)
        elif isinstance(payload, ModifyGtt):
            self.modify_gtt(payload)
        elif isinstance(payload, DeleteGtt):
            self.delete_gtt(payload)
        else:
            log.warning("ignored message", extra={"type": envelope.type, "msg_id": envelope.id})

    def handle_batch(self, stream: str, entries: list[tuple[str, Envelope]]) -> None:
        """Many intents from one read, in stream order: each run of PlaceOrder intents shares its
        transactions (one to record and guard them, one to record the broker's answers), so a
        burst costs a few commits rather than a few per order; any other intent is handled alone."""
        run: list[PlaceOrder] = []
        for entry_id, envelope in entries:
            if isinstance(envelope.payload, PlaceOrder):
                _log_intent(envelope)
                run.append(envelope.payload)
                continue
            if run:
                self.place_orders(run)
                run = []
            self.handle(stream, entry_id, envelope)
        if run:
            self.place_orders(run)

    # --- orders --------------------------------------------------------------------------------

    def place_order(self, intent: PlaceOrder) -> None:
        self.place_orders([intent])

    def place_orders(self, intents: Sequence[PlaceOrder]) -> None:
        """Record the intents, run the guards and commit SUBMITTED in one transaction — all
        before the broker is called; a redelivered intent finds its row and goes no further,
        except that a settled one is answered again (its producer re-sends because it never
        heard back)."""
        with self.sessions.begin() as session:
            ledger.lock_risk(session)
            # a re-sent copy in the same read
            unique = list({i.intent_id: i for i in intents}.values())
            orders = self._record_orders(session, unique)
            for order, intent in zip(orders, unique, strict=True):
                if order.state in ORDER_TERMINAL:
                    self._answer_again(session, order, intent.ts_ms)
            submitted = self._guard(session, [(o, i.ts_ms)
                                              for o, i in zip(orders, unique, strict=True)
                                              if o.state == OrderState.NEW])
        if submitted:
            self.faults.point("after_intent_commit")
            self.submit_orders(submitted)

    def _answer_again(self, session: Session, order: Order, ts_ms: int) -> None:
        """Re-send a settled order's outcome under its first message id (consumers dedupe), for
        a producer whose first answer was lost (e.g. with the last second of a crashed Redis)."""
        if order.state == OrderState.FILLED:
            price = to_paise(order.average_price if order.average_price is not None
                             else order.ref_price)
            ledger.emit(session, OrderFilled(**self._leg(order, ts_ms),
                                             order_id=order.broker_order_id or "",
                                             side=order.side, qty=order.filled_qty, price=price),
                        msg_id=f"{order.intent_id}:filled", ts_ms=ts_ms)
        else:
            ledger.emit(session, OrderRejected(**self._leg(order, ts_ms),
                                               reason=order.reason or order.state),
                        msg_id=f"{order.intent_id}:rejected", ts_ms=ts_ms)

    def exit_leg(self, intent: ExitLeg) -> None:
        """Sell a leg now: first take its GTT down (confirmed), then sell at market. The exit is
        durable once recorded; if the GTT is not confirmed gone yet, the reconciler carries on."""
        order_id = self._record_order(intent)
        self.continue_exit(order_id, intent.ts_ms)

    def continue_exit(self, order_id: int, ts_ms: int) -> None:
        """Advance a recorded (NEW) exit: GTT down first, then the sale; idempotent."""
        with self.sessions.begin() as session:
            order = session.get(Order, order_id)
            if order is None or order.state != OrderState.NEW:
                return
            gtt = ledger.gtt_of_leg(session, order.ladder_id, order.leg)
            if gtt is not None and gtt.state == GttState.TRIGGERED:
                if not order.intent_id.startswith(_fallback_exit_id(gtt)):
                    ledger.move_order(session, order, OrderEvent.REJECT,
                                      reason="leg already closed by its GTT")
                    return
                # the GTT's own fallback (its limit order did not fill), left NEW by a crash
                gtt = None
            if gtt is not None and not gtt.delete_requested:
                gtt.delete_requested = True
        if gtt is not None and gtt.state not in (GttState.DELETED, GttState.REJECTED):
            self.sync_gtt(gtt.id, ts_ms)
            with self.sessions() as session:
                state = session.get(Gtt, gtt.id).state  # type: ignore[union-attr]
            if state not in (GttState.DELETED, GttState.REJECTED):
                return  # not confirmed gone (or it just triggered): the reconciler continues
        self._guard_and_submit(order_id, ts_ms)

    def _record_order(self, intent: PlaceOrder | ExitLeg) -> int:
        """Record an exit (or a test's order) under the lock of its leg's entry order, so that
        a PlaceGtt racing it sees it (:meth:`place_gtt`)."""
        with self.sessions.begin() as session:
            self._lock_entry(session, intent.ladder_id, intent.leg)
            order = self._record_orders(session, [intent])[0]
            ledger.insert_orders(session, [order])
            return order.id

    def _record_orders(
        self, session: Session, intents: Sequence[PlaceOrder | ExitLeg]
    ) -> list[Order]:
        """The order of each intent, in order: the stored one, or a new one (NEW) not stored
        yet, so that the guards settle its state before its single INSERT
        (:func:`ledger.insert_orders`). An entry is a buy that adds risk, an exit a sale."""
        fresh = ledger.record_intents(session, [(i.intent_id, i.TYPE, i.model_dump(mode="json"))
                                                for i in intents])
        seen = sorted({i.intent_id for i in intents} - fresh)  # redelivered: their orders exist
        # Not locked: one may be held by the worker sending it, and every change made here is a
        # conditional update anyway.
        known = {o.intent_id: o for o in session.scalars(
            select(Order).where(Order.intent_id.in_(seen)))} if seen else {}
        orders: list[Order] = []
        for intent in intents:
            order = known.get(intent.intent_id)
            if order is None:
                side = intent.side.value if isinstance(intent, PlaceOrder) else "SELL"
                order = Order(
                    intent_id=intent.intent_id,
                    tag=ledger.order_tag(intent.intent_id),
                    exchange=intent.exchange,
                    symbol=intent.symbol,
                    ladder_id=intent.ladder_id,
                    leg=intent.leg,
                    side=side,
                    qty=intent.qty,
                    order_type="MARKET",
                    product="CNC",
                    ref_price=to_rupees(intent.ref_price),
                    adds_risk=isinstance(intent, PlaceOrder),
                    state=OrderState.NEW,
                    filled_qty=0,
                    attempts=0,
                    history=[],
                )
                known[intent.intent_id] = order
            orders.append(order)
        return orders

    def _guard_and_submit(self, order_id: int, ts_ms: int) -> None:
        """Guards and the broker call for an order recorded earlier (an exit, a fallback)."""
        with self.sessions.begin() as session:
            ledger.lock_risk(session)
            order = session.get(Order, order_id, with_for_update=True)
            if order is None or order.state != OrderState.NEW:
                return  # already past the guards: the reconciler owns it now
            submitted = self._guard(session, [(order, ts_ms)])
        if submitted:
            self.faults.point("after_intent_commit")
            self.submit_orders(submitted)

    def _guard(
        self, session: Session, orders: Sequence[tuple[Order, int]]
    ) -> list[tuple[Order, int]]:
        """Run the guards on NEW orders, in order, against one risk picture that counts each
        order passed before the next is checked: REJECTED with its reason, or SUBMITTED; orders
        not stored yet are then inserted in that state. The caller holds the risk lock, so
        replicas never check against the same picture."""
        submitted: list[tuple[Order, int]] = []
        if not orders:
            return submitted
        with session.no_autoflush:
            self._load_instruments(session, [(o.exchange, o.symbol) for o, _ in orders])
            latest = max(ts for _, ts in orders)
            state = ledger.risk_state(session, self._today_start(latest), [o for o, _ in orders])
            self._daily_loss_halt(session, state.realised_loss_today_paise, state)
            limits = self.limits()
            for order, ts_ms in orders:
                state.market_open = self.rules.in_session(ts_ms)
                check = self._order_check(order)
                reason = check_order(check, state, limits)
                if reason is not None:
                    why = f"guard: {reason.value}"
                    ledger.move_order(session, order, OrderEvent.REJECT, reason=why)
                    self._emit_rejected(session, order, why, reason.value, ts_ms)
                elif ledger.move_order(session, order, OrderEvent.SUBMIT,
                                       submitted_at=ledger.utcnow(), attempts=1):
                    count_order(check, state)
                    submitted.append((order, ts_ms))
        ledger.insert_orders(session, [o for o, _ in orders])
        return submitted

    def _order_check(self, order: Order) -> OrderCheck:
        info = self.instrument(order.exchange, order.symbol)
        return OrderCheck(
            symbol=order.symbol,
            leg_key=f"{order.ladder_id}:{order.leg}:{order.side}",
            qty=order.qty,
            price_paise=to_paise(order.ref_price),
            tick=info.tick,
            freeze_qty=info.freeze_qty,
            lower_circuit=None,
            upper_circuit=None,
            adds_risk=order.adds_risk,
        )

    def _daily_loss_halt(self, session: Session, loss_paise: int, state: RiskState) -> None:
        """The day's realised loss at its limit halts new risk (recorded, so people see who and
        why); once the day's loss is back within the limit (a new day) the halt lifts itself."""
        limit = self.limits().daily_loss_limit_paise
        if loss_paise >= limit:
            ledger.halt(session, "daily_loss",
                        f"realised loss today ₹{to_rupees(loss_paise)} reached the limit "
                        f"₹{to_rupees(limit)}",
                        "execution")
            state.halted = True
        elif state.halted and ledger.clear_halts(
            session, "execution: loss back within the limit", ("daily_loss",)
        ):
            halt_row = ledger.active_halt(session)
            state.halted = halt_row is not None
            state.halt_reason = halt_row.reason if halt_row else None

    def submit_orders(self, orders: Sequence[tuple[Order, int]]) -> None:
        """The broker calls for orders just committed SUBMITTED, in runs of at most SEND_RUN_S:
        each run one transaction that holds its rows, looks for a halt once (see
        :meth:`_submit_run`), sends, then records every answer. While the transaction holds the
        rows, no other worker can take a row for unsent and send it again (the reconciler waits
        for the lock, then asks the broker by tag once more); an order resubmitted meanwhile
        (its attempt moved on) is its resubmitter's to send. A crash releases the rows
        SUBMITTED: the reconciler settles them by tag. Each order given is the caller's copy of
        a SUBMITTED row; a row still SUBMITTED at the same attempt, once locked, is that copy."""
        by_id = {o.id: (o, ts_ms) for o, ts_ms in orders}
        unsent = sorted(by_id)
        while unsent:
            unsent = self._submit_run(by_id, unsent)

    def _submit_run(self, by_id: dict[int, tuple[Order, int]], ids: list[int]) -> list[int]:
        """Send orders ``ids`` for up to SEND_RUN_S, record the answers, and return the ids not
        sent. The calls go out in waves of ``broker_concurrency`` at once (one order does not
        wait for the placements before it); each order is checked as its wave is built. A run
        with an order that adds risk holds the halts lock shared (:func:`ledger.hold_halts`): a
        halt committed before the run is seen by its one check; one written during the run
        waits until the run has committed. So no risk-adding order is sent after a halt is
        committed. A run never waits inside: when the order budget has no room, or the broker
        says too many requests, it ends, and the wait comes after its commit; a halt therefore
        waits at most SEND_RUN_S and one wave under way. Postgres ends a transaction idle for
        ``stuck_transaction_s`` (a hung process), so a check older than half that is not
        trusted: the run ends before its next wave."""
        pause = 0.0
        with self.sessions.begin() as session:
            held = dict(session.execute(_LOCK_SUBMITTED, {"ids": ids}).all())
            halt = None
            if any(by_id[i][0].adds_risk for i in held):
                ledger.hold_halts(session)
                halt = ledger.halt_reason(session)  # a statement of its own: sees what came first
            started = time.monotonic()
            outcomes: list[tuple[Order, BrokerOrder | BrokerError, int]] = []
            unsent: list[int] = []  # rate limited by the broker: nothing placed
            queue = list(ids)
            while queue and not pause:
                if outcomes and time.monotonic() - started > SEND_RUN_S:
                    break
                wave: list[tuple[Order, int]] = []
                while queue and len(wave) < self.settings.execution.broker_concurrency:
                    order, ts_ms = by_id[queue[0]]
                    if held.get(order.id) != order.attempts:
                        queue.pop(0)  # settled, or resubmitted by another worker, meanwhile
                    elif halt is not None and order.adds_risk:  # halted since the guards passed it
                        queue.pop(0)
                        self.reject_halted(session, order, halt, ts_ms)
                    elif (pause := self.budget.try_acquire()) > 0:
                        break
                    else:
                        wave.append((order, ts_ms))
                        queue.pop(0)
                if time.monotonic() - started > self.settings.execution.stuck_transaction_s / 2:
                    # stalled since the check: Postgres may have ended the run's transaction
                    # (and lock), so a halt may be in: look again
                    queue[:0] = [order.id for order, _ in wave]
                    break
                for (order, ts_ms), outcome in zip(wave, self._send_wave([o for o, _ in wave]),
                                                   strict=True):
                    if isinstance(outcome, BrokerRateLimited):
                        unsent.append(order.id)
                        pause = max(pause, RATE_LIMITED_PAUSE_S)
                        continue
                    if isinstance(outcome, BrokerOrder):
                        self.faults.point("after_broker_call")
                    outcomes.append((order, outcome, ts_ms))
            with session.no_autoflush, ledger.held_orders_updated_together(session):
                rests: list[tuple[int, int]] = []
                for order, outcome, ts_ms in outcomes:
                    if rest := self._record_outcome(session, order, outcome, ts_ms):
                        rests.append(rest)
        self._send_rests(rests)
        if pause > 0:
            time.sleep(min(pause, 1.0))
        return sorted(unsent + queue)

    def _send_wave(self, orders: list[Order]) -> list[BrokerOrder | BrokerError]:
        """The broker calls for ``orders`` at once; nothing is written here."""
        requests = [self._request(order) for order in orders]
        return self.broker.place_orders(requests, self._broker_calls)

    def reject_halted(self, session: Session, order: Order, halt: str, ts_ms: int) -> None:
        """Refuse a SUBMITTED order that adds risk because trading was halted before it went out."""
        reason = f"guard: halted ({halt}); never reached the broker"
        if ledger.move_order(session, order, OrderEvent.REJECT, reason=reason):
            self._emit_rejected(session, order, reason, RejectReason.HALTED.value, ts_ms)

    def _request(self, order: Order) -> OrderRequest:
        """What the broker is asked for ``order``: a market order under the intent's tag."""
        return OrderRequest(
            tag=order.tag,
            exchange=order.exchange,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            order_type="MARKET",
            product=order.product,
            market_protection_pct=str(self.settings.execution.market_protection_pct),
            algo_id=self.settings.execution.algo_id,
            reference_price=to_paise(order.ref_price),
        )

    def _record_outcome(
        self, session: Session, order: Order, outcome: BrokerOrder | BrokerError, ts_ms: int
    ) -> tuple[int, int] | None:
        """Record one broker call's outcome; a remainder exit to send, as :meth:`_apply`."""
        if isinstance(outcome, BrokerOrder):
            return self._apply(session, order, outcome, ts_ms)
        if isinstance(outcome, BrokerRejected):
            if ledger.move_order(session, order, OrderEvent.REJECT, reason=str(outcome)):
                self._emit_rejected(session, order, str(outcome), None, ts_ms)
        elif isinstance(outcome, BrokerUnavailable):  # timed out or lost: reconciled by tag
            ledger.move_order(session, order, OrderEvent.LOSE, note=str(outcome))
        else:  # e.g. the session expired: left SUBMITTED, reconciled later
            log.error("order not sent", extra={"order_id": order.id, "error": str(outcome)})
        return None

    def apply_broker_order(self, order_id: int, placed: BrokerOrder, ts_ms: int) -> None:
        self.apply_broker_orders([(order_id, placed, ts_ms)])

    def apply_broker_orders(self, answers: Sequence[tuple[int, BrokerOrder, int]]) -> None:
        """Record what the broker holds for our orders, in one transaction (idempotent: each
        compares states). Rows are locked in id order, so concurrent writers cannot deadlock."""
        if not answers:
            return
        with self.sessions.begin() as session:
            rows = {o.id: o for o in session.scalars(
                select(Order).where(Order.id.in_(sorted({a[0] for a in answers})))
                .order_by(Order.id).with_for_update())}
            rests: list[tuple[int, int]] = []
            with session.no_autoflush:
                for order_id, placed, ts_ms in answers:
                    order = rows.get(order_id)
                    if order is not None and (rest := self._apply(session, order, placed, ts_ms)):
                        rests.append(rest)
        self._send_rests(rests)

    def _apply(
        self, session: Session, order: Order, placed: BrokerOrder, ts_ms: int
    ) -> tuple[int, int] | None:
        """Record what the broker holds for ``order``. Returns (order id, time) of the exit of
        the rest of a leg that a partly filled sale recorded, to send once this commits."""
        if order.state in ORDER_TERMINAL:
            return None
        known: _Known = (
            {} if order.broker_order_id is not None else {"broker_order_id": placed.order_id})
        partly_cancelled = placed.status == BrokerOrderStatus.CANCELLED and placed.filled_qty > 0
        if placed.status == BrokerOrderStatus.COMPLETE or partly_cancelled:
            # A partial fill whose rest was cancelled ends as FILLED with what did fill.
            avg = (placed.average_price if placed.average_price is not None
                   else to_paise(order.ref_price))
            ledger.move_order(
                session, order, OrderEvent.FILL, note=placed.status, **known,
                filled_qty=min(placed.filled_qty, order.qty), average_price=to_rupees(avg),
            )
            self._emit_filled(session, order, avg, ts_ms)
            if order.side == "SELL" and order.filled_qty < order.qty:
                return self._record_rest(session, order, avg, ts_ms), ts_ms
        elif placed.status == BrokerOrderStatus.REJECTED:
            reason = placed.status_message or "rejected by broker"
            ledger.move_order(session, order, OrderEvent.REJECT, reason=reason, **known)
            self._emit_rejected(session, order, reason, None, ts_ms)
        elif placed.status == BrokerOrderStatus.CANCELLED:
            ledger.move_order(session, order, OrderEvent.CANCEL, reason=placed.status_message,
                              **known)
            self._emit_rejected(session, order, "cancelled", None, ts_ms)
        elif order.state == OrderState.OPEN:
            if placed.filled_qty > order.filled_qty:  # a partial fill: progress, not an end
                known["filled_qty"] = min(placed.filled_qty, order.qty)
            if known:
                ledger.update_order(session, order, **known)
        else:
            ledger.move_order(session, order, OrderEvent.ACCEPT,
                              filled_qty=min(placed.filled_qty, order.qty), **known)
            ledger.emit(
                session,
                OrderAccepted(**self._leg(order, ts_ms), order_id=placed.order_id, tag=order.tag),
                msg_id=f"{order.intent_id}:accepted",
                ts_ms=ts_ms,
            )
        return None

    def _record_rest(self, session: Session, order: Order, price: int, ts_ms: int) -> int:
        """A sale that filled only part of its leg (the rest cancelled: market protection, a
        circuit) leaves shares held whose stop is gone: record the sale of the rest in this
        transaction, under one deterministic id, with a critical alert. Sent like the fallback
        exit of a triggered GTT whose limit order did not fill (:meth:`_guard_and_submit`)."""
        rest = order.qty - order.filled_qty
        ledger.raise_alert(
            session, AlertLevel.CRITICAL, "exit_partly_filled",
            f"the sale of {order.symbol} leg {order.leg} filled {order.filled_qty} of "
            f"{order.qty}; exiting the other {rest} at market",
            ts_ms=ts_ms, symbol=order.symbol, ladder_id=order.ladder_id,
            intent_id=order.intent_id,
        )
        intent = ExitLeg(
            intent_id=f"{order.intent_id}:rest", strategy="execution", exchange=order.exchange,
            symbol=order.symbol, ladder_id=order.ladder_id, leg=order.leg, ts_ms=ts_ms, qty=rest,
            ref_price=price, reason=self._exit_reason(session, order),
        )
        rest_order = self._record_orders(session, [intent])[0]
        ledger.insert_orders(session, [rest_order])
        return rest_order.id

    def _send_rests(self, rests: Sequence[tuple[int, int]]) -> None:
        """Send the remainder exits :meth:`_record_rest` recorded (committed by now); a crash
        before leaves them NEW, and the reconciler's pass over unsent exits sends them."""
        for order_id, ts_ms in rests:
            self._guard_and_submit(order_id, ts_ms)

    def _leg(self, order: Order, ts_ms: int) -> dict[str, object]:
        return {
            "intent_id": order.intent_id,
            "exchange": order.exchange,
            "symbol": order.symbol,
            "ladder_id": order.ladder_id,
            "leg": order.leg,
            "ts_ms": ts_ms,
        }

    def _emit_filled(self, session: Session, order: Order, price: int, ts_ms: int) -> None:
        ledger.emit(
            session,
            OrderFilled(
                **self._leg(order, ts_ms),
                order_id=order.broker_order_id or "",
                side=order.side,
                qty=order.filled_qty,
                price=price,
            ),
            msg_id=f"{order.intent_id}:filled",
            ts_ms=ts_ms,
        )
        if order.side != "SELL":
            return
        if order.filled_qty < order.qty:
            # An exit is for its leg's open quantity: sold in part, the leg stays open.
            ledger.book_sold_part(session, order.ladder_id, order.leg, price, order.filled_qty)
            return
        if ledger.close_leg(session, order.ladder_id, order.leg, price, ts_ms) is not None:
            ledger.emit(
                session,
                LegClosed(**self._leg(order, ts_ms), qty=order.filled_qty, exit_price=price,
                          reason=self._exit_reason(session, order)),
                msg_id=f"{order.ladder_id}:{order.leg}:closed",
                ts_ms=ts_ms,
            )

    @staticmethod
    def _exit_reason(session: Session, order: Order) -> ExitReason:
        payload = session.get(Intent, order.intent_id)
        return ExitReason((payload.payload or {}).get("reason", "manual") if payload else "manual")

    def _emit_rejected(
        self, session: Session, order: Order, reason: str, guard: str | None, ts_ms: int
    ) -> None:
        ledger.audit(session, "order.rejected", "order", order.intent_id,
                     {"reason": reason, "guard": guard, "side": order.side, "qty": order.qty})
        ledger.emit(
            session,
            OrderRejected(**self._leg(order, ts_ms), reason=reason, guard=guard),
            msg_id=f"{order.intent_id}:rejected",
            ts_ms=ts_ms,
        )
        ledger.raise_alert(
            session,
            AlertLevel.WARNING if order.adds_risk else AlertLevel.CRITICAL,
            "order_rejected",
            f"{order.side} {order.qty} {order.symbol} rejected: {reason}",
            ts_ms=ts_ms,
            symbol=order.symbol,
            ladder_id=order.ladder_id,
            intent_id=order.intent_id,
        )

    # --- GTTs ----------------------------------------------------------------------------------

    def gtt_request(self, gtt: Gtt, trigger: Decimal | None = None) -> GttRequest:
        tick = self.instrument(gtt.exchange, gtt.symbol).tick
        buffer = scale_pct(self.settings.execution.gtt_limit_buffer_pct)
        stop = to_paise(trigger if trigger is not None else gtt.trigger_price)
        target = to_paise(gtt.target_price) if gtt.target_price is not None else None
        return GttRequest(
            exchange=gtt.exchange,
            symbol=gtt.symbol,
            qty=gtt.qty,
            last_price=to_paise(gtt.last_price),
            stop_trigger=stop,
            stop_limit=price_below(stop, buffer, tick),
            target_trigger=target,
            target_limit=price_below(target, buffer, tick) if target is not None else None,
        )

    def place_gtt(self, intent: PlaceGtt) -> None:
        """Record the leg's GTT and place it. Refused (REJECTED, answered as a rejection) for a
        leg that is closed or whose exit is recorded: placed then, it would be live at the
        broker with no leg to protect. Between replicas, the check and the GTT's insert run
        under the lock of the leg's entry order, under which every exit is recorded
        (:meth:`_record_order`): of an exit and a PlaceGtt at once, the second sees the first
        (the exit then finds this GTT and takes it down first). The lock is taken only while
        the leg has no GTT row: with one, nothing new is placed, and the entry is never locked
        after a GTT (:meth:`record_gtt_exit` locks the GTT, then the entry)."""
        with self.sessions.begin() as session:
            ledger.record_intent(session, intent.intent_id, intent.TYPE,
                                 intent.model_dump(mode="json"))
            gtt = ledger.gtt_of_leg(session, intent.ladder_id, intent.leg)
            refusal = None
            if gtt is None:
                refusal = self._leg_exiting(session, intent.ladder_id, intent.leg)
                gtt = ledger.gtt_of_leg(session, intent.ladder_id, intent.leg)  # under the lock
            if gtt is None:
                gtt = Gtt(
                    intent_id=intent.intent_id,
                    ladder_id=intent.ladder_id,
                    leg=intent.leg,
                    exchange=intent.exchange,
                    symbol=intent.symbol,
                    qty=intent.qty,
                    trigger_price=to_rupees(intent.trigger),
                    desired_trigger=to_rupees(max(intent.trigger,
                                                  self._asked_stop(session, intent))),
                    target_price=to_rupees(intent.target) if intent.target is not None else None,
                    last_price=to_rupees(intent.last_price),
                    state=GttState.NEW,
                )
                session.add(gtt)
                session.flush()
            session.refresh(gtt, with_for_update=True)  # one replica at a time past this point
            if gtt.state == GttState.NEW and refusal is not None:
                ledger.move_gtt(session, gtt, GttEvent.REJECT, reason=refusal)
                log.info("GTT refused", extra={"intent_id": gtt.intent_id, "reason": refusal})
            if gtt.state == GttState.REJECTED and gtt.intent_id == intent.intent_id:
                ledger.emit(session, OrderRejected(**self._gtt_leg(gtt, intent.ts_ms),
                                                   reason=gtt.reason or gtt.state),
                            msg_id=f"{gtt.intent_id}:rejected", ts_ms=intent.ts_ms)
            if gtt.state == GttState.ACTIVE and gtt.intent_id == intent.intent_id:
                ledger.emit(  # answered again: the producer never heard back
                    session,
                    GttPlaced(**self._gtt_leg(gtt, intent.ts_ms), trigger_id=gtt.trigger_id or "",
                              trigger=to_paise(gtt.trigger_price),
                              target=(to_paise(gtt.target_price)
                                      if gtt.target_price is not None else None)),
                    msg_id=f"{gtt.intent_id}:placed", ts_ms=intent.ts_ms)
            if gtt.state != GttState.NEW:
                return
            state = ledger.risk_state(session, self._today_start(intent.ts_ms),
                                      exclude_gtt_id=gtt.id)
            reason = check_gtt_create(state, self.limits())
            if reason is not None:
                ledger.move_gtt(session, gtt, GttEvent.REJECT, reason=reason.value)
            elif not ledger.move_gtt(session, gtt, GttEvent.SUBMIT, submitted_at=ledger.utcnow()):
                return
            gtt_id = gtt.id
        if reason is not None:
            self.exit_unprotected(gtt, f"no stop could be placed ({reason.value})", intent.ts_ms)
            return
        self.submit_gtt(gtt_id, intent.ts_ms)

    @staticmethod
    def _lock_entry(session: Session, ladder_id: str, leg: int) -> bool:
        """Lock the leg's entry order until this transaction ends; True if the leg is closed."""
        entry = session.execute(select(Order.leg_closed_at).where(
            Order.ladder_id == ladder_id, Order.leg == leg, Order.side == "BUY",
        ).with_for_update()).first()
        return entry is not None and entry.leg_closed_at is not None

    def _leg_exiting(self, session: Session, ladder_id: str, leg: int) -> str | None:
        """Why the leg must get no new GTT (closed, or an exit recorded that was not refused),
        or None; locks its entry order (:meth:`place_gtt`)."""
        if self._lock_entry(session, ladder_id, leg):
            return "leg already closed"
        sale = session.scalars(select(Order.id).where(
            Order.ladder_id == ladder_id, Order.leg == leg, Order.side == "SELL",
            Order.state != OrderState.REJECTED,
        )).first()
        return "leg exiting: its exit is recorded" if sale is not None else None

    def _asked_stop(self, session: Session, intent: PlaceGtt) -> int:
        """The highest stop already asked for this leg by ModifyGtt intents seen before PlaceGtt."""
        asked = session.scalars(
            select(Intent.payload["trigger"].as_integer()).where(
                Intent.type == "ModifyGtt",
                Intent.payload["ladder_id"].as_string() == intent.ladder_id,
                Intent.payload["leg"].as_integer() == intent.leg,
            )
        ).all()
        return max([intent.trigger, *asked])

    def submit_gtt(self, gtt_id: int, ts_ms: int) -> None:
        with self.sessions() as session:
            gtt = session.get(Gtt, gtt_id)
        if gtt is None or gtt.state != GttState.SUBMITTED:
            return
        try:
            trigger_id = self.broker.place_gtt(self.gtt_request(gtt))
        except BrokerRejected as exc:
            with self.sessions.begin() as session:
                row = session.get(Gtt, gtt_id)
                refused = row is not None and ledger.move_gtt(session, row, GttEvent.REJECT,
                                                              reason=str(exc))
            if refused and row is not None:
                self.exit_unprotected(row, f"the broker refused its stop: {exc}", ts_ms)
            return
        except BrokerError as exc:
            with self.sessions.begin() as session:
                row = session.get(Gtt, gtt_id)
                if row is not None and row.state == GttState.SUBMITTED:
                    ledger.move_gtt(session, row, GttEvent.LOSE, reason=str(exc))
            return
        self.faults.point("after_gtt_call")
        self.adopt_gtt(gtt_id, trigger_id, ts_ms)

    def adopt_gtt(self, gtt_id: int, trigger_id: str, ts_ms: int) -> None:
        with self.sessions.begin() as session:
            gtt = session.get(Gtt, gtt_id, with_for_update=True)
            if gtt is None or gtt.state not in (GttState.SUBMITTED, GttState.UNKNOWN):
                return
            ledger.move_gtt(session, gtt, GttEvent.PLACE, trigger_id=trigger_id)
            ledger.emit(
                session,
                GttPlaced(**self._gtt_leg(gtt, ts_ms), trigger_id=trigger_id,
                          trigger=to_paise(gtt.trigger_price),
                          target=(to_paise(gtt.target_price)
                                  if gtt.target_price is not None else None)),
                msg_id=f"{gtt.intent_id}:placed",
                ts_ms=ts_ms,
            )
        self.sync_gtt(gtt_id, ts_ms)

    def _gtt_leg(self, gtt: Gtt, ts_ms: int) -> dict[str, object]:
        return {
            "intent_id": gtt.intent_id,
            "exchange": gtt.exchange,
            "symbol": gtt.symbol,
            "ladder_id": gtt.ladder_id,
            "leg": gtt.leg,
            "ts_ms": ts_ms,
        }

    def modify_gtt(self, intent: ModifyGtt) -> None:
        with self.sessions.begin() as session:
            if not ledger.record_intent(session, intent.intent_id, intent.TYPE,
                                        intent.model_dump(mode="json")):
                pass  # redelivered: the sync below is idempotent
            gtt = ledger.gtt_of_leg(session, intent.ladder_id, intent.leg)
            if gtt is None:
                return  # its PlaceGtt is not here yet; place_gtt picks this stop up
            wanted = to_rupees(intent.trigger)
            if wanted > gtt.desired_trigger:
                gtt.desired_trigger = wanted
                gtt.last_price = to_rupees(intent.last_price)
            gtt_id = gtt.id
        self.sync_gtt(gtt_id, intent.ts_ms)

    def delete_gtt(self, intent: DeleteGtt) -> None:
        with self.sessions.begin() as session:
            ledger.record_intent(session, intent.intent_id, intent.TYPE,
                                 intent.model_dump(mode="json"))
            gtt = ledger.gtt_of_leg(session, intent.ladder_id, intent.leg)
            if gtt is None:
                return
            gtt.delete_requested = True
            gtt_id = gtt.id
        self.sync_gtt(gtt_id, intent.ts_ms)

    def sync_gtt(self, gtt_id: int, ts_ms: int | None = None) -> None:
        """Bring the broker's GTT to what we want: raised to the desired stop, or deleted."""
        ts = ts_ms if ts_ms is not None else int(self.clock() * 1000)
        with self.sessions() as session:
            gtt = session.get(Gtt, gtt_id)
        if gtt is None:
            return
        if gtt.delete_requested and gtt.state == GttState.NEW:
            with self.sessions.begin() as session:
                row = session.get(Gtt, gtt_id)
                if row is not None:
                    ledger.move_gtt(session, row, GttEvent.DELETE)
            return
        if gtt.state != GttState.ACTIVE or gtt.trigger_id is None:
            return
        if gtt.delete_requested:
            try:
                self.broker.delete_gtt(gtt.trigger_id)
            except BrokerRejected:
                # Not active any more: triggered (the reconciler records the exit), or deleted
                # by an earlier call whose answer was lost (then it is gone: record that).
                if not self._gone_at_broker(gtt.trigger_id):
                    return
            except BrokerError as exc:  # unreachable, expired session: the reconciler retries
                log.warning("GTT delete deferred",
                            extra={"trigger_id": gtt.trigger_id, "error": str(exc)})
                return
            self.confirm_deleted(gtt_id, ts)
            return
        if gtt.desired_trigger > gtt.trigger_price:
            self._raise_stop(gtt_id, ts)

    def _raise_stop(self, gtt_id: int, ts_ms: int) -> None:
        """Modify the broker's stop up to the desired one, holding the GTT's row FOR UPDATE
        across the call and sending the value read under that lock: raises of one GTT are
        serialised, so an older, lower request can never land after a newer one and leave the
        broker's stop below the recorded one. No halt is consulted (a halt never blocks a stop
        raise) and the halt and kill-switch paths take no GTT lock; an exit or a trigger of
        this GTT waits at most one broker call."""
        with self.sessions.begin() as session:
            gtt = session.get(Gtt, gtt_id, with_for_update=True)
            if (gtt is None or gtt.state != GttState.ACTIVE or gtt.trigger_id is None
                    or gtt.delete_requested or gtt.desired_trigger <= gtt.trigger_price):
                return
            desired = gtt.desired_trigger
            try:
                self.broker.modify_gtt(gtt.trigger_id, self.gtt_request(gtt, desired))
            except BrokerRejected:
                return
            except BrokerError as exc:  # unreachable, expired session: the reconciler retries
                log.warning("GTT raise deferred",
                            extra={"trigger_id": gtt.trigger_id, "error": str(exc)})
                return
            gtt.trigger_price = desired
            ledger.emit(
                session,
                GttModified(**self._gtt_leg(gtt, ts_ms), trigger_id=gtt.trigger_id,
                            trigger=to_paise(desired)),
                msg_id=f"{gtt.ladder_id}:{gtt.leg}:stop@{to_paise(desired)}",
                ts_ms=ts_ms,
            )

    def _gone_at_broker(self, trigger_id: str) -> bool:
        """Whether the broker's book shows this GTT gone without firing (absent too); False
        when it fired, is still active, or the book cannot be read."""
        try:
            found = [g for g in self.broker.gtts() if g.trigger_id == trigger_id]
        except BrokerError as exc:
            log.warning("GTT status unknown", extra={"trigger_id": trigger_id, "error": str(exc)})
            return False
        return not found or found[-1].status in GTT_GONE

    def confirm_deleted(self, gtt_id: int, ts_ms: int) -> None:
        """An ACTIVE GTT we asked to delete is gone at the broker: DELETED, so its leg's exit
        can go on."""
        with self.sessions.begin() as session:
            row = session.get(Gtt, gtt_id)
            if row is None or row.state != GttState.ACTIVE or not row.delete_requested:
                return
            if ledger.move_gtt(session, row, GttEvent.DELETE):
                ledger.emit(session, GttDeleted(**self._gtt_leg(row, ts_ms),
                                                trigger_id=row.trigger_id or ""),
                            msg_id=f"{row.intent_id}:deleted", ts_ms=ts_ms)

    def exit_unprotected(self, gtt: Gtt, why: str, ts_ms: int) -> None:
        """A leg whose stop cannot be placed (the price already ran through it, the GTT cap) is
        not left open without one: it is sold at market, with a critical alert."""
        if self._fallback_recorded(gtt):
            return
        with self.sessions.begin() as session:
            ledger.raise_alert(
                session, AlertLevel.CRITICAL, "gtt_refused",
                f"{gtt.symbol} leg {gtt.leg}: {why}; exiting at market",
                ts_ms=ts_ms, symbol=gtt.symbol, ladder_id=gtt.ladder_id, intent_id=gtt.intent_id,
            )
        self._exit_at_market(gtt, gtt.qty, ExitReason.STOP, ts_ms)

    def fallback_exit(self, gtt: Gtt, qty: int, child: BrokerOrder | None, ts_ms: int) -> None:
        """Exit at market (market-protected) after a triggered GTT's limit order failed."""
        if self._fallback_recorded(gtt):
            return  # sent already; the reconciler follows it
        with self.sessions.begin() as session:
            status = child.status if child is not None else "missing"
            ledger.raise_alert(
                session, AlertLevel.CRITICAL, "gtt_child_unfilled",
                f"the stop of {gtt.symbol} leg {gtt.leg} triggered but its limit order is "
                f"{status}; exiting {qty} at market",
                ts_ms=ts_ms, symbol=gtt.symbol, ladder_id=gtt.ladder_id, intent_id=gtt.intent_id,
            )
        self._exit_at_market(gtt, qty, ExitReason.GTT_UNFILLED, ts_ms)

    def _fallback_recorded(self, gtt: Gtt) -> bool:
        with self.sessions() as session:
            return session.scalars(select(Order.id).where(
                Order.intent_id == _fallback_exit_id(gtt))).first() is not None

    def _exit_at_market(self, gtt: Gtt, qty: int, reason: ExitReason, ts_ms: int) -> None:
        """Sell a protected leg's quantity at market under one deterministic intent id."""
        intent = ExitLeg(
            intent_id=_fallback_exit_id(gtt),
            strategy="execution",
            exchange=gtt.exchange,
            symbol=gtt.symbol,
            ladder_id=gtt.ladder_id,
            leg=gtt.leg,
            ts_ms=ts_ms,
            qty=qty,
            ref_price=to_paise(gtt.last_price if reason == ExitReason.STOP else gtt.trigger_price),
            reason=reason,
        )
        order_id = self._record_order(intent)
        self._guard_and_submit(order_id, ts_ms)

    def record_gtt_exit(self, gtt_id: int, exit_order: BrokerOrder, ts_ms: int) -> None:
        """A GTT triggered and its sell order filled: the leg is closed."""
        with self.sessions.begin() as session:
            gtt = session.get(Gtt, gtt_id, with_for_update=True)
            if gtt is None:
                return
            if gtt.state == GttState.ACTIVE:
                ledger.move_gtt(session, gtt, GttEvent.TRIGGER)
            price = exit_order.average_price or to_paise(gtt.trigger_price)
            if ledger.close_leg(session, gtt.ladder_id, gtt.leg, price, ts_ms) is None:
                return
            is_target = gtt.target_price is not None and price >= to_paise(gtt.target_price)
            ledger.emit(
                session,
                LegClosed(**self._gtt_leg(gtt, ts_ms), qty=exit_order.filled_qty or gtt.qty,
                          exit_price=price,
                          reason=ExitReason.TARGET if is_target else ExitReason.STOP),
                msg_id=f"{gtt.ladder_id}:{gtt.leg}:closed",
                ts_ms=ts_ms,
            )
