"""Prometheus metrics for the worker services, read at scrape time.

Hot paths keep plain counters in their own stats objects; a collector turns them (and a look at
Redis and Postgres) into metric families only when Prometheus asks, so metrics cost nothing per
tick. Each service has its own registry and serves it on ``RATCHET_METRICS_PORT`` (0 = off).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.contracts import streams

Families = Callable[[], Iterable[Metric]]


class ScrapeCollector(Collector):
    """Builds metric families from a function called at each scrape."""

    def __init__(self, families: Families) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return list(self.families())


def counter(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def labelled(kind: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str, doc: str,
             label: str, values: Mapping[str, float]) -> Metric:
    family = kind(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def stream_families(client: redis.Redis, names: Sequence[str]) -> Iterable[Metric]:
    """Length of each stream, and per consumer group its pending entries and lag (entries not
    yet delivered; computed from the last delivered id, as Redis 6.2 reports no lag)."""
    length = GaugeMetricFamily("ratchet_stream_length", "Entries in a stream", labels=["stream"])
    pending = GaugeMetricFamily("ratchet_stream_pending", "Delivered, not yet acked",
                                labels=["stream", "group"])
    lag = GaugeMetricFamily("ratchet_stream_lag", "Entries not yet delivered to the group",
                            labels=["stream", "group"])
    for name in [*names, streams.DEAD_LETTERS]:
        if not client.exists(name):
            continue
        size = client.xlen(name)
        length.add_metric([name], size)
        for group in client.xinfo_groups(name):
            group_name = _s(group["name"])
            pending.add_metric([name, group_name], group["pending"])
            behind = client.xlen(name) if group["last-delivered-id"] in (b"0-0", "0-0") else len(
                client.xrange(name, min=f"({_s(group['last-delivered-id'])}", count=10_000) or [])
            lag.add_metric([name, group_name], behind)
    return [length, pending, lag]


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> None:
    """Expose the registry on http://host:port/metrics (a daemon thread)."""
    if port:
        start_http_server(port, addr=host, registry=registry)


def seconds_since(wall_time: float) -> float:
    return max(time.time() - wall_time, 0.0) if wall_time else float("nan")


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
