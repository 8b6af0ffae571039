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
from collections.abc import Sequence
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import func, select

from bench.servers import embedded_servers
from services.execution.brokers.base import BrokerError, BrokerOrder, OrderRequest
from services.execution.brokers.paper import PaperBroker, placements_engine
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
from shared.store.models import PaperOrder

RATE = 500
SECONDS = 10  # of intents at the rate
WARMUP_S = 0.5  # the first intents warm caches and connections; not measured


class TimedPaperBroker(PaperBroker):
    """The paper broker, noting when each order reached it."""

    def __init__(self, sessions, placements) -> None:  # noqa: ANN001
        super().__init__(sessions, placements)
        self.reached: dict[str, float] = {}

    def place_orders(
        self, requests: Sequence[OrderRequest], calls: Executor
    ) -> list[BrokerOrder | BrokerError]:
        now = time.monotonic()
        self.reached.update((request.tag, now) for request in requests)
        return super().place_orders(requests, calls)


def _intent(n: int, ts_ms: int) -> PlaceOrder:
    ladder = f"NSE:B{n:05d}:202611241000"
    return PlaceOrder(intent_id=f"bench:{ladder}:1:buy", strategy="bench", exchange="NSE",
                      symbol=f"B{n:05d}", ladder_id=ladder, leg=1, ts_ms=ts_ms, qty=1,
                      ref_price=10_000)


def publish(redis_url: str, rate: int, sent: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The strategy's side: ``rate`` intents a second for SECONDS, on a schedule that starts
    once they are built and Redis is connected (a late start would offer a burst instead)."""
    client = redis.Redis.from_url(redis_url)
    client.ping()
    publisher = Publisher(client, "bench")
    ts_ms = ms_from_ist(datetime(2026, 11, 24, 10, 0))
    intents = [_intent(n, ts_ms) for n in range(rate * SECONDS)]
    stamps: dict[str, float] = {}
    start_at = time.monotonic() + 0.1
    for n, intent in enumerate(intents):
        due = start_at + n / rate
        while (now := time.monotonic()) < due:
            time.sleep(min(due - now, 0.001))
        stamps[order_tag(intent.intent_id)] = time.monotonic()
        publisher.publish(streams.INTENTS, intent, msg_id=intent.intent_id, ts_ms=ts_ms)
    sent.put(stamps)
    client.close()


def serve(
    replica: int, redis_url: str, database_url: str, stop: Any, ready: Any, results: Any
) -> None:
    """One execution replica as its own process, built as the service's composition root builds
    it (paper broker, intents consumer, relay worker); reports when each order reached the
    broker once ``stop`` is set."""
    client = redis.Redis.from_url(redis_url)
    engine = make_engine(database_url, pool_size=5)
    sessions = make_sessions(engine)
    settings = Settings(redis_url=redis_url, database_url=database_url, replica=str(replica),
                        risk={"max_open_legs": 100_000, "max_capital": "1000000000",
                              "max_active_gtts": 100_000})
    broker = TimedPaperBroker(sessions, placements_engine(database_url,
                                                          settings.execution.broker_concurrency))
    budget = OrderBudget(client, 10, 400, 5000, enabled=False)
    execution = Execution(sessions, broker, budget, settings, SessionRules(),
                          FaultPoints(frozenset(), 0))
    relay = OutboxRelay(sessions, Publisher(client, "execution"), "execution")
    consumer = intents_consumer(client, execution, relay, settings)
    consumer.setup()
    done = threading.Event()
    workers = [threading.Thread(target=consumer.run, args=(done,), daemon=True),
               threading.Thread(target=relay.run, args=(done,), daemon=True)]
    for worker in workers:
        worker.start()
    ready.set()
    stop.wait()
    done.set()
    for worker in workers:
        worker.join(5)
    results.put(broker.reached)
    engine.dispose()
    client.close()


def measure(replicas: int, rate: int = RATE) -> tuple[float, float, float]:
    """p50 and p99 (ms) of intent to broker, and the throughput reached, with ``replicas``
    execution processes on fresh servers, intents offered at ``rate`` a second."""
    intents = rate * SECONDS
    context = multiprocessing.get_context("spawn")
    with embedded_servers() as (redis_url, database_url):
        stop, results, sent = context.Event(), context.Queue(), context.Queue()
        readies = [context.Event() for _ in range(replicas)]
        services = [context.Process(target=serve, args=(n, redis_url, database_url, stop,
                                                        readies[n], results))
                    for n in range(replicas)]
        for service in services:
            service.start()
        for ready in readies:
            if not ready.wait(60):
                raise RuntimeError("an execution replica did not start")
        producer = context.Process(target=publish, args=(redis_url, rate, sent))
        producer.start()
        stamps: dict[str, float] = sent.get(timeout=SECONDS + 60)
        producer.join(10)
        engine = make_engine(database_url, pool_size=1)
        deadline = time.monotonic() + 60
        with engine.connect() as conn:
            while time.monotonic() < deadline and conn.execute(
                    select(func.count()).select_from(PaperOrder)).scalar_one() < intents:
                conn.rollback()
                time.sleep(0.1)
        engine.dispose()
        stop.set()
        reached: dict[str, float] = {}
        for _ in services:
            reached.update(results.get(timeout=30))
        for service in services:
            service.join(10)
    p50, p99 = percentiles(stamps, reached, rate)
    return p50, p99, len(reached) / (max(reached.values()) - min(stamps.values()))


def percentiles(
    stamps: dict[str, float], reached: dict[str, float], rate: int
) -> tuple[float, float]:
    """p50 and p99 (ms) from each intent sent (by tag) to its order reaching the broker, past the
    warm-up; every measured intent must have reached it."""
    measured = [order_tag(_intent(n, 0).intent_id)
                for n in range(int(rate * WARMUP_S), rate * SECONDS)]
    latencies = sorted((reached[tag] - stamps[tag]) * 1000 for tag in measured if tag in reached)
    if len(latencies) < len(measured):
        raise RuntimeError(f"only {len(latencies)} of {len(measured)} intents reached the broker")
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def run() -> list[tuple[str, float, str]]:
    print("[bench] execution: order budget switched off for this measurement; one execution "
          "process, then two replicas", file=sys.stderr, flush=True)
    p50, p99, rate = measure(1)
    p50_two, p99_two, rate_two = measure(2)
    return [("intent_to_broker_p50_ms", p50, "ms"),
            ("intent_to_broker_p99_ms", p99, "ms"),
            ("intent_to_broker_throughput_per_s", rate, "intents/s"),
            ("intent_to_broker_p50_ms_2_replicas", p50_two, "ms"),
            ("intent_to_broker_p99_ms_2_replicas", p99_two, "ms"),
            ("intent_to_broker_throughput_per_s_2_replicas", rate_two, "intents/s")]
