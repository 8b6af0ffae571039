"""The official SDK against the simulator: every REST call Ratchet uses, field for field with
Kite's documented examples, and every error as the SDK's own exception class."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time

import pytest
from kite_sim_helpers import API_KEY, API_SECRET, SimProcess, assert_shape, fixture
from kiteconnect import KiteConnect
from kiteconnect import exceptions as ex


def _buy(kite: KiteConnect, symbol: str = "INFY", qty: int = 1, **kw: object) -> str:
    args: dict[str, object] = dict(variety="regular", exchange="NSE", tradingsymbol=symbol,
                                   transaction_type="BUY", quantity=qty, product="CNC",
                                   order_type="MARKET", market_protection=2)
    args.update(kw)
    return str(kite.place_order(**args))


def test_session_token_exchange(sim: SimProcess) -> None:
    kite = KiteConnect(API_KEY, root=sim.root)
    session = kite.generate_session("any-request-token", API_SECRET)
    assert_shape(fixture("generate_session.json")["data"], session)
    assert session["api_key"] == API_KEY and kite.access_token == session["access_token"]
    assert isinstance(session["login_time"], dt.datetime)
    assert kite.profile()["user_id"] == session["user_id"]


def test_bad_checksum_and_foreign_tokens_are_token_exceptions(sim: SimProcess) -> None:
    kite = KiteConnect(API_KEY, root=sim.root)
    with pytest.raises(ex.TokenException) as bad:
        kite.generate_session("any-request-token", "not-the-secret")
    assert bad.value.code == 403
    stranger = KiteConnect(API_KEY, access_token="made-up", root=sim.root)
    for call in (stranger.orders, stranger.holdings, stranger.get_gtts):
        with pytest.raises(ex.TokenException) as err:
            call()
        assert err.value.code == 403
    with pytest.raises(ex.TokenException):
        KiteConnect("other-key", access_token=sim.kite().access_token, root=sim.root).orders()


def test_instruments_dump(kite: KiteConnect) -> None:
    rows = kite.instruments()
    header = next(csv.reader(io.StringIO((
        __import__("kite_sim_helpers").FIXTURES / "instruments_nse.csv").read_text())))
    assert len(rows) >= 30
    for row in rows:
        assert set(row) == set(header)
        assert row["instrument_token"] & 0xFF == 1  # NSE segment: prices in paise on the ticker
        assert row["exchange"] == row["segment"] == "NSE" and row["instrument_type"] == "EQ"
        assert row["tick_size"] in (0.01, 0.05, 0.1, 0.5, 1.0) and row["lot_size"] >= 1
        assert round(row["last_price"] / row["tick_size"], 6).is_integer()
    assert {r["tradingsymbol"] for r in rows} >= {"INFY", "RELIANCE", "SBIN"}
    assert kite.instruments("NSE") == rows and kite.instruments("BSE") == []


def test_quote_ltp_ohlc_with_circuit_limits(kite: KiteConnect) -> None:
    quote = kite.quote("NSE:INFY", "NSE:SBIN", "NSE:NOSUCH")
    assert set(quote) == {"NSE:INFY", "NSE:SBIN"}
    for q in quote.values():
        assert_shape(fixture("quote.json")["data"]["NSE:INFY"], q)
        assert q["lower_circuit_limit"] < q["ohlc"]["close"] < q["upper_circuit_limit"]
        assert q["lower_circuit_limit"] <= q["last_price"] <= q["upper_circuit_limit"]
        assert len(q["depth"]["buy"]) == len(q["depth"]["sell"]) == 5
    ltp = kite.ltp("NSE:INFY")
    assert_shape(fixture("ltp.json")["data"], ltp)
    ohlc = kite.ohlc("NSE:INFY")
    assert_shape(fixture("ohlc.json")["data"], ohlc)
    assert ltp["NSE:INFY"]["last_price"] == ohlc["NSE:INFY"]["last_price"] == quote[
        "NSE:INFY"]["last_price"]
    token = quote["NSE:INFY"]["instrument_token"]
    assert kite.ltp(str(token))[str(token)]["last_price"] == ltp["NSE:INFY"]["last_price"]


def test_historical_candles(sim: SimProcess, kite: KiteConnect) -> None:
    token = kite.ltp("NSE:INFY")["NSE:INFY"]["instrument_token"]
    minute = kite.historical_data(token, "2025-01-03 09:15:00", "2025-01-03 09:20:00", "minute",
                                  oi=True)
    expected = fixture("historical_minute.json")["data"]["candles"][0]
    assert len(minute) == 6 and all(len(c) == len(expected) for c in minute)
    assert [c["date"].strftime("%H:%M") for c in minute][:2] == ["09:15", "09:16"]
    time.sleep(1.1)  # the historical rate window
    bars = kite.historical_data(token, dt.datetime(2024, 12, 2), dt.datetime(2025, 1, 6, 15, 30),
                                "15minute")
    assert len(bars) >= 200  # enough to warm an EMA 200
    assert {b["date"].strftime("%H:%M") for b in bars} <= {
        f"{h:02d}:{m:02d}" for h in range(9, 16) for m in (0, 15, 30, 45)}
    assert all(b["low"] <= min(b["open"], b["close"]) <= max(b["open"], b["close"]) <= b["high"]
               for b in bars)
    assert bars[-1]["close"] == kite.quote("NSE:INFY")["NSE:INFY"]["ohlc"]["close"]
    days = kite.historical_data(token, "2024-12-02", "2025-01-03", "day")
    assert all(d["date"].hour == 0 for d in days) and len(days) >= 20
    with pytest.raises(ex.InputException):
        kite.historical_data(token, "2025-01-01", "2025-01-02", "7minute")
    time.sleep(1.1)
    with pytest.raises(ex.InputException):
        kite.historical_data(token, "2024-01-01", "2025-01-02", "minute")  # > 60 days
    time.sleep(1.1)
    codes = []
    for _ in range(5):
        try:
            kite.historical_data(token, "2025-01-02", "2025-01-03", "60minute")
        except ex.NetworkException as err:
            codes.append(err.code)
    assert codes and set(codes) == {429}  # 3 requests a second, then 429


def test_order_lifecycle(sim: SimProcess, kite: KiteConnect) -> None:
    ltp = kite.ltp("NSE:SBIN")["NSE:SBIN"]["last_price"]
    below = round(ltp * 0.9, 1)
    oid = kite.place_order(variety="regular", exchange="NSE", tradingsymbol="SBIN",
                           transaction_type="BUY", quantity=3, product="CNC", order_type="LIMIT",
                           price=below, tag="ratchetP1abc")
    order = next(o for o in kite.orders() if o["order_id"] == oid)
    assert_shape(fixture("orders.json")["data"][0], order)
    assert order["status"] == "OPEN" and order["tag"] == "ratchetP1abc"
    assert order["tags"] == ["ratchetP1abc"] and order["price"] == below
    history = kite.order_history(oid)
    assert_shape(fixture("order_info.json")["data"][0], history[0])
    assert [h["status"] for h in history] == [
        "PUT ORDER REQ RECEIVED", "VALIDATION PENDING", "OPEN PENDING", "OPEN"]
    assert kite.modify_order("regular", oid, price=round(below - 1, 1)) == oid
    history = kite.order_history(oid)
    assert [h["status"] for h in history][-4:] == [
        "MODIFY VALIDATION PENDING", "MODIFY PENDING", "MODIFIED", "OPEN"]
    assert history[-1]["price"] == round(below - 1, 1) and history[-1]["modified"] is True
    assert kite.cancel_order("regular", oid) == oid
    assert kite.order_history(oid)[-1]["status"] == "CANCELLED"
    with pytest.raises(ex.OrderException):
        kite.modify_order("regular", oid, price=below)
    with pytest.raises(ex.OrderException):
        kite.cancel_order("regular", oid)

    done = _buy(kite, "SBIN", 2, tag="ratchetP1xyz")
    final = kite.order_history(done)[-1]
    assert final["status"] == "COMPLETE" and final["filled_quantity"] == 2
    assert final["average_price"] == kite.ltp("NSE:SBIN")["NSE:SBIN"]["last_price"]
    trades = [t for t in kite.trades() if t["order_id"] == done]
    assert len(trades) == 1
    assert_shape(fixture("trades.json")["data"][0], trades[0])
    assert kite.order_trades(done) == trades
    positions = kite.positions()
    assert_shape(fixture("positions.json")["data"], positions)
    sbin = next(p for p in positions["net"] if p["tradingsymbol"] == "SBIN")
    assert sbin["quantity"] == 2 and sbin["product"] == "CNC"


def test_order_input_errors(kite: KiteConnect) -> None:
    base = dict(variety="regular", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY",
                quantity=1, product="CNC")
    cases = [
        dict(order_type="MARKET"),  # market orders need market_protection
        dict(order_type="LIMIT", price=100.0, tag="has space"),
        dict(order_type="LIMIT", price=100.0, tag="x" * 21),
        dict(order_type="LIMIT", price=100.03),  # off the tick
        dict(order_type="LIMIT"),  # no price
        dict(order_type="MARKET", market_protection=2, tradingsymbol="NOSUCH"),
        dict(order_type="MARKET", market_protection=2, variety="bo"),
    ]
    before = len(kite.orders())
    for extra in cases:
        with pytest.raises(ex.InputException) as err:
            kite.place_order(**{**base, **extra})
        assert err.value.code == 400
    time.sleep(1.1)
    assert len(kite.orders()) == before  # nothing was created
    with pytest.raises(ex.InputException):
        kite.order_history("999999999999999")


def test_order_rate_limit_is_429(sim: SimProcess) -> None:
    kite = sim.kite()
    time.sleep(1.1)
    placed, limited = 0, 0
    for _ in range(14):
        try:
            kite.place_order(variety="regular", exchange="NSE", tradingsymbol="ITC",
                             transaction_type="BUY", quantity=1, product="MIS",
                             order_type="LIMIT", price=1.0)
            placed += 1
        except ex.NetworkException as err:
            assert err.code == 429
            limited += 1
    assert placed <= 10 and limited >= 1 and placed + limited == 14
    time.sleep(1.1)


def test_gtt_create_modify_delete_list(sim: SimProcess, kite: KiteConnect) -> None:
    ltp = kite.ltp("NSE:SBIN")["NSE:SBIN"]["last_price"]
    stop, target = round(ltp * 0.95, 1), round(ltp * 1.05, 1)
    legs = [dict(transaction_type="SELL", quantity=1, order_type="LIMIT", product="CNC",
                 price=round(stop - 1, 1)),
            dict(transaction_type="SELL", quantity=1, order_type="LIMIT", product="CNC",
                 price=target)]
    placed = kite.place_gtt(kite.GTT_TYPE_OCO, "SBIN", "NSE", [stop, target], ltp, legs)
    assert_shape(fixture("gtt_place_order.json")["data"], placed)
    gid = placed["trigger_id"]
    gtt = kite.get_gtt(gid)
    assert_shape(fixture("gtt_get_order.json")["data"], gtt)
    assert gtt["status"] == "active" and gtt["condition"]["trigger_values"] == [stop, target]
    assert [o["price"] for o in gtt["orders"]] == [legs[0]["price"], target]
    single = kite.place_gtt(kite.GTT_TYPE_SINGLE, "SBIN", "NSE", [stop], ltp, legs[:1])
    assert {g["id"] for g in kite.get_gtts()} >= {gid, single["trigger_id"]}
    higher = round(stop + 1, 1)
    assert kite.modify_gtt(gid, kite.GTT_TYPE_OCO, "SBIN", "NSE", [higher, target], ltp,
                           legs)["trigger_id"] == gid
    assert kite.get_gtt(gid)["condition"]["trigger_values"] == [higher, target]
    assert kite.delete_gtt(gid)["trigger_id"] == gid
    assert kite.get_gtt(gid)["status"] == "deleted"
    with pytest.raises(ex.InputException):
        kite.delete_gtt(gid)
    with pytest.raises(ex.InputException):
        kite.get_gtt(1)
    with pytest.raises(ex.InputException):  # an OCO must straddle the last price
        kite.place_gtt(kite.GTT_TYPE_OCO, "SBIN", "NSE", [target, round(target + 5, 1)], ltp,
                       legs)
    with pytest.raises(ex.InputException):  # off the tick
        kite.place_gtt(kite.GTT_TYPE_SINGLE, "SBIN", "NSE", [round(stop, 1) + 0.03], ltp,
                       legs[:1])


def test_at_most_250_active_gtts(sim: SimProcess, kite: KiteConnect) -> None:
    ltp = kite.ltp("NSE:ITC")["NSE:ITC"]["last_price"]
    trigger = round(ltp * 0.9, 1)
    leg = [dict(transaction_type="SELL", quantity=1, order_type="LIMIT", product="MIS",
                price=trigger)]
    active = sum(g["status"] == "active" for g in kite.get_gtts())
    ids = [kite.place_gtt(kite.GTT_TYPE_SINGLE, "ITC", "NSE", [trigger], ltp, leg)["trigger_id"]
           for _ in range(250 - active)]
    with pytest.raises(ex.InputException):
        kite.place_gtt(kite.GTT_TYPE_SINGLE, "ITC", "NSE", [trigger], ltp, leg)
    kite.delete_gtt(ids[0])
    kite.place_gtt(kite.GTT_TYPE_SINGLE, "ITC", "NSE", [trigger], ltp, leg)  # room again
