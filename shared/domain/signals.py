"""The momentum entry signal on a closed bar (DESIGN §3)."""

from __future__ import annotations

from collections.abc import Sequence


def entry_signal(
    prev: Sequence[float | None] | None, cur: Sequence[float | None], close: float
) -> bool:
    """EMA9 crosses above EMA21 on this bar and close > EMA50 > EMA200, everything defined.

    ``prev`` and ``cur`` are the (ema9, ema21, ema50, ema200) after the previous and this bar.
    The cut-off and the active-ladder rule are the engine's (they need the session and state).
    """
    if prev is None:
        return False
    p9, p21 = prev[0], prev[1]
    c9, c21, c50, c200 = cur[0], cur[1], cur[2], cur[3]
    if p9 is None or p21 is None or c9 is None or c21 is None or c50 is None or c200 is None:
        return False
    return p9 <= p21 and c9 > c21 and close > c50 > c200
