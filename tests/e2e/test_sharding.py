"""Scaling out: ticks sharded 4 ways, two strategy replicas. Each symbol is handled by exactly one
replica (the owner of its token's shard); when one replica is killed its shards are taken over,
and no intent is lost or doubled."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.strategy.shards import owned_shards, read_claims
from shared.contracts import streams
from shared.contracts.messages import decode
from shared.store.models import Instrument, OutboxMessage
from tests.conftest import private_dir
from tests.e2e.harness import (
    ServiceProcesses,
    assert_no_intent_lost_or_doubled,
    scalar,
    settled,
    wait_for,
)

pytestmark = pytest.mark.e2e

SHARDS = 4


def intent_sources(sessions: sessionmaker[Session], after: int = 0) -> dict[str, set[str]]:
    """symbol -> the replicas that decided intents for it (from the envelopes' source), among the
    outbox rows after id ``after``. The outbox, not the stream: a replica's rows are relayed by
    whichever replica holds the relay lock, so the stream's order is publication order, while the
    outbox ids follow the transactions that decided them."""
    out: dict[str, set[str]] = {}
    with sessions() as session:
        rows = session.scalars(select(OutboxMessage.data).where(
            OutboxMessage.stream == streams.INTENTS, OutboxMessage.id > after))
        for data in rows:
            envelope = decode(data.encode())
            out.setdefault(envelope.payload.symbol, set()).add(envelope.source)  # type: ignore[attr-defined]
    return out


def newest_outbox_id(sessions: sessionmaker[Session]) -> int:
    return scalar(sessions, "SELECT coalesce(max(id), 0) FROM outbox")


def test_shards_split_between_replicas_and_taken_over_when_one_dies(
    service_env: dict[str, str], sessions: sessionmaker[Session], redis_client: redis.Redis
) -> None:
    home = private_dir("ratchet-test-shards-")
    env = {**service_env, "RATCHET_HOME": str(home), "RATCHET_SIM_SEED": "5",
           "RATCHET_SIM_SPEED": "900", "RATCHET_SIM_TICK_INTERVAL_S": "15",
           "RATCHET_TICK_SHARDS": str(SHARDS),
           "RATCHET_EXECUTION__UNKNOWN_SETTLE_S": "1", "RATCHET_EXECUTION__INTENT_RESEND_S": "3"}
    system = ServiceProcesses(env, home / "logs")
    try:
        system.start("marketdata")
        system.start("execution")
        system.start("strategy", "strategy-0", RATCHET_REPLICA="0")
        system.start("strategy", "strategy-1", RATCHET_REPLICA="1")

        def split() -> bool:
            """Each replica claims exactly its half. Disjoint claims covering every shard are not
            enough: {"0": none, "1": all} is the state while the first replica waits for the
            other to let go, and cutting there judges the handover's own rows."""
            owned = read_claims(redis_client)
            return owned == {r: owned_shards(r, ["0", "1"], SHARDS) for r in ("0", "1")}

        wait_for(split, 120, "both replicas owning disjoint shards")
        # Until the second replica joined, the first owned every shard: judge what came after.
        # An outbox id is taken when a row is inserted, so rows after this one were decided after
        # both replicas had announced the split (the first announces only once it let go).
        split_at = newest_outbox_id(sessions)
        wait_for(lambda: scalar(sessions, "SELECT count(*) FROM orders") >= 10, 180, "orders")
        owned = read_claims(redis_client)
        with sessions() as session:
            tokens = dict(session.execute(select(Instrument.tradingsymbol, Instrument.token)).all())
        owner_of = {s: next(r for r, sh in owned.items() if streams.tick_shard(t, SHARDS) in sh)
                    for s, t in tokens.items()}
        for symbol, sources in intent_sources(sessions, split_at).items():
            assert sources == {f"strategy-{owner_of[symbol]}"}, (symbol, sources)

        system.procs["strategy-1"].kill()
        system.procs["strategy-1"].wait()
        # Read only once it is dead: an intent it decided just before dying is not a takeover's.
        last_id = newest_outbox_id(sessions)
        wait_for(lambda: read_claims(redis_client).get("0") == set(range(SHARDS)), 60,
                 "the takeover")
        orphaned = {s for s, r in owner_of.items() if r == "1"}
        wait_for(lambda: any(s in orphaned for s in intent_sources(sessions, last_id)), 120,
                 "intents for a taken-over symbol")
        after = intent_sources(sessions, last_id)
        assert all(sources <= {"strategy-0"} for sources in after.values()), after
        system.stop("marketdata")
        wait_for(lambda: settled(sessions, redis_client), 120, "every intent settled")
    finally:
        system.stop_all()
    assert_no_intent_lost_or_doubled(sessions)
