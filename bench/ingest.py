"""ingest_ticks_per_s: the marketdata service's own entry point (Ingestor.on_frame), from feed
frames to the LTP store, the tick stream and closed candles (with ohlcv) in a real Redis and
Postgres. 1,000 instruments, one tick each per frame, the clock one second a frame."""

from __future__ import annotations

import random
import time

import redis

from bench.servers import embedded_servers
from services.marketdata.ingest import Ingestor
from services.marketdata.ohlcv import OhlcvWriter
from shared.domain.session import SessionRules, ms_from_ist
from shared.store.db import make_engine, make_sessions

SYMBOLS = 1000
FRAMES = 300


def run() -> list[tuple[str, float, str]]:
    from datetime import datetime

    with embedded_servers() as (redis_url, database_url):
        client = redis.Redis.from_url(redis_url)
        engine = make_engine(database_url)
        rules = SessionRules()
        ingestor = Ingestor(client, OhlcvWriter(make_sessions(engine)), rules)
        tokens = list(range(100_000, 100_000 + SYMBOLS))
        for token in tokens:
            ingestor.register(token, f"SYM{token}", "NSE")
        rng = random.Random(1)
        prices = {t: rng.randrange(5_000, 250_000, 5) for t in tokens}
        start = ms_from_ist(datetime(2026, 11, 24, 9, 15))
        frames = []
        volume = 0
        for i in range(FRAMES):
            ts = start + i * 1000 * 6  # a frame every 6 s: 300 frames cross two bar closes
            volume += 10
            frame = []
            for t in tokens:
                prices[t] = max(5, prices[t] + rng.choice((-5, 0, 5)))
                frame.append((t, ts, prices[t], volume))
            frames.append((frame, ts))
        ingestor.on_frame(*frames[0])  # warm the connections
        began = time.perf_counter()
        for frame, ts in frames[1:]:
            ingestor.on_frame(frame, ts)
        elapsed = time.perf_counter() - began
        ticks = SYMBOLS * (FRAMES - 1)
        assert ingestor.stats.candles >= SYMBOLS, "the run must close candles, not only ticks"
        engine.dispose()
        client.close()
    return [("ingest_ticks_per_s", ticks / elapsed, "ticks/s")]
