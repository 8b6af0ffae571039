"""The WebSocket feed against a real server: who may connect, what a subscription lets through,
rupees out of paise, and a reconnecting client that resumes without gaps or repeats."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import redis
from conftest import LiveApi
from sqlalchemy.orm import Session, sessionmaker
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from ws_helpers import (
    is_system,
    open_ws,
    publish,
    publish_ticks,
    recv,
    recv_until,
    subscribe,
)

from shared.auth import Role, create_user
from shared.contracts import streams
from shared.contracts.messages import (
    Alert,
    AlertLevel,
    BarEnd,
    Candle,
    GttModified,
    Halt,
    OrderFilled,
    Side,
)
from shared.logs import JsonFormatter
from shared.store.models import Ladder, Trade

T0 = datetime(2025, 1, 2, 4, 0, tzinfo=UTC)


def recv_ticks(conn: ClientConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` ticks, however many ``Ticks`` messages carry them."""
    ticks: list[dict[str, Any]] = []
    while len(ticks) < count:
        data = recv(conn)["data"]
        assert data["type"] == "Ticks"
        ticks.extend(data["ticks"])
    assert len(ticks) == count, ticks
    return ticks


def fill(symbol: str, price: int, n: int = 1) -> OrderFilled:
    return OrderFilled(intent_id=f"i{n}", exchange="NSE", symbol=symbol, ladder_id="L", leg=1,
                       ts_ms=1, order_id=f"o{n}", side=Side.BUY, qty=10, price=price)


# --- authentication ----------------------------------------------------------------------------


def refused(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as info:
        open_ws(url, **kwargs).close()
    response = info.value.response
    if response.status_code != 403:  # 403 may come from the origin check, without JSON
        assert orjson.loads(response.body)["status"] == response.status_code
    return response.status_code


def test_a_handshake_without_credentials_is_refused(live_api: LiveApi) -> None:
    assert refused(live_api.ws) == 401
    assert refused(live_api.ws + "?key=not-a-key") == 401
    assert refused(live_api.ws, additional_headers={"X-API-Key": "nope"}) == 401
    assert refused(live_api.ws, additional_headers={"Cookie": "ratchet_session=stale"}) == 401


def test_a_key_in_the_header_or_the_query_is_accepted(live_api: LiveApi, viewer_key: str) -> None:
    with open_ws(live_api.ws, additional_headers={"X-API-Key": viewer_key}) as ws:
        hello = recv(ws)
        assert hello["channel"] == "system" and hello["data"]["type"] == "hello"
        assert hello["data"]["role"] == "viewer"
    with open_ws(f"{live_api.ws}?key={viewer_key}") as ws:
        assert recv(ws)["data"]["type"] == "hello"


def test_a_browser_offers_its_key_as_a_subprotocol(live_api: LiveApi, viewer_key: str) -> None:
    with open_ws(live_api.ws, subprotocols=["ratchet", f"ratchet.key.{viewer_key}"]) as ws:
        assert ws.subprotocol == "ratchet"  # a browser drops a socket whose protocol is unmet
        hello = recv(ws)
        assert hello["data"]["type"] == "hello" and hello["data"]["role"] == "viewer"
    assert refused(live_api.ws, subprotocols=["ratchet", "ratchet.key.not-a-key"]) == 401


def test_a_key_in_the_query_is_not_logged(live_api: LiveApi, viewer_key: str) -> None:
    """uvicorn logs a WebSocket's URL at INFO, query included: the JSON log lines redact it."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter("api"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # as configure_logging does
    try:
        with open_ws(f"{live_api.ws}?key={viewer_key}") as ws:
            assert recv(ws)["data"]["type"] == "hello"
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    logged = lines.getvalue()
    assert "ws?key=[redacted]" in logged  # the handshake was logged, without its key
    assert viewer_key not in logged


def test_the_session_cookie_is_accepted_from_this_origin_only(
    live_api: LiveApi, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        create_user(session, "asha", "correct horse battery", Role.TRADER)
    login = httpx.post(f"{live_api.http}/api/v1/auth/login",
                       json={"username": "asha", "password": "correct horse battery"})
    assert login.status_code == 200, login.text
    cookie = f"ratchet_session={login.cookies['ratchet_session']}"
    with open_ws(live_api.ws, additional_headers={"Cookie": cookie},
                 origin=live_api.http) as ws:  # type: ignore[arg-type]
        hello = recv(ws)["data"]
        assert (hello["user"], hello["role"]) == ("asha", "trader")
    foreign = {"Cookie": cookie}
    assert refused(live_api.ws, additional_headers=foreign, origin="http://evil.example") == 403


# --- subscriptions -------------------------------------------------------------------------------


def test_ticks_are_filtered_by_symbol_and_sent_in_rupees(
    live_api: LiveApi, viewer_key: str, redis_client: redis.Redis
) -> None:
    with open_ws(live_api.ws, additional_headers={"X-API-Key": viewer_key}) as some, \
            open_ws(live_api.ws, additional_headers={"X-API-Key": viewer_key}) as every:
        answer = subscribe(some, channels=["ticks"], symbols=["NSE:INFY", "TCS"])
        assert answer["data"]["symbols"] == ["INFY", "TCS"]
        assert subscribe(every, channels=["ticks"])["data"]["symbols"] is None
        publish_ticks(redis_client, {"INFY": 150_025, "RELIANCE": 250_000})
        publish_ticks(redis_client, {"RELIANCE": 250_100})  # nothing for `some`
        publish_ticks(redis_client, {"TCS": 399_995})

        # Frames the hub reads together travel in one message, so count ticks, not messages.
        got = recv_ticks(some, 2)
        assert [(t["symbol"], t["price"]) for t in got] == [("INFY", 1500.25), ("TCS", 3999.95)]
        assert got[0]["ts_ms"] > 0
        everything = recv_ticks(every, 4)
        assert [(t["symbol"], t["price"]) for t in everything] == [
            ("INFY", 1500.25), ("RELIANCE", 2500.0), ("RELIANCE", 2501.0), ("TCS", 3999.95)]


def test_channels_filter_exec_events_and_symbols_apply_to_them(
    live_api: LiveApi, viewer_key: str, redis_client: redis.Redis
) -> None:
    with open_ws(live_api.ws, additional_headers={"X-API-Key": viewer_key}) as ws:
        subscribe(ws, channels=["orders", "alerts", "status"], symbols=["INFY"])
        publish(redis_client, streams.EXEC_EVENTS,
                GttModified(intent_id="g", exchange="NSE", symbol="INFY", ladder_id="L", leg=1,
                            ts_ms=1, trigger_id="9", trigger=97_55))  # gtts: not asked for
        publish(redis_client, streams.EXEC_EVENTS, fill("TCS", 100_00, 1))  # another symbol
        publish(redis_client, streams.EXEC_EVENTS, fill("INFY", 123_45, 2))
        publish(redis_client, streams.EXEC_EVENTS,
                Alert(level=AlertLevel.WARNING, code="stale_feed", message="no ticks"))
        publish(redis_client, streams.CONTROL, Halt(reason="test", by="user:a"))

        order, alert, halt = recv(ws), recv(ws), recv(ws)
        assert order["channel"] == "orders" and order["id"]
        assert order["data"]["type"] == "OrderFilled"
        assert (order["data"]["symbol"], order["data"]["price"]) == ("INFY", 123.45)
        assert alert["channel"] == "alerts" and alert["data"]["code"] == "stale_feed"
        assert halt["channel"] == "status" and halt["data"]["type"] == "Halt"
        assert halt["data"]["reason"] == "test"


def test_candles_carry_their_emas_in_rupees(
    live_api: LiveApi, viewer_key: str, redis_client: redis.Redis
) -> None:
    with open_ws(live_api.ws, additional_headers={"X-API-Key": viewer_key}) as ws:
        subscribe(ws, channels=["candles"])
        publish(redis_client, streams.CANDLES, BarEnd(ts_ms=5))  # a clock: not sent
        publish(redis_client, streams.CANDLES, Candle(
            token=1, symbol="INFY", timeframe_minutes=15, start_ms=0, end_ms=900_000,
            open=100_00, high=101_50, low=99_95, close=101_00, volume=7,
            ema=(10_050.5, 10_020.0, None, None)))
        candle = recv(ws)
        assert candle["channel"] == "candles"
        data = candle["data"]
        assert (data["open"], data["high"], data["low"], data["close"]) == (
            100.0, 101.5, 99.95, 101.0)
        assert (data["ema_9"], data["ema_21"], data["ema_50"], data["ema_200"]) == (
            100.505, 100.2, None, None)


def test_a_bad_request_is_answered_not_fatal(live_api: LiveApi, viewer_key: str) -> None:
    with open_ws(live_api.ws, additional_headers={"X-API-Key": viewer_key}) as ws:
        recv(ws)  # hello
        ws.send(orjson.dumps({"action": "subscribe", "channels": ["ticks", "gossip"]}).decode())
        error = recv_until(ws, is_system("error"))[-1]
        assert "gossip" in error["data"]["detail"]
        ws.send("{not json")
        assert "JSON" in recv_until(ws, is_system("error"))[-1]["data"]["detail"]
        ws.send(orjson.dumps({"action": "ping"}).decode())
        recv_until(ws, is_system("pong"))


# --- reconnecting --------------------------------------------------------------------------------


def test_a_reconnecting_client_resumes_after_the_last_event_it_saw(
    live_api: LiveApi, viewer_key: str, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": viewer_key}
    with open_ws(live_api.ws, additional_headers=headers) as ws:
        subscribe(ws, channels=["orders"])
        publish(redis_client, streams.EXEC_EVENTS, fill("INFY", 100_00, 1))
        first = recv(ws)
    # Away: two events pass, one of them for a channel this client does not follow.
    publish(redis_client, streams.EXEC_EVENTS, fill("INFY", 101_00, 2))
    publish(redis_client, streams.EXEC_EVENTS,
            Alert(level=AlertLevel.INFO, code="x", message="not asked for"))
    publish(redis_client, streams.EXEC_EVENTS, fill("INFY", 102_00, 3))

    with open_ws(live_api.ws, additional_headers=headers) as ws:
        subscribe(ws, channels=["orders"], resume_from=first["id"])
        messages = recv_until(ws, is_system("replayed"))
        replayed = [m for m in messages if m["channel"] == "orders"]
        assert [m["data"]["price"] for m in replayed] == [101.0, 102.0]
        assert messages[-1]["data"]["count"] == 2
        publish(redis_client, streams.EXEC_EVENTS, fill("INFY", 103_00, 4))
        live = recv(ws)
        assert live["data"]["price"] == 103.0 and live["id"] > replayed[-1]["id"]

    with open_ws(live_api.ws, additional_headers=headers) as ws:  # an id the stream never held
        subscribe(ws, channels=["orders"], resume_from="1-0")
        assert recv_until(ws, is_system("resync"))


# --- legs and pnl --------------------------------------------------------------------------------


def test_legs_and_pnl_follow_the_trades_table(
    live_api: LiveApi, viewer_key: str, redis_client: redis.Redis,
    sessions: sessionmaker[Session], make_key: Callable[..., str],
) -> None:
    from ws_helpers import TS

    with sessions.begin() as session:
        session.add(Ladder(id="L1", strategy="momentum", exchange="NSE", symbol="INFY",
                           signal_bar=T0, phase="ACTIVE", opened_at=T0))
        session.flush()
        session.add(Trade(trade_id="L1:1", ladder_id="L1", symbol="INFY", exchange="NSE",
                          position_number=1, qty=10, entry_price=Decimal("100.00"),
                          entry_time=T0, stop_loss=Decimal("97.50"),
                          initial_stop=Decimal("97.50"), target=Decimal("105.00"),
                          highest_price=Decimal("100.00"), status="OPEN"))
    redis_client.hset(streams.LTP_HASH, "NSE:INFY",
                      orjson.dumps({"token": 1, "price": 102_00, "ts_ms": TS, "volume": 1}))
    with open_ws(live_api.ws, additional_headers={"X-API-Key": viewer_key}) as ws:
        subscribe(ws, channels=["legs", "pnl"])
        first = recv_until(ws, lambda m: m["channel"] == "pnl")
        leg = next(m["data"] for m in first if m["channel"] == "legs")
        assert (leg["trade_id"], leg["stop"], leg["target"], leg["ltp"]) == (
            "L1:1", 97.5, 105.0, 102.0)
        assert (leg["pnl"], leg["pnl_pct"]) == (20.0, 2.0)
        pnl = first[-1]["data"]
        assert pnl["total"] == {"realised": 0.0, "unrealised": 20.0, "total": 20.0}
        assert pnl["legs"][0]["pnl"] == 20.0

        with sessions.begin() as session:  # the strategy ratchets the stop
            session.get(Trade, "L1:1").stop_loss = Decimal("99.45")  # type: ignore[union-attr]
        moved = recv_until(ws, lambda m: m["channel"] == "legs")[-1]["data"]
        assert moved["stop"] == 99.45

        with sessions.begin() as session:  # ... and the leg exits at its stop
            trade = session.get(Trade, "L1:1")
            assert trade is not None
            trade.status, trade.exit_price, trade.pnl = "CLOSED", Decimal("99.45"), Decimal("-5.5")
            trade.exit_time = datetime.now(UTC)
        closed = recv_until(ws, lambda m: m["channel"] == "legs")[-1]["data"]
        assert (closed["status"], closed["exit_price"], closed["pnl"]) == ("CLOSED", 99.45, -5.5)
        pnl = recv_until(ws, lambda m: m["channel"] == "pnl" and m["data"]["open_legs"] == 0)
        assert pnl[-1]["data"]["day"]["realised"] == -5.5


def test_a_revoked_key_ends_its_open_feed(
    live_api: LiveApi, viewer_key: str, sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from websockets.exceptions import ConnectionClosed

    from services.api.routers import ws as ws_router
    from shared.auth import revoke_api_key
    from shared.store.models import ApiKey

    monkeypatch.setattr(ws_router, "RECHECK_S", 0.3)
    with open_ws(live_api.ws, additional_headers={"X-API-Key": viewer_key}) as ws:
        subscribe(ws, channels=["ticks"])
        with sessions.begin() as session:
            key_id = session.query(ApiKey.id).filter(ApiKey.name == "viewer").scalar()
            revoke_api_key(session, key_id)
        live_api.app.state.ctx.keys.clear()  # as a revocation through the api does
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "no longer valid" in closed.value.rcvd.reason


def test_a_full_server_refuses_the_next_client_with_503(
    live_api: LiveApi, viewer_key: str
) -> None:
    from services.api.hub import HubOptions

    live_api.hub.options = HubOptions(max_clients=1, queue_limit=50, read_count=10)
    headers = {"X-API-Key": viewer_key}
    with open_ws(live_api.ws, additional_headers=headers) as first:
        recv(first)
        assert refused(live_api.ws, additional_headers=headers) == 503
    with pytest.raises(ValueError):
        HubOptions(queue_limit=10, read_count=10)
