"""strategy_us_per_tick: the strategy service's handler — decode, the pure engine, intents (with
their Postgres commit) — per tick read from a real Redis stream, 1,000 symbols each holding an
open ladder of three legs. Prices take a seeded random walk, so some ticks step a stop up and
emit a ModifyGtt intent, as in live trading."""

from __future__ import annotations

import random
import sys
import time

import redis
from sqlalchemy import func, select

from bench.servers import embedded_servers
from services.strategy.service import StrategyService
from shared.bus.consumer import StreamConsumer
from shared.config import StrategySettings
from shared.contracts import streams
from shared.contracts.messages import FIELD, encode_ticks
from shared.domain.engine import MomentumEngine
from shared.domain.ladder import Ladder, Leg, LegState, StrategyParams
from shared.domain.money import price_below
from shared.domain.session import SessionRules, ms_from_ist
from shared.store.db import make_engine, make_sessions
from shared.store.models import OutboxMessage

SYMBOLS = 1000
TICKS_PER_ENTRY = 100
ENTRIES = 1000  # 100,000 ticks


def _engine(rules: SessionRules, prices: dict[str, int], start: int) -> MomentumEngine:
    params = StrategyParams()
    engine = MomentumEngine(params, rules)
    for symbol, price in prices.items():
        engine.add_instrument(symbol, "NSE", 5)
        ladder = Ladder(f"NSE:{symbol}:202611240915", symbol, "NSE", start, "202611240915")
        for n, pct in ((1, params.p1_stop_s), (2, params.p2_stop_s), (3, params.p3_stop_s)):
            stop = price_below(price, pct, 5)
            ladder.legs[n] = Leg(n, 10, price, pct, LegState.OPEN, price, stop, stop,
                                 None, price, start, start)
        ladder.p2_done = ladder.p3_done = True
        engine.restore_ladder(ladder)
    return engine


def run() -> list[tuple[str, float, str]]:
    from datetime import datetime

    with embedded_servers() as (redis_url, database_url):
        client = redis.Redis.from_url(redis_url)
        db = make_engine(database_url)
        rules = SessionRules()
        start = ms_from_ist(datetime(2026, 11, 24, 9, 30))
        rng = random.Random(3)
        prices = {f"S{i:04d}": rng.randrange(10_000, 200_000, 5) for i in range(SYMBOLS)}
        engine = _engine(rules, prices, start)
        service = StrategyService(engine, make_sessions(db), StrategySettings(), lambda _s: None)
        service.engine_symbols.update(prices)
        symbols = list(prices)
        pipe = client.pipeline(transaction=False)
        for e in range(ENTRIES):
            ticks = []
            for k in range(TICKS_PER_ENTRY):
                symbol = symbols[(e * TICKS_PER_ENTRY + k) % SYMBOLS]
                prices[symbol] = max(5, prices[symbol] + 5 * rng.choice((-2, -1, 0, 1, 1, 2)))
                ticks.append({"token": 1, "symbol": symbol, "exchange": "NSE",
                              "ts_ms": start + e * 1000, "price": prices[symbol], "volume": None})
            frame = encode_ticks(ticks, msg_id=f"b{e}", ts_ms=start + e * 1000, source="bench")
            pipe.xadd(streams.ticks_stream(0), {FIELD: frame})
        pipe.execute()
        consumer = StreamConsumer(client, [streams.ticks_stream(0)], streams.GROUP_STRATEGY,
                                  "bench", service.handle, batch=100, block_ms=1,
                                  before_ack=service.flush)
        consumer.setup()
        began = time.perf_counter()
        while consumer.stats.handled < ENTRIES:
            consumer.poll_once()
        elapsed = time.perf_counter() - began
        with service.sessions() as session:  # nothing relays the outbox here: count it instead
            intents = session.scalar(select(func.count()).select_from(OutboxMessage))
        db.dispose()
        client.close()
    total = ENTRIES * TICKS_PER_ENTRY
    print(f"[bench] strategy: {total} ticks, {intents} intents emitted", file=sys.stderr,
          flush=True)
    return [("strategy_us_per_tick", elapsed / total * 1e6, "us")]
