"""A paper broker with a durable book of its own (paper_* tables, its own transactions).

It behaves like a real broker seen from execution: an order it accepted is in its book even if
execution crashes before recording it; MARKET orders fill at once at the intent's reference price;
GTTs trigger on ticks and fill at their trigger price, or at the tick's price when that tick opens
a new bar (a gap) — the backtest's rule (DESIGN.md §9).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from decimal import Decimal

from sqlalchemy import Engine, bindparam, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from services.execution.brokers.base import (
    BrokerError,
    BrokerGtt,
    BrokerInterface,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerRejected,
    BrokerUnavailable,
    GttRequest,
    GttStatus,
    OrderRequest,
)
from shared.domain.money import to_paise, to_rupees
from shared.store.db import make_engine
from shared.store.models import PaperGtt, PaperHolding, PaperOrder

_ids = itertools.count()

# An order and its holding change in one statement (so one transaction). Its commit needs no
# flush to disk of its own: the WAL is written in order, so execution's next synchronous commit
# (the record of this order's answer) makes it durable too, and if Postgres dies before that,
# neither survives — the order is as never placed, and the reconciler, finding no order with its
# tag after the settle window, sends it once.
_PLACE = """
WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true)),
holding AS ({holding})
INSERT INTO paper_orders (order_id, tag, exchange, symbol, side, qty, order_type, product, price,
                          status, filled_qty, average_price)
SELECT :order_id, :tag, :exchange, :symbol, :side, :qty, :order_type, :product, :price,
       :status, :qty, :price
FROM async_commit{joined}
"""
_BUY = text(_PLACE.format(joined="", holding="""
    INSERT INTO paper_holdings (exchange, symbol, qty, average_price)
    VALUES (:exchange, :symbol, :qty, :price)
    ON CONFLICT (exchange, symbol) DO UPDATE SET
        qty = paper_holdings.qty + excluded.qty,
        average_price = round((paper_holdings.average_price * paper_holdings.qty
                               + excluded.average_price * excluded.qty)
                              / (paper_holdings.qty + excluded.qty), 2)"""))
_SELL = text(_PLACE.format(joined=", holding", holding="""
    UPDATE paper_holdings SET qty = qty - :qty
    WHERE exchange = :exchange AND symbol = :symbol AND qty >= :qty
    RETURNING 1"""))

# A wave's market buys in one statement, so one round trip and one transaction: all placed, or
# none. Each symbol's holding takes the wave's buys of it at once (a statement may change a row
# only once).
_BUYS = text("""
WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true)),
placed AS (
    SELECT * FROM unnest(CAST(:order_ids AS text[]), CAST(:tags AS text[]),
                         CAST(:exchanges AS text[]), CAST(:symbols AS text[]),
                         CAST(:qtys AS integer[]), CAST(:products AS text[]),
                         CAST(:prices AS numeric[]))
        AS p(order_id, tag, exchange, symbol, qty, product, price)
),
holding AS (
    INSERT INTO paper_holdings (exchange, symbol, qty, average_price)
    SELECT exchange, symbol, sum(qty), round(sum(price * qty) / sum(qty), 2)
    FROM placed GROUP BY exchange, symbol
    ON CONFLICT (exchange, symbol) DO UPDATE SET
        qty = paper_holdings.qty + excluded.qty,
        average_price = round((paper_holdings.average_price * paper_holdings.qty
                               + excluded.average_price * excluded.qty)
                              / (paper_holdings.qty + excluded.qty), 2)
)
INSERT INTO paper_orders (order_id, tag, exchange, symbol, side, qty, order_type, product, price,
                          status, filled_qty, average_price)
SELECT order_id, tag, exchange, symbol, 'BUY', qty, 'MARKET', product, price, 'COMPLETE', qty,
       price
FROM placed, async_commit
""")

_HELD = select(PaperHolding.qty).where(PaperHolding.exchange == bindparam("exchange"),
                                       PaperHolding.symbol == bindparam("symbol"))


def _order_id() -> str:
    return f"P{time.time_ns() // 1000:016d}{next(_ids) % 1000:03d}"


def placements_engine(database_url: str, connections: int = 4) -> Engine:
    """The paper book's own pool for placements: AUTOCOMMIT (a placement is one statement) and
    no ping at checkout, a round trip per order; ``connections`` kept open, one for each broker
    call made at once. A connection Postgres dropped fails its one call as outcome-unknown,
    which the reconciler settles by tag, and is replaced."""
    return make_engine(database_url, pool_size=connections, pre_ping=False, autocommit=True)


class PaperBroker(BrokerInterface):
    name = "paper"

    def __init__(self, sessions: sessionmaker[Session], placements: Engine | None = None) -> None:
        """``placements`` (see :func:`placements_engine`) defaults to the pool of ``sessions``."""
        self.sessions = sessions
        self._placements = placements or sessions.kw["bind"].execution_options(
            isolation_level="AUTOCOMMIT")
        self._lock = threading.Lock()
        self._active: dict[str, list[tuple[int, int, int | None]]] | None = None
        self._loaded_at = 0.0

    # --- orders ------------------------------------------------------------------------------

    def place_order(self, request: OrderRequest) -> BrokerOrder:
        order = self._filled(request)
        params = {"order_id": order.order_id, "tag": order.tag, "exchange": order.exchange,
                  "symbol": order.symbol, "side": order.side, "qty": order.qty,
                  "order_type": request.order_type, "product": request.product,
                  "price": to_rupees(order.average_price or 0), "status": order.status.value}
        with self._book_call():
            with self._placements.connect() as conn:  # one statement, so its own transaction
                placed = conn.execute(_SELL if request.side == "SELL" else _BUY, params).rowcount
                if not placed:
                    where = {"exchange": request.exchange, "symbol": request.symbol}
                    held = conn.execute(_HELD, where).scalar()
                    raise BrokerRejected(f"insufficient holdings of {request.symbol}: "
                                         f"{held or 0} < {request.qty}")
        return order

    def place_orders(
        self, requests: Sequence[OrderRequest], calls: Executor
    ) -> list[BrokerOrder | BrokerError]:
        """A wave's market buys go into the book in one statement; a sale (it may be refused
        for want of holdings) or a malformed order, one by one."""
        together = [n for n, r in enumerate(requests)
                    if r.side == "BUY" and r.order_type == "MARKET" and r.qty > 0
                    and (r.reference_price or 0) > 0]
        if len(together) < 2:
            return super().place_orders(requests, calls)
        outcomes: dict[int, BrokerOrder | BrokerError] = dict(
            zip(together, self._place_buys([requests[n] for n in together]), strict=True))
        alone = [n for n in range(len(requests)) if n not in outcomes]
        outcomes.update(zip(alone, super().place_orders([requests[n] for n in alone], calls),
                            strict=True))
        return [outcomes[n] for n in range(len(requests))]

    def _place_buys(self, requests: list[OrderRequest]) -> list[BrokerOrder | BrokerError]:
        orders = [self._filled(request) for request in requests]
        params = {"order_ids": [o.order_id for o in orders], "tags": [o.tag for o in orders],
                  "exchanges": [o.exchange for o in orders], "symbols": [o.symbol for o in orders],
                  "qtys": [o.qty for o in orders], "products": [r.product for r in requests],
                  "prices": [to_rupees(o.average_price or 0) for o in orders]}
        try:
            with self._book_call(), self._placements.connect() as conn:
                conn.execute(_BUYS, params)
        except BrokerUnavailable as exc:
            return [exc] * len(orders)
        return list(orders)

    @staticmethod
    def _filled(request: OrderRequest) -> BrokerOrder:
        """The order as the book fills it: a MARKET order at once at its reference price."""
        if request.qty <= 0:
            raise BrokerRejected("quantity must be positive")
        if request.order_type == "MARKET" and request.reference_price is None:
            raise BrokerRejected("paper MARKET order needs a reference price")
        price = request.reference_price if request.order_type == "MARKET" else request.price
        if price is None or price <= 0:
            raise BrokerRejected("price must be positive")
        return BrokerOrder(
            order_id=_order_id(),
            tag=request.tag,
            exchange=request.exchange,
            symbol=request.symbol,
            side=request.side,
            qty=request.qty,
            status=BrokerOrderStatus.COMPLETE,
            filled_qty=request.qty,
            average_price=price,
        )

    @staticmethod
    @contextmanager
    def _book_call() -> Iterator[None]:
        """A placement whose connection dropped is placed or not, nobody knows: unknown."""
        try:
            yield
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise BrokerUnavailable(f"paper book unreachable: {exc.orig}") from exc
            raise

    def cancel_order(self, order_id: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(PaperOrder, order_id)
            if row is None:
                raise BrokerRejected(f"order {order_id} not found")
            if row.status != BrokerOrderStatus.OPEN:
                raise BrokerRejected(f"order {order_id} is {row.status}, not open")
            row.status = BrokerOrderStatus.CANCELLED

    def orders(self) -> list[BrokerOrder]:
        with self.sessions() as session:
            return [_order(r) for r in
                    session.scalars(select(PaperOrder).order_by(PaperOrder.placed_at))]

    def order_by_tag(self, tag: str, *, fresh: bool = False) -> BrokerOrder | None:
        with self.sessions() as session:  # always read now: there is no cache
            row = session.scalars(select(PaperOrder).where(PaperOrder.tag == tag)).first()
            return _order(row) if row else None

    def order(self, order_id: str) -> BrokerOrder | None:
        with self.sessions() as session:
            row = session.get(PaperOrder, order_id)
            return _order(row) if row else None

    def holdings(self) -> dict[tuple[str, str], int]:
        with self.sessions() as session:
            return {(h.exchange, h.symbol): h.qty for h in session.scalars(select(PaperHolding))}

    # --- GTTs --------------------------------------------------------------------------------

    def place_gtt(self, request: GttRequest) -> str:
        with self.sessions.begin() as session:
            active = session.scalars(
                select(PaperGtt.trigger_id).where(PaperGtt.status == GttStatus.ACTIVE)
            ).all()
            if len(active) >= 250:
                raise BrokerRejected("GTT limit of 250 active triggers reached")
            row = PaperGtt(
                exchange=request.exchange,
                symbol=request.symbol,
                kind="two-leg" if request.target_trigger is not None else "single",
                qty=request.qty,
                stop_trigger=to_rupees(request.stop_trigger),
                stop_limit=to_rupees(request.stop_limit),
                target_trigger=_rupees_or_none(request.target_trigger),
                target_limit=_rupees_or_none(request.target_limit),
                status=GttStatus.ACTIVE,
            )
            session.add(row)
            session.flush()
            trigger_id = str(row.trigger_id)
        self._active = None
        return trigger_id

    def modify_gtt(self, trigger_id: str, request: GttRequest) -> None:
        with self.sessions.begin() as session:
            row = session.get(PaperGtt, int(trigger_id))
            if row is None or row.status != GttStatus.ACTIVE:
                raise BrokerRejected(f"GTT {trigger_id} is not active")
            row.stop_trigger = to_rupees(request.stop_trigger)
            row.stop_limit = to_rupees(request.stop_limit)
            row.target_trigger = _rupees_or_none(request.target_trigger)
            row.target_limit = _rupees_or_none(request.target_limit)
            row.qty = request.qty
        self._active = None

    def delete_gtt(self, trigger_id: str) -> None:
        with self.sessions.begin() as session:
            row = session.get(PaperGtt, int(trigger_id))
            if row is None or row.status != GttStatus.ACTIVE:
                raise BrokerRejected(f"GTT {trigger_id} is not active")
            row.status = GttStatus.DELETED
        self._active = None

    def gtts(self) -> list[BrokerGtt]:
        with self.sessions() as session:
            rows = session.scalars(select(PaperGtt).order_by(PaperGtt.trigger_id)).all()
            children = {
                o.gtt_trigger_id: o.order_id
                for o in session.scalars(
                    select(PaperOrder).where(PaperOrder.gtt_trigger_id.is_not(None)))
            }
        return [
            BrokerGtt(
                trigger_id=str(r.trigger_id),
                exchange=r.exchange,
                symbol=r.symbol,
                qty=r.qty,
                status=GttStatus(r.status),
                stop_trigger=to_paise(r.stop_trigger),
                target_trigger=to_paise(r.target_trigger) if r.target_trigger is not None else None,
                triggered_order_id=children.get(str(r.trigger_id)),
            )
            for r in rows
        ]

    # --- the market ----------------------------------------------------------------------------

    def on_tick(self, symbol: str, price: int, bar_open: bool = False) -> list[str]:
        """Trigger the symbol's active GTTs that this tick crosses; return their trigger ids."""
        with self._lock:
            # Another replica may have placed or moved a GTT: the cache lives half a second.
            if self._active is None or time.monotonic() - self._loaded_at > 0.5:
                self._load_active()
            assert self._active is not None
            candidates = self._active.get(symbol)
            if not candidates:
                return []
            fired = [
                (tid, stop, target)
                for tid, stop, target in candidates
                if price <= stop or (target is not None and price >= target)
            ]
        triggered: list[str] = []
        for tid, stop, target in fired:
            if price <= stop:
                fill = price if bar_open else stop
            else:
                fill = price if bar_open else target  # type: ignore[assignment]
            if self._trigger(tid, fill):
                triggered.append(str(tid))
        if fired:
            self._active = None
        return triggered

    def _load_active(self) -> None:
        active: dict[str, list[tuple[int, int, int | None]]] = {}
        with self.sessions() as session:
            for row in session.scalars(select(PaperGtt).where(PaperGtt.status == GttStatus.ACTIVE)):
                target = to_paise(row.target_trigger) if row.target_trigger is not None else None
                active.setdefault(row.symbol, []).append(
                    (row.trigger_id, to_paise(row.stop_trigger), target)
                )
        self._active = active
        self._loaded_at = time.monotonic()

    def _trigger(self, trigger_id: int, fill: int) -> bool:
        """Mark the GTT triggered and fill its child sell order, in one transaction."""
        with self.sessions.begin() as session:
            claimed = session.execute(
                update(PaperGtt)
                .where(PaperGtt.trigger_id == trigger_id, PaperGtt.status == GttStatus.ACTIVE)
                .values(status=GttStatus.TRIGGERED)
                .returning(PaperGtt.exchange, PaperGtt.symbol, PaperGtt.qty)
            ).first()
            if claimed is None:
                return False
            exchange, symbol, qty = claimed
            fills = self._child_fills(symbol, fill)
            if fills:
                self._take_holding(session, exchange, symbol, qty)
            session.add(
                PaperOrder(
                    order_id=_order_id(),
                    tag=None,
                    exchange=exchange,
                    symbol=symbol,
                    side="SELL",
                    qty=qty,
                    order_type="LIMIT",
                    product="CNC",
                    price=to_rupees(fill),
                    status=BrokerOrderStatus.COMPLETE if fills else BrokerOrderStatus.OPEN,
                    filled_qty=qty if fills else 0,
                    average_price=to_rupees(fill) if fills else None,
                    gtt_trigger_id=str(trigger_id),
                )
            )
        return True

    def _child_fills(self, symbol: str, price: int) -> bool:
        """Whether a triggered GTT's limit order fills at once. The paper market always fills;
        fault tests override this to leave the order open, as a gap or a circuit would."""
        return True

    # --- holdings ------------------------------------------------------------------------------

    def _take_holding(self, session: Session, exchange: str, symbol: str, qty: int) -> None:
        row = session.get(PaperHolding, (exchange, symbol), with_for_update=True)
        if row is None or row.qty < qty:
            held = row.qty if row else 0
            raise BrokerRejected(f"insufficient holdings of {symbol}: {held} < {qty}")
        row.qty -= qty


def _order(row: PaperOrder) -> BrokerOrder:
    return BrokerOrder(
        order_id=row.order_id,
        tag=row.tag,
        exchange=row.exchange,
        symbol=row.symbol,
        side=row.side,
        qty=row.qty,
        status=BrokerOrderStatus(row.status),
        filled_qty=row.filled_qty,
        average_price=to_paise(row.average_price) if row.average_price is not None else None,
        status_message=row.status_message,
        gtt_trigger_id=row.gtt_trigger_id,
    )


def _rupees_or_none(paise: int | None) -> Decimal | None:
    return to_rupees(paise) if paise is not None else None
