"""Benchmark of the WebSocket fan-out (issue 7; target: >= 10,000 ticks/s delivered to 100
clients).

It starts a Redis and a PostgreSQL of its own, the api as a separate process
(``python -m services.api.main``, as deployed), and 100 WebSocket clients in two other processes,
each subscribed to every tick. A publisher writes feed frames into ``md.ticks.0`` the way
marketdata does (one entry a frame, 50 ticks a frame, like the sim's 50 symbols) at a fixed rate;
each tick carries its publish time, so the clients also measure how late it arrives.

Figures: ``ws_fanout_msgs_per_s`` (ticks delivered per second, summed over the 100 clients),
``ws_fanout_frames_per_s`` (WebSocket messages per second over all clients: a message holds a
frame's ticks), ``ws_fanout_p99_ms`` (publish to receipt) and ``ws_fanout_single_msgs_per_s``
(the same with one tick a frame, so every tick is its own WebSocket message), and
``ws_fanout_dropped_clients`` (clients closed as too slow: 0 when the fan-out keeps up).
``python bench/ws.py`` prints them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 100
CLIENT_PROCESSES = 2
SYMBOLS = 50
WARMUP_S = 2.0
DURATION_S = 8.0
FRAMED_FRAMES_PER_S = 100.0  # x 50 ticks: a busy feed (the sim at 900x sends 3,000 ticks/s)
SINGLE_FRAMES_PER_S = 300.0


# --- clients (each process runs CLIENTS / CLIENT_PROCESSES of them) ------------------------------


async def _client(url: str, start: float, end: float, totals: dict[str, int],
                  latencies: list[float]) -> None:
    import orjson
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None, compression=None, open_timeout=30) as ws:
        await ws.send(orjson.dumps({"action": "subscribe", "channels": ["ticks"]}).decode())
        sample = 0
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.1, end + 1 - time.time()))
            except TimeoutError:
                return
            now = time.time()
            if now >= end:
                return
            message = orjson.loads(raw)
            if message["channel"] != "ticks" or now < start:
                continue
            ticks = message["data"]["ticks"]
            totals["ticks"] += len(ticks)
            totals["messages"] += 1
            sample += 1
            if sample % 20 == 0:
                latencies.append(now - ticks[0]["ts_ms"] / 1000)


async def _clients(url: str, count: int, start: float, end: float) -> dict[str, object]:
    totals = {"ticks": 0, "messages": 0}
    latencies: list[float] = []
    results = await asyncio.gather(
        *(_client(url, start, end, totals, latencies) for _ in range(count)),
        return_exceptions=True)
    from websockets.exceptions import ConnectionClosed

    dropped = sum(isinstance(r, ConnectionClosed) for r in results)
    errors = [repr(r) for r in results
              if isinstance(r, BaseException) and not isinstance(r, ConnectionClosed)]
    return {**totals, "latencies": latencies, "errors": errors, "dropped": dropped}


def _clients_main(argv: list[str]) -> None:
    url, count, start, end = argv[0], int(argv[1]), float(argv[2]), float(argv[3])
    sys.stdout.write(json.dumps(asyncio.run(_clients(url, count, start, end))))


# --- publisher -----------------------------------------------------------------------------------


def _publish(redis_url: str, ticks_per_frame: int, frames_per_s: float, until: float,
             stop: threading.Event) -> int:
    import redis

    from shared.contracts import streams
    from shared.contracts.messages import FIELD, encode_ticks

    client = redis.Redis.from_url(redis_url)
    stream = streams.ticks_stream(0)
    interval = 1 / frames_per_s
    sent = 0
    next_at = time.time()
    while not stop.is_set() and time.time() < until:
        now_ms = int(time.time() * 1000)
        ticks = [{"token": 1000 + i, "symbol": f"SYM{i:03d}", "exchange": "NSE", "ts_ms": now_ms,
                  "price": 100_00 + (sent + i) % 500, "volume": sent}
                 for i in range(ticks_per_frame)]
        data = encode_ticks(ticks, msg_id=f"bench:{sent}", ts_ms=now_ms, source="bench")
        client.xadd(stream, {FIELD: data}, maxlen=10_000, approximate=True)
        sent += 1
        next_at += interval
        delay = next_at - time.time()
        if delay > 0:
            time.sleep(delay)
    client.close()
    return sent


# --- one run -------------------------------------------------------------------------------------


def _measure(port: int, key: str, redis_url: str, ticks_per_frame: int,
             frames_per_s: float) -> dict[str, float]:
    url = f"ws://127.0.0.1:{port}/api/v1/ws?key={key}"
    connect_s = 5.0
    start = time.time() + connect_s + WARMUP_S
    end = start + DURATION_S
    per_process = CLIENTS // CLIENT_PROCESSES
    procs = [
        subprocess.Popen([sys.executable, __file__, "--clients", url, str(per_process),
                          str(start), str(end)], stdout=subprocess.PIPE, cwd=ROOT)
        for _ in range(CLIENT_PROCESSES)
    ]
    time.sleep(connect_s)
    stop = threading.Event()
    try:
        _publish(redis_url, ticks_per_frame, frames_per_s, end + 0.5, stop)
    finally:
        stop.set()
    ticks = messages = dropped = 0
    latencies: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=DURATION_S + 60)
        result = json.loads(out)
        if result["errors"]:
            raise RuntimeError(f"clients failed: {result['errors'][:3]}")
        dropped += result["dropped"]
        ticks += result["ticks"]
        messages += result["messages"]
        latencies.extend(result["latencies"])
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    expected = CLIENTS * ticks_per_frame * frames_per_s
    return {"ticks_per_s": ticks / DURATION_S, "messages_per_s": messages / DURATION_S,
            "p99_ms": p99 * 1000, "delivered_share": ticks / DURATION_S / expected,
            "dropped": dropped}


def run() -> list[tuple[str, float, str]]:
    sys.path.insert(0, str(ROOT))
    from bench.servers import wait_api_ready
    from ratchet.servers import EmbeddedPostgres, EmbeddedRedis, free_port
    from shared.auth import Role, create_api_key
    from shared.store.db import make_engine, make_sessions
    from shared.store.migrate import upgrade

    base = Path(tempfile.mkdtemp(prefix="ratchet-bench-ws-"))
    redis_server = EmbeddedRedis(base / "redis")
    postgres = EmbeddedPostgres(base / "pg")
    api: subprocess.Popen[bytes] | None = None
    try:
        redis_server.start()
        postgres.start()
        upgrade(postgres.url)
        engine = make_engine(postgres.url)
        with make_sessions(engine).begin() as session:
            key = create_api_key(session, "bench", Role.VIEWER)
        engine.dispose()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RATCHET_")}
        env.update(
            RATCHET_REDIS_URL=redis_server.url,
            RATCHET_DATABASE_URL=postgres.url,
            RATCHET_API_PORT=str(port),
            RATCHET_API__RATE_LIMIT_PER_MINUTE="100000000",
            RATCHET_LOG_LEVEL="WARNING",
            PYTHONPATH=str(ROOT),
        )
        api = subprocess.Popen([sys.executable, "-m", "services.api.main"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_api_ready(port, api)
        # Frames of 50 ticks, 100 a second: 5,000 ticks/s in, 500,000 ticks/s to deliver.
        framed = _measure(port, key, redis_server.url, SYMBOLS, FRAMED_FRAMES_PER_S)
        # One tick a frame, 300 a second: 30,000 WebSocket messages/s to deliver.
        single = _measure(port, key, redis_server.url, 1, SINGLE_FRAMES_PER_S)
        for name, result in (("framed", framed), ("single", single)):
            if result["delivered_share"] < 0.95:
                print(f"[bench] ws {name}: only {result['delivered_share']:.0%} of the ticks "
                      "were delivered in the window", file=sys.stderr)
        return [
            ("ws_fanout_msgs_per_s", round(framed["ticks_per_s"]), "ticks/s"),
            ("ws_fanout_frames_per_s", round(framed["messages_per_s"]), "msgs/s"),
            ("ws_fanout_p99_ms", round(framed["p99_ms"], 1), "ms"),
            ("ws_fanout_single_msgs_per_s", round(single["messages_per_s"]), "msgs/s"),
            ("ws_fanout_single_p99_ms", round(single["p99_ms"], 1), "ms"),
            ("ws_fanout_dropped_clients", framed["dropped"] + single["dropped"], "clients"),
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
    if len(sys.argv) > 1 and sys.argv[1] == "--clients":
        _clients_main(sys.argv[2:])
    else:
        for name, value, unit in run():
            print(f"{name} {value} {unit}")
