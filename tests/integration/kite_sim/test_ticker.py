"""Ticker frames: what the simulator packs, ``KiteTicker``'s own parser reads back exactly; and a
real ``KiteTicker`` (in its own process) gets ticks, heartbeats and order updates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from kite_sim_helpers import SimProcess, TickerClient, assert_shape, fixture
from kiteconnect import KiteConnect, KiteTicker

from shared.kite.instruments import Instrument
from shared.kite.market import InstrumentState
from shared.kite.ticker import HEARTBEAT, frame, pack_full, pack_ltp, pack_quote


def _state() -> InstrumentState:
    inst = Instrument("SBIN", "STATE BANK OF INDIA", 779521, 81235, 5)
    st = InstrumentState(inst=inst, ltp=81235, open=80010, high=82000, low=79995, close=80500,
                         volume=4_000_000_123 % 2**32, turnover=0, last_qty=37,
                         last_trade_ms=1_736_135_100_000)
    st.turnover = 81000 * st.volume
    st.set_circuits()
    return st


def test_packets_parse_to_exactly_what_was_packed() -> None:
    st = _state()
    exchange_ms = 1_736_135_123_000
    parsed = KiteTicker("k", "t")._parse_binary(
        frame([pack_ltp(st), pack_quote(st), pack_full(st, exchange_ms)]))
    ltp, quote, full = parsed
    assert ltp == {"tradable": True, "mode": "ltp", "instrument_token": 779521,
                   "last_price": 812.35}
    buy, sell = st.depth()
    expected_quote = {
        "tradable": True, "mode": "quote", "instrument_token": 779521, "last_price": 812.35,
        "last_traded_quantity": 37, "average_traded_price": 810.0, "volume_traded": st.volume,
        "total_buy_quantity": sum(q for _, q, _ in buy) * 40,
        "total_sell_quantity": sum(q for _, q, _ in sell) * 40,
        "ohlc": {"open": 800.10, "high": 820.0, "low": 799.95, "close": 805.0},
        "change": (812.35 - 805.0) * 100 / 805.0}
    assert quote == expected_quote
    assert full == {
        **expected_quote, "mode": "full",
        "last_trade_time": dt.datetime.fromtimestamp(1_736_135_100),
        "oi": 0, "oi_day_high": 0, "oi_day_low": 0,
        "exchange_timestamp": dt.datetime.fromtimestamp(1_736_135_123),
        "depth": {"buy": [{"quantity": q, "price": p / 100, "orders": n} for p, q, n in buy],
                  "sell": [{"quantity": q, "price": p / 100, "orders": n} for p, q, n in sell]}}
    assert KiteTicker("k", "t")._parse_binary(HEARTBEAT) == []


def test_frozen_side_has_empty_depth() -> None:
    st = _state()
    st.ltp = st.upper
    full = KiteTicker("k", "t")._parse_binary(frame([pack_full(st, 0)]))[0]
    assert all(level == {"quantity": 0, "price": 0.0, "orders": 0}
               for level in full["depth"]["sell"])
    assert full["depth"]["buy"][0]["price"] == st.upper / 100


@pytest.fixture(scope="module")
def client(sim: SimProcess, kite: KiteConnect) -> Iterator[TickerClient]:
    c = TickerClient(sim, str(kite.access_token))
    c.wait_for(lambda e: e["event"] == "connect")
    yield c
    c.close()


def _tokens(kite: KiteConnect, *symbols: str) -> list[int]:
    data = kite.ltp(*[f"NSE:{s}" for s in symbols])
    return [data[f"NSE:{s}"]["instrument_token"] for s in symbols]


def test_live_ticks_carry_the_market_exactly(sim: SimProcess, kite: KiteConnect,
                                             client: TickerClient) -> None:
    infy, sbin, rel = _tokens(kite, "INFY", "SBIN", "RELIANCE")
    client.send(subscribe=[infy, sbin, rel])
    client.send(mode=["full", [sbin]])
    client.send(mode=["ltp", [rel]])
    client.wait_for(lambda e: e["event"] == "ack" and "mode" in e["cmd"]
                    and e["cmd"]["mode"][0] == "ltp")
    mark = len(client.events)
    sim.set_price("SBIN", 777.7)
    sim.set_price("RELIANCE", 1333.3)
    sim.set_price("INFY", 1555.55)
    client.wait_for(lambda e: any(t["instrument_token"] == infy and t["last_price"] == 1555.55
                                  for t in e.get("ticks", [])), start=mark)
    ticks = {t["instrument_token"]: t for t in client.ticks(mark)}
    assert ticks[rel] == {"tradable": True, "mode": "ltp", "instrument_token": rel,
                          "last_price": 1333.3}
    full, quote = ticks[sbin], kite.quote("NSE:SBIN")["NSE:SBIN"]
    now_ms = sim.admin("GET", "/state")["now_ms"]
    assert full["mode"] == "full" and full["last_price"] == quote["last_price"] == 777.7
    assert full["ohlc"] == quote["ohlc"] and full["volume_traded"] == quote["volume"]
    assert full["average_traded_price"] == quote["average_price"]
    assert full["last_traded_quantity"] == quote["last_quantity"]
    assert full["total_buy_quantity"] == quote["buy_quantity"]
    assert full["total_sell_quantity"] == quote["sell_quantity"]
    assert full["depth"] == {side: [{"quantity": lv["quantity"], "price": lv["price"],
                                     "orders": lv["orders"]} for lv in quote["depth"][side]]
                             for side in ("buy", "sell")}
    assert full["exchange_timestamp"] == dt.datetime.fromtimestamp(now_ms // 1000).isoformat()
    assert ticks[infy]["mode"] == "quote" and "depth" not in ticks[infy]


def test_unsubscribe_stops_a_token(sim: SimProcess, kite: KiteConnect,
                                   client: TickerClient) -> None:
    infy, sbin = _tokens(kite, "INFY", "SBIN")
    client.send(subscribe=[infy, sbin])
    client.send(unsubscribe=[infy])
    client.wait_for(lambda e: e["event"] == "ack" and "unsubscribe" in e["cmd"])
    mark = len(client.events)
    sim.set_price("INFY", 1444.45)
    sim.set_price("SBIN", 766.6)  # a marker: it arrives after anything INFY would have sent
    client.wait_for(lambda e: any(t["last_price"] == 766.6 for t in e.get("ticks", [])),
                    start=mark)
    assert all(t["instrument_token"] != infy for t in client.ticks(mark))


def test_heartbeats_while_nothing_moves(client: TickerClient) -> None:
    mark = len(client.events)
    client.wait_for(lambda e: e["event"] == "heartbeat", start=mark, timeout=10)


def test_order_updates_for_every_state(sim: SimProcess, kite: KiteConnect,
                                       client: TickerClient) -> None:
    mark = len(client.events)
    oid = kite.place_order(variety="regular", exchange="NSE", tradingsymbol="ITC",
                           transaction_type="BUY", quantity=1, product="MIS",
                           order_type="MARKET", market_protection=-1, tag="upd1")
    client.wait_for(lambda e: e["event"] == "order" and e["data"]["order_id"] == oid
                    and e["data"]["status"] == "COMPLETE", start=mark)
    updates = [e["data"] for e in client.events[mark:]
               if e["event"] == "order" and e["data"]["order_id"] == oid]
    assert [u["status"] for u in updates] == [h["status"] for h in kite.order_history(oid)]
    for update in updates:
        assert_shape(fixture("postback.json"), update)
    assert updates[-1]["tag"] == "upd1" and updates[-1]["filled_quantity"] == 1
