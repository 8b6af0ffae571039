"""The read side of the api against real Redis and Postgres: auth, shapes, filters, problems."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis
from api_helpers import T0, add_ladder, add_leg, set_ltp
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shared.auth import Role, revoke_api_key
from shared.store.models import AlertRecord, ApiKey, Ohlcv

PROBLEM = "application/problem+json"
POSITION_KEYS = {
    "symbol", "ladder_id", "leg", "qty", "entry_price", "initial_stop", "stop", "target",
    "ltp", "pnl", "pnl_pct", "status",
}


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    return body


# --- authentication ----------------------------------------------------------------------------


def test_no_key_is_401_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/api/v1/positions"), 401)
    assert "X-API-Key" in body["detail"]


def test_bad_key_is_401(client: TestClient, viewer_key: str) -> None:
    assert_problem(client.get("/api/v1/positions", headers={"X-API-Key": "nope"}), 401)
    assert_problem(client.get("/api/v1/positions", headers={"X-API-Key": viewer_key + "x"}), 401)


def test_good_key_is_200(client: TestClient, viewer_key: str) -> None:
    response = client.get("/api/v1/positions", headers={"X-API-Key": viewer_key})
    assert response.status_code == 200
    assert response.json() == []


def test_expired_key_is_401(client: TestClient, make_key: Callable[..., str]) -> None:
    key = make_key(Role.ADMIN, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert_problem(client.get("/api/v1/pnl", headers={"X-API-Key": key}), 401)


def test_revoked_key_is_401(
    client: TestClient, viewer_key: str, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        key_id = session.query(ApiKey.id).filter(ApiKey.name == "viewer").scalar()
        revoke_api_key(session, key_id)
    assert_problem(client.get("/api/v1/pnl", headers={"X-API-Key": viewer_key}), 401)


def test_every_api_route_needs_a_credential(client: TestClient) -> None:
    spec = client.app.openapi()["paths"]
    checked = 0
    for path, operations in spec.items():
        if not path.startswith("/api/v1") or path == "/api/v1/auth/login":
            continue
        concrete = path.replace("{symbol}", "INFY").replace("{trade_id}", "x")
        concrete = concrete.replace("{key_id}", "1").replace("{user_id}", "1")
        for method in operations:
            assert_problem(client.request(method.upper(), concrete, json={}), 401)
            checked += 1
    assert checked >= 30


# --- positions ---------------------------------------------------------------------------------


def test_positions_shape_and_values(
    client: TestClient,
    viewer_key: str,
    sessions: sessionmaker[Session],
    redis_client: redis.Redis,
) -> None:
    with sessions.begin() as session:
        add_ladder(session, "L1", "INFY")
        add_ladder(session, "L2", "TCS")
        session.flush()
        add_leg(session, "L1", "INFY", 1, qty=30, entry="100.00", stop="98.00",
                initial_stop="97.50", target="105.00")
        add_leg(session, "L1", "INFY", 2, qty=29, entry="100.30", stop="97.75",
                initial_stop="97.75")
        add_leg(session, "L2", "TCS", 1, qty=1, entry="3500.00", stop="3412.50",
                initial_stop="3412.50", target="3675.00")
        add_leg(session, "L2", "TCS", 2, qty=1, entry="3510.00", status="CLOSED",
                exit_price="3500.00", exit_time=T0)
    set_ltp(redis_client, "INFY", 10150)  # ₹101.50; TCS has no LTP

    response = client.get("/api/v1/positions", headers={"X-API-Key": viewer_key})
    assert response.status_code == 200
    positions = response.json()
    assert [(p["symbol"], p["leg"]) for p in positions] == [("INFY", 1), ("INFY", 2), ("TCS", 1)]
    for p in positions:
        assert set(p) == POSITION_KEYS

    p1, p2, tcs = positions
    assert p1 == {
        "symbol": "INFY", "ladder_id": "L1", "leg": 1, "qty": 30, "entry_price": 100.0,
        "initial_stop": 97.5, "stop": 98.0, "target": 105.0, "ltp": 101.5, "pnl": 45.0,
        "pnl_pct": 1.5, "status": "OPEN",
    }
    assert p2["target"] is None  # a runner
    assert p2["pnl"] == pytest.approx(34.8)  # (101.50 - 100.30) * 29
    assert p2["pnl_pct"] == pytest.approx(1.1964, abs=1e-4)
    assert tcs["ltp"] is None and tcs["pnl"] is None and tcs["pnl_pct"] is None
    # Prices are JSON numbers, never strings.
    assert '"entry_price":100.0' in response.text.replace(" ", "")


def test_malformed_ltp_entry_is_no_price(
    client: TestClient, viewer_key: str, sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    with sessions.begin() as session:
        add_ladder(session, "L1", "INFY")
        session.flush()
        add_leg(session, "L1", "INFY", 1)
    redis_client.hset("md.ltp", "NSE:INFY", b"{not json")
    positions = client.get("/api/v1/positions", headers={"X-API-Key": viewer_key}).json()
    assert positions[0]["ltp"] is None


# --- trades: filters and paging ----------------------------------------------------------------


@pytest.fixture
def many_trades(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for i in range(12):
            symbol = "INFY" if i % 2 == 0 else "TCS"
            add_ladder(session, f"L{i}", symbol, phase="ENDED" if i < 6 else "ACTIVE")
        session.flush()
        for i in range(12):
            symbol = "INFY" if i % 2 == 0 else "TCS"
            closed = i < 6
            add_leg(
                session, f"L{i}", symbol, 1,
                entry_time=T0 + timedelta(hours=i),
                status="CLOSED" if closed else "OPEN",
                exit_price="101.00" if closed else None,
                exit_time=T0 + timedelta(hours=i, minutes=30) if closed else None,
                pnl="10.00" if closed else None,
            )


def trades(client: TestClient, key: str, **params: object) -> dict:
    response = client.get("/api/v1/trades", params=params, headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return response.json()


def test_trades_paging(client: TestClient, viewer_key: str, many_trades: None) -> None:
    first = trades(client, viewer_key, limit=5)
    assert first["total"] == 12 and first["limit"] == 5 and first["offset"] == 0
    assert len(first["items"]) == 5
    times = [t["entry_time"] for t in first["items"]]
    assert times == sorted(times, reverse=True)  # newest first
    rest = trades(client, viewer_key, limit=5, offset=5)["items"] + trades(
        client, viewer_key, limit=5, offset=10
    )["items"]
    ids = [t["trade_id"] for t in first["items"] + rest]
    assert len(ids) == len(set(ids)) == 12
    assert trades(client, viewer_key, offset=100)["items"] == []


def test_trades_filters(client: TestClient, viewer_key: str, many_trades: None) -> None:
    infy = trades(client, viewer_key, symbol="INFY")
    assert infy["total"] == 6 and {t["symbol"] for t in infy["items"]} == {"INFY"}
    closed = trades(client, viewer_key, status="CLOSED")
    assert closed["total"] == 6 and all(t["status"] == "CLOSED" for t in closed["items"])
    assert closed["items"][0]["exit_price"] == 101.0 and closed["items"][0]["pnl"] == 10.0
    both = trades(client, viewer_key, symbol="TCS", status="OPEN")
    assert both["total"] == 3
    start, end = (T0 + timedelta(hours=3)).isoformat(), (T0 + timedelta(hours=6)).isoformat()
    window = trades(client, viewer_key, **{"from": start, "to": end})
    assert window["total"] == 3  # hours 3, 4, 5: from inclusive, to exclusive
    leg = closed["items"][0]
    assert leg["leg"] == 1 and "position_number" not in leg


def test_trades_bad_filters_are_422_problems(client: TestClient, viewer_key: str) -> None:
    headers = {"X-API-Key": viewer_key}
    body = assert_problem(client.get("/api/v1/trades?status=WHATEVER", headers=headers), 422)
    assert body["errors"][0]["loc"][-1] == "status"
    assert_problem(client.get("/api/v1/trades?limit=0", headers=headers), 422)
    assert_problem(client.get("/api/v1/trades?limit=501", headers=headers), 422)
    assert_problem(client.get("/api/v1/trades?offset=-1", headers=headers), 422)
    assert_problem(client.get("/api/v1/trades?from=yesterday", headers=headers), 422)
    assert_problem(client.get("/api/v1/trades?from=2025-01-02T09:15:00", headers=headers), 422)


# --- problem bodies ----------------------------------------------------------------------------


def test_unknown_route_is_404_problem(client: TestClient, viewer_key: str) -> None:
    body = assert_problem(client.get("/api/v1/nothing", headers={"X-API-Key": viewer_key}), 404)
    assert body["instance"] == "/api/v1/nothing"
    assert_problem(client.get("/nothing"), 404)


def test_wrong_method_is_405_problem(client: TestClient, viewer_key: str) -> None:
    assert_problem(client.delete("/api/v1/positions", headers={"X-API-Key": viewer_key}), 405)


# --- the other read endpoints ------------------------------------------------------------------


def test_ladders_orders_gtts_alerts(
    client: TestClient, viewer_key: str, sessions: sessionmaker[Session], many_trades: None
) -> None:
    with sessions.begin() as session:
        session.add(AlertRecord(level="warning", code="gtt_missing", message="no GTT",
                                symbol="INFY", source="strategy"))
    headers = {"X-API-Key": viewer_key}
    ladders = client.get("/api/v1/ladders?phase=ACTIVE", headers=headers).json()
    assert ladders["total"] == 6
    assert client.get("/api/v1/orders", headers=headers).json()["total"] == 0
    assert client.get("/api/v1/gtts", headers=headers).json()["items"] == []
    alerts = client.get("/api/v1/alerts?level=warning", headers=headers).json()
    assert alerts["items"][0]["code"] == "gtt_missing"


def test_candles_with_emas(
    client: TestClient, viewer_key: str, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        for i in range(5):
            session.add(Ohlcv(exchange="NSE", symbol="INFY", timeframe=15,
                              ts=T0 + timedelta(minutes=15 * i), open=100 + i, high=101 + i,
                              low=99 + i, close=100.5 + i, volume=1000,
                              ema_9=100.1 + i if i >= 2 else None, ema_21=None, ema_50=None,
                              ema_200=None))
    headers = {"X-API-Key": viewer_key}
    bars = client.get("/api/v1/candles/INFY?limit=3", headers=headers).json()
    assert [b["close"] for b in bars] == [102.5, 103.5, 104.5]  # latest 3, oldest first
    assert set(bars[0]) == {"ts", "open", "high", "low", "close", "volume",
                            "ema_9", "ema_21", "ema_50", "ema_200"}
    assert bars[0]["ema_9"] == pytest.approx(102.1) and bars[0]["ema_200"] is None
    assert client.get("/api/v1/candles/NOPE", headers=headers).json() == []
    assert_problem(client.get("/api/v1/candles/BAD%20SYM", headers=headers), 422)


def test_ltp_all_and_some(client: TestClient, viewer_key: str, redis_client: redis.Redis) -> None:
    set_ltp(redis_client, "INFY", 150025)
    set_ltp(redis_client, "TCS", 350000)
    headers = {"X-API-Key": viewer_key}
    every = client.get("/api/v1/ltp", headers=headers).json()
    assert [(q["symbol"], q["price"]) for q in every] == [("INFY", 1500.25), ("TCS", 3500.0)]
    some = client.get("/api/v1/ltp?symbols=NSE:TCS,WIPRO", headers=headers).json()
    assert [q["symbol"] for q in some] == ["TCS"]
    assert some[0]["volume"] == 5000 and some[0]["ts"].startswith("2025-01-02")


def test_pnl_realised_and_unrealised(
    client: TestClient, viewer_key: str, sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    now = datetime.now(UTC)
    with sessions.begin() as session:
        add_ladder(session, "L1", "INFY")
        add_ladder(session, "L2", "TCS", phase="ENDED")
        session.flush()
        add_leg(session, "L1", "INFY", 1, qty=10, entry="100.00")
        add_leg(session, "L1", "INFY", 2, qty=10, entry="101.00", status="CLOSED",
                exit_price="99.00", exit_time=now - timedelta(days=3))  # no pnl stored: -20
        add_leg(session, "L2", "TCS", 1, qty=2, entry="3500.00", status="CLOSED",
                exit_price="3600.00", exit_time=now, pnl="200.00")
    set_ltp(redis_client, "INFY", 10500)  # +50 on the open leg
    pnl = client.get("/api/v1/pnl", headers={"X-API-Key": viewer_key}).json()
    assert pnl["total"] == {"realised": 180.0, "unrealised": 50.0, "total": 230.0}
    assert pnl["day"] == {"realised": 200.0, "unrealised": 50.0, "total": 250.0}
    by = {s["symbol"]: s for s in pnl["by_symbol"]}
    assert by["INFY"] == {"symbol": "INFY", "realised": -20.0, "realised_day": 0.0,
                          "unrealised": 50.0, "total": 30.0, "open_legs": 1}
    assert by["TCS"]["realised_day"] == 200.0 and by["TCS"]["open_legs"] == 0


# --- health, readiness, metrics, docs, dashboard -----------------------------------------------


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"postgres": "ok", "redis": "ok"}}


def test_ready_is_503_when_redis_is_gone(
    api_settings, engine, sessions: sessionmaker[Session], make_key: Callable[..., str]
) -> None:
    from ratchet.servers import free_port
    from services.api.app import create_app

    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    key = make_key(Role.VIEWER)
    with sessions.begin() as session:
        add_ladder(session, "L1", "INFY")
        session.flush()
        add_leg(session, "L1", "INFY", 1)
    with TestClient(create_app(api_settings, engine=engine, redis=dead)) as test_client:
        body = assert_problem(test_client.get("/readyz"), 503)
        assert body["checks"] == {"postgres": "ok", "redis": "error"}
        # Reads that need the LTP store say so (503 + Retry-After), never a bare 500.
        response = test_client.get("/api/v1/positions", headers={"X-API-Key": key})
        assert_problem(response, 503)
        assert response.headers["retry-after"] == "5"


def test_metrics_count_requests(client: TestClient, viewer_key: str) -> None:
    client.get("/api/v1/positions", headers={"X-API-Key": viewer_key})
    client.get("/api/v1/positions")
    text = client.get("/metrics").text
    series = 'ratchet_api_requests_total{method="GET",route="/api/v1/positions",status="%s"} 1.0'
    assert series % 200 in text and series % 401 in text
    assert "ratchet_api_request_duration_seconds_bucket" in text


def test_openapi_docs_and_dashboard(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "Problem" in spec["components"]["schemas"]
    positions = spec["paths"]["/api/v1/positions"]["get"]
    assert "application/problem+json" in positions["responses"]["401"]["content"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/vendor/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()  # the docs work offline
    assert client.get("/static/vendor/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
    assert client.get("/static/dashboard.js").status_code == 200
