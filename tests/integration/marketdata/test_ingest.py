"""Marketdata's entry point on real Redis and Postgres: LTP store, tick stream, closed candles
with EMAs into the stream and ohlcv; malformed, unknown and late ticks counted, never fatal."""

from __future__ import annotations

import struct
from datetime import datetime

import orjson
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.marketdata.feeds.kite import KiteFeed, ParseStats, Pending, parse_frame
from services.marketdata.feeds.kite_backfill import Backfiller, FillJob, FillResult, KiteInstrument
from services.marketdata.ingest import MAX_AHEAD_MS, Ingestor, RawTick
from services.marketdata.main import start_sim
from services.marketdata.ohlcv import OhlcvWriter, load_bars
from shared.config import Settings
from shared.contracts import streams
from shared.contracts.messages import FIELD, BarEnd, Candle, Ticks, decode
from shared.domain.candles import Bar
from shared.domain.session import SessionRules, ms_from_ist
from shared.store.models import Ohlcv

OPEN = ms_from_ist(datetime(2026, 11, 24, 9, 15))


def ingestor(client: redis.Redis, sessions: sessionmaker[Session]) -> Ingestor:
    ing = Ingestor(client, OhlcvWriter(sessions), SessionRules(), periods=(2, 3, 4, 5))
    history = [Bar(OPEN - (6 - i) * 900_000, OPEN - (5 - i) * 900_000, 100, 100, 100, 100, 1)
               for i in range(6)]
    ing.register(11, "INFY", "NSE", history)
    return ing


def test_ticks_reach_ltp_stream_candles_and_ohlcv(redis_client: redis.Redis, sessions) -> None:
    ing = ingestor(redis_client, sessions)
    ing.on_frame([(11, OPEN + 1_000, 150_000, 10), (11, OPEN + 60_000, 151_000, 25)], OPEN + 60_000)
    ing.on_frame([(11, OPEN + 900_000, 149_000, 40)], OPEN + 900_000)  # closes the 09:15 bar
    ltp = orjson.loads(redis_client.hget(streams.LTP_HASH, "NSE:INFY"))
    assert ltp == {"token": 11, "price": 149_000, "ts_ms": OPEN + 900_000, "volume": 40}
    frames = [decode(f[FIELD]).payload for _, f in redis_client.xrange(streams.ticks_stream(0))]
    assert all(isinstance(f, Ticks) for f in frames) and sum(len(f.ticks) for f in frames) == 3
    candles = [decode(f[FIELD]).payload for _, f in redis_client.xrange(streams.CANDLES)]
    bars = [c for c in candles if isinstance(c, Candle)]
    assert len(bars) == 1
    bar = bars[0]
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
        150_000, 151_000, 150_000, 151_000, 25)
    assert bar.start_ms == OPEN and bar.end_ms == OPEN + 900_000
    assert all(e is not None for e in bar.ema)  # warmed from history: defined at once
    assert any(isinstance(c, BarEnd) for c in candles)
    with sessions() as session:
        row = session.scalars(select(Ohlcv)).one()
    assert float(row.close) == 1510.0 and row.ema_9 is not None
    stored = load_bars(sessions, "NSE", "INFY", 15, 10, 900_000)
    assert [b.close for b in stored] == [151_000]


def test_bad_unknown_and_late_ticks_are_counted_not_fatal(
    redis_client: redis.Redis, sessions
) -> None:
    ing = ingestor(redis_client, sessions)
    ing.on_frame([(11, OPEN + 5_000, 150_000, None)], OPEN + 5_000)
    accepted = ing.on_frame(
        [(11, OPEN + 6_000, -5, None), ("x",), (99, OPEN + 6_000, 100, None),
         (11, OPEN + 1_000, 150_000, None), (11, OPEN + 7_000, 150_500, None)],
        OPEN + 7_000,
    )
    assert accepted == 1
    assert (ing.stats.rejected, ing.stats.unknown, ing.stats.late) == (2, 1, 1)
    out_of_session = ms_from_ist(datetime(2026, 11, 24, 16, 0))
    assert ing.on_frame([(11, out_of_session, 150_000, None)], out_of_session) == 0


def test_a_tick_stamped_in_the_future_is_refused_and_does_not_freeze_its_token(
    redis_client: redis.Redis, sessions
) -> None:
    ing = ingestor(redis_client, sessions)
    assert ing.on_frame([(11, OPEN + 1_000, 150_000, None)], OPEN + 1_000) == 1
    tomorrow = OPEN + 86_400_000  # one corrupt exchange timestamp
    assert ing.on_frame([(11, tomorrow, 999_000, None)], OPEN + 2_000) == 0
    assert ing.stats.rejected == 1
    for i in range(3, 20):
        assert ing.on_frame([(11, OPEN + i * 1_000, 150_000 + i * 5, None)], OPEN + i * 1_000) == 1
    assert ing.stats.late == 0
    ltp = orjson.loads(redis_client.hget(streams.LTP_HASH, "NSE:INFY"))  # type: ignore[arg-type]
    assert (ltp["ts_ms"], ltp["price"]) == (OPEN + 19_000, 150_095)
    published = [decode(f[FIELD]).payload for _, f in redis_client.xrange(streams.CANDLES)]
    assert not any(isinstance(p, Candle) for p in published)  # the bar was not closed early
    within = OPEN + 19_000 + MAX_AHEAD_MS  # a feed clock a little behind the exchange is fine
    assert ing.on_frame([(11, within, 150_100, None)], OPEN + 19_000) == 1


def test_kite_bse_ticks_are_read_and_currency_ticks_skipped() -> None:
    def packet(segment: int, price: int) -> bytes:  # an LTP-mode packet: token, price
        return struct.pack(">HII", 8, (500 << 8) | segment, price)

    frame = struct.pack(">H", 3) + packet(1, 10_000) + packet(4, 20_000) + packet(3, 30_000)
    out: list[RawTick] = []
    stats = ParseStats()
    parse_frame(frame, 1_000, stats, out)
    assert out == [((500 << 8) | 1, 1_000, 10_000, None), ((500 << 8) | 4, 1_000, 20_000, None)]
    assert (stats.packets, stats.skipped) == (3, 1)  # CDS (3) prices are not paise: skipped


def test_a_stored_bar_a_crash_kept_from_the_stream_is_published_on_restart(
    redis_client: redis.Redis, sessions
) -> None:
    settings = Settings(sim_symbols=1, _env_file=None)  # type: ignore[call-arg]
    rules = SessionRules()

    def start() -> Ingestor:
        ing = Ingestor(redis_client, OhlcvWriter(sessions), rules,
                       periods=settings.strategy.ema_periods)
        start_sim(settings, None, redis_client, sessions, ing, rules)  # type: ignore[arg-type]
        return ing

    ing = start()  # first run: history generated and stored, nothing published
    assert redis_client.xlen(streams.CANDLES) == 0
    inst = ing.instruments[0]
    last = load_bars(sessions, inst.exchange, inst.symbol, rules.timeframe_minutes, 1,
                     rules.timeframe_ms)[-1]
    bar = Bar(last.end_ms, last.end_ms + rules.timeframe_ms, 100, 110, 90, 105, 7)
    ing._publish({}, {}, [(inst, bar)], bar.end_ms, False)  # the live run closes a bar...
    redis_client.delete(streams.CANDLES)  # ...and dies before its pipeline ran: stored only
    start()
    candles = [decode(f[FIELD]).payload for _, f in redis_client.xrange(streams.CANDLES)]
    assert [(c.symbol, c.start_ms, c.close) for c in candles] == [(inst.symbol, bar.start_ms, 105)]
    assert candles[0].ema[0] == pytest.approx(inst.emas.values[0])  # not counted twice


def test_the_kite_feed_republishes_the_last_stored_bar_before_its_fill(
    redis_client: redis.Redis, sessions
) -> None:
    rules = SessionRules()
    token = (1234 << 8) | 1
    ing = Ingestor(redis_client, OhlcvWriter(sessions), rules)
    feed = KiteFeed("k", "ws://x", [KiteInstrument(token, "NSE", "AAA", "", 5, 1)], ing,
                    redis_client, OhlcvWriter(sessions), Backfiller("k", "http://x", rules),
                    None)  # type: ignore[arg-type]
    stored = [Bar(OPEN + i * 900_000, OPEN + (i + 1) * 900_000, 100, 100, 100, 100, 1)
              for i in range(3)]
    job = FillJob(token, stored[-1].end_ms, stored[-1].end_ms + 900_000, publish=True)
    feed.pending[token] = Pending(job=job, warm=stored)
    missed = Bar(job.from_ms, job.cutoff_ms, 101, 101, 101, 101, 1)
    feed._apply(FillResult(job, [missed]))
    candles = [decode(f[FIELD]).payload for _, f in redis_client.xrange(streams.CANDLES)]
    assert [c.start_ms for c in candles] == [stored[-1].start_ms, missed.start_ms]
