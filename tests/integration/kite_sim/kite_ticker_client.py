"""A real ``KiteTicker`` in its own process (Twisted's reactor cannot restart in-process).

Usage: ``python kite_ticker_client.py PORT API_KEY ACCESS_TOKEN``. Reads JSON commands from stdin,
one a line (``{"subscribe": [..]}``, ``{"mode": ["full", [..]]}``, ``{"unsubscribe": [..]}``,
``{"status": true}``, ``{"stop": true}``) and prints every callback as a JSON line on stdout, with
the SDK's parsed values (datetimes as ISO strings) and the wall time it arrived.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
from typing import Any

from kiteconnect import KiteTicker
from twisted.internet import reactor

_lock = threading.Lock()
_ticks = 0


def emit(event: str, **data: Any) -> None:
    line = json.dumps({"event": event, "t": time.time(), **data},
                      default=lambda v: v.isoformat() if isinstance(v, dt.datetime) else str(v))
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main() -> None:
    port, api_key, access_token = sys.argv[1], sys.argv[2], sys.argv[3]
    quiet = "--count-only" in sys.argv
    kws = KiteTicker(api_key, access_token, root=f"ws://127.0.0.1:{port}/ws",
                     reconnect_max_delay=5)

    def on_ticks(ws: Any, ticks: list[dict[str, Any]]) -> None:
        global _ticks
        _ticks += len(ticks)
        if not quiet:
            emit("ticks", ticks=ticks)

    kws.on_ticks = on_ticks
    kws.on_connect = lambda ws, response: emit("connect")
    kws.on_close = lambda ws, code, reason: emit("close", code=code, reason=str(reason))
    kws.on_error = lambda ws, code, reason: emit("error", code=code, reason=str(reason))
    kws.on_reconnect = lambda ws, attempts: emit("reconnect", attempts=attempts)
    kws.on_order_update = lambda ws, data: emit("order", data=data)
    kws.on_message = (lambda ws, payload, binary: emit("heartbeat")
                      if binary and len(payload) <= 4 else None)
    kws.connect(threaded=True)

    for line in sys.stdin:
        cmd = json.loads(line)
        if "stop" in cmd:
            break
        if "status" in cmd:
            emit("status", connected=kws.is_connected(), tick_count=_ticks)
        for action in ("subscribe", "unsubscribe"):
            if action in cmd:
                reactor.callFromThread(getattr(kws, action), cmd[action])
        if "mode" in cmd:
            reactor.callFromThread(kws.set_mode, cmd["mode"][0], cmd["mode"][1])
        emit("ack", cmd=cmd)
    reactor.callFromThread(kws.close)
    time.sleep(0.2)
    emit("bye", tick_count=_ticks)


if __name__ == "__main__":
    main()
