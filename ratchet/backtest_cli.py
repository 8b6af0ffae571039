"""``ratchet backtest`` and ``ratchet backfill`` (registered in ratchet/cli.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer

from shared.domain.session import DAY_MS, SessionRules

ProgressFn = Callable[[int, int], None]


def _split_symbols(values: list[str] | None) -> list[str]:
    return [s.strip() for v in values or [] for s in v.split(",") if s.strip()]


def parse_when(text: str | None, *, end: bool = False) -> int | None:
    """Epoch ms of --from/--to: a date (``--to`` takes the whole day) or a datetime; naive
    times are IST like naive data."""
    from backtest.bars import DataError, parse_ms

    if not text:
        return None
    try:
        ms = parse_ms(text)
    except DataError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if end and len(text.strip()) == 10:  # a bare date: up to its last millisecond
        ms += DAY_MS - 1
    return ms


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[ProgressFn | None]:
    """A rich progress bar on stderr when it is a terminal (nothing otherwise)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def backtest(
    data: Annotated[str | None, typer.Option(
        "--data", help="a CSV file or a folder of them (SYMBOL.csv: timestamp,open,high,low,"
        "close,volume); 'ohlcv' or nothing: the ohlcv table")] = None,
    symbols: Annotated[list[str] | None, typer.Option(
        "--symbols", help="symbols to run (comma-separated or repeated); default: every CSV")
    ] = None,
    from_: Annotated[str | None, typer.Option(
        "--from", help="first traded bar (date or datetime); earlier bars warm the EMAs")] = None,
    to: Annotated[str | None, typer.Option("--to", help="last bar (date or datetime)")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a setting: strategy.p1_stop_pct=2 (repeatable)")] = None,
    sweep: Annotated[list[str] | None, typer.Option(
        "--sweep", help="sweep a setting: strategy.p2_trigger_pct=0.25,0.5,1 (repeatable: a grid)"
    )] = None,
    out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("backtest-out"),
    no_session: Annotated[bool, typer.Option(
        "--no-session", help="turn NSE session rules off (hours, cut-off) for other markets")
    ] = False,
    tick: Annotated[str | None, typer.Option(
        "--tick", help="tick size in rupees (default: the instrument's, else 0.05, else the "
        "finest step the prices use)")] = None,
    exchange: Annotated[str, typer.Option(help="exchange of the symbols")] = "NSE",
    timeframe: Annotated[int | None, typer.Option(
        help="ohlcv table: bar minutes (default strategy.timeframe_minutes)")] = None,
    capital: Annotated[str | None, typer.Option(
        help="capital for returns in rupees (default: 3 legs a symbol, capped at "
        "risk.max_capital)")] = None,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="progress bar (default: on a terminal)")] = None,
) -> None:
    """Replay history through the live strategy core and write trades, candles, summary, charts."""
    from backtest.bars import DataError, load_csv_dir, load_ohlcv
    from backtest.core import run_backtest
    from backtest.metrics import summarize
    from backtest.report import write_all
    from backtest.sweep import SettingError, apply_sets, parse_axes, run_sweep, write_sweep
    from shared.config import load_settings
    from shared.domain.ladder import StrategyParams
    from shared.domain.money import to_paise
    from shared.domain.risk import RiskLimits

    settings = load_settings()
    try:
        strategy, risk = apply_sets(settings.strategy, settings.risk, set_ or [])
        axes = parse_axes(sweep or [])
    except SettingError as exc:
        raise typer.BadParameter(str(exc)) from exc
    rules = SessionRules(timeframe_minutes=strategy.timeframe_minutes,
                         entry_cutoff_minutes=strategy.entry_cutoff_minutes,
                         enabled=not no_session)
    wanted = _split_symbols(symbols)
    tick_paise = to_paise(Decimal(tick)) if tick else None
    start_ms, end_ms = parse_when(from_), parse_when(to, end=True)
    loading = time.perf_counter()
    try:
        if data is None or data == "ohlcv":
            if not wanted:
                raise typer.BadParameter("--symbols is needed with the ohlcv table")
            from ratchet.cli import _sessions

            series = load_ohlcv(_sessions(), wanted, rules, exchange=exchange,
                                timeframe_minutes=timeframe or strategy.timeframe_minutes,
                                to_ms=end_ms)
            if tick_paise:
                for s in series.values():
                    s.tick = tick_paise
        else:
            series = load_csv_dir(Path(data), rules, wanted, exchange=exchange, tick=tick_paise)
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    _check_session(series, rules)
    typer.echo(f"loaded {sum(len(s) for s in series.values())} bars of {len(series)} symbol(s) "
               f"in {time.perf_counter() - loading:.1f}s", err=True)
    show = sys.stderr.isatty() if progress is None else progress
    cap = to_paise(Decimal(capital)) if capital else None
    began = time.perf_counter()
    if axes:
        with progress_bar("sweep", show) as update:
            rows = run_sweep(series, strategy, risk, rules, axes, start_ms=start_ms,
                             end_ms=end_ms, capital_paise=cap, progress=update)
        for path in write_sweep(out, rows, axes):
            typer.echo(f"wrote {path}")
        typer.echo(f"{len(rows)} combinations in {time.perf_counter() - began:.1f}s")
        return
    params = StrategyParams.from_settings(strategy)
    with progress_bar("backtest", show) as update:
        result = run_backtest(series, params, RiskLimits.from_settings(risk), rules,
                              start_ms=start_ms, end_ms=end_ms, capital_paise=cap,
                              progress=update)
    elapsed = time.perf_counter() - began
    summary = summarize(result)
    extra = {"settings": {"strategy": strategy.model_dump(mode="json"),
                          "risk": risk.model_dump(mode="json")},
             "session_rules": rules.enabled,
             "ticks": {s: series[s].tick / 100 for s in series},
             "notes": {s: series[s].notes for s in series if series[s].notes},
             "seconds": round(elapsed, 3)}
    written = write_all(out, result, summary, params.ema_periods, extra)
    for path in written:
        typer.echo(f"wrote {path}")
    ret = summary["total_return_pct"]
    typer.echo(f"{summary['bars']} bars, {summary['trades']} legs, win rate "
               f"{_pct(summary['win_rate'])}, return {ret:.2f}%, max drawdown "
               f"{summary['max_drawdown_pct']:.2f}% ({elapsed:.2f}s)")


def _pct(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:.1f}%"


def _check_session(series: dict, rules: SessionRules) -> None:
    if not rules.enabled:
        return
    empty = [s for s, v in series.items() if not any(rules.in_session(b.start_ms)
                                                     for b in v.bars)]
    daily = [s for s, v in series.items() if v.timeframe_ms >= DAY_MS]
    if empty or daily:
        typer.echo(f"error: {', '.join(sorted(set(empty + daily)))}: daily bars or bars outside "
                   "the NSE session; use --no-session for data that is not NSE intraday", err=True)
        raise typer.Exit(2)


def backfill(
    symbols: Annotated[list[str], typer.Option(
        "--symbols", help="trading symbols (comma-separated or repeated)")],
    from_: Annotated[str, typer.Option("--from", help="first day (YYYY-MM-DD, IST)")],
    to: Annotated[str | None, typer.Option("--to", help="last day (default: today)")] = None,
    interval: Annotated[str, typer.Option(
        help="Kite interval: minute, 3minute, 5minute, 10minute, 15minute, 30minute, "
        "60minute, day")] = "15minute",
    exchange: Annotated[str, typer.Option(help="exchange")] = "NSE",
    access_token: Annotated[str | None, typer.Option(
        envvar="RATCHET_KITE_ACCESS_TOKEN", help="today's Kite access token")] = None,
    request_token: Annotated[str | None, typer.Option(
        help="exchange a login request token for a session (needs RATCHET_KITE_API_SECRET)")
    ] = None,
    rate: Annotated[float, typer.Option(help="requests per second (Kite allows 3)")] = 3.0,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="progress bar (default: on a terminal)")] = None,
) -> None:
    """Load history from Kite's historical endpoint into ohlcv (resumes after the last bar)."""
    from backtest.backfill import Backfill, BackfillError, kite_client
    from ratchet.cli import _sessions, _settings

    settings = _settings()
    try:
        first = date.fromisoformat(from_)
        last = date.fromisoformat(to) if to else (datetime.now(UTC) + timedelta(hours=5.5)).date()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        kite = kite_client(settings, access_token, request_token)
        job = Backfill(kite, _sessions(), exchange=exchange, interval=interval,
                       rate_per_s=min(rate, 3.0))
        show = sys.stderr.isatty() if progress is None else progress
        with progress_bar("backfill", show) as update:
            report = job.run(_split_symbols(symbols), first, last, progress=update,
                             log=lambda line: typer.echo(line, err=True))
    except BackfillError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for symbol, count in report.items():
        typer.echo(f"{exchange}:{symbol}: {count} new bars")
