"""The WebSocket hub: tails the streams once per api replica and fans out to its clients.

**Plain XREAD, not a consumer group.** A browser feed is a broadcast: every replica must see every
entry (its own clients may want any of them), so a shared group, which splits entries between
consumers, is wrong; a group per replica would work but buys nothing: nothing is acked to anyone
(a browser is not a durable consumer), pending lists would only grow, and every replica that ever
ran would leave a group behind on every stream. So each replica reads with XREAD from the streams'
last entries at its start and follows the ids it has seen. What a client missed while it was away
is not redelivered from memory: it reloads the REST snapshots and, for ``exec.events``, may send
back the last ``id`` it saw to have the events after it replayed from the stream (bounded).

**Never slowed by a client.** Each client has a bounded queue; the hub only appends to queues
(no await per client), so one tailer feeds every client at the speed of Redis. A client whose
queue is full is dropped: its queue is discarded, and its connection is closed with code 1008 and
the reason. Each client's writer is its own task and waits only on its own socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.contracts import streams
from shared.contracts.messages import FIELD

from .context import Caller
from .fastpath import FastReads
from .live import (
    CHANNELS,
    SYMBOL_BLIND,
    Message,
    candle_message,
    control_message,
    exec_message,
    filter_ticks,
    parse_entry_id,
    ticks_of,
)
from .watch import EARLY_S, Watcher

log = logging.getLogger("ratchet.api.hub")

SLOW_CLOSE_CODE = 1008  # policy violation: the client did not keep up
REPLAY_LIMIT = 1000
MAX_TICKS_PER_MESSAGE = 500
STOP_TIMEOUT_S = 5.0

Fields = dict[bytes | str, bytes | str] | None  # a stream entry's fields, as redis-py types them


@dataclass(frozen=True)
class HubOptions:
    """``queue_limit`` must hold one read's worth of messages: a read of ``read_count`` entries
    becomes at most that many messages per client (tick frames read together share messages)."""

    queue_limit: int = 1000  # messages waiting for one client before it is dropped
    max_clients: int = 500  # per api replica
    read_count: int = 200  # stream entries per XREAD
    block_ms: int = 1000
    watch_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.queue_limit <= self.read_count:
            raise ValueError("queue_limit must exceed read_count (one read fits in a queue)")


@dataclass(frozen=True, slots=True)
class Outgoing:
    text: str
    event_id: tuple[int, int] | None = None


@dataclass(eq=False)
class Subscriber:
    """One WebSocket client: what it asked for and the messages waiting for its writer."""

    caller: Caller
    limit: int
    channels: frozenset[str] = frozenset()
    symbols: frozenset[str] | None = None
    queue: deque[Outgoing] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: str | None = None
    close_code: int = SLOW_CLOSE_CODE
    last_event: tuple[int, int] = (0, 0)  # exec events up to this id were sent (no repeats)
    held: list[Outgoing] | None = None  # live exec events held back while a replay is read

    def offer(self, item: Outgoing) -> None:
        if self.dropped is not None:
            return
        waiting = len(self.queue) + (len(self.held) if self.held is not None else 0)
        if waiting >= self.limit:
            self.drop(f"too slow: more than {self.limit} messages were waiting")
            return
        if self.held is not None and item.event_id is not None:
            self.held.append(item)
            return
        self.queue.append(item)
        self.ready.set()

    def drop(self, reason: str, code: int = SLOW_CLOSE_CODE) -> None:
        if self.dropped is None:
            self.dropped, self.close_code = reason, code
        self.queue.clear()
        self.held = None
        self.ready.set()

    def wants(self, message: Message) -> bool:
        if message.channel not in self.channels:
            return False
        return (
            self.symbols is None
            or message.symbol is None
            or message.channel in SYMBOL_BLIND
            or message.symbol in self.symbols
        )


def encode(message: Message) -> Outgoing:
    doc: dict[str, Any] = {"channel": message.channel, "data": message.data}
    event_id = None
    if message.event_id is not None:
        doc["id"] = message.event_id
        event_id = parse_entry_id(message.event_id)
    return Outgoing(orjson.dumps(doc).decode(), event_id)


def system(kind: str, **data: Any) -> Outgoing:
    return Outgoing(orjson.dumps({"channel": "system", "data": {"type": kind, **data}}).decode())


class Hub:
    def __init__(
        self, fast: FastReads, client: redis.Redis, tick_shards: int, options: HubOptions
    ) -> None:
        self.fast = fast
        self._sync_client = client
        self.options = options
        self.tick_streams = streams.all_tick_streams(tick_shards)
        self.streams = [*self.tick_streams, streams.CANDLES, streams.EXEC_EVENTS, streams.CONTROL]
        self.subscribers: set[Subscriber] = set()
        self._by_channel: dict[str, set[Subscriber]] = {c: set() for c in CHANNELS}
        self._redis: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.watcher = Watcher(fast, self.publish, self._watch_wanted, options.watch_interval_s)
        self.dropped = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        from .fastpath import async_redis_like

        # A client of its own: a blocking XREAD holds its connection for up to block_ms.
        self._redis = async_redis_like(self._sync_client)
        self._tasks = [
            asyncio.create_task(self._tail(), name="ws-hub-tail"),
            asyncio.create_task(self.watcher.run(), name="ws-hub-watch"),
        ]

    async def stop(self) -> None:
        for sub in list(self.subscribers):
            sub.drop("the server is shutting down", code=1001)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded: a task that ignores its cancellation must not hold the server's shutdown.
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            for task in stuck:
                log.error("websocket hub task did not stop", extra={"task": task.get_name()})
        self._tasks = []
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # --- clients --------------------------------------------------------------------------------

    def full(self) -> bool:
        return len(self.subscribers) >= self.options.max_clients

    def add(self, caller: Caller) -> Subscriber:
        sub = Subscriber(caller=caller, limit=self.options.queue_limit)
        self.subscribers.add(sub)
        return sub

    def remove(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        for members in self._by_channel.values():
            members.discard(sub)

    def subscribe(
        self, sub: Subscriber, channels: Iterable[str], symbols: frozenset[str] | None
    ) -> None:
        """Replace the subscription; a client new to ``legs``/``pnl`` gets their current state."""
        before = sub.channels
        sub.channels, sub.symbols = frozenset(channels), symbols
        for name, members in self._by_channel.items():
            if name in sub.channels:
                members.add(sub)
            else:
                members.discard(sub)
        if {"legs", "pnl"} & (sub.channels - before):
            for message in self.watcher.snapshot():
                if sub.wants(message):
                    sub.offer(encode(message))
            self.watcher.wake()

    def subscribe_from(
        self, sub: Subscriber, channels: Iterable[str], symbols: frozenset[str] | None,
        after: tuple[int, int],
    ) -> None:
        """:meth:`subscribe`, holding back live exec events until :meth:`replay` has queued
        the ones after ``after``: nothing is lost in between, nothing comes twice or out of
        order."""
        sub.held = []
        self.subscribe(sub, channels, symbols)

    async def replay(self, sub: Subscriber, after: str) -> None:
        """Queue the ``exec.events`` entries after ``after`` that ``sub`` wants, then the live
        ones held meanwhile. Too far behind, or an id the stream no longer holds: a ``resync``
        message says to reload the REST snapshots instead."""
        start = parse_entry_id(after)
        try:
            entries = await self.fast.redis.xrange(
                streams.EXEC_EVENTS, min=f"({after}", count=REPLAY_LIMIT + 1
            )
            oldest = await self.fast.redis.xrange(streams.EXEC_EVENTS, count=1)
        except (RedisError, OSError):
            entries, oldest = [], []
            sub.offer(system("resync", reason="the event stream is unavailable; reload"))
        assert entries is not None and oldest is not None  # XRANGE answers a list, maybe empty
        trimmed = bool(oldest) and parse_entry_id(_id(oldest[0][0])) > start
        items: list[Outgoing] = []
        if len(entries) > REPLAY_LIMIT or trimmed:
            items.append(system("resync", reason="too far behind to replay; reload"))
        else:
            for raw_id, fields in entries:
                message = _exec(_id(raw_id), fields)
                if message is not None and sub.wants(message):
                    items.append(encode(message))
            items.append(system("replayed", count=len(items), after=after))
        held, sub.held = sub.held or [], None
        if sub.dropped is not None:
            return
        last = max((i.event_id for i in items if i.event_id is not None), default=(0, 0))
        for item in items + [h for h in held if h.event_id is None or h.event_id > last]:
            sub.offer(item)
        sub.ready.set()

    def _watch_wanted(self) -> bool:
        return bool(self._by_channel["legs"] or self._by_channel["pnl"])

    # --- fan-out --------------------------------------------------------------------------------

    def publish(self, messages: Iterable[Message]) -> None:
        """Offer each message to the subscribers that want it; encoded once per message."""
        for message in messages:
            members = self._by_channel.get(message.channel)
            if not members:
                continue
            item: Outgoing | None = None
            for sub in list(members):
                if sub.wants(message):
                    if item is None:
                        item = encode(message)
                    sub.offer(item)
            self._reap(members)

    def publish_ticks(self, ticks: list[dict[str, Any]]) -> None:
        """One feed frame to the ``ticks`` subscribers: one message per client holding the ticks
        it asked for; encoded once per distinct symbol filter."""
        members = self._by_channel["ticks"]
        if not members or not ticks:
            return
        cache: dict[frozenset[str] | None, Outgoing | None] = {}
        for sub in list(members):
            key = sub.symbols
            if key not in cache:
                chosen = filter_ticks(ticks, key)
                cache[key] = (
                    encode(Message("ticks", None, {"type": "Ticks", "ticks": chosen}))
                    if chosen else None
                )
            item = cache[key]
            if item is not None:
                sub.offer(item)
        self._reap(members)

    def _reap(self, members: set[Subscriber]) -> None:
        for sub in [s for s in members if s.dropped is not None]:
            self.dropped += 1
            log.info("websocket client dropped", extra={"caller": sub.caller.actor,
                                                         "reason": sub.dropped})
            self.remove(sub)

    # --- tailing ----------------------------------------------------------------------------------

    async def _start_ids(self, client: aioredis.Redis) -> dict[str, str]:
        """Each stream's newest entry id now (``0-0`` when empty): follow from there."""
        ids = {}
        for stream in self.streams:
            last = await client.xrevrange(stream, count=1)
            ids[stream] = _id(last[0][0]) if last else "0-0"
        return ids

    async def _tail(self) -> None:
        assert self._redis is not None
        client = self._redis
        ids: dict[str, str] | None = None
        while True:
            try:
                if ids is None:
                    ids = await self._start_ids(client)
                response = await client.xread(
                    # redis-py's dict[KeyT, StreamIdT] is invariant: no dict[str, str] fits
                    ids,  # type: ignore[arg-type]
                    count=self.options.read_count, block=self.options.block_ms,
                )
            except (RedisError, OSError) as exc:
                # Redis may come back empty or trimmed: follow from its ends again, and tell the
                # clients to reload what they may have missed meanwhile.
                log.warning("websocket hub cannot read the streams: %s", exc)
                if ids is not None:
                    ids = None
                    for sub in list(self.subscribers):
                        sub.offer(system("resync", reason="the event streams were away; reload"))
                await asyncio.sleep(1.0)
                continue
            assert isinstance(response, list)  # RESP2: [[stream, entries], ...], empty when none
            for raw_stream, entries in response:
                stream = _s(raw_stream)
                if entries:
                    ids[stream] = _s(entries[-1][0])
                try:
                    self._dispatch(stream, entries)
                except Exception:  # noqa: BLE001 - one bad entry must not stop the feed
                    log.exception("websocket hub could not dispatch entries of %s", stream)

    def _dispatch(self, stream: str, entries: list[Any]) -> None:
        if stream in self.tick_streams:
            if not self._by_channel["ticks"]:
                return
            # Frames read together travel together: under a burst a client gets fewer, larger
            # messages instead of falling behind by one message per frame.
            ticks: list[dict[str, Any]] = []
            for _, fields in entries:
                try:
                    ticks.extend(ticks_of(_doc(fields)))
                except (KeyError, TypeError, ValueError):
                    continue  # a malformed frame: the feed goes on
            for start in range(0, len(ticks), MAX_TICKS_PER_MESSAGE):
                self.publish_ticks(ticks[start:start + MAX_TICKS_PER_MESSAGE])
            return
        messages: list[Message] = []
        for raw_id, fields in entries:
            if stream == streams.EXEC_EVENTS:
                message = _exec(_s(raw_id), fields)
            elif stream == streams.CANDLES:
                message = _safe(candle_message, fields) if self._by_channel["candles"] else None
            else:
                message = _safe(control_message, fields)
            if message is not None:
                messages.append(message)
        if stream == streams.EXEC_EVENTS and entries:
            self.watcher.wake(EARLY_S)
        self.publish(messages)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id(value: bytes | str | None) -> str:
    """An entry's id; redis-py allows None, which only XAUTOCLAIM answers (a deleted entry)."""
    assert value is not None
    return _s(value)


def _doc(fields: Fields) -> dict[str, Any]:
    raw = fields.get(FIELD) if fields else None
    if raw is None:
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _safe(convert: Any, fields: Fields) -> Message | None:
    doc = _doc(fields)
    try:
        return convert(doc) if doc else None  # type: ignore[no-any-return]
    except (KeyError, TypeError, ValueError):
        return None


def _exec(entry_id: str, fields: Fields) -> Message | None:
    doc = _doc(fields)
    try:
        return exec_message(doc, entry_id) if doc else None
    except (KeyError, TypeError, ValueError):
        return None
