"""Every fault the simulator offers, triggered by a test and observed through the SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kite_sim_helpers import API_KEY, API_SECRET, SimProcess, TickerClient
from kiteconnect import KiteConnect
from kiteconnect import exceptions as ex


@pytest.fixture(autouse=True)
def _clear_faults(sim: SimProcess) -> Iterator[None]:
    yield
    sim.admin("DELETE", "/faults")


def _order(kite: KiteConnect, tag: str) -> str:
    return str(kite.place_order(variety="regular", exchange="NSE", tradingsymbol="ONGC",
                                transaction_type="BUY", quantity=1, product="MIS",
                                order_type="MARKET", market_protection=2, tag=tag))


def test_drop_socket_then_the_sdk_reconnects_and_resubscribes(sim: SimProcess,
                                                              kite: KiteConnect) -> None:
    token = kite.ltp("NSE:SBIN")["NSE:SBIN"]["instrument_token"]
    client = TickerClient(sim, str(kite.access_token))
    try:
        client.wait_for(lambda e: e["event"] == "connect")
        client.send(subscribe=[token])
        client.wait_for(lambda e: e["event"] == "ticks")
        mark = len(client.events)
        assert sim.admin("POST", "/ticker/drop", {"refuse_s": 1.0})["dropped"] == 1
        closed = client.wait_for(lambda e: e["event"] == "close", start=mark)
        assert closed["code"] == 1006  # cut without a close frame, as a network drop
        back = client.wait_for(lambda e: e["event"] == "connect", start=mark, timeout=30)
        after = client.events.index(back)
        sim.set_price("SBIN", 733.3)  # KiteTicker resubscribed on its own
        client.wait_for(lambda e: any(t["last_price"] == 733.3 for t in e.get("ticks", [])),
                        start=after)
    finally:
        client.close()


def test_stalled_ticks_with_the_socket_open(sim: SimProcess, kite: KiteConnect) -> None:
    token = kite.ltp("NSE:INFY")["NSE:INFY"]["instrument_token"]
    client = TickerClient(sim, str(kite.access_token))
    try:
        client.wait_for(lambda e: e["event"] == "connect")
        client.send(subscribe=[token])
        client.wait_for(lambda e: e["event"] == "ticks")
        stall_s = 2.5
        sim.admin("POST", "/ticker/stall", {"seconds": stall_s})
        started = time.time()
        mark = len(client.events)
        sim.set_price("INFY", 1401.1)
        client.send(status=True)
        status = client.wait_for(lambda e: e["event"] == "status", start=mark)
        assert status["connected"] is True  # the SDK sees an open socket...
        tick = client.wait_for(lambda e: any(t["last_price"] == 1401.1
                                             for t in e.get("ticks", [])), start=mark)
        ended = started + stall_s
        assert tick["t"] >= ended - 0.2  # ...but no tick (nor heartbeat) until the stall ends
        assert not [e for e in client.events[mark:] if e["event"] == "heartbeat"
                    and e["t"] < ended - 0.2]
        assert not [e for e in client.events[mark:] if e["event"] in ("close", "reconnect")]
    finally:
        client.close()


def test_reject_the_next_orders(sim: SimProcess, kite: KiteConnect) -> None:
    sim.admin("POST", "/faults/reject", {"count": 2, "message": "RMS: blocked by the test"})
    ids = [_order(kite, f"rej{i}") for i in range(3)]
    final = [kite.order_history(i)[-1] for i in ids]
    assert [o["status"] for o in final] == ["REJECTED", "REJECTED", "COMPLETE"]
    assert final[0]["status_message"] == "RMS: blocked by the test"


def test_order_accepted_but_its_response_lost(sim: SimProcess, kite: KiteConnect) -> None:
    sim.admin("POST", "/faults/http", {"kind": "lose", "paths": ["/orders"],
                                       "methods": ["POST"]})
    with pytest.raises(requests.exceptions.RequestException):
        _order(kite, "lostresp1")
    placed = [o for o in kite.orders() if o["tag"] == "lostresp1"]
    assert len(placed) == 1 and placed[0]["status"] == "COMPLETE"  # it was placed, once
    assert _order(kite, "lostresp2")  # the fault was for one request only


def test_delayed_responses(sim: SimProcess, kite: KiteConnect) -> None:
    sim.admin("POST", "/faults/http", {"kind": "delay", "delay_ms": 1500})
    impatient = KiteConnect(API_KEY, access_token=kite.access_token, root=sim.root, timeout=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        impatient.orders()
    sim.admin("POST", "/faults/http", {"kind": "delay", "delay_ms": 300})
    assert isinstance(kite.orders(), list)  # slow but answered
    assert sim.admin("GET", "/faults")["hits"]["delay"] == 2


def test_an_abandoned_delayed_request_does_not_take_a_later_fault(sim: SimProcess,
                                                                  kite: KiteConnect) -> None:
    sim.admin("POST", "/faults/http", {"kind": "delay", "delay_ms": 1000})
    impatient = KiteConnect(API_KEY, access_token=kite.access_token, root=sim.root, timeout=0.3)
    with pytest.raises(requests.exceptions.ReadTimeout):
        impatient.orders()
    sim.admin("POST", "/faults/http", {"kind": "error", "paths": ["/orders"], "status": 500})
    time.sleep(1.5)  # the abandoned request has long woken and been answered
    assert "error" not in sim.admin("GET", "/faults")["hits"]
    with pytest.raises(ex.GeneralException):
        kite.orders()  # the fault armed after it is still there for the next request


@pytest.mark.parametrize(("fault", "exc", "code"), [
    ({"status": 429}, ex.NetworkException, 429),
    ({"status": 500}, ex.GeneralException, 500),
    ({"status": 502}, ex.DataException, 502),
    ({"status": 503}, ex.NetworkException, 503),
    ({"status": 504}, ex.NetworkException, 504),
    ({"status": 502, "html": True}, ex.DataException, 502),  # a proxy's page, not JSON
    ({"status": 403, "error_type": "PermissionException", "message": "no"},
     ex.PermissionException, 403),
    ({"status": 400, "error_type": "OrderException", "message": "nope"}, ex.OrderException, 400),
])
def test_error_answers_arrive_as_sdk_exceptions(sim: SimProcess, kite: KiteConnect,
                                                fault: dict[str, object], exc: type,
                                                code: int) -> None:
    sim.admin("POST", "/faults/http", {"kind": "error", "paths": ["/orders"], **fault})
    assert isinstance(kite.holdings(), list)  # scoped to /orders: others unaffected
    with pytest.raises(exc) as err:
        kite.orders()
    assert type(err.value) is exc and (err.value.code == code or fault.get("html"))
    assert isinstance(kite.orders(), list)  # one request only


def test_expired_sessions_are_token_exceptions(sim: SimProcess) -> None:
    kite = sim.kite()
    sim.admin("POST", "/sessions/expire")
    with pytest.raises(ex.TokenException):
        kite.positions()
    kite.generate_session("fresh-login", API_SECRET)
    assert isinstance(kite.positions(), dict)


def test_faults_from_cli_flags(tmp_path: Path) -> None:
    proc = SimProcess(tmp_path / "state", "--http-429", "1", "--reject-orders", "1",
                      "--lose-responses", "1")
    try:
        kite = KiteConnect(API_KEY, root=proc.root)
        with pytest.raises(ex.NetworkException):
            kite.generate_session("r1", API_SECRET)
        kite.generate_session("r2", API_SECRET)
        with pytest.raises(requests.exceptions.RequestException):
            _order(kite, "cli1")  # lost response; and it was rejected by the RMS
        assert [o["status"] for o in kite.orders()] == ["REJECTED"]
        assert kite.order_history(_order(kite, "cli2"))[-1]["status"] == "COMPLETE"
    finally:
        proc.stop()
