"""The ``kite`` feed: Zerodha's official ``KiteTicker`` in ``full`` mode, into the ingestor.

- The socket is the SDK's (handshake, subscription, reconnect with exponential back-off up to
  5 s, resubscription on reconnect). KiteTicker runs on Twisted, whose reactor cannot restart in
  a process: it runs once, in a daemon thread, for the service's life; a new access token gets a
  new connection on it.
- Frames are read raw from ``on_message`` and parsed here into integer paise and the packet's
  exchange timestamp (``full`` mode carries it; ltp/quote packets are stamped with the feed's
  clock). The SDK's own parser (floats, datetimes, depth dicts) is never run: exact prices, and a
  fraction of the cost.
- One worker thread owns the ingestor: it batches frames into ``Ingestor.on_frame``, advances the
  clock while ticks flow, runs the stale-feed watchdog, and handles gaps: when ticks come back after
  a disconnect or a stall that crossed a bar boundary, each token's unfinished bar is dropped, its
  ticks are held, the missed bars are fetched from the historical endpoint (3 requests a second)
  and published in order with their EMAs, then the held ticks go in. The same path warms every
  token at start.
- Watchdog: no tick for ``marketdata.stale_feed_s`` during market hours, socket open or not (the
  SDK sends no ping, so a silent socket is never noticed by it): a ``stale_feed`` halt and an alert,
  a forced reconnect, and the halt cleared when ticks resume.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from services.marketdata.feeds.kite_backfill import Backfiller, FillJob, FillResult, KiteInstrument
from services.marketdata.ingest import Ingestor, InstrumentFeedState, RawTick
from services.marketdata.ohlcv import OhlcvWriter, load_bars
from shared.broker_tokens import HaltSwitch
from shared.contracts import streams
from shared.contracts.messages import FIELD, Candle, encode
from shared.domain.candles import Bar, CandleAggregator
from shared.domain.session import SessionRules

log = logging.getLogger("ratchet.marketdata.kite")

STATUS_KEY = "md.kite"  # Redis hash: the feed's state, for operators and tests
EQUITY_SEGMENTS = frozenset({1, 4})  # Kite segment codes NSE=1, BSE=4: prices in paise
_HEADER = struct.Struct(">H")
_LTP = struct.Struct(">II")
_VOLUME = struct.Struct(">I")
FLOWING_S = 3.0  # the clock moves bars on only while ticks arrived this recently


@dataclass
class ParseStats:
    packets: int = 0
    skipped: int = 0
    malformed: int = 0


def parse_frame(buf: bytes, clock_ms: int, stats: ParseStats, out: list[RawTick]) -> int:
    """Append the frame's equity ticks to ``out``; return the newest exchange time seen (ms)."""
    newest = 0
    size = len(buf)
    if size < 2:
        return 0
    (count,) = _HEADER.unpack_from(buf, 0)
    pos = 2
    for _ in range(count):
        if pos + 2 > size:
            stats.malformed += 1
            return newest
        (length,) = _HEADER.unpack_from(buf, pos)
        start = pos + 2
        pos = start + length
        if pos > size or length < 8:
            stats.malformed += 1
            return newest
        token, price = _LTP.unpack_from(buf, start)
        stats.packets += 1
        if token & 0xFF not in EQUITY_SEGMENTS or price == 0:
            stats.skipped += 1
            continue
        if length == 184:
            (volume,) = _VOLUME.unpack_from(buf, start + 16)
            (exch_s,) = _VOLUME.unpack_from(buf, start + 60)
            ts = exch_s * 1000 if exch_s else clock_ms
            if ts > newest:
                newest = ts
            out.append((token, ts, price, volume))
        elif length == 44:
            (volume,) = _VOLUME.unpack_from(buf, start + 16)
            out.append((token, clock_ms, price, volume))
        elif length == 8:
            out.append((token, clock_ms, price, None))
        else:
            stats.skipped += 1  # index packets (28/32) and anything unknown
    return newest


class TickerLink:
    """The KiteTicker connection; callbacks run on the reactor thread and only enqueue."""

    def __init__(self, api_key: str, ws_root: str, tokens: list[int], inbox: queue.Queue[Any],
                 max_delay_s: int = 5) -> None:
        self.api_key = api_key
        self.ws_root = ws_root
        self.tokens = tokens
        self.inbox = inbox
        self.max_delay_s = max_delay_s
        self.connects = 0
        self.ticker: Any = None
        self._lock = threading.Lock()

    def _on_connect(self, ws: Any, _response: Any) -> None:
        if ws is not self.ticker:
            return  # a replaced connection
        self.connects += 1
        if not ws.subscribed_tokens:  # first connect; the SDK resubscribes on reconnects
            ws.subscribe(self.tokens)
            ws.set_mode(ws.MODE_FULL, self.tokens)
        self.inbox.put(("connected", self.connects))

    def _on_message(self, ws: Any, payload: bytes, binary: bool) -> None:
        if binary and len(payload) > 4 and ws is self.ticker:
            self.inbox.put(payload)

    def _on_down(self, ws: Any, code: Any, _reason: Any) -> None:
        if ws is self.ticker:
            self.inbox.put(("closed", code))

    def connect(self, access_token: str) -> None:
        from kiteconnect import KiteTicker
        from twisted.internet import reactor

        ticker = KiteTicker(self.api_key, access_token, root=self.ws_root,
                            reconnect_max_delay=self.max_delay_s, reconnect_max_tries=300)
        ticker.on_connect = self._on_connect
        ticker.on_message = self._on_message
        ticker.on_close = self._on_down
        ticker.on_error = self._on_down
        ticker.on_noreconnect = lambda _ws: log.error("ticker gave up reconnecting")
        with self._lock:
            old, self.ticker = self.ticker, ticker
        if old is not None:
            reactor.callFromThread(old.close)
        if reactor.running:
            reactor.callFromThread(ticker.connect, True)
        else:
            ticker.connect(threaded=True)

    def drop(self) -> None:
        """Cut the socket without a close handshake, so the SDK reconnects (a silent socket)."""
        from twisted.internet import reactor

        ticker = self.ticker
        ws = getattr(ticker, "ws", None) if ticker is not None else None
        if ws is not None and reactor.running:
            reactor.callFromThread(ws.dropConnection, True)

    def close(self) -> None:
        from twisted.internet import reactor

        ticker, self.ticker = self.ticker, None
        if ticker is not None and reactor.running:
            reactor.callFromThread(ticker.close)


@dataclass
class Pending:
    """A token whose ticks are held until its missed bars are in."""

    job: FillJob | None
    held: list[RawTick] = field(default_factory=list)
    warm: list[Bar] | None = None  # start-up only: stored bars to warm the EMAs with


@dataclass
class FeedStats:
    frames: int = 0
    ticks: int = 0
    connects: int = 0
    disconnects: int = 0
    gaps: int = 0
    backfilled_bars: int = 0
    stale_episodes: int = 0


class KiteFeed:
    def __init__(
        self,
        api_key: str,
        ws_root: str,
        instruments: list[KiteInstrument],
        ingestor: Ingestor,
        client: redis.Redis,
        ohlcv: OhlcvWriter,
        backfiller: Backfiller,
        stale: HaltSwitch,
        *,
        stale_after_s: float = 30.0,
        history_bars: int = 260,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_key = api_key
        self.ws_root = ws_root
        self.instruments = {i.token: i for i in instruments}
        self.ingestor = ingestor
        self.rules: SessionRules = ingestor.rules
        self.client = client
        self.ohlcv = ohlcv
        self.backfiller = backfiller
        self.stale_switch = stale
        self.stale_after_s = stale_after_s
        self.history_bars = history_bars
        self.wall = wall
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.link: TickerLink | None = None
        self.stats = FeedStats()
        self.parse_stats = ParseStats()
        self.clock_ms = 0  # the newest exchange time seen
        self.clock_passed = 0  # the newest clock given to the ingestor
        self.last_tick_wall = wall()
        self.connected = False
        self.stale = False
        self.gap_from: int | None = None  # feed clock when ticks stopped; None: no gap open
        self.pending: dict[int, Pending] = {}
        self._states: dict[int, InstrumentFeedState] = {}
        self._stored: dict[int, list[Bar]] = {}
        self._last_drop = 0.0

    # --- start -------------------------------------------------------------------------------

    def prepare(self, sessions: Any) -> None:
        """Load each token's stored bars; every token waits for its warm-up fill (needs the clock,
        which the first frame brings)."""
        tf = self.rules.timeframe_minutes
        self.ingestor.hold_beat()  # until every token's warm-up is stored
        for token, inst in self.instruments.items():
            stored = load_bars(sessions, inst.exchange, inst.symbol, tf, self.history_bars,
                               self.rules.timeframe_ms)
            self.pending[token] = Pending(job=None, warm=stored)

    def connect(self, access_token: str) -> None:
        if self.link is None:
            self.link = TickerLink(self.api_key, self.ws_root, list(self.instruments), self.inbox)
        self.backfiller.set_access_token(access_token)
        self.link.connect(access_token)

    # --- the worker ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        last_status = 0.0
        while not stop.is_set():
            try:
                item = self.inbox.get(timeout=0.2)
            except queue.Empty:
                item = None
            frames: list[bytes] = []
            while item is not None:
                if isinstance(item, bytes):
                    frames.append(item)
                else:
                    self._event(item)
                if len(frames) >= 64:
                    break
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    item = None
            if frames:
                self._frames(frames)
            self._apply_fills()
            self._tick_clock()
            self._watchdog()
            now = self.wall()
            if now - last_status >= 1.0:
                last_status = now
                self._status()

    def _event(self, item: tuple[str, int]) -> None:
        kind = item[0]
        if kind == "connected":
            self.connected = True
            self.stats.connects += 1
            log.info("ticker connected", extra={"connects": self.stats.connects,
                                                "tokens": len(self.instruments)})
        elif kind == "closed" and self.connected:
            self.connected = False
            self.stats.disconnects += 1
            self._open_gap()
            log.warning("ticker disconnected; reconnecting", extra={"code": item[1]})

    def _open_gap(self) -> None:
        if self.gap_from is None and self.clock_ms:
            self.gap_from = self.clock_ms

    def _frames(self, frames: list[bytes]) -> None:
        ticks: list[RawTick] = []
        newest = 0
        for buf in frames:
            newest = max(newest, parse_frame(buf, self.clock_ms, self.parse_stats, ticks))
        if not ticks:
            return
        self.stats.frames += len(frames)
        self.stats.ticks += len(ticks)
        self.last_tick_wall = self.wall()
        first_clock = not self.clock_ms
        if newest > self.clock_ms:
            self.clock_ms = newest
        if self.stale:
            self.stale = False
            if self.stale_switch.off():
                log.info("ticks resumed: stale-feed halt cleared")
        if first_clock:
            self._start_fills()
        elif self.gap_from is not None:
            self._close_gap()
        if self.pending:
            ready: list[RawTick] = []
            for tick in ticks:
                waiting = self.pending.get(tick[0])
                if waiting is None:
                    ready.append(tick)
                else:
                    waiting.held.append(tick)
            ticks = ready
        if ticks:
            self.ingestor.on_frame(ticks, self.clock_ms)
            self.clock_passed = max(self.clock_passed, self.clock_ms)

    # --- gaps and fills ------------------------------------------------------------------------

    def _cutoff(self) -> int:
        """Bars starting before this are complete at the exchange: they come from history."""
        start = self.rules.bar_start(self.clock_ms)
        return start if start is not None else self.clock_ms

    def _start_fills(self) -> None:
        cutoff = self._cutoff()
        lookback_ms = (self.history_bars // 20 + 3) * 7 * 86_400_000 // 5
        for token, waiting in self.pending.items():
            stored = waiting.warm or []
            if stored:  # carry on from the last stored bar: those bars are news to the strategy
                job = FillJob(token, stored[-1].end_ms, cutoff, publish=True)
            else:  # nothing stored: history to warm the indicators, stored only
                job = FillJob(token, cutoff - lookback_ms, cutoff, publish=False)
            waiting.job = job
            self.backfiller.jobs.put(job)
        log.info("warm-up fills queued", extra={"tokens": len(self.pending), "cutoff_ms": cutoff})

    def _close_gap(self) -> None:
        """Ticks are back. If the gap crossed into a new bar, refill every token from its
        unfinished bar on; within one bar nothing is missing at the bar level."""
        gap_from, self.gap_from = self.gap_from, None
        assert gap_from is not None
        cutoff = self._cutoff()
        if self.rules.bar_start(gap_from) == self.rules.bar_start(self.clock_ms):
            return
        self.stats.gaps += 1
        settled = self._settled()
        states = self._state_map()
        for token, state in states.items():
            if token in self.pending:
                continue
            cur = state.aggregator.current
            from_ms = cur.start_ms if cur is not None else settled
            if from_ms >= cutoff:
                continue
            # the unfinished bar is dropped: history has it whole
            state.aggregator = CandleAggregator(self.rules, self.ingestor.grace_ms)
            job = FillJob(token, from_ms, cutoff, publish=True)
            self.pending[token] = Pending(job=job)
            self.backfiller.jobs.put(job)
        log.warning("feed gap crossed a bar: backfilling", extra={
            "from_ms": gap_from, "to_ms": self.clock_ms, "tokens": len(self.pending)})

    def _settled(self) -> int:
        """Start of the first bar the clock has not closed yet (all earlier ones are closed)."""
        at = self.clock_passed - self.ingestor.grace_ms
        start = self.rules.bar_start(at)
        return start if start is not None else self.rules.next_session_open_ms(at)

    def _state_map(self) -> dict[int, InstrumentFeedState]:
        if len(self._states) != len(self.ingestor.instruments):
            self._states = {s.token: s for s in self.ingestor.instruments}
        return self._states

    def _apply_fills(self) -> None:
        while True:
            try:
                result = self.backfiller.results.get_nowait()
            except queue.Empty:
                return
            self._apply(result)

    def _apply(self, result: FillResult) -> None:
        job = result.job
        waiting = self.pending.get(job.token)
        if waiting is None or waiting.job is not job:
            return
        inst = self.instruments[job.token]
        states = self._state_map()
        if job.token not in states:
            self.ingestor.register(job.token, inst.symbol, inst.exchange, waiting.warm or [])
            if waiting.warm:  # the fill carries on after it: it goes first
                self.ingestor.republish(job.token, waiting.warm[-1])
            states = self._state_map()
        state = states[job.token]
        if result.bars:
            self._publish(state, result.bars, job.publish)
            self.stats.backfilled_bars += len(result.bars) if job.publish else 0
        del self.pending[job.token]
        held = [t for t in waiting.held if t[1] >= job.cutoff_ms]
        if result.partial is not None and state.aggregator.current is None:
            self._seed(state, result.partial, held)
        if held:
            self.ingestor.on_frame(held, self.clock_ms)
        if not self.pending:
            log.info("all tokens filled", extra={"backfilled_bars": self.stats.backfilled_bars,
                                                 "requests": self.backfiller.requests})
            if not self.ingestor.beating:
                self.ingestor.start_beating(self.clock_ms)

    def _seed(self, state: InstrumentFeedState, partial: Bar, held: list[RawTick]) -> None:
        """Start the live bar at the cutoff from history's running candle (its open and extremes
        came before the ticks we hold), so the first bar after a gap or a start is whole. Only
        the aggregator sees these prices; nothing is published as a tick."""
        agg = CandleAggregator(self.rules, self.ingestor.grace_ms)
        first_volume = next((t[3] for t in held if t[3] is not None), None)
        base = None if first_volume is None else max(first_volume - partial.volume, 0)
        for price in (partial.open, partial.low, partial.high, partial.close):
            agg.on_tick(partial.start_ms, price, base)
        state.aggregator = agg

    def _publish(self, state: InstrumentFeedState, bars: list[Bar], to_stream: bool) -> None:
        candles = []
        for bar in bars:
            ema = state.emas.update(float(bar.close))
            candles.append(Candle(
                token=state.token, symbol=state.symbol, exchange=state.exchange,
                timeframe_minutes=self.rules.timeframe_minutes, start_ms=bar.start_ms,
                end_ms=bar.end_ms, open=bar.open, high=bar.high, low=bar.low, close=bar.close,
                volume=bar.volume, ema=tuple(ema)))  # type: ignore[arg-type]
        self.ohlcv.write(candles)  # durable before anyone is told
        if not to_stream:
            return
        pipe = self.client.pipeline(transaction=False)
        for candle in candles:
            pipe.xadd(streams.CANDLES,
                      {FIELD: encode(candle, msg_id=f"c:{candle.exchange}:{candle.symbol}:"
                                     f"{candle.start_ms}", ts_ms=candle.end_ms,
                                     source=self.ingestor.source)},
                      maxlen=100_000, approximate=True)
        pipe.execute()

    # --- the clock and the watchdog ------------------------------------------------------------

    def _estimate(self) -> int:
        return self.clock_ms + int((self.wall() - self.last_tick_wall) * 1000)

    def _tick_clock(self) -> None:
        """While ticks flow, the clock (estimated from the last exchange time) closes bars of quiet
        tokens; during a gap it stands still, so no bar closes half-seen."""
        if not self.clock_ms or not self.connected or self.gap_from is not None or self.stale:
            return
        if self.wall() - self.last_tick_wall > FLOWING_S:
            return
        estimate = self._estimate()
        if estimate > self.clock_passed:
            self.ingestor.on_clock(estimate)
            self.clock_passed = estimate

    def market_open(self) -> bool:
        if not self.clock_ms:
            return False
        return self.rules.in_session(self._estimate())

    def _watchdog(self) -> None:
        silent = self.wall() - self.last_tick_wall
        if self.stale or silent < self.stale_after_s or not self.market_open():
            return
        self.stale = True
        self.stats.stale_episodes += 1
        self._open_gap()
        reason = (f"no tick for {silent:.0f}s during market hours "
                  f"({'socket open' if self.connected else 'socket down'}): new entries halted")
        if self.stale_switch.on(reason):
            log.error("stale feed: " + reason)
        if self.connected and self.link is not None and self.wall() - self._last_drop > 30:
            self._last_drop = self.wall()
            self.link.drop()  # a silent socket: reconnect (the SDK never pings)

    def _status(self) -> None:
        try:
            self.client.hset(STATUS_KEY, mapping={
                "connected": int(self.connected), "stale": int(self.stale),
                "connects": self.stats.connects, "disconnects": self.stats.disconnects,
                "gaps": self.stats.gaps, "backfilled_bars": self.stats.backfilled_bars,
                "pending": len(self.pending), "clock_ms": self.clock_ms,
                "inbox": self.inbox.qsize(),  # frames not yet ingested: the feed's lag
                "ticks": self.stats.ticks, "malformed": self.parse_stats.malformed})
        except redis.RedisError as exc:
            log.warning("feed status not written", extra={"error": str(exc)})
