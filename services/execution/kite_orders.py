"""Execution's Kite connections beyond REST: its own ticker for order updates, the triggered GTTs
it follows to their exit, and the account check (positions and holdings) at start and every
minute. REST polling by the reconciler stays the fallback whenever the ticker is away.

KiteTicker runs on Twisted, whose reactor cannot be restarted in a process: it runs once, in a
daemon thread, for the life of the service; a new access token gets a new connection on it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.execution import ledger
from services.execution.brokers.base import BrokerError
from services.execution.brokers.kite import KiteBroker, order_from_kite
from services.execution.processor import Execution
from services.execution.reconciler import Reconciler
from services.execution.states import OrderState
from shared.broker_tokens import IST, TokenStore, TokenWatch, key_from_env
from shared.config import Settings
from shared.contracts.messages import AlertLevel
from shared.store.models import Order

log = logging.getLogger("ratchet.execution.kite")

UpdateSink = Callable[[dict[str, Any]], None]


def event_ms(data: dict[str, Any], fallback_ms: int) -> int:
    """The exchange's time of an order update (Kite sends naive IST ``YYYY-MM-DD HH:MM:SS``)."""
    for name in ("exchange_update_timestamp", "exchange_timestamp", "order_timestamp"):
        text = data.get(name)
        if isinstance(text, str) and len(text) >= 19:
            try:
                local = datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=IST)
            except ValueError:
                continue
            return int(local.timestamp() * 1000)
    return fallback_ms


class OrderUpdateTicker:
    """A KiteTicker connection that only listens for order updates (no instruments)."""

    def __init__(self, api_key: str, ws_root: str, sink: UpdateSink) -> None:
        self.api_key = api_key
        self.ws_root = ws_root
        self.sink = sink
        self.connected = threading.Event()
        self._ticker: Any = None
        self._lock = threading.Lock()

    def connect(self, access_token: str) -> None:
        from kiteconnect import KiteTicker
        from twisted.internet import reactor

        ticker = KiteTicker(self.api_key, access_token, root=self.ws_root, reconnect_max_delay=5,
                            reconnect_max_tries=300)

        def current() -> bool:  # a replaced connection's last callbacks are not news
            return self._ticker is ticker

        def on_connect(_ws: Any, _response: Any) -> None:
            if current():
                self.connected.set()
                log.info("order updates connected")

        def on_down(_ws: Any, _code: Any, _reason: Any) -> None:
            if current():
                self.connected.clear()

        ticker.on_order_update = lambda _ws, data: self.sink(data)
        ticker.on_connect = on_connect
        ticker.on_close = on_down
        ticker.on_error = on_down
        with self._lock:
            old, self._ticker = self._ticker, ticker
        if old is not None:
            reactor.callFromThread(old.close)  # stops its retries too
        if reactor.running:
            reactor.callFromThread(ticker.connect, True)
        else:
            ticker.connect(threaded=True)

    def close(self) -> None:
        from twisted.internet import reactor

        with self._lock:
            ticker, self._ticker = self._ticker, None
        if ticker is not None and reactor.running:
            reactor.callFromThread(ticker.close)


@dataclass
class OrderUpdates:
    """Applies order updates from the ticker: ours (by tag) at once; a GTT's child order wakes the
    reconciler, which follows triggered GTTs to their exit. Runs in its own worker thread; the
    Twisted thread only enqueues."""

    execution: Execution
    reconciler: Reconciler
    inbox: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    applied: int = 0

    def put(self, data: dict[str, Any]) -> None:
        self.inbox.put(data)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                data = self.inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.apply(data)
            except BrokerError as exc:
                log.warning("order update not applied", extra={"error": str(exc)})
            except (KeyError, TypeError, ValueError) as exc:  # a malformed update: counted, logged
                log.warning("malformed order update", extra={"error": str(exc)})

    def apply(self, data: dict[str, Any]) -> None:
        update = order_from_kite(data)
        ts_ms = event_ms(data, int(time.time() * 1000))
        if update.tag:
            with self.execution.sessions() as session:
                row = session.scalars(select(Order).where(Order.tag == update.tag)).first()
            if row is not None and row.state not in (OrderState.FILLED, OrderState.REJECTED,
                                                     OrderState.CANCELLED):
                self.execution.apply_broker_order(row.id, update, ts_ms)
                self.applied += 1
        if update.gtt_trigger_id:
            self.reconciler.run_once()


@dataclass
class AccountCheck:
    """Ratchet's open legs against the account's holdings (settled, T1 and today's CNC trades).
    Fewer shares at the broker than open legs is a CRITICAL alert once it has been seen twice in
    a row (a GTT exit between the two reads is not a mismatch); more is normal for an account
    that also holds shares Ratchet does not manage."""

    broker: KiteBroker
    sessions: sessionmaker[Session]
    clock_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    _suspect: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    last: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def ours(self) -> dict[tuple[str, str], int]:
        with self.sessions() as session:
            rows = session.scalars(select(Order).where(
                Order.side == "BUY", Order.state == OrderState.FILLED,
                Order.leg_closed_at.is_(None))).all()
        held: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (row.exchange, row.symbol)
            held[key] = held.get(key, 0) + (row.filled_qty or row.qty)
        return held

    def run_once(self) -> None:
        try:
            broker = self.broker.holdings()
        except BrokerError as exc:
            log.warning("account check deferred", extra={"error": str(exc)})
            return
        ours = self.ours()
        short = {key: (qty, broker.get(key, 0)) for key, qty in ours.items()
                 if broker.get(key, 0) < qty}
        confirmed = {key: v for key, v in short.items() if self._suspect.get(key) == v}
        self._suspect = short
        self.last = short
        for (exchange, symbol), (mine, theirs) in confirmed.items():
            message = (f"{exchange}:{symbol}: Ratchet's open legs hold {mine}, the Kite account "
                       f"holds {theirs}")
            log.error("holdings mismatch", extra={"symbol": symbol, "ours": mine, "broker": theirs})
            with self.sessions.begin() as session:
                ledger.raise_alert(session, AlertLevel.CRITICAL, "holdings_mismatch", message,
                                   ts_ms=self.clock_ms(), symbol=symbol)
        if not short:
            log.info("account reconciled", extra={"symbols": len(ours)})


@dataclass
class KiteConnections:
    broker: KiteBroker
    watch: TokenWatch
    ticker: OrderUpdateTicker | None = None


def connect_kite(settings: Settings, sessions: sessionmaker[Session]) -> KiteConnections:
    """The KiteBroker with its token from the encrypted store (halted, with a clear message, when
    there is none or it has expired)."""
    store = TokenStore(sessions, key_from_env())
    broker = KiteBroker(settings.kite_api_key, None, settings.kite_root,
                        orders_per_second=settings.execution.orders_per_second)
    links = KiteConnections(broker, TokenWatch(store, settings.kite_api_key, "execution",
                                               on_token=lambda token: None))

    def on_token(token: str) -> None:
        broker.set_access_token(token)
        if links.ticker is not None:
            links.ticker.connect(token)

    refusing = threading.Lock()  # one halt on its way at a time: a burst of refusals is one

    def on_auth_error(detail: str) -> None:
        """Halt from a thread of its own: the refusal may come inside a run of broker calls,
        which holds the halts lock that the halt's write waits for (:func:`ledger.hold_halts`)."""
        if not refusing.acquire(blocking=False):
            return

        def halt() -> None:
            try:
                links.watch.refused(detail)
            finally:
                refusing.release()

        threading.Thread(target=halt, name="token-refused", daemon=True).start()

    links.watch.on_token = on_token
    broker.on_auth_error = on_auth_error
    links.watch.check()
    return links


def start_order_updates(links: KiteConnections, settings: Settings, updates: OrderUpdates) -> None:
    links.ticker = OrderUpdateTicker(settings.kite_api_key, settings.kite_ws_root, updates.put)
    if links.watch.token is not None:
        links.ticker.connect(links.watch.token)
