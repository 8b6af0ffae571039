"""SIGKILL the execution service again and again while the system trades, including exactly
between an intent's commit and the broker call and between the broker's answer and its record.
Then, from the paper broker's own book (its own transactions, not execution's tables): no intent
lost, no order placed twice, one live GTT per open leg and none without one."""

from __future__ import annotations

import random
import signal
import time

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import private_dir
from tests.e2e.harness import (
    ServiceProcesses,
    assert_no_intent_lost_or_doubled,
    scalar,
    settled,
    wait_for,
)

pytestmark = pytest.mark.e2e

KILLS = 20
FAULT_POINTS = "after_intent_commit,after_broker_call,after_gtt_call"


def test_execution_killed_twenty_times_loses_nothing_and_doubles_nothing(
    service_env: dict[str, str], sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    home = private_dir("ratchet-test-kills-")
    record = home / "fault-points.log"
    env = {
        **service_env,
        "RATCHET_HOME": str(home),
        "RATCHET_SIM_SEED": "5",
        "RATCHET_SIM_SPEED": "900",
        "RATCHET_SIM_TICK_INTERVAL_S": "15",
        "RATCHET_EXECUTION__UNKNOWN_SETTLE_S": "1",
        "RATCHET_EXECUTION__INTENT_RESEND_S": "3",
    }
    system = ServiceProcesses(env, home / "logs")
    faulty = {"RATCHET_FAULT_KILL": FAULT_POINTS, "RATCHET_FAULT_KILL_PROB": "0.25",
              "RATCHET_FAULT_RECORD": str(record)}
    rng = random.Random(2)
    kills = 0

    def windows_hit() -> set[str]:
        return set(record.read_text().split()) if record.exists() else set()

    # Both crash windows must have been hit, however slowly this machine trades: the kills go on
    # past KILLS until they were.
    needed = {"after_intent_commit", "after_broker_call"}
    try:
        system.start("marketdata")
        system.start("strategy")
        system.start("execution", **faulty)
        wait_for(lambda: scalar(sessions, "SELECT count(*) FROM orders") > 0, 120, "a first order")
        deadline = time.monotonic() + 420
        next_external = time.monotonic() + rng.uniform(1.0, 4.0)
        while (kills < KILLS or not needed <= windows_hit()) and time.monotonic() < deadline:
            if not system.alive("execution"):
                assert system.procs["execution"].returncode == -signal.SIGKILL, (
                    system.log_tail("execution"))
                kills += 1
                system.start("execution", **faulty)
                next_external = time.monotonic() + rng.uniform(1.0, 4.0)
            elif time.monotonic() >= next_external:
                system.procs["execution"].kill()  # a random moment, from outside
                system.procs["execution"].wait()
                kills += 1
                system.start("execution", **faulty)
                next_external = time.monotonic() + rng.uniform(1.0, 4.0)
            time.sleep(0.1)
        assert kills >= KILLS, f"only {kills} kills in time"
        assert needed <= windows_hit(), windows_hit()

        # Calm: no more market data; execution without faults settles everything.
        system.stop("marketdata")
        if system.alive("execution"):
            system.stop("execution")
        system.start("execution")

        wait_for(lambda: settled(sessions, redis_client), 120, "every intent settled")
        time.sleep(2)
    finally:
        system.stop_all()

    sent = assert_no_intent_lost_or_doubled(sessions)
    assert scalar(sessions, "SELECT count(*) FROM orders o WHERE o.state = 'REJECTED' AND EXISTS "
                            "(SELECT 1 FROM paper_orders p WHERE p.tag = o.tag)") == 0
    # One live GTT per open leg at the broker, and no live GTT without an open leg.
    open_legs = scalar(sessions, "SELECT count(*) FROM orders WHERE side = 'BUY' "
                                 "AND state = 'FILLED' AND leg_closed_at IS NULL")
    live = scalar(sessions, "SELECT count(*) FROM paper_gtts WHERE status = 'active'")
    covered = scalar(sessions, "SELECT count(*) FROM orders o "
                               "JOIN gtts g ON g.ladder_id = o.ladder_id AND g.leg = o.leg "
                               "JOIN paper_gtts p ON p.trigger_id::text = g.trigger_id "
                               "WHERE o.side = 'BUY' AND o.state = 'FILLED' "
                               "AND o.leg_closed_at IS NULL AND p.status = 'active'")
    assert open_legs == covered == live, (open_legs, covered, live)
    print(f"kills={kills} windows={sorted(windows_hit())} entries={sent} open_legs={open_legs} "
          f"paper_orders={scalar(sessions, 'SELECT count(*) FROM paper_orders')}")
