"""Helpers of the api tests: seed ladders and legs, put prices into the LTP store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import redis
from sqlalchemy.orm import Session

from shared.contracts.streams import LTP_HASH
from shared.store.models import Ladder, Trade

T0 = datetime(2025, 1, 2, 4, 0, tzinfo=UTC)  # 09:30 IST


def add_ladder(session: Session, ladder_id: str, symbol: str, phase: str = "ACTIVE") -> None:
    session.add(
        Ladder(
            id=ladder_id,
            strategy="momentum",
            exchange="NSE",
            symbol=symbol,
            signal_bar=T0,
            phase=phase,
            opened_at=T0,
        )
    )


def add_leg(
    session: Session,
    ladder_id: str,
    symbol: str,
    leg: int,
    *,
    qty: int = 10,
    entry: str = "100.00",
    stop: str | None = "97.50",
    initial_stop: str | None = "97.50",
    target: str | None = None,
    status: str = "OPEN",
    entry_time: datetime | None = T0,
    exit_price: str | None = None,
    exit_time: datetime | None = None,
    pnl: str | None = None,
) -> None:
    session.add(
        Trade(
            trade_id=f"{ladder_id}:{leg}",
            ladder_id=ladder_id,
            symbol=symbol,
            exchange="NSE",
            position_number=leg,
            qty=qty,
            entry_price=Decimal(entry),
            entry_time=entry_time,
            stop_loss=Decimal(stop) if stop else None,
            initial_stop=Decimal(initial_stop) if initial_stop else None,
            target=Decimal(target) if target else None,
            highest_price=Decimal(entry),
            status=status,
            exit_price=Decimal(exit_price) if exit_price else None,
            exit_time=exit_time,
            pnl=Decimal(pnl) if pnl else None,
        )
    )


def set_ltp(client: redis.Redis, symbol: str, paise: int, *, exchange: str = "NSE") -> None:
    value = {"token": 1234, "price": paise, "ts_ms": 1_735_790_400_000, "volume": 5000}
    client.hset(LTP_HASH, f"{exchange}:{symbol}", orjson.dumps(value))


def yesterday() -> datetime:
    return datetime.now(UTC) - timedelta(days=2)


def control_messages(client: redis.Redis) -> list:
    """Envelopes on the control stream, oldest first, once each (the relay may repeat one)."""
    from shared.contracts.messages import FIELD, decode
    from shared.contracts.streams import CONTROL

    seen: dict[str, object] = {}
    for _, fields in client.xrange(CONTROL):
        envelope = decode(fields[FIELD])
        seen.setdefault(envelope.id, envelope)
    return list(seen.values())
