"""Composition root of the marketdata service: the sim feed, or the kite feed (KiteTicker against
Kite, or against the simulator for kite-sim)."""

from __future__ import annotations

import logging
import threading

import redis
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from services.marketdata import metrics
from services.marketdata.feeds import kite_backfill
from services.marketdata.feeds.kite import KiteFeed
from services.marketdata.feeds.kite_backfill import Backfiller, equities
from services.marketdata.feeds.replay import start_replay
from services.marketdata.feeds.sim import SimFeed, first_sim_open
from services.marketdata.ingest import Ingestor
from services.marketdata.ohlcv import OhlcvWriter, load_bars
from shared.broker_tokens import HaltSwitch, TokenKeyMissing, TokenStore, TokenWatch, key_from_env
from shared.config import FeedKind, Settings
from shared.contracts import streams
from shared.contracts.messages import Candle
from shared.domain.candles import Bar
from shared.domain.indicators import EmaSet
from shared.domain.money import to_rupees
from shared.domain.session import SessionRules
from shared.runtime import ServiceRuntime
from shared.sim.market import SimInstrument, generate_history, sim_instruments
from shared.store.models import Instrument

NAME = "marketdata"
SIM_STATE = "md.sim"  # Redis hash: the simulated day-0 open and seed, so restarts carry on

log = logging.getLogger("ratchet.marketdata")


def session_rules(settings: Settings) -> SessionRules:
    return SessionRules(
        timeframe_minutes=settings.strategy.timeframe_minutes,
        entry_cutoff_minutes=settings.strategy.entry_cutoff_minutes,
    )


def upsert_instruments(sessions: sessionmaker[Session], instruments: list[SimInstrument]) -> None:
    rows = [
        {"token": i.token, "exchange": i.exchange, "tradingsymbol": i.symbol, "name": i.name,
         "tick_size": to_rupees(i.tick), "lot_size": i.lot_size, "freeze_qty": None}
        for i in instruments
    ]
    stmt = insert(Instrument).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["token"],
        set_={"tick_size": stmt.excluded.tick_size, "lot_size": stmt.excluded.lot_size},
    )
    with sessions.begin() as session:
        session.execute(stmt)


def history_candles(inst: SimInstrument, bars: list[Bar], settings: Settings) -> list[Candle]:
    emas = EmaSet(settings.strategy.ema_periods)
    out = []
    for bar in bars:
        ema = emas.update(float(bar.close))
        out.append(Candle(token=inst.token, symbol=inst.symbol, exchange=inst.exchange,
                          timeframe_minutes=settings.strategy.timeframe_minutes,
                          start_ms=bar.start_ms, end_ms=bar.end_ms, open=bar.open, high=bar.high,
                          low=bar.low, close=bar.close, volume=bar.volume, ema=tuple(ema)))
    return out


def sim_day0(client: redis.Redis, settings: Settings, rules: SessionRules) -> int:
    """The simulated day's open, kept in Redis so that a later run carries on the same day."""
    state = client.hgetall(SIM_STATE)
    if state and int(state[b"seed"]) == settings.sim_seed:
        return int(state[b"day0"])
    day0 = first_sim_open(rules)
    client.hset(SIM_STATE, mapping={"day0": day0, "seed": settings.sim_seed})
    return day0


def start_sim(settings: Settings, runtime: ServiceRuntime, client: redis.Redis,
              sessions: sessionmaker[Session], ingestor: Ingestor, rules: SessionRules) -> SimFeed:
    instruments = sim_instruments(settings.sim_symbols, settings.sim_seed)
    upsert_instruments(sessions, instruments)
    writer = OhlcvWriter(sessions)
    day0 = sim_day0(client, settings, rules)
    tf = settings.strategy.timeframe_minutes
    need = max(settings.marketdata.history_bars, max(settings.strategy.ema_periods))
    resume = day0
    for inst in instruments:
        stored = load_bars(sessions, inst.exchange, inst.symbol, tf, need, rules.timeframe_ms)
        generated = len(stored) < need
        if generated:
            history = generate_history(inst, settings.sim_seed, day0, need, rules)
            writer.write(history_candles(inst, history, settings))
            stored = load_bars(sessions, inst.exchange, inst.symbol, tf, need, rules.timeframe_ms)
            log.info("history generated", extra={"symbol": inst.symbol, "bars": len(history)})
        ingestor.register(inst.token, inst.symbol, inst.exchange, stored)
        if stored and not generated:  # a bar of an earlier run: maybe stored, not published
            ingestor.republish(inst.token, stored[-1])
        if stored:
            resume = max(resume, stored[-1].end_ms)
    return SimFeed(instruments, settings.sim_seed, rules, day0, resume, settings.sim_speed,
                   settings.sim_tick_interval_s)


def kite_feed(settings: Settings, runtime: ServiceRuntime, client: redis.Redis,
              sessions: sessionmaker[Session], ingestor: Ingestor) -> None:
    """The kite feed: token from the encrypted store, instruments from Kite's dump (all NSE/BSE
    equities, or RATCHET_KITE_SYMBOLS), KiteTicker in full mode, history for warm-up and gaps
    (RATCHET_KITE_HISTORICAL_PER_S, Kite's 3 a second by default)."""
    from kiteconnect import KiteConnect
    from kiteconnect import exceptions as kex

    try:
        store = TokenStore(sessions, key_from_env())
    except TokenKeyMissing as exc:
        raise SystemExit(f"marketdata: {exc}") from None
    rules = ingestor.rules
    backfiller = Backfiller(settings.kite_api_key, settings.kite_root, rules,
                            per_second=settings.kite_historical_per_s)
    watch = TokenWatch(store, settings.kite_api_key, NAME, on_token=backfiller.set_access_token)
    backfiller.on_auth_error = watch.refused
    symbols = [s for s in settings.kite_symbols.split(",") if s.strip()]

    def start(stop: threading.Event) -> None:
        while not stop.is_set():  # no usable token yet: halted, told, and waiting for a login
            watch.check()
            if watch.usable:
                try:
                    rows = KiteConnect(settings.kite_api_key, access_token=watch.token,
                                       root=settings.kite_root).instruments()
                    break
                except kex.TokenException as exc:
                    watch.refused(str(exc))
                except (kex.KiteException, OSError) as exc:
                    log.warning("instruments dump failed; retrying", extra={"error": str(exc)})
            stop.wait(5.0)
        else:
            return
        instruments = equities(rows, symbols)
        kite_backfill.upsert_instruments(sessions, instruments)
        feed = KiteFeed(settings.kite_api_key, settings.kite_ws_root, instruments, ingestor,
                        client, OhlcvWriter(sessions), backfiller,
                        HaltSwitch(sessions, "stale_feed", NAME),
                        stale_after_s=settings.marketdata.stale_feed_s,
                        history_bars=max(settings.marketdata.history_bars,
                                         max(settings.strategy.ema_periods)))
        feed.prepare(sessions)

        def on_token(token: str) -> None:
            backfiller.set_access_token(token)
            feed.connect(token)

        watch.on_token = on_token
        assert watch.token is not None
        feed.connect(watch.token)
        log.info("kite feed starting", extra={"instruments": len(instruments),
                                              "root": settings.kite_root})
        runtime.spawn("backfill", backfiller.run)
        runtime.every("token", 10.0, watch.check)
        runtime.every("feed-stats", 30.0, lambda: log.info("kite feed", extra={
            **vars(feed.stats), **vars(feed.parse_stats)}))
        feed.run(stop)

    runtime.spawn("feed", start)


def main(settings: Settings) -> None:
    runtime = ServiceRuntime(NAME, settings)
    runtime.install_signals()
    client = runtime.redis()
    sessions = runtime.sessions()
    rules = session_rules(settings)
    ingestor = Ingestor(
        client, OhlcvWriter(sessions), rules,
        grace_ms=int(settings.marketdata.candle_grace_s * 1000),
        shards=settings.tick_shards, periods=settings.strategy.ema_periods, source=NAME,
        ticks_maxlen=settings.marketdata.ticks_maxlen,
    )
    if settings.feed in (FeedKind.KITE, FeedKind.KITE_SIM):
        kite_feed(settings, runtime, client, sessions, ingestor)
    elif settings.feed == FeedKind.SIM:
        feed = start_sim(settings, runtime, client, sessions, ingestor, rules)
        log.info("sim feed starting", extra={
            "clock_ms": feed.clock.now_ms, "speed": settings.sim_speed, "symbols": len(feed.paths)})
        runtime.spawn("feed", lambda stop: feed.run(stop, ingestor.on_frame, ingestor.on_clock))
    else:
        runtime.spawn("replay",
                      lambda stop: start_replay(settings, client, sessions, ingestor, stop))
    runtime.every("stats", 30.0, lambda: log.info("ingest", extra=vars(ingestor.stats)))
    runtime.serve_metrics(client, lambda: metrics.families(ingestor.stats),
                          [*streams.all_tick_streams(settings.tick_shards), streams.CANDLES])
    runtime.announce_ready(client)
    runtime.wait()
