"""intent_to_broker_floor_p50_ms / _p99_ms: what this machine allows for intent_to_broker at all.

The same producer, servers, schema and rate as :mod:`bench.execution`, but the consumer does only
the work the contract of DESIGN.md §4 cannot do without, as cheaply as it can be done in this
stack: per read, one transaction recording the intents and their orders SUBMITTED under the risk
lock (one round trip, psycopg pipeline mode, synchronous commit), one holding the rows and the
halts lock while the paper book takes the whole read in one insert, then the answers and their
events committed, then the ack. No ORM, no guards' Python, no logs, no relay, one statement
for all placements instead of one per order. It is a floor, not a second implementation: if
its p99 is above the 10 ms target, no implementation of the contract here can meet it."""

from __future__ import annotations

import multiprocessing
import sys
import time
from typing import Any

import orjson
import psycopg
import redis

from bench.execution import RATE, SECONDS, percentiles, publish
from bench.servers import embedded_servers
from services.execution.ledger import HALT_LOCK, RISK_LOCK, order_tag
from shared.contracts import streams
from shared.contracts.messages import FIELD

GROUP = "floor"

_RECORD_INTENTS = """
INSERT INTO intents (intent_id, type, state, payload)
SELECT i, 'place_order', 'RECORDED', p FROM unnest(%s::text[], %s::json[]) AS u(i, p)
ON CONFLICT (intent_id) DO NOTHING RETURNING intent_id"""
_RISK = "SELECT open_legs, deployed FROM risk_book WHERE id = 1"
_INSERT_ORDERS = """
INSERT INTO orders (intent_id, tag, exchange, symbol, ladder_id, leg, side, qty, order_type,
                    product, ref_price, adds_risk, state, filled_qty, attempts, history,
                    submitted_at)
SELECT i, t, 'NSE', s, l, 1, 'BUY', 1, 'MARKET', 'CNC', 100, true, 'SUBMITTED', 0, 1, '[]', now()
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS u(i, t, s, l) RETURNING id"""
_HOLD = "SELECT id FROM orders WHERE id = ANY(%s) AND state = 'SUBMITTED' ORDER BY id FOR UPDATE"
_HALT = "SELECT reason FROM halts WHERE active LIMIT 1"
_PAPER = """
WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
INSERT INTO paper_orders (order_id, tag, exchange, symbol, side, qty, order_type, product, price,
                          status, filled_qty, average_price)
SELECT 'P' || t, t, 'NSE', s, 'BUY', 1, 'MARKET', 'CNC', 100, 'COMPLETE', 1, 100
FROM async_commit, unnest(%s::text[], %s::text[]) AS u(t, s)"""
_FILLED = """
UPDATE orders
SET state = 'FILLED', filled_qty = qty, average_price = 100, broker_order_id = 'P' || tag
WHERE id = ANY(%s) AND state = 'SUBMITTED'"""
_EVENTS = """
INSERT INTO outbox (source, stream, msg_id, data)
SELECT 'execution', 'execution.events', m, d FROM unnest(%s::text[], %s::text[]) AS u(m, d)"""


def consume(redis_url: str, dsn: str, stop: Any, ready: Any, results: Any) -> None:
    """Read, record and guard, hold, place, answer, ack: until ``stop``; then report when each
    order reached the paper book."""
    client = redis.Redis.from_url(redis_url)
    client.xgroup_create(streams.INTENTS, GROUP, id="0", mkstream=True)
    ledger = psycopg.connect(dsn)
    book = psycopg.connect(dsn, autocommit=True)
    reached: dict[str, float] = {}
    ready.set()
    while not stop.is_set():
        read = client.xreadgroup(GROUP, "floor-0", {streams.INTENTS: ">"}, count=50, block=100)
        assert isinstance(read, list)  # RESP2: [[stream, entries]], empty when none
        if not read:
            continue
        entries = read[0][1]
        envelopes = [orjson.loads(fields[FIELD]) for _, fields in entries]
        intent_ids = [e["id"] for e in envelopes]
        tags = [order_tag(i) for i in intent_ids]
        symbols = [e["payload"]["symbol"] for e in envelopes]
        with ledger.pipeline():
            ledger.execute("SELECT pg_advisory_xact_lock(%s)", (RISK_LOCK,))
            ledger.execute(_RECORD_INTENTS, (intent_ids, [orjson.dumps(e["payload"]).decode()
                                                          for e in envelopes]))
            ledger.execute(_RISK)
            ladders = [e["payload"]["ladder_id"] for e in envelopes]
            inserted = ledger.execute(_INSERT_ORDERS, (intent_ids, tags, symbols, ladders))
            ledger.commit()
        order_ids = [row[0] for row in inserted.fetchall()]
        with ledger.pipeline():
            ledger.execute(_HOLD, (order_ids,))
            ledger.execute("SELECT pg_advisory_xact_lock_shared(%s)", (HALT_LOCK,))
            ledger.execute(_HALT)
        now = time.monotonic()
        reached.update((tag, now) for tag in tags)
        book.execute(_PAPER, (tags, symbols))
        with ledger.pipeline():
            ledger.execute(_FILLED, (order_ids,))
            ledger.execute(_EVENTS, ([f"{i}:filled" for i in intent_ids],
                                     [orjson.dumps(e).decode() for e in envelopes]))
            ledger.commit()
        client.xack(streams.INTENTS, GROUP, *[entry_id for entry_id, _ in entries])
    results.put(reached)


def measure(rate: int = RATE) -> tuple[float, float]:
    """p50 and p99 (ms) from the intent on the stream to the paper book's insert."""
    intents = rate * SECONDS
    context = multiprocessing.get_context("spawn")
    with embedded_servers() as (redis_url, database_url):
        dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
        stop, ready = context.Event(), context.Event()
        results, sent = context.Queue(), context.Queue()
        consumer = context.Process(target=consume, args=(redis_url, dsn, stop, ready, results))
        consumer.start()
        if not ready.wait(60):
            raise RuntimeError("the floor's consumer did not start")
        producer = context.Process(target=publish, args=(redis_url, rate, sent))
        producer.start()
        stamps: dict[str, float] = sent.get(timeout=SECONDS + 60)
        producer.join(10)
        deadline = time.monotonic() + 60
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline and conn.execute(
                    "SELECT count(*) FROM paper_orders").fetchone()[0] < intents:  # type: ignore[index]
                time.sleep(0.1)
        stop.set()
        reached: dict[str, float] = results.get(timeout=30)
        consumer.join(10)
    return percentiles(stamps, reached, rate)


def run() -> list[tuple[str, float, str]]:
    print("[bench] execution_floor: the least work of the contract per read, raw psycopg, "
          "at the same 500 intents/s", file=sys.stderr, flush=True)
    p50, p99 = measure()
    return [("intent_to_broker_floor_p50_ms", p50, "ms"),
            ("intent_to_broker_floor_p99_ms", p99, "ms")]
