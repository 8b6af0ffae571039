"""Execution's metrics, from its own records: orders by state, rejections by guard, GTTs by
state, active halts, and the intents and ticks it consumed."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.bus.consumer import ConsumerStats
from shared.metrics import counter, labelled
from shared.store.models import Gtt, HaltRecord, Order


def families(sessions: sessionmaker[Session], intents: ConsumerStats,
             ticks: ConsumerStats | None) -> Iterable[Metric]:
    with sessions() as session:
        by_state: dict[str, float] = dict(session.execute(
            select(Order.state, func.count()).group_by(Order.state)).all())
        guards: dict[str, float] = dict(session.execute(
            select(func.substr(Order.reason, 8), func.count())
            .where(Order.reason.like("guard: %")).group_by(Order.reason)).all())
        gtts: dict[str, float] = dict(session.execute(
            select(Gtt.state, func.count()).group_by(Gtt.state)).all())
        halts: dict[str, float] = dict(session.execute(
            select(HaltRecord.kind, func.count()).where(HaltRecord.active.is_(True))
            .group_by(HaltRecord.kind)).all())
    out = [
        labelled(GaugeMetricFamily, "ratchet_orders", "Orders by state", "state", by_state),
        labelled(CounterMetricFamily, "ratchet_rejections", "Orders refused, by guard", "guard",
                 guards),
        labelled(GaugeMetricFamily, "ratchet_gtts", "GTTs by state", "state", gtts),
        labelled(GaugeMetricFamily, "ratchet_halts_active", "Active halts, by kind", "kind", halts),
        counter("ratchet_execution_intents", "Intent entries handled", intents.handled),
    ]
    if ticks is not None:
        out.append(counter("ratchet_execution_ticks", "Tick frames applied to paper GTTs",
                           ticks.handled))
    return out
