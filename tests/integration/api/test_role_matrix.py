"""Every endpoint, called by each role: allowed at or above its role, 403 below (OWASP API1/API5:
object- and function-level authorisation). The table must name every route the app serves."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from shared.auth import Role

_n = itertools.count()

# (method, path, least role, json body or a function making one)
MATRIX: list[tuple[str, str, Role, object]] = [
    ("GET", "/api/v1/positions", Role.VIEWER, None),
    ("GET", "/api/v1/ladders", Role.VIEWER, None),
    ("GET", "/api/v1/trades", Role.VIEWER, None),
    ("GET", "/api/v1/orders", Role.VIEWER, None),
    ("GET", "/api/v1/gtts", Role.VIEWER, None),
    ("GET", "/api/v1/candles/{symbol}", Role.VIEWER, None),
    ("GET", "/api/v1/ltp", Role.VIEWER, None),
    ("GET", "/api/v1/pnl", Role.VIEWER, None),
    ("GET", "/api/v1/pnl/equity", Role.VIEWER, None),
    ("GET", "/api/v1/alerts", Role.VIEWER, None),
    ("GET", "/api/v1/strategy", Role.VIEWER, None),
    ("GET", "/api/v1/halts", Role.VIEWER, None),
    ("GET", "/api/v1/auth/me", Role.VIEWER, None),
    ("POST", "/api/v1/auth/logout", Role.VIEWER, None),
    ("POST", "/api/v1/strategy/start", Role.TRADER, None),
    ("POST", "/api/v1/strategy/stop", Role.TRADER, None),
    ("POST", "/api/v1/legs/{trade_id}/exit", Role.TRADER, None),
    ("POST", "/api/v1/halt", Role.ADMIN, {"reason": "matrix"}),
    ("POST", "/api/v1/resume", Role.ADMIN, None),
    ("POST", "/api/v1/flatten", Role.ADMIN, {"confirm": True}),
    ("GET", "/api/v1/settings", Role.ADMIN, None),
    ("GET", "/api/v1/settings/history", Role.ADMIN, None),
    ("PUT", "/api/v1/settings/strategy", Role.ADMIN, {"p1_stop_pct": 2.5}),
    ("PUT", "/api/v1/settings/risk", Role.ADMIN, {"max_open_legs": 90}),
    ("PUT", "/api/v1/settings/execution", Role.ADMIN, {"gtt_child_timeout_s": 30}),
    ("PUT", "/api/v1/settings/marketdata", Role.ADMIN, {"stale_feed_s": 30}),
    ("PUT", "/api/v1/settings/api", Role.ADMIN, {"rate_limit_per_minute": 100_000}),
    ("GET", "/api/v1/keys", Role.ADMIN, None),
    ("POST", "/api/v1/keys", Role.ADMIN, lambda: {"name": f"k{next(_n)}", "role": "viewer"}),
    ("DELETE", "/api/v1/keys/{key_id}", Role.ADMIN, None),
    ("GET", "/api/v1/users", Role.ADMIN, None),
    ("POST", "/api/v1/users", Role.ADMIN,
     lambda: {"username": f"u{next(_n)}", "password": "password-1", "role": "viewer"}),
    ("DELETE", "/api/v1/users/{user_id}", Role.ADMIN, None),
    ("GET", "/api/v1/audit", Role.ADMIN, None),
]
PUBLIC = {("POST", "/api/v1/auth/login"), ("GET", "/healthz"), ("GET", "/readyz"),
          ("GET", "/metrics")}
PARAMS = {"{symbol}": "INFY", "{trade_id}": "none", "{key_id}": "99999", "{user_id}": "99999"}


def _concrete(path: str) -> str:
    for name, value in PARAMS.items():
        path = path.replace(name, value)
    return path


def test_the_matrix_names_every_route(client: TestClient) -> None:
    served = {(m.upper(), p) for p, ops in client.app.openapi()["paths"].items() for m in ops}
    assert served == {(m, p) for m, p, _, _ in MATRIX} | PUBLIC


@pytest.mark.parametrize("role", list(Role))
def test_each_role_on_each_endpoint(
    client: TestClient, make_key: Callable[..., str], role: Role
) -> None:
    key = make_key(role, f"matrix-{role.value}")
    for method, path, least, body in MATRIX:
        payload = body() if callable(body) else body
        response = client.request(method, _concrete(path), json=payload,
                                  headers={"X-API-Key": key})
        if role.allows(least):
            assert response.status_code not in (401, 403), (role, method, path, response.text)
            assert response.status_code < 500, (role, method, path, response.text)
        else:
            assert response.status_code == 403, (role, method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
