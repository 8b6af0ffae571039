"""The order book: placement, validation, Kite's order states, fills against the market.

Structural problems are answered with an ``InputException`` and create nothing (as Kite does);
risk problems (a price outside the circuit, a CNC sale without holdings, an injected fault) create
an order that goes to REJECTED, which a client only sees in the order book. Fills are whole and at
the last price: a BUY never fills while the price is frozen at its upper circuit, a SELL never at
its lower, and a LIMIT never beyond its price.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .clock import SimClock, fmt_ts
from .errors import input_error, order_error
from .market import InstrumentState, Market
from .models import ModifyOrderForm, Order, PlaceOrderForm, Trade, rupees, to_paise

TERMINAL = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
LIVE = frozenset({"OPEN", "TRIGGER PENDING"})
NO_HOLDINGS = ("Insufficient stock holding or there are pending sell orders for this stock. "
               "Check the orderbook.")

OrderListener = Callable[[Order], None]
Saver = Callable[[str, str, str, dict[str, Any]], None]


def order_to_kite(o: Order) -> dict[str, Any]:
    """The order as Kite's order book shows it (prices in rupees, IST timestamps)."""
    avg = o.filled_value / o.filled_quantity if o.filled_quantity else 0
    data: dict[str, Any] = {
        "placed_by": o.placed_by, "order_id": o.order_id,
        "exchange_order_id": o.exchange_order_id, "parent_order_id": None,
        "status": o.status, "status_message": o.status_message,
        "status_message_raw": o.status_message_raw,
        "order_timestamp": fmt_ts(o.order_ms),
        "exchange_update_timestamp": fmt_ts(o.exchange_update_ms),
        "exchange_timestamp": fmt_ts(o.exchange_ms), "variety": o.variety,
        "modified": o.modified, "exchange": o.exchange, "tradingsymbol": o.tradingsymbol,
        "instrument_token": o.instrument_token, "order_type": o.order_type,
        "transaction_type": o.transaction_type, "validity": o.validity, "validity_ttl": 0,
        "product": o.product, "quantity": o.quantity,
        "disclosed_quantity": o.disclosed_quantity, "price": rupees(o.price),
        "trigger_price": rupees(o.trigger_price), "average_price": rupees(avg),
        "filled_quantity": o.filled_quantity, "pending_quantity": o.pending_quantity,
        "cancelled_quantity": o.cancelled_quantity,
        "market_protection": o.market_protection,
        "meta": {"gtt": o.gtt_id} if o.gtt_id else {},
        "tag": o.tag, "guid": f"sim-{o.order_id}",
    }
    if o.tag:
        data["tags"] = [o.tag]
    return data


class Book:
    """Orders and trades of the simulated account."""

    def __init__(self, market: Market, clock: SimClock, save: Saver, user_id: str) -> None:
        self.market = market
        self.clock = clock
        self._save = save
        self.user_id = user_id
        self.orders: dict[str, Order] = {}
        self.trades: list[Trade] = []
        self.live_by_token: dict[int, set[str]] = {}
        self.listeners: list[OrderListener] = []
        self.reject_hook: Callable[[], str | None] = lambda: None
        # set by the portfolio: the CNC quantity of a token that may still be sold today
        self.sellable: Callable[[int, str | None], int] = lambda token, exclude: 0
        self.order_seq = 0
        self.trade_seq = 0

    # -- persistence -------------------------------------------------------------------------
    def load(self, orders: list[dict[str, Any]], trades: list[dict[str, Any]],
             seqs: dict[str, int] | None) -> None:
        for row in orders:
            o = Order(**row)
            self.orders[o.order_id] = o
            if o.status in LIVE:
                self.live_by_token.setdefault(o.instrument_token, set()).add(o.order_id)
        self.trades = [Trade(**row) for row in trades]
        # ids are derived from what is on disk too, so a kill between saves never reuses one
        self.order_seq = max([(seqs or {}).get("order", 0)]
                             + [int(o[6:]) for o in self.orders if o[6:].isdigit()])
        self.trade_seq = max([(seqs or {}).get("trade", 0)]
                             + [int(t.trade_id) for t in self.trades])

    def seqs(self) -> dict[str, int]:
        return {"order": self.order_seq, "trade": self.trade_seq}

    def _persist(self, o: Order) -> None:
        self._save("order", o.order_id, o.day, o.to_dict())

    def _state(self, o: Order, status: str, message: str | None = None) -> None:
        """Record one state change: history snapshot, live index, disk, listeners."""
        o.status = status
        if message is not None:
            o.status_message = o.status_message_raw = message
        o.exchange_update_ms = self.clock.now_ms if o.exchange_order_id else None
        o.history.append(order_to_kite(o))
        live = self.live_by_token.setdefault(o.instrument_token, set())
        if status in LIVE:
            live.add(o.order_id)
        else:
            live.discard(o.order_id)
        self._persist(o)
        for listener in self.listeners:
            listener(o)

    # -- commands ----------------------------------------------------------------------------
    def _instrument(self, exchange: str, symbol: str) -> InstrumentState:
        st = self.market.by_key.get(f"{exchange}:{symbol}")
        if st is None:
            raise input_error("The instrument you are placing an order for has either expired "
                              "or does not exist.")
        return st

    def _check_tick(self, st: InstrumentState, paise: int, what: str) -> None:
        if paise % st.inst.tick:
            raise input_error(f"Tick size for this script is {st.inst.tick / 100:.2f}. Kindly "
                              f"enter {what} in the multiple of tick size for this script")

    def place(self, form: PlaceOrderForm, variety: str, gtt_id: int | None = None) -> Order:
        if variety != "regular":
            raise input_error("Invalid `variety`. The simulator accepts regular orders only.")
        st = self._instrument(form.exchange, form.tradingsymbol)
        price = to_paise(form.price)
        trigger = to_paise(form.trigger_price, "trigger_price")
        if form.order_type in ("LIMIT", "SL") and price <= 0:
            raise input_error("Invalid `price`.")
        if form.order_type in ("SL", "SL-M") and trigger <= 0:
            raise input_error("Invalid `trigger_price`.")
        if form.order_type in ("MARKET", "SL-M"):
            mp = form.market_protection
            if mp is None or not (mp == -1 or 0 < mp <= 100):
                raise input_error("Market orders without market protection are not allowed via "
                                  "API. Please set market protection or use a Limit order.")
            price = 0
        if form.quantity % st.inst.lot_size:
            raise input_error(f"Quantity should be a multiple of lot size {st.inst.lot_size}.")
        self._check_tick(st, price, "price")
        self._check_tick(st, trigger, "trigger price")
        self.order_seq += 1
        now = self.clock.now_ms
        o = Order(order_id=f"{self.clock.day:%y%m%d}{self.order_seq:09d}",
                  day=self.clock.day.isoformat(), exchange=form.exchange,
                  tradingsymbol=form.tradingsymbol, instrument_token=st.inst.token,
                  transaction_type=form.transaction_type, order_type=form.order_type,
                  product=form.product, validity=form.validity, quantity=form.quantity,
                  price=price, trigger_price=trigger,
                  disclosed_quantity=form.disclosed_quantity,
                  market_protection=float(form.market_protection or 0), tag=form.tag,
                  order_ms=now, placed_by=self.user_id, gtt_id=gtt_id)
        self.orders[o.order_id] = o
        self._state(o, "PUT ORDER REQ RECEIVED")
        self._state(o, "VALIDATION PENDING")
        reason = self._rms(o, st)
        if reason:
            self._state(o, "REJECTED", reason)
            return o
        self._state(o, "OPEN PENDING")
        o.exchange_order_id = f"1{self.order_seq:015d}"
        o.exchange_ms = now
        self._state(o, "TRIGGER PENDING" if o.order_type in ("SL", "SL-M") else "OPEN")
        self._try_fill(o, st)
        return o

    def _rms(self, o: Order, st: InstrumentState) -> str | None:
        injected = self.reject_hook()
        if injected:
            return injected
        for value in (o.price, o.trigger_price):
            if value and value < st.lower:
                return (f"Your order price is lower than the current lower circuit limit of "
                        f"{st.lower / 100:g}. Place an order within the daily range.")
            if value and value > st.upper:
                return (f"Your order price is higher than the current upper circuit limit of "
                        f"{st.upper / 100:g}. Place an order within the daily range.")
        if o.product == "CNC" and o.transaction_type == "SELL":
            if o.quantity > self.sellable(o.instrument_token, o.order_id):
                return NO_HOLDINGS
        return None

    def get(self, order_id: str) -> Order:
        o = self.orders.get(order_id)
        if o is None:
            raise input_error("Couldn't find that `order_id`.")
        return o

    def modify(self, order_id: str, variety: str, form: ModifyOrderForm) -> Order:
        o = self.get(order_id)
        if variety != o.variety:
            raise input_error("Invalid `variety`.")
        if o.status not in LIVE:
            raise order_error(f"Order cannot be modified as it is in {o.status} state.")
        st = self.market.states[o.instrument_token]
        order_type = form.order_type or o.order_type
        price = to_paise(form.price) if form.price is not None else o.price
        trigger = (to_paise(form.trigger_price, "trigger_price")
                   if form.trigger_price is not None else o.trigger_price)
        if order_type in ("MARKET", "SL-M"):
            price = 0
        elif price <= 0:
            raise input_error("Invalid `price`.")
        self._check_tick(st, price, "price")
        self._check_tick(st, trigger, "trigger price")
        quantity = form.quantity or o.quantity
        if quantity < o.filled_quantity or quantity % st.inst.lot_size:
            raise input_error("Invalid `quantity`.")
        self._state(o, "MODIFY VALIDATION PENDING")
        self._state(o, "MODIFY PENDING")
        o.order_type, o.price, o.trigger_price, o.quantity = order_type, price, trigger, quantity
        o.validity = form.validity or o.validity
        if form.disclosed_quantity is not None:
            o.disclosed_quantity = form.disclosed_quantity
        o.modified = True
        self._state(o, "MODIFIED")
        self._state(o, "TRIGGER PENDING" if order_type in ("SL", "SL-M") else "OPEN")
        self._try_fill(o, st)
        return o

    def cancel(self, order_id: str, variety: str) -> Order:
        o = self.get(order_id)
        if variety != o.variety:
            raise input_error("Invalid `variety`.")
        if o.status not in LIVE:
            raise order_error(f"Order cannot be cancelled as it is in {o.status} state.")
        self._state(o, "CANCEL PENDING")
        o.cancelled_quantity = o.quantity - o.filled_quantity
        self._state(o, "CANCELLED")
        return o

    def expire_day(self) -> None:
        """At the close, DAY orders still open are cancelled by the exchange."""
        for ids in list(self.live_by_token.values()):
            for order_id in list(ids):
                o = self.orders[order_id]
                o.cancelled_quantity = o.quantity - o.filled_quantity
                self._state(o, "CANCELLED", "Order cancelled by the exchange at market close.")

    # -- matching ----------------------------------------------------------------------------
    def on_price(self, st: InstrumentState) -> None:
        ids = self.live_by_token.get(st.inst.token)
        if ids:
            for order_id in list(ids):
                self._try_fill(self.orders[order_id], st)

    def _try_fill(self, o: Order, st: InstrumentState) -> None:
        ltp = st.ltp
        buy = o.transaction_type == "BUY"
        if o.status == "TRIGGER PENDING":
            if (buy and ltp >= o.trigger_price) or (not buy and ltp <= o.trigger_price):
                self._state(o, "OPEN")
            else:
                return
        if o.status != "OPEN":
            return
        frozen = st.at_upper if buy else st.at_lower  # nobody on the other side
        beyond = o.order_type in ("LIMIT", "SL") and (ltp > o.price if buy else ltp < o.price)
        if not frozen and not beyond:
            self._fill(o, ltp)
        elif o.validity == "IOC":
            o.cancelled_quantity = o.quantity - o.filled_quantity
            self._state(o, "CANCELLED")

    def _fill(self, o: Order, price: int) -> None:
        qty = o.quantity - o.filled_quantity
        self.trade_seq += 1
        now = self.clock.now_ms
        trade = Trade(trade_id=f"{self.trade_seq:08d}", order_id=o.order_id,
                      day=self.clock.day.isoformat(), exchange=o.exchange,
                      tradingsymbol=o.tradingsymbol, instrument_token=o.instrument_token,
                      product=o.product, transaction_type=o.transaction_type, quantity=qty,
                      price=price, exchange_order_id=o.exchange_order_id or "",
                      order_ms=o.order_ms, fill_ms=now)
        self.trades.append(trade)
        self._save("trade", trade.trade_id, trade.day, _trade_dict(trade))
        o.filled_quantity += qty
        o.filled_value += price * qty
        o.exchange_ms = now
        self._state(o, "COMPLETE")

    # -- queries -----------------------------------------------------------------------------
    def today_orders(self) -> list[Order]:
        day = self.clock.day.isoformat()
        return [o for o in self.orders.values() if o.day == day]

    def today_trades(self) -> list[Trade]:
        day = self.clock.day.isoformat()
        return [t for t in self.trades if t.day == day]


def _trade_dict(t: Trade) -> dict[str, Any]:
    return {name: getattr(t, name) for name in Trade.__slots__}  # type: ignore[attr-defined]
