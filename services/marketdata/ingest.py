"""The marketdata service's entry point for feed frames: ticks in; the LTP store, the tick
streams, closed candles with their EMAs, and ``ohlcv`` out.

Work is batched per frame: one Redis pipeline per frame (ticks per shard, LTP fields, candles) and
one insert per batch of closed bars, so ingest costs a few microseconds a tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson
import redis
from redis.typing import EncodableT, FieldT

from services.marketdata.ohlcv import OhlcvWriter
from shared.contracts import streams
from shared.contracts.messages import FIELD, BarEnd, Candle, encode, encode_ticks
from shared.domain.candles import Bar, CandleAggregator
from shared.domain.indicators import EmaSet
from shared.domain.session import SessionRules

log = logging.getLogger("ratchet.marketdata")

MAX_AHEAD_MS = 60_000
"""A tick stamped further ahead of the feed's clock is corrupt: taken, it would close its bar
early and make every later real tick of its token look late."""

RawTick = tuple[int, int, int, int | None]
"""(instrument token, exchange time ms, price paise, cumulative day volume or None)"""


@dataclass
class InstrumentFeedState:
    token: int
    symbol: str
    exchange: str
    shard: int
    ltp_field: str
    aggregator: CandleAggregator
    emas: EmaSet


@dataclass
class IngestStats:
    frames: int = 0
    ticks: int = 0
    rejected: int = 0
    unknown: int = 0
    late: int = 0
    candles: int = 0
    last_frame_wall: float = 0.0  # wall time of the last frame (feed lag for metrics)


@dataclass
class Ingestor:
    client: redis.Redis
    ohlcv: OhlcvWriter | None
    rules: SessionRules
    grace_ms: int = 2000
    shards: int = 1
    periods: tuple[int, ...] = (9, 21, 50, 200)
    source: str = "marketdata"
    ticks_maxlen: int = 200_000
    stats: IngestStats = field(default_factory=IngestStats)
    # The heartbeat's first beat tells the strategy that every instrument's history is stored
    # (it warms its EMAs from it then): a feed that writes history while ticks already flow
    # holds the beat until it is done (``hold_beat`` ... ``start_beating``).
    beating: bool = True
    _by_token: dict[int, InstrumentFeedState] = field(default_factory=dict)
    _last_bar_end: int = 0
    _last_ts: dict[int, int] = field(default_factory=dict)

    def register(self, token: int, symbol: str, exchange: str, warm: Iterable[Bar] = ()) -> None:
        """Track an instrument; ``warm`` is its stored history, so EMA200 is ready at once."""
        emas = EmaSet(self.periods)
        emas.warm(bar.close for bar in warm)
        self._by_token[token] = InstrumentFeedState(
            token=token,
            symbol=symbol,
            exchange=exchange,
            shard=streams.tick_shard(token, self.shards),
            ltp_field=f"{exchange}:{symbol}",
            aggregator=CandleAggregator(self.rules, self.grace_ms),
            emas=emas,
        )

    @property
    def instruments(self) -> list[InstrumentFeedState]:
        return list(self._by_token.values())

    def on_frame(self, frame: Sequence[RawTick], clock_ms: int, *, bar_open: bool = False) -> int:
        """Ingest one feed frame; return the number of ticks accepted."""
        by_shard: dict[int, list[dict[str, object]]] = {}
        ltp: dict[str, bytes] = {}
        closed: list[tuple[InstrumentFeedState, Bar]] = []
        accepted = 0
        known = self._by_token
        for raw in frame:
            try:
                token, ts_ms, price, volume = raw
                state = known.get(token)
                if state is None:
                    self.stats.unknown += 1
                    continue
                if type(price) is not int or price <= 0 or type(ts_ms) is not int:
                    raise ValueError("price and time must be positive integers")
                if ts_ms > clock_ms + MAX_AHEAD_MS:
                    raise ValueError(f"stamped {ts_ms - clock_ms} ms ahead of the feed clock")
            except (TypeError, ValueError) as exc:
                self.stats.rejected += 1
                log.warning("malformed tick dropped",
                            extra={"tick": repr(raw)[:200], "error": str(exc)})
                continue
            agg = state.aggregator
            late_before = agg.dropped_late + agg.dropped_outside
            bar = agg.on_tick(ts_ms, price, volume)
            if bar is not None:
                closed.append((state, bar))
            if agg.dropped_late + agg.dropped_outside != late_before:
                self.stats.late += 1
                continue
            accepted += 1
            by_shard.setdefault(state.shard, []).append(
                {"token": token, "symbol": state.symbol, "exchange": state.exchange,
                 "ts_ms": ts_ms, "price": price, "volume": volume}
            )
            ltp[state.ltp_field] = orjson.dumps(
                {"token": token, "price": price, "ts_ms": ts_ms, "volume": volume}
            )
        self.stats.frames += 1
        self.stats.ticks += accepted
        self.stats.last_frame_wall = time.time()
        closed.extend(self._due(clock_ms))
        self._publish(by_shard, ltp, closed, clock_ms, bar_open)
        return accepted

    def hold_beat(self) -> None:
        """No beat until ``start_beating``; a beat left by an earlier run is removed, or it would
        tell a strategy starting now that this run's history is complete."""
        self.beating = False
        self.client.delete(streams.FEED_HEARTBEAT)

    def start_beating(self, clock_ms: int) -> None:
        """Every instrument's history is stored: beat now, and with every frame from here on."""
        self.beating = True
        self.client.hset(streams.FEED_HEARTBEAT, mapping={"clock_ms": clock_ms})

    def on_clock(self, clock_ms: int) -> None:
        """The feed's clock moved without ticks: close bars past their end plus the grace."""
        closed = self._due(clock_ms)
        if closed or self._bar_end_due(clock_ms):
            self._publish({}, {}, closed, clock_ms, False)

    def _due(self, clock_ms: int) -> list[tuple[InstrumentFeedState, Bar]]:
        out = []
        for state in self._by_token.values():
            bar = state.aggregator.on_clock(clock_ms)
            if bar is not None:
                out.append((state, bar))
        return out

    def _bar_end_due(self, clock_ms: int) -> int | None:
        start = self.rules.bar_start(clock_ms - self.grace_ms)
        if start is None or start <= self._last_bar_end:
            return None
        # the clock (less the grace) entered a new bar: every bar before it has ended
        self._last_bar_end = start
        return start

    def _publish(
        self,
        by_shard: dict[int, list[dict[str, object]]],
        ltp: dict[str, bytes],
        closed: list[tuple[InstrumentFeedState, Bar]],
        clock_ms: int,
        bar_open: bool,
    ) -> None:
        candles = [self._candle(state, bar, state.emas.update(float(bar.close)))
                   for state, bar in closed]
        if candles and self.ohlcv is not None:
            self.ohlcv.write(candles)  # durable before anyone is told the bar closed
        pipe = self.client.pipeline(transaction=False)
        for shard, ticks in by_shard.items():
            pipe.xadd(
                streams.ticks_stream(shard),
                {FIELD: encode_ticks(ticks, msg_id=f"f{clock_ms}:{shard}", ts_ms=clock_ms,
                                     source=self.source, bar_open=bar_open)},
                maxlen=self.ticks_maxlen,
                approximate=True,
            )
        if ltp:
            # redis-py's Mapping[FieldT, EncodableT] has an invariant key: no dict[str, bytes] fits
            pipe.hset(streams.LTP_HASH, mapping=ltp)  # type: ignore[arg-type]
        for candle in candles:
            pipe.xadd(streams.CANDLES, self._candle_entry(candle), maxlen=100_000,
                      approximate=True)
        bar_end = self._bar_end_due(clock_ms)
        if bar_end is not None:
            pipe.xadd(
                streams.CANDLES,
                {FIELD: encode(BarEnd(ts_ms=bar_end), msg_id=f"barend:{bar_end}", ts_ms=clock_ms,
                               source=self.source)},
                maxlen=100_000,
                approximate=True,
            )
        if self.beating:
            pipe.hset(streams.FEED_HEARTBEAT, mapping={"clock_ms": clock_ms})
        pipe.execute()
        self.stats.candles += len(candles)

    def republish(self, token: int, bar: Bar) -> None:
        """Publish the last bar a previous run stored again: a bar is stored before it is
        published, so a crash between the two would keep it from the strategy for good (the
        strategy ignores a bar it has seen). Call right after ``register`` warmed the EMAs with
        the stored bars ending in ``bar``, so the candle carries its own EMAs."""
        state = self._by_token[token]
        candle = self._candle(state, bar, state.emas.values)
        self.client.xadd(streams.CANDLES, self._candle_entry(candle), maxlen=100_000,
                         approximate=True)

    def _candle_entry(self, candle: Candle) -> dict[FieldT, EncodableT]:
        return {FIELD: encode(candle, msg_id=f"c:{candle.exchange}:{candle.symbol}:"
                              f"{candle.start_ms}", ts_ms=candle.end_ms, source=self.source)}

    def _candle(self, state: InstrumentFeedState, bar: Bar,
                ema: tuple[float | None, ...]) -> Candle:
        return Candle(
            token=state.token,
            symbol=state.symbol,
            exchange=state.exchange,
            timeframe_minutes=self.rules.timeframe_minutes,
            start_ms=bar.start_ms,
            end_ms=bar.end_ms,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            ema=tuple(ema),  # type: ignore[arg-type]
        )
