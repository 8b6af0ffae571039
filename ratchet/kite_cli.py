"""``ratchet kite``: log in to Kite Connect and look after the daily access token.

Also the local simulator for ``ratchet run`` with ``RATCHET_FEED=kite-sim``: started next to the
services, logged in automatically (it accepts any request token with the right checksum).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlparse

import typer

from shared.config import Settings

kite_app = typer.Typer(help="Kite Connect: login and the daily access token.", no_args_is_help=True)

SIM_API_KEY = "kite_sim_key"
SIM_API_SECRET = "kite_sim_secret"


def _request_token(text: str) -> str:
    """The request token itself, or the redirect URL Kite sent the browser to."""
    text = text.strip()
    if "request_token=" in text:
        found = parse_qs(urlparse(text).query).get("request_token") or parse_qs(text).get(
            "request_token")
        if found:
            return found[0]
    return text


def _store(settings: Settings):  # noqa: ANN202 - TokenStore, imported lazily
    from ratchet.cli import _sessions
    from shared.broker_tokens import TokenKeyMissing, TokenStore, key_from_env

    try:
        key = key_from_env()
    except TokenKeyMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return TokenStore(_sessions(), key)


def exchange_and_store(
    settings: Settings, store, request_token: str  # noqa: ANN001
) -> tuple[str | None, datetime]:
    """generate_session at ``settings.kite_root``; the access token goes to the store only."""
    from kiteconnect import KiteConnect

    kite = KiteConnect(settings.kite_api_key, root=settings.kite_root)
    data = kite.generate_session(request_token, api_secret=settings.kite_api_secret)
    saved = store.save(settings.kite_api_key, data["access_token"], data.get("user_id"),
                       login_at=datetime.now(UTC))
    return saved.user_id, saved.expires_at


@kite_app.command("login")
def login(
    request_token: Annotated[str | None, typer.Option(
        help="the request_token from the redirect (or the whole redirect URL); asked if not given")
    ] = None,
) -> None:
    """Print Kite's login URL, take the request_token, exchange it, store the access token
    encrypted (RATCHET_KITE_TOKEN_KEY) where marketdata and execution read it."""
    from kiteconnect import KiteConnect
    from kiteconnect import exceptions as kex

    from ratchet.cli import _settings
    from shared.broker_tokens import fmt_ist

    settings = _settings()
    if not settings.kite_api_key or not settings.kite_api_secret:
        typer.echo("error: set RATCHET_KITE_API_KEY and RATCHET_KITE_API_SECRET (your Kite Connect "
                   "app's key and secret)", err=True)
        raise typer.Exit(2)
    store = _store(settings)
    url = KiteConnect(settings.kite_api_key, root=settings.kite_root).login_url()
    typer.echo("Log in to Kite in a browser at this address; Kite then redirects to your app's "
               "redirect URL with ?request_token=... in it:")
    typer.echo(url)
    if request_token is None:
        request_token = typer.prompt("request_token (or the whole redirect URL)")
    try:
        user, expires = exchange_and_store(settings, store, _request_token(request_token))
    except kex.KiteException as exc:
        typer.echo(f"error: Kite refused the login: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"error: cannot reach Kite at {settings.kite_root}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"logged in as {user}; the access token is stored encrypted and expires at "
               f"{fmt_ist(expires)}")


@kite_app.command("status")
def status(
    check: Annotated[bool, typer.Option(help="ask Kite whether the token still works")] = False,
) -> None:
    """Who is logged in and when the access token expires (never the token itself)."""
    from ratchet.cli import _settings
    from shared.broker_tokens import fmt_ist

    settings = _settings()
    stored = _store(settings).load(settings.kite_api_key)
    if stored is None:
        typer.echo("no Kite access token stored: run `ratchet kite login`")
        raise typer.Exit(1)
    now = datetime.now(UTC)
    state = "EXPIRED" if stored.expires_at <= now else "valid"
    typer.echo(f"user {stored.user_id}, logged in {fmt_ist(stored.login_at)}, "
               f"expires {fmt_ist(stored.expires_at)} ({state})")
    if check:
        from services.execution.brokers.base import BrokerError
        from services.execution.brokers.kite import KiteBroker

        try:
            KiteBroker(settings.kite_api_key, stored.access_token, settings.kite_root,
                       read_attempts=1).profile()
        except BrokerError as exc:
            typer.echo(f"Kite refuses it: {exc}")
            raise typer.Exit(1) from None
        typer.echo("Kite accepts it")
    if stored.expires_at <= now:
        raise typer.Exit(1)


@kite_app.command("logout")
def logout() -> None:
    """Invalidate the access token at Kite and delete it here."""
    from kiteconnect import KiteConnect
    from kiteconnect import exceptions as kex

    from ratchet.cli import _settings

    settings = _settings()
    store = _store(settings)
    stored = store.load(settings.kite_api_key)
    if stored is not None:
        try:
            KiteConnect(settings.kite_api_key, access_token=stored.access_token,
                        root=settings.kite_root).invalidate_access_token()
        except (kex.KiteException, OSError):
            pass  # expired already, or Kite unreachable: deleting it here is what matters
    store.delete(settings.kite_api_key)
    typer.echo("logged out")


@kite_app.command("keygen")
def keygen() -> None:
    """Print a new RATCHET_KITE_TOKEN_KEY (the key the access token is encrypted with)."""
    from shared.broker_tokens import new_key

    typer.echo(new_key())


# --- the local simulator for `ratchet run` (RATCHET_FEED=kite-sim) -----------------------------


@dataclass
class LocalKiteSim:
    process: subprocess.Popen[bytes]
    root: str

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _token_key(home: Path) -> str:
    """RATCHET_KITE_TOKEN_KEY, or one kept in $RATCHET_HOME/kite-token-key (0600) for local runs."""
    from shared.broker_tokens import KEY_ENV, new_key

    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    path = home / "kite-token-key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_key() + "\n")
    return path.read_text().strip()


def start_local_kite_sim(settings: Settings, home: Path, say=print) -> LocalKiteSim:  # noqa: ANN001
    """Start the simulator, point this process's (and so the services') Kite settings at it, and
    log in. Returns the running simulator; stop it after the services."""
    import httpx

    from ratchet.servers import free_port
    from shared.broker_tokens import KEY_ENV, TokenStore
    from shared.store.db import make_engine, make_sessions

    settings.kite_api_key = settings.kite_api_key or SIM_API_KEY
    settings.kite_api_secret = settings.kite_api_secret or SIM_API_SECRET
    port = free_port()
    settings.kite_root = f"http://127.0.0.1:{port}"
    settings.kite_ws_root = f"ws://127.0.0.1:{port}/ws"
    key = _token_key(home)
    os.environ.update(RATCHET_KITE_API_KEY=settings.kite_api_key,
                      RATCHET_KITE_API_SECRET=settings.kite_api_secret,
                      RATCHET_KITE_ROOT=settings.kite_root,
                      RATCHET_KITE_WS_ROOT=settings.kite_ws_root,
                      **{KEY_ENV: key})
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "shared.kite", "--port", str(port),
            "--api-key", settings.kite_api_key, "--api-secret", settings.kite_api_secret,
            "--state-dir", str(home / "kite-sim"), "--seed", str(settings.sim_seed),
            "--speed", str(settings.sim_speed), "--symbols", str(settings.sim_symbols)]
    from ratchet.runner import _die_with_parent

    with open(logs / "kite-sim.log", "ab") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT,
                                   preexec_fn=_die_with_parent)  # noqa: PLW1509
    sim = LocalKiteSim(process, settings.kite_root)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{settings.kite_root}/_sim/state", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            sim.stop()
            raise RuntimeError(f"the Kite simulator did not start; see {logs / 'kite-sim.log'}")
        time.sleep(0.2)
    # The market waits for Ratchet: paused until marketdata has warmed up, so the day's first
    # bars are seen live (a second run continues the simulator's saved day the same way).
    httpx.post(f"{settings.kite_root}/_sim/clock", json={"paused": True}, timeout=10)
    import redis

    redis.Redis.from_url(settings.require_redis_url()).delete("md.kite")  # last run's feed status
    threading.Thread(target=_open_market_when_warm, args=(settings, sim), daemon=True).start()
    say(f"kite simulator at {settings.kite_root} (ticker {settings.kite_ws_root})")
    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        store = TokenStore(make_sessions(engine), key)
        exchange_and_store(settings, store, f"ratchet-run-{int(time.time())}")
    finally:
        engine.dispose()
    say("logged in to the simulator (access token stored encrypted)")
    return sim


def _open_market_when_warm(settings: Settings, sim: LocalKiteSim, timeout_s: float = 600) -> None:
    """Start the simulator's clock once the kite feed has its history (md.kite pending = 0)."""
    import httpx
    import redis

    client = redis.Redis.from_url(settings.require_redis_url())
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and sim.process.poll() is None:
            try:
                if client.hget("md.kite", "pending") == b"0":
                    break
            except redis.RedisError:
                pass
            time.sleep(0.5)
        httpx.post(f"{sim.root}/_sim/clock", json={"paused": False}, timeout=10)
    except (httpx.HTTPError, redis.RedisError):
        pass  # the run is stopping
    finally:
        client.close()
