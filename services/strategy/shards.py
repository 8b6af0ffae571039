"""Strategy replicas share the tick shards through a deterministic shard map.

Each replica beats a short-lived membership key. Shard ``n`` is meant for the replica at position
``n % len(live)`` of the sorted live replica ids, so every replica computes the same map from the
same membership and each symbol (its instrument token's shard) is handled by exactly one. A shard
changes hands through the claims in ``SHARD_MAP``: its owner lets go first (persists and drops
its symbols, then shrinks its claim), and a replica claims a shard only while no other live
replica's claim holds it, so two replicas never handle one symbol at the same time. When a
replica dies its key expires, its claim stops counting, and the others take its shards over: they
rebuild the symbols from Postgres (state, stored bars, and the execution events of their
ladders), read the shard's tick stream from where the group left it, and claim the dead
consumer's pending entries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.client import Pipeline

from services.strategy.service import StrategyService
from shared.bus.consumer import StreamConsumer
from shared.contracts import streams
from shared.contracts.messages import (
    FIELD,
    GttPlaced,
    LegClosed,
    OrderFilled,
    OrderRejected,
    decode,
)

log = logging.getLogger("ratchet.strategy")

MEMBER_PREFIX = "strategy.members."
SHARD_MAP = "strategy.shards"  # Redis hash: replica -> the shards it claims ("0,2")


def _parse_shards(claim: bytes | str) -> set[int]:
    text = claim.decode() if isinstance(claim, bytes) else claim
    return {int(n) for n in text.split(",") if n}


def owned_shards(replica: str, members: list[str], shards: int) -> set[int]:
    live = sorted(set(members) | {replica})
    position = live.index(replica)
    return {n for n in range(shards) if n % len(live) == position}


@dataclass
class Membership:
    client: redis.Redis
    replica: str
    ttl_s: int = 6

    def beat(self) -> None:
        self.client.set(MEMBER_PREFIX + self.replica, "1", ex=self.ttl_s)

    def members(self) -> list[str]:
        keys = self.client.keys(MEMBER_PREFIX + "*")
        return sorted(
            (k.decode() if isinstance(k, bytes) else k)[len(MEMBER_PREFIX):] for k in keys
        )

    def leave(self) -> None:
        """A clean stop: the others may take this replica's shards at their next beat."""
        self.client.delete(MEMBER_PREFIX + self.replica)
        self.client.hdel(SHARD_MAP, self.replica)


@dataclass
class ShardOwner:
    """Keeps this replica's shards, tick consumer and symbols in step with the membership."""

    client: redis.Redis
    service: StrategyService
    ticks: StreamConsumer
    membership: Membership
    shards: int
    token_of: Callable[[str], int | None]
    symbols_of_shard: Callable[[int], list[str]]
    owned: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rebalanced: bool = False

    def owns(self, symbol: str) -> bool:
        token = self.token_of(symbol)
        return token is not None and streams.tick_shard(token, self.shards) in self.owned

    def rebalance(self) -> None:
        """Beat, read the membership and the claims; let go of the shards no longer ours, then
        claim the free ones that are. A shard its live owner still claims is taken at a later
        beat, once that owner let go of it."""
        with self._lock:
            self.membership.beat()
            me, live = self.membership.replica, self.membership.members()
            target = owned_shards(me, live, self.shards)
            claims = read_claims(self.client)
            held = _held_by_others(claims, me, live)
            # the second part: shards taken over while this replica was paused past its TTL
            lost = (self.owned - target) | (self.owned & held)
            if lost:  # not ours first, so no tick in hand loads a symbol back once forgotten
                self.owned -= lost
                self.service.forget([s for n in sorted(lost) for s in self.symbols_of_shard(n)])
            wanted = target - self.owned - held
            gained = self._claim(wanted, live) if wanted else set()
            if not gained and claims.get(me) != self.owned:
                self.client.hset(SHARD_MAP, me, _claim_text(self.owned))
            first = not self._rebalanced
            self._rebalanced = True
            if not lost and not gained:
                return
            self.owned |= gained
            self.ticks.streams = [streams.ticks_stream(n) for n in sorted(self.owned)]
            self.ticks.setup()
            adopted = [s for n in sorted(gained) for s in self.symbols_of_shard(n)]
            ladders = self.service.adopt(adopted) if adopted else []
            if ladders and not first:
                self.replay_events(set(ladders))
            log.info("shards rebalanced", extra={
                "owned": sorted(self.owned), "gained": sorted(gained), "lost": sorted(lost),
                "waiting_for": sorted(target - self.owned), "ladders": len(ladders)})

    def _claim(self, wanted: set[int], live: list[str]) -> set[int]:
        """Atomically add to this replica's claim those of ``wanted`` no other live replica
        claims, dropping the claims of replicas no longer live; returns the shards added."""
        me = self.membership.replica
        with self.client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(SHARD_MAP)
                    claims = read_claims(pipe)
                    free = wanted - _held_by_others(claims, me, live)
                    gone = [replica for replica in claims if replica != me and replica not in live]
                    pipe.multi()
                    if gone:
                        pipe.hdel(SHARD_MAP, *gone)
                    pipe.hset(SHARD_MAP, me, _claim_text(self.owned | free))
                    pipe.execute()
                    return free
                except redis.WatchError:
                    continue  # another replica changed the claims meanwhile: read them again

    def replay_events(self, ladders: set[str], chunk: int = 1000) -> int:
        """Apply the execution events of taken-over ladders (idempotent in the engine): those
        that reached the dead replica but not its state, and those nobody read for them."""
        applied, start = 0, "-"
        while True:
            entries = self.client.xrange(streams.EXEC_EVENTS, min=start, count=chunk)
            assert entries is not None  # XRANGE answers a list, maybe empty
            for _entry_id, fields in entries:
                assert fields is not None  # None only in XAUTOCLAIM's answer (a deleted entry)
                payload = decode(fields[FIELD]).payload
                if isinstance(payload, OrderFilled | OrderRejected | LegClosed | GttPlaced) \
                        and payload.ladder_id in ladders:
                    with self.service.lock:
                        self.service.on_exec_event(payload)
                    applied += 1
            if len(entries) < chunk:
                break
            last = entries[-1][0]
            assert last is not None
            start = "(" + (last.decode() if isinstance(last, bytes) else last)
        self.service.flush()
        return applied


def read_claims(client: redis.Redis | Pipeline) -> dict[str, set[int]]:
    """replica -> the shards it claims (live or not)."""
    return {(k.decode() if isinstance(k, bytes) else k): _parse_shards(v)
            for k, v in client.hgetall(SHARD_MAP).items()}


def _held_by_others(claims: dict[str, set[int]], me: str, live: list[str]) -> set[int]:
    return {n for replica, shards in claims.items() if replica != me and replica in live
            for n in shards}


def _claim_text(shards: set[int]) -> str:
    return ",".join(map(str, sorted(shards)))
