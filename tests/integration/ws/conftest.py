"""Fixtures of the WebSocket tests: the api served by a real uvicorn (in a thread, on the session's
Redis and Postgres), so that sockets, buffers and backpressure are real, and keys of each role."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ratchet.servers import free_port
from services.api.app import create_app
from services.api.hub import Hub, HubOptions
from shared.auth import Role, create_api_key
from shared.config import load_settings

QUEUE_LIMIT = 50
READ_COUNT = 10


@dataclass
class LiveApi:
    app: FastAPI
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    @property
    def hub(self) -> Hub:
        return self.app.state.hub  # type: ignore[no-any-return]


@pytest.fixture
def live_api(
    redis_url: str,
    database_url: str,
    engine: Engine,
    redis_client: redis.Redis,
    sessions: sessionmaker[Session],
) -> Iterator[LiveApi]:
    settings = load_settings(
        redis_url=redis_url, database_url=database_url, api={"rate_limit_per_minute": 100_000}
    )
    app = create_app(
        settings, engine=engine, redis=redis_client,
        hub_options=HubOptions(queue_limit=QUEUE_LIMIT, read_count=READ_COUNT, watch_interval_s=0.2,
                               block_ms=200),
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                            ws_per_message_deflate=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    time.sleep(0.3)  # let the hub read where the streams end before a test publishes
    try:
        yield LiveApi(app, port)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def make_key(sessions: sessionmaker[Session]) -> Callable[..., str]:
    def make(role: Role | str = Role.VIEWER, name: str = "test") -> str:
        with sessions.begin() as session:
            return create_api_key(session, name, role)

    return make


@pytest.fixture
def viewer_key(make_key: Callable[..., str]) -> str:
    return make_key(Role.VIEWER, "viewer")
