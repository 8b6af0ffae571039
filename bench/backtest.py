"""backtest_bars_per_s and backtest_speedup_vs_peer.

backtest_bars_per_s: ``run_backtest`` — the live MomentumEngine, exit_for_tick and check_order,
four ticks a bar — over 1,000,000 bars of one symbol on one core. The bars are real: the hourly
EURUSD bars shipped in ``backtesting`` (backtest/data), each bar's open/high/low/close relative
to the previous close replayed in a loop around ₹1,000 with its moves scaled ×4 (an NSE stock's
15-minute bars move about that much), on the 0.05 tick.

backtest_speedup_vs_peer: the same strategy on the same bars in the same run in backtesting.py
(a well-known Python backtester): its time over ours. The peer gets the same rules as closely
as its bar model allows — EMAs by TA-Lib (vectorised, its idiom), P1 at the signal bar's close
(``trade_on_close``) with an OCO stop/target, P2/P3 as stop-entry orders at their trigger
prices, stops trailing each bar's high — so its trades are close to ours, not identical (it has
no intra-bar tick path).
"""

from __future__ import annotations

import csv
import math
import sys
import time

from backtest.bars import BarSeries
from backtest.core import run_backtest
from backtest.data import sample
from shared.domain.candles import Bar
from shared.domain.ladder import StrategyParams
from shared.domain.risk import RiskLimits
from shared.domain.session import SessionRules

BARS = 1_000_000
TF_MS = 15 * 60_000
SCALE = 4.0
TICK = 5


def bench_bars(n: int = BARS) -> list[Bar]:
    """``n`` bars replaying the real EURUSD hourly moves (scaled) around ₹1,000, on the tick."""
    with sample("EURUSD").open() as fh:
        rows = [tuple(float(x) for x in r[1:5]) for r in list(csv.reader(fh))[1:]]
    rel = []
    prev = rows[0][3]
    for o, h, lo, c in rows[1:]:
        rel.append(tuple(1 + SCALE * (x / prev - 1) for x in (o, h, lo, c)))
        prev = c
    bars: list[Bar] = []
    level = 100_000.0
    t = 0
    k = 0
    while len(bars) < n:
        ro, rh, rl, rc = rel[k % len(rel)]
        o, h, lo, c = (max(TICK, round(level * r / TICK) * TICK) for r in (ro, rh, rl, rc))
        h, lo = max(h, o, c), min(lo, o, c)
        bars.append(Bar(t, t + TF_MS, o, h, lo, c, 1000))
        level = level * rc
        if k % len(rel) == len(rel) - 1:  # keep the level near ₹1,000 between loops
            level = 100_000.0 * math.exp(0.2 * math.log(level / 100_000.0))
        t += TF_MS
        k += 1
    return bars


def ours(bars: list[Bar]) -> tuple[float, int]:
    rules = SessionRules(enabled=False)
    series = BarSeries("BENCH", bars, [""] * len(bars), "NSE", TICK, TF_MS)
    began = time.perf_counter()
    result = run_backtest([series], StrategyParams(), RiskLimits(), rules)
    return time.perf_counter() - began, len(result.legs)


def peer(bars: list[Bar]) -> tuple[float, int]:
    """The strategy in backtesting.py on the same bars (time includes its indicators)."""
    import warnings

    import numpy as np
    import pandas as pd
    import talib
    from backtesting import Backtest, Strategy

    params = StrategyParams()
    cap = params.capital_per_position_paise / 100
    p1_stop, p1_target = params.p1_stop_s / 1e6, params.p1_target_s / 1e6
    p2_trig, p2_stop = params.p2_trigger_s / 1e6, params.p2_stop_s / 1e6
    p3_trig, p3_stop = params.p3_trigger_s / 1e6, params.p3_stop_s / 1e6
    step = params.trail_min_step_s / 1e6
    tick = TICK / 100
    stop_pct = {1: p1_stop, 2: p2_stop, 3: p3_stop}

    class Ladder(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            close = np.asarray(self.data.Close, dtype=float)
            # one attribute each: backtesting.py only windows indicators held as attributes
            self.e9, self.e21, self.e50, self.e200 = (
                self.I(talib.EMA, close, p, name=f"ema{p}") for p in (9, 21, 50, 200))
            self.p2 = self.p3 = False

        def next(self) -> None:
            e9, e21, e50, e200 = self.e9, self.e21, self.e50, self.e200
            high = self.data.High[-1]
            trades = self.trades
            for trade in trades:  # the ratchet: trail the bar's high
                cand = math.floor(high * (1 - stop_pct[trade.tag]) / tick) * tick
                sl = trade.sl
                if sl is not None and cand - sl >= tick and cand >= sl * (1 + step):
                    trade.sl = cand
            if not trades:
                for order in self.orders:
                    order.cancel()
                self.p2 = self.p3 = False
                close = self.data.Close[-1]
                if len(e200) > 1 and not math.isnan(e200[-1]) and not math.isnan(e9[-2]) and (
                        e9[-2] <= e21[-2] and e9[-1] > e21[-1] and close > e50[-1] > e200[-1]):
                    qty = math.floor(cap / close)
                    if qty > 0:
                        self.buy(size=qty, tag=1,
                                 sl=math.floor(close * (1 - p1_stop) / tick) * tick,
                                 tp=math.ceil(close * (1 + p1_target) / tick) * tick)
                return
            legs = {t.tag: t for t in trades}
            if 1 not in legs:
                for order in self.orders:  # P2/P3 need P1 open (keep the legs' stops)
                    if not order.is_contingent:
                        order.cancel()
                return
            if not self.p2:
                trig = math.ceil(legs[1].entry_price * (1 + p2_trig) / tick + 1e-9) * tick
                self.p2 = True
                self.buy(size=math.floor(cap / trig), stop=trig, tag=2,
                         sl=math.floor(trig * (1 - p2_stop) / tick) * tick)
            elif not self.p3 and 2 in legs:
                a, b = legs[1].entry_price, legs[2].entry_price
                trig = math.ceil(2 * (1 + p3_trig) / (1 / a + 1 / b) / tick + 1e-9) * tick
                self.p3 = True
                self.buy(size=math.floor(cap / trig), stop=trig, tag=3,
                         sl=math.floor(trig * (1 - p3_stop) / tick) * tick)

    frame = pd.DataFrame(
        {"Open": [b.open / 100 for b in bars], "High": [b.high / 100 for b in bars],
         "Low": [b.low / 100 for b in bars], "Close": [b.close / 100 for b in bars],
         "Volume": [b.volume for b in bars]},
        index=pd.date_range("2000-01-03", periods=len(bars), freq="15min"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        began = time.perf_counter()
        stats = Backtest(frame, Ladder, cash=10_000_000, commission=0.0, trade_on_close=True,
                         exclusive_orders=False, finalize_trades=True).run()
        elapsed = time.perf_counter() - began
    return elapsed, int(stats["# Trades"])


def run() -> list[tuple[str, float, str]]:
    bars = bench_bars()
    t_ours, legs = ours(bars)
    print(f"[bench] backtest: {len(bars):,} bars, {legs} legs in {t_ours:.2f}s", file=sys.stderr)
    t_peer, peer_trades = peer(bars)
    print(f"[bench] backtest: backtesting.py {peer_trades} trades in {t_peer:.2f}s",
          file=sys.stderr)
    return [
        ("backtest_bars_per_s", len(bars) / t_ours, "bars/s"),
        ("backtest_peer_bars_per_s", len(bars) / t_peer, "bars/s"),
        ("backtest_speedup_vs_peer", t_peer / t_ours, "x"),
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value:.6g} {unit}")
