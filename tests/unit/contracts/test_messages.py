"""The versioned envelope: round trips, and clear errors for what a consumer cannot read."""

from __future__ import annotations

import orjson
import pytest

from shared.contracts.messages import (
    MalformedMessage,
    PlaceOrder,
    Tick,
    Ticks,
    UnknownMessage,
    decode,
    encode,
    encode_ticks,
)
from shared.contracts.streams import tick_shard


def test_round_trip_keeps_every_field() -> None:
    intent = PlaceOrder(intent_id="m:NSE:INFY:202611241000:1:buy", strategy="m", exchange="NSE",
                        symbol="INFY", ladder_id="NSE:INFY:202611241000", leg=1, ts_ms=5, qty=3,
                        ref_price=155_000)
    envelope = decode(encode(intent, msg_id=intent.intent_id, ts_ms=7, source="strategy"))
    assert envelope.payload == intent
    assert (envelope.type, envelope.v, envelope.id, envelope.ts, envelope.source) == (
        "PlaceOrder", 1, intent.intent_id, 7, "strategy")


def test_fast_tick_encoding_reads_back_through_the_model() -> None:
    rows = [
        {"token": 1, "symbol": "A", "exchange": "NSE", "ts_ms": 10, "price": 500, "volume": None},
        {"token": 2, "symbol": "B", "exchange": "NSE", "ts_ms": 11, "price": 700, "volume": 9},
    ]
    envelope = decode(encode_ticks(rows, msg_id="f1", ts_ms=11, source="md", bar_open=True))
    assert envelope.payload == Ticks(ticks=[Tick(**r) for r in rows], bar_open=True)


def test_unknown_version_is_refused_not_guessed() -> None:
    raw = orjson.loads(encode(Ticks(ticks=[]), msg_id="x", ts_ms=1, source="md"))
    raw["v"] = 99
    with pytest.raises(UnknownMessage, match="v99"):
        decode(orjson.dumps(raw))


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"type":"Ticks"}',
                                 b'{"type":"Ticks","v":1,"id":"x","ts":1,"source":"s",'
                                 b'"payload":{"ticks":[{"token":"a"}]}}'])
def test_malformed_entries_raise_a_clear_error(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode(raw)


@pytest.mark.parametrize(("kind", "version"), [(["Ticks"], 1), ({"a": 1}, 1), ("Ticks", [1]),
                                               ("Ticks", {"v": 1}), ("Ticks", True)])
def test_an_envelope_with_a_non_scalar_type_or_version_is_malformed(kind: object,
                                                                    version: object) -> None:
    raw = orjson.loads(encode(Ticks(ticks=[]), msg_id="x", ts_ms=1, source="md"))
    raw["type"], raw["v"] = kind, version
    with pytest.raises(MalformedMessage, match="envelope (type|version)"):
        decode(orjson.dumps(raw))


def test_extra_fields_are_refused() -> None:
    raw = orjson.loads(encode(Ticks(ticks=[]), msg_id="x", ts_ms=1, source="md"))
    raw["payload"]["surprise"] = 1
    with pytest.raises(MalformedMessage):
        decode(orjson.dumps(raw))


def test_tick_shards_are_stable_and_spread() -> None:
    shards = [tick_shard(token, 4) for token in range(1000, 1400)]
    assert shards == [tick_shard(token, 4) for token in range(1000, 1400)]
    assert set(shards) == {0, 1, 2, 3}
    assert tick_shard(123, 1) == 0
