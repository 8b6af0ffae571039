"""A client that does not read is dropped with a reason; the others keep receiving everything,
at the hub's pace, and a newcomer is served as usual."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
import redis
from conftest import QUEUE_LIMIT, LiveApi
from websockets.exceptions import ConnectionClosed
from ws_helpers import open_ws, publish_ticks, recv, subscribe

FRAMES = 1000
SYMBOLS = {f"SYM{i:03d}": 100_00 + i for i in range(100)}  # a frame of 100 ticks, ~8 KB of JSON


def stalled_socket(port: int) -> socket.socket:
    """A TCP connection with tiny buffers, so that a client that stops reading backs up fast."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def test_a_slow_client_is_dropped_while_the_others_keep_receiving(
    live_api: LiveApi, viewer_key: str, redis_client: redis.Redis
) -> None:
    headers = {"X-API-Key": viewer_key}
    stack = contextlib.ExitStack()
    # max_queue=1: the client library stops reading the socket once one message waits unread.
    slow = stack.enter_context(open_ws(live_api.ws, additional_headers=headers, max_queue=1,
                                       sock=stalled_socket(live_api.port)))
    fast = [stack.enter_context(open_ws(live_api.ws, additional_headers=headers))
            for _ in range(3)]
    for ws in [slow, *fast]:
        subscribe(ws, channels=["ticks"])

    counts = [0] * len(fast)  # ticks received

    def drain(i: int) -> None:
        while counts[i] < FRAMES * len(SYMBOLS):
            message = recv(fast[i], timeout=20)
            if message["channel"] == "ticks":
                counts[i] += len(message["data"]["ticks"])

    readers = [threading.Thread(target=drain, args=(i,)) for i in range(len(fast))]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    for n in range(FRAMES):
        publish_ticks(redis_client, SYMBOLS, ts_ms=1_735_790_400_000 + n)
    for reader in readers:
        reader.join(timeout=60)
    elapsed = time.monotonic() - started

    assert counts == [FRAMES * len(SYMBOLS)] * len(fast), "every reading client got every tick"
    assert elapsed < 30, f"the others were held up: {elapsed:.1f}s for {FRAMES} frames"
    assert live_api.hub.dropped == 1
    assert len(live_api.hub.subscribers) == len(fast)

    # The slow client, reading at last, finds the close frame with its reason after the backlog.
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            slow.recv(timeout=20)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert f"more than {QUEUE_LIMIT} messages" in closed.value.rcvd.reason

    with open_ws(live_api.ws, additional_headers=headers) as newcomer:
        subscribe(newcomer, channels=["ticks"], symbols=["SYM001"])
        publish_ticks(redis_client, SYMBOLS)
        assert recv(newcomer)["data"]["ticks"][0]["symbol"] == "SYM001"
    stack.close()
