"""The Kite simulator as a process for Ratchet's own Kite code: SDK client, admin calls, time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from kiteconnect import KiteConnect

from ratchet.servers import free_port
from shared.domain.session import ms_from_ist

ROOT = Path(__file__).resolve().parents[3]
API_KEY = "ratchetkey"
API_SECRET = "ratchetsecret"
START_DAY = "2025-01-06"  # a Monday


def ist_ms(day: str, hhmm: str) -> int:
    from datetime import datetime

    return ms_from_ist(datetime.fromisoformat(f"{day} {hhmm}"))


class Sim:
    """``python -m shared.kite`` on a free port; paused unless told otherwise."""

    def __init__(self, state_dir: Path, *extra: str, paused: bool = True, symbols: int = 8,
                 speed: float = 60.0, port: int | None = None) -> None:
        self.state_dir = state_dir
        self.args = ["--symbols", str(symbols), "--speed", str(speed), "--start-day", START_DAY,
                     *(["--paused"] if paused else []), *extra]
        self.port = port or free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.ws_root = f"ws://127.0.0.1:{self.port}/ws"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "shared.kite", "--port", str(self.port), "--api-key", API_KEY,
                "--api-secret", API_SECRET, "--state-dir", str(self.state_dir), *self.args]
        log = open(self.state_dir / "sim.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited: {self.state_dir / 'sim.log'}")
            try:
                if httpx.get(f"{self.root}/_sim/state", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("simulator did not start")

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = httpx.request(method, f"{self.root}/_sim{path}", json=body, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("GET", "/state")
        return result

    def set_price(self, symbol: str, price: float) -> Any:
        return self.admin("POST", "/price", {"symbol": symbol, "price": price})

    def fault(self, **rule: Any) -> Any:
        return self.admin("POST", "/faults/http", rule)

    def clear_faults(self) -> Any:
        return self.admin("DELETE", "/faults")

    def login(self) -> str:
        """A fresh access token (the simulator takes any request token with the checksum)."""
        kite = KiteConnect(API_KEY, root=self.root)
        return str(kite.generate_session(f"req{time.monotonic_ns()}", API_SECRET)["access_token"])

    def kite(self) -> KiteConnect:
        return KiteConnect(API_KEY, access_token=self.login(), root=self.root)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
