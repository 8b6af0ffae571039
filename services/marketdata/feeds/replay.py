"""The ``replay`` feed: stored history (CSV or the ``ohlcv`` table) through the live services.

Each bar becomes the four ticks of DESIGN.md §9 (the backtester's own path, from
:mod:`backtest.ticks`), symbols alphabetical within a time: tick k of every symbol, then k + 1,
then the bars close (candles and a ``BarEnd``). In lock-step mode each of those steps waits until
every consumer group has read and acknowledged everything and no service has an unpublished
outbox message, so the services see exactly what the backtester sees. Otherwise bars are paced at
N times their own duration.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable

import redis
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from backtest.bars import BarSeries, load_csv_dir, load_ohlcv
from backtest.ticks import bar_steps, replay_ticks
from services.marketdata.ingest import Ingestor
from shared.config import BrokerKind, Settings
from shared.contracts import streams
from shared.domain.money import to_rupees
from shared.store.models import Instrument, OutboxMessage

log = logging.getLogger("ratchet.marketdata")

REPLAY_DONE = "md.replay.done"  # Redis key set when the whole history has been replayed
# Consumer groups (by name prefix) that must exist before the first tick, or it would be missed.
REQUIRED_GROUPS = (
    (streams.ticks_stream(0), streams.GROUP_STRATEGY),
    (streams.CANDLES, streams.GROUP_STRATEGY),  # each strategy replica's own group
    (streams.INTENTS, streams.GROUP_EXECUTION),
)


def replay_token(symbol: str) -> int:
    """A stable token for a symbol that has none (CSV data)."""
    return 900_000_000 + zlib.crc32(symbol.encode()) % 99_999_999


class Quiescence:
    """Every consumer group has caught up with every stream, and no outbox row is waiting."""

    def __init__(
        self, client: redis.Redis, sessions: sessionmaker[Session], tick_streams: list[str]
    ) -> None:
        self.client = client
        self.sessions = sessions
        self.streams = [*tick_streams, streams.CANDLES, streams.INTENTS, streams.EXEC_EVENTS]

    def _caught_up(self) -> bool:
        for stream in self.streams:
            if not self.client.exists(stream):
                continue
            last = self.client.xinfo_stream(stream)["last-generated-id"]
            for group in self.client.xinfo_groups(stream):
                if group["pending"] or group["last-delivered-id"] != last:
                    return False
        with self.sessions() as session:
            waiting = session.scalar(
                select(func.count()).select_from(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None))
            )
        return not waiting

    def wait(self, stop: threading.Event, timeout_s: float = 120.0) -> None:
        """Block until idle twice in a row (a handler may be between its ack and its publish)."""
        deadline = time.monotonic() + timeout_s
        calm = 0
        while not stop.is_set() and time.monotonic() < deadline:
            calm = calm + 1 if self._caught_up() else 0
            if calm >= 2:
                return
            time.sleep(0.01)
        if not stop.is_set():
            log.warning("replay step not acknowledged in time; going on")


class ReplayFeed:
    def __init__(
        self,
        series: dict[str, BarSeries],
        tokens: dict[str, int],
        ingestor: Ingestor,
        pace: Callable[[threading.Event, int], None],
        grace_ms: int,
    ) -> None:
        self.series = series
        self.tokens = tokens
        self.ingestor = ingestor
        self.pace = pace
        self.grace_ms = grace_ms

    def run(self, stop: threading.Event) -> int:
        """Replay every bar; return the number of steps played."""
        bars = {symbol: s.bars for symbol, s in self.series.items()}
        steps = 0
        for _start, group in bar_steps(bars):
            paths = [(self.tokens[sym], list(replay_ticks(bars[sym][i]))) for sym, i in group]
            for k in range(4):
                frame = [(token, path[k].ts_ms, path[k].price, None) for token, path in paths]
                clock = max(path[k].ts_ms for _, path in paths)
                self.ingestor.on_frame(frame, clock, bar_open=k == 0)
                self.pace(stop, clock)
                if stop.is_set():
                    return steps
            end = max(bars[sym][i].end_ms for sym, i in group)
            self.ingestor.on_clock(end + self.grace_ms)  # the bars close: candles and BarEnd
            self.pace(stop, end)
            steps += 1
        return steps


def load_series(
    settings: Settings, sessions: sessionmaker[Session], ingestor: Ingestor
) -> dict[str, BarSeries]:
    rules = ingestor.rules
    if settings.replay_data is not None:
        return load_csv_dir(settings.replay_data, rules)
    with sessions() as session:
        symbols = list(session.scalars(select(Instrument.tradingsymbol)))
    return load_ohlcv(sessions, symbols, rules,
                      timeframe_minutes=settings.strategy.timeframe_minutes)


def start_replay(settings: Settings, client: redis.Redis, sessions: sessionmaker[Session],
                 ingestor: Ingestor, stop: threading.Event) -> None:
    """Load the history, register its instruments, wait for the consumers, replay, mark done."""
    series = load_series(settings, sessions, ingestor)
    tokens = {symbol: replay_token(symbol) for symbol in series}
    rows = [{"token": tokens[s], "exchange": ser.exchange, "tradingsymbol": s, "name": s,
             "tick_size": to_rupees(ser.tick), "lot_size": 1, "freeze_qty": None}
            for s, ser in series.items()]
    with sessions.begin() as session:
        stmt = insert(Instrument).values(rows)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["token"], set_={"tick_size": stmt.excluded.tick_size}))
    for symbol, token in tokens.items():
        ingestor.register(token, symbol, series[symbol].exchange)
    client.delete(REPLAY_DONE)
    client.hset(streams.FEED_HEARTBEAT, mapping={"clock_ms": 0})  # lets the strategy start
    tick_streams = streams.all_tick_streams(settings.tick_shards)
    required = list(REQUIRED_GROUPS)
    if settings.broker == BrokerKind.PAPER:  # the paper broker's GTTs trigger on these ticks
        required.append((streams.ticks_stream(0), streams.GROUP_EXECUTION))
    while not stop.is_set() and not all(
        client.exists(stream)
        and any(g["name"].decode().startswith(group) for g in client.xinfo_groups(stream))
        for stream, group in required
    ):
        stop.wait(0.2)  # the strategy and execution are not reading yet
    if settings.replay_lockstep:
        quiet = Quiescence(client, sessions, tick_streams)

        def pace(stop_event: threading.Event, clock: int) -> None:
            quiet.wait(stop_event)
    else:
        last: list[int] = []

        def pace(stop_event: threading.Event, clock: int) -> None:
            if last:
                stop_event.wait(max(clock - last[0], 0) / 1000 / settings.replay_speed)
            last[:] = [clock]

    log.info("replay starting", extra={
        "symbols": len(series), "lockstep": settings.replay_lockstep,
        "bars": sum(len(s.bars) for s in series.values())})
    grace_ms = int(settings.marketdata.candle_grace_s * 1000)
    feed = ReplayFeed(series, tokens, ingestor, pace, grace_ms)
    steps = feed.run(stop)
    if not stop.is_set():
        client.set(REPLAY_DONE, steps)
        log.info("replay finished", extra={"steps": steps})
