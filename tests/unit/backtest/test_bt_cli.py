"""``ratchet backtest`` end to end on the real sample data (GOOG daily, EURUSD hourly)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backtest.bars import read_csv
from backtest.core import run_backtest
from backtest.data import SAMPLES, sample
from backtest.metrics import summarize
from backtest.sweep import SettingError, apply_sets, grid, parse_axes
from ratchet.cli import app
from shared.config import RiskSettings, StrategySettings
from shared.domain.ladder import StrategyParams
from shared.domain.risk import RiskLimits
from shared.domain.session import SessionRules

runner = CliRunner()
OFF = SessionRules(enabled=False)


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_backtest_writes_every_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    invoke("backtest", "--data", str(SAMPLES), "--no-session", "--out", str(out))
    for name in ("trades.csv", "candles.csv", "summary.json", "equity.png", "report.html",
                 "price_GOOG.png", "price_EURUSD.png"):
        assert (out / name).stat().st_size > 0, name
    with (out / "trades.csv").open() as fh:
        trades = list(csv.DictReader(fh))
    assert list(trades[0]) == ["symbol", "ladder_id", "leg", "entry_time", "entry_price", "qty",
                               "exit_time", "exit_price", "exit_reason", "pnl", "pnl_pct"]
    assert trades and {t["leg"] for t in trades} == {"1", "2", "3"}
    stamps = {s: set(read_csv(sample(s), OFF).stamps) for s in ("GOOG", "EURUSD")}
    for t in trades:  # times are written exactly as the input had them
        assert t["entry_time"] in stamps[t["symbol"]] and t["exit_time"] in stamps[t["symbol"]]
        assert t["exit_reason"] in {"stop", "target", "end"}
        assert re.fullmatch(r"-?\d+\.\d\d", t["pnl"])
    goog = [t for t in trades if t["symbol"] == "GOOG"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", goog[0]["entry_time"])
    summary = json.loads((out / "summary.json").read_text())
    for key in ("trades", "win_rate", "total_return_pct", "annualised_return_pct", "sharpe",
                "max_drawdown_pct", "exposure_pct", "profit_factor", "per_leg"):
        assert key in summary, key
    assert summary["trades"] == len(trades)
    assert sum(s["trades"] for s in summary["per_leg"].values()) == len(trades)
    assert summary["total_pnl"] == pytest.approx(sum(float(t["pnl"]) for t in trades), abs=0.01)
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # self-contained


def test_settings_and_window(tmp_path: Path) -> None:
    out = tmp_path / "w"
    invoke("backtest", "--data", str(sample("GOOG")), "--no-session", "--out", str(out),
           "--from", "2008-01-01", "--to", "2010-12-31", "--set", "strategy.p1_stop_pct=4",
           "--set", "strategy.capital_per_position=20000", "--set", "risk.max_order_value=50000")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["first_bar"] == "2008-01-02" and summary["last_bar"] == "2010-12-31"
    assert summary["settings"]["strategy"]["p1_stop_pct"] == "4"
    with (out / "trades.csv").open() as fh:
        trades = list(csv.DictReader(fh))
    assert trades and all("2008-01-02" <= t["entry_time"] <= "2010-12-31" for t in trades)
    with (out / "candles.csv").open() as fh:  # earlier bars warmed the EMAs
        first = next(csv.DictReader(fh))
    assert first["timestamp"] == "2004-08-19"


def test_bad_setting_and_session_on_daily_bars_are_refused(tmp_path: Path) -> None:
    bad = runner.invoke(app, ["backtest", "--data", str(SAMPLES), "--no-session", "--set",
                              "strategy.p1_stop_pct=80", "--out", str(tmp_path)])
    assert bad.exit_code != 0
    daily = runner.invoke(app, ["backtest", "--data", str(sample("GOOG")), "--out", str(tmp_path)])
    assert daily.exit_code == 2 and "--no-session" in daily.output


def test_sweep_grid_rows_match_single_runs(tmp_path: Path) -> None:
    out = tmp_path / "s"
    invoke("backtest", "--data", str(sample("GOOG")), "--no-session", "--out", str(out),
           "--sweep", "strategy.p2_trigger_pct=0.25,0.5,1", "--sweep", "strategy.p1_stop_pct=2,3")
    with (out / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and (out / "sweep_heatmap.png").stat().st_size > 0
    series = [read_csv(sample("GOOG"), OFF)]
    for row in (rows[0], rows[-1]):
        strategy, risk = apply_sets(StrategySettings(), RiskSettings(), [
            f"strategy.p2_trigger_pct={row['strategy.p2_trigger_pct']}",
            f"strategy.p1_stop_pct={row['strategy.p1_stop_pct']}"])
        alone = summarize(run_backtest(series, StrategyParams.from_settings(strategy),
                                       RiskLimits.from_settings(risk), OFF))
        assert int(row["trades"]) == alone["trades"]
        assert float(row["total_pnl"]) == alone["total_pnl"]


def test_axes_and_grid() -> None:
    axes = parse_axes(["strategy.p2_trigger_pct=0.25,0.5", "risk.max_open_legs=1,2,3"])
    assert len(grid(axes)) == 6
    assert grid(axes)[1] == {"strategy.p2_trigger_pct": "0.25", "risk.max_open_legs": "2"}
    for spec in ("strategy.nope=1", "p2_trigger_pct=1", "strategy.p2_trigger_pct="):
        with pytest.raises(SettingError):
            parse_axes([spec])


def test_shipped_samples_are_the_installed_packages_bars(tmp_path: Path) -> None:
    from backtest.convert_samples import convert

    for path in convert(tmp_path):
        assert path.read_bytes() == (SAMPLES / path.name).read_bytes(), path.name
    goog = read_csv(sample("GOOG"), OFF)
    eurusd = read_csv(sample("EURUSD"), OFF)
    assert (len(goog), goog.timeframe_ms) == (2148, 86_400_000)
    assert (len(eurusd), eurusd.timeframe_ms) == (5000, 3_600_000)


def test_symbols_filter_and_missing_data(tmp_path: Path) -> None:
    out = tmp_path / "one"
    invoke("backtest", "--data", str(SAMPLES), "--symbols", "EURUSD", "--no-session", "--out",
           str(out))
    assert json.loads((out / "summary.json").read_text())["symbols"] == ["EURUSD"]
    for args in (["--data", str(tmp_path / "nope")], ["--data", str(SAMPLES), "--symbols", "X"]):
        result = runner.invoke(app, ["backtest", *args, "--no-session", "--out", str(out)])
        assert result.exit_code == 2, result.output
