"""Positions (today's trades, netted per instrument and product) and CNC holdings.

CNC buys settle at the close: a day's net CNC purchase becomes ``t1_quantity`` of the holding on
the next simulated day and ``realised_quantity`` the day after (T+1 settlement); a CNC sale uses
holdings (``used_quantity``) and cannot exceed what is held or bought today.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .book import LIVE, Book, Saver
from .market import Market
from .models import rupees


@dataclass(slots=True)
class Holding:
    token: int
    exchange: str
    tradingsymbol: str
    realised: int
    t1: int
    average_price: float  # paise
    authorised_day: str


def isin_for(exchange_token: int) -> str:
    """A well-formed but invented ISIN (the simulator owns no ISIN table)."""
    return f"INE{exchange_token:05d}A01{exchange_token % 10}"


class Portfolio:
    def __init__(self, book: Book, market: Market, save: Saver) -> None:
        self.book = book
        self.market = market
        self._save = save
        self.holdings: dict[int, Holding] = {}
        book.sellable = self.sellable

    def load(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            h = Holding(**row)
            if h.realised + h.t1 > 0:
                self.holdings[h.token] = h

    def _cnc_today(self, token: int) -> tuple[int, int, int]:
        """(bought, sold, bought value in paise) of CNC trades today."""
        bought = sold = value = 0
        for t in self.book.today_trades():
            if t.instrument_token == token and t.product == "CNC":
                if t.transaction_type == "BUY":
                    bought += t.quantity
                    value += t.quantity * t.price
                else:
                    sold += t.quantity
        return bought, sold, value

    def sellable(self, token: int, exclude: str | None) -> int:
        h = self.holdings.get(token)
        held = (h.realised + h.t1) if h else 0
        bought, sold, _ = self._cnc_today(token)
        pending = sum(o.quantity - o.filled_quantity for o in self.book.today_orders()
                      if o.instrument_token == token and o.product == "CNC"
                      and o.transaction_type == "SELL" and o.status in LIVE
                      and o.order_id != exclude)
        return held + bought - sold - pending

    def settle_day(self) -> None:
        """Run at the close, before the clock moves: yesterday's T1 settles, today's net lands."""
        tokens = set(self.holdings) | {t.instrument_token for t in self.book.today_trades()
                                       if t.product == "CNC"}
        day = self.book.clock.day.isoformat()
        for token in tokens:
            h = self.holdings.get(token)
            if h is None:
                st = self.market.states[token]
                h = Holding(token, st.inst.exchange, st.inst.symbol, 0, 0, 0.0, day)
            h.realised += h.t1
            h.t1 = 0
            bought, sold, value = self._cnc_today(token)
            net = bought - sold
            if net > 0:
                held = h.realised
                h.average_price = (h.average_price * held + value / bought * net) / (held + net)
                h.t1 = net
            elif net < 0:
                h.realised = max(0, h.realised + net)
            if h.realised + h.t1 > 0:
                self.holdings[token] = h
                self._save("holding", str(token), day, asdict(h))
            else:
                self.holdings.pop(token, None)
                self._save("holding", str(token), day, {**asdict(h), "realised": 0, "t1": 0})

    def holdings_kite(self) -> list[dict[str, Any]]:
        out = []
        for h in self.holdings.values():
            if h.realised + h.t1 <= 0:
                continue
            st = self.market.states[h.token]
            _, sold, _ = self._cnc_today(h.token)
            qty = h.realised + h.t1
            change = st.ltp - st.close
            out.append({
                "tradingsymbol": h.tradingsymbol, "exchange": h.exchange,
                "instrument_token": h.token, "isin": isin_for(st.inst.exchange_token),
                "product": "CNC", "price": 0, "quantity": h.realised,
                "used_quantity": min(sold, qty), "t1_quantity": h.t1,
                "realised_quantity": h.realised, "authorised_quantity": 0,
                "authorised_date": f"{h.authorised_day} 00:00:00",
                "opening_quantity": qty, "collateral_quantity": 0, "collateral_type": "",
                "discrepancy": False, "average_price": rupees(h.average_price),
                "last_price": rupees(st.ltp), "close_price": rupees(st.close),
                "pnl": rupees((st.ltp - h.average_price) * qty),
                "day_change": rupees(change),
                "day_change_percentage": change * 100 / st.close if st.close else 0.0,
            })
        return out

    def positions_kite(self) -> dict[str, list[dict[str, Any]]]:
        groups: dict[tuple[int, str], list[Any]] = {}
        for t in self.book.today_trades():
            groups.setdefault((t.instrument_token, t.product), []).append(t)
        rows = []
        for (token, product), trades in groups.items():
            st = self.market.states[token]
            bq = sum(t.quantity for t in trades if t.transaction_type == "BUY")
            bv = sum(t.quantity * t.price for t in trades if t.transaction_type == "BUY")
            sq = sum(t.quantity for t in trades if t.transaction_type == "SELL")
            sv = sum(t.quantity * t.price for t in trades if t.transaction_type == "SELL")
            bp = bv / bq if bq else 0.0
            sp = sv / sq if sq else 0.0
            qty = bq - sq
            value = sv - bv
            pnl = value + qty * st.ltp
            realised = min(bq, sq) * (sp - bp)
            rows.append({
                "tradingsymbol": st.inst.symbol, "exchange": st.inst.exchange,
                "instrument_token": token, "product": product, "quantity": qty,
                "overnight_quantity": 0, "multiplier": 1,
                "average_price": rupees(bp if qty > 0 else sp if qty < 0 else 0),
                "close_price": rupees(st.close), "last_price": rupees(st.ltp),
                "value": rupees(value), "pnl": rupees(pnl), "m2m": rupees(pnl),
                "unrealised": rupees(pnl - realised), "realised": rupees(realised),
                "buy_quantity": bq, "buy_price": rupees(bp), "buy_value": rupees(bv),
                "buy_m2m_value": rupees(bv), "sell_quantity": sq, "sell_price": rupees(sp),
                "sell_value": rupees(sv), "sell_m2m_value": rupees(sv),
                "day_buy_quantity": bq, "day_buy_price": rupees(bp),
                "day_buy_value": rupees(bv), "day_sell_quantity": sq,
                "day_sell_price": rupees(sp), "day_sell_value": rupees(sv),
            })
        return {"net": rows, "day": [dict(r) for r in rows]}
