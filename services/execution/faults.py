"""Named crash points for fault tests: ``RATCHET_FAULT_KILL=point1,point2`` with
``RATCHET_FAULT_KILL_PROB`` makes the process SIGKILL itself at those points, so a test can
crash execution exactly between an intent's commit and the broker call, or between the broker's
answer and its record. Unset in production, where every point is a no-op."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path


class FaultPoints:
    def __init__(
        self, points: frozenset[str], probability: float, record: Path | None = None
    ) -> None:
        self.points = points
        self.probability = probability
        self.record = record
        self._random = random.Random()

    @classmethod
    def from_env(cls) -> FaultPoints:
        raw = os.environ.get("RATCHET_FAULT_KILL", "")
        points = frozenset(p.strip() for p in raw.split(",") if p.strip())
        record = os.environ.get("RATCHET_FAULT_RECORD")
        return cls(points, float(os.environ.get("RATCHET_FAULT_KILL_PROB", "0.2")),
                   Path(record) if record else None)

    def point(self, name: str) -> None:
        if name in self.points and self._random.random() < self.probability:
            if self.record is not None:  # so a test can tell which windows it hit
                with self.record.open("a") as handle:
                    handle.write(name + "\n")
            os.kill(os.getpid(), signal.SIGKILL)
