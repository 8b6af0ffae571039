"""The broker interface and its typed errors.

What differs between brokers is the adapter, not the calling code. The error type decides what
may happen next: a read may be retried; a write whose outcome is unknown is *never* retried —
it is reconciled by reading the broker's book (orders by tag, GTTs by matching).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import StrEnum


class BrokerError(Exception):
    """Base of every broker failure."""


class BrokerRejected(BrokerError):
    """The broker refused the request: final, nothing was placed."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached; a write may or may not have happened (reconcile)."""


class BrokerTimeout(BrokerUnavailable):
    """No answer in time: the outcome is unknown (reconcile by tag before anything else)."""


class BrokerRateLimited(BrokerError):
    """429: nothing was placed; wait and send again."""


class BrokerAuthError(BrokerError):
    """The access token is invalid or expired: halt and ask for a login."""


class BrokerOrderStatus(StrEnum):
    OPEN = "OPEN"
    COMPLETE = "COMPLETE"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    TRIGGER_PENDING = "TRIGGER PENDING"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    tag: str
    exchange: str
    symbol: str
    side: str  # BUY | SELL
    qty: int
    order_type: str  # MARKET | LIMIT
    product: str = "CNC"
    price: int | None = None  # paise, LIMIT only
    market_protection_pct: str | None = None
    algo_id: str | None = None
    reference_price: int | None = None  # paise; the paper broker fills MARKET orders here


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    order_id: str
    tag: str | None
    exchange: str
    symbol: str
    side: str
    qty: int
    status: BrokerOrderStatus
    filled_qty: int
    average_price: int | None  # paise
    status_message: str | None = None
    gtt_trigger_id: str | None = None


@dataclass(frozen=True, slots=True)
class GttRequest:
    """A protective sell GTT: single stop, or OCO stop + target. Prices in paise."""

    exchange: str
    symbol: str
    qty: int
    last_price: int
    stop_trigger: int
    stop_limit: int
    target_trigger: int | None = None
    target_limit: int | None = None


class GttStatus(StrEnum):
    ACTIVE = "active"
    TRIGGERED = "triggered"
    DELETED = "deleted"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"


# No longer live at the broker and never fired: nothing of it can sell the leg any more.
GTT_GONE = frozenset({GttStatus.DELETED, GttStatus.CANCELLED, GttStatus.EXPIRED,
                      GttStatus.REJECTED})


@dataclass(frozen=True, slots=True)
class BrokerGtt:
    trigger_id: str
    exchange: str
    symbol: str
    qty: int
    status: GttStatus
    stop_trigger: int
    target_trigger: int | None
    triggered_order_id: str | None = None


class BrokerInterface(ABC):
    """Everything execution needs from a broker. Prices in paise."""

    name: str = "broker"

    @abstractmethod
    def place_order(self, request: OrderRequest) -> BrokerOrder: ...

    def place_orders(
        self, requests: Sequence[OrderRequest], calls: Executor
    ) -> list[BrokerOrder | BrokerError]:
        """Several orders, each accepted or refused on its own: for each, in order, what the
        broker holds, or the error that refused it or left its outcome unknown. By default one
        call each, made at once on ``calls`` (one alone on this thread); a broker that can take
        several in one round trip does so."""
        if len(requests) <= 1:
            return [self._place_or_error(request) for request in requests]
        return list(calls.map(self._place_or_error, requests))

    def _place_or_error(self, request: OrderRequest) -> BrokerOrder | BrokerError:
        try:
            return self.place_order(request)
        except BrokerError as exc:
            return exc

    @abstractmethod
    def cancel_order(self, order_id: str) -> None: ...

    @abstractmethod
    def orders(self) -> list[BrokerOrder]: ...

    def order_by_tag(self, tag: str, *, fresh: bool = False) -> BrokerOrder | None:
        """The order carrying ``tag`` (one intent, one tag, so at most one). ``fresh``: read now,
        never from a cache (the last look before an order is sent again)."""
        found = [o for o in self.orders() if o.tag == tag]
        return found[-1] if found else None

    @abstractmethod
    def order(self, order_id: str) -> BrokerOrder | None: ...

    @abstractmethod
    def place_gtt(self, request: GttRequest) -> str: ...

    @abstractmethod
    def modify_gtt(self, trigger_id: str, request: GttRequest) -> None: ...

    @abstractmethod
    def delete_gtt(self, trigger_id: str) -> None: ...

    @abstractmethod
    def gtts(self) -> list[BrokerGtt]: ...

    @abstractmethod
    def holdings(self) -> dict[tuple[str, str], int]: ...
