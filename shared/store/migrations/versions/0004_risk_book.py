"""risk book: the open legs and the capital in them, kept in step with every order by Postgres

The guards used to count and sum every open leg before each check, a scan that grows with the
book (5.7 ms at 5,000 open legs). Now one row holds both figures and triggers on ``orders`` keep
it exact, whichever process or statement changes an order, so the check reads one row.

The triggers are deferred constraint triggers: each order's change is added to the book as its
transaction commits, so the book's row lock is taken last and held only while committing. A
transaction that took it early could wait for an order row while holding it, and deadlock with
one holding that row and waiting for the book. ``TRUNCATE orders`` resets the book to empty. A
missing book row is an error to the guards (they fail closed), never an empty book.

Also a partial index on the live GTTs, which the same check counts; the index of open legs,
which only that count read, goes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 02:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

EXPOSURE_ARGS = "side, leg_closed_at, state, average_price, ref_price, filled_qty, qty"
OPEN_BUYS = "side = 'BUY' AND leg_closed_at IS NULL AND state NOT IN ('REJECTED', 'CANCELLED')"
LIVE_GTTS = "state IN ('NEW', 'SUBMITTED', 'ACTIVE', 'UNKNOWN')"

FUNCTIONS = """
CREATE FUNCTION order_exposure(side varchar, leg_closed_at timestamptz, state varchar,
                               average_price numeric, ref_price numeric, filled_qty integer,
                               qty integer)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    -- The capital an order holds as an open leg; NULL when it is not an open leg.
    SELECT CASE WHEN side = 'BUY' AND leg_closed_at IS NULL
                     AND state NOT IN ('REJECTED', 'CANCELLED')
                THEN coalesce(average_price, ref_price) * coalesce(nullif(filled_qty, 0), qty) END
$$;

CREATE FUNCTION risk_book_add(legs integer, capital numeric) RETURNS void LANGUAGE sql AS $$
    UPDATE risk_book SET open_legs = open_legs + legs, deployed = deployed + capital WHERE id = 1
$$;

CREATE FUNCTION risk_book_follow_order() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    before_change numeric;
    after_change numeric;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        before_change := order_exposure(OLD.side, OLD.leg_closed_at, OLD.state, OLD.average_price,
                                        OLD.ref_price, OLD.filled_qty, OLD.qty);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        after_change := order_exposure(NEW.side, NEW.leg_closed_at, NEW.state, NEW.average_price,
                                       NEW.ref_price, NEW.filled_qty, NEW.qty);
    END IF;
    IF before_change IS DISTINCT FROM after_change THEN
        PERFORM risk_book_add(
            (after_change IS NOT NULL)::integer - (before_change IS NOT NULL)::integer,
            coalesce(after_change, 0) - coalesce(before_change, 0));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION risk_book_empty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO risk_book (id, open_legs, deployed) VALUES (1, 0, 0)
    ON CONFLICT (id) DO UPDATE SET open_legs = 0, deployed = 0;
    RETURN NULL;
END
$$;
"""

TRIGGERS = """
CREATE CONSTRAINT TRIGGER risk_book_order_inserted AFTER INSERT ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.side = 'BUY') EXECUTE FUNCTION risk_book_follow_order();
CREATE CONSTRAINT TRIGGER risk_book_order_updated AFTER UPDATE ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.side = 'BUY' OR NEW.side = 'BUY') EXECUTE FUNCTION risk_book_follow_order();
CREATE CONSTRAINT TRIGGER risk_book_order_deleted AFTER DELETE ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.side = 'BUY') EXECUTE FUNCTION risk_book_follow_order();
CREATE TRIGGER risk_book_orders_truncated AFTER TRUNCATE ON orders
    FOR EACH STATEMENT EXECUTE FUNCTION risk_book_empty();
"""


def upgrade() -> None:
    # No order may change between the backfill and the triggers (a service still trading while
    # the migration runs): it would be in neither, and the book would be wrong for good.
    op.execute("LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "risk_book",
        sa.Column("id", sa.SmallInteger(), sa.CheckConstraint("id = 1"), primary_key=True),
        sa.Column("open_legs", sa.Integer(), sa.CheckConstraint("open_legs >= 0"), nullable=False),
        sa.Column("deployed", sa.Numeric(18, 2), nullable=False),
    )
    op.execute(FUNCTIONS)
    op.execute(f"""
        INSERT INTO risk_book (id, open_legs, deployed)
        SELECT 1, count(e), coalesce(sum(e), 0)
        FROM (SELECT order_exposure({EXPOSURE_ARGS}) AS e FROM orders) exposures
    """)
    op.execute(TRIGGERS)
    op.create_index("ix_gtts_live", "gtts", ["id"], postgresql_where=sa.text(LIVE_GTTS))
    op.drop_index("ix_orders_open_buys", table_name="orders")


def downgrade() -> None:
    op.create_index("ix_orders_open_buys", "orders", ["id"], postgresql_where=sa.text(OPEN_BUYS))
    op.drop_index("ix_gtts_live", table_name="gtts")
    for trigger in ("risk_book_orders_truncated", "risk_book_order_deleted",
                    "risk_book_order_updated", "risk_book_order_inserted"):
        op.execute(f"DROP TRIGGER {trigger} ON orders")
    for function in ("risk_book_empty()", "risk_book_follow_order()",
                     "risk_book_add(integer, numeric)",
                     "order_exposure(varchar, timestamptz, varchar, numeric, numeric, integer, "
                     "integer)"):
        op.execute(f"DROP FUNCTION {function}")
    op.drop_table("risk_book")
