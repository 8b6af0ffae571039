"""Services as separate processes against the test session's Redis and Postgres."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.contracts import streams

RATCHET = str(Path(sys.executable).with_name("ratchet"))


@dataclass
class ServiceProcesses:
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self, name: str, label: str | None = None, **extra_env: str
    ) -> subprocess.Popen[bytes]:
        """Start service ``name``; ``label`` tells replicas of one service apart."""
        label = label or name
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{label}.log", "ab") as log:
            proc = subprocess.Popen([RATCHET, "service", name], env={**self.env, **extra_env},
                                    stdout=log, stderr=subprocess.STDOUT)
        self.procs[label] = proc
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop(self, name: str, timeout: float = 15) -> int | None:
        proc = self.procs.get(name)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        order = ("api", "strategy", "marketdata", "execution")
        for label in sorted(self.procs, key=lambda lb: next(
                (i for i, n in enumerate(order) if lb.startswith(n)), len(order))):
            self.stop(label)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def scalar(sessions: sessionmaker[Session], sql: str) -> int:
    with sessions() as session:
        return int(session.execute(text(sql)).scalar_one())


def settled(sessions: sessionmaker[Session], client: redis.Redis) -> bool:
    """Every intent delivered and handled (none waiting in a service's outbox, none unread or
    unacked in execution's group), every order terminal, every leg past PENDING, every GTT
    step settled. Without the first, a backlog of intents still on the stream (a stop for a
    leg just filled) would be cut off by the end of the test."""
    return intents_drained(sessions, client) and scalar(
        sessions, "SELECT count(*) FROM orders WHERE state NOT IN "
                  "('FILLED','REJECTED','CANCELLED')") == 0 and scalar(
        sessions, "SELECT count(*) FROM trades WHERE status = 'PENDING'") == 0 and scalar(
        sessions, "SELECT count(*) FROM gtts WHERE state IN ('NEW','SUBMITTED','UNKNOWN')") == 0


def intents_drained(sessions: sessionmaker[Session], client: redis.Redis) -> bool:
    """No message waiting in strategy's or execution's outbox, and execution's group on the
    intents stream has read up to its last entry and acked all it read."""
    if scalar(sessions, "SELECT count(*) FROM outbox WHERE published_at IS NULL "
                        "AND source IN ('strategy', 'execution')"):
        return False
    if not client.exists(streams.INTENTS):
        return True
    last = client.xinfo_stream(streams.INTENTS)["last-generated-id"]
    names = (streams.GROUP_EXECUTION, streams.GROUP_EXECUTION.encode())
    group = next((g for g in client.xinfo_groups(streams.INTENTS) if g["name"] in names), None)
    return group is not None and group["pending"] == 0 and group["last-delivered-id"] == last


def assert_no_intent_lost_or_doubled(sessions: sessionmaker[Session]) -> int:
    """Every entry intent the strategy sent has its order (none lost), and no tag has more than
    one order in the paper broker's own book (none doubled). Returns the number of entries."""
    sent = scalar(sessions, "SELECT count(DISTINCT msg_id) FROM outbox WHERE source = 'strategy' "
                            "AND data LIKE '{\"type\":\"PlaceOrder\"%'")
    assert sent > 0 and scalar(sessions, "SELECT count(*) FROM orders WHERE side = 'BUY'") == sent
    assert scalar(sessions, "SELECT count(*) FROM (SELECT tag FROM paper_orders "
                            "WHERE tag IS NOT NULL GROUP BY tag HAVING count(*) > 1) d") == 0
    assert scalar(sessions, "SELECT count(*) FROM orders o WHERE o.state = 'FILLED' AND NOT EXISTS "
                            "(SELECT 1 FROM paper_orders p WHERE p.tag = o.tag)") == 0
    return sent
