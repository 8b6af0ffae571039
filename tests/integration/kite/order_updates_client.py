"""Execution's OrderUpdateTicker in its own process (Twisted's reactor cannot restart in a
process): ``python order_updates_client.py WS_ROOT API_KEY ACCESS_TOKEN`` prints each update as a
JSON line; a line ``token`` followed by a new token replaces the connection."""

from __future__ import annotations

import json
import sys
import time

from services.execution.kite_orders import OrderUpdateTicker


def main() -> None:
    ws_root, api_key, token = sys.argv[1:4]

    def sink(data: dict) -> None:
        print(json.dumps({"event": "order", "data": data}, default=str), flush=True)

    ticker = OrderUpdateTicker(api_key, ws_root, sink)
    ticker.connect(token)
    ticker.connected.wait(20)
    print(json.dumps({"event": "connected"}), flush=True)
    for line in sys.stdin:
        if line.strip() == "token":  # a new login: the connection is replaced
            new = sys.stdin.readline().strip()
            ticker.connect(new)
            time.sleep(0.5)
            ticker.connected.wait(20)
            print(json.dumps({"event": "reconnected"}), flush=True)
    ticker.close()


if __name__ == "__main__":
    main()
