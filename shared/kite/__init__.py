"""A Kite Connect v3 compatible simulator (REST + binary ticker) for sim mode and tests.

The official ``kiteconnect`` SDK runs against it unchanged: ``KiteConnect(root="http://127.0.0.1:N")``
and ``KiteTicker(root="ws://127.0.0.1:N/ws")``. Start it with ``python -m shared.kite --help``.
Nothing is built at import.
"""
