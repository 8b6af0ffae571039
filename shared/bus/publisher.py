"""Publishing to streams, and the outbox that makes a publish survive a crash.

A service that changes Postgres and must tell the others writes the message into its ``outbox``
table in the same transaction; :class:`OutboxRelay` then publishes unpublished rows in order and
marks them. A crash between commit and publish therefore delays a message, never loses it;
consumers dedupe by message id, so publishing twice is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import bindparam, event, func, select, update
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from shared.contracts.messages import FIELD, Payload, encode
from shared.store.bulk import ColumnsInsert
from shared.store.models import OutboxMessage

log = logging.getLogger("ratchet.bus")


def now_ms() -> int:
    return int(time.time() * 1000)


class Publisher:
    """XADD envelopes to streams. Market-data streams are trimmed (approximate MAXLEN);
    command streams never are."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.source = source

    def publish(
        self,
        stream: str,
        payload: Payload,
        *,
        msg_id: str,
        ts_ms: int | None = None,
        maxlen: int | None = None,
    ) -> str:
        data = encode(payload, msg_id=msg_id, ts_ms=ts_ms or now_ms(), source=self.source)
        entry = self.client.xadd(stream, {FIELD: data}, maxlen=maxlen, approximate=True)
        return entry.decode() if isinstance(entry, bytes) else entry

    def publish_raw(self, items: Iterable[tuple[str, bytes]], maxlen: int | None = None) -> None:
        """Publish pre-encoded envelopes in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for stream, data in items:
            pipe.xadd(stream, {FIELD: data}, maxlen=maxlen, approximate=True)
        pipe.execute()


_STAGED = "ratchet.outbox.staged"  # session.info: this transaction's outbox rows, in order
_INSERT_STAGED = ColumnsInsert(OutboxMessage.__table__, ("source", "stream", "msg_id", "data"))


def stage(
    session: Session,
    stream: str,
    payload: Payload,
    *,
    msg_id: str,
    ts_ms: int,
    source: str,
    origin: str | None = None,
) -> None:
    """Add a message to the outbox inside the caller's transaction. ``source`` is the service
    whose relay publishes it; ``origin`` (default: the source) names the replica in the envelope.
    The transaction's messages are inserted together as it commits, in the order staged (one
    statement, rather than one ORM object each), and dropped if it rolls back."""
    data = encode(payload, msg_id=msg_id, ts_ms=ts_ms, source=origin or source).decode()
    if not session.in_transaction():
        session.begin()  # so that its end, whichever way, is seen (no connection taken yet)
    session.info.setdefault(_STAGED, []).append(
        {"source": source, "stream": stream, "msg_id": msg_id, "data": data})


@event.listens_for(Session, "before_commit")
def _insert_staged(session: Session) -> None:
    staged = session.info.pop(_STAGED, None)
    if staged:
        _INSERT_STAGED.execute(session, staged)


@event.listens_for(Session, "after_transaction_end")
def _drop_unsent(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost: committed (already inserted) or rolled back
        session.info.pop(_STAGED, None)


PAGE = 500  # outbox rows published a round


def _take_unpublished() -> Any:
    """Mark the oldest unpublished rows of ``relay_source`` (at most ``limit``) and return
    them: one statement; the caller publishes them before it commits, or rolls the marks back."""
    o = OutboxMessage.__table__.c
    oldest = (select(o.id)
              .where(o.published_at.is_(None), o.source == bindparam("relay_source"))
              .order_by(o.id).limit(bindparam("limit")))
    return (update(OutboxMessage.__table__).where(o.id.in_(oldest.scalar_subquery()))
            .values(published_at=bindparam("at")).returning(o.id, o.stream, o.data))


_TAKE_UNPUBLISHED = _take_unpublished()


class OutboxRelay:
    """Publishes committed outbox rows of one service, oldest first. With several replicas of a
    service, one relays at a time (a transaction-scoped advisory lock), so order is kept and a
    dead replica's rows are published by the others."""

    def __init__(self, sessions: sessionmaker[Session], publisher: Publisher, source: str) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.source = source
        self._lock_key = zlib.crc32(f"outbox:{source}".encode())
        self._nudged = threading.Event()

    def nudge(self) -> None:
        """Ask :meth:`run` to publish now (a consumer's batch just committed messages): the
        consumer goes on at once instead of waiting for the publish."""
        self._nudged.set()

    def run(self, stop: threading.Event, every_s: float = 0.2) -> None:
        """Publish when nudged, and at least every ``every_s``, until ``stop`` is set; a failed
        flush (Redis or Postgres away) is logged and tried again."""
        while not stop.is_set():
            self._nudged.wait(every_s)
            self._nudged.clear()
            try:
                while self.flush() == PAGE and not stop.is_set():
                    pass  # a full page: there may be more
            except Exception:
                log.exception("outbox flush failed", extra={"source": self.source})
                stop.wait(every_s)

    def flush(self, limit: int = PAGE) -> int:
        """Publish up to ``limit`` committed rows, oldest first; how many were published."""
        with self.sessions() as session:
            if not session.scalar(select(func.pg_try_advisory_xact_lock(self._lock_key))):
                return 0  # another replica is relaying right now
            rows = sorted(session.execute(_TAKE_UNPUBLISHED, {
                "relay_source": self.source, "limit": limit, "at": datetime.now(UTC)}).all())
            if not rows:
                return 0
            self.publisher.publish_raw((r.stream, r.data.encode()) for r in rows)
            session.commit()
        return len(rows)
