"""The simulator's own clock: NSE session time that runs at N x wall speed, or stands still.

The market never reads the wall clock; the server advances this clock by wall time x speed, and
tests advance it explicitly (admin endpoints), so market tests are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

IST = timezone(timedelta(hours=5, minutes=30))
OPEN_MINUTE = 9 * 60 + 15
CLOSE_MINUTE = 15 * 60 + 30
SESSION_S = (CLOSE_MINUTE - OPEN_MINUTE) * 60


def session_open_ms(day: date) -> int:
    start = datetime(day.year, day.month, day.day, 9, 15, tzinfo=IST)
    return int(start.timestamp() * 1000)


def next_trading_day(day: date) -> date:
    """The next weekday after ``day`` (the sim keeps no holiday calendar)."""
    nxt = day + timedelta(days=1)
    while nxt.weekday() >= 5:
        nxt += timedelta(days=1)
    return nxt


def previous_trading_day(day: date) -> date:
    prev = day - timedelta(days=1)
    while prev.weekday() >= 5:
        prev -= timedelta(days=1)
    return prev


def first_trading_day(day: date) -> date:
    return day if day.weekday() < 5 else next_trading_day(day)


def ist(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=IST)


def fmt_ts(ms: int | None) -> str | None:
    """Kite's timestamp format: naive IST ``YYYY-MM-DD HH:MM:SS`` (the SDK parses 19 chars)."""
    if ms is None:
        return None
    return ist(ms).strftime("%Y-%m-%d %H:%M:%S")


def fmt_candle_ts(ms: int) -> str:
    return ist(ms).strftime("%Y-%m-%dT%H:%M:%S+0530")


def parse_ist(text: str) -> int:
    """Epoch ms of a Kite date or datetime string (``yyyy-mm-dd[ HH:MM[:SS]]``, IST)."""
    text = text.strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return int(parsed.replace(tzinfo=IST).timestamp() * 1000)
    raise ValueError(f"bad date {text!r}")


def today_ist() -> date:
    return datetime.now(UTC).astimezone(IST).date()


@dataclass(slots=True)
class SimClock:
    """Simulated exchange time (epoch ms) inside one trading day's session."""

    day: date
    now_ms: int
    speed: float = 60.0
    paused: bool = False

    @classmethod
    def at_open(cls, day: date, speed: float, paused: bool = False) -> SimClock:
        day = first_trading_day(day)
        return cls(day=day, now_ms=session_open_ms(day), speed=speed, paused=paused)

    @property
    def open_ms(self) -> int:
        return session_open_ms(self.day)

    @property
    def close_ms(self) -> int:
        return self.open_ms + SESSION_S * 1000

    def sim_seconds(self, wall_s: float) -> float:
        """Simulated seconds that ``wall_s`` of wall time is worth (0 while paused)."""
        return 0.0 if self.paused else wall_s * self.speed

    def advance(self, sim_s: float) -> bool:
        """Move time forward, stopping at the close; True when the session has closed."""
        self.now_ms = min(self.close_ms, self.now_ms + int(sim_s * 1000))
        return self.now_ms >= self.close_ms

    def roll(self) -> None:
        """Jump to the next trading day's open."""
        self.day = next_trading_day(self.day)
        self.now_ms = self.open_ms

    def to_state(self) -> dict[str, object]:
        return {"day": self.day.isoformat(), "now_ms": self.now_ms, "speed": self.speed,
                "paused": self.paused}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> SimClock:
        return cls(day=date.fromisoformat(str(state["day"])), now_ms=int(str(state["now_ms"])),
                   speed=float(str(state["speed"])), paused=bool(state["paused"]))
