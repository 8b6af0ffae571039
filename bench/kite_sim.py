"""Benchmark: ticks per second the Kite simulator pushes to one real ``KiteTicker`` client.

The simulator runs as its own process with a fast market loop (a step every millisecond, a tick
per instrument per step); the client, also its own process (Twisted's reactor), subscribes to every
instrument and counts the ticks its own parser delivers to ``on_ticks`` over a fixed window.
``run()`` returns ``[("kite_sim_ticks_per_s", value, "ticks/s"), ...]``; run this file directly
to print the figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API_KEY, API_SECRET = "benchkey", "benchsecret"
SYMBOLS = 200
WARMUP_S, WINDOW_S = 1.5, 4.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post_form(url: str, form: dict[str, str]) -> dict[str, object]:
    data = "&".join(f"{k}={v}" for k, v in form.items()).encode()
    req = urllib.request.Request(url, data=data, headers={"X-Kite-Version": "3"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read())["data"])


def _get(url: str, token: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"token {API_KEY}:{token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return bytes(resp.read())


def _client(port: int, token: str, tokens: list[int], mode: str) -> float:
    """Run in the client process: count parsed ticks over the window, return ticks/s."""
    from kiteconnect import KiteTicker

    count = [0]
    kws = KiteTicker(API_KEY, token, root=f"ws://127.0.0.1:{port}/ws")

    def on_ticks(ws: object, ticks: list[object]) -> None:
        count[0] += len(ticks)

    def on_connect(ws: KiteTicker, response: object) -> None:
        ws.subscribe(tokens)
        ws.set_mode(mode, tokens)

    kws.on_ticks, kws.on_connect = on_ticks, on_connect
    kws.connect(threaded=True)
    time.sleep(WARMUP_S)
    start_count, start = count[0], time.monotonic()
    time.sleep(WINDOW_S)
    return (count[0] - start_count) / (time.monotonic() - start)


def measure(mode: str) -> float:
    port = _free_port()
    with tempfile.TemporaryDirectory() as state:
        server = subprocess.Popen(
            [sys.executable, "-m", "shared.kite", "--port", str(port), "--api-key", API_KEY,
             "--api-secret", API_SECRET, "--state-dir", state, "--symbols", str(SYMBOLS),
             "--tick-interval", "0.001", "--speed", "1", "--start-day", "2025-01-06"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            root = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{root}/_sim/state", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("kite simulator did not start") from None
                    time.sleep(0.1)
            checksum = hashlib.sha256(f"{API_KEY}bench{API_SECRET}".encode()).hexdigest()
            session = _post_form(f"{root}/session/token", {
                "api_key": API_KEY, "request_token": "bench", "checksum": checksum})
            token = str(session["access_token"])
            csv = _get(f"{root}/instruments", token).decode().splitlines()[1:]
            tokens = [int(line.split(",")[0]) for line in csv]
            out = subprocess.run(
                [sys.executable, __file__, "--client", str(port), token, mode,
                 ",".join(map(str, tokens))],
                cwd=ROOT, capture_output=True, text=True, timeout=120,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            return float(out.stdout.strip().splitlines()[-1])
        finally:
            server.terminate()
            server.wait(timeout=20)


def run() -> list[tuple[str, float, str]]:
    return [("kite_sim_ticks_per_s", round(measure("full")), "ticks/s"),
            ("kite_sim_ticks_per_s_quote", round(measure("quote")), "ticks/s")]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port_s, token_s, mode_s, tokens_s = sys.argv[2:6]
        print(_client(int(port_s), token_s, [int(t) for t in tokens_s.split(",")], mode_s))
        os._exit(0)  # the reactor thread is not joinable
    for name, value, unit in run():
        print(f"{name}: {value:,.0f} {unit}")
