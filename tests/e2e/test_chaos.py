"""Chaos (issue 5): two execution replicas trade against the Kite simulator, its own process.

A burst of entry intents arrives while execution processes are SIGKILLed at random moments (and at
the crash points between commit and broker call, and between the broker's answer and its record),
Redis is killed and restarted once, Postgres is restarted once, and the simulator loses responses
after accepting orders, rejects orders and gaps prices through stops. A producer plays the
strategy's part: it protects every fill with a GTT and re-sends commands that got no answer.

At the end, from the simulator's own book: one order per intent that passed the guards, no intent
lost, one live GTT per open leg and none orphaned; holdings at the simulator equal the open legs.
Prints ``intents``, ``kills``, ``duplicates``, ``lost``, ``orphan_gtts``, ``missing_gtts``.
`make chaos` runs the long form (RATCHET_CHAOS=long); CI runs the short one.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import redis
from sqlalchemy import text

from ratchet.servers import EmbeddedPostgres, EmbeddedRedis
from shared.broker_tokens import KEY_ENV, TokenStore, new_key
from shared.contracts import streams
from shared.contracts.messages import (
    FIELD,
    GttPlaced,
    LegClosed,
    OrderFilled,
    OrderRejected,
    PlaceGtt,
    PlaceOrder,
    decode,
    encode,
)
from shared.domain.money import price_below, to_paise
from shared.store.db import make_engine, make_sessions
from shared.store.migrate import upgrade
from tests.conftest import private_dir
from tests.e2e.harness import ServiceProcesses
from tests.integration.kite.kite_helpers import (
    API_KEY,
    API_SECRET,
    START_DAY,
    Sim,
    ist_ms,
    wait_for,
)

pytestmark = pytest.mark.e2e

LONG = os.environ.get("RATCHET_CHAOS") == "long"
INTENTS = 600 if LONG else 200
KILLS = 60 if LONG else 20
REPLICAS = ("0", "1")


@dataclass
class Producer:
    """The strategy's part: entries, a GTT for each fill, and re-sending what got no answer."""

    client_url: str
    symbols: list[str]
    prices: dict[str, int]
    sent: dict[str, PlaceOrder | PlaceGtt] = field(default_factory=dict)
    answered: dict[str, str] = field(default_factory=dict)  # intent id -> answer type
    fills: dict[str, OrderFilled] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    last_sent: dict[str, float] = field(default_factory=dict)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.client_url, socket_timeout=5)

    def publish(self, intent: PlaceOrder | PlaceGtt) -> None:
        self.sent[intent.intent_id] = intent
        self.last_sent[intent.intent_id] = time.monotonic()
        data = encode(intent, msg_id=intent.intent_id, ts_ms=intent.ts_ms, source="chaos")
        try:
            self.client().xadd(streams.INTENTS, {FIELD: data})
        except redis.RedisError:
            pass  # Redis is down: the re-send loop sends it again

    def burst(self, count: int, per_second: float) -> None:
        ts = ist_ms(START_DAY, "10:00")
        for n in range(count):
            if self.stop.is_set():
                return
            symbol = self.symbols[n % len(self.symbols)]
            ladder = f"NSE:{symbol}:{n:06d}"
            self.publish(PlaceOrder(intent_id=f"chaos:{ladder}:1:buy", strategy="chaos",
                                    exchange="NSE", symbol=symbol, ladder_id=ladder, leg=1,
                                    ts_ms=ts, qty=1, ref_price=self.prices[symbol]))
            time.sleep(1 / per_second)

    def follow(self) -> None:
        """Answers in, GTTs out; every 5 s, re-send what has waited 10 s (same ids)."""
        last_id, last_resend = "0-0", time.monotonic()
        while not self.stop.is_set():
            try:
                reply = self.client().xread({streams.EXEC_EVENTS: last_id}, count=500, block=500)
            except redis.RedisError:
                time.sleep(0.5)
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    self.on_event(decode(fields[FIELD]).payload)
            if time.monotonic() - last_resend > 5:
                last_resend = time.monotonic()
                for intent_id, intent in list(self.sent.items()):
                    if (intent_id not in self.answered
                            and time.monotonic() - self.last_sent[intent_id] > 10):
                        self.publish(intent)

    def on_event(self, event: object) -> None:
        if isinstance(event, OrderFilled) and event.side == "BUY":
            self.answered[event.intent_id] = "filled"
            self.fills[event.ladder_id] = event
            gtt_id = f"chaos:{event.ladder_id}:1:gtt"
            if gtt_id not in self.sent:
                self.publish(PlaceGtt(intent_id=gtt_id, strategy="chaos", exchange="NSE",
                                      symbol=event.symbol, ladder_id=event.ladder_id, leg=1,
                                      ts_ms=event.ts_ms, qty=event.qty,
                                      trigger=price_below(event.price, 25_000, 5), target=None,
                                      last_price=event.price))
        elif isinstance(event, OrderRejected):
            self.answered[event.intent_id] = "rejected"
        elif isinstance(event, GttPlaced):
            self.answered[event.intent_id] = "placed"
        elif isinstance(event, LegClosed):  # e.g. its stop was refused and it was sold at market
            self.answered.setdefault(f"chaos:{event.ladder_id}:1:gtt", "closed")


def test_chaos_two_replicas_against_the_kite_simulator() -> None:
    home = private_dir("ratchet-test-chaos-")
    pg = EmbeddedPostgres(home / "pg").start()
    rds = EmbeddedRedis(home / "redis").start()
    upgrade(pg.url)
    engine = make_engine(pg.url)
    sessions = make_sessions(engine)
    sim = Sim(home / "kite-sim", paused=True, symbols=20)
    key = new_key()
    TokenStore(sessions, key).save(API_KEY, sim.login(), "SIM001")
    kite = sim.kite()
    quotes = kite.ltp([f"NSE:{i['tradingsymbol']}" for i in kite.instruments("NSE")[:20]])
    prices = {k.split(":")[1]: to_paise(str(v["last_price"])) for k, v in quotes.items()}
    producer = Producer(rds.url, sorted(prices), prices)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATCHET_")}
    env.update(RATCHET_REDIS_URL=rds.url, RATCHET_DATABASE_URL=pg.url, RATCHET_HOME=str(home),
               RATCHET_BROKER="kite", RATCHET_KITE_ROOT=sim.root, RATCHET_KITE_WS_ROOT=sim.ws_root,
               RATCHET_KITE_API_KEY=API_KEY, RATCHET_KITE_API_SECRET=API_SECRET,
               PYTHONUNBUFFERED="1",
               RATCHET_EXECUTION__UNKNOWN_SETTLE_S="2", RATCHET_EXECUTION__GTT_CHILD_TIMEOUT_S="2",
               RATCHET_RISK__MAX_OPEN_LEGS="1000", RATCHET_RISK__MAX_CAPITAL="100000000",
               RATCHET_RISK__DAILY_LOSS_LIMIT="100000000", **{KEY_ENV: key})
    faulty = {"RATCHET_FAULT_KILL": "after_intent_commit,after_broker_call,after_gtt_call",
              "RATCHET_FAULT_KILL_PROB": "0.05"}
    system = ServiceProcesses(env, home / "logs")
    rng = random.Random(7)
    kills = 0
    threads = [threading.Thread(target=producer.follow, daemon=True),
               threading.Thread(target=producer.burst, args=(INTENTS, 12.0), daemon=True)]
    try:
        for replica in REPLICAS:
            system.start("execution", f"execution-{replica}", RATCHET_REPLICA=replica, **faulty)
        wait_for(lambda: all(redis.Redis.from_url(rds.url).exists(f"ratchet.ready.execution.{r}")
                             for r in REPLICAS), 90, "both execution replicas up")
        sim.fault(kind="lose", count=8, paths=["/orders/regular"], methods=["POST"])
        sim.admin("POST", "/faults/reject", {"count": 5, "message": "chaos: RMS rejected"})
        for thread in threads:
            thread.start()
        redis_killed = pg_restarted = gapped = False
        deadline = time.monotonic() + (900 if LONG else 420)
        while (threads[1].is_alive() or kills < KILLS) and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.8, 2.5))
            progress = len(producer.sent) / INTENTS
            for replica in REPLICAS:
                label = f"execution-{replica}"
                if not system.alive(label):  # died at a crash point, or of an outage
                    kills += system.procs[label].returncode == -signal.SIGKILL
                    system.start("execution", label, RATCHET_REPLICA=replica, **faulty)
            victim = f"execution-{rng.choice(REPLICAS)}"
            if system.alive(victim):
                system.procs[victim].kill()
                system.procs[victim].wait()
                kills += 1
                system.start("execution", victim, RATCHET_REPLICA=victim[-1], **faulty)
            if progress > 0.3 and not redis_killed:
                redis_killed = True
                rds.kill()
                time.sleep(1)
                rds.start()
            if progress > 0.6 and not pg_restarted:
                pg_restarted = True
                pg.restart()
            if progress > 0.5 and not gapped and len(producer.fills) > 5:
                gapped = True  # the price runs through the stops of some open legs
                for symbol in sorted({f.symbol for f in producer.fills.values()})[:3]:
                    sim.set_price(symbol, prices[symbol] * 0.93 / 100)
        assert redis_killed and pg_restarted and gapped and kills >= KILLS

        # Calm: no more faults or kills; everything settles.
        sim.clear_faults()
        for replica in REPLICAS:
            label = f"execution-{replica}"
            if system.alive(label):
                system.stop(label)
            system.start("execution", label, RATCHET_REPLICA=replica)

        def settled() -> bool:
            with engine.connect() as conn:
                open_orders = conn.execute(text("SELECT count(*) FROM orders WHERE state NOT IN "
                                                "('FILLED','REJECTED','CANCELLED')")).scalar_one()
                open_gtts = conn.execute(text("SELECT count(*) FROM gtts WHERE state IN "
                                              "('NEW','SUBMITTED','UNKNOWN')")).scalar_one()
            buys = [i for i in producer.sent if i.endswith(":buy")]
            gtts = [i for i in producer.sent if i.endswith(":gtt")]
            return (open_orders == 0 and open_gtts == 0
                    and all(i in producer.answered for i in buys)
                    and all(i in producer.answered for i in gtts))

        try:
            wait_for(settled, 240, "every intent answered and settled", every=1)
        except AssertionError:
            with engine.connect() as conn:
                stuck = conn.execute(text("SELECT intent_id, state, reason FROM orders "
                                          "WHERE state NOT IN "
                                          "('FILLED','REJECTED','CANCELLED')")).all()
                gtts = conn.execute(text("SELECT intent_id, state FROM gtts WHERE state IN "
                                         "('NEW','SUBMITTED','UNKNOWN')")).all()
            unanswered = [i for i in producer.sent if i not in producer.answered]
            raise AssertionError(f"orders {stuck[:5]} gtts {gtts[:5]} unanswered {len(unanswered)} "
                                 f"{unanswered[:5]}") from None
    finally:
        producer.stop.set()
        system.stop_all()

    # --- the simulator's own book --------------------------------------------------------------
    book = kite.orders()
    by_tag = Counter(o["tag"] for o in book if o.get("tag"))
    duplicates = sum(1 for n in by_tag.values() if n > 1)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT intent_id, tag, state, side FROM orders")).all()
        open_legs = conn.execute(text(
            "SELECT o.ladder_id, o.symbol, g.trigger_id FROM orders o LEFT JOIN gtts g "
            "ON g.ladder_id = o.ladder_id AND g.leg = o.leg "
            "WHERE o.side = 'BUY' AND o.state = 'FILLED' AND o.leg_closed_at IS NULL")).all()
        known_gtts = dict(conn.execute(text(
            "SELECT trigger_id, ladder_id FROM gtts WHERE trigger_id IS NOT NULL")).all())
    state = {r.intent_id: r for r in rows}
    entries = [i for i in producer.sent if i.endswith(":buy")]
    completed = {o["tag"] for o in book if o.get("tag") and o["status"] == "COMPLETE"}
    lost = sum(1 for i in entries if i not in state
               or (state[i].state == "FILLED" and state[i].tag not in completed))
    active = {str(g["id"]): g for g in kite.get_gtts() if g["status"] == "active"}
    open_ladders = {leg.ladder_id for leg in open_legs}
    orphan_gtts = sum(1 for tid in active if known_gtts.get(tid) not in open_ladders)
    missing_gtts = sum(1 for leg in open_legs if str(leg.trigger_id) not in active)
    held = Counter()
    for h in kite.holdings():
        held[h["tradingsymbol"]] += int(h["quantity"]) + int(h.get("t1_quantity", 0))
    for p in kite.positions()["net"]:
        held[p["tradingsymbol"]] += int(p["quantity"]) if p["product"] == "CNC" else 0
    legs_per_symbol = Counter(leg.symbol for leg in open_legs)
    for name, value in (("intents", len(entries)), ("kills", kills), ("duplicates", duplicates),
                        ("lost", lost), ("orphan_gtts", orphan_gtts),
                        ("missing_gtts", missing_gtts)):
        print(f"{name}: {value}")
    for tag in [t for t, n in by_tag.items() if n > 1]:  # what a failure needs to be read
        print("duplicated:", [o for o in book if o.get("tag") == tag],
              [r for r in rows if r.tag == tag])
    engine.dispose()
    sim.stop()
    rds.stop()
    pg.stop()
    assert duplicates == lost == orphan_gtts == missing_gtts == 0
    assert {s: n for s, n in held.items() if n} == dict(legs_per_symbol), (held, legs_per_symbol)

