"""GTT triggers: single and two-leg (OCO), at most 250 active; a trigger places a LIMIT order.

A single trigger fires when the price crosses it from the side of the condition's last price; an
OCO fires its first leg at or below the lower trigger, its second at or above the upper. The
child is an ordinary LIMIT order at the leg's price, so a gap past that price leaves it open.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import orjson

from .book import Book, Saver
from .clock import SimClock, fmt_ts
from .errors import KiteError, input_error
from .market import InstrumentState, Market
from .models import GttForm, PlaceOrderForm, rupees, to_paise

MAX_ACTIVE = 250
YEAR_MS = int(timedelta(days=365).total_seconds() * 1000)


@dataclass(slots=True)
class Gtt:
    id: int
    type: str
    status: str
    exchange: str
    tradingsymbol: str
    token: int
    trigger_values: list[int]
    last_price: int
    orders: list[dict[str, Any]]
    created_ms: int
    updated_ms: int
    expires_ms: int
    user_id: str
    results: list[dict[str, Any] | None] = field(default_factory=list)


def gtt_to_kite(g: Gtt) -> dict[str, Any]:
    orders = []
    for leg, result in zip(g.orders, g.results, strict=True):
        orders.append({
            "account_id": "", "parent_order_id": "", "exchange": g.exchange,
            "tradingsymbol": g.tradingsymbol, "validity": "", "product": leg["product"],
            "order_type": leg["order_type"], "transaction_type": leg["transaction_type"],
            "quantity": leg["quantity"], "disclosed_quantity": 0, "price": rupees(leg["price"]),
            "trigger_price": 0, "ltp_atp": "", "squareoff_abs_tick": "",
            "stoploss_abs_tick": "", "squareoff": 0, "stoploss": 0, "trailing_stoploss": 0,
            "meta": "", "guid": "", "result": result})
    return {
        "id": g.id, "user_id": g.user_id, "parent_trigger": None, "type": g.type,
        "created_at": fmt_ts(g.created_ms), "updated_at": fmt_ts(g.updated_ms),
        "expires_at": fmt_ts(g.expires_ms), "status": g.status,
        "condition": {"exchange": g.exchange, "last_price": rupees(g.last_price),
                      "tradingsymbol": g.tradingsymbol,
                      "trigger_values": [rupees(v) for v in g.trigger_values],
                      "instrument_token": g.token},
        "orders": orders, "meta": {}}


class GttBook:
    def __init__(self, market: Market, clock: SimClock, book: Book, save: Saver) -> None:
        self.market = market
        self.clock = clock
        self.book = book
        self._save = save
        self.gtts: dict[int, Gtt] = {}
        self.active_by_token: dict[int, set[int]] = {}
        self.seq = 100_000

    def load(self, rows: list[dict[str, Any]], seq: int | None) -> None:
        for row in rows:
            g = Gtt(**row)
            self.gtts[g.id] = g
            if g.status == "active":
                self.active_by_token.setdefault(g.token, set()).add(g.id)
        self.seq = max([seq or 0, self.seq, *self.gtts])

    def _persist(self, g: Gtt) -> None:
        self._save("gtt", str(g.id), fmt_ts(g.created_ms) or "", asdict(g))

    def _set_status(self, g: Gtt, status: str) -> None:
        g.status = status
        g.updated_ms = self.clock.now_ms
        active = self.active_by_token.setdefault(g.token, set())
        if status == "active":
            active.add(g.id)
        else:
            active.discard(g.id)
        self._persist(g)

    def _validate(self, form: GttForm) -> tuple[InstrumentState, list[int], list[dict[str, Any]]]:
        cond = form.condition
        st = self.market.by_key.get(f"{cond.exchange}:{cond.tradingsymbol}")
        if st is None:
            raise input_error("Invalid `tradingsymbol`: the instrument does not exist.")
        want = 1 if form.type == "single" else 2
        if len(cond.trigger_values) != want or len(form.orders) != want:
            raise input_error(f"Invalid `trigger_values` or `orders` for a {form.type} GTT.")
        triggers = [to_paise(v, "trigger_values") for v in cond.trigger_values]
        tick = st.inst.tick
        legs = []
        for leg in form.orders:
            if (leg.exchange, leg.tradingsymbol) != (cond.exchange, cond.tradingsymbol):
                raise input_error("GTT orders must be for the condition's instrument.")
            price = to_paise(leg.price)
            if price % tick or any(t % tick for t in triggers):
                raise input_error(f"Tick size for this script is {tick / 100:.2f}. Kindly enter "
                                  "trigger and price in the multiple of tick size.")
            legs.append({"transaction_type": leg.transaction_type, "quantity": leg.quantity,
                         "order_type": leg.order_type, "product": leg.product, "price": price})
        ltp = st.ltp
        if form.type == "single" and triggers[0] == ltp:
            raise input_error("Trigger price was too close to the last price.")
        if form.type == "two-leg" and not triggers[0] < ltp < triggers[1]:
            raise input_error("The lower trigger must be below and the upper trigger above the "
                              "last price.")
        return st, triggers, legs

    def active_count(self) -> int:
        return sum(len(ids) for ids in self.active_by_token.values())

    def create(self, form: GttForm) -> Gtt:
        st, triggers, legs = self._validate(form)
        if self.active_count() >= MAX_ACTIVE:
            raise input_error(f"You have reached the maximum of {MAX_ACTIVE} active GTTs.")
        self.seq += 1
        now = self.clock.now_ms
        g = Gtt(id=self.seq, type=form.type, status="active", exchange=st.inst.exchange,
                tradingsymbol=st.inst.symbol, token=st.inst.token, trigger_values=triggers,
                last_price=to_paise(round(form.condition.last_price, 2), "last_price"),
                orders=legs, created_ms=now, updated_ms=now, expires_ms=now + YEAR_MS,
                user_id=self.book.user_id, results=[None] * len(legs))
        self.gtts[g.id] = g
        self._set_status(g, "active")
        return g

    def get(self, gtt_id: int) -> Gtt:
        g = self.gtts.get(gtt_id)
        if g is None:
            raise input_error("Invalid trigger ID: trigger not found.")
        return g

    def modify(self, gtt_id: int, form: GttForm) -> Gtt:
        g = self.get(gtt_id)
        if g.status != "active":
            raise input_error(f"Trigger cannot be modified as it is {g.status}.")
        st, triggers, legs = self._validate(form)
        if st.inst.token != g.token:
            raise input_error("A GTT's instrument cannot be changed.")
        g.type, g.trigger_values, g.orders = form.type, triggers, legs
        g.results = [None] * len(legs)
        g.last_price = to_paise(round(form.condition.last_price, 2), "last_price")
        self._set_status(g, "active")
        return g

    def delete(self, gtt_id: int) -> Gtt:
        g = self.get(gtt_id)
        if g.status != "active":
            raise input_error(f"Trigger cannot be deleted as it is {g.status}.")
        self._set_status(g, "deleted")
        return g

    def expire(self) -> None:
        for ids in list(self.active_by_token.values()):
            for gid in list(ids):
                g = self.gtts[gid]
                if g.expires_ms <= self.clock.now_ms:
                    self._set_status(g, "expired")

    def on_price(self, st: InstrumentState) -> None:
        ids = self.active_by_token.get(st.inst.token)
        if not ids:
            return
        ltp = st.ltp
        for gid in sorted(ids):
            g = self.gtts[gid]
            if g.type == "single":
                trigger = g.trigger_values[0]
                falling = trigger < g.last_price
                if (falling and ltp <= trigger) or (not falling and ltp >= trigger):
                    self._fire(g, 0, ltp)
            elif ltp <= g.trigger_values[0]:
                self._fire(g, 0, ltp)
            elif ltp >= g.trigger_values[1]:
                self._fire(g, 1, ltp)

    def _fire(self, g: Gtt, leg_index: int, ltp: int) -> None:
        """Mark the GTT triggered and place its LIMIT order; record how that went."""
        self._set_status(g, "triggered")
        leg = g.orders[leg_index]
        form = PlaceOrderForm(exchange=g.exchange, tradingsymbol=g.tradingsymbol,
                              transaction_type=leg["transaction_type"],
                              quantity=leg["quantity"], product=leg["product"],
                              order_type="LIMIT", price=str(rupees(leg["price"])))
        order_result: dict[str, Any]
        try:
            order = self.book.place(form, "regular", gtt_id=g.id)
        except KiteError as exc:
            order_result = {"status": "failed", "order_id": "", "rejection_reason": exc.message}
        else:
            if order.status == "REJECTED":
                order_result = {"status": "failed", "order_id": "",
                                "rejection_reason": order.status_message or ""}
            else:
                order_result = {"status": "success", "order_id": order.order_id,
                                "rejection_reason": ""}
        g.results[leg_index] = {
            "account_id": g.user_id, "parent_order_id": "", "exchange": g.exchange,
            "tradingsymbol": g.tradingsymbol, "validity": "DAY", "product": leg["product"],
            "order_type": "LIMIT", "transaction_type": leg["transaction_type"],
            "quantity": leg["quantity"], "disclosed_quantity": 0, "price": rupees(leg["price"]),
            "trigger_price": 0, "ltp_atp": "LTP", "squareoff_abs_tick": "absolute",
            "stoploss_abs_tick": "absolute", "squareoff": 0, "stoploss": 0,
            "trailing_stoploss": 0, "meta": orjson.dumps({"app_id": 1, "gtt": g.id}).decode(),
            "guid": "", "timestamp": fmt_ts(self.clock.now_ms), "triggered_at": rupees(ltp),
            "order_result": order_result}
        self._persist(g)
