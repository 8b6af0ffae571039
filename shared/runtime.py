"""What every service process shares: logging, signals, clients, and its worker threads.

SIGTERM or SIGINT sets one stop event; each worker finishes the message in hand, acks, and
returns; the process exits when all have. A worker that dies takes the process down (non-zero)
so that a supervisor restarts it, rather than leaving a half-working service.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.logs import configure_logging
from shared.metrics import Families, ScrapeCollector, serve, stream_families
from shared.store.db import make_engine, make_sessions

log = logging.getLogger("ratchet.runtime")

Worker = Callable[[threading.Event], None]


class ServiceRuntime:
    def __init__(
        self, name: str, settings: Settings, idle_in_transaction_s: float | None = None
    ) -> None:
        """``idle_in_transaction_s``: see :func:`shared.store.db.make_engine`."""
        self.name = name
        self.settings = settings
        self._idle_in_transaction_s = idle_in_transaction_s
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._after_stop: list[Callable[[], object]] = []
        self._failed = threading.Event()
        self._engine: Engine | None = None
        configure_logging(name, settings.log_level)

    def install_signals(self) -> None:
        def _on_signal(signum: int, _frame: object) -> None:
            log.info("stopping", extra={"signal": signal.Signals(signum).name})
            self.stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)

    def redis(self) -> Redis:
        return Redis.from_url(
            self.settings.require_redis_url(), socket_timeout=30, health_check_interval=10
        )

    def sessions(self) -> sessionmaker[Session]:
        if self._engine is None:
            self._engine = make_engine(self.settings.require_database_url(),
                                       idle_in_transaction_s=self._idle_in_transaction_s)
        return make_sessions(self._engine)

    def spawn(self, name: str, worker: Worker) -> None:
        def _run() -> None:
            try:
                worker(self.stop)
            except Exception:
                log.exception("worker died", extra={"worker": name})
                self._failed.set()
                self.stop.set()

        thread = threading.Thread(target=_run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def every(self, name: str, seconds: float, task: Callable[[], object]) -> None:
        """Run ``task`` every ``seconds`` until stopped; a failing run is logged, not fatal."""

        def _loop(stop: threading.Event) -> None:
            while not stop.wait(seconds):
                try:
                    task()
                except Exception:
                    log.exception("periodic task failed", extra={"task": name})

        self.spawn(name, _loop)

    def serve_metrics(self, client: Redis, families: Families, stream_names: list[str]) -> None:
        """Serve this service's metrics (read at scrape time) on RATCHET_METRICS_PORT."""
        if not self.settings.metrics_port:
            return
        registry = CollectorRegistry()
        registry.register(ScrapeCollector(families))
        registry.register(ScrapeCollector(lambda: stream_families(client, stream_names)))
        serve(registry, self.settings.metrics_port, self.settings.metrics_host)
        log.info("metrics served", extra={"port": self.settings.metrics_port})

    def announce_ready(self, client: Redis, ttl_s: int = 15) -> None:
        """Tell supervisors (``ratchet run``, probes) that this process is up and working."""
        key = f"ratchet.ready.{self.name}.{self.settings.replica}"

        def _beat() -> None:
            client.set(key, str(os.getpid()), ex=ttl_s)

        _beat()
        self.every("ready", ttl_s / 3, _beat)

    def after_stop(self, task: Callable[[], object]) -> None:
        """Run ``task`` once, after every worker has finished (e.g. publish what the last batch
        committed); a failure is logged."""
        self._after_stop.append(task)

    def wait(self, grace_s: float = 8.0) -> None:
        while not self.stop.is_set():
            self.stop.wait(0.5)
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for task in self._after_stop:
            try:
                task()
            except Exception:
                log.exception("task at stop failed")
        if self._engine is not None:
            self._engine.dispose()
        log.info("stopped", extra={"failed": self._failed.is_set()})
        if self._failed.is_set():
            sys.exit(1)
