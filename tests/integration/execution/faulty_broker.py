"""The paper broker with scripted faults, for property tests of execution: an order accepted
and its answer lost, a rejection, a timeout before the broker saw the call, a partial fill that
completes later, and GTT limit orders that do not fill."""

from __future__ import annotations

from dataclasses import replace

from services.execution.brokers.base import (
    BrokerInterface,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerRejected,
    BrokerTimeout,
    GttRequest,
    OrderRequest,
)
from services.execution.brokers.paper import PaperBroker

BEHAVIOURS = ("ok", "lose", "reject", "timeout", "partial")
GTT_BEHAVIOURS = ("ok", "lose", "timeout")


class FaultyBroker(PaperBroker):
    name = "faulty-paper"
    place_orders = BrokerInterface.place_orders  # each order a call of its own, scripted alone

    def __init__(self, sessions) -> None:  # noqa: ANN001
        super().__init__(sessions)
        self.next_place: list[str] = []
        self.next_gtt: list[str] = []
        self.children_fill = True

    def place_order(self, request: OrderRequest) -> BrokerOrder:
        behaviour = self.next_place.pop(0) if self.next_place else "ok"
        if behaviour == "reject":
            raise BrokerRejected("scripted rejection")
        if behaviour == "timeout":
            raise BrokerTimeout("scripted timeout before the broker saw the call")
        placed = super().place_order(request)
        if behaviour == "lose":
            raise BrokerTimeout("scripted: accepted, then the response was lost")
        if behaviour == "partial":
            return replace(placed, status=BrokerOrderStatus.OPEN, filled_qty=placed.qty // 2)
        return placed

    def place_gtt(self, request: GttRequest) -> str:
        behaviour = self.next_gtt.pop(0) if self.next_gtt else "ok"
        if behaviour == "timeout":
            raise BrokerTimeout("scripted timeout before the broker saw the GTT")
        trigger_id = super().place_gtt(request)
        if behaviour == "lose":
            raise BrokerTimeout("scripted: GTT created, then the response was lost")
        return trigger_id

    def _child_fills(self, symbol: str, price: int) -> bool:
        return self.children_fill
