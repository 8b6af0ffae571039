"""`ratchet run` (what `make run` execs) with RATCHET_FEED=kite-sim RATCHET_BROKER=kite: the
simulator is started and logged in to, the whole system trades through the Kite SDK, and SIGTERM
stops everything, the simulator included."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import httpx
import psutil
import pytest

from ratchet.servers import free_port
from tests.conftest import private_dir
from tests.e2e.test_ratchet_run import RATCHET, wait_ready

pytestmark = pytest.mark.e2e


def test_ratchet_run_trades_through_the_kite_simulator() -> None:
    home, port = private_dir("ratchet-test-kite-run-") / "home", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATCHET_")}
    env.update(RATCHET_HOME=str(home), RATCHET_API_PORT=str(port), RATCHET_FEED="kite-sim",
               RATCHET_BROKER="kite", RATCHET_SIM_SPEED="900", RATCHET_SIM_SYMBOLS="20",
               PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([RATCHET, "run"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        base, lines = wait_ready(proc)
        said = "\n".join(lines)
        found = re.search(r"kite simulator at (http://127\.0\.0\.1:\d+)", said)
        assert found and "logged in to the simulator" in said, said
        sim_root = found.group(1)
        assert (home / "kite-token-key").stat().st_mode & 0o777 == 0o600
        key = (home / "admin-key").read_text().strip()

        deadline = time.monotonic() + 180
        orders: list[dict] = []
        while time.monotonic() < deadline:
            orders = [o for o in httpx.get(f"{base}api/v1/orders", headers={"X-API-Key": key},
                                           timeout=10).json()["items"]
                      if o["state"] == "FILLED" and o["broker_order_id"]]
            gtts = httpx.get(f"{sim_root}/_sim/state", timeout=10).json()["data"]
            if orders and gtts["orders_today"] and gtts["active_gtts"] + len(orders) > 1:
                break
            time.sleep(2)
        assert orders, "no order filled through the simulator in time"
        assert all(o["broker_order_id"].isdigit() for o in orders)  # the simulator's order ids
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("shared.kite" in " ".join(c.cmdline()) for c in children)
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    time.sleep(1)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running: {[c.cmdline() for c in alive]}"
