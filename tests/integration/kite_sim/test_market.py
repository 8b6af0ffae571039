"""The simulated market through the SDK: gaps through GTT triggers, circuit freezes, settlement
of CNC buys into holdings, the running clock, and a book that survives a kill."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from kite_sim_helpers import SimProcess, assert_shape, fixture
from kiteconnect import KiteConnect


def _place(kite: KiteConnect, symbol: str, side: str, qty: int, order_type: str = "MARKET",
           **kw: object) -> str:
    args: dict[str, object] = dict(variety="regular", exchange="NSE", tradingsymbol=symbol,
                                   transaction_type=side, quantity=qty, product="CNC",
                                   order_type=order_type)
    if order_type == "MARKET":
        args["market_protection"] = 2
    args.update(kw)
    return str(kite.place_order(**args))


def _status(kite: KiteConnect, oid: str) -> str:
    return str(kite.order_history(oid)[-1]["status"])


def test_gap_through_gtt_trigger_leaves_its_limit_order_open(sim: SimProcess,
                                                             kite: KiteConnect) -> None:
    sim.set_price("SBIN", 800.0)
    assert _status(kite, _place(kite, "SBIN", "BUY", 10)) == "COMPLETE"
    gid = kite.place_gtt(kite.GTT_TYPE_SINGLE, "SBIN", "NSE", [780.0], 800.0, [dict(
        transaction_type="SELL", quantity=10, order_type="LIMIT", product="CNC",
        price=776.1)])["trigger_id"]
    sim.set_price("SBIN", 790.0)
    assert kite.get_gtt(gid)["status"] == "active"  # above the trigger: nothing happens
    sim.set_price("SBIN", 760.0)  # gaps straight through trigger and limit
    gtt = kite.get_gtt(gid)
    assert gtt["status"] == "triggered"
    result = gtt["orders"][0]["result"]
    assert_shape(fixture("gtt_triggered_leg_result.json"), result)
    assert result["triggered_at"] == 760.0 and result["order_result"]["status"] == "success"
    child = result["order_result"]["order_id"]
    order = kite.order_history(child)[-1]
    assert (order["status"], order["order_type"], order["price"]) == ("OPEN", "LIMIT", 776.1)
    assert order["transaction_type"] == "SELL" and order["meta"] == {"gtt": gid}
    sim.set_price("SBIN", 768.0)
    sim.admin("POST", "/advance", {"seconds": 5})
    sim.set_price("SBIN", 770.0)
    assert _status(kite, child) == "OPEN"  # still below its limit: no fill
    sim.set_price("SBIN", 777.0)
    final = kite.order_history(child)[-1]
    assert final["status"] == "COMPLETE" and final["average_price"] == 777.0


def test_oco_target_leg_fires_and_the_stop_leg_is_void(sim: SimProcess,
                                                       kite: KiteConnect) -> None:
    sim.set_price("ITC", 400.0)
    _place(kite, "ITC", "BUY", 5)
    legs = [dict(transaction_type="SELL", quantity=5, order_type="LIMIT", product="CNC",
                 price=389.0),
            dict(transaction_type="SELL", quantity=5, order_type="LIMIT", product="CNC",
                 price=420.0)]
    gid = kite.place_gtt(kite.GTT_TYPE_OCO, "ITC", "NSE", [390.0, 420.0], 400.0,
                         legs)["trigger_id"]
    sim.set_price("ITC", 421.0)
    gtt = kite.get_gtt(gid)
    assert gtt["status"] == "triggered" and gtt["orders"][0]["result"] is None
    child = gtt["orders"][1]["result"]["order_result"]["order_id"]
    assert kite.order_history(child)[-1]["status"] == "COMPLETE"
    sim.set_price("ITC", 380.0)
    assert kite.get_gtt(gid)["orders"][0]["result"] is None  # OCO: the stop never fires


def test_circuit_freezes_price_and_stops_fills(sim: SimProcess, kite: KiteConnect) -> None:
    quote = kite.quote("NSE:TATASTEEL")["NSE:TATASTEEL"]
    upper, lower = quote["upper_circuit_limit"], quote["lower_circuit_limit"]
    frozen = sim.set_price("TATASTEEL", upper * 1.3)  # asks for more than the band allows
    assert frozen["last_price"] == upper
    quote = kite.quote("NSE:TATASTEEL")["NSE:TATASTEEL"]
    assert quote["last_price"] == upper and quote["sell_quantity"] == 0
    assert all(level["quantity"] == 0 for level in quote["depth"]["sell"])
    buy_mkt = _place(kite, "TATASTEEL", "BUY", 4)
    buy_lmt = _place(kite, "TATASTEEL", "BUY", 4, "LIMIT", price=upper)
    sim.admin("POST", "/advance", {"seconds": 3})
    sim.set_price("TATASTEEL", upper)
    assert _status(kite, buy_mkt) == _status(kite, buy_lmt) == "OPEN"  # nobody sells
    outside = _place(kite, "TATASTEEL", "BUY", 1, "LIMIT", price=round(upper + 1, 2))
    rejected = kite.order_history(outside)[-1]  # accepted, then rejected by the RMS (as Kite)
    assert rejected["status"] == "REJECTED" and "upper circuit" in rejected["status_message"]
    unfrozen = round(upper - 0.5, 2)
    sim.set_price("TATASTEEL", unfrozen)
    assert _status(kite, buy_mkt) == _status(kite, buy_lmt) == "COMPLETE"
    assert kite.order_history(buy_mkt)[-1]["average_price"] == unfrozen
    assert sim.set_price("TATASTEEL", lower / 2)["last_price"] == lower  # the lower freeze
    sell = _place(kite, "TATASTEEL", "SELL", 8)
    assert _status(kite, sell) == "OPEN"


def test_cnc_buys_settle_into_holdings_next_day(sim: SimProcess, kite: KiteConnect) -> None:
    sim.set_price("WIPRO", 250.0)
    _place(kite, "WIPRO", "BUY", 12)
    assert not [h for h in kite.holdings() if h["tradingsymbol"] == "WIPRO"]
    day = sim.admin("GET", "/state")["day"]
    sim.admin("POST", "/next_day")
    state = sim.admin("GET", "/state")
    assert state["day"] > day and state["now"].endswith("09:15:00")
    wipro = next(h for h in kite.holdings() if h["tradingsymbol"] == "WIPRO")
    assert_shape(fixture("holdings.json")["data"][0], wipro)
    assert (wipro["t1_quantity"], wipro["quantity"], wipro["opening_quantity"]) == (12, 0, 12)
    assert wipro["average_price"] == 250.0
    assert not [p for p in kite.positions()["net"] if p["tradingsymbol"] == "WIPRO"]
    assert not kite.orders()  # a new day's order book
    sell = _place(kite, "WIPRO", "SELL", 5)  # T1 shares can be sold
    assert _status(kite, sell) == "COMPLETE"
    oversell = _place(kite, "WIPRO", "SELL", 8)
    assert _status(kite, oversell) == "REJECTED"
    sim.admin("POST", "/next_day")
    wipro = next(h for h in kite.holdings() if h["tradingsymbol"] == "WIPRO")
    assert (wipro["t1_quantity"], wipro["realised_quantity"], wipro["quantity"]) == (0, 7, 7)


def test_the_open_gaps_and_circuits_follow_the_close(sim: SimProcess,
                                                     kite: KiteConnect) -> None:
    symbols = [f"NSE:{s}" for s in ("INFY", "SBIN", "RELIANCE", "ITC", "WIPRO", "ONGC")]
    before = {k: q["last_price"] for k, q in kite.ltp(*symbols).items()}
    sim.admin("POST", "/next_day")
    quotes = kite.quote(*symbols)
    assert {k: q["ohlc"]["close"] for k, q in quotes.items()} == before
    assert any(q["ohlc"]["open"] != q["ohlc"]["close"] for q in quotes.values())
    for q in quotes.values():
        assert q["lower_circuit_limit"] < q["ohlc"]["close"] < q["upper_circuit_limit"]


def test_time_moves_prices(sim: SimProcess, kite: KiteConnect) -> None:
    keys = [f"NSE:{s}" for s in ("INFY", "SBIN", "RELIANCE", "ITC", "HDFCBANK")]
    before, t0 = kite.ltp(*keys), sim.admin("GET", "/state")["now_ms"]
    sim.admin("POST", "/advance", {"seconds": 900})
    after, t1 = kite.ltp(*keys), sim.admin("GET", "/state")["now_ms"]
    assert t1 - t0 == 900_000
    assert sum(before[k]["last_price"] != after[k]["last_price"] for k in keys) >= 3
    token = after["NSE:INFY"]["instrument_token"]
    today = sim.admin("GET", "/state")["day"]
    bars = kite.historical_data(token, f"{today} 09:15:00", f"{today} 15:30:00", "15minute")
    assert bars and bars[-1]["close"] == after["NSE:INFY"]["last_price"]


def test_running_clock_and_a_kill_keep_the_book(tmp_path: Path) -> None:
    proc = SimProcess(tmp_path / "state")
    try:
        kite = proc.kite()
        proc.set_price("SBIN", 800.0)
        buy = _place(kite, "SBIN", "BUY", 3, tag="keepme")
        rest = _place(kite, "SBIN", "BUY", 2, "LIMIT", price=700.0)
        gid = kite.place_gtt(kite.GTT_TYPE_SINGLE, "SBIN", "NSE", [760.0], 800.0, [dict(
            transaction_type="SELL", quantity=3, order_type="LIMIT", product="CNC",
            price=755.0)])["trigger_id"]
        proc.admin("POST", "/clock", {"paused": False, "speed": 600})
        t0 = proc.admin("GET", "/state")["now_ms"]
        deadline = time.monotonic() + 20
        while proc.admin("GET", "/state")["now_ms"] == t0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.admin("GET", "/state")["now_ms"] > t0  # the market loop runs
        proc.admin("POST", "/clock", {"paused": True})
        before = proc.admin("GET", "/state")
        token = kite.access_token
        assert proc.stop(signal.SIGKILL) == -signal.SIGKILL
        proc.start()
        after = proc.admin("GET", "/state")
        assert after["day"] == before["day"] and after["now_ms"] >= before["now_ms"]
        kite = KiteConnect(kite.api_key, access_token=token, root=proc.root)  # session kept
        book = {o["order_id"]: o for o in kite.orders()}
        assert book[buy]["status"] == "COMPLETE" and book[buy]["tag"] == "keepme"
        assert book[rest]["status"] == "OPEN"
        assert kite.get_gtt(gid)["status"] == "active"
        new = _place(kite, "SBIN", "BUY", 1)
        assert new not in book  # ids never repeat after a restart
    finally:
        proc.stop()


def test_replay_of_stored_bars(tmp_path: Path) -> None:
    bars = tmp_path / "bars"
    bars.mkdir()
    (bars / "SBIN.csv").write_text("date,open,high,low,close,volume\n"
                                   "2025-01-03 09:15,800,806,798,805,1000\n"
                                   "2025-01-03 09:30,805,807,790,792,1000\n")
    proc = SimProcess(tmp_path / "state", "--replay-dir", str(bars))
    try:
        kite = proc.kite()
        seen = [kite.ltp("NSE:SBIN")["NSE:SBIN"]["last_price"]]
        for _ in range(7):
            proc.admin("POST", "/advance", {"seconds": 225, "step_s": 225})
            seen.append(kite.ltp("NSE:SBIN")["NSE:SBIN"]["last_price"])
        # each bar as four ticks (open, low, high, close when it rose; open, high, low, close)
        assert seen == [800, 798, 806, 805, 805, 807, 790, 792]
    finally:
        proc.stop()
