"""The strategy's durable state: per-symbol resume state, ``ladders`` and ``trades`` rows.

Written in the same transaction as the intents it decided (staged in the outbox), so a crash
either loses both or neither, and a restart rebuilds the engine exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.domain.ladder import Ladder, Leg, LegState
from shared.domain.money import to_rupees
from shared.store.models import Ladder as LadderRow
from shared.store.models import StrategyState, Trade

_TRADE_STATUS = {
    LegState.PENDING: "PENDING",
    LegState.OPEN: "OPEN",
    LegState.CLOSED: "CLOSED",
    LegState.REJECTED: "REJECTED",
}


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _rupees(paise: int | None) -> Any:
    return None if paise is None or paise == 0 else to_rupees(paise)


def save_symbols(
    session: Session, strategy: str, states: list[tuple[str, int | None, Ladder | None]]
) -> None:
    """Upsert the resume state of several symbols in one statement."""
    if not states:
        return
    rows = [
        {"strategy": strategy, "symbol": symbol,
         "state": {"last_bar_ms": last_bar_ms, "ladder": ladder.to_dict() if ladder else None}}
        for symbol, last_bar_ms, ladder in states
    ]
    stmt = insert(StrategyState).values(rows)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["strategy", "symbol"], set_={"state": stmt.excluded.state}
        )
    )


def load_states(
    session: Session, strategy: str, symbol: str | None = None
) -> dict[str, dict[str, Any]]:
    query = select(StrategyState).where(StrategyState.strategy == strategy)
    if symbol is not None:
        query = query.where(StrategyState.symbol == symbol)
    rows = session.scalars(query)
    return {row.symbol: row.state for row in rows}


def save_ladders(session: Session, strategy: str, ladders: list[tuple[Ladder, str]]) -> None:
    """Upsert ladder rows and one trades row per leg, for several ladders in two statements."""
    if not ladders:
        return
    ladder_rows = [_ladder_row(strategy, ladder, phase) for ladder, phase in ladders]
    stmt = insert(LadderRow).values(ladder_rows)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={k: stmt.excluded[k] for k in ("phase", "p2_done", "p3_done", "closed_at")},
        )
    )
    trade_rows = [_trade_row(ladder, leg) for ladder, _ in ladders for leg in ladder.legs.values()]
    stmt = insert(Trade).values(trade_rows)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["trade_id"],
            set_={k: stmt.excluded[k] for k in trade_rows[0] if k not in ("trade_id", "ladder_id")},
        )
    )


def _ladder_row(strategy: str, ladder: Ladder, phase: str) -> dict[str, Any]:
    legs = list(ladder.legs.values())
    opened = min((leg.entry_ms or leg.signal_ms for leg in legs), default=ladder.signal_bar_ms)
    ended = phase in ("ENDED", "CANCELLED")
    closed = max((leg.exit_ms or 0 for leg in legs), default=0) if ended else 0
    return {
        "id": ladder.ladder_id,
        "strategy": strategy,
        "exchange": ladder.exchange,
        "symbol": ladder.symbol,
        "signal_bar": _dt(ladder.signal_bar_ms),
        "phase": phase,
        "p2_done": ladder.p2_done,
        "p3_done": ladder.p3_done,
        "opened_at": _dt(opened),
        "closed_at": _dt(closed) if closed else None,
    }


def _trade_row(ladder: Ladder, leg: Leg) -> dict[str, Any]:
    pnl = pnl_pct = None
    if leg.state is LegState.CLOSED and leg.exit_price is not None and leg.entry_price:
        pnl = to_rupees((leg.exit_price - leg.entry_price) * leg.qty)
        pnl_pct = (leg.exit_price - leg.entry_price) * 100.0 / leg.entry_price
    return {
        "trade_id": f"{ladder.ladder_id}:{leg.leg}",
        "ladder_id": ladder.ladder_id,
        "symbol": ladder.symbol,
        "exchange": ladder.exchange,
        "position_number": leg.leg,
        "qty": leg.qty,
        "entry_price": _rupees(leg.entry_price),
        "entry_time": _dt(leg.entry_ms),
        "exit_price": _rupees(leg.exit_price),
        "exit_time": _dt(leg.exit_ms) if leg.state is LegState.CLOSED else None,
        "stop_loss": _rupees(leg.stop),
        "initial_stop": _rupees(leg.initial_stop),
        "target": _rupees(leg.target),
        "highest_price": _rupees(leg.highest),
        "pnl": pnl,
        "pnl_pct": pnl_pct,
        "status": _TRADE_STATUS[leg.state],
        "exit_reason": leg.exit_reason,
    }


def set_gtt_id(session: Session, ladder_id: str, leg: int, trigger_id: str) -> None:
    row = session.get(Trade, f"{ladder_id}:{leg}")
    if row is not None:
        row.gtt_id = trigger_id
