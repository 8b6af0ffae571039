"""Real Redis and Postgres for a benchmark run (embedded, in a temporary folder)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

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


def wait_api_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until an api process started for a benchmark answers /readyz."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the api process exited during start")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the api did not become ready")
