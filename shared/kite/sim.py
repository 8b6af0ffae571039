"""The simulator's composition root: clock, market, book, GTTs, portfolio, sessions and storage.

All state changes run on one asyncio event loop (the server's), so nothing here takes locks. The
market loop steps prices by wall time x speed; admin calls step it, set prices or roll the day
explicitly, which is how tests stay deterministic.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from .book import Book
from .clock import SimClock, fmt_ts, today_ist
from .errors import input_error, token_error
from .faults import FaultState
from .gtt import GttBook
from .history import BarRecorder, Prehistory, candles, validate_range
from .instruments import load_instruments
from .market import InstrumentState, Market
from .models import Order
from .portfolio import Portfolio
from .prices import make_source
from .store import Store

USER_ID = "SIM001"


@dataclass(frozen=True, slots=True)
class SimConfig:
    api_key: str
    api_secret: str
    state_dir: Path
    seed: int = 1
    speed: float = 60.0
    symbols: int = 50
    tick_interval_s: float = 0.25
    start_day: date | None = None
    paused: bool = False
    replay_dir: Path | None = None
    history_days: int = 30


class Simulator:
    def __init__(self, cfg: SimConfig, faults: FaultState) -> None:
        self.cfg = cfg
        self.faults = faults
        self.store = Store(cfg.state_dir / "kite_sim.sqlite3")
        saved_clock = self.store.get("clock")
        self.clock = (SimClock.from_state(saved_clock) if saved_clock else
                      SimClock.at_open(cfg.start_day or today_ist(), cfg.speed, cfg.paused))
        if not saved_clock:
            self.clock.speed, self.clock.paused = cfg.speed, cfg.paused
        self.instruments = load_instruments(cfg.symbols, cfg.seed)
        sources = {i.token: make_source(i, cfg.seed, cfg.replay_dir) for i in self.instruments}
        self.market = Market(self.instruments, sources, self.clock, cfg.seed)
        first = self.store.get("first_day")
        if first is None:
            first = self.clock.day.isoformat()
            self.store.put("first_day", first)
            self.store.put("anchors", {str(t): st.close for t, st in self.market.states.items()})
        self.anchors = {int(k): v for k, v in (self.store.get("anchors") or {}).items()}
        self.prehistory = Prehistory(cfg.seed, date.fromisoformat(first), cfg.history_days)
        saved_market = self.store.get("market")
        if saved_market:
            self.market.restore(saved_market)
        self.bars = BarRecorder()
        self.bars.load(self.store.load_bars())
        self.book = Book(self.market, self.clock, self.store.save, USER_ID)
        self.book.reject_hook = faults.take_rejection
        self.portfolio = Portfolio(self.book, self.market, self.store.save)
        self.gtts = GttBook(self.market, self.clock, self.book, self.store.save)
        seqs = self.store.get("seqs") or {}
        self.book.load(self.store.load("order"), self.store.load("trade"), seqs.get("book"))
        self.portfolio.load(self.store.load("holding"))
        self.gtts.load(self.store.load("gtt"), seqs.get("gtt"))
        self.sessions: dict[str, dict[str, Any]] = {
            s["access_token"]: s for s in self.store.load("session")}
        self.tick_listeners: list[Callable[[list[InstrumentState]], None]] = []
        self.order_listeners: list[Callable[[Order], None]] = []
        self.book.listeners.append(self._order_changed)
        self.stopping = False

    # -- sessions ----------------------------------------------------------------------------
    def create_session(self, api_key: str, request_token: str, checksum: str) -> dict[str, Any]:
        if api_key != self.cfg.api_key:
            raise input_error("Invalid `api_key`.")
        expected = hashlib.sha256(
            (api_key + request_token + self.cfg.api_secret).encode()).hexdigest()
        if not request_token or not secrets.compare_digest(expected, checksum or ""):
            raise token_error("Token is invalid or has expired.")
        session: dict[str, Any] = {"access_token": secrets.token_urlsafe(24), "api_key": api_key,
                   "user_id": USER_ID, "login_ms": self.clock.now_ms,
                   "public_token": secrets.token_hex(16), "enctoken": secrets.token_urlsafe(32)}
        self.sessions[session["access_token"]] = session
        self.store.save("session", session["access_token"], self.clock.day.isoformat(), session)
        return session

    def authenticate(self, header: str | None) -> dict[str, Any]:
        if not header or not header.startswith("token "):
            raise token_error()
        api_key, _, access_token = header[6:].partition(":")
        session = self.sessions.get(access_token)
        if session is None or session["api_key"] != api_key:
            raise token_error()
        return session

    def check_ws(self, api_key: str | None, access_token: str | None) -> bool:
        session = self.sessions.get(access_token or "")
        return session is not None and session["api_key"] == api_key

    def invalidate(self, access_token: str | None = None) -> int:
        tokens = [access_token] if access_token else list(self.sessions)
        for tok in tokens:
            if self.sessions.pop(tok, None) is not None:
                self.store.delete("session", tok)
        return len(tokens)

    # -- market ------------------------------------------------------------------------------
    def _order_changed(self, order: Order) -> None:
        for listener in self.order_listeners:
            listener(order)

    def _after_prices(self, changed: list[InstrumentState]) -> None:
        now = self.clock.now_ms
        for st in changed:
            self.bars.record(st.inst.token, now, st.ltp, st.last_qty)
            self.book.on_price(st)
            self.gtts.on_price(st)
        for listener in self.tick_listeners:
            listener(changed)

    def step(self, sim_s: float) -> None:
        closed = self.clock.advance(sim_s)
        self._after_prices(self.market.step(sim_s))
        if closed:
            self.next_day()

    def advance(self, sim_s: float, step_s: float = 1.0) -> None:
        """Move simulated time by ``sim_s`` in ``step_s`` steps (admin: deterministic time)."""
        remaining = sim_s
        while remaining > 1e-9:
            dt = min(step_s, remaining)
            self.step(dt)
            remaining -= dt

    def set_price(self, st: InstrumentState, price: int) -> None:
        self.market.set_price(st, price)
        self._after_prices([st])

    def next_day(self) -> None:
        """Close the session (expire orders, settle CNC) and open the next trading day."""
        self.book.expire_day()
        self.portfolio.settle_day()
        self.clock.roll()
        self.market.roll_day()
        self.gtts.expire()
        self._after_prices(list(self.market.states.values()))
        self.save()

    def historical(self, token: int, interval: str, from_ms: int, to_ms: int,
                   oi: bool) -> list[list[object]]:
        st = self.market.states.get(token)
        if st is None:
            raise input_error("invalid token")
        validate_range(interval, from_ms, to_ms)
        to_ms = min(to_ms, self.clock.now_ms)
        lo = from_ms - 86_400_000
        pre = self.prehistory.bars(st.inst, self.anchors.get(token, st.close))
        live = self.bars.bars.get(token, [])
        minute = [b for b in pre if lo <= b[0] <= to_ms] + [b for b in live if lo <= b[0] <= to_ms]
        return candles(minute, interval, from_ms, to_ms, oi)

    def save(self) -> None:
        self.store.put("clock", self.clock.to_state())
        self.store.put("market", self.market.to_state())
        self.store.put("seqs", {"book": self.book.seqs(), "gtt": self.gtts.seq})
        self.store.save_bars(self.bars.take_dirty())

    def state(self) -> dict[str, Any]:
        return {"now": fmt_ts(self.clock.now_ms), "now_ms": self.clock.now_ms,
                "day": self.clock.day.isoformat(), "speed": self.clock.speed,
                "paused": self.clock.paused, "instruments": len(self.instruments),
                "orders_today": len(self.book.today_orders()),
                "active_gtts": self.gtts.active_count(), "faults": self.faults.describe()}

    async def run(self) -> None:
        """The market loop: step by wall time x speed; save the book every second."""
        last = last_save = time.monotonic()
        while not self.stopping:
            await asyncio.sleep(self.cfg.tick_interval_s)
            now = time.monotonic()
            sim_s = self.clock.sim_seconds(now - last)
            last = now
            if sim_s > 0:
                self.step(sim_s)
            if now - last_save >= 1.0:
                self.save()
                last_save = now
