"""Alembic environment: the models' metadata, the URL from the config set by migrate.py."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from shared.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None  # set by shared.store.migrate
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # One migrator at a time, even when several services start at once.
        connection.exec_driver_sql("SELECT pg_advisory_lock(73218)")
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        connection.exec_driver_sql("SELECT pg_advisory_unlock(73218)")
        connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `ratchet migrate`")
run_migrations_online()
