"""The broker interface over Zerodha's official ``kiteconnect`` SDK (REST).

The root URL is a setting: ``https://api.kite.trade`` in production, the simulator of
``shared.kite`` in every test. Kite's errors become the typed broker errors, and the type decides
what happens next (DESIGN.md §4, RELIABILITY.md):

=========================================  ==========================  =======================
what Kite answered                         read (orders, GTTs, ...)     write (place, modify...)
=========================================  ==========================  =======================
TokenException (403)                       BrokerAuthError             BrokerAuthError
InputException / OrderException 4xx,       BrokerRejected              BrokerRejected
PermissionException                        (final: nothing happened)   (final: nothing placed)
429 (NetworkException "Too many requests") retried, then RateLimited   BrokerRateLimited (send
                                                                       again: nothing placed)
5xx, DataException, an HTML page,          retried, then Unavailable   BrokerUnavailable
connection reset                                                       (reconcile by tag)
no answer in time                          retried, then Timeout       BrokerTimeout (reconcile)
=========================================  ==========================  =======================

A write is never retried here: an order whose answer was lost is found by its tag in the order
book, a GTT by matching (the reconciler's job). Prices cross this boundary in integer paise.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from services.execution.brokers.base import (
    BrokerAuthError,
    BrokerError,
    BrokerGtt,
    BrokerInterface,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerRateLimited,
    BrokerRejected,
    BrokerTimeout,
    BrokerUnavailable,
    GttRequest,
    GttStatus,
    OrderRequest,
)

log = logging.getLogger("ratchet.execution.kite")

VARIETY = "regular"
TAG_RE = re.compile(r"^[A-Za-z0-9]{1,20}$")

# Kite's order states: the terminal ones map one to one, every other state is a live order.
_STATUS = {
    "COMPLETE": BrokerOrderStatus.COMPLETE,
    "REJECTED": BrokerOrderStatus.REJECTED,
    "CANCELLED": BrokerOrderStatus.CANCELLED,
    "TRIGGER PENDING": BrokerOrderStatus.TRIGGER_PENDING,
}
_GTT_STATUS = {s.value: s for s in GttStatus} | {"disabled": GttStatus.CANCELLED}


def paise(rupees: float | int | str | None) -> int | None:
    """Kite's rupee floats to exact paise (812.35 -> 81235)."""
    if rupees is None or rupees == "":
        return None
    return int((Decimal(str(rupees)) * 100).to_integral_value())


def rupees_text(value: int) -> str:
    return str(Decimal(value).scaleb(-2))


def rupees_float(value: int) -> float:
    return float(Decimal(value).scaleb(-2))


def order_from_kite(data: dict[str, Any]) -> BrokerOrder:
    """One order as Kite's order book, order history or an order update shows it."""
    status = _STATUS.get(str(data.get("status", "")).upper(), BrokerOrderStatus.OPEN)
    filled = int(data.get("filled_quantity") or 0)
    meta = data.get("meta") or {}
    gtt = meta.get("gtt") if isinstance(meta, dict) else None
    return BrokerOrder(
        order_id=str(data["order_id"]),
        tag=data.get("tag") or None,
        exchange=str(data.get("exchange", "")),
        symbol=str(data.get("tradingsymbol", "")),
        side=str(data.get("transaction_type", "")),
        qty=int(data.get("quantity") or 0),
        status=status,
        filled_qty=filled,
        average_price=paise(data.get("average_price")) if filled else None,
        status_message=data.get("status_message") or None,
        gtt_trigger_id=str(gtt) if gtt else None,
    )


def gtt_from_kite(data: dict[str, Any]) -> BrokerGtt:
    condition = data.get("condition") or {}
    triggers = [paise(v) or 0 for v in condition.get("trigger_values") or []]
    orders = data.get("orders") or []
    child: str | None = None
    for leg in orders:
        result = leg.get("result") or {}
        placed = (result.get("order_result") or {}).get("order_id") if result else None
        if placed:
            child = str(placed)
    return BrokerGtt(
        trigger_id=str(data["id"]),
        exchange=str(condition.get("exchange", "")),
        symbol=str(condition.get("tradingsymbol", "")),
        qty=int(orders[0]["quantity"]) if orders else 0,
        status=_GTT_STATUS.get(str(data.get("status", "")).lower(), GttStatus.CANCELLED),
        stop_trigger=triggers[0] if triggers else 0,
        target_trigger=triggers[1] if len(triggers) > 1 else None,
        triggered_order_id=child,
    )


class OrderPacer:
    """At most ``per_second`` order requests in any rolling second from this process (Kite counts
    a sliding second and answers 429 past 10; the shared order budget counts whole seconds)."""

    def __init__(self, per_second: int, window_s: float = 1.05,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.per_second = per_second
        self.window_s = window_s
        self.clock = clock
        self.sleep = sleep
        self._sent: list[float] = []
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.per_second <= 0:
            return
        while True:
            with self._lock:
                now = self.clock()
                self._sent = [t for t in self._sent if now - t < self.window_s]
                if len(self._sent) < self.per_second:
                    self._sent.append(now)
                    return
                wait = self.window_s - (now - self._sent[0])
            self.sleep(max(wait, 0.001))


@dataclass
class KiteStats:
    calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    unavailable: int = 0
    auth_errors: int = 0


class KiteBroker(BrokerInterface):
    """Execution's broker for Kite Connect. Safe to share between threads (a client each)."""

    name = "kite"

    def __init__(
        self,
        api_key: str,
        access_token: str | None,
        root: str,
        *,
        timeout_s: float = 7.0,
        read_attempts: int = 3,
        orders_cache_s: float = 0.5,
        on_auth_error: Callable[[str], None] | None = None,
        orders_per_second: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_key = api_key
        self.root = root.rstrip("/")
        self.timeout_s = timeout_s
        self.read_attempts = max(1, read_attempts)
        self.orders_cache_s = orders_cache_s
        self.on_auth_error = on_auth_error
        self.sleep = sleep
        self.stats = KiteStats()
        self.pacer = OrderPacer(orders_per_second)
        self._token = access_token
        self._local = threading.local()
        self._orders_lock = threading.Lock()
        self._orders_cache: tuple[float, list[BrokerOrder]] | None = None

    # --- the SDK client, one per thread (requests.Session is not meant to be shared) -------------

    @property
    def access_token(self) -> str | None:
        return self._token

    def set_access_token(self, token: str | None) -> None:
        self._token = token

    def client(self) -> KiteConnect:
        kite: KiteConnect | None = getattr(self._local, "kite", None)
        if kite is None:
            kite = KiteConnect(self.api_key, access_token=self._token, root=self.root,
                               timeout=self.timeout_s)
            self._local.kite = kite
        elif kite.access_token != self._token:
            kite.set_access_token(self._token)
        return kite

    # --- error mapping -------------------------------------------------------------------------

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        self.stats.calls += 1
        try:
            yield
        except kex.TokenException as exc:
            self.stats.auth_errors += 1
            if self.on_auth_error is not None:
                self.on_auth_error(str(exc))
            raise BrokerAuthError(f"{what}: {exc}") from exc
        except kex.NetworkException as exc:
            if exc.code == 429:
                self.stats.rate_limited += 1
                raise BrokerRateLimited(f"{what}: {exc}") from exc
            self.stats.unavailable += 1
            raise BrokerUnavailable(f"{what}: {exc} ({exc.code})") from exc
        except (kex.InputException, kex.OrderException, kex.PermissionException,
                kex.GeneralException) as exc:
            if exc.code >= 500:
                self.stats.unavailable += 1
                raise BrokerUnavailable(f"{what}: {exc} ({exc.code})") from exc
            raise BrokerRejected(f"{what}: {exc}") from exc
        except kex.KiteException as exc:  # DataException: the OMS is down, or not JSON at all
            self.stats.unavailable += 1
            raise BrokerUnavailable(f"{what}: {exc} ({exc.code})") from exc
        except requests.Timeout as exc:
            self.stats.unavailable += 1
            raise BrokerTimeout(f"{what}: no answer within {self.timeout_s}s") from exc
        except (requests.RequestException, KeyError, ValueError) as exc:
            # connection refused or reset, a response cut off, a body without a content type
            self.stats.unavailable += 1
            raise BrokerUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _write(self, what: str, call: Callable[[KiteConnect], Any]) -> Any:
        """One attempt, never retried: an unknown outcome is reconciled, not sent again."""
        with self._mapped(what):
            return call(self.client())

    def _read(
        self, what: str, call: Callable[[KiteConnect], Any], attempts: int | None = None
    ) -> Any:
        """Reads are idempotent: retried with a short back-off on 429, 5xx and timeouts."""
        tries = attempts or self.read_attempts
        for attempt in range(1, tries + 1):
            try:
                with self._mapped(what):
                    return call(self.client())
            except (BrokerUnavailable, BrokerRateLimited):
                if attempt == tries:
                    raise
                self.stats.retries += 1
                self.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    # --- orders --------------------------------------------------------------------------------

    def place_order(self, request: OrderRequest) -> BrokerOrder:
        if not TAG_RE.match(request.tag):
            raise BrokerRejected(f"tag {request.tag!r}: not alphanumeric of at most 20 characters")
        if request.qty <= 0:
            raise BrokerRejected("quantity must be positive")
        params: dict[str, Any] = {
            "variety": VARIETY,
            "exchange": request.exchange,
            "tradingsymbol": request.symbol,
            "transaction_type": request.side,
            "quantity": request.qty,
            "product": request.product,
            "order_type": request.order_type,
            "validity": "DAY",
            "tag": request.tag,
        }
        if request.order_type == "MARKET":
            # Kite refuses API market orders without protection (a percentage, or -1 for auto).
            pct = Decimal(request.market_protection_pct or "-1")
            params["market_protection"] = int(pct) if pct == pct.to_integral_value() else float(pct)
        elif request.price is not None:
            params["price"] = rupees_text(request.price)
        else:
            raise BrokerRejected(f"{request.order_type} order without a price")
        if request.algo_id:
            params["algo_id"] = request.algo_id
        self.pacer.acquire()
        order_id = str(self._write(f"place {request.side} {request.symbol}",
                                   lambda k: k.place_order(**params)))
        self._orders_cache = None
        # The answer is only an id. One look at its history (not retried: the order exists
        # whatever happens now); the order-update stream and polling carry it further.
        try:
            found = self.order(order_id, attempts=1)
        except BrokerError:
            found = None
        return found or BrokerOrder(
            order_id=order_id, tag=request.tag, exchange=request.exchange, symbol=request.symbol,
            side=request.side, qty=request.qty, status=BrokerOrderStatus.OPEN, filled_qty=0,
            average_price=None,
        )

    def modify_order(self, order_id: str, *, qty: int | None = None, price: int | None = None,
                     order_type: str | None = None) -> None:
        """Change a live order (used for a stuck exit: LIMIT to MARKET)."""
        params: dict[str, Any] = {"variety": VARIETY, "order_id": order_id}
        if qty is not None:
            params["quantity"] = qty
        if price is not None:
            params["price"] = rupees_text(price)
        if order_type is not None:
            params["order_type"] = order_type
        self.pacer.acquire()
        self._write(f"modify order {order_id}", lambda k: k.modify_order(**params))
        self._orders_cache = None

    def cancel_order(self, order_id: str) -> None:
        self.pacer.acquire()
        self._write(f"cancel order {order_id}", lambda k: k.cancel_order(VARIETY, order_id))
        self._orders_cache = None

    def orders(self) -> list[BrokerOrder]:
        rows = self._read("orders", lambda k: k.orders())
        found = [order_from_kite(row) for row in rows]
        with self._orders_lock:
            self._orders_cache = (time.monotonic(), found)
        return found

    def order_by_tag(self, tag: str, *, fresh: bool = False) -> BrokerOrder | None:
        """Today's order with this tag. The order book is read at most once per half second, so
        settling many orders costs one request (a just-placed order may be a moment late; the
        settle window before "not found" means "not placed" covers that). ``fresh`` reads it
        now: this process's cache does not know what another replica placed since."""
        with self._orders_lock:
            cached = self._orders_cache
        if fresh or cached is None or time.monotonic() - cached[0] > self.orders_cache_s:
            book = self.orders()
        else:
            book = cached[1]
        found = [o for o in book if o.tag == tag]
        return found[-1] if found else None

    def order(self, order_id: str, attempts: int | None = None) -> BrokerOrder | None:
        history = self.order_history(order_id, attempts)
        return history[-1] if history else None

    def order_history(self, order_id: str, attempts: int | None = None) -> list[BrokerOrder]:
        try:
            rows = self._read(f"order {order_id}", lambda k: k.order_history(order_id), attempts)
        except BrokerRejected:
            return []  # "Couldn't find that order_id"
        return [order_from_kite(row) for row in rows]

    # --- GTTs ----------------------------------------------------------------------------------

    @staticmethod
    def _gtt_args(request: GttRequest) -> dict[str, Any]:
        legs = [(request.stop_trigger, request.stop_limit)]
        if request.target_trigger is not None:
            legs.append((request.target_trigger, request.target_limit or request.target_trigger))
        return {
            "trigger_type": (KiteConnect.GTT_TYPE_OCO if len(legs) == 2
                             else KiteConnect.GTT_TYPE_SINGLE),
            "tradingsymbol": request.symbol,
            "exchange": request.exchange,
            "trigger_values": [rupees_float(trigger) for trigger, _ in legs],
            "last_price": rupees_float(request.last_price),
            "orders": [
                {"transaction_type": "SELL", "quantity": request.qty, "order_type": "LIMIT",
                 "product": "CNC", "price": rupees_float(limit)}
                for _, limit in legs
            ],
        }

    def place_gtt(self, request: GttRequest) -> str:
        args = self._gtt_args(request)
        data = self._write(f"place GTT {request.symbol}", lambda k: k.place_gtt(**args))
        return str(data["trigger_id"])

    def modify_gtt(self, trigger_id: str, request: GttRequest) -> None:
        args = self._gtt_args(request)
        self._write(f"modify GTT {trigger_id}", lambda k: k.modify_gtt(int(trigger_id), **args))

    def delete_gtt(self, trigger_id: str) -> None:
        self._write(f"delete GTT {trigger_id}", lambda k: k.delete_gtt(int(trigger_id)))

    def gtts(self) -> list[BrokerGtt]:
        return [gtt_from_kite(g) for g in self._read("GTTs", lambda k: k.get_gtts())]

    # --- the account ---------------------------------------------------------------------------

    def positions(self) -> dict[tuple[str, str], int]:
        """Today's net CNC quantity per instrument (a sale of holdings shows negative)."""
        data = self._read("positions", lambda k: k.positions())
        out: dict[tuple[str, str], int] = {}
        for row in data.get("day") or []:
            if row.get("product") == "CNC":
                key = (str(row["exchange"]), str(row["tradingsymbol"]))
                out[key] = out.get(key, 0) + int(row.get("quantity") or 0)
        return out

    def holdings(self) -> dict[tuple[str, str], int]:
        """What the account holds now: settled and T1 holdings plus today's net CNC trades."""
        rows = self._read("holdings", lambda k: k.holdings())
        held: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (str(row["exchange"]), str(row["tradingsymbol"]))
            held[key] = held.get(key, 0) + int(row.get("quantity") or 0) + int(
                row.get("t1_quantity") or 0)
        for key, qty in self.positions().items():
            held[key] = held.get(key, 0) + qty
        return {key: qty for key, qty in held.items() if qty}

    def ltp(self, keys: list[str]) -> dict[str, int]:
        """Last prices (paise) of ``EXCHANGE:SYMBOL`` keys."""
        data = self._read("ltp", lambda k: k.ltp(keys))
        return {key: paise(value["last_price"]) or 0 for key, value in data.items()}

    def profile(self) -> dict[str, Any]:
        """A cheap authenticated read: checks that the access token works."""
        result: dict[str, Any] = self._read("profile", lambda k: k.profile())
        return result
