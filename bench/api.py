"""Benchmark of GET /api/v1/positions with 100 open legs (DESIGN.md §7; targets: >= 1,000 req/s
and p99 < 25 ms on 2 cores).

It starts a Redis and a PostgreSQL of its own (ratchet.servers), seeds 100 open legs on 34 symbols
with their LTPs, starts the api as a separate process (``python -m services.api.main``) and loads
it from other processes: ``wrk`` when it is installed, else this file's own keep-alive HTTP/1.1
load generator (asyncio, raw sockets, several processes). Everything listens on 127.0.0.1 and every
loop is bounded in time.

``run()`` returns ``[(name, value, unit), ...]``; ``python bench/api.py`` prints them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PATH = "/api/v1/positions"
LEGS = 100
CONNECTIONS = 8  # in all, across the load processes (8 dashboards polling back to back)
LOAD_PROCESSES = 2
WARMUP_S = 2.0
DURATION_S = 10.0


# --- load generator (runs in its own process) ---------------------------------------------------


async def _connection(
    port: int, request: bytes, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if match is None:
                raise RuntimeError("response without content-length")
            await reader.readexactly(int(match.group(1)))
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(int(head[9:12]))
    finally:
        writer.close()


async def _load(port: int, key: str, connections: int, seconds: float) -> dict[str, object]:
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {key}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(port, request, deadline, latencies, errors) for _ in range(connections))
    )
    return {"latencies": latencies, "errors": len(errors), "elapsed": time.perf_counter() - started}


def _load_main(argv: list[str]) -> None:
    port, key, connections, seconds = int(argv[0]), argv[1], int(argv[2]), float(argv[3])
    result = asyncio.run(_load(port, key, connections, seconds))
    sys.stdout.write(json.dumps(result))


def _python_load(port: int, key: str, seconds: float) -> tuple[float, float, int]:
    per_process = max(1, CONNECTIONS // LOAD_PROCESSES)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--load", str(port), key, str(per_process), str(seconds)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        for _ in range(LOAD_PROCESSES)
    ]
    latencies: list[float] = []
    errors = 0
    elapsed = 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        result = json.loads(out)
        latencies.extend(result["latencies"])
        errors += result["errors"]
        elapsed = max(elapsed, result["elapsed"])
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return len(latencies) / elapsed, p99 * 1000, errors


def _wrk_load(wrk: str, port: int, key: str, seconds: float) -> tuple[float, float, int]:
    out = subprocess.run(
        [wrk, f"-t{LOAD_PROCESSES}", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--latency",
         "-H", f"X-API-Key: {key}", f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return rps, p99_ms, int(non_2xx.group(1)) if non_2xx else 0


# --- setup ---------------------------------------------------------------------------------------


def _seed(database_url: str, redis_url: str) -> str:
    import orjson
    import redis
    from sqlalchemy.orm import Session

    from shared.auth import Role, create_api_key
    from shared.contracts.streams import LTP_HASH
    from shared.store.db import make_engine
    from shared.store.models import Ladder, Trade

    engine = make_engine(database_url)
    client = redis.Redis.from_url(redis_url)
    t0 = datetime(2025, 1, 2, 4, 0, tzinfo=UTC)
    legs = 0
    with Session(engine) as session, session.begin():
        symbol_no = 0
        while legs < LEGS:
            symbol = f"SYM{symbol_no:03d}"
            ladder_id = f"momentum:NSE:{symbol}:{symbol_no}"
            session.add(Ladder(id=ladder_id, strategy="momentum", exchange="NSE", symbol=symbol,
                               signal_bar=t0, phase="ACTIVE", opened_at=t0))
            session.flush()
            for leg in range(1, 4):
                if legs == LEGS:
                    break
                entry = Decimal(100 + symbol_no)
                session.add(Trade(
                    trade_id=f"{ladder_id}:{leg}", ladder_id=ladder_id, symbol=symbol,
                    exchange="NSE", position_number=leg, qty=10, entry_price=entry,
                    entry_time=t0, stop_loss=entry * Decimal("0.975"),
                    initial_stop=entry * Decimal("0.975"),
                    target=entry * Decimal("1.05") if leg == 1 else None,
                    highest_price=entry, status="OPEN",
                ))
                legs += 1
            client.hset(LTP_HASH, f"NSE:{symbol}", orjson.dumps(
                {"token": 1000 + symbol_no, "price": (101 + symbol_no) * 100,
                 "ts_ms": 1_735_790_400_000, "volume": 1}))
            symbol_no += 1
        key = create_api_key(session, "bench", Role.VIEWER)
    client.close()
    engine.dispose()
    return key


def run() -> list[tuple[str, float, str]]:
    sys.path.insert(0, str(ROOT))
    from bench.servers import wait_api_ready
    from ratchet.servers import EmbeddedPostgres, EmbeddedRedis, free_port
    from shared.store.migrate import upgrade

    base = Path(tempfile.mkdtemp(prefix="ratchet-bench-api-"))
    redis_server = EmbeddedRedis(base / "redis")
    postgres = EmbeddedPostgres(base / "pg")
    api: subprocess.Popen[bytes] | None = None
    try:
        redis_server.start()
        postgres.start()
        upgrade(postgres.url)
        key = _seed(postgres.url, redis_server.url)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RATCHET_")}
        env.update(
            RATCHET_REDIS_URL=redis_server.url,
            RATCHET_DATABASE_URL=postgres.url,
            RATCHET_API_PORT=str(port),
            RATCHET_API__RATE_LIMIT_PER_MINUTE="100000000",  # measure the path, not the limiter
            RATCHET_LOG_LEVEL="WARNING",
            PYTHONPATH=str(ROOT),
        )
        api = subprocess.Popen([sys.executable, "-m", "services.api.main"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_api_ready(port, api)
        wrk = shutil.which("wrk")
        load = (lambda s: _wrk_load(wrk, port, key, s)) if wrk else (
            lambda s: _python_load(port, key, s))
        load(WARMUP_S)
        server = psutil.Process(api.pid)
        cpu_before = server.cpu_times()
        rps, p99_ms, errors = load(DURATION_S)
        cpu_after = server.cpu_times()
        if errors:
            raise RuntimeError(f"{errors} responses were not 200")
        cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        return [
            ("api_positions_rps", round(rps, 1), "req/s"),
            ("api_positions_p99_ms", round(p99_ms, 2), "ms"),
            # The api process's CPU per request: steadier than the two above on a shared machine.
            ("api_positions_cpu_ms", round(cpu_s * 1000 / max(1.0, rps * DURATION_S), 3), "ms"),
        ]
    finally:
        if api is not None and api.poll() is None:
            api.terminate()
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                api.kill()
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        _load_main(sys.argv[2:])
    else:
        for name, value, unit in run():
            print(f"{name} {value} {unit}")
