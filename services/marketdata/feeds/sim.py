"""The ``sim`` feed: seeded price paths on a simulated NSE clock running at N× wall speed.

The clock starts at the open of a simulated trading day and carries its own time, so every time
rule (bars, session, cut-off) runs on event time and ``make run`` trades at any hour. At the
session's end the clock jumps to the next trading day's open. A restart carries on from the last
stored bar: the paths are deterministic, so they are fast-forwarded to where they were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.marketdata.ingest import RawTick
from shared.domain.session import SessionRules, ist_ordinal
from shared.sim.market import PricePath, SimInstrument

log = logging.getLogger("ratchet.marketdata")

FrameSink = Callable[[list[RawTick], int], object]  # what it returns is ignored
ClockSink = Callable[[int], None]


def first_sim_open(rules: SessionRules, now: datetime | None = None) -> int:
    """The open of the simulated day: today's (IST) if a trading day, else the next one's."""
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    day = ist_ordinal(now_ms)
    while not rules.is_trading_day(day):
        day += 1
    return rules.session_open_ms(day)


def session_seconds_between(rules: SessionRules, start_ms: int, end_ms: int) -> float:
    """Seconds of trading time between two instants (overnights and holidays excluded)."""
    total = 0
    for day in range(ist_ordinal(start_ms), ist_ordinal(end_ms) + 1):
        if rules.is_trading_day(day):
            lo = max(rules.session_open_ms(day), start_ms)
            hi = min(rules.session_close_ms(day), end_ms)
            total += max(hi - lo, 0)
    return total / 1000


@dataclass
class SimClock:
    """Simulated exchange time in ms, stepping through sessions only."""

    rules: SessionRules
    now_ms: int

    def advance(self, step_ms: int) -> bool:
        """Move on by ``step_ms``; True when that crossed into a new session (overnight)."""
        nxt = self.now_ms + step_ms
        if self.rules.in_session(nxt):
            self.now_ms = nxt
            return False
        self.now_ms = self.rules.next_session_open_ms(self.now_ms)
        return True


class SimFeed:
    def __init__(
        self,
        instruments: list[SimInstrument],
        seed: int,
        rules: SessionRules,
        day0_open_ms: int,
        resume_ms: int,
        speed: float,
        tick_interval_s: float,
    ) -> None:
        self.rules = rules
        self.speed = speed
        self.step_ms = int(tick_interval_s * 1000)
        self.paths = [PricePath(inst, seed) for inst in instruments]
        self.clock = SimClock(rules, max(resume_ms, day0_open_ms))
        elapsed = session_seconds_between(rules, day0_open_ms, self.clock.now_ms)
        if elapsed > 0:
            self._fast_forward(elapsed, tick_interval_s)
        if not rules.in_session(self.clock.now_ms):
            self.clock.now_ms = rules.next_session_open_ms(self.clock.now_ms)

    def _fast_forward(self, elapsed_s: float, step_s: float) -> None:
        steps = int(elapsed_s / step_s)
        log.info("sim paths fast-forwarded", extra={"seconds": elapsed_s, "steps": steps})
        for path in self.paths:
            for _ in range(steps):
                path.next_price(step_s)

    def frame(self) -> list[RawTick]:
        """Advance the clock one step and price every instrument at the new time."""
        overnight = self.clock.advance(self.step_ms)
        dt_s = self.step_ms / 1000
        ts = self.clock.now_ms
        ticks: list[RawTick] = []
        for path in self.paths:
            if overnight:
                path.new_day()
            price = path.next_price(dt_s)
            ticks.append((path.instrument.token, ts, price, path.day_volume))
        return ticks

    def run(self, stop: threading.Event, on_frame: FrameSink, on_clock: ClockSink) -> None:
        """Emit frames paced so that simulated time runs ``speed`` times faster than the wall."""
        wall0, sim0 = time.monotonic(), self.clock.now_ms
        last_sim = sim0
        while not stop.is_set():
            target = sim0 + (time.monotonic() - wall0) * 1000 * self.speed
            produced = 0
            while self.clock.now_ms + self.step_ms <= target and produced < 50:
                before = self.clock.now_ms
                ticks = self.frame()
                if self.clock.now_ms - before != self.step_ms:
                    # overnight jump: restart the pacing at the new session's open
                    wall0, sim0 = time.monotonic(), self.clock.now_ms
                    target = sim0
                on_frame(ticks, self.clock.now_ms)
                produced += 1
                last_sim = self.clock.now_ms
            if produced == 0:
                on_clock(int(max(last_sim, min(target, last_sim + self.step_ms))))
                time.sleep(min(self.step_ms / self.speed / 1000, 0.05))
