"""Control messages as execution applies them. Halts themselves live in Postgres (written by the
api with its audit row); here a kill switch also cancels open entry orders at the broker."""

from __future__ import annotations

import logging

from sqlalchemy import select

from services.execution.brokers.base import BrokerError
from services.execution.processor import Execution
from services.execution.states import OrderState
from shared.bus.publisher import OutboxRelay
from shared.contracts.messages import Envelope, Halt
from shared.store.models import Order

log = logging.getLogger("ratchet.execution")


class ControlHandler:
    def __init__(self, execution: Execution, relay: OutboxRelay) -> None:
        self.execution = execution
        self.relay = relay

    def handle(self, _stream: str, _entry_id: str, envelope: Envelope) -> None:
        if isinstance(envelope.payload, Halt) and envelope.payload.cancel_entries:
            self.cancel_open_entries()

    def cancel_open_entries(self) -> None:
        with self.execution.sessions() as session:
            open_entries = session.scalars(
                select(Order).where(Order.state == OrderState.OPEN, Order.adds_risk.is_(True))
            ).all()
        for order in open_entries:
            if order.broker_order_id is None:
                continue
            try:
                self.execution.broker.cancel_order(order.broker_order_id)
            except BrokerError as exc:
                log.warning("could not cancel entry",
                            extra={"intent_id": order.intent_id, "error": str(exc)})
        self.relay.flush()
