"""The order budget on a real Redis: a burst is spread so that no rolling second holds more
orders than the limit, across two budget objects (two replicas) sharing it; none is dropped."""

from __future__ import annotations

import threading
import time

import redis

from services.execution.budget import OrderBudget


def test_a_burst_from_two_replicas_never_exceeds_the_rolling_limit(
    redis_client: redis.Redis,
) -> None:
    stamps: list[float] = []
    lock = threading.Lock()

    def replica() -> None:
        budget = OrderBudget(redis_client, 10, 400, 5000)
        for _ in range(12):
            while (wait_s := budget.try_acquire()) > 0:  # as execution waits, between runs
                time.sleep(wait_s)
            with lock:
                stamps.append(time.time())

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    stamps.sort()
    assert len(stamps) == 24  # every order got through
    assert all(stamps[i + 10] - stamps[i] >= 0.99 for i in range(len(stamps) - 10)), stamps
