"""The kite feed: the marketdata service as a process, its KiteTicker against the simulator running
at 300x (a 15-minute bar every 3 s): ticks in, candles out; a dropped socket reconnected and
resubscribed within 10 s and the missed bars backfilled from the historical endpoint; stalled
ticks halting new entries until they resume."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from services.execution.brokers.paper import PaperBroker
from services.execution.budget import OrderBudget
from services.execution.faults import FaultPoints
from services.execution.processor import Execution
from services.execution.states import OrderState
from shared.broker_tokens import KEY_ENV, TokenStore, new_key
from shared.config import Settings
from shared.contracts import streams
from shared.contracts.messages import Candle, PlaceOrder, decode
from shared.domain.session import SessionRules
from shared.store.models import HaltRecord, Order
from tests.e2e.harness import ServiceProcesses
from tests.integration.kite.kite_helpers import API_KEY, API_SECRET, Sim, wait_for

SYMBOLS = 5


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    proc = Sim(Path(tmp_path_factory.mktemp("kite-feed")) / "state", paused=False, speed=300,
               symbols=SYMBOLS)
    yield proc
    proc.stop()


@pytest.fixture
def marketdata(sim: Sim, service_env: dict[str, str], sessions: sessionmaker[Session],
               redis_client: redis.Redis, tmp_path: Path, request: pytest.FixtureRequest,
               ) -> Iterator[ServiceProcesses]:
    key = new_key()
    extra = dict(getattr(request, "param", {}))
    if not extra.pop("no_token", False):
        TokenStore(sessions, key).save(API_KEY, sim.login(), "SIM001")
    env = {**service_env, "RATCHET_FEED": "kite-sim", "RATCHET_KITE_ROOT": sim.root,
           "RATCHET_KITE_WS_ROOT": sim.ws_root, "RATCHET_KITE_API_KEY": API_KEY,
           "RATCHET_KITE_API_SECRET": API_SECRET, KEY_ENV: key,
           "RATCHET_MARKETDATA__HISTORY_BARS": "60", **extra}
    sim.admin("DELETE", "/faults")
    system = ServiceProcesses(env, tmp_path / "logs")
    system.key = key  # type: ignore[attr-defined]
    system.start("marketdata")
    try:
        yield system
    finally:
        system.stop("marketdata")


def status(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall("md.kite").items()}


def live_candles(client: redis.Redis) -> list[Candle]:
    out = []
    for _, fields in client.xrange(streams.CANDLES):
        payload = decode(fields[b"d"]).payload
        if isinstance(payload, Candle):
            out.append(payload)
    return out


def ohlcv_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.execute(text("SELECT count(*) FROM ohlcv")).scalar_one())


def started(system: ServiceProcesses, client: redis.Redis) -> None:
    def ready() -> bool:
        assert system.alive("marketdata"), system.log_tail("marketdata")
        s = status(client)
        return (s.get("connects", 0) >= 1 and s.get("pending", 1) == 0
                and len(live_candles(client)) > 0)

    wait_for(ready, 60, "the feed connected, warmed up and closing candles")


def test_ticks_in_candles_out(marketdata: ServiceProcesses, redis_client: redis.Redis,
                              sessions: sessionmaker[Session], sim: Sim) -> None:
    started(marketdata, redis_client)
    assert ohlcv_count(sessions) >= SYMBOLS * 60  # warmed from the historical endpoint
    ltp = redis_client.hgetall(streams.LTP_HASH)
    assert len(ltp) == SYMBOLS
    ticks = redis_client.xrange(streams.ticks_stream(0), count=5)
    assert ticks
    candle = live_candles(redis_client)[-1]
    assert all(e is not None for e in candle.ema)  # EMAs warm from the start
    kite = sim.kite()
    tokens = {i["instrument_token"] for i in kite.instruments()}
    assert candle.token in tokens and candle.start_ms % 60_000 == 0


def test_the_heartbeat_waits_for_every_tokens_history(
    marketdata: ServiceProcesses, redis_client: redis.Redis, sessions: sessionmaker[Session]
) -> None:
    """The strategy warms its EMAs when the feed first beats: by then every symbol's history
    must be stored, not just the first one fetched (history comes at 3 requests a second)."""
    def beating() -> bool:
        assert marketdata.alive("marketdata"), marketdata.log_tail("marketdata")
        return bool(redis_client.exists(streams.FEED_HEARTBEAT))

    wait_for(beating, 60, "the feed's first beat", every=0.02)
    with sessions() as session:
        stored = dict(session.execute(text(
            "SELECT symbol, count(*) FROM ohlcv GROUP BY symbol")).all())
    assert len(stored) == SYMBOLS and min(stored.values()) >= 60, stored


def test_a_heartbeat_left_by_an_earlier_run_does_not_count(
    marketdata: ServiceProcesses, redis_client: redis.Redis
) -> None:
    """Restarted over the last run's heartbeat, the feed removes it and beats again only once
    this run's warm-up is stored: the beat is never there without this run's history."""
    started(marketdata, redis_client)
    marketdata.stop("marketdata")
    redis_client.hset(streams.FEED_HEARTBEAT, mapping={"clock_ms": -1})  # the earlier run's
    marketdata.start("marketdata")
    seen_gone = False

    def beating_again() -> bool:
        nonlocal seen_gone
        assert marketdata.alive("marketdata"), marketdata.log_tail("marketdata")
        clock = redis_client.hget(streams.FEED_HEARTBEAT, "clock_ms")
        seen_gone = seen_gone or clock is None
        return clock not in (None, b"-1")

    wait_for(beating_again, 60, "this run's first beat", every=0.02)
    assert seen_gone, "the earlier run's heartbeat stood until this run beat over it"


def test_dropped_socket_reconnects_and_missed_bars_are_backfilled(
    marketdata: ServiceProcesses, redis_client: redis.Redis, sessions: sessionmaker[Session],
    sim: Sim,
) -> None:
    started(marketdata, redis_client)
    before = status(redis_client)
    dropped_at = time.monotonic()
    gap_from = sim.state()["now_ms"]
    sim.admin("POST", "/ticker/drop", {"refuse_s": 3})  # > one bar of simulated time refused
    wait_for(lambda: status(redis_client)["connects"] > before["connects"]
             and status(redis_client)["ticks"] > before["ticks"] + 100, 60,
             "reconnected, resubscribed and ticking")
    # The acceptance figure is 10 s; the wait above is generous for a loaded machine and the
    # measured time is printed (the refused window is 3 s of it).
    print(f"reconnected and ticking {time.monotonic() - dropped_at:.1f} s after the drop")
    after = wait_for(lambda: (s := status(redis_client))["gaps"] > before["gaps"]
                     and s["pending"] == 0 and s, 30, "the gap backfilled")
    assert after["backfilled_bars"] > before["backfilled_bars"]
    # Every bar from the one the gap cut into is stored, in order, as the exchange's history
    # has it: the bars of the gap whole, the bar the ticks came back in with history's open.
    kite = sim.kite()
    symbols = {i["instrument_token"]: i["tradingsymbol"] for i in kite.instruments()}
    gap_bar = SessionRules().bar_start(gap_from)
    assert gap_bar is not None
    now = sim.state()["now_ms"]
    hists = {}
    for token in symbols:
        time.sleep(0.4)  # Kite's 3 historical requests a second apply to tests too
        hists[token] = kite.historical_data(token, ist_naive(gap_bar), ist_naive(now),
                                            "15minute")[:-1]  # the last one is still running
    time.sleep(0.5)
    candles = live_candles(redis_client)
    for token, symbol in symbols.items():
        starts = [c.start_ms for c in candles if c.token == token]
        assert starts == sorted(set(starts)), f"{symbol}: bars out of order or twice"
        hist = hists[token]
        assert len(hist) >= 2, "the gap should span a whole bar"
        with sessions() as session:
            stored = {int(r.ts.timestamp() * 1000): r for r in session.execute(text(
                "SELECT ts, open, high, low, close FROM ohlcv WHERE symbol = :s"), {"s": symbol})}
        for i, h in enumerate(hist):
            start = int(h["date"].timestamp() * 1000)
            row = stored.get(start)
            assert row is not None, f"{symbol} {h['date']}: no bar"
            assert start in starts, f"{symbol} {h['date']}: not published"
            assert float(row.open) == h["open"], f"{symbol} {h['date']}"
            if i == 0:
                assert (float(row.high), float(row.low), float(row.close)) == (
                    h["high"], h["low"], h["close"]), f"{symbol} {h['date']}"


def ist_naive(ms: int) -> dt.datetime:
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    return dt.datetime.fromtimestamp(ms / 1000, ist).replace(tzinfo=None)


@pytest.mark.parametrize("marketdata", [{"RATCHET_MARKETDATA__STALE_FEED_S": "2"}], indirect=True)
def test_stalled_ticks_halt_entries_until_they_resume(
    marketdata: ServiceProcesses, redis_client: redis.Redis, sessions: sessionmaker[Session],
    sim: Sim, redis_url: str, database_url: str,
) -> None:
    started(marketdata, redis_client)
    settings = Settings(redis_url=redis_url, database_url=database_url)
    execution = Execution(sessions, PaperBroker(sessions), OrderBudget(redis_client, 10, 400, 5000),
                          settings, SessionRules(), FaultPoints(frozenset(), 0))

    def stale_halts() -> list[HaltRecord]:
        with sessions() as session:
            return list(session.scalars(select(HaltRecord).where(
                HaltRecord.kind == "stale_feed", HaltRecord.by == "marketdata")))

    def buy(leg: int) -> Order:
        now = sim.state()["now_ms"]
        ladder = f"NSE:SBIN:{leg}"
        execution.place_order(PlaceOrder(
            intent_id=f"momentum:{ladder}:{leg}:buy", strategy="momentum", exchange="NSE",
            symbol="SBIN", ladder_id=ladder, leg=leg, ts_ms=now, qty=1, ref_price=80_000))
        with sessions() as session:
            return session.scalars(select(Order).where(Order.leg == leg)).one()

    sim.admin("POST", "/ticker/stall", {"seconds": 8})  # the socket stays open, no ticks
    wait_for(lambda: any(h.active for h in stale_halts()), 8, "the stale-feed halt")
    assert "no tick for" in stale_halts()[0].reason
    assert buy(1).state == OrderState.REJECTED  # a new entry is refused while stale
    wait_for(lambda: stale_halts() and not any(h.active for h in stale_halts()), 20,
             "the halt cleared once ticks resume")
    assert buy(2).state == OrderState.FILLED
    wait_for(lambda: (s := status(redis_client))["gaps"] >= 1 and s["pending"] == 0
             and s["stale"] == 0, 20, "the stall's bars backfilled")


@pytest.mark.parametrize("marketdata", [{"no_token": True}], indirect=True)
def test_no_token_is_a_halt_and_a_clear_message_until_login(
    marketdata: ServiceProcesses, redis_client: redis.Redis, sessions: sessionmaker[Session],
    sim: Sim,
) -> None:
    def token_halts() -> list[HaltRecord]:
        with sessions() as session:
            return list(session.scalars(select(HaltRecord).where(
                HaltRecord.kind == "token_expired", HaltRecord.by == "marketdata")))

    wait_for(lambda: any(h.active for h in token_halts()), 20, "the token halt")
    assert "ratchet kite login" in token_halts()[0].reason
    wait_for(lambda: "run `ratchet kite login`" in marketdata.log_tail("marketdata"), 10,
             "the message in the log")
    assert "Traceback" not in marketdata.log_tail("marketdata", 200)
    TokenStore(sessions, marketdata.key).save(API_KEY, sim.login(), "SIM001")  # type: ignore[attr-defined]
    started(marketdata, redis_client)
    assert not any(h.active for h in token_halts())
