"""SQLAlchemy 2 models of every table (DESIGN.md §6). Prices are exact ``Numeric`` rupees;
times are timezone-aware UTC. Business rules live in ``shared.domain``, not here."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Price = Numeric(14, 2)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}
    __table__: ClassVar[Table]  # every model maps a Table (typed as any FromClause otherwise)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Instrument(Base):
    __tablename__ = "instruments"
    token: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    exchange: Mapped[str] = mapped_column(String(8))
    tradingsymbol: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(120), default="")
    tick_size: Mapped[Decimal] = mapped_column(Numeric(10, 4))
    lot_size: Mapped[int] = mapped_column(Integer, default=1)
    freeze_qty: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (UniqueConstraint("exchange", "tradingsymbol", name="uq_instrument_symbol"),)


class Ohlcv(Base):
    __tablename__ = "ohlcv"
    exchange: Mapped[str] = mapped_column(String(8), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(40), primary_key=True)
    timeframe: Mapped[int] = mapped_column(Integer, primary_key=True)  # minutes
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    open: Mapped[Decimal] = mapped_column(Price)
    high: Mapped[Decimal] = mapped_column(Price)
    low: Mapped[Decimal] = mapped_column(Price)
    close: Mapped[Decimal] = mapped_column(Price)
    volume: Mapped[int] = mapped_column(BigInteger)
    ema_9: Mapped[float | None] = mapped_column(Float)
    ema_21: Mapped[float | None] = mapped_column(Float)
    ema_50: Mapped[float | None] = mapped_column(Float)
    ema_200: Mapped[float | None] = mapped_column(Float)


class Ladder(Base):
    __tablename__ = "ladders"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    strategy: Mapped[str] = mapped_column(String(40))
    exchange: Mapped[str] = mapped_column(String(8))
    symbol: Mapped[str] = mapped_column(String(40), index=True)
    signal_bar: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    phase: Mapped[str] = mapped_column(String(16), index=True)  # PENDING ACTIVE ENDED CANCELLED
    p2_done: Mapped[bool] = mapped_column(Boolean, default=False)
    p3_done: Mapped[bool] = mapped_column(Boolean, default=False)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Trade(Base):
    """One row a leg (the seed's columns, plus the ladder's)."""

    __tablename__ = "trades"
    trade_id: Mapped[str] = mapped_column(String(90), primary_key=True)
    ladder_id: Mapped[str] = mapped_column(ForeignKey("ladders.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(40))
    exchange: Mapped[str] = mapped_column(String(8))
    position_number: Mapped[int] = mapped_column(Integer)
    qty: Mapped[int] = mapped_column(Integer)
    entry_price: Mapped[Decimal | None] = mapped_column(Price)
    entry_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    exit_price: Mapped[Decimal | None] = mapped_column(Price)
    exit_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stop_loss: Mapped[Decimal | None] = mapped_column(Price)
    initial_stop: Mapped[Decimal | None] = mapped_column(Price)
    target: Mapped[Decimal | None] = mapped_column(Price)
    highest_price: Mapped[Decimal | None] = mapped_column(Price)
    gtt_id: Mapped[str | None] = mapped_column(String(40))
    pnl: Mapped[Decimal | None] = mapped_column(Numeric(16, 2), index=True)
    pnl_pct: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # PENDING OPEN CLOSED REJECTED
    exit_reason: Mapped[str | None] = mapped_column(String(20))
    __table_args__ = (Index("ix_trades_symbol_status", "symbol", "status"),)


class Intent(Base):
    """Every intent execution has seen, under its deterministic id: the dedup key."""

    __tablename__ = "intents"
    intent_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(16), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    intent_id: Mapped[str] = mapped_column(String(160), unique=True)
    tag: Mapped[str] = mapped_column(String(20), unique=True)
    exchange: Mapped[str] = mapped_column(String(8))
    symbol: Mapped[str] = mapped_column(String(40), index=True)
    ladder_id: Mapped[str] = mapped_column(String(80), index=True)
    leg: Mapped[int] = mapped_column(Integer)
    side: Mapped[str] = mapped_column(String(4))
    qty: Mapped[int] = mapped_column(Integer)
    order_type: Mapped[str] = mapped_column(String(12))
    product: Mapped[str] = mapped_column(String(8), default="CNC")
    ref_price: Mapped[Decimal] = mapped_column(Price)
    adds_risk: Mapped[bool] = mapped_column(Boolean)
    broker_order_id: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(12), index=True)
    filled_qty: Mapped[int] = mapped_column(Integer, default=0)
    average_price: Mapped[Decimal | None] = mapped_column(Price)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    leg_closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    realised_pnl: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = _created()
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    __table_args__ = (
        # The guards' risk picture: the legs closed today (migration 0003).
        Index("ix_orders_leg_closed_at", "leg_closed_at",
              postgresql_where=text("leg_closed_at IS NOT NULL")),
    )


class RiskBook(Base):
    """The open legs and the capital in them, kept exact by triggers on ``orders`` (migration
    0004), so the guards read one row; without it they refuse every order."""

    __tablename__ = "risk_book"
    id: Mapped[int] = mapped_column(SmallInteger, CheckConstraint("id = 1"), primary_key=True)
    open_legs: Mapped[int] = mapped_column(Integer, CheckConstraint("open_legs >= 0"))
    deployed: Mapped[Decimal] = mapped_column(Numeric(18, 2))


class Gtt(Base):
    """The protective GTT of one leg; modifications update its trigger in place."""

    __tablename__ = "gtts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    intent_id: Mapped[str] = mapped_column(String(160), unique=True)
    ladder_id: Mapped[str] = mapped_column(String(80))
    leg: Mapped[int] = mapped_column(Integer)
    exchange: Mapped[str] = mapped_column(String(8))
    symbol: Mapped[str] = mapped_column(String(40), index=True)
    qty: Mapped[int] = mapped_column(Integer)
    trigger_price: Mapped[Decimal] = mapped_column(Price)  # as placed at the broker
    desired_trigger: Mapped[Decimal] = mapped_column(Price)  # highest stop asked for so far
    target_price: Mapped[Decimal | None] = mapped_column(Price)
    last_price: Mapped[Decimal] = mapped_column(Price)
    trigger_id: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(12), index=True)
    delete_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    __table_args__ = (
        UniqueConstraint("ladder_id", "leg", name="uq_gtt_leg"),
        # The guards count the live GTTs (migration 0004).
        Index("ix_gtts_live", "id", postgresql_where=text(
            "state IN ('NEW', 'SUBMITTED', 'ACTIVE', 'UNKNOWN')")),
    )


class HaltRecord(Base):
    __tablename__ = "halts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # kill_switch daily_loss reconciliation stale_feed
    kind: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(80))
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_at: Mapped[datetime] = _created()
    cleared_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cleared_by: Mapped[str | None] = mapped_column(String(80))


class SettingsVersion(Base):
    """Run-time settings: each change is a row; the newest per section is current."""

    __tablename__ = "settings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    section: Mapped[str] = mapped_column(String(20), index=True)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)
    changed_by: Mapped[str] = mapped_column(String(80))
    changed_at: Mapped[datetime] = _created()


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    ts: Mapped[datetime] = _created()
    actor: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(60))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str | None] = mapped_column(String(160))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class AlertRecord(Base):
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = _created()
    level: Mapped[str] = mapped_column(String(10))
    code: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    symbol: Mapped[str | None] = mapped_column(String(40))
    ladder_id: Mapped[str | None] = mapped_column(String(80))
    intent_id: Mapped[str | None] = mapped_column(String(160))
    source: Mapped[str] = mapped_column(String(20))


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    role: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = _created()
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class OutboxMessage(Base):
    """Messages committed with the state change that caused them; published by a relay."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source: Mapped[str] = mapped_column(String(20))
    stream: Mapped[str] = mapped_column(String(60))
    msg_id: Mapped[str] = mapped_column(String(200))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index(
            "ix_outbox_unpublished",
            "source",
            "id",
            postgresql_where=published_at.is_(None),
        ),
    )


class StrategyState(Base):
    """The strategy engine's resumable state per symbol (ladders, legs with highest and stop)."""

    __tablename__ = "strategy_state"
    strategy: Mapped[str] = mapped_column(String(40), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(40), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class ProcessedMessage(Base):
    """Ids of messages whose effect a consumer has applied (idempotence across redelivery)."""

    __tablename__ = "processed_messages"
    consumer: Mapped[str] = mapped_column(String(40), primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = _created()


# --- the paper broker's own book (its own transactions, like a real broker) ------------------


class PaperOrder(Base):
    __tablename__ = "paper_orders"
    order_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    tag: Mapped[str | None] = mapped_column(String(20), index=True)
    exchange: Mapped[str] = mapped_column(String(8))
    symbol: Mapped[str] = mapped_column(String(40))
    side: Mapped[str] = mapped_column(String(4))
    qty: Mapped[int] = mapped_column(Integer)
    order_type: Mapped[str] = mapped_column(String(12))
    product: Mapped[str] = mapped_column(String(8))
    price: Mapped[Decimal | None] = mapped_column(Price)
    status: Mapped[str] = mapped_column(String(16))
    filled_qty: Mapped[int] = mapped_column(Integer, default=0)
    average_price: Mapped[Decimal | None] = mapped_column(Price)
    status_message: Mapped[str | None] = mapped_column(Text)
    gtt_trigger_id: Mapped[str | None] = mapped_column(String(24))
    placed_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class PaperGtt(Base):
    __tablename__ = "paper_gtts"
    trigger_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exchange: Mapped[str] = mapped_column(String(8))
    symbol: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # single | two-leg
    qty: Mapped[int] = mapped_column(Integer)
    stop_trigger: Mapped[Decimal] = mapped_column(Price)
    stop_limit: Mapped[Decimal] = mapped_column(Price)
    target_trigger: Mapped[Decimal | None] = mapped_column(Price)
    target_limit: Mapped[Decimal | None] = mapped_column(Price)
    status: Mapped[str] = mapped_column(String(12), index=True)  # active triggered deleted
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class PaperHolding(Base):
    __tablename__ = "paper_holdings"
    exchange: Mapped[str] = mapped_column(String(8), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(40), primary_key=True)
    qty: Mapped[int] = mapped_column(Integer)
    average_price: Mapped[Decimal] = mapped_column(Price)


class BrokerToken(Base):
    """A broker's access token, encrypted at rest (Fernet, key from the environment): written by
    ``ratchet kite login``, read by marketdata and execution. One row per broker and API key."""

    __tablename__ = "broker_tokens"
    broker: Mapped[str] = mapped_column(String(20), primary_key=True)
    api_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(40))
    token_encrypted: Mapped[str] = mapped_column(Text)
    login_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
