"""Incremental EMAs in the TA-Lib convention (DESIGN §2).

alpha = 2 / (n + 1); the first value is the simple mean of the first n closes; undefined (None)
before n closes. O(1) per bar, and the state is a few numbers so a restart can resume it (or
re-warm it from stored history) instead of waiting 200 bars.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class Ema:
    __slots__ = ("period", "alpha", "count", "_sum", "value")

    def __init__(self, period: int) -> None:
        if period <= 0:
            raise ValueError("EMA period must be positive")
        self.period = period
        self.alpha = 2.0 / (period + 1)
        self.count = 0
        self._sum = 0.0
        self.value: float | None = None

    def update(self, close: float) -> float | None:
        count = self.count + 1
        self.count = count
        value = self.value
        if value is not None:
            value = (close - value) * self.alpha + value  # TA-Lib's order of operations
            self.value = value
            return value
        self._sum += close
        if count == self.period:
            value = self._sum / self.period
            self.value = value
        return value

    def state(self) -> dict[str, Any]:
        return {"period": self.period, "count": self.count, "sum": self._sum, "value": self.value}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Ema:
        ema = cls(int(state["period"]))
        ema.count = int(state["count"])
        ema._sum = float(state["sum"])
        ema.value = None if state["value"] is None else float(state["value"])
        return ema


class EmaSet:
    """The strategy's EMAs (9, 21, 50, 200 by default), updated together on each close."""

    __slots__ = ("periods", "_emas", "values")

    def __init__(self, periods: Sequence[int] = (9, 21, 50, 200)) -> None:
        self.periods = tuple(periods)
        self._emas = tuple(Ema(p) for p in self.periods)
        self.values: tuple[float | None, ...] = (None,) * len(self.periods)

    def update(self, close: float) -> tuple[float | None, ...]:
        values = tuple([e.update(close) for e in self._emas])
        self.values = values
        return values

    def warm(self, closes: Iterable[float]) -> tuple[float | None, ...]:
        for close in closes:
            self.update(close)
        return self.values

    @property
    def count(self) -> int:
        return self._emas[0].count if self._emas else 0

    def state(self) -> dict[str, Any]:
        return {"emas": [e.state() for e in self._emas]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EmaSet:
        emas = tuple(Ema.from_state(s) for s in state["emas"])
        es = cls(tuple(e.period for e in emas))
        es._emas = emas
        es.values = tuple(e.value for e in emas)
        return es
