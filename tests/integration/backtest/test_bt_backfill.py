"""``ratchet backfill`` against the Kite simulator through the official SDK, then ``ratchet
backtest`` over the ``ohlcv`` table it filled (real Postgres)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
from kiteconnect import KiteConnect
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from backtest.backfill import Backfill, Pacer
from ratchet.cli import app
from shared.store.models import Ohlcv

ROOT = Path(__file__).resolve().parents[3]
KEY, SECRET = "btkey", "btsecret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("bt-kite-sim")
    port = _free_port()
    log = (state / "sim.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.kite", "--port", str(port), "--api-key", KEY,
         "--api-secret", SECRET, "--state-dir", str(state / "book"), "--symbols", "5",
         "--start-day", "2025-01-06", "--paused", "--historical-rate", "3"],
        cwd=ROOT, stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, (state / "sim.log").read_text()
        try:
            if httpx.get(f"{root}/_sim/state", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "simulator did not start"
        time.sleep(0.1)
    yield root
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
def env(sim_root: str, database_url: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> dict[str, str]:
    values = {"RATCHET_KITE_ROOT": sim_root, "RATCHET_KITE_API_KEY": KEY,
              "RATCHET_KITE_API_SECRET": SECRET, "RATCHET_DATABASE_URL": database_url,
              "RATCHET_HOME": str(tmp_path / "home")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def _count(sessions: sessionmaker[Session], symbol: str) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(Ohlcv).where(
            Ohlcv.symbol == symbol, Ohlcv.timeframe == 15)) or 0)


def _backfill(*args: str) -> str:
    result = CliRunner().invoke(app, ["backfill", "--request-token", "tok", "--no-progress",
                                      *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_backfill_resumes_and_feeds_a_backtest(env: dict[str, str],
                                               sessions: sessionmaker[Session],
                                               tmp_path: Path) -> None:
    out = _backfill("--symbols", "INFY,SBIN", "--from", "2024-12-16", "--to", "2024-12-20")
    assert "NSE:INFY: 125 new bars" in out and "NSE:SBIN: 125 new bars" in out
    assert _count(sessions, "INFY") == 125  # 5 days × 25 fifteen-minute bars
    with sessions() as s:
        first = s.scalars(select(Ohlcv).where(Ohlcv.symbol == "INFY").order_by(Ohlcv.ts)).first()
        last = s.scalars(select(Ohlcv).where(Ohlcv.symbol == "INFY")
                         .order_by(Ohlcv.ts.desc())).first()
    assert first is not None and last is not None
    assert first.ema_9 is None and last.ema_9 is not None and last.ema_200 is None
    # resumes after the last stored bar; a repeat adds nothing
    out = _backfill("--symbols", "INFY", "--from", "2024-12-16", "--to", "2024-12-27")
    assert "NSE:INFY: 125 new bars" in out  # the sim keeps no holidays: Dec 23..27
    again = _backfill("--symbols", "INFY", "--from", "2024-12-16", "--to", "2024-12-27")
    assert "NSE:INFY: 0 new bars" in again
    assert _count(sessions, "INFY") == 250
    # and the table is a backtest source
    result = CliRunner().invoke(app, ["backtest", "--symbols", "INFY,SBIN", "--out",
                                      str(tmp_path / "bt"), "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "bt" / "candles.csv").read_text().splitlines()
    assert len(lines) == 1 + 250 + 125
    assert lines[1].split(",")[:2] == ["INFY", "2024-12-16T09:15:00+05:30"]


def test_requests_stay_within_three_a_second(env: dict[str, str],
                                             sessions: sessionmaker[Session]) -> None:
    kite = KiteConnect(KEY, root=env["RATCHET_KITE_ROOT"])
    kite.set_access_token(kite.generate_session("t2", SECRET)["access_token"])
    job = Backfill(kite, sessions, interval="15minute", window_days=1)
    began = time.monotonic()
    added = job.run(["RELIANCE"], date(2024, 12, 9), date(2024, 12, 13))
    elapsed = time.monotonic() - began
    assert added == {"RELIANCE": 125}
    assert job.requests == 1 + 5  # the instruments dump, one window a day: no 429, no retry
    assert elapsed >= 5 / 3


def test_pacer_spaces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(3.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        pacer.wait()
    assert slept == pytest.approx([1.05 / 3] * 3)


def test_a_rate_limited_or_failed_request_is_retried(env: dict[str, str],
                                                     sessions: sessionmaker[Session]) -> None:
    root = env["RATCHET_KITE_ROOT"]
    for status, error_type in ((429, "NetworkException"), (503, "GeneralException")):
        r = httpx.post(f"{root}/_sim/faults/http", json={
            "kind": "error", "count": 1, "status": status, "error_type": error_type,
            "paths": ["/instruments/historical"]}, timeout=5)
        assert r.status_code == 200, r.text
    kite = KiteConnect(KEY, root=root)
    kite.set_access_token(kite.generate_session("t3", SECRET)["access_token"])
    job = Backfill(kite, sessions, interval="15minute")
    added = job.run(["INFY"], date(2024, 12, 2), date(2024, 12, 6))
    assert added == {"INFY": 125}
    assert job.requests == 1 + 1 + 2  # instruments, the window, and its two retries
    httpx.delete(f"{root}/_sim/faults", timeout=5)
