"""The ratchet: a trailing stop that only moves up, in steps (DESIGN §3)."""

from __future__ import annotations

from shared.domain.money import ONE, price_below


def trail(
    stop: int, highest: int, price: int, stop_pct_s: int, tick: int, min_step_pct_s: int
) -> tuple[int, int]:
    """Return (new_highest, new_stop) after a tick at ``price``.

    highest = max(highest, price); candidate = highest × (1 − stop%) rounded down to the tick.
    The stop becomes the candidate only when it is at least one tick higher *and* at least the
    minimum step (0.1%) above the current stop, so every change is worth a GTT modification.
    """
    if price > highest:
        highest = price
    candidate = price_below(highest, stop_pct_s, tick)
    if candidate - stop >= tick and candidate * ONE >= stop * (ONE + min_step_pct_s):
        return highest, candidate
    return highest, stop
