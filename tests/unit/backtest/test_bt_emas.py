"""candles.csv EMAs agree with TA-Lib itself (its EMA: SMA seed, alpha 2/(n+1)) to 1e-9."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import talib

from backtest.bars import read_csv
from backtest.core import run_backtest
from backtest.data import sample
from backtest.report import write_candles
from shared.domain.ladder import StrategyParams
from shared.domain.risk import RiskLimits
from shared.domain.session import SessionRules

PERIODS = (9, 21, 50, 200)


@pytest.mark.parametrize("name", ["GOOG", "EURUSD"])
def test_candles_emas_match_talib(name: str, tmp_path: Path) -> None:
    rules = SessionRules(enabled=False)
    result = run_backtest([read_csv(sample(name), rules)], StrategyParams(), RiskLimits(), rules,
                          start_ms=None)
    write_candles(tmp_path / "candles.csv", result, PERIODS)
    with (tmp_path / "candles.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    closes = np.array([float(r["close"]) for r in rows])
    assert len(rows) == len(result.series[name].bars) > 2000
    for period in PERIODS:
        expected = talib.EMA(closes, timeperiod=period)
        ours = [r[f"ema_{period}"] for r in rows]
        for i, (want, got) in enumerate(zip(expected, ours, strict=True)):
            if math.isnan(want):
                assert got == "", (period, i)
            else:
                assert abs(float(got) - want) <= 1e-9 * abs(want), (period, i, got, want)
        assert ours[period - 1] != "" and ours[period - 2] == ""
