"""Parity (issue 8): the same history through `run_backtest` and through the running services —
marketdata's replay feed in lock-step, strategy, execution with the paper broker — gives the same
legs with the same prices and quantities."""

from __future__ import annotations

import csv
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from backtest.bars import load_csv_dir
from backtest.core import run_backtest
from services.marketdata.feeds.replay import REPLAY_DONE
from shared.config import RiskSettings, StrategySettings
from shared.domain.ladder import StrategyParams
from shared.domain.money import to_rupees
from shared.domain.risk import RiskLimits
from shared.domain.session import SessionRules, ist_datetime, ms_from_ist
from shared.sim.market import generate_history, sim_instruments
from tests.conftest import private_dir
from tests.e2e.harness import ServiceProcesses

pytestmark = pytest.mark.e2e

EMAS = (3, 5, 8, 13)  # short EMAs: many signals in a short history
BARS = 160


def write_history(folder: Path) -> None:
    """Three symbols of intraday NSE-session bars from the sim's price process, as CSV."""
    rules = SessionRules()
    end = ms_from_ist(datetime(2026, 11, 20, 9, 15))
    for inst in sim_instruments(3, 11):
        with (folder / f"{inst.symbol}.csv").open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["timestamp", "open", "high", "low", "close", "volume"])
            for bar in generate_history(inst, 11, end, BARS, rules):
                stamp = ist_datetime(bar.start_ms).strftime("%Y-%m-%d %H:%M:%S")
                out.writerow([stamp, to_rupees(bar.open), to_rupees(bar.high), to_rupees(bar.low),
                              to_rupees(bar.close), bar.volume])


def test_backtest_and_lockstep_replay_give_the_same_legs(
    service_env: dict[str, str], sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    home = private_dir("ratchet-test-parity-")
    data = home / "data"
    data.mkdir()
    write_history(data)

    strategy = StrategySettings(ema_periods=EMAS)
    result = run_backtest(load_csv_dir(data, SessionRules()),
                          StrategyParams.from_settings(strategy),
                          RiskLimits.from_settings(RiskSettings()), SessionRules())
    expected = {(leg.ladder_id, leg.leg): leg for leg in result.legs}
    assert len(expected) >= 5, "the history must trade for the comparison to mean anything"

    env = {**service_env, "RATCHET_HOME": str(home), "RATCHET_FEED": "replay",
           "RATCHET_REPLAY_DATA": str(data), "RATCHET_STRATEGY__EMA_PERIODS": "[3,5,8,13]"}
    system = ServiceProcesses(env, home / "logs")
    try:
        for name in ("execution", "strategy", "marketdata"):
            system.start(name)
        deadline = time.monotonic() + 400
        while not redis_client.exists(REPLAY_DONE) and time.monotonic() < deadline:
            for name in ("execution", "strategy", "marketdata"):
                assert system.alive(name), system.log_tail(name)
            time.sleep(1)
        assert redis_client.exists(REPLAY_DONE), system.log_tail("marketdata")
        time.sleep(2)
    finally:
        system.stop_all()

    with sessions() as session:
        rows = session.execute(text(
            "SELECT ladder_id, position_number, qty, entry_price, exit_price, exit_reason, status "
            "FROM trades WHERE status IN ('OPEN', 'CLOSED')")).all()
    live = {(r.ladder_id, r.position_number): r for r in rows}
    assert set(live) == set(expected), (sorted(set(live) ^ set(expected)))
    closed = sum(1 for r in live.values() if r.status == "CLOSED")
    print(f"parity: {len(expected)} legs, {closed} closed")
    for key, leg in expected.items():
        row = live[key]
        assert row.qty == leg.qty, key
        assert row.entry_price == to_rupees(leg.entry_price), key
        if leg.exit_reason == "end":
            assert row.status == "OPEN", key  # the backtest closes what is open at the end
        else:
            assert row.status == "CLOSED" and row.exit_reason == leg.exit_reason, key
            assert row.exit_price == to_rupees(leg.exit_price), key
