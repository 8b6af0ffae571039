"""Order updates from execution's own ticker connection: they arrive (a real KiteTicker against
the simulator, in its own process), survive a token change, and move our order at once."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.execution.brokers.base import OrderRequest
from services.execution.brokers.kite import KiteBroker
from services.execution.brokers.paper import PaperBroker
from services.execution.budget import OrderBudget
from services.execution.faults import FaultPoints
from services.execution.kite_orders import OrderUpdates, event_ms
from services.execution.processor import Execution
from services.execution.states import OrderState
from shared.config import Settings
from shared.domain.session import SessionRules
from shared.store.models import Order
from tests.integration.kite.kite_helpers import API_KEY, ROOT, Sim, ist_ms


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    proc = Sim(Path(tmp_path_factory.mktemp("kite-orders")) / "state")
    yield proc
    proc.stop()


class Listener:
    def __init__(self, sim: Sim, token: str) -> None:
        script = Path(__file__).with_name("order_updates_client.py")
        self.proc = subprocess.Popen([sys.executable, str(script), sim.ws_root, API_KEY, token],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def next(self, pred: Any, timeout: float = 20) -> dict[str, Any]:
        while True:
            event = self.events.get(timeout=timeout)
            if pred(event):
                return event

    def send(self, *lines: str) -> None:
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_order_updates_arrive_on_executions_own_socket(sim: Sim) -> None:
    broker = KiteBroker(API_KEY, sim.login(), sim.root)
    listener = Listener(sim, broker.access_token or "")
    try:
        listener.next(lambda e: e["event"] == "connected")
        placed = broker.place_order(OrderRequest(tag="Rupdate1", exchange="NSE", symbol="SBIN",
                                                 side="BUY", qty=1, order_type="MARKET",
                                                 market_protection_pct="2"))
        done = listener.next(lambda e: e["event"] == "order" and e["data"]["tag"] == "Rupdate1"
                             and e["data"]["status"] == "COMPLETE")
        assert done["data"]["order_id"] == placed.order_id
        assert event_ms(done["data"], 0) > 0

        sim.admin("POST", "/sessions/expire")  # the day's token is gone; a new login
        new_token = sim.login()
        broker.set_access_token(new_token)
        listener.send("token", new_token)  # the socket is replaced with one on the new token
        listener.next(lambda e: e["event"] == "reconnected")
        broker.place_order(OrderRequest(tag="Rupdate2", exchange="NSE", symbol="SBIN", side="SELL",
                                        qty=1, order_type="MARKET", market_protection_pct="2"))
        listener.next(lambda e: e["event"] == "order" and e["data"]["tag"] == "Rupdate2"
                      and e["data"]["status"] == "COMPLETE")
    finally:
        listener.close()


def test_an_update_moves_our_order_at_once(sessions: sessionmaker[Session],
                                           redis_client: redis.Redis, redis_url: str,
                                           database_url: str) -> None:
    settings = Settings(redis_url=redis_url, database_url=database_url)
    execution = Execution(sessions, PaperBroker(sessions), OrderBudget(redis_client, 10, 400, 5000),
                          settings, SessionRules(), FaultPoints(frozenset(), 0))
    with sessions.begin() as session:
        session.add(Order(intent_id="momentum:NSE:SBIN:l:1:buy", tag="Rlive1", exchange="NSE",
                          symbol="SBIN", ladder_id="l", leg=1, side="BUY", qty=3,
                          order_type="MARKET", product="CNC", ref_price=800, adds_risk=True,
                          state=OrderState.OPEN, broker_order_id="250106000000042", history=[]))

    class NoFollower:
        runs = 0

        def run_once(self) -> None:
            self.runs += 1

    follower = NoFollower()
    updates = OrderUpdates(execution, follower)  # type: ignore[arg-type]
    updates.apply({"order_id": "250106000000042", "tag": "Rlive1", "status": "COMPLETE",
                   "exchange": "NSE", "tradingsymbol": "SBIN", "transaction_type": "BUY",
                   "quantity": 3, "filled_quantity": 3, "average_price": 801.25,
                   "exchange_update_timestamp": "2025-01-06 10:05:00", "meta": {}})
    with sessions() as session:
        row = session.scalars(select(Order)).one()
    assert row.state == OrderState.FILLED and float(row.average_price) == 801.25
    assert updates.applied == 1 and follower.runs == 0
    updates.apply({"order_id": "250106000000043", "tag": None, "status": "OPEN",
                   "exchange": "NSE", "tradingsymbol": "SBIN", "transaction_type": "SELL",
                   "quantity": 3, "filled_quantity": 0, "meta": {"gtt": 100001}})
    assert follower.runs == 1  # a GTT's child order: the triggered GTT is followed now
    assert event_ms({"exchange_update_timestamp": "2025-01-06 10:05:00"}, 0) == ist_ms(
        "2025-01-06", "10:05")
