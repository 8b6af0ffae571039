"""Summary figures of a backtest (``summary.json`` and one row of ``sweep.csv``).

Returns are on the run's capital (default: three legs a symbol at the capital per position,
capped at ``risk.max_capital``). The equity curve is capital + realised + unrealised PnL after
every bar time; Sharpe uses daily returns (the equity at each IST day's last bar) annualised by
the number of such days a year in the data (about 252 for stocks, 260 for FX), with no risk-free
rate. PnL is gross of charges.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from backtest.core import BacktestResult, LegResult
from shared.domain.session import DAY_MS, IST_OFFSET_MS

YEAR_MS = 365.25 * DAY_MS


def _rupees(paise: int | float) -> float:
    return round(paise / 100.0, 2)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def drawdowns(values: Sequence[float]) -> list[float]:
    """Drawdown after each point as a fraction of the running peak (0 at a new high)."""
    out = []
    peak = -math.inf
    for v in values:
        peak = max(peak, v)
        out.append((peak - v) / peak if peak > 0 else 0.0)
    return out


def daily_values(step_ms: Sequence[int], values: Sequence[float]) -> list[float]:
    """The value at the last step of each IST calendar day."""
    out: list[float] = []
    last_day = None
    for ms, v in zip(step_ms, values, strict=True):
        day = (ms - 1 + IST_OFFSET_MS) // DAY_MS  # a bar ending at midnight belongs to its day
        if day == last_day:
            out[-1] = v
        else:
            out.append(v)
            last_day = day
    return out


def sharpe(daily: list[float], per_year: float) -> float | None:
    rets = [b / a - 1.0 for a, b in zip(daily, daily[1:], strict=False) if a > 0]
    if len(rets) < 2:
        return None
    mean = sum(rets) / len(rets)
    var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
    if var <= 0:
        return None
    return mean / math.sqrt(var) * math.sqrt(per_year)


def leg_stats(legs: list[LegResult]) -> dict[str, Any]:
    pnls = [x.pnl for x in legs]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    pcts = [x.pnl_pct for x in legs]
    return {
        "trades": len(legs),
        "win_rate": _ratio(len(wins), len(legs)),
        "total_pnl": _rupees(sum(pnls)),
        "avg_pnl": _rupees(sum(pnls) / len(legs)) if legs else None,
        "avg_pnl_pct": sum(pcts) / len(pcts) if pcts else None,
        "best_pnl_pct": max(pcts) if pcts else None,
        "worst_pnl_pct": min(pcts) if pcts else None,
        "profit_factor": _ratio(sum(wins), -sum(losses)),
        "exit_reasons": dict(sorted(Counter(x.exit_reason for x in legs).items())),
    }


def summarize(result: BacktestResult) -> dict[str, Any]:
    capital = result.capital_paise
    legs = result.legs
    values = [capital + e for e in result.equity]
    total_pnl = result.equity[-1] if result.equity else 0
    total_return = total_pnl / capital
    span_ms = (result.step_ms[-1] - _first_start(result)) if result.step_ms else 0
    years = span_ms / YEAR_MS
    annualised = None
    if years > 0 and 1 + total_return > 0:
        annualised = (1 + total_return) ** (1 / years) - 1
    daily = daily_values(result.step_ms, values)
    per_year = len(daily) / years if years > 0 else 252.0
    dd = drawdowns(values)
    max_dd = max(dd, default=0.0)
    peak, max_dd_paise = -math.inf, 0.0
    for v in values:
        peak = max(peak, v)
        max_dd_paise = max(max_dd_paise, peak - v)
    overall = leg_stats(legs)
    per_leg = {str(n): leg_stats([x for x in legs if x.leg == n]) for n in (1, 2, 3)}
    return {
        "symbols": sorted(result.series),
        "bars": result.bars,
        "first_bar": _first_stamp(result),
        "last_bar": _last_stamp(result),
        "capital": _rupees(capital),
        "trades": len(legs),
        "ladders": len({x.ladder_id for x in legs}),
        "win_rate": overall["win_rate"],
        "total_pnl": _rupees(total_pnl),
        "total_return_pct": total_return * 100,
        "annualised_return_pct": None if annualised is None else annualised * 100,
        "sharpe": sharpe(daily, per_year),
        "max_drawdown_pct": max_dd * 100,
        "max_drawdown": _rupees(max_dd_paise),
        "exposure_pct": 100.0 * result.exposed_steps / result.steps if result.steps else 0.0,
        "profit_factor": overall["profit_factor"],
        "avg_pnl_pct": overall["avg_pnl_pct"],
        "stop_raises": result.stop_raises,
        "rejected_entries": dict(sorted(result.rejections.items())),
        "exit_reasons": overall["exit_reasons"],
        "per_leg": per_leg,
    }


def _first_start(result: BacktestResult) -> int:
    return min((s.bars[result.traded_from[k]].start_ms for k, s in result.series.items()
                if result.traded_from[k] < len(s.bars)), default=result.step_ms[0])


def _first_stamp(result: BacktestResult) -> str | None:
    firsts = [(s.bars[i].start_ms, s.stamps[i]) for k, s in result.series.items()
              if (i := result.traded_from[k]) < len(s.bars)]
    return min(firsts)[1] if firsts else None


def _last_stamp(result: BacktestResult) -> str | None:
    lasts = [(s.bars[-1].start_ms, s.stamps[-1]) for s in result.series.values() if s.bars]
    return max(lasts)[1] if lasts else None
