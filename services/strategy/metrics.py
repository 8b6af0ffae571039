"""Strategy's metrics: events handled, intents sent, ladders and open legs."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from services.strategy.service import StrategyService
from shared.bus.consumer import ConsumerStats
from shared.metrics import counter, gauge


def families(service: StrategyService, consumer: ConsumerStats) -> Iterable[Metric]:
    ladders = service.engine.ladders()
    return [
        counter("ratchet_strategy_messages",
                "Stream entries handled (tick frames, candles, events)", consumer.handled),
        counter("ratchet_strategy_handler_failures", "Handler failures (retried, then parked)",
                consumer.failed),
        counter("ratchet_intents", "Intents committed to the outbox", service.intents_sent),
        gauge("ratchet_ladders_active", "Ladders with a pending or open leg", len(ladders)),
        gauge("ratchet_legs_open", "Open legs", sum(len(ladder.open_legs()) for ladder in ladders)),
        gauge("ratchet_strategy_enabled", "1 when new entries are allowed", int(service.enabled)),
    ]
