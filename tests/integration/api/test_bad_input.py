"""Input the database cannot store is a clear 422, never an internal error: a NUL character
anywhere in a request, and (the backstop) any value Postgres refuses."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.deps import SessionDep
from shared.config import Settings
from shared.store.models import AuditEntry, HaltRecord

PROBLEM = "application/problem+json"


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.mark.parametrize(("method", "url", "body"), [
    ("POST", "/api/v1/auth/login", {"username": "a\u0000b", "password": "x"}),
    ("POST", "/api/v1/halt", {"reason": "a\u0000b"}),
    ("POST", "/api/v1/keys", {"name": "a\u0000b", "role": "viewer"}),
    ("PUT", "/api/v1/settings/execution", {"algo_id": "a\u0000b"}),
    ("POST", "/api/v1/legs/a%00b/exit", None),
    ("GET", "/api/v1/trades?symbol=a%00b", None),
    ("GET", "/api/v1/audit?actor=a%00b", None),
], ids=["login", "halt", "key", "settings", "path", "query", "audit"])
def test_a_nul_character_is_refused_with_422_and_changes_nothing(
    client: TestClient, admin_key: str, sessions: sessionmaker[Session],
    method: str, url: str, body: dict[str, str] | None,
) -> None:
    response = client.request(method, url, json=body, headers=h(admin_key))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "NUL" in response.json()["detail"]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
        assert session.scalar(select(func.count()).select_from(HaltRecord)) == 0


def test_an_escaped_backslash_before_u0000_is_text(client: TestClient, admin_key: str) -> None:
    reason = "path C:\\u0000"  # a backslash, then the letters u0000: no NUL in it
    response = client.post("/api/v1/halt", json={"reason": reason}, headers=h(admin_key))
    assert response.status_code == 201, response.text
    assert response.json()["reason"] == reason


def test_a_value_postgres_refuses_is_422_not_500(
    api_settings: Settings, engine: Engine, redis_client: redis.Redis,
) -> None:
    app = create_app(api_settings, engine=engine, redis=redis_client)

    @app.get("/api/v1/test-unstorable")
    def unstorable(session: SessionDep) -> int:
        return int(session.execute(text("SELECT 1 / 0")).scalar_one())  # a DataError (22012)

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/v1/test-unstorable")
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert response.json()["detail"] == "a value in the request cannot be stored"
