"""Named crash points for fault tests: ``RATCHET_FAULT_KILL=point1,point2`` with
``RATCHET_FAULT_KILL_PROB`` makes the process SIGKILL itself at those points, so a test can
crash execution exactly between an intent's commit and the broker call, or between the broker's
answer and its record. Unset in production, where every point is a no-op."""

from __future__ import annotations

import os
import random
import signal


class FaultPoints:
    def __init__(self, points: frozenset[str], probability: float, seed: int | None = None) -> None:
        self.points = points
        self.probability = probability
        self._random = random.Random(seed)

    @classmethod
    def from_env(cls) -> FaultPoints:
        raw = os.environ.get("RATCHET_FAULT_KILL", "")
        points = frozenset(p.strip() for p in raw.split(",") if p.strip())
        return cls(points, float(os.environ.get("RATCHET_FAULT_KILL_PROB", "0.2")))

    def point(self, name: str) -> None:
        if name in self.points and self._random.random() < self.probability:
            os.kill(os.getpid(), signal.SIGKILL)
