"""Composition root of the marketdata service (sim feed; the kite feed arrives with issue 4)."""

from __future__ import annotations

import logging

import redis
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from services.marketdata.feeds.sim import SimFeed, first_sim_open
from services.marketdata.ingest import Ingestor
from services.marketdata.ohlcv import OhlcvWriter, load_bars
from shared.config import FeedKind, Settings
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
        if len(stored) < need:
            history = generate_history(inst, settings.sim_seed, day0, need, rules)
            writer.write(history_candles(inst, history, settings))
            stored = load_bars(sessions, inst.exchange, inst.symbol, tf, need, rules.timeframe_ms)
            log.info("history generated", extra={"symbol": inst.symbol, "bars": len(history)})
        ingestor.register(inst.token, inst.symbol, inst.exchange, stored)
        if stored:
            resume = max(resume, stored[-1].end_ms)
    return SimFeed(instruments, settings.sim_seed, rules, day0, resume, settings.sim_speed,
                   settings.sim_tick_interval_s)


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
    if settings.feed != FeedKind.SIM:
        raise SystemExit(f"feed {settings.feed} is not available yet; use RATCHET_FEED=sim")
    feed = start_sim(settings, runtime, client, sessions, ingestor, rules)
    log.info("sim feed starting", extra={"clock_ms": feed.clock.now_ms, "speed": settings.sim_speed,
                                         "symbols": len(feed.paths)})
    runtime.spawn("feed", lambda stop: feed.run(stop, ingestor.on_frame, ingestor.on_clock))
    runtime.every("stats", 30.0, lambda: log.info("ingest", extra=vars(ingestor.stats)))
    runtime.announce_ready(client)
    runtime.wait()
