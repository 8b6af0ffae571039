"""risk indexes: the guards' picture reads open legs and today's closed legs, not every order

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 20:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OPEN_BUYS = "side = 'BUY' AND leg_closed_at IS NULL AND state NOT IN ('REJECTED', 'CANCELLED')"


def upgrade() -> None:
    op.create_index("ix_orders_open_buys", "orders", ["id"], postgresql_where=sa.text(OPEN_BUYS))
    op.create_index("ix_orders_leg_closed_at", "orders", ["leg_closed_at"],
                    postgresql_where=sa.text("leg_closed_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_orders_leg_closed_at", table_name="orders")
    op.drop_index("ix_orders_open_buys", table_name="orders")
