"""Engine and session factories (built in a composition root, never at import)."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str, *, pool_size: int = 5, pre_ping: bool = True, autocommit: bool = False
) -> Engine:
    """``pre_ping`` tests each connection as it is checked out (a round trip), so one that
    Postgres dropped is replaced before use; ``autocommit`` for one-statement work."""
    return create_engine(url, pool_size=pool_size, max_overflow=10, pool_pre_ping=pre_ping,
                         isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED")


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
