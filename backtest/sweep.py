"""Settings overrides (``--set section.name=value``) and parameter sweeps (``--sweep``).

A sweep axis is ``strategy.p2_trigger_pct=0.25,0.5,1``; several axes make a grid (their
product). Every combination is one independent backtest on the same bars, run on two worker
processes; each gives one row of ``sweep.csv``. With exactly two axes a heat map of the total
return is drawn as well.
"""

from __future__ import annotations

import csv
import itertools
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from backtest.bars import BarSeries
from backtest.core import run_backtest
from backtest.metrics import summarize
from shared.config import RiskSettings, StrategySettings
from shared.domain.ladder import StrategyParams
from shared.domain.risk import RiskLimits
from shared.domain.session import SessionRules

SECTIONS: dict[str, type[BaseModel]] = {"strategy": StrategySettings, "risk": RiskSettings}
SWEEP_COLUMNS = ("trades", "ladders", "win_rate", "total_pnl", "total_return_pct",
                 "annualised_return_pct", "sharpe", "max_drawdown_pct", "exposure_pct",
                 "profit_factor", "avg_pnl_pct")


class SettingError(ValueError):
    """An unknown setting or a value it refuses."""


def _split(assignment: str) -> tuple[str, str, str]:
    key, eq, value = assignment.partition("=")
    section, dot, name = key.strip().partition(".")
    if not eq or not dot or section not in SECTIONS:
        raise SettingError(f"{assignment!r}: expected strategy.NAME=VALUE or risk.NAME=VALUE")
    if name not in SECTIONS[section].model_fields:
        raise SettingError(f"unknown setting {section}.{name}")
    return section, name, value.strip()


def _value(name: str, text: str) -> Any:
    return [int(x) for x in text.split(",")] if name == "ema_periods" else text


def apply_sets(strategy: StrategySettings, risk: RiskSettings, assignments: Sequence[str]
               ) -> tuple[StrategySettings, RiskSettings]:
    """The settings with ``section.name=value`` overrides applied, validated as at start-up."""
    values: dict[str, dict[str, Any]] = {"strategy": strategy.model_dump(),
                                         "risk": risk.model_dump()}
    for assignment in assignments:
        section, name, text = _split(assignment)
        values[section][name] = _value(name, text)
    try:
        return StrategySettings(**values["strategy"]), RiskSettings(**values["risk"])
    except ValidationError as exc:
        raise SettingError(str(exc)) from exc


@dataclass(frozen=True)
class Axis:
    key: str  # "strategy.p2_trigger_pct"
    values: tuple[str, ...]


def parse_axes(specs: Sequence[str]) -> list[Axis]:
    axes = []
    for spec in specs:
        section, name, text = _split(spec)
        if name == "ema_periods":
            raise SettingError("ema_periods cannot be swept (four numbers a value)")
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        if not values:
            raise SettingError(f"{spec!r}: no values")
        axes.append(Axis(f"{section}.{name}", values))
    if len({a.key for a in axes}) < len(axes):
        raise SettingError("the same setting is swept twice")
    return axes


def grid(axes: Sequence[Axis]) -> list[dict[str, str]]:
    return [dict(zip((a.key for a in axes), combo, strict=True))
            for combo in itertools.product(*(a.values for a in axes))]


# --- running -------------------------------------------------------------------------------

_JOB: dict[str, Any] = {}  # the bars and base settings, inherited by forked workers


def _run_one(combo: dict[str, str]) -> dict[str, Any]:
    job = _JOB
    strategy, risk = apply_sets(job["strategy"], job["risk"],
                                [f"{k}={v}" for k, v in combo.items()])
    result = run_backtest(job["series"], StrategyParams.from_settings(strategy),
                          RiskLimits.from_settings(risk), job["rules"],
                          start_ms=job["start_ms"], end_ms=job["end_ms"],
                          capital_paise=job["capital"])
    summary = summarize(result)
    return {**combo, **{k: summary[k] for k in SWEEP_COLUMNS}}


def run_sweep(series: dict[str, BarSeries], strategy: StrategySettings, risk: RiskSettings,
              rules: SessionRules, axes: Sequence[Axis], *, start_ms: int | None = None,
              end_ms: int | None = None, capital_paise: int | None = None, workers: int = 2,
              progress: Any = None) -> list[dict[str, Any]]:
    """One summary row per combination, in grid order."""
    combos = grid(axes)
    for combo in combos:  # refuse a bad value before starting anything
        apply_sets(strategy, risk, [f"{k}={v}" for k, v in combo.items()])
    if progress is not None:
        progress(0, len(combos))
    _JOB.update(series=series, strategy=strategy, risk=risk, rules=rules, start_ms=start_ms,
                end_ms=end_ms, capital=capital_paise)
    try:
        if workers <= 1 or len(combos) == 1:
            rows = []
            for i, combo in enumerate(combos):
                rows.append(_run_one(combo))
                if progress is not None:
                    progress(i + 1, len(combos))
            return rows
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        if method == "spawn":  # pragma: no cover - not on Linux
            raise RuntimeError("sweeps need the fork start method")
        with ctx.Pool(min(workers, len(combos), os.cpu_count() or 1)) as pool:
            rows = []
            for i, row in enumerate(pool.imap(_run_one, combos)):
                rows.append(row)
                if progress is not None:
                    progress(i + 1, len(combos))
            return rows
    finally:
        _JOB.clear()


def write_sweep(out: Path, rows: list[dict[str, Any]], axes: Sequence[Axis]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "sweep.csv"
    columns = [a.key for a in axes] + list(SWEEP_COLUMNS)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, columns, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if row[k] is None else row[k]) for k in columns})
    written = [path]
    if len(axes) == 2:
        written.append(heatmap(out / "sweep_heatmap.png", rows, axes))
    return written


def heatmap(path: Path, rows: list[dict[str, Any]], axes: Sequence[Axis],
            metric: str = "total_return_pct") -> Path:
    from backtest.report import _plt

    plt = _plt()
    ya, xa = axes
    table = {(r[ya.key], r[xa.key]): r[metric] for r in rows}
    cells = [[table[(y, x)] if table[(y, x)] is not None else float("nan") for x in xa.values]
             for y in ya.values]
    fig, ax = plt.subplots(figsize=(1.2 * len(xa.values) + 3, 0.8 * len(ya.values) + 2))
    im = ax.imshow(cells, cmap="RdYlGn", aspect="auto", origin="lower")
    ax.set_xticks(range(len(xa.values)), xa.values)
    ax.set_yticks(range(len(ya.values)), ya.values)
    ax.set_xlabel(xa.key)
    ax.set_ylabel(ya.key)
    for i, row in enumerate(cells):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_title(f"{metric} by {ya.key} × {xa.key}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
