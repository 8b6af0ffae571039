"""The consumer-group loop on a real Redis: ack after the effect, claim a dead consumer's
entries, retry a failing handler, park poison and unknown messages in dead.letters."""

from __future__ import annotations

import pytest
import redis

from shared.bus import consumer as consumer_module
from shared.bus.consumer import StreamConsumer
from shared.bus.publisher import Publisher
from shared.contracts import streams
from shared.contracts.messages import FIELD, BarEnd, Envelope, decode

STREAM = "test.stream"


def consumer(client: redis.Redis, name: str, handler, **kw) -> StreamConsumer:  # noqa: ANN001
    c = StreamConsumer(client, [STREAM], "g", name, handler, block_ms=10, **kw)
    c.setup()
    return c


def publish(client: redis.Redis, n: int) -> None:
    pub = Publisher(client, "test")
    for i in range(n):
        pub.publish(STREAM, BarEnd(ts_ms=i), msg_id=f"m{i}")


def test_entries_are_acked_only_after_the_handler_returns(redis_client: redis.Redis) -> None:
    seen: list[int] = []

    def handler(_s: str, _e: str, env: Envelope) -> None:
        seen.append(env.payload.ts_ms)  # type: ignore[attr-defined]
        assert redis_client.xpending(STREAM, "g")["pending"] >= 1  # not yet acked

    c = consumer(redis_client, "a", handler)
    publish(redis_client, 3)
    c.poll_once()
    assert seen == [0, 1, 2]
    assert redis_client.xpending(STREAM, "g")["pending"] == 0


def test_a_dead_consumers_entries_are_claimed_and_handled(redis_client: redis.Redis) -> None:
    dead = consumer(redis_client, "dead", lambda *_: None)
    publish(redis_client, 2)
    redis_client.xreadgroup("g", "dead", {STREAM: ">"}, count=10)  # read, then "died" before ack
    assert redis_client.xpending(STREAM, "g")["pending"] == 2
    handled: list[str] = []
    alive = consumer(redis_client, "alive", lambda _s, _e, env: handled.append(env.id),
                     claim_idle_ms=0)
    alive.poll_once()
    assert sorted(handled) == ["m0", "m1"]
    assert alive.stats.claimed == 2
    assert redis_client.xpending(STREAM, "g")["pending"] == 0
    del dead


def test_a_dead_consumers_trimmed_entries_leave_the_pending_list_and_do_not_hide_live_ones(
    redis_client: redis.Redis,
) -> None:
    publish(redis_client, 6)
    consumer(redis_client, "dead", lambda *_: None)
    redis_client.xreadgroup("g", "dead", {STREAM: ">"}, count=10)  # read, then "died"
    ids = [entry_id for entry_id, _ in redis_client.xrange(STREAM)]
    redis_client.xtrim(STREAM, minid=ids[3], approximate=False)  # the first 3 are gone
    handled: list[str] = []
    alive = consumer(redis_client, "alive", lambda _s, _e, env: handled.append(env.id),
                     claim_idle_ms=0, batch=2)
    for _ in range(6):
        alive._last_claim = 0.0  # claim on every poll
        alive.poll_once()
    assert sorted(handled) == ["m3", "m4", "m5"]
    assert redis_client.xpending(STREAM, "g")["pending"] == 0
    assert alive.stats.parked == 3  # the trimmed ones, with their reason


def test_a_failing_handler_is_retried_then_parked(redis_client: redis.Redis) -> None:
    attempts: list[str] = []

    def flaky(_s: str, _e: str, env: Envelope) -> None:
        attempts.append(env.id)
        if env.id == "m1":
            raise RuntimeError("boom")

    c = consumer(redis_client, "a", flaky, dead_letter_after=3)
    publish(redis_client, 2)
    for _ in range(5):
        c.poll_once()
    assert attempts.count("m1") == 3 and attempts.count("m0") == 1
    letters = redis_client.xrange(streams.DEAD_LETTERS)
    assert len(letters) == 1
    letter = decode(letters[0][1][FIELD]).payload
    assert letter.failures == 3 and "boom" in letter.error  # type: ignore[attr-defined]
    assert redis_client.xpending(STREAM, "g")["pending"] == 0


def test_malformed_and_unknown_messages_are_parked_and_the_loop_goes_on(
    redis_client: redis.Redis,
) -> None:
    handled: list[str] = []
    c = consumer(redis_client, "a", lambda _s, _e, env: handled.append(env.id))
    redis_client.xadd(STREAM, {FIELD: b"\x00garbage"})
    redis_client.xadd(STREAM, {FIELD: b'{"type":"Candle","v":7,"id":"x","ts":1,"source":"s",'
                                      b'"payload":{}}'})
    redis_client.xadd(STREAM, {b"other": b"1"})
    publish(redis_client, 1)
    c.poll_once()
    assert handled == ["m0"]
    assert redis_client.xlen(streams.DEAD_LETTERS) == 3
    assert c.stats.parked == 3


def test_an_envelope_that_breaks_the_decoder_is_parked_not_left_pending(
    redis_client: redis.Redis,
) -> None:
    handled: list[str] = []
    c = consumer(redis_client, "a", lambda _s, _e, env: handled.append(env.id))
    redis_client.xadd(STREAM, {FIELD: b'{"type":["Candle"],"v":1,"id":"x","ts":1,"source":"s",'
                                      b'"payload":{}}'})
    redis_client.xadd(STREAM, {FIELD: b'{"type":"Candle","v":{"n":1},"id":"x","ts":1,'
                                      b'"source":"s","payload":{}}'})
    redis_client.xadd(STREAM, {FIELD: b"\xff\xfe not utf-8"})
    publish(redis_client, 1)
    c.poll_once()
    assert handled == ["m0"]
    assert c.stats.parked == 3
    assert redis_client.xlen(streams.DEAD_LETTERS) == 3
    assert redis_client.xpending(STREAM, "g")["pending"] == 0


def test_any_decoder_error_parks_the_entry(redis_client: redis.Redis,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(raw: bytes | str) -> Envelope:
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(consumer_module, "decode", broken)
    c = consumer(redis_client, "a", lambda *_: None)
    publish(redis_client, 2)
    assert c.poll_once() == 2
    assert c.stats.parked == 2
    assert redis_client.xpending(STREAM, "g")["pending"] == 0


def test_a_read_goes_to_the_batch_handler_whole_and_one_by_one_when_it_fails(
    redis_client: redis.Redis,
) -> None:
    batches: list[list[str]] = []
    singles: list[str] = []

    def together(_s: str, entries: list[tuple[str, Envelope]]) -> None:
        batches.append([env.id for _, env in entries])
        if any(env.id == "m3" for _, env in entries):
            raise RuntimeError("one bad entry")

    def alone(_s: str, _e: str, env: Envelope) -> None:
        if env.id == "m3":
            raise RuntimeError("still bad")
        singles.append(env.id)

    c = consumer(redis_client, "a", alone, batch_handler=together, dead_letter_after=1)
    publish(redis_client, 3)
    c.poll_once()
    assert batches == [["m0", "m1", "m2"]] and singles == []
    assert c.stats.handled == 3 and redis_client.xpending(STREAM, "g")["pending"] == 0
    Publisher(redis_client, "test").publish(STREAM, BarEnd(ts_ms=3), msg_id="m3")
    Publisher(redis_client, "test").publish(STREAM, BarEnd(ts_ms=4), msg_id="m4")
    c.poll_once()
    assert batches[-1] == ["m3", "m4"]
    assert singles == ["m4"]  # the good entry applied on its own; the bad one parked alone
    assert c.stats.parked == 1 and redis_client.xpending(STREAM, "g")["pending"] == 0
