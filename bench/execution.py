"""intent_to_broker_p50_ms / _p99_ms: a PlaceOrder intent on the `strategy.intents` stream to the
paper broker's place call, through real Redis and Postgres, at 500 intents/s.

The intents come from a process of their own (as the strategy's would), at a steady 500/s. They
are read by the execution service's own intents consumer (`services.execution.main`: reads of up
to 50, handled together, the relay nudged after each read): intents recorded, guarded and
committed SUBMITTED, then the broker call, then its answer committed. Both processes stamp with
the system-wide monotonic clock. The order budget (10/s at Kite) is switched off for this
measurement, or it alone would set the latency. Also prints the throughput reached: below 500/s,
intents queue and the latency measures the queue."""

from __future__ import annotations

import multiprocessing
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
from services.execution.ledger import order_tag
from services.execution.main import intents_consumer
from services.execution.processor import Execution
from shared.bus.publisher import OutboxRelay, Publisher
from shared.config import Settings
from shared.contracts import streams
from shared.contracts.messages import PlaceOrder
from shared.domain.session import SessionRules, ms_from_ist
from shared.store.db import make_engine, make_sessions

RATE = 500
INTENTS = 5000
WARMUP = 250  # the first intents warm caches and connections; not measured


class TimedPaperBroker(PaperBroker):
    """The paper broker, noting when each order reached it."""

    def __init__(self, sessions) -> None:  # noqa: ANN001
        super().__init__(sessions)
        self.reached: dict[str, float] = {}

    def place_order(self, request: OrderRequest) -> BrokerOrder:
        self.reached[request.tag] = time.monotonic()
        return super().place_order(request)


def _intent(n: int, ts_ms: int) -> PlaceOrder:
    ladder = f"NSE:B{n:05d}:202611241000"
    return PlaceOrder(intent_id=f"bench:{ladder}:1:buy", strategy="bench", exchange="NSE",
                      symbol=f"B{n:05d}", ladder_id=ladder, leg=1, ts_ms=ts_ms, qty=1, ref_price=10_000)


def publish(redis_url: str, start_at: float, sent: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The strategy's side: INTENTS intents at RATE per second from ``start_at`` (monotonic)."""
    client = redis.Redis.from_url(redis_url)
    publisher = Publisher(client, "bench")
    ts_ms = ms_from_ist(datetime(2026, 11, 24, 10, 0))
    intents = [_intent(n, ts_ms) for n in range(INTENTS)]
    stamps: dict[str, float] = {}
    for n, intent in enumerate(intents):
        due = start_at + n / RATE
        while (now := time.monotonic()) < due:
            time.sleep(min(due - now, 0.001))
        stamps[order_tag(intent.intent_id)] = time.monotonic()
        publisher.publish(streams.INTENTS, intent, msg_id=intent.intent_id, ts_ms=ts_ms)
    sent.put(stamps)
    client.close()


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
        relay = OutboxRelay(sessions, Publisher(client, "execution"), "execution")
        consumer = intents_consumer(client, execution, relay, settings)
        consumer.setup()
        stop = threading.Event()
        workers = [threading.Thread(target=consumer.run, args=(stop,), daemon=True),
                   threading.Thread(target=relay.run, args=(stop,), daemon=True)]
        for worker in workers:
            worker.start()
        context = multiprocessing.get_context("spawn")
        sent: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
        producer = context.Process(target=publish, args=(redis_url, time.monotonic() + 2.0, sent))
        producer.start()
        stamps: dict[str, float] = sent.get(timeout=INTENTS / RATE + 60)
        producer.join(10)
        deadline = time.monotonic() + 60
        while len(broker.reached) < INTENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for worker in workers:
            worker.join(5)
        engine.dispose()
        client.close()
    measured = [order_tag(_intent(n, 0).intent_id) for n in range(WARMUP, INTENTS)]
    latencies = sorted((broker.reached[tag] - stamps[tag]) * 1000 for tag in measured if tag in broker.reached)
    if len(latencies) < len(measured):
        raise RuntimeError(f"only {len(latencies)} of {len(measured)} intents reached the broker")
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    span = max(broker.reached.values()) - min(stamps.values())
    return [("intent_to_broker_p50_ms", statistics.median(latencies), "ms"),
            ("intent_to_broker_p99_ms", p99, "ms"),
            ("intent_to_broker_throughput_per_s", len(broker.reached) / span, "intents/s")]
