"""Run the api: ``main(settings)`` serves :func:`create_app` with uvicorn until SIGTERM/SIGINT.

uvicorn handles the signals: it stops accepting connections, lets requests in flight finish (at
most ``GRACEFUL_S`` seconds), runs the app's shutdown (closing Postgres and Redis), then returns.
"""

from __future__ import annotations

import logging
from types import FrameType

import uvicorn

from shared.config import Settings

from .app import create_app

GRACEFUL_S = 10

log = logging.getLogger("ratchet.api")


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would end the process
    before the caller's own cleanup runs; here :func:`main` returns instead."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def main(settings: Settings) -> None:
    """Serve the api on ``settings.api_host:api_port``; returns after a graceful shutdown."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # the process's logging setup (JSON lines) stays in charge
        access_log=False,  # /metrics counts requests; an access line per request costs latency
        timeout_graceful_shutdown=GRACEFUL_S,
        server_header=False,
        proxy_headers=False,
        # The live feed fans one message out to many clients: compressing it per client would
        # cost the server a zlib pass per client per message (and JSON ticks are small).
        ws_per_message_deflate=False,
    )
    log.info("api listening on %s:%s", settings.api_host, settings.api_port)
    _Server(config).run()


if __name__ == "__main__":
    from shared.config import load_settings

    logging.basicConfig(level=logging.INFO)
    main(load_settings())
