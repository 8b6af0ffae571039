"""Ticks drive the paper broker's GTTs, as the exchange drives a real broker's."""

from __future__ import annotations

from services.execution.brokers.paper import PaperBroker
from services.execution.reconciler import Reconciler
from shared.contracts.messages import Envelope, Ticks


class PaperMarket:
    def __init__(self, broker: PaperBroker, reconciler: Reconciler) -> None:
        self.broker = broker
        self.reconciler = reconciler

    def handle(self, _stream: str, _entry_id: str, envelope: Envelope) -> None:
        payload = envelope.payload
        if not isinstance(payload, Ticks):
            return
        for tick in payload.ticks:
            fired = self.broker.on_tick(tick.symbol, tick.price, payload.bar_open)
            if fired:
                self.reconciler.triggered_by_tick(fired, tick.ts_ms)
