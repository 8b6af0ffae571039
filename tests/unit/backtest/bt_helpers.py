"""Hand-built bars for the backtester's tests: a warm-up that ends on a signal bar at ₹1,000.00.

The warm-up (an uptrend, a short pullback, two up bars) makes EMA9 cross above EMA21 with
close > EMA50 > EMA200 on its last bar, whose close is exactly 100_000 paise. Bars are 15-minute
bars inside the NSE session, walking back from the signal bar's start.
"""

from __future__ import annotations

from datetime import datetime

from backtest.bars import BarSeries, bar_end
from backtest.core import BacktestResult, run_backtest
from shared.config import RiskSettings, StrategySettings
from shared.domain.candles import Bar
from shared.domain.ladder import StrategyParams
from shared.domain.risk import RiskLimits
from shared.domain.session import SessionRules, ist_datetime, ist_ordinal, ms_from_ist

RULES = SessionRules()
TF = 15 * 60_000
SIGNAL_CLOSE = 100_000


def warmup_closes() -> list[int]:
    closes = [100_000 + 20 * i for i in range(300)]
    closes += [closes[-1] - 40 * (i + 1) for i in range(8)]
    closes += [closes[-1] + 80, closes[-1] + 160]
    shift = SIGNAL_CLOSE - closes[-1]
    return [c + shift for c in closes]


def ist(day: int, hour: int, minute: int) -> int:
    return ms_from_ist(datetime(2024, 6, day, hour, minute))


def starts_before(first_start: int, count: int, rules: SessionRules = RULES) -> list[int]:
    """``count`` session bar starts ending just before ``first_start``, oldest first."""
    out: list[int] = []
    day = ist_ordinal(first_start)
    todays = [s for s in rules.session_bar_starts(day) if s < first_start]
    while len(out) < count:
        out = todays + out
        day -= 1
        while not rules.is_trading_day(day):
            day -= 1
        todays = rules.session_bar_starts(day)
    return out[-count:]


def starts_after(start: int, count: int, rules: SessionRules = RULES) -> list[int]:
    """``count`` session bar starts from ``start`` on (``start`` included)."""
    out: list[int] = []
    day = ist_ordinal(start)
    while len(out) < count:
        out += [s for s in rules.session_bar_starts(day) if s >= start]
        day += 1
    return out[:count]


def series(symbol: str, signal_start: int, after: list[tuple[int, int, int, int]],
           rules: SessionRules = RULES, tick: int = 5) -> BarSeries:
    """Warm-up bars ending on the signal bar at ``signal_start``, then ``after`` bars (o,h,l,c)."""
    closes = warmup_closes()
    starts = starts_before(signal_start, len(closes) - 1, rules) + starts_after(
        signal_start, len(after) + 1, rules)
    ohlc = [(c, c, c, c) for c in closes] + list(after)
    bars = [Bar(s, bar_end(s, TF, rules), o, h, lo, c, 100)
            for s, (o, h, lo, c) in zip(starts, ohlc, strict=True)]
    stamps = [ist_datetime(s).strftime("%Y-%m-%d %H:%M:%S") for s in starts]
    return BarSeries(symbol, bars, stamps, "NSE", tick, TF)


def params(**strategy: object) -> StrategyParams:
    return StrategyParams.from_settings(
        StrategySettings(**{"capital_per_position": 10_000, **strategy}))


def run(*all_series: BarSeries, strategy: dict[str, object] | None = None,
        risk: dict[str, object] | None = None, rules: SessionRules = RULES) -> BacktestResult:
    limits = RiskLimits.from_settings(RiskSettings(**(risk or {})))
    return run_backtest(list(all_series), params(**(strategy or {})), limits, rules)


def rows(result: BacktestResult) -> list[tuple[object, ...]]:
    """(symbol, leg, entry time, entry, qty, exit time, exit, reason, pnl) per leg, in paise."""
    return [(r.symbol, r.leg, r.entry_time, r.entry_price, r.qty, r.exit_time, r.exit_price,
             r.exit_reason, r.pnl) for r in result.legs]
