"""Marketdata's metrics: ticks, frames, rejected ticks by reason, candles closed, feed lag."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, Metric

from services.marketdata.ingest import IngestStats
from shared.metrics import counter, gauge, labelled, seconds_since


def families(stats: IngestStats) -> Iterable[Metric]:
    return [
        counter("ratchet_ticks", "Ticks accepted from the feed", stats.ticks),
        counter("ratchet_frames", "Feed frames ingested", stats.frames),
        labelled(CounterMetricFamily, "ratchet_ticks_rejected", "Ticks dropped, by reason",
                 "reason", {"malformed": stats.rejected, "unknown_instrument": stats.unknown,
                            "late_or_outside_session": stats.late}),
        counter("ratchet_candles_closed", "Candles closed and published", stats.candles),
        gauge("ratchet_feed_lag_seconds", "Seconds since the last feed frame",
              seconds_since(stats.last_frame_wall)),
    ]
