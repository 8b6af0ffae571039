"""`ratchet run` as a person runs it (what `make run` execs): embedded servers, four service
processes, the ready line, trading on the sim feed, 401 without a key, a clean stop on SIGTERM,
and a second run that carries on from the stored state without duplicating anything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from ratchet.servers import free_port
from tests.conftest import private_dir

pytestmark = pytest.mark.e2e

RATCHET = str(Path(sys.executable).with_name("ratchet"))


def start_run(
    home: Path, port: int, seed: int, symbols: int | None = None
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATCHET_")}
    env.update(
        RATCHET_HOME=str(home),
        RATCHET_API_PORT=str(port),
        RATCHET_SIM_SEED=str(seed),
        RATCHET_SIM_SPEED="900",  # a 15-minute bar lasts one second
        RATCHET_SIM_TICK_INTERVAL_S="15",
        PYTHONUNBUFFERED="1",
    )
    if symbols is not None:
        env["RATCHET_SIM_SYMBOLS"] = str(symbols)
    return subprocess.Popen([RATCHET, "run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_ready(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[str, list[str]]:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line.rstrip())
        if line.startswith("ready: "):
            return line.split("ready: ", 1)[1].strip(), lines
    raise AssertionError("no ready line:\n" + "\n".join(lines))


def stop_run(proc: subprocess.Popen[str], home: Path) -> list[str]:
    if proc.poll() is not None:
        out, _ = proc.communicate()
        raise AssertionError(f"ratchet run ended early ({proc.returncode}):\n{out}")
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    time.sleep(1)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[c.cmdline() for c in alive]}"
    assert not (home / "pg" / "postmaster.pid").exists()
    return out.splitlines()


def poll_trading(base: str, key: str, timeout: float = 180) -> list[dict]:
    """Wait for an open P1 with stop and target, and a stop raised by trailing on some leg."""
    deadline = time.monotonic() + timeout
    positions: list[dict] = []
    while time.monotonic() < deadline:
        positions = httpx.get(f"{base}api/v1/positions", headers={"X-API-Key": key},
                              timeout=10).json()
        p1 = [p for p in positions if p["leg"] == 1 and p["stop"] and p["target"]]
        raised = [p for p in positions if p["stop"] > p["initial_stop"]]
        if p1 and raised:
            return positions
        time.sleep(1)
    raise AssertionError(f"no open P1 with a raised stop in time: {positions}")


# Any seed must trade; CI samples a few (RATCHET_TEST_SEEDS=1-20 checks them all).
def _seeds() -> list[int]:
    raw = os.environ.get("RATCHET_TEST_SEEDS", "1,7,13,20")
    if "-" in raw:
        low, high = raw.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in raw.split(",")]


MOVING = {  # a counter of each service that moves while the market runs
    "marketdata": "ratchet_ticks_total",
    "strategy": "ratchet_strategy_messages_total",
    "execution": "ratchet_execution_ticks_total",
    "api": "ratchet_api_requests_total",
}


def scrape(url: str, name: str) -> float:
    """Sum of a metric's samples in a Prometheus text page."""
    body = httpx.get(url, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def assert_metrics_move(servers: dict, base: str, key: str) -> None:
    urls = {**servers["metrics"], "api": f"{base}metrics"}
    assert set(urls) == set(MOVING)
    first = {name: scrape(url, MOVING[name]) for name, url in urls.items()}
    httpx.get(f"{base}api/v1/positions", headers={"X-API-Key": key}, timeout=10)
    time.sleep(3)
    second = {name: scrape(url, MOVING[name]) for name, url in urls.items()}
    assert all(second[n] > first[n] for n in urls), (first, second)
    assert scrape(servers["metrics"]["execution"], "ratchet_orders") > 0
    assert scrape(servers["metrics"]["strategy"], "ratchet_stream_length") > 0


@pytest.mark.parametrize("seed", _seeds())
def test_ratchet_run_trades_stops_and_carries_on(seed: int) -> None:
    home, port = private_dir("ratchet-test-run-") / "home", free_port()
    proc = start_run(home, port, seed)
    try:
        base, lines = wait_ready(proc)
        assert base == f"http://127.0.0.1:{port}/"
        key_file = home / "admin-key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert httpx.get(f"{base}api/v1/positions", timeout=10).status_code == 401
        positions = poll_trading(base, key)
        servers = json.loads((home / "servers.json").read_text())
        assert_metrics_move(servers, base, key)
        engine = create_engine(servers["database_url"])
        with engine.connect() as conn:
            gtts = conn.execute(text(
                "SELECT symbol, stop_trigger, target_trigger FROM paper_gtts "
                "WHERE status = 'active'"
            )).all()
            bars_before = conn.execute(text("SELECT count(*) FROM ohlcv")).scalar_one()
        engine.dispose()
        p1 = next(p for p in positions if p["leg"] == 1 and p["target"])
        held = {(g.symbol, float(g.target_trigger)) for g in gtts if g.target_trigger is not None}
        assert (p1["symbol"], p1["target"]) in held, "the paper broker holds the P1's OCO GTT"
        assert httpx.get(f"{base}", timeout=10).status_code == 200
    finally:
        out = stop_run(proc, home)
    assert out[-1] == "stopped"

    # A second run carries on: same key, same history (not generated again), no duplicates.
    proc = start_run(home, port, seed)
    try:
        base, _ = wait_ready(proc)
        assert (home / "admin-key").read_text().strip() == key
        assert httpx.get(f"{base}api/v1/positions", headers={"X-API-Key": key},
                         timeout=10).status_code == 200
        engine = create_engine(json.loads((home / "servers.json").read_text())["database_url"])
        with engine.connect() as conn:
            bars_after = conn.execute(text("SELECT count(*) FROM ohlcv")).scalar_one()
            dup_tags = conn.execute(text(
                "SELECT count(*) FROM (SELECT tag FROM paper_orders WHERE tag IS NOT NULL "
                "GROUP BY tag HAVING count(*) > 1) d")).scalar_one()
            keys = conn.execute(text("SELECT count(*) FROM api_keys")).scalar_one()
        engine.dispose()
        assert bars_after >= bars_before
        assert bars_after < bars_before + 50 * 25 * 2, "history was not generated a second time"
        assert dup_tags == 0 and keys == 1
    finally:
        stop_run(proc, home)
