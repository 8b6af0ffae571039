"""Session-wide real servers: one Redis and one PostgreSQL for the whole test run.

Tests that touch them take ``redis_client`` / ``sessions``; each such test starts from an empty
Redis and empty tables (fast: FLUSHALL and one TRUNCATE), so tests never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from ratchet.servers import EmbeddedPostgres, EmbeddedRedis
from shared.store.db import make_engine, make_sessions
from shared.store.migrate import upgrade
from shared.store.models import Base


def private_dir(prefix: str) -> Path:
    """A fresh folder outside pytest's tmp root: pytest resets that root to mode 0700 whenever a
    session starts, which would lock out PostgreSQL running as an unprivileged user."""
    return Path(tempfile.mkdtemp(prefix=prefix))


# CI replays the same examples every run (a red CI then means a change broke something);
# local runs explore new ones.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    path = private_dir("ratchet-test-servers-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_redis(servers_dir: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(servers_dir / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embedded_postgres(servers_dir: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(servers_dir / "pg").start()
    upgrade(server.url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(embedded_redis: EmbeddedRedis) -> str:
    return embedded_redis.url


@pytest.fixture(scope="session")
def database_url(embedded_postgres: EmbeddedPostgres) -> str:
    return embedded_postgres.url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return make_sessions(engine)


@pytest.fixture
def service_env(redis_url: str, database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a service started as a subprocess against the session's servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATCHET_")}
    env.update(
        RATCHET_REDIS_URL=redis_url,
        RATCHET_DATABASE_URL=database_url,
        RATCHET_HOME=str(tmp_path / "home"),
        PYTHONUNBUFFERED="1",
    )
    return env
