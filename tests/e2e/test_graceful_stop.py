"""SIGTERM to each service while the system trades: it stops reading, finishes the message in
hand, acks, and exits promptly with status 0; started again, nothing was lost or doubled."""

from __future__ import annotations

import signal
import time

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from ratchet.servers import free_port
from tests.conftest import private_dir
from tests.e2e.harness import (
    ServiceProcesses,
    assert_no_intent_lost_or_doubled,
    scalar,
    settled,
    wait_for,
)

pytestmark = pytest.mark.e2e

STOP_WITHIN_S = 10  # the acceptance figure; the assertion leaves room for a loaded machine


def test_sigterm_under_load_exits_cleanly_and_loses_nothing(
    service_env: dict[str, str], sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    home = private_dir("ratchet-test-sigterm-")
    env = {**service_env, "RATCHET_HOME": str(home), "RATCHET_SIM_SEED": "9",
           "RATCHET_SIM_SPEED": "900", "RATCHET_SIM_TICK_INTERVAL_S": "15",
           "RATCHET_API_PORT": str(free_port()),
           "RATCHET_EXECUTION__UNKNOWN_SETTLE_S": "1", "RATCHET_EXECUTION__INTENT_RESEND_S": "3"}
    system = ServiceProcesses(env, home / "logs")
    stop_times: dict[str, float] = {}
    try:
        for name in ("marketdata", "execution", "strategy", "api"):
            system.start(name)
        wait_for(lambda: scalar(sessions, "SELECT count(*) FROM orders") > 0, 120, "a first order")
        for name in ("execution", "strategy", "marketdata", "api", "execution"):
            proc = system.procs[name]
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(STOP_WITHIN_S * 3)
            stop_times[name] = max(stop_times.get(name, 0.0), time.monotonic() - began)
            assert code == 0, system.log_tail(name)
            system.start(name)
            time.sleep(3)
        system.stop("marketdata")

        wait_for(lambda: settled(sessions, redis_client), 120, "every intent settled")
    finally:
        system.stop_all()
    print(f"stop times: { {k: round(v, 2) for k, v in stop_times.items()} }")
    assert all(seconds < STOP_WITHIN_S for seconds in stop_times.values()), stop_times
    assert_no_intent_lost_or_doubled(sessions)
    assert scalar(sessions, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    assert redis_client.xlen("dead.letters") == 0  # nothing parked
