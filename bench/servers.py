"""Real Redis and Postgres for a benchmark run (embedded, in a temporary folder)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ratchet.servers import EmbeddedPostgres, EmbeddedRedis
from shared.store.migrate import upgrade


@contextmanager
def embedded_servers() -> Iterator[tuple[str, str]]:
    """Yield (redis_url, database_url) of fresh, migrated servers; removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="ratchet-bench-"))
    redis_server = EmbeddedRedis(base / "redis").start()
    pg = EmbeddedPostgres(base / "pg").start()
    try:
        upgrade(pg.url)
        yield redis_server.url, pg.url
    finally:
        pg.stop()
        redis_server.stop()
        shutil.rmtree(base, ignore_errors=True)
