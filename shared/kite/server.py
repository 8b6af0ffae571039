"""Run the simulator: ``serve(...)`` (blocking) and ``main(argv)`` for ``python -m shared.kite``.

REST and the ticker share one port at the host root: ``KiteConnect(root="http://127.0.0.1:N")``
and ``KiteTicker(root="ws://127.0.0.1:N/ws")``. SIGTERM or SIGINT stop it cleanly, saving the book.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import uvicorn

from .app import build_app
from .faults import FaultConfig, FaultState
from .sim import SimConfig, Simulator

DEFAULT_RATES = {"orders": 10, "historical": 3}
log = logging.getLogger("shared.kite")


@dataclass(frozen=True, slots=True)
class Options:
    """Everything beyond ``serve``'s required arguments (CLI flags map onto these)."""

    host: str = "127.0.0.1"
    symbols: int = 50
    tick_interval_s: float = 0.25
    paused: bool = False
    start_day: date | None = None
    replay_dir: Path | None = None
    order_rate: int = 10
    historical_rate: int = 3
    log_level: str = "warning"


def build(port: int, api_key: str, api_secret: str, state_dir: Path, seed: int, speed: float,
          faults: FaultConfig | None = None, options: Options | None = None
          ) -> tuple[Simulator, Any, uvicorn.Server]:
    """The simulator, its ASGI app and a uvicorn server for it (not started)."""
    opts = options or Options()
    cfg = SimConfig(api_key=api_key, api_secret=api_secret, state_dir=state_dir, seed=seed,
                    speed=speed, symbols=opts.symbols, tick_interval_s=opts.tick_interval_s,
                    start_day=opts.start_day, paused=opts.paused, replay_dir=opts.replay_dir)
    sim = Simulator(cfg, FaultState.from_config(faults or FaultConfig()))
    app = build_app(sim, {"orders": opts.order_rate, "historical": opts.historical_rate})
    config = uvicorn.Config(app, host=opts.host, port=port, ws="websockets-sansio",
                            log_level=opts.log_level, lifespan="off", access_log=False,
                            ws_ping_interval=None, timeout_graceful_shutdown=2)
    return sim, app, uvicorn.Server(config)


async def run_until_stopped(sim: Simulator, app: Any, server: uvicorn.Server,
                            faults: FaultConfig | None = None) -> None:
    """Serve until the server stops; run the market loop and periodic ticker faults alongside."""
    tasks = [asyncio.create_task(sim.run())]
    if faults and (faults.drop_socket_every_s or faults.stall_every_s):
        tasks.append(asyncio.create_task(_ticker_chaos(app, faults)))
    try:
        await server.serve()
    finally:
        sim.stopping = True
        for task in tasks:
            task.cancel()
        sim.save()
        sim.store.close()


async def _ticker_chaos(app: Any, faults: FaultConfig) -> None:
    hub = app.app.state.hub
    elapsed = 0.0
    while True:
        await asyncio.sleep(0.5)
        elapsed += 0.5
        if faults.drop_socket_every_s and elapsed % faults.drop_socket_every_s < 0.5:
            hub.drop_all()
        if faults.stall_every_s and elapsed % faults.stall_every_s < 0.5:
            hub.stall(faults.stall_for_s or 5.0)


def serve(port: int, api_key: str, api_secret: str, state_dir: Path, seed: int, speed: float,
          faults: FaultConfig | None = None, options: Options | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then save the book and return."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sim, app, server = build(port, api_key, api_secret, state_dir, seed, speed, faults, options)
    # uvicorn re-raises the signal it caught once it has stopped; a no-op handler makes that a
    # clean return, so the book is saved and the process exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread: uvicorn skips signals too
            signal.signal(sig, lambda *_: None)
    log.info("kite-sim: http://%s:%d (ticker ws://%s:%d/ws), day %s, state %s",
             server.config.host, port, server.config.host, port, sim.clock.day, state_dir)
    asyncio.run(run_until_stopped(sim, app, server, faults))


def _settings_defaults() -> tuple[str, str, Path]:
    try:
        from shared.config import load_settings

        s = load_settings()
        return s.kite_api_key, s.kite_api_secret, Path(s.home) / "kite-sim"
    except Exception:  # settings invalid in this environment: fall back to plain defaults
        return "", "", Path(".ratchet") / "kite-sim"


def parser() -> argparse.ArgumentParser:
    key, secret, home = _settings_defaults()
    p = argparse.ArgumentParser(
        prog="python -m shared.kite",
        description="A Kite Connect v3 simulator: REST at http://127.0.0.1:PORT and the binary "
                    "ticker at ws://127.0.0.1:PORT/ws, for the official kiteconnect SDK. Admin "
                    "routes (clock, prices, faults) live under /_sim; see /_sim/docs.")
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on (127.0.0.1)")
    p.add_argument("--api-key", default=key or "kite_sim_key",
                   help="API key clients must use (default: RATCHET_KITE_API_KEY)")
    p.add_argument("--api-secret", default=secret or "kite_sim_secret",
                   help="API secret for the session checksum (default: RATCHET_KITE_API_SECRET)")
    p.add_argument("--state-dir", type=Path, default=home,
                   help="where the SQLite book lives; a restart continues from it (%(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the price paths (%(default)s)")
    p.add_argument("--speed", type=float, default=60.0,
                   help="simulated seconds per wall second (%(default)s)")
    p.add_argument("--symbols", type=int, default=50, help="instruments listed (%(default)s)")
    p.add_argument("--tick-interval", type=float, default=0.25,
                   help="wall seconds between market steps, each a tick per instrument")
    p.add_argument("--paused", action="store_true",
                   help="start with the clock stopped (advance it via POST /_sim/advance)")
    p.add_argument("--start-day", type=date.fromisoformat, default=None,
                   help="first simulated trading day, YYYY-MM-DD (default: today in IST)")
    p.add_argument("--replay-dir", type=Path, default=None,
                   help="replay SYMBOL.csv bars (open,high,low,close in rupees) from here")
    p.add_argument("--order-rate", type=int, default=10,
                   help="orders per second per key before 429; 0 = unlimited")
    p.add_argument("--historical-rate", type=int, default=3,
                   help="historical requests per second before 429; 0 = unlimited")
    p.add_argument("--log-level", default="warning", help="uvicorn log level")
    f = p.add_argument_group("faults (also armable at run time via /_sim/faults)")
    f.add_argument("--delay-ms", type=int, default=0, help="delay every response by N ms")
    f.add_argument("--http-429", type=int, default=0, help="answer the first N requests 429")
    f.add_argument("--http-5xx", type=int, default=0, help="answer the first N requests 5xx")
    f.add_argument("--http-5xx-code", type=int, default=503, choices=(500, 502, 503, 504))
    f.add_argument("--reject-orders", type=int, default=0, help="reject the first N orders")
    f.add_argument("--lose-responses", type=int, default=0,
                   help="accept the first N orders, then cut the connection before the answer")
    f.add_argument("--drop-socket-every", type=float, default=0.0, metavar="S",
                   help="drop every ticker socket every S wall seconds")
    f.add_argument("--stall-every", type=float, default=0.0, metavar="S",
                   help="stall ticks (socket open) every S wall seconds")
    f.add_argument("--stall-for", type=float, default=5.0, metavar="S",
                   help="how long each stall lasts (%(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(list(argv) if argv is not None else sys.argv[1:])
    faults = FaultConfig(delay_ms=args.delay_ms, http_429=args.http_429, http_5xx=args.http_5xx,
                         http_5xx_code=args.http_5xx_code, reject_orders=args.reject_orders,
                         lose_responses=args.lose_responses,
                         drop_socket_every_s=args.drop_socket_every,
                         stall_every_s=args.stall_every, stall_for_s=args.stall_for)
    options = Options(symbols=args.symbols, tick_interval_s=args.tick_interval,
                      paused=args.paused, start_day=args.start_day, replay_dir=args.replay_dir,
                      order_rate=args.order_rate, historical_rate=args.historical_rate,
                      log_level=args.log_level)
    serve(args.port, args.api_key, args.api_secret, args.state_dir, args.seed, args.speed,
          faults, options)
    return 0
