"""The mutating side: commands with their audit rows and control messages, settings, keys,
users and login, rate limits, body limit and Idempotency-Key."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
import redis
from api_helpers import add_ladder, add_leg, control_messages
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.api.app import create_app
from services.api.commands import Command
from shared.auth import Role, create_user
from shared.config import Settings
from shared.contracts.messages import ExitRequested, Flatten, Halt, ParamsChanged, Resume
from shared.store.models import AuditEntry, HaltRecord, OutboxMessage, SettingsVersion

PROBLEM = "application/problem+json"


def h(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def audit_actions(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))


# --- halt, resume, flatten, strategy, exit -----------------------------------------------------


def test_halt_writes_row_audit_and_message(
    client: TestClient, admin_key: str, sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    response = client.post("/api/v1/halt", json={"reason": "drill"}, headers=h(admin_key))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["active"] is True and body["kind"] == "kill_switch"
    assert re.fullmatch(r"key:\d+:admin", body["by"])  # the audit names the key by id
    with sessions() as session:
        halt = session.get(HaltRecord, body["id"])
        assert halt is not None and halt.active and halt.reason == "drill"
        audit = session.scalars(select(AuditEntry)).one()
        assert (audit.action, audit.actor, audit.object_id) == ("halt", body["by"], str(halt.id))
        assert session.scalar(
            select(func.count()).where(OutboxMessage.published_at.is_(None))
        ) == 0
    [message] = control_messages(redis_client)
    assert isinstance(message.payload, Halt) and message.source == "api"
    assert message.payload.reason == "drill" and message.payload.by == body["by"]
    status = client.get("/api/v1/strategy", headers=h(admin_key)).json()
    assert status["halted"] is True


def test_resume_clears_halts(
    client: TestClient, admin_key: str, sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    client.post("/api/v1/halt", json={"reason": "one"}, headers=h(admin_key))
    client.post("/api/v1/halt", json={"reason": "two"}, headers=h(admin_key))
    response = client.post("/api/v1/resume", headers=h(admin_key))
    assert response.status_code == 200
    assert sorted(x["reason"] for x in response.json()["cleared"]) == ["one", "two"]
    assert client.get("/api/v1/halts?active=true", headers=h(admin_key)).json()["total"] == 0
    assert client.get("/api/v1/halts", headers=h(admin_key)).json()["total"] == 2
    assert isinstance(control_messages(redis_client)[-1].payload, Resume)
    assert audit_actions(sessions) == ["halt", "halt", "resume"]


def test_flatten_needs_confirmation(
    client: TestClient, admin_key: str, redis_client: redis.Redis
) -> None:
    assert client.post("/api/v1/flatten", json={}, headers=h(admin_key)).status_code == 422
    bad = client.post("/api/v1/flatten", json={"confirm": False}, headers=h(admin_key))
    assert bad.status_code == 422
    ok = client.post("/api/v1/flatten", json={"confirm": True}, headers=h(admin_key))
    assert ok.status_code == 202
    [message] = control_messages(redis_client)
    assert isinstance(message.payload, Flatten) and ok.json()["message_id"] == message.id


def test_strategy_start_stop(client: TestClient, trader_key: str, viewer_key: str) -> None:
    assert client.get("/api/v1/strategy", headers=h(viewer_key)).json()["state"] == "running"
    stopped = client.post("/api/v1/strategy/stop", headers=h(trader_key)).json()
    assert stopped["state"] == "stopped" and re.fullmatch(r"key:\d+:trader", stopped["changed_by"])
    assert client.post("/api/v1/strategy/start", headers=h(trader_key)).json()["state"] == (
        "running"
    )
    assert client.post("/api/v1/strategy/stop", headers=h(viewer_key)).status_code == 403


def test_exit_leg(
    client: TestClient, trader_key: str, sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    with sessions.begin() as session:
        add_ladder(session, "L1", "INFY")
        session.flush()
        add_leg(session, "L1", "INFY", 1)
        add_leg(session, "L1", "INFY", 2, status="CLOSED", exit_price="99.00")
    assert client.post("/api/v1/legs/nope/exit", headers=h(trader_key)).status_code == 404
    closed = client.post("/api/v1/legs/L1:2/exit", headers=h(trader_key))
    assert closed.status_code == 409 and closed.headers["content-type"] == PROBLEM
    ok = client.post("/api/v1/legs/L1:1/exit", headers=h(trader_key))
    assert ok.status_code == 202
    assert ok.json() | {"message_id": "-"} == {
        "status": "accepted", "message_id": "-", "trade_id": "L1:1", "ladder_id": "L1", "leg": 1,
    }
    [message] = control_messages(redis_client)
    assert message.payload == ExitRequested(ladder_id="L1", leg=1, by=message.payload.by)
    assert re.fullmatch(r"key:\d+:trader", message.payload.by)
    assert audit_actions(sessions) == ["leg.exit"]  # refused calls changed nothing


def test_effect_and_audit_share_a_transaction(
    client: TestClient, admin_key: str, sessions: sessionmaker[Session],
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_audit(self: Command, *args: object, **kwargs: object) -> None:
        raise RuntimeError("audit write failed")

    monkeypatch.setattr(Command, "audit", broken_audit)
    response = client.post("/api/v1/halt", json={"reason": "x"}, headers=h(admin_key))
    assert response.status_code == 500 and response.headers["content-type"] == PROBLEM
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(HaltRecord)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert control_messages(redis_client) == []


# --- settings ----------------------------------------------------------------------------------


def test_settings_put_validates_stores_and_announces(
    client: TestClient, admin_key: str, sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    current = client.get("/api/v1/settings", headers=h(admin_key)).json()
    assert current["strategy"]["p1_stop_pct"] == 2.5  # a number, not a string
    assert current["risk"]["max_capital"] == 240000

    response = client.put("/api/v1/settings/strategy", json={"p1_stop_pct": 3},
                          headers=h(admin_key))
    assert response.status_code == 200, response.text
    assert response.json()["p1_stop_pct"] == 3.0 and response.json()["p2_stop_pct"] == 2.5
    again = client.put("/api/v1/settings/strategy", json={"p2_stop_pct": "2.75"},
                       headers=h(admin_key)).json()
    assert again["p1_stop_pct"] == 3.0 and again["p2_stop_pct"] == 2.75  # earlier change kept

    for bad in ({"p1_stop_pct": 0}, {"p1_stop_pct": 50.5}, {"p3_stop_pct": -1},
                {"capital_per_position": 0}, {"unknown": 1}, {"ema_periods": [21, 9, 50, 200]},
                {}):
        refused = client.put("/api/v1/settings/strategy", json=bad, headers=h(admin_key))
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.headers["content-type"] == PROBLEM
    assert client.put("/api/v1/settings/risk", json={"max_capital": 0},
                      headers=h(admin_key)).status_code == 422

    history = client.get("/api/v1/settings/history?section=strategy", headers=h(admin_key)).json()
    assert history["total"] == 2
    assert history["items"][0]["values"]["p2_stop_pct"] == "2.75"  # stored exactly
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(SettingsVersion)) == 2
    messages = [m.payload for m in control_messages(redis_client)]
    assert all(isinstance(m, ParamsChanged) for m in messages) and len(messages) == 2
    assert messages[0].section == "strategy" and messages[0].values == {"p1_stop_pct": "3"}
    assert messages[1].values == {"p2_stop_pct": "2.75"}  # the changed fields only
    assert audit_actions(sessions) == ["settings.put", "settings.put"]
    # The same values again change nothing: no row, no audit, no message.
    same = client.put("/api/v1/settings/strategy", json={"p1_stop_pct": 3}, headers=h(admin_key))
    assert same.status_code == 200 and same.json()["p1_stop_pct"] == 3.0
    assert len(control_messages(redis_client)) == 2 and len(audit_actions(sessions)) == 2
    emas = client.put("/api/v1/settings/strategy", json={"ema_periods": [9, 21, 50, 100]},
                      headers=h(admin_key))
    assert emas.json()["ema_periods"] == [9, 21, 50, 100]
    assert control_messages(redis_client)[-1].payload.values == {"ema_periods": "9,21,50,100"}


# --- keys, users, login ------------------------------------------------------------------------


def test_keys_create_list_revoke(client: TestClient, admin_key: str) -> None:
    created = client.post("/api/v1/keys", json={"name": "ops", "role": "trader"},
                          headers=h(admin_key))
    assert created.status_code == 201
    new = created.json()
    assert new["secret"].startswith(new["prefix"]) and new["role"] == "trader"
    assert client.get("/api/v1/auth/me", headers=h(new["secret"])).json() == {
        "kind": "key", "name": "ops", "role": "trader", "via_cookie": False}
    listing = client.get("/api/v1/keys", headers=h(admin_key))
    assert new["secret"] not in listing.text and "hash" not in listing.text
    assert {k["name"] for k in listing.json()} == {"admin", "ops"}
    revoked = client.delete(f"/api/v1/keys/{new['id']}", headers=h(admin_key))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert client.get("/api/v1/positions", headers=h(new["secret"])).status_code == 401
    assert client.delete("/api/v1/keys/999", headers=h(admin_key)).status_code == 404
    bad = client.post("/api/v1/keys", json={"name": "x", "role": "root"}, headers=h(admin_key))
    assert bad.status_code == 422


def test_login_guessing_is_limited_per_address_without_locking_the_owner_out(
    api_settings: Settings, engine: Engine, redis_client: redis.Redis,
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        create_user(session, "alice", "alice-pass-1", Role.ADMIN)

    def login_from(address: str, passwords: list[str]) -> list[int]:
        app = create_app(api_settings, engine=engine, redis=redis_client)
        with TestClient(app, raise_server_exceptions=False, client=(address, 1)) as caller:
            return [caller.post("/api/v1/auth/login",
                                json={"username": "alice", "password": p}).status_code
                    for p in passwords]

    guesses = [f"guess-{n}" for n in range(10)]
    assert login_from("6.6.6.6", [*guesses, "guess-10", "alice-pass-1"]) == [401] * 10 + [429] * 2
    assert login_from("10.0.0.5", ["alice-pass-1"]) == [200]  # the owner, elsewhere, gets in


def test_users_login_csrf_logout(
    client: TestClient, admin_key: str, sessions: sessionmaker[Session]
) -> None:
    created = client.post("/api/v1/users", json={"username": "asha", "password": "s3cret-pass",
                                                 "role": "admin"}, headers=h(admin_key))
    assert created.status_code == 201 and "password" not in created.text
    dup = client.post("/api/v1/users", json={"username": "asha", "password": "other-pass1",
                                             "role": "viewer"}, headers=h(admin_key))
    assert dup.status_code == 409

    wrong = client.post("/api/v1/auth/login", json={"username": "asha", "password": "nope"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    login = client.post("/api/v1/auth/login", json={"username": "asha",
                                                    "password": "s3cret-pass"})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Max-Age=28800" in cookie and "Secure" not in cookie  # plain http in the test
    csrf = login.json()["csrf_token"]

    assert client.get("/api/v1/positions").status_code == 200  # the cookie is enough to read
    assert client.get("/api/v1/auth/me").json()["via_cookie"] is True
    no_csrf = client.post("/api/v1/halt", json={"reason": "x"})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["detail"]
    wrong_csrf = client.post("/api/v1/halt", json={"reason": "x"}, headers={"X-CSRF-Token": "x"})
    assert wrong_csrf.status_code == 403
    ok = client.post("/api/v1/halt", json={"reason": "x"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201 and ok.json()["by"] == "user:asha"

    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.clear()
    client.cookies.set("ratchet_session", cookie.split(";")[0].split("=", 1)[1])
    assert client.get("/api/v1/positions").status_code == 401  # the session is gone


def test_disabling_a_user_ends_their_sessions(
    client: TestClient, admin_key: str, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        user_id = create_user(session, "ravi", "password-1", Role.VIEWER).id
    assert client.post("/api/v1/auth/login", json={"username": "ravi",
                                                   "password": "password-1"}).status_code == 200
    assert client.get("/api/v1/pnl").status_code == 200
    disabled = client.delete(f"/api/v1/users/{user_id}", headers=h(admin_key))
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert client.get("/api/v1/pnl").status_code == 401
    assert client.post("/api/v1/auth/login", json={"username": "ravi",
                                                   "password": "password-1"}).status_code == 401


def test_secure_cookie_over_tls(
    api_settings, engine, redis_client: redis.Redis, sessions: sessionmaker[Session]
) -> None:
    with sessions.begin() as session:
        create_user(session, "tls", "password-1", Role.VIEWER)
    app = create_app(api_settings, engine=engine, redis=redis_client)
    with TestClient(app, base_url="https://testserver") as tls:
        login = tls.post("/api/v1/auth/login", json={"username": "tls", "password": "password-1"})
        assert "Secure" in login.headers["set-cookie"]


# --- rate limits, body size, idempotency -------------------------------------------------------


def test_rate_limit_per_caller(
    api_settings, engine, redis_client: redis.Redis, sessions: sessionmaker[Session],
    make_key: Callable[..., str],
) -> None:
    settings = api_settings.model_copy(update={"api": api_settings.api.model_copy(
        update={"rate_limit_per_minute": 5})})
    one, two = make_key(Role.VIEWER, "one"), make_key(Role.VIEWER, "two")
    with TestClient(create_app(settings, engine=engine, redis=redis_client)) as test_client:
        codes = [test_client.get("/api/v1/pnl", headers=h(one)).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        limited = test_client.get("/api/v1/pnl", headers=h(one))
        assert limited.headers["content-type"] == PROBLEM
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert test_client.get("/api/v1/pnl", headers=h(two)).status_code == 200  # per caller
        # A second replica shares the counters (they live in Redis).
        with TestClient(create_app(settings, engine=engine, redis=redis_client)) as replica:
            assert replica.get("/api/v1/pnl", headers=h(one)).status_code == 429
        # Guessing keys is limited by address too.
        bad = [test_client.get("/api/v1/pnl", headers=h("x")).status_code for _ in range(7)]
        assert bad[:5] == [401] * 5 and bad[-1] == 429


def test_body_size_limit(client: TestClient, admin_key: str) -> None:
    big = {"reason": "x" * 70_000}
    response = client.post("/api/v1/halt", json=big, headers=h(admin_key))
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM

    def chunks():
        for _ in range(20):
            yield b"x" * 8192

    streamed = client.post("/api/v1/halt", content=chunks(),
                           headers={**h(admin_key), "Content-Type": "application/json"})
    assert streamed.status_code == 413
    streamed = client.post("/api/v1/halt", content=chunks(),
                           headers={**h(admin_key), "Content-Type": "application/json",
                                    "Idempotency-Key": "big"})
    assert streamed.status_code == 413


def test_idempotency_key_replays_the_first_response(
    client: TestClient, admin_key: str, make_key: Callable[..., str],
    sessions: sessionmaker[Session], redis_client: redis.Redis,
) -> None:
    headers = {**h(admin_key), "Idempotency-Key": "halt-1"}
    first = client.post("/api/v1/halt", json={"reason": "once"}, headers=headers)
    second = client.post("/api/v1/halt", json={"reason": "once"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(HaltRecord)) == 1
    assert len(control_messages(redis_client)) == 1
    assert audit_actions(sessions) == ["halt"]

    other_body = client.post("/api/v1/halt", json={"reason": "twice"}, headers=headers)
    assert other_body.status_code == 422 and other_body.headers["content-type"] == PROBLEM

    # The key is scoped per caller: another admin's "halt-1" is another request.
    other_admin = make_key(Role.ADMIN, "admin2")
    third = client.post("/api/v1/halt", json={"reason": "once"},
                        headers={**h(other_admin), "Idempotency-Key": "halt-1"})
    assert third.status_code == 201 and third.json()["id"] != first.json()["id"]

    # A refused request (403) is not kept: the same key may be used once the role allows it.
    viewer = make_key(Role.VIEWER, "v")
    assert client.post("/api/v1/flatten", json={"confirm": True},
                       headers={**h(viewer), "Idempotency-Key": "k"}).status_code == 403
    bad_key = client.post("/api/v1/flatten", json={"confirm": True},
                          headers={**h(admin_key), "Idempotency-Key": "x" * 300})
    assert bad_key.status_code == 400


def test_a_new_keys_secret_is_never_kept_for_a_replay(
    client: TestClient, admin_key: str, sessions: sessionmaker[Session], redis_client: redis.Redis,
) -> None:
    headers = {**h(admin_key), "Idempotency-Key": "new-key-1"}
    body = {"name": "bot", "role": "trader"}
    first = client.post("/api/v1/keys", json=body, headers=headers)
    assert first.status_code == 201, first.text
    secret = first.json()["secret"]
    stored = [redis_client.get(k) or b"" for k in redis_client.scan_iter("api:idem:*")]
    assert stored and not any(secret.encode() in v or base64.b64encode(secret.encode()) in v
                              or b'"body"' in v for v in stored)
    again = client.post("/api/v1/keys", json=body, headers=headers)
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
    assert "succeeded (201)" in again.json()["detail"] and secret not in again.text
    names = [k["name"] for k in client.get("/api/v1/keys", headers=h(admin_key)).json()]
    assert names.count("bot") == 1  # the effect happened once


def test_a_revoked_credential_gets_no_replay(
    client: TestClient, admin_key: str, make_key: Callable[..., str],
    sessions: sessionmaker[Session],
) -> None:
    other_admin = make_key(Role.ADMIN, "soon-revoked")
    headers = {**h(other_admin), "Idempotency-Key": "halt-r"}
    first = client.post("/api/v1/halt", json={"reason": "r"}, headers=headers)
    assert first.status_code == 201, first.text
    keys = client.get("/api/v1/keys", headers=h(admin_key)).json()
    [revoked_id] = [k["id"] for k in keys if k["name"] == "soon-revoked"]
    assert client.delete(f"/api/v1/keys/{revoked_id}", headers=h(admin_key)).status_code == 200
    replay = client.post("/api/v1/halt", json={"reason": "r"}, headers=headers)
    assert replay.status_code == 401 and "idempotent-replayed" not in replay.headers
