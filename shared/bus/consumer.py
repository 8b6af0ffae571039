"""The consumer-group loop every service reads its streams with.

Promises (RELIABILITY.md §2): an entry is acked only after its handler returned, i.e. after the
effect is durable; entries left pending by a dead consumer are claimed (XAUTOCLAIM) and handled
again, so handlers must be idempotent; an entry that fails ``dead_letter_after`` times, or that
cannot be decoded at all, is parked in ``dead.letters`` with its error and acked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis

from shared.contracts import streams
from shared.contracts.messages import (
    FIELD,
    DeadLetter,
    Envelope,
    MalformedMessage,
    UnknownMessage,
    decode,
    encode,
)

log = logging.getLogger("ratchet.bus")

Handler = Callable[[str, str, Envelope], None]
"""handler(stream, entry_id, envelope): apply the effect durably, or raise."""

BatchHandler = Callable[[str, list[tuple[str, Envelope]]], None]
"""batch_handler(stream, [(entry_id, envelope), ...]): apply every entry's effect durably, or
raise, in which case each entry is handled again on its own by the single-entry handler."""

BatchHook = Callable[[], object]  # what it returns is ignored


def ensure_group(client: redis.Redis, stream: str, group: str, start: str = "0") -> None:
    """Create a consumer group (and its stream) unless it exists."""
    try:
        client.xgroup_create(stream, group, id=start, mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@dataclass
class ConsumerStats:
    handled: int = 0
    failed: int = 0
    parked: int = 0
    claimed: int = 0


@dataclass
class StreamConsumer:
    """Reads ``streams`` through ``group`` as ``consumer`` and applies ``handler`` to each entry."""

    client: redis.Redis
    streams: Sequence[str]
    group: str
    consumer: str
    handler: Handler
    dead_letter_after: int = 5
    claim_idle_ms: int = 30_000
    batch: int = 500
    block_ms: int = 500
    start: str | dict[str, str] = "0"  # where a new group starts, for all or per stream
    before_ack: BatchHook | None = None  # make a batch's effects durable; raising stops the loop
    after_batch: BatchHook | None = None
    batch_handler: BatchHandler | None = None  # many entries at once, for throughput
    stats: ConsumerStats = field(default_factory=ConsumerStats)
    _failures: dict[str, int] = field(default_factory=dict)
    _retry_own: bool = True
    _last_claim: float = 0.0
    _claim_cursor: dict[str, str] = field(default_factory=dict)  # XAUTOCLAIM's next start

    def setup(self) -> None:
        for stream in self.streams:
            start = self.start if isinstance(self.start, str) else self.start.get(stream, "0")
            ensure_group(self.client, stream, self.group, start)

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; finishes the batch in hand before returning."""
        self.setup()
        while not stop.is_set():
            self.poll_once()

    def poll_once(self) -> int:
        """Handle one batch: own pending retries first, stale claims, then new entries."""
        handled = 0
        if self._retry_own:
            handled += self._handle_entries(self._read("0"))
        now = time.monotonic()
        if now - self._last_claim > max(self.claim_idle_ms / 2000, 1.0):
            self._last_claim = now
            handled += self._claim_stale()
        handled += self._handle_entries(self._read(">", block=self.block_ms))
        if handled and self.after_batch is not None:
            self.after_batch()
        return handled

    def _read(self, start_id: str, block: int | None = None) -> list[tuple[str, list]]:
        if not self.streams:  # none assigned yet: a strategy replica waiting for its shards
            time.sleep((block or 0) / 1000)
            return []
        resp = self.client.xreadgroup(
            self.group,
            self.consumer,
            {s: start_id for s in self.streams},
            count=self.batch,
            block=block,
        )
        assert isinstance(resp, list)  # RESP2: [[stream, entries], ...], empty when none
        if start_id == "0":
            # Own pending list drained: nothing left to retry until a handler fails again.
            if not resp or all(not entries for _, entries in resp):
                self._retry_own = False
        return [(_s(stream), entries) for stream, entries in resp]

    def _claim_stale(self) -> int:
        """Claim a batch of idle entries per stream, resuming where the last claim stopped so
        entries further down the pending list are reached too."""
        total = 0
        for stream in self.streams:
            resp = self.client.xautoclaim(
                stream, self.group, self.consumer, self.claim_idle_ms,
                self._claim_cursor.get(stream, "0-0"), count=self.batch,
            )
            self._claim_cursor[stream] = _s(resp[0]) if resp else "0-0"
            claimed = resp[1] if resp else []
            entries = [e for e in claimed if e is not None and e[1] is not None]
            if len(entries) < len(claimed):
                # Redis 6.2 claims entries trimmed from the stream into our pending list and
                # returns them without id or body: the own-pending read parks and acks them.
                self._retry_own = True
                log.warning(
                    "claimed trimmed entries",
                    extra={"stream": stream, "group": self.group,
                           "count": len(claimed) - len(entries)},
                )
            if entries:
                self.stats.claimed += len(entries)
                log.info(
                    "claimed stale entries",
                    extra={"stream": stream, "group": self.group, "count": len(entries)},
                )
                total += self._handle_entries([(stream, entries)])
        return total

    def _handle_entries(self, batches: list[tuple[str, list]]) -> int:
        count = 0
        for stream, entries in batches:
            acks: list[str] = []
            decoded: list[tuple[str, Envelope, str]] = []
            for raw_id, fields in entries:
                entry_id = _s(raw_id)
                count += 1
                item = self._decode(stream, entry_id, fields)
                if item is None:
                    acks.append(entry_id)  # parked
                else:
                    decoded.append((entry_id, *item))
            if decoded and self._handle_together(stream, decoded):
                acks.extend(entry_id for entry_id, _, _ in decoded)
            else:
                acks.extend(entry_id for entry_id, envelope, data in decoded
                            if self._handle_one(stream, entry_id, envelope, data))
            if acks:
                if self.before_ack is not None:
                    self.before_ack()
                self.client.xack(stream, self.group, *acks)
        return count

    def _decode(self, stream: str, entry_id: str, fields: dict) -> tuple[Envelope, str] | None:
        """The entry's envelope and raw text, or None when it cannot be read (it is parked)."""
        data = fields.get(FIELD) if fields else None
        if data is None:
            self._park(stream, entry_id, repr(fields), "entry has no 'd' field", 1)
            return None
        try:
            return decode(data), _s(data)
        except (UnknownMessage, MalformedMessage) as exc:
            self._park(stream, entry_id, _s(data), str(exc), 1)
            return None
        except Exception as exc:  # a decoder bug: retrying cannot help, and must not block
            self._park(stream, entry_id, _s(data), f"undecodable: {exc!r}", 1)
            return None

    def _handle_together(self, stream: str, decoded: list[tuple[str, Envelope, str]]) -> bool:
        """Apply a read's entries through the batch handler; False (nothing counted) when there
        is none, one entry only, or it failed — then each entry goes through the handler alone."""
        if self.batch_handler is None or len(decoded) < 2:
            return False
        try:
            self.batch_handler(stream, [(entry_id, envelope) for entry_id, envelope, _ in decoded])
        except Exception as exc:
            log.warning("batch failed; handling its entries one by one",
                        extra={"stream": stream, "group": self.group, "count": len(decoded),
                               "error": repr(exc)})
            return False
        for entry_id, _, _ in decoded:
            self._failures.pop(entry_id, None)
        self.stats.handled += len(decoded)
        return True

    def _handle_one(self, stream: str, entry_id: str, envelope: Envelope, data: str) -> bool:
        """Return True when the entry may be acked (handled, or parked)."""
        try:
            self.handler(stream, entry_id, envelope)
        except Exception as exc:  # a handler bug or a transient outage: retry, then park
            failures = self._failures.get(entry_id, 0) + 1
            self._failures[entry_id] = failures
            self.stats.failed += 1
            self._retry_own = True
            log.warning(
                "handler failed",
                extra={
                    "stream": stream,
                    "entry_id": entry_id,
                    "type": envelope.type,
                    "msg_id": envelope.id,
                    "failures": failures,
                    "error": repr(exc),
                },
                exc_info=failures == 1,
            )
            if failures >= self.dead_letter_after:
                self._park(stream, entry_id, data, repr(exc), failures)
                self._failures.pop(entry_id, None)
                return True
            time.sleep(min(0.05 * failures, 0.5))
            return False
        self._failures.pop(entry_id, None)
        self.stats.handled += 1
        return True

    def _park(self, stream: str, entry_id: str, data: str, error: str, failures: int) -> None:
        self.stats.parked += 1
        log.error(
            "message parked in dead letters",
            extra={"stream": stream, "entry_id": entry_id, "error": error, "group": self.group},
        )
        letter = DeadLetter(
            stream=stream,
            group=self.group,
            entry_id=entry_id,
            data=data[:10_000],
            error=error[:2_000],
            failures=failures,
        )
        self.client.xadd(
            streams.DEAD_LETTERS,
            {
                FIELD: encode(
                    letter,
                    msg_id=f"{stream}:{self.group}:{entry_id}",
                    ts_ms=int(time.time() * 1000),
                    source=self.consumer,
                )
            },
        )


def _s(value: bytes | str) -> str:
    """Text of a Redis reply; non-UTF-8 bytes (poison) are replaced so the entry can be parked."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
