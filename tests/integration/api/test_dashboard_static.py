"""The dashboard's files: all from this origin, the vendored chart library at the pinned version
with its license, the CSP hash of the one inline style it adds, and the endpoints it relies on
(who am I with the CSRF token of a cookie session, the equity curve)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import redis
from api_helpers import T0, add_ladder, add_leg, set_ltp
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from services.api.middleware import CHARTS_STYLE_HASH
from shared.auth import Role, create_user

ROOT = Path(__file__).resolve().parents[3]
STATIC = ROOT / "services" / "api" / "static"
CHARTS = STATIC / "vendor" / "lightweight-charts.standalone.production.js"


def test_the_vendored_chart_library_is_the_pinned_one_with_its_license() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"][
        "lightweight-charts"]
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"][
        "node_modules/lightweight-charts"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pinned to one exact version"
    assert locked["version"] == pinned and locked["integrity"].startswith("sha512-")
    header = CHARTS.read_text()[:300]
    assert f"Lightweight Charts™ v{pinned}" in header
    assert "Apache License" in (STATIC / "vendor" / "lightweight-charts.LICENSE").read_text()


def test_the_csp_allows_exactly_the_inline_style_of_the_library() -> None:
    source = CHARTS.read_text()
    match = re.search(r'createElement\("style"\),this\.\w+\.innerText="([^"]*)"', source)
    assert match, "the library's attribution style was not found: check the CSP by hand"
    digest = base64.b64encode(hashlib.sha256(match.group(1).encode()).digest()).decode()
    assert CHARTS_STYLE_HASH == f"'sha256-{digest}'"


def test_the_page_loads_only_files_of_this_origin(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/static/") or s == "data:," for s in sources), sources
    for source in sources:
        if source.startswith("/static/"):
            assert client.get(source).status_code == 200, source


def test_me_gives_a_cookie_session_its_csrf_token(
    client: TestClient, sessions: sessionmaker[Session], viewer_key: str
) -> None:
    with sessions.begin() as session:
        create_user(session, "ravi", "long enough password", Role.VIEWER)
    login = client.post("/api/v1/auth/login",
                        json={"username": "ravi", "password": "long enough password"})
    assert login.status_code == 200
    me = client.get("/api/v1/auth/me").json()
    assert me["via_cookie"] and me["csrf_token"] == login.json()["csrf_token"]
    client.cookies.clear()
    by_key = client.get("/api/v1/auth/me", headers={"X-API-Key": viewer_key}).json()
    assert "csrf_token" not in by_key


def test_the_equity_curve_adds_up_closed_legs_in_exit_order(
    client: TestClient, sessions: sessionmaker[Session], redis_client: redis.Redis,
    make_key: Callable[..., str],
) -> None:
    with sessions.begin() as session:
        add_ladder(session, "L1", "INFY")
        add_ladder(session, "L2", "TCS")
        session.flush()
        add_leg(session, "L1", "INFY", 1, status="CLOSED", exit_price="103.00", pnl="30.00",
                exit_time=T0 + timedelta(hours=2))
        add_leg(session, "L1", "INFY", 2, status="CLOSED", exit_price="99.00",
                exit_time=T0 + timedelta(hours=1))  # no stored pnl: from its prices, -10
        add_leg(session, "L2", "TCS", 1, entry="200.00")
    set_ltp(redis_client, "TCS", 201_00)
    body = client.get("/api/v1/pnl/equity", headers={"X-API-Key": make_key(Role.VIEWER)}).json()
    assert [p["realised"] for p in body["points"]] == [-10.0, 20.0]
    assert (body["realised"], body["unrealised"], body["total"]) == (20.0, 10.0, 30.0)
