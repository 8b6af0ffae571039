"""The whole system through the official Kite SDK: the simulator and the four services as separate
processes (marketdata on KiteTicker, execution on KiteBroker with its own order-update socket).

The simulator replays two scripted days' worth of 15-minute bars (an uptrend, a dip, a crossing
bar, a rise): ticks in, candles out, an entry on each symbol, its GTT at the simulator, trailing
modifications, then two ways out: ITC's stop triggers and its GTT's limit order fills; SBIN gaps
through its stop, the GTT's limit order does not fill, and execution exits at market after the
timeout. Everything is checked in Postgres, at the simulator and through the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from ratchet.servers import free_port
from shared.auth import create_api_key
from shared.broker_tokens import KEY_ENV, TokenStore, new_key
from shared.contracts import streams
from tests.e2e.harness import ServiceProcesses
from tests.integration.kite.kite_helpers import API_KEY, API_SECRET, Sim, ist_ms, wait_for

pytestmark = pytest.mark.e2e

BASES = {"ITC": 425.0, "SBIN": 810.0}
SPEED = 600  # a 15-minute bar every 1.5 s
ENTRY_BAR = 15  # the crossing bar's index (its close at 13:15 IST)


def scripted_bars(base: float) -> list[tuple[float, float, float, float]]:
    """12 bars up, a 3-bar dip, a crossing bar (EMA 3/5 with close > EMA8 > EMA13), 5 bars up,
    then flat (a replay holds its last close)."""
    def tick(x: float) -> float:
        return round(round(x / 0.05) * 0.05, 2)

    out: list[tuple[float, float, float, float]] = []
    price = base
    for move in [1.004] * 12 + [0.995] * 3 + [1.012] + [1.004] * 5 + [1.0]:
        close = price * move
        high, low = max(price, close) * 1.001, min(price, close) * 0.999
        out.append((tick(price), tick(high), tick(low), tick(close)))
        price = close
    return out


def q(sessions: sessionmaker[Session], sql: str, **params: Any) -> list[Any]:
    with sessions() as session:
        return list(session.execute(text(sql), params))


@pytest.fixture
def replay_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "replay"
    folder.mkdir()
    for symbol, base in BASES.items():
        rows = ["open,high,low,close"] + [",".join(map(str, b)) for b in scripted_bars(base)]
        (folder / f"{symbol}.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def sim(tmp_path: Path, replay_dir: Path) -> Iterator[Sim]:
    proc = Sim(tmp_path / "kite-sim", "--replay-dir", str(replay_dir), paused=True, speed=SPEED,
               symbols=6)
    yield proc
    proc.stop()


def test_trading_through_kite_from_tick_to_exit(
    sim: Sim, service_env: dict[str, str], sessions: sessionmaker[Session],
    redis_client: redis.Redis, tmp_path: Path,
) -> None:
    key = new_key()
    TokenStore(sessions, key).save(API_KEY, sim.login(), "SIM001")
    with sessions.begin() as session:
        admin_key = create_api_key(session, "e2e", "admin")
    port = free_port()
    env = {**service_env, "RATCHET_FEED": "kite-sim", "RATCHET_BROKER": "kite",
           "RATCHET_KITE_ROOT": sim.root, "RATCHET_KITE_WS_ROOT": sim.ws_root,
           "RATCHET_KITE_API_KEY": API_KEY, "RATCHET_KITE_API_SECRET": API_SECRET, KEY_ENV: key,
           "RATCHET_KITE_SYMBOLS": "NSE:ITC,NSE:SBIN", "RATCHET_API_PORT": str(port),
           "RATCHET_STRATEGY__EMA_PERIODS": "[3,5,8,13]",
           "RATCHET_STRATEGY__P2_TRIGGER_PCT": "50", "RATCHET_STRATEGY__P3_TRIGGER_PCT": "50",
           "RATCHET_MARKETDATA__HISTORY_BARS": "60",
           "RATCHET_EXECUTION__GTT_CHILD_TIMEOUT_S": "3",
           "RATCHET_EXECUTION__UNKNOWN_SETTLE_S": "2"}
    system = ServiceProcesses(env, tmp_path / "logs")
    api = f"http://127.0.0.1:{port}/api/v1"
    headers = {"X-API-Key": admin_key}

    def get(path: str) -> Any:
        r = httpx.get(f"{api}{path}", headers=headers, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def alive() -> None:
        for name in ("marketdata", "execution", "strategy", "api"):
            assert system.alive(name), f"{name} died:\n{system.log_tail(name)}"

    def sim_gtt(symbol: str) -> dict[str, Any] | None:
        found = [g for g in sim.kite().get_gtts() if g["condition"]["tradingsymbol"] == symbol]
        return found[0] if found else None

    try:
        for name in ("marketdata", "execution", "strategy", "api"):
            system.start(name)

        def ready() -> bool:
            alive()
            warm = redis_client.hget("md.kite", "pending") == b"0"
            up = all(redis_client.exists(f"ratchet.ready.{n}.0")
                     for n in ("marketdata", "execution", "strategy"))
            try:
                api_up = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                api_up = False
            return warm and up and api_up

        wait_for(ready, 90, "four services up, the feed warmed from history")
        sim.admin("POST", "/clock", {"paused": False})  # the scripted day starts trading

        # Ticks in, candles out (with EMAs), in Postgres.
        wait_for(lambda: q(sessions, "SELECT count(*) FROM ohlcv WHERE ts >= to_timestamp(:t)",
                           t=ist_ms("2025-01-06", "09:15") / 1000)[0][0] >= 4, 60,
                 "live candles in ohlcv")
        assert {f.decode() for f in redis_client.hkeys(streams.LTP_HASH)} == {"NSE:ITC", "NSE:SBIN"}

        # An entry on each symbol at the crossing bar, filled at the simulator, each with a GTT.
        def entries() -> list[Any]:
            alive()
            return q(sessions, "SELECT symbol, tag, broker_order_id, filled_qty, average_price "
                               "FROM orders WHERE side = 'BUY' AND state = 'FILLED'")

        filled = wait_for(lambda: len(entries()) == 2 and entries(), 90, "both entries filled")
        book = {o["order_id"]: o for o in sim.kite().orders()}
        for _symbol, tag, broker_id, qty, avg in filled:
            at_sim = book[broker_id]
            assert at_sim["tag"] == tag and at_sim["status"] == "COMPLETE"
            assert at_sim["order_type"] == "MARKET" and at_sim["market_protection"] > 0
            assert at_sim["filled_quantity"] == qty and float(avg) == at_sim["average_price"]
        ladders = {row[0]: row[1] for row in q(sessions, "SELECT symbol, id FROM ladders")}
        assert set(ladders) == {"ITC", "SBIN"}

        wait_for(lambda: len(q(sessions, "SELECT 1 FROM gtts WHERE state = 'ACTIVE'")) == 2, 60,
                 "both GTTs active")
        for symbol in BASES:
            g = sim_gtt(symbol)
            assert g is not None and g["status"] == "active" and g["type"] == "two-leg"

        # Trailing: the stops step up at the simulator as the price rises.
        def raised() -> bool:
            alive()
            rows = q(sessions, "SELECT g.symbol, g.trigger_price, t.initial_stop FROM gtts g "
                               "JOIN trades t ON t.ladder_id = g.ladder_id "
                               "AND t.position_number = g.leg")
            return len(rows) == 2 and all(trigger > initial for _, trigger, initial in rows)

        wait_for(raised, 60, "trailing modifications of both stops")
        wait_for(lambda: sim.state()["now_ms"] >= ist_ms("2025-01-06", "14:35"), 60,
                 "the scripted rise to end")
        sim.admin("POST", "/clock", {"paused": True})  # hold the day: the exits are driven below
        wait_for(lambda: not q(sessions, "SELECT 1 FROM orders WHERE state NOT IN "
                                         "('FILLED','REJECTED','CANCELLED')"), 30, "quiet book")
        stops: dict[str, float] = {}
        for symbol in BASES:
            g = sim_gtt(symbol)
            assert g is not None
            stops[symbol] = g["condition"]["trigger_values"][0]
            mine = q(sessions, "SELECT trigger_price FROM gtts WHERE symbol = :s", s=symbol)[0][0]
            assert float(mine) == stops[symbol]
        positions = get("/positions")
        assert {p["symbol"] for p in positions} == {"ITC", "SBIN"}
        assert all(p["stop"] > p["initial_stop"] and p["target"] for p in positions)
        assert {g["symbol"] for g in get("/gtts")["items"] if g["state"] == "ACTIVE"} == set(BASES)

        # ITC: the price falls just through its stop; the GTT fires and its limit order fills.
        sim.set_price("ITC", stops["ITC"] - 0.05)
        wait_for(lambda: q(sessions, "SELECT status FROM trades WHERE symbol = 'ITC'")[0][0]
                 == "CLOSED", 30, "ITC's leg closed by its GTT")
        trade = q(sessions, "SELECT exit_price, exit_reason FROM trades WHERE symbol = 'ITC'")[0]
        assert trade[1] == "stop" and float(trade[0]) <= stops["ITC"]
        fired = sim_gtt("ITC")
        assert fired is not None and fired["status"] == "triggered"
        child = fired["orders"][0]["result"]["order_result"]["order_id"]
        assert sim.kite().order_history(child)[-1]["status"] == "COMPLETE"
        assert q(sessions, "SELECT state FROM gtts WHERE symbol = 'ITC'")[0][0] == "TRIGGERED"

        # SBIN: a gap far through the stop; the limit order cannot fill; a market exit after the
        # timeout, with an alert.
        sim.set_price("SBIN", round(stops["SBIN"] * 0.95 / 0.05) * 0.05)
        wait_for(lambda: q(sessions, "SELECT status FROM trades WHERE symbol = 'SBIN'")[0][0]
                 == "CLOSED", 45, "SBIN's leg closed by the market exit")
        trade = q(sessions, "SELECT exit_price, exit_reason FROM trades WHERE symbol = 'SBIN'")[0]
        assert trade[1] == "gtt_unfilled" and float(trade[0]) < stops["SBIN"] * 0.99
        fired = sim_gtt("SBIN")
        assert fired is not None and fired["status"] == "triggered"
        child = fired["orders"][0]["result"]["order_result"]["order_id"]
        assert sim.kite().order_history(child)[-1]["status"] == "CANCELLED"
        sells = [o for o in sim.kite().orders() if o["tradingsymbol"] == "SBIN"
                 and o["transaction_type"] == "SELL" and o["order_type"] == "MARKET"]
        assert len(sells) == 1 and sells[0]["status"] == "COMPLETE" and sells[0]["tag"]
        alerts = get("/alerts")["items"]
        assert any(a["code"] == "gtt_child_unfilled" and a["symbol"] == "SBIN" for a in alerts)

        # The API tells the same story.
        assert get("/positions") == []
        trades = {t["symbol"]: t for t in get("/trades")["items"]}
        assert trades["ITC"]["exit_reason"] == "stop"
        assert trades["SBIN"]["exit_reason"] == "gtt_unfilled"
        orders = get("/orders")["items"]
        assert sum(o["side"] == "BUY" and o["state"] == "FILLED" for o in orders) == 2
        assert sum(o["side"] == "SELL" and o["state"] == "FILLED" for o in orders) == 1
        assert q(sessions, "SELECT count(*) FROM (SELECT tag FROM orders GROUP BY tag "
                           "HAVING count(*) > 1) d")[0][0] == 0
        alive()
    finally:
        system.stop_all()
