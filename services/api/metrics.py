"""Prometheus metrics of the api: request counts and latency by route template.

Each app has its own registry (no global collectors), exposed at ``/metrics``."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ratchet_api_requests_total",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ratchet_api_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/api/v1/candles/{symbol}``), never the raw path,
    so label cardinality stays bounded. FastAPI keeps routes of included routers relative to
    their router and records the full template in its effective route context."""
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    template = getattr(effective, "path_format", None)
    if template is None:
        template = getattr(scope.get("route"), "path_format", None)
    return template if isinstance(template, str) else "<unmatched>"


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # Labelled children by labels: .labels() costs a lock and a lookup per call.
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            key = (scope["method"], route_template(scope))
            counter = self._counters.get((*key, str(status)))
            if counter is None:
                counter = self._counters.setdefault(
                    (*key, str(status)), self.metrics.requests.labels(*key, str(status)))
            timer = self._timers.get(key)
            if timer is None:
                timer = self._timers.setdefault(key, self.metrics.latency.labels(*key))
            counter.inc()
            timer.observe(elapsed)
