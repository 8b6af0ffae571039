"""The ``ratchet`` command."""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings, load_settings

app = typer.Typer(
    help="Ratchet: automated momentum trading for NSE equities on Zerodha Kite Connect.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="API keys for programs (viewer, trader, admin).", no_args_is_help=True)
users_app = typer.Typer(help="People who log in to the dashboard.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(importlib.import_module("ratchet.kite_cli").kite_app, name="kite")

SERVICE_NAMES = ("marketdata", "strategy", "execution", "api")


@app.command()
def run() -> None:
    """Run everything locally: embedded Redis and Postgres, the four services, the dashboard.

    Prints `ready: http://127.0.0.1:PORT/` when all is up; Ctrl-C stops everything in order.
    Data lives in $RATCHET_HOME (default .ratchet/); a second run carries on from it.
    """
    from ratchet.runner import run as run_system

    raise typer.Exit(run_system(load_settings()))


@app.command()
def service(
    name: Annotated[str, typer.Argument(help="marketdata | strategy | execution | api")],
) -> None:
    """Run one service in the foreground (what `ratchet run`, compose and systemd start)."""
    if name not in SERVICE_NAMES:
        raise typer.BadParameter(
            f"unknown service {name!r}; choose from {', '.join(SERVICE_NAMES)}"
        )
    module = importlib.import_module(f"services.{name}.main")
    module.main(load_settings())


@app.command(
    "kite-sim",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def kite_sim(ctx: typer.Context) -> None:
    """A Kite Connect-compatible simulator (REST + binary ticker) for tests and rehearsals.

    Options: --port N --api-key K --api-secret S --state-dir D, fault flags; see `--help`.
    """
    from shared.kite.server import main as kite_sim_main

    raise typer.Exit(kite_sim_main(ctx.args))


@app.command()
def migrate() -> None:
    """Apply the database migrations (RATCHET_DATABASE_URL)."""
    from shared.store.migrate import upgrade

    upgrade(_settings().require_database_url())
    typer.echo("database is at the latest revision")


def _settings() -> Settings:
    """Settings for the admin commands: while `ratchet run` runs its embedded servers, their
    addresses are in $RATCHET_HOME/servers.json and are used when no URL is set."""
    settings = load_settings()
    servers = settings.home / "servers.json"
    if servers.exists():
        found = json.loads(servers.read_text())
        settings.redis_url = settings.redis_url or found.get("redis_url")
        settings.database_url = settings.database_url or found.get("database_url")
    return settings


def _sessions() -> sessionmaker[Session]:
    from shared.store.db import make_engine, make_sessions

    return make_sessions(make_engine(_settings().require_database_url(), pool_size=1))


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="viewer | trader | admin")] = "viewer",
    name: Annotated[str, typer.Option(help="a label to recognise the key by")] = "cli",
    days: Annotated[int | None, typer.Option(help="expire after this many days")] = None,
) -> None:
    """Create an API key; the secret is printed once, on the last line."""
    from shared.auth import Role, create_api_key

    if role not in {r.value for r in Role}:
        raise typer.BadParameter("role must be viewer, trader or admin")
    expires = datetime.now(UTC) + timedelta(days=days) if days else None
    with _sessions().begin() as session:
        secret = create_api_key(session, name, role, expires)
    typer.echo(
        f"created {role} key {name!r}" + (f", expires {expires:%Y-%m-%d}" if expires else "")
    )
    typer.echo(secret)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (prefix, role, state); secrets are never shown."""
    from shared.auth import key_is_usable, list_api_keys

    with _sessions()() as session:
        for key in list_api_keys(session):
            state = "active" if key_is_usable(key) else ("revoked" if key.revoked_at else "expired")
            typer.echo(f"{key.id}\t{key.prefix}…\t{key.role}\t{state}\t{key.name}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="the id shown by `ratchet keys list`")],
) -> None:
    """Revoke a key at once."""
    from shared.auth import revoke_api_key

    with _sessions().begin() as session:
        if revoke_api_key(session, key_id) is None:
            typer.echo(f"no key with id {key_id}", err=True)
            raise typer.Exit(1)
    typer.echo(f"revoked key {key_id}")


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Option(help="viewer | trader | admin")] = "viewer",
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create a dashboard user with an argon2-hashed password."""
    from shared.auth import create_user

    with _sessions().begin() as session:
        create_user(session, username, password, role)
    typer.echo(f"created {role} user {username!r}")


from ratchet import backtest_cli  # noqa: E402

app.command("backtest")(backtest_cli.backtest)
app.command("backfill")(backtest_cli.backfill)


def main() -> None:
    app(prog_name="ratchet")


if __name__ == "__main__":
    main()
