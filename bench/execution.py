"""intent_to_broker_p50_ms / _p99_ms: a PlaceOrder intent on the `strategy.intents` stream to the
paper broker's place call, through real Redis and Postgres (intent committed, guards, SUBMITTED
committed, then the call), at 500 intents/s. The order budget (10/s at Kite) is switched off for
this measurement, or it alone would set the latency. Also prints the throughput reached: below
500/s, intents queue and the latency measures the queue."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from datetime import datetime

import redis

from bench.servers import embedded_servers
from services.execution.brokers.base import BrokerOrder, OrderRequest
from services.execution.brokers.paper import PaperBroker
from services.execution.budget import OrderBudget
from services.execution.faults import FaultPoints
from services.execution.processor import Execution
from shared.bus.consumer import StreamConsumer
from shared.bus.publisher import Publisher
from shared.config import Settings
from shared.contracts import streams
from shared.contracts.messages import PlaceOrder
from shared.domain.session import SessionRules, ms_from_ist
from shared.store.db import make_engine, make_sessions

RATE = 500
INTENTS = 2500
WORKERS = 1  # the service runs one intents consumer per process (replicas scale out)


class TimedPaperBroker(PaperBroker):
    """The paper broker, noting when each order reached it."""

    def __init__(self, sessions) -> None:  # noqa: ANN001
        super().__init__(sessions)
        self.reached: dict[str, float] = {}

    def place_order(self, request: OrderRequest) -> BrokerOrder:
        self.reached[request.tag] = time.perf_counter()
        return super().place_order(request)


def run() -> list[tuple[str, float, str]]:
    print("[bench] execution: order budget switched off for this measurement", file=sys.stderr, flush=True)
    with embedded_servers() as (redis_url, database_url):
        client = redis.Redis.from_url(redis_url)
        engine = make_engine(database_url, pool_size=5)
        sessions = make_sessions(engine)
        settings = Settings(redis_url=redis_url, database_url=database_url,
                            risk={"max_open_legs": 100_000, "max_capital": "1000000000",
                                  "max_active_gtts": 100_000})
        broker = TimedPaperBroker(sessions)
        budget = OrderBudget(client, 10, 400, 5000, enabled=False)
        execution = Execution(sessions, broker, budget, settings, SessionRules(), FaultPoints(frozenset(), 0))
        stop = threading.Event()
        workers = []
        for n in range(WORKERS):
            consumer = StreamConsumer(client, [streams.INTENTS], streams.GROUP_EXECUTION, f"bench-{n}",
                                      execution.handle, batch=10, block_ms=2)
            consumer.setup()
            workers.append(threading.Thread(target=consumer.run, args=(stop,), daemon=True))
        for worker in workers:
            worker.start()
        publisher = Publisher(client, "bench")
        ts = ms_from_ist(datetime(2026, 11, 24, 10, 0))
        sent: dict[str, float] = {}
        from services.execution.ledger import order_tag

        began = time.perf_counter()
        for n in range(INTENTS):
            due = began + n / RATE
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.001))
            ladder = f"NSE:B{n:05d}:202611241000"
            intent = PlaceOrder(intent_id=f"bench:{ladder}:1:buy", strategy="bench", exchange="NSE",
                                symbol=f"B{n:05d}", ladder_id=ladder, leg=1, ts_ms=ts, qty=1, ref_price=10_000)
            sent[order_tag(intent.intent_id)] = time.perf_counter()
            publisher.publish(streams.INTENTS, intent, msg_id=intent.intent_id, ts_ms=ts)
        deadline = time.monotonic() + 60
        while len(broker.reached) < INTENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for worker in workers:
            worker.join(5)
        engine.dispose()
        client.close()
    latencies = sorted((broker.reached[tag] - t0) * 1000 for tag, t0 in sent.items() if tag in broker.reached)
    if len(latencies) < INTENTS:
        raise RuntimeError(f"only {len(latencies)} of {INTENTS} intents reached the broker")
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    span = max(broker.reached.values()) - min(sent.values())
    return [("intent_to_broker_p50_ms", statistics.median(latencies), "ms"),
            ("intent_to_broker_p99_ms", p99, "ms"),
            ("intent_to_broker_throughput_per_s", len(latencies) / span, "intents/s")]
