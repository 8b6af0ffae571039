"""Fixtures of the api tests: an app on the session's real Redis and Postgres (tests/conftest.py),
a client, and keys of each role."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from shared.auth import Role, create_api_key
from shared.config import Settings, load_settings


@pytest.fixture
def api_settings(redis_url: str, database_url: str) -> Settings:
    # A high limit: tests make many calls with one key; test_rate_limit sets its own.
    return load_settings(
        redis_url=redis_url, database_url=database_url, api={"rate_limit_per_minute": 100_000}
    )


@pytest.fixture
def client(
    api_settings: Settings,
    engine: Engine,
    redis_client: redis.Redis,
    sessions: sessionmaker[Session],
) -> Iterator[TestClient]:
    app = create_app(api_settings, engine=engine, redis=redis_client)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def make_key(sessions: sessionmaker[Session]) -> Callable[..., str]:
    def make(role: Role | str = Role.VIEWER, name: str = "test", **kwargs: object) -> str:
        with sessions.begin() as session:
            return create_api_key(session, name, role, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def viewer_key(make_key: Callable[..., str]) -> str:
    return make_key(Role.VIEWER, "viewer")


@pytest.fixture
def trader_key(make_key: Callable[..., str]) -> str:
    return make_key(Role.TRADER, "trader")


@pytest.fixture
def admin_key(make_key: Callable[..., str]) -> str:
    return make_key(Role.ADMIN, "admin")
