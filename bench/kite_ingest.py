"""kite_ingest_ticks_per_s: the marketdata service on the ``kite-sim`` feed, end to end.

Binary full-mode frames from the simulator (its own process, a market step every millisecond for
200 instruments, 600x so bars close every 1.5 s) go through the real ``KiteTicker`` of
``ratchet service marketdata`` (its own process) into the ingestor: the tick stream, the LTP
store, 15-minute candles with EMAs and ``ohlcv`` in a real Redis and Postgres. The figure is the
ticks the service ingested per second over a fixed window after its warm-up, read from its status
hash; candles must close during the window. Kite itself sends about 9-18k ticks/s per key.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from kiteconnect import KiteConnect

from bench.servers import embedded_servers
from ratchet.servers import free_port
from shared.broker_tokens import KEY_ENV, TokenStore, new_key
from shared.contracts import streams
from shared.store.db import make_engine, make_sessions

ROOT = Path(__file__).resolve().parents[1]
API_KEY, API_SECRET = "benchkey", "benchsecret"
SYMBOLS = 200
WARMUP_S, WINDOW_S = 3.0, 8.0


def _wait(predicate, timeout: float, what: str, service: Service | None = None) -> None:  # noqa: ANN001
    """Poll ``predicate``; fail at once, with the service's last words, if it dies meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if service is not None and service.process.poll() is not None:
            raise RuntimeError(f"the marketdata service died waiting for {what}: {service.said()}")
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    log: Path

    def said(self) -> str:
        return self.log.read_text(errors="replace")[-600:]


def _ticks(client: redis.Redis) -> int:
    return int(client.hget("md.kite", "ticks") or 0)


def run() -> list[tuple[str, float, str]]:
    with embedded_servers() as (redis_url, database_url), tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        root = f"http://127.0.0.1:{port}"
        sim = subprocess.Popen(
            [sys.executable, "-m", "shared.kite", "--port", str(port), "--api-key", API_KEY,
             "--api-secret", API_SECRET, "--state-dir", str(Path(tmp) / "sim"),
             "--symbols", str(SYMBOLS), "--tick-interval", "0.001", "--speed", "600",
             "--start-day", "2025-01-06", "--historical-rate", "0"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        service: Service | None = None
        engine = make_engine(database_url, pool_size=1)
        client = redis.Redis.from_url(redis_url)
        try:
            _wait(lambda: _up(root), 30, "the simulator")
            key = new_key()
            token = KiteConnect(API_KEY, root=root).generate_session("bench", API_SECRET)
            TokenStore(make_sessions(engine), key).save(API_KEY, token["access_token"], "SIM001")
            env = {k: v for k, v in os.environ.items() if not k.startswith("RATCHET_")}
            env.update({"RATCHET_REDIS_URL": redis_url, "RATCHET_DATABASE_URL": database_url,
                        "RATCHET_HOME": str(Path(tmp) / "home"), "RATCHET_FEED": "kite-sim",
                        "RATCHET_KITE_ROOT": root,
                        "RATCHET_KITE_WS_ROOT": f"ws://127.0.0.1:{port}/ws",
                        "RATCHET_KITE_API_KEY": API_KEY, "RATCHET_KITE_API_SECRET": API_SECRET,
                        "RATCHET_LOG_LEVEL": "WARNING",
                        KEY_ENV: key})
            log_path = Path(tmp) / "marketdata.log"
            with log_path.open("wb") as log_file:
                service = Service(subprocess.Popen(
                    [sys.executable, "-m", "ratchet.cli", "service", "marketdata"], cwd=ROOT,
                    env=env, stdout=subprocess.DEVNULL, stderr=log_file), log_path)
            # The warm-up asks history at Kite's own limit (3 requests/s, which the settings
            # enforce), so SYMBOLS tokens take a minute or more; it is not measured.
            _wait(lambda: client.hget("md.kite", "pending") == b"0", 400, "the feed's warm-up",
                  service)
            time.sleep(WARMUP_S)
            candles0, ticks0, t0 = client.xlen(streams.CANDLES), _ticks(client), time.monotonic()
            time.sleep(WINDOW_S)
            ticks1, t1 = _ticks(client), time.monotonic()
            candles = client.xlen(streams.CANDLES) - candles0
            if candles < SYMBOLS:
                raise RuntimeError(f"only {candles} candles closed in the window")
            if service.process.poll() is not None:
                raise RuntimeError(f"the marketdata service died: {service.said()}")
            return [("kite_ingest_ticks_per_s", (ticks1 - ticks0) / (t1 - t0), "ticks/s")]
        finally:
            for proc in (service.process if service else None, sim):
                if proc is not None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            client.close()
            engine.dispose()


def _up(root: str) -> bool:
    try:
        return httpx.get(f"{root}/_sim/state", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value:,.0f} {unit}")
