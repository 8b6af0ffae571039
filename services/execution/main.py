"""Composition root of the execution service: the only process that talks to a broker."""

from __future__ import annotations

import redis

from services.execution import metrics
from services.execution.brokers.base import BrokerInterface
from services.execution.brokers.paper import PaperBroker, placements_engine
from services.execution.budget import OrderBudget
from services.execution.control import ControlHandler
from services.execution.faults import FaultPoints
from services.execution.kite_orders import (
    AccountCheck,
    KiteConnections,
    OrderUpdates,
    connect_kite,
    start_order_updates,
)
from services.execution.processor import Execution
from services.execution.reconciler import Reconciler, wait_until_reconciled
from services.execution.ticks import PaperMarket
from shared.broker_tokens import TokenKeyMissing
from shared.bus.consumer import StreamConsumer
from shared.bus.publisher import OutboxRelay, Publisher
from shared.config import BrokerKind, Settings
from shared.contracts import streams
from shared.domain.session import SessionRules
from shared.runtime import ServiceRuntime

NAME = "execution"


def build_broker(settings: Settings, runtime: ServiceRuntime) -> BrokerInterface:
    if settings.broker == BrokerKind.KITE:
        return connect_kite(settings, runtime.sessions()).broker
    return PaperBroker(runtime.sessions(), placements_engine(settings.require_database_url(),
                                                           settings.execution.broker_concurrency))


def start_kite(runtime: ServiceRuntime, settings: Settings, kite: KiteConnections,
               execution: Execution, reconciler: Reconciler) -> None:
    """Order updates from execution's own ticker connection (polling stays the fallback), the
    token watched, the account checked now and every
    minute."""
    updates = OrderUpdates(execution, reconciler)
    start_order_updates(kite, settings, updates)
    runtime.spawn("order-updates", updates.run)
    runtime.every("token", 10.0, kite.watch.check)
    account = AccountCheck(kite.broker, execution.sessions)
    account.run_once()
    runtime.every("account", settings.execution.reconcile_seconds, account.run_once)


def intents_consumer(
    client: redis.Redis, execution: Execution, relay: OutboxRelay, settings: Settings
) -> StreamConsumer:
    """The consumer of ``strategy.intents``: up to 50 intents a read, handled together; after
    each read the relay (running as its own worker) is nudged to publish their events."""
    return StreamConsumer(
        client, [streams.INTENTS], streams.GROUP_EXECUTION, f"{NAME}-{settings.replica}",
        execution.handle, dead_letter_after=settings.dead_letter_after, batch=50,
        after_batch=relay.nudge, batch_handler=execution.handle_batch,
    )


def main(settings: Settings) -> None:
    runtime = ServiceRuntime(NAME, settings,
                             idle_in_transaction_s=settings.execution.stuck_transaction_s)
    runtime.install_signals()
    client = runtime.redis()
    sessions = runtime.sessions()
    kite: KiteConnections | None = None
    if settings.broker == BrokerKind.KITE:
        try:
            kite = connect_kite(settings, sessions)
        except TokenKeyMissing as exc:
            raise SystemExit(f"execution: {exc}") from None
    broker = kite.broker if kite is not None else build_broker(settings, runtime)
    ex = settings.execution
    budget = OrderBudget(client, ex.orders_per_second, ex.orders_per_minute, ex.orders_per_day)
    rules = SessionRules(
        timeframe_minutes=settings.strategy.timeframe_minutes,
        entry_cutoff_minutes=settings.strategy.entry_cutoff_minutes,
    )
    execution = Execution(sessions, broker, budget, settings, rules, FaultPoints.from_env())
    relay = OutboxRelay(sessions, Publisher(client, NAME), NAME)
    reconciler = Reconciler(execution, relay)
    if kite is not None:
        start_kite(runtime, settings, kite, execution, reconciler)
    wait_until_reconciled(reconciler)

    consumer_name = f"{NAME}-{settings.replica}"
    intents = intents_consumer(client, execution, relay, settings)
    control = StreamConsumer(
        client, [streams.CONTROL], streams.replica_group(NAME, settings.replica), consumer_name,
        ControlHandler(execution, relay).handle, start="$", batch=10,
    )
    runtime.spawn("intents", intents.run)
    runtime.spawn("control", control.run)
    ticks: StreamConsumer | None = None
    if isinstance(broker, PaperBroker):
        market = PaperMarket(broker, reconciler)
        ticks = StreamConsumer(
            client, streams.all_tick_streams(settings.tick_shards), streams.GROUP_EXECUTION,
            consumer_name, market.handle, start="$", batch=500,
        )
        runtime.spawn("ticks", ticks.run)
    runtime.serve_metrics(
        client, lambda: metrics.families(sessions, intents.stats, ticks.stats if ticks else None),
        [streams.INTENTS, streams.EXEC_EVENTS, streams.CONTROL],
    )
    runtime.every("reconcile", 1.0, reconciler.run_once)
    runtime.every("risk-book", 60.0, reconciler.check_risk_book)
    runtime.spawn("outbox", relay.run)
    runtime.after_stop(relay.flush)  # the events of the last batch, committed as the relay stopped
    runtime.announce_ready(client)
    runtime.wait()
