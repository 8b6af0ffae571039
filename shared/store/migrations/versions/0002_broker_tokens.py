"""broker tokens: the Kite access token, encrypted at rest

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 16:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_tokens",
        sa.Column("broker", sa.String(length=20), nullable=False),
        sa.Column("api_key", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.Column("token_encrypted", sa.Text(), nullable=False),
        sa.Column("login_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("broker", "api_key"),
    )


def downgrade() -> None:
    op.drop_table("broker_tokens")
