"""Start the Kite simulator as a process and talk to it: SDK client, admin calls, fixtures."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from kiteconnect import KiteConnect

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).with_name("fixtures")
API_KEY = "simkey"
API_SECRET = "simsecret"
START_DAY = "2025-01-06"  # a Monday


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())["response"]


class SimProcess:
    """``python -m shared.kite`` on a free port with a paused clock (tests move time)."""

    def __init__(self, state_dir: Path, *extra: str, port: int | None = None) -> None:
        self.state_dir = state_dir
        self.extra = extra
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = [sys.executable, "-m", "shared.kite", "--port", str(self.port),
                "--api-key", API_KEY, "--api-secret", API_SECRET,
                "--state-dir", str(self.state_dir), "--start-day", START_DAY, "--paused",
                *self.extra]
        log = open(self.state_dir.with_suffix(".log"), "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited: {self.state_dir.with_suffix('.log')}")
            try:
                if httpx.get(f"{self.root}/_sim/state", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("simulator did not start")

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = httpx.request(method, f"{self.root}/_sim{path}", json=body, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def set_price(self, symbol: str, price: float) -> Any:
        return self.admin("POST", "/price", {"symbol": symbol, "price": price})

    def kite(self, timeout: float = 7) -> KiteConnect:
        k = KiteConnect(API_KEY, root=self.root, timeout=timeout)
        k.generate_session(f"req{time.monotonic_ns()}", API_SECRET)
        return k

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)


def assert_shape(expected: Any, actual: Any, path: str = "") -> None:
    """Every field of Kite's example is present with a compatible type (null: any value)."""
    if expected is None:
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        missing = set(expected) - set(actual)
        assert not missing, f"{path}: missing fields {sorted(missing)}"
        for key, value in expected.items():
            assert_shape(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: {actual!r} is not a list"
        if expected and actual:
            for item in actual:
                assert_shape(expected[0], item, f"{path}[]")
    elif isinstance(expected, bool):
        assert isinstance(actual, bool), f"{path}: {actual!r} is not a bool"
    elif isinstance(expected, (int, float)):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), (
            f"{path}: {actual!r} is not a number")
    elif isinstance(expected, str):
        # the SDK turns 19-character timestamps into datetimes; Kite may send null for strings
        assert actual is None or isinstance(actual, (str, dt.datetime)), (
            f"{path}: {actual!r} is not a string")


class TickerClient:
    """Drives ``kite_ticker_client.py`` (a real ``KiteTicker``) and collects its events."""

    def __init__(self, sim: SimProcess, access_token: str, *flags: str) -> None:
        script = Path(__file__).with_name("kite_ticker_client.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(sim.port), API_KEY, access_token, *flags],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.events: list[dict[str, Any]] = []
        import threading

        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, pred: Any, timeout: float = 20.0, start: int = 0) -> dict[str, Any]:
        """The first event (from index ``start``) matching ``pred``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events[start:]:
                if pred(event):
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no matching event; last events: {self.events[-5:]}")

    def ticks(self, start: int = 0) -> list[dict[str, Any]]:
        return [t for e in self.events[start:] if e["event"] == "ticks" for t in e["ticks"]]

    def close(self) -> None:
        try:
            self.send(stop=True)
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
