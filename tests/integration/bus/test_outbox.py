"""The outbox against real Postgres and Redis: a transaction's staged messages are published in
the order staged once it commits; a rolled-back transaction's are gone, also from a session
that goes on to commit other work."""

from __future__ import annotations

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.bus.publisher import OutboxRelay, Publisher, stage
from shared.contracts.messages import FIELD, Alert, AlertLevel, decode
from shared.store.models import OutboxMessage

STREAM = "test.outbox"


def _alert(code: str) -> Alert:
    return Alert(level=AlertLevel.INFO, code=code, message=code)


def test_committed_messages_are_published_in_order_rolled_back_ones_never(
    sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    redis_client.delete(STREAM)
    with sessions.begin() as session:
        for code in ("first", "second", "third"):
            stage(session, STREAM, _alert(code), msg_id=code, ts_ms=1, source="test")
    try:
        with sessions.begin() as session:
            stage(session, STREAM, _alert("rolled-back"), msg_id="rolled-back", ts_ms=1,
                  source="test")
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    with sessions() as session:  # one session: a rollback, then a commit of other work
        stage(session, STREAM, _alert("dropped"), msg_id="dropped", ts_ms=1, source="test")
        session.rollback()
        stage(session, STREAM, _alert("fourth"), msg_id="fourth", ts_ms=1, source="test")
        session.commit()
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 4
    relay = OutboxRelay(sessions, Publisher(redis_client, "test"), "test")
    assert relay.flush() == 4
    assert relay.flush() == 0  # marked published
    published = [decode(fields[FIELD]).id for _, fields in redis_client.xrange(STREAM)]
    assert published == ["first", "second", "third", "fourth"]
