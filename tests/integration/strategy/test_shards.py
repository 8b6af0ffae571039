"""Shard handover between strategy replicas on real Redis and Postgres: a shard is let go by its
owner before another replica takes it, so at no step do two replicas hold one symbol, whether a
replica joins, dies, or wakes from a pause after the others took its shards."""

from __future__ import annotations

import itertools

import redis
from sqlalchemy.orm import Session, sessionmaker

from services.strategy.service import StrategyService
from services.strategy.shards import MEMBER_PREFIX, Membership, ShardOwner, read_claims
from shared.bus.consumer import StreamConsumer
from shared.config import StrategySettings
from shared.contracts import streams
from shared.domain.engine import MomentumEngine
from shared.domain.ladder import StrategyParams
from shared.domain.session import SessionRules

SHARDS = 4
# one symbol per shard: "S<n>" with a token that hashes to shard n
TOKENS = {f"S{n}": next(t for t in itertools.count(1) if streams.tick_shard(t, SHARDS) == n)
          for n in range(SHARDS)}


def replica(client: redis.Redis, sessions: sessionmaker[Session], name: str) -> ShardOwner:
    service = StrategyService(MomentumEngine(StrategyParams(), SessionRules()), sessions,
                              StrategySettings(), lambda symbol: ("NSE", 5, []))
    ticks = StreamConsumer(client, [], streams.GROUP_STRATEGY, f"strategy-{name}", service.handle,
                           block_ms=10, start="$")
    owner = ShardOwner(client, service, ticks, Membership(client, name), SHARDS, TOKENS.get,
                       lambda shard: [f"S{shard}"])
    service.owns = owner.owns
    return owner


def symbols(owner: ShardOwner) -> set[str]:
    return set(owner.service.engine_symbols)


def assert_exclusive(*owners: ShardOwner) -> None:
    for a, b in itertools.combinations(owners, 2):
        assert not a.owned & b.owned, (a.owned, b.owned)
        assert not symbols(a) & symbols(b), (symbols(a), symbols(b))


def test_a_joining_replica_waits_until_the_owner_lets_go(redis_client, sessions) -> None:
    first, second = replica(redis_client, sessions, "0"), replica(redis_client, sessions, "1")
    first.rebalance()
    assert first.owned == set(range(SHARDS)) and symbols(first) == set(TOKENS)

    second.rebalance()  # its shards (1 and 3) are still claimed by the first
    assert second.owned == set() and symbols(second) == set()
    assert second.ticks.poll_once() == 0  # a consumer with no shards yet reads nothing, quietly
    assert_exclusive(first, second)

    first.rebalance()  # sees the newcomer: lets 1 and 3 go
    assert first.owned == {0, 2} and symbols(first) == {"S0", "S2"}
    assert read_claims(redis_client) == {"0": {0, 2}, "1": set()}
    assert_exclusive(first, second)

    second.rebalance()
    assert second.owned == {1, 3} and symbols(second) == {"S1", "S3"}
    assert second.ticks.streams == [streams.ticks_stream(1), streams.ticks_stream(3)]
    assert read_claims(redis_client) == {"0": {0, 2}, "1": {1, 3}}
    assert_exclusive(first, second)


def test_a_dead_replicas_shards_are_taken_and_its_claim_dropped(redis_client, sessions) -> None:
    first, second = replica(redis_client, sessions, "0"), replica(redis_client, sessions, "1")
    for owner in (first, second, first, second):
        owner.rebalance()
    assert (first.owned, second.owned) == ({0, 2}, {1, 3})

    redis_client.delete(MEMBER_PREFIX + "1")  # its membership expired: it died
    first.rebalance()
    assert first.owned == set(range(SHARDS)) and symbols(first) == set(TOKENS)
    assert read_claims(redis_client) == {"0": set(range(SHARDS))}


def test_a_replica_paused_past_its_ttl_gives_up_what_was_taken(redis_client, sessions) -> None:
    first, second = replica(redis_client, sessions, "0"), replica(redis_client, sessions, "1")
    for owner in (first, second, first, second):
        owner.rebalance()
    redis_client.delete(MEMBER_PREFIX + "1")  # paused longer than its TTL
    first.rebalance()  # takes 1 and 3 over
    assert first.owned == set(range(SHARDS))

    second.rebalance()  # wakes: 1 and 3 are its by the map, but the first holds them now
    assert second.owned == set() and symbols(second) == set()
    assert_exclusive(first, second)
    first.rebalance()
    second.rebalance()
    assert (first.owned, second.owned) == ({0, 2}, {1, 3})
    assert_exclusive(first, second)


def test_a_clean_stop_frees_the_shards_at_once(redis_client, sessions) -> None:
    first, second = replica(redis_client, sessions, "0"), replica(redis_client, sessions, "1")
    for owner in (first, second, first, second):
        owner.rebalance()
    second.membership.leave()
    assert "1" not in read_claims(redis_client)
    first.rebalance()
    assert first.owned == set(range(SHARDS))
