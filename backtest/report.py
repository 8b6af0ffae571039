"""A backtest's files: trades.csv, candles.csv, summary.json, charts (PNG) and report.html.

Prices are written in rupees with two decimals, EMAs in rupees at full float precision, and
times exactly as the input had them (the timestamp text of the bar in which a thing happened:
for P1, the signal bar, filled at its close). The HTML report is self-contained: its charts are
PNGs embedded as data URIs, so it opens offline.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from backtest.core import BacktestResult
from backtest.metrics import drawdowns

TRADE_COLUMNS = ("symbol", "ladder_id", "leg", "entry_time", "entry_price", "qty", "exit_time",
                 "exit_price", "exit_reason", "pnl", "pnl_pct")
MAX_CHART_POINTS = 4000
MAX_PRICE_CHARTS = 12
_EPOCH = datetime(1970, 1, 1)


def _r(paise: int | None) -> str:
    if paise is None:
        return ""
    sign = "-" if paise < 0 else ""
    return f"{sign}{abs(paise) // 100}.{abs(paise) % 100:02d}"


def write_trades(path: Path, result: BacktestResult) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(TRADE_COLUMNS)
        for t in result.legs:
            w.writerow((t.symbol, t.ladder_id, t.leg, t.entry_time, _r(t.entry_price), t.qty,
                        t.exit_time, _r(t.exit_price), t.exit_reason, _r(t.pnl),
                        repr(round(t.pnl_pct, 10))))


def write_candles(path: Path, result: BacktestResult, ema_periods: tuple[int, ...]) -> None:
    """Every bar used (warm-up included) with the EMAs after it, empty while undefined."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("symbol", "timestamp", "open", "high", "low", "close", "volume",
                    *(f"ema_{p}" for p in ema_periods)))
        for sym, series in result.series.items():
            for bar, stamp, emas in zip(series.bars, series.stamps, result.emas[sym],
                                        strict=True):
                w.writerow((sym, stamp, _r(bar.open), _r(bar.high), _r(bar.low), _r(bar.close),
                            bar.volume, *("" if e is None else repr(e / 100) for e in emas)))


def write_summary(path: Path, summary: dict[str, Any], extra: dict[str, Any]) -> None:
    path.write_text(json.dumps({**summary, **extra}, indent=2, default=str) + "\n")


# --- charts ---------------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms + 19_800_000)  # IST wall time for the axis


def _thin(n: int) -> range:
    return range(0, n, max(1, math.ceil(n / MAX_CHART_POINTS)))


def equity_chart(path: Path, result: BacktestResult) -> None:
    plt = _plt()
    values = [(result.capital_paise + e) / 100 for e in result.equity]
    dd = drawdowns(values)
    idx = list(_thin(len(values)))
    if values and idx[-1] != len(values) - 1:
        idx.append(len(values) - 1)
    xs = [_dt(result.step_ms[i]) for i in idx]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax1.plot(xs, [values[i] for i in idx], color="#1f6feb", lw=1.2)
    ax1.set_ylabel("equity (₹)")
    ax1.set_title("Equity curve")
    ax1.grid(alpha=0.3)
    ax2.fill_between(xs, [-dd[i] * 100 for i in idx], 0, color="#d1242f", alpha=0.5, step="post")
    ax2.set_ylabel("drawdown (%)")
    ax2.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def price_chart(path: Path, result: BacktestResult, symbol: str,
                ema_periods: tuple[int, ...]) -> None:
    """Closes with the EMAs, entries (▲, by leg) and exits (▼) marked."""
    plt = _plt()
    series = result.series[symbol]
    lo = result.traded_from[symbol]
    idx = [lo + i for i in _thin(len(series.bars) - lo)]
    xs = [_dt(series.bars[i].start_ms) for i in idx]
    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(xs, [series.bars[i].close / 100 for i in idx], color="#24292f", lw=1.0,
            label="close")
    colours = ("#bf8700", "#8250df", "#0a7ea4", "#57606a")
    for j, period in enumerate(ema_periods):
        ys = [result.emas[symbol][i][j] for i in idx]
        ax.plot(xs, [math.nan if y is None else y / 100 for y in ys], lw=0.8,
                color=colours[j % 4], label=f"EMA {period}")
    legs = [t for t in result.legs if t.symbol == symbol]
    for n, colour in ((1, "#1a7f37"), (2, "#2da44e"), (3, "#4ac26b")):
        mine = [t for t in legs if t.leg == n]
        if mine:
            ax.scatter([_dt(t.entry_ms) for t in mine], [t.entry_price / 100 for t in mine],
                       marker="^", s=36, color=colour, zorder=3, label=f"P{n} entry")
    if legs:
        ax.scatter([_dt(t.exit_ms) for t in legs], [t.exit_price / 100 for t in legs],
                   marker="v", s=36, color="#cf222e", zorder=3, label="exit")
    ax.set_title(f"{symbol}: price, EMAs and trades")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- the HTML report ------------------------------------------------------------------------------


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "–"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def write_html(path: Path, result: BacktestResult, summary: dict[str, Any],
               charts: list[Path], max_rows: int = 2000) -> None:
    head = [k for k in summary if k != "per_leg"]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(summary[k]))}</td></tr>"
                   for k in head)
    legs = summary.get("per_leg", {})
    stat_keys = ("trades", "win_rate", "total_pnl", "avg_pnl_pct", "profit_factor",
                 "exit_reasons")
    leg_rows = "".join(
        f"<tr><th>P{n}</th>" + "".join(f"<td>{html.escape(_fmt(s[k]))}</td>" for k in stat_keys)
        + "</tr>" for n, s in legs.items())
    trades = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            t.symbol, t.leg, t.entry_time, _r(t.entry_price), t.qty, t.exit_time,
            _r(t.exit_price), t.exit_reason, _r(t.pnl), f"{t.pnl_pct:.2f}")) + "</tr>"
        for t in result.legs[:max_rows])
    more = (f"<p>{len(result.legs) - max_rows} more legs in trades.csv</p>"
            if len(result.legs) > max_rows else "")
    images = "".join(_img(p) for p in charts)
    path.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Ratchet backtest</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#24292f}}
table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #d0d7de;padding:3px 8px;
text-align:left;font-size:13px}}img{{max-width:100%;display:block;margin:12px 0}}
</style></head><body>
<h1>Ratchet backtest: {html.escape(", ".join(summary.get("symbols", [])))}</h1>
<h2>Summary</h2><table>{rows}</table>
<h2>Per leg</h2><table><tr><th></th>{"".join(f"<th>{k}</th>" for k in stat_keys)}</tr>
{leg_rows}</table>
<h2>Charts</h2>{images}
<h2>Trades</h2><table><tr>{"".join(f"<th>{c}</th>" for c in (
        "symbol", "leg", "entry_time", "entry_price", "qty", "exit_time", "exit_price",
        "exit_reason", "pnl", "pnl_pct"))}</tr>{trades}</table>{more}
</body></html>
""")


def write_all(out: Path, result: BacktestResult, summary: dict[str, Any],
              ema_periods: tuple[int, ...], extra: dict[str, Any] | None = None) -> list[Path]:
    """Every output file of one run into ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "trades.csv", out / "candles.csv", out / "summary.json"]
    write_trades(written[0], result)
    write_candles(written[1], result, ema_periods)
    write_summary(written[2], summary, extra or {})
    charts = [out / "equity.png"]
    equity_chart(charts[0], result)
    for sym in list(result.series)[:MAX_PRICE_CHARTS]:
        chart = out / f"price_{sym}.png"
        price_chart(chart, result, sym, ema_periods)
        charts.append(chart)
    write_html(out / "report.html", result, summary, charts)
    return [*written, *charts, out / "report.html"]
