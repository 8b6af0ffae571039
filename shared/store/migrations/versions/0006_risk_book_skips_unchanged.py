"""risk book: an order change that leaves its exposure as it was queues no trigger

Most changes to an order do not change the capital it holds as an open leg: a paper fill at
the reference price, a reason, an attempt counter, the history. The update trigger of 0004
queued a deferred call for every one of them, each running at commit to find nothing to add
(about 40 µs an order on the execution hot path). Its WHEN clause now compares the exposure
before and after, so only a change of it is queued; an inserted order that is no open leg (a
rejected buy) queues none either, nor does a deleted one. The book stays exact: the function
still adds exactly the difference. Replacing a trigger locks ``orders`` until the migration
commits, so no change slips between the old trigger and the new.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:40:00
"""
from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _exposure(row: str) -> str:
    return (f"order_exposure({row}.side, {row}.leg_closed_at, {row}.state, {row}.average_price, "
            f"{row}.ref_price, {row}.filled_qty, {row}.qty)")


def _replace(trigger: str, event: str, when: str) -> None:
    op.execute(f"DROP TRIGGER {trigger} ON orders")
    op.execute(f"""CREATE CONSTRAINT TRIGGER {trigger} AFTER {event} ON orders
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
        WHEN ({when}) EXECUTE FUNCTION risk_book_follow_order()""")


def upgrade() -> None:
    _replace("risk_book_order_inserted", "INSERT", f"{_exposure('NEW')} IS NOT NULL")
    _replace("risk_book_order_updated", "UPDATE",
             f"{_exposure('OLD')} IS DISTINCT FROM {_exposure('NEW')}")
    _replace("risk_book_order_deleted", "DELETE", f"{_exposure('OLD')} IS NOT NULL")


def downgrade() -> None:
    _replace("risk_book_order_inserted", "INSERT", "NEW.side = 'BUY'")
    _replace("risk_book_order_updated", "UPDATE", "OLD.side = 'BUY' OR NEW.side = 'BUY'")
    _replace("risk_book_order_deleted", "DELETE", "OLD.side = 'BUY'")
