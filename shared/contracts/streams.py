"""Stream and consumer-group names: the one place they are spelled (DESIGN.md §5)."""

from __future__ import annotations

import zlib

TICKS_PREFIX = "md.ticks"
CANDLES = "md.candles"
INTENTS = "strategy.intents"
EXEC_EVENTS = "exec.events"
CONTROL = "control"
DEAD_LETTERS = "dead.letters"

# Consumer groups (one per consuming service; `control` is a broadcast: one group per replica).
GROUP_STRATEGY = "strategy"
GROUP_EXECUTION = "execution"
GROUP_API = "api"

# Redis keys that are not streams.
LTP_HASH = "md.ltp"  # "EXCHANGE:SYMBOL" -> JSON {"token", "price" (paise), "ts_ms", "volume"}
FEED_HEARTBEAT = "md.feed.heartbeat"  # feed clock (event ms) and wall time of the last frame


def ticks_stream(shard: int) -> str:
    return f"{TICKS_PREFIX}.{shard}"


def tick_shard(token: int, shards: int) -> int:
    """Shard of an instrument token: a stable hash, the same in every process and language."""
    if shards <= 1:
        return 0
    return zlib.crc32(token.to_bytes(8, "big")) % shards


def all_tick_streams(shards: int) -> list[str]:
    return [ticks_stream(n) for n in range(shards)]


def replica_group(service: str, replica: str) -> str:
    """A consumer group of one replica, for streams every replica must see in full: `control`
    (a broadcast), and the strategy's candles and execution events (each replica keeps what
    belongs to its shards)."""
    return f"{service}.{replica}"
