"""Composition root of the strategy service. It holds no broker client: intents only."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.strategy import metrics
from services.strategy.service import StrategyService
from services.strategy.shards import Membership, ShardOwner
from services.strategy.sweep import Sweep
from shared.bus.consumer import StreamConsumer
from shared.bus.publisher import OutboxRelay, Publisher
from shared.config import Settings
from shared.contracts import streams
from shared.domain.candles import Bar
from shared.domain.engine import MomentumEngine
from shared.domain.ladder import StrategyParams
from shared.domain.money import to_paise
from shared.domain.session import SessionRules
from shared.runtime import ServiceRuntime
from shared.store.models import AuditEntry, Instrument, Ohlcv

NAME = "strategy"

log = logging.getLogger("ratchet.strategy")


def instrument_loader(
    sessions: sessionmaker[Session], settings: Settings, rules: SessionRules
) -> Callable[[str], tuple[str, int, list[Bar]] | None]:
    """Looks up an instrument and the stored bars that warm its EMAs (EMA200 ready at once)."""
    tf = settings.strategy.timeframe_minutes
    need = max(settings.marketdata.history_bars, max(settings.strategy.ema_periods)) + 50

    def load(symbol: str) -> tuple[str, int, list[Bar]] | None:
        with sessions() as session:
            inst = session.scalars(
                select(Instrument).where(Instrument.tradingsymbol == symbol)
            ).first()
            if inst is None:
                return None
            rows = session.scalars(
                select(Ohlcv).where(Ohlcv.exchange == inst.exchange, Ohlcv.symbol == symbol,
                                    Ohlcv.timeframe == tf).order_by(Ohlcv.ts.desc()).limit(need)
            ).all()
        bars = []
        for r in reversed(rows):
            start = int(r.ts.timestamp() * 1000)
            bars.append(Bar(start, start + rules.timeframe_ms, to_paise(r.open), to_paise(r.high),
                            to_paise(r.low), to_paise(r.close), r.volume))
        return inst.exchange, to_paise(inst.tick_size), bars

    return load


def strategy_enabled(sessions: sessionmaker[Session]) -> bool:
    """Start/stop survives a restart: the api records each command in the audit log, the same
    record its `GET /strategy` reads."""
    with sessions() as session:
        last = session.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.action.in_(("strategy.start", "strategy.stop")))
            .order_by(AuditEntry.id.desc())
            .limit(1)
        ).first()
    return last != "strategy.stop"


def wait_for_feed(client: redis.Redis, runtime: ServiceRuntime) -> None:
    """Marketdata writes the instruments and their history before its feed starts beating:
    warming the EMAs any earlier would warm them on a partial history."""
    logged = False
    while not client.exists(streams.FEED_HEARTBEAT) and not runtime.stop.is_set():
        if not logged:
            log.info("waiting for the marketdata feed to start")
            logged = True
        runtime.stop.wait(0.5)


class InstrumentTokens:
    """Symbol -> instrument token (the shard key), read from Postgres and refreshed on a miss."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.tokens: dict[str, int] = {}

    def refresh(self) -> None:
        with self.sessions() as session:
            self.tokens = dict(
                session.execute(select(Instrument.tradingsymbol, Instrument.token)).all()
            )

    def token_of(self, symbol: str) -> int | None:
        if symbol not in self.tokens:
            self.refresh()
        return self.tokens.get(symbol)

    def symbols_of_shard(self, shard: int, shards: int) -> list[str]:
        self.refresh()
        return sorted(s for s, t in self.tokens.items() if streams.tick_shard(t, shards) == shard)


def main(settings: Settings) -> None:
    runtime = ServiceRuntime(NAME, settings)
    runtime.install_signals()
    client = runtime.redis()
    sessions = runtime.sessions()
    rules = SessionRules(timeframe_minutes=settings.strategy.timeframe_minutes,
                         entry_cutoff_minutes=settings.strategy.entry_cutoff_minutes)
    engine = MomentumEngine(StrategyParams.from_settings(settings.strategy), rules)
    service = StrategyService(engine, sessions, settings.strategy,
                              instrument_loader(sessions, settings, rules),
                              resend_after_s=settings.execution.intent_resend_s,
                              origin=f"{NAME}-{settings.replica}")
    wait_for_feed(client, runtime)
    service.enabled = strategy_enabled(sessions)
    relay = OutboxRelay(sessions, Publisher(client, NAME), NAME)
    consumer_name = f"{NAME}-{settings.replica}"
    shards = settings.tick_shards
    ticks = StreamConsumer(  # the tick shards this replica owns, in the shared group
        client, [], streams.GROUP_STRATEGY, consumer_name, service.handle,
        dead_letter_after=settings.dead_letter_after, batch=500, claim_idle_ms=5_000,
        before_ack=service.flush, after_batch=relay.flush,
        start={s: "$" for s in streams.all_tick_streams(shards)},
    )
    market = StreamConsumer(  # candles and execution events, all of them, kept if ours
        client, [streams.CANDLES, streams.EXEC_EVENTS],
        streams.replica_group(NAME, settings.replica), consumer_name, service.handle,
        dead_letter_after=settings.dead_letter_after, batch=500,
        before_ack=service.flush, after_batch=relay.flush,
    )
    control = StreamConsumer(
        client, [streams.CONTROL], streams.replica_group(NAME, settings.replica), consumer_name,
        service.handle, start="$", batch=10, before_ack=service.flush, after_batch=relay.flush,
    )
    tokens = InstrumentTokens(sessions)
    owner = ShardOwner(client, service, ticks, Membership(client, settings.replica), shards,
                       tokens.token_of, lambda shard: tokens.symbols_of_shard(shard, shards))
    service.owns = owner.owns
    owner.rebalance()
    runtime.serve_metrics(client, lambda: metrics.families(service, ticks.stats),
                          [*streams.all_tick_streams(shards), streams.CANDLES,
                           streams.INTENTS, streams.EXEC_EVENTS])
    runtime.spawn("ticks", ticks.run)
    runtime.spawn("market", market.run)
    runtime.spawn("control", control.run)
    # its own thread: a rebalance that adopts many symbols must not let this replica's key lapse
    runtime.every("membership", owner.membership.ttl_s / 3, owner.membership.beat)
    runtime.every("shards", 2.0, owner.rebalance)
    runtime.every("outbox", 0.2, relay.flush)
    runtime.every("flush-highs", 5.0, service.flush_dirty)
    runtime.every("resend", 5.0, service.resend_unanswered)
    runtime.every("sweep", settings.strategy.sweep_seconds,
                  Sweep(service, client, sessions).run_once)
    runtime.announce_ready(client)
    runtime.wait()
    owner.membership.leave()
