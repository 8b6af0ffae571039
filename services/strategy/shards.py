"""Strategy replicas share the tick shards through a deterministic shard map.

Each replica beats a short-lived membership key. Shard ``n`` belongs to the replica at position
``n % len(live)`` of the sorted live replica ids, so every replica computes the same map from the
same membership and each symbol (its instrument token's shard) is handled by exactly one. When a
replica dies its key expires and the others take its shards over: they rebuild the symbols from
Postgres (state, stored bars, and the execution events of their ladders), read the shard's tick
stream from where the group left it, and claim the dead consumer's pending entries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from services.strategy.service import StrategyService
from shared.bus.consumer import StreamConsumer
from shared.contracts import streams
from shared.contracts.messages import FIELD, GttPlaced, LegClosed, OrderFilled, OrderRejected, decode

log = logging.getLogger("ratchet.strategy")

MEMBER_PREFIX = "strategy.members."
SHARD_MAP = "strategy.shards"  # Redis hash: replica -> its shards, for people and tests


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
        return sorted((k.decode() if isinstance(k, bytes) else k)[len(MEMBER_PREFIX):] for k in keys)

    def leave(self) -> None:
        self.client.delete(MEMBER_PREFIX + self.replica)


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

    def owns(self, symbol: str) -> bool:
        token = self.token_of(symbol)
        return token is not None and streams.tick_shard(token, self.shards) in self.owned

    def rebalance(self) -> None:
        """Beat, read the membership, and move shards if it changed."""
        with self._lock:
            self.membership.beat()
            target = owned_shards(self.membership.replica, self.membership.members(), self.shards)
            if target == self.owned:
                return
            takeover = bool(self.owned)  # not the first assignment at start-up
            gained, lost = target - self.owned, self.owned - target
            lost_symbols = [s for n in sorted(lost) for s in self.symbols_of_shard(n)]
            self.service.forget(lost_symbols)
            self.owned = target
            self.ticks.streams = [streams.ticks_stream(n) for n in sorted(target)]
            self.ticks.setup()
            gained_symbols = [s for n in sorted(gained) for s in self.symbols_of_shard(n)]
            ladders = self.service.adopt(gained_symbols)
            if ladders and takeover:
                self.replay_events(set(ladders))
            self.client.hset(SHARD_MAP, self.membership.replica, ",".join(map(str, sorted(target))))
            log.info("shards rebalanced", extra={"owned": sorted(target), "gained": sorted(gained),
                                                 "lost": sorted(lost), "ladders": len(ladders)})

    def replay_events(self, ladders: set[str], chunk: int = 1000) -> int:
        """Apply the execution events of taken-over ladders (idempotent in the engine): those
        that reached the dead replica but not its state, and those nobody read for them."""
        applied, start = 0, "-"
        while True:
            entries = self.client.xrange(streams.EXEC_EVENTS, min=start, count=chunk)
            for _entry_id, fields in entries:
                payload = decode(fields[FIELD]).payload
                if isinstance(payload, OrderFilled | OrderRejected | LegClosed | GttPlaced) \
                        and payload.ladder_id in ladders:
                    with self.service.lock:
                        self.service.on_exec_event(payload)
                    applied += 1
            if len(entries) < chunk:
                break
            last = entries[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else last)
        self.service.flush()
        return applied
