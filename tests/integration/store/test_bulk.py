"""ColumnsInsert, ColumnsUpdate and any_of against real Postgres: the rows, NULLs and JSON
arrive as given, existing keys are skipped, only rows still as expected are updated, and the
statement's text is the same for 1 row and 500."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.store.bulk import ColumnsInsert, ColumnsUpdate, any_of
from shared.store.models import AuditEntry, Intent, Order

_INTENTS = ColumnsInsert(Intent.__table__, ("intent_id", "type", "state", "payload"),
                         skip_existing=("intent_id",), returning=("intent_id",))
_AUDIT = ColumnsInsert(AuditEntry.__table__,
                       ("actor", "action", "object_type", "object_id", "after"))


def _intent(n: int, payload: object) -> dict[str, object]:
    return {"intent_id": f"i{n}", "type": "PlaceOrder", "state": "RECORDED", "payload": payload}


def test_rows_arrive_as_given_and_existing_keys_are_skipped(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        first = set(_INTENTS.execute(session, [_intent(1, {"qty": 1, "note": "ü"}),
                                               _intent(2, [1, 2])]).scalars())
    with sessions.begin() as session:
        again = set(_INTENTS.execute(session, [_intent(2, {"other": True}),
                                               _intent(3, None)]).scalars())
        _AUDIT.execute(session, [{"actor": "t", "action": "a", "object_type": "o",
                                  "object_id": None, "after": {"price": "10.50"}}])
    assert (first, again) == ({"i1", "i2"}, {"i3"})
    with sessions() as session:
        stored = {i.intent_id: i.payload for i in session.scalars(select(Intent))}
        audit = session.scalars(select(AuditEntry)).one()
    assert stored == {"i1": {"qty": 1, "note": "ü"}, "i2": [1, 2], "i3": None}
    assert (audit.object_id, audit.after, audit.ts is not None) == (None, {"price": "10.50"}, True)


def test_one_text_for_any_number_of_rows(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        rows = [_intent(n, {"n": n}) for n in range(500)]
        inserted = _INTENTS.execute(session, rows).scalars().all()
    assert len(inserted) == 500
    assert _INTENTS.statement.count("%(") == 4  # one array parameter per column


def _orders(sessions: sessionmaker[Session], count: int) -> list[int]:
    with sessions.begin() as session:
        for n in range(count):
            session.add(Order(intent_id=f"i{n}", tag=f"T{n}", exchange="NSE", symbol="X",
                              ladder_id="L", leg=n, side="BUY", qty=1, order_type="MARKET",
                              ref_price=Decimal("1"), adds_risk=True, state="NEW", history=[]))
    with sessions() as session:
        return sorted(session.scalars(select(Order.id)))


def test_update_matches_rows_still_as_expected(sessions: sessionmaker[Session]) -> None:
    ids = _orders(sessions, 3)
    with sessions() as session:
        before = {o.id: o.updated_at for o in session.scalars(select(Order))}
    update = ColumnsUpdate(Order.__table__, {"order_id": "id", "expected": "state"},
                           ("state", "reason", "history"))
    rows = [{"order_id": ids[0], "expected": "NEW", "state": "SUBMITTED", "reason": None,
             "history": [{"to": "SUBMITTED"}]},
            {"order_id": ids[1], "expected": "FILLED", "state": "REJECTED", "reason": "no",
             "history": []},  # not in the state expected: left alone
            {"order_id": ids[2], "expected": "NEW", "state": "REJECTED", "reason": "guard",
             "history": []}]
    with sessions.begin() as session:
        matched = update.execute(session, rows)
    with sessions() as session:
        after = {o.id: o for o in session.scalars(select(Order))}
    assert matched == 2
    assert [(after[i].state, after[i].reason, after[i].history) for i in ids] == [
        ("SUBMITTED", None, [{"to": "SUBMITTED"}]), ("NEW", None, []), ("REJECTED", "guard", [])]
    assert after[ids[0]].updated_at > before[ids[0]]  # the column's onupdate, in SQL
    assert after[ids[1]].updated_at == before[ids[1]]


def test_any_of_matches_the_listed_ids_only(sessions: sessionmaker[Session]) -> None:
    ids = _orders(sessions, 5)
    with sessions() as session:
        listed = select(Order.leg).where(any_of(Order.id, "ids")).order_by(Order.leg)
        picked = session.scalars(listed, {"ids": [ids[1], ids[3], -7]}).all()
        none = session.scalars(listed, {"ids": []}).all()
    assert (picked, none) == ([1, 3], [])
