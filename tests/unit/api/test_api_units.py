"""Pure parts of the api: valuation, roles, key cache, LTP parsing, problem bodies."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from services.api.context import Caller, KeyCache
from services.api.ltp import _parse
from services.api.metrics import route_template
from services.api.problems import problem_response
from services.api.valuation import realised_pnl, value_leg
from shared.auth import Role, hash_secret


def test_value_leg() -> None:
    v = value_leg(Decimal("100.00"), 30, 10150)
    assert v is not None
    assert v.ltp == Decimal("101.5") and v.pnl == Decimal("45.00") and v.pnl_pct == 1.5
    loss = value_leg(Decimal("200.00"), 3, 19000)
    assert loss is not None and loss.pnl == Decimal("-30.00") and loss.pnl_pct == -5.0
    assert value_leg(None, 1, 100) is None
    assert value_leg(Decimal("1"), 1, None) is None
    assert value_leg(Decimal("0"), 1, 100) is None


def test_realised_pnl() -> None:
    assert realised_pnl(Decimal("12.34"), None, None, 5) == Decimal("12.34")
    assert realised_pnl(None, Decimal("100"), Decimal("98.5"), 10) == Decimal("-15.00")
    assert realised_pnl(None, None, Decimal("98.5"), 10) == 0


def test_roles_are_ordered() -> None:
    assert Role.ADMIN.allows(Role.TRADER) and Role.ADMIN.allows(Role.VIEWER)
    assert Role.TRADER.allows(Role.VIEWER) and not Role.TRADER.allows(Role.ADMIN)
    assert not Role.VIEWER.allows(Role.TRADER)


def test_hash_secret_is_sha256_hex() -> None:
    digest = hash_secret("abc")
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def _caller(key_id: int = 1, expires_at: datetime | None = None) -> Caller:
    return Caller(kind="key", id=key_id, name="k", role=Role.VIEWER, expires_at=expires_at)


def test_key_cache_ttl_expiry_and_drop() -> None:
    cache = KeyCache(ttl=0.05)
    cache.put("h1", _caller())
    assert cache.get("h1") == _caller()
    time.sleep(0.06)
    assert cache.get("h1") is None
    cache.put("h2", _caller(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert cache.get("h2") is None  # expiry checked on every use
    cache = KeyCache(ttl=60)
    cache.put("h3", _caller(7))
    cache.put("h4", _caller(8))
    cache.drop_key(7)
    assert cache.get("h3") is None and cache.get("h4") is not None


def test_key_cache_is_bounded() -> None:
    cache = KeyCache(max_entries=3)
    for i in range(10):
        cache.put(f"h{i}", _caller(i))
    assert len(cache._entries) <= 3


def test_ltp_parse() -> None:
    raw = orjson.dumps({"token": 1, "price": 12345, "ts_ms": 5, "volume": 7})
    q = _parse("NSE:INFY", raw)
    assert q is not None and (q.exchange, q.symbol, q.price_paise) == ("NSE", "INFY", 12345)
    assert _parse("NSE:INFY", b"{") is None
    assert _parse("NSE:INFY", b'{"price": "1"}') is None
    assert _parse("NSE:INFY", b'{"price": true}') is None
    assert _parse("NSE:INFY", b"[]") is None
    assert _parse("NSE:INFY", None) is None


def test_problem_response_body() -> None:
    response = problem_response(404, "no such leg", instance="/api/v1/legs/x/exit", code="x")
    assert response.media_type == "application/problem+json"
    assert orjson.loads(response.body) == {
        "type": "about:blank", "title": "Not Found", "status": 404, "detail": "no such leg",
        "instance": "/api/v1/legs/x/exit", "code": "x",
    }


def test_route_template_without_a_match() -> None:
    assert route_template({"type": "http"}) == "<unmatched>"


def test_position_dicts_match_the_schema() -> None:
    from services.api.routers.positions import position_dicts
    from services.api.schemas import Position

    rows = [
        ("INFY", "NSE", "L1", 1, 30, 10000, 9750, 9800, 10500, "OPEN"),
        ("INFY", "NSE", "L1", 2, 29, 10030, 9775, 9775, None, "OPEN"),
        ("TCS", "NSE", "L2", 1, 1, 350000, None, None, None, "OPEN"),
    ]
    out = position_dicts(rows, {"NSE:INFY": 10150})
    for item in out:
        assert Position.model_validate(item).model_dump() == item
        assert list(item) == list(Position.model_fields)
    assert out[0]["pnl"] == 45.0 and out[0]["pnl_pct"] == 1.5 and out[0]["target"] == 105.0
    assert out[1]["pnl"] == 34.8 and out[1]["target"] is None
    assert out[2]["ltp"] is None and out[2]["pnl"] is None and out[2]["initial_stop"] is None
