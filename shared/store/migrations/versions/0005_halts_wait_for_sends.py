"""halts wait for broker calls in flight: a new halt commits only between runs of them

Execution looks for a halt once per run of broker calls (at most 50 ms of them), holding the
advisory lock ``execution:halts`` shared until that run's transaction ends; these triggers make
every write that turns a halt on, by any service, take the same lock exclusively first (clearing
one waits for nothing). So a halt either
commits before a run takes the lock, and the run's check (a statement of its own) sees it, or
waits until the run has committed: no order that adds risk reaches the broker after a halt is
committed, and the check costs one round trip per run instead of one per order.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 03:10:00
"""
from __future__ import annotations

import zlib

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

HALT_LOCK = zlib.crc32(b"execution:halts")  # services.execution.ledger.HALT_LOCK


def upgrade() -> None:
    op.execute(f"""
        CREATE FUNCTION halts_wait_for_sends() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock({HALT_LOCK});
            RETURN NEW;
        END
        $$;
        CREATE TRIGGER halt_added_waits_for_sends BEFORE INSERT ON halts
            FOR EACH ROW WHEN (NEW.active) EXECUTE FUNCTION halts_wait_for_sends();
        CREATE TRIGGER halt_resumed_waits_for_sends BEFORE UPDATE ON halts
            FOR EACH ROW WHEN (NEW.active AND NOT OLD.active)
            EXECUTE FUNCTION halts_wait_for_sends();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER halt_resumed_waits_for_sends ON halts")
    op.execute("DROP TRIGGER halt_added_waits_for_sends ON halts")
    op.execute("DROP FUNCTION halts_wait_for_sends()")
