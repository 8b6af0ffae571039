"""Order and GTT state machines as tables: ``(state, event) -> next state``.

Every change is one conditional UPDATE (``WHERE state = expected``) so two workers can never both
advance the same row (RELIABILITY.md promise 5); :func:`advance` raises on an illegal pair.
"""

from __future__ import annotations

from enum import StrEnum


class OrderState(StrEnum):
    NEW = "NEW"  # intent committed, guards not yet passed: never sent
    SUBMITTED = "SUBMITTED"  # guards passed, the broker call may have happened
    OPEN = "OPEN"  # the broker holds it
    FILLED = "FILLED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"  # the call's outcome is unknown: reconciled by tag


class OrderEvent(StrEnum):
    SUBMIT = "submit"
    ACCEPT = "accept"
    FILL = "fill"
    REJECT = "reject"
    CANCEL = "cancel"
    LOSE = "lose"  # timeout / lost response
    RESUBMIT = "resubmit"  # not found at the broker after the settle window


ORDER_TRANSITIONS: dict[tuple[OrderState, OrderEvent], OrderState] = {
    (OrderState.NEW, OrderEvent.SUBMIT): OrderState.SUBMITTED,
    (OrderState.NEW, OrderEvent.REJECT): OrderState.REJECTED,
    (OrderState.SUBMITTED, OrderEvent.ACCEPT): OrderState.OPEN,
    (OrderState.SUBMITTED, OrderEvent.FILL): OrderState.FILLED,
    (OrderState.SUBMITTED, OrderEvent.REJECT): OrderState.REJECTED,
    (OrderState.SUBMITTED, OrderEvent.CANCEL): OrderState.CANCELLED,
    (OrderState.SUBMITTED, OrderEvent.LOSE): OrderState.UNKNOWN,
    (OrderState.SUBMITTED, OrderEvent.RESUBMIT): OrderState.SUBMITTED,
    (OrderState.UNKNOWN, OrderEvent.ACCEPT): OrderState.OPEN,
    (OrderState.UNKNOWN, OrderEvent.FILL): OrderState.FILLED,
    (OrderState.UNKNOWN, OrderEvent.REJECT): OrderState.REJECTED,
    (OrderState.UNKNOWN, OrderEvent.CANCEL): OrderState.CANCELLED,
    (OrderState.UNKNOWN, OrderEvent.RESUBMIT): OrderState.SUBMITTED,
    (OrderState.OPEN, OrderEvent.FILL): OrderState.FILLED,
    (OrderState.OPEN, OrderEvent.REJECT): OrderState.REJECTED,
    (OrderState.OPEN, OrderEvent.CANCEL): OrderState.CANCELLED,
}

ORDER_TERMINAL = frozenset({OrderState.FILLED, OrderState.REJECTED, OrderState.CANCELLED})
ORDER_IN_FLIGHT = frozenset({OrderState.SUBMITTED, OrderState.UNKNOWN})


class GttState(StrEnum):
    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    ACTIVE = "ACTIVE"
    TRIGGERED = "TRIGGERED"
    DELETED = "DELETED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"


class GttEvent(StrEnum):
    SUBMIT = "submit"
    PLACE = "place"
    REJECT = "reject"
    LOSE = "lose"
    RESUBMIT = "resubmit"
    TRIGGER = "trigger"
    DELETE = "delete"


GTT_TRANSITIONS: dict[tuple[GttState, GttEvent], GttState] = {
    (GttState.NEW, GttEvent.SUBMIT): GttState.SUBMITTED,
    (GttState.NEW, GttEvent.REJECT): GttState.REJECTED,
    (GttState.NEW, GttEvent.DELETE): GttState.DELETED,  # leg closed before its GTT was sent
    (GttState.SUBMITTED, GttEvent.PLACE): GttState.ACTIVE,
    (GttState.SUBMITTED, GttEvent.REJECT): GttState.REJECTED,
    (GttState.SUBMITTED, GttEvent.LOSE): GttState.UNKNOWN,
    (GttState.SUBMITTED, GttEvent.RESUBMIT): GttState.SUBMITTED,
    (GttState.SUBMITTED, GttEvent.DELETE): GttState.DELETED,  # not found, and no longer wanted
    (GttState.UNKNOWN, GttEvent.PLACE): GttState.ACTIVE,
    (GttState.UNKNOWN, GttEvent.DELETE): GttState.DELETED,
    (GttState.UNKNOWN, GttEvent.RESUBMIT): GttState.SUBMITTED,
    (GttState.ACTIVE, GttEvent.TRIGGER): GttState.TRIGGERED,
    (GttState.ACTIVE, GttEvent.DELETE): GttState.DELETED,
}

GTT_TERMINAL = frozenset({GttState.TRIGGERED, GttState.DELETED, GttState.REJECTED})
GTT_LIVE = frozenset({GttState.NEW, GttState.SUBMITTED, GttState.ACTIVE, GttState.UNKNOWN})


class IllegalTransition(RuntimeError):
    pass


def advance_order(state: OrderState | str, event: OrderEvent) -> OrderState:
    try:
        return ORDER_TRANSITIONS[(OrderState(state), event)]
    except KeyError:
        raise IllegalTransition(f"order: no transition from {state} on {event}") from None


def advance_gtt(state: GttState | str, event: GttEvent) -> GttState:
    try:
        return GTT_TRANSITIONS[(GttState(state), event)]
    except KeyError:
        raise IllegalTransition(f"gtt: no transition from {state} on {event}") from None
