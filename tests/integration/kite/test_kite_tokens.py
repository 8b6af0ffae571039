"""The Kite access token: `ratchet kite login` against the simulator, encrypted at rest, its
daily expiry known and warned about, and a missing, expired or refused token met with a halt and
one clear message (never the token itself in any output)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from ratchet.cli import app
from services.execution.budget import OrderBudget
from services.execution.faults import FaultPoints
from services.execution.kite_orders import connect_kite
from services.execution.processor import Execution
from services.execution.states import OrderState
from shared.broker_tokens import (
    HALT_KIND,
    KEY_ENV,
    TokenStore,
    TokenWatch,
    kite_expiry,
    new_key,
)
from shared.config import Settings
from shared.contracts.messages import PlaceOrder
from shared.domain.session import SessionRules
from shared.store.models import AlertRecord, HaltRecord, Order
from tests.integration.kite.kite_helpers import API_KEY, API_SECRET, Sim, ist_ms

IST = timedelta(hours=5, minutes=30)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    proc = Sim(Path(tmp_path_factory.mktemp("kite-tokens")) / "state")
    yield proc
    proc.stop()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = new_key()
    monkeypatch.setenv(KEY_ENV, value)
    return value


def halts(sessions: sessionmaker[Session], by: str) -> list[HaltRecord]:
    with sessions() as session:
        return list(session.scalars(select(HaltRecord).where(
            HaltRecord.active.is_(True), HaltRecord.kind == HALT_KIND, HaltRecord.by == by)))


def halts_soon(sessions: sessionmaker[Session], by: str, timeout: float = 30.0) -> list[HaltRecord]:
    """The active halts of ``by`` once there is one (or none, after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not (found := halts(sessions, by)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_expiry_is_the_next_six_am_ist() -> None:
    def utc(*ist: int) -> datetime:
        return (datetime(*ist) - IST).replace(tzinfo=UTC)

    assert kite_expiry(utc(2025, 1, 6, 5, 0)) == utc(2025, 1, 6, 6, 0)
    assert kite_expiry(utc(2025, 1, 6, 10, 0)) == utc(2025, 1, 7, 6, 0)


def test_token_is_encrypted_at_rest(sessions: sessionmaker[Session], key: str) -> None:
    store = TokenStore(sessions, key)
    saved = store.save("k1", "very-secret-access-token", "AB1234")
    with sessions() as session:
        raw = session.execute(text("SELECT token_encrypted FROM broker_tokens")).scalar_one()
    assert "very-secret" not in raw
    assert store.load("k1").access_token == "very-secret-access-token"  # type: ignore[union-attr]
    assert "very-secret" not in repr(saved)
    assert TokenStore(sessions, new_key()).load("k1") is None  # another key cannot read it


def test_watch_halts_warns_and_clears(sessions: sessionmaker[Session], key: str,
                                      caplog: pytest.LogCaptureFixture) -> None:
    store = TokenStore(sessions, key)
    now = [datetime(2025, 1, 6, 4, 0, tzinfo=UTC)]  # 09:30 IST
    seen: list[str] = []
    watch = TokenWatch(store, "k1", "execution", seen.append, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="ratchet.kite.token")

    watch.check()  # nothing stored: halted, told what to do
    assert len(halts(sessions, "execution")) == 1
    assert "ratchet kite login" in halts(sessions, "execution")[0].reason
    watch.check()  # still one halt, one message
    assert len(halts(sessions, "execution")) == 1
    assert sum("no Kite access token" in r.message for r in caplog.records) == 1

    store.save("k1", "token-one", "AB1234", login_at=now[0])
    watch.check()
    assert seen == ["token-one"] and halts(sessions, "execution") == []

    now[0] = kite_expiry(now[0]) - timedelta(minutes=30)  # within the warning hour
    watch.check()
    with sessions() as session:
        codes = [a.code for a in session.scalars(select(AlertRecord))]
    assert "token_expiring" in codes and halts(sessions, "execution") == []

    now[0] += timedelta(minutes=31)  # past 06:00 IST
    watch.check()
    reason = halts(sessions, "execution")[0].reason
    assert "expired at" in reason and "06:00 IST" in reason

    store.save("k1", "token-two", "AB1234", login_at=now[0])  # the next day's login
    watch.check()
    assert seen[-1] == "token-two" and halts(sessions, "execution") == []

    watch.refused()  # Kite says no: halted until another token is stored
    watch.check()
    assert "refused" in halts(sessions, "execution")[0].reason
    store.save("k1", "token-three", "AB1234", login_at=now[0])
    watch.check()
    assert halts(sessions, "execution") == []
    assert not any("token-" in r.getMessage() for r in caplog.records)


def test_kite_login_cli_against_the_simulator(sim: Sim, sessions: sessionmaker[Session], key: str,
                                              database_url: str) -> None:
    env = {"RATCHET_DATABASE_URL": database_url, "RATCHET_KITE_ROOT": sim.root,
           "RATCHET_KITE_API_KEY": API_KEY, "RATCHET_KITE_API_SECRET": API_SECRET, KEY_ENV: key,
           "RATCHET_HOME": str(sim.state_dir)}
    runner = CliRunner()
    redirect = "https://example.invalid/cb?action=login&request_token=abc123&status=success"
    result = runner.invoke(app, ["kite", "login", "--request-token", redirect], env=env)
    assert result.exit_code == 0, result.output
    assert "kite.zerodha.com/connect/login?api_key=ratchetkey" in result.output
    assert "logged in as SIM001" in result.output and "expires at" in result.output
    stored = TokenStore(sessions, key).load(API_KEY)
    assert stored is not None and stored.access_token not in result.output

    status = runner.invoke(app, ["kite", "status", "--check"], env=env)
    assert status.exit_code == 0, status.output
    assert "SIM001" in status.output and "Kite accepts it" in status.output
    assert stored.access_token not in status.output

    bad = runner.invoke(app, ["kite", "login", "--request-token", "x"],
                        env={**env, "RATCHET_KITE_API_SECRET": "wrong"})
    assert bad.exit_code == 1 and "Kite refused the login" in bad.output

    nokey = runner.invoke(app, ["kite", "status"], env={**env, KEY_ENV: ""})
    assert nokey.exit_code == 2 and "ratchet kite keygen" in nokey.output


def test_expired_session_halts_entries_until_a_new_login(
    sim: Sim, sessions: sessionmaker[Session], redis_client: redis.Redis, key: str,
    redis_url: str, database_url: str,
) -> None:
    store = TokenStore(sessions, key)
    store.save(API_KEY, sim.login(), "SIM001")
    settings = Settings(redis_url=redis_url, database_url=database_url, kite_root=sim.root,
                        kite_api_key=API_KEY, execution={"unknown_settle_s": 1})
    links = connect_kite(settings, sessions)
    assert links.watch.usable and halts(sessions, "execution") == []
    budget = OrderBudget(redis_client, 10, 400, 5000)
    execution = Execution(sessions, links.broker, budget, settings, SessionRules(),
                          FaultPoints(frozenset(), 0))
    price = links.broker.ltp(["NSE:SBIN"])["NSE:SBIN"]

    def buy(leg: int) -> PlaceOrder:
        ladder = "NSE:SBIN:202501061100"
        return PlaceOrder(intent_id=f"momentum:{ladder}:{leg}:buy", strategy="momentum",
                          exchange="NSE", symbol="SBIN", ladder_id=ladder, leg=leg,
                          ts_ms=ist_ms("2025-01-06", "11:00"), qty=1, ref_price=price)

    sim.admin("POST", "/sessions/expire")
    execution.place_order(buy(1))  # refused: not placed, left to the reconciler, not a crash
    with sessions() as session:
        first = session.scalars(select(Order).where(Order.leg == 1)).one()
    assert first.state == OrderState.SUBMITTED and first.broker_order_id is None
    halt = halts_soon(sessions, "execution")  # written off the sending thread, right after it
    assert len(halt) == 1 and "refused" in halt[0].reason and "ratchet kite login" in halt[0].reason
    execution.place_order(buy(2))  # a new entry now stops at the guard, before the broker
    with sessions() as session:
        second = session.scalars(select(Order).where(Order.leg == 2)).one()
    assert second.state == OrderState.REJECTED and "halted" in (second.reason or "")

    store.save(API_KEY, sim.login(), "SIM001")  # `ratchet kite login` again
    links.watch.check()
    assert halts(sessions, "execution") == [] and links.watch.usable
    assert links.broker.profile()["user_id"] == "SIM001"
