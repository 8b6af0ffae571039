"""Engine and session factories (built in a composition root, never at import)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    pre_ping: bool = True,
    autocommit: bool = False,
    idle_in_transaction_s: float | None = None,
) -> Engine:
    """``pre_ping`` tests each connection as it is checked out (a round trip), so one that
    Postgres dropped is replaced before use; ``autocommit`` for one-statement work;
    ``idle_in_transaction_s``: Postgres ends a session whose transaction sat idle that long
    (a hung process), releasing its locks."""
    connect_args = {} if idle_in_transaction_s is None else {
        "options": f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_s * 1000)}"}
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=pre_ping,
                         isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
                         connect_args=connect_args)


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
