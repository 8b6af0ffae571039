"""One settings object for every Ratchet process (pydantic-settings, env prefix ``RATCHET_``).

Sections map to ``RATCHET_<SECTION>__<NAME>`` (e.g. ``RATCHET_STRATEGY__CAPITAL_PER_POSITION``);
runtime settings are top level (``RATCHET_API_PORT``). Numbers are defaults of DESIGN.md §10.
Nothing here is built at import: call :func:`load_settings` in a composition root.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Percent = Annotated[Decimal, Field(gt=0, le=50)]
PositiveMoney = Annotated[Decimal, Field(gt=0)]


class FeedKind(StrEnum):
    SIM = "sim"
    KITE = "kite"
    KITE_SIM = "kite-sim"
    REPLAY = "replay"


class BrokerKind(StrEnum):
    PAPER = "paper"
    KITE = "kite"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StrategySettings(_Section):
    """The momentum strategy's parameters (editable at run time)."""

    name: str = "momentum"
    timeframe_minutes: int = Field(15, gt=0, le=375)
    capital_per_position: PositiveMoney = Decimal("3000")
    ema_periods: tuple[int, int, int, int] = (9, 21, 50, 200)
    p1_stop_pct: Percent = Decimal("2.5")
    p1_target_pct: Percent = Decimal("5")
    p2_trigger_pct: Percent = Decimal("0.25")
    p2_stop_pct: Percent = Decimal("2.5")
    p3_trigger_pct: Percent = Decimal("1.0")
    p3_stop_pct: Percent = Decimal("5")
    trail_min_step_pct: Percent = Decimal("0.1")
    entry_cutoff_minutes: int = Field(30, ge=0, le=375)
    sweep_seconds: int = Field(60, gt=0)

    @field_validator("ema_periods")
    @classmethod
    def _ascending(cls, value: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        if any(p <= 0 for p in value) or list(value) != sorted(set(value)):
            raise ValueError("ema_periods must be four distinct ascending positive integers")
        return value


class RiskSettings(_Section):
    max_open_legs: int = Field(90, gt=0)
    max_capital: PositiveMoney = Decimal("240000")
    max_order_value: PositiveMoney = Decimal("10000")
    max_qty_per_order: int = Field(5000, gt=0)
    daily_loss_limit: PositiveMoney = Decimal("5000")
    max_active_gtts: int = Field(250, gt=0)


class ExecutionSettings(_Section):
    gtt_limit_buffer_pct: Percent = Decimal("0.5")
    gtt_child_timeout_s: float = Field(30, ge=0)
    unknown_settle_s: float = Field(10, ge=0)
    orders_per_second: int = Field(10, gt=0)
    orders_per_minute: int = Field(400, gt=0)
    orders_per_day: int = Field(5000, gt=0)
    # broker calls of one run sent at once: a read's orders do not queue behind each other's
    # round trips (Kite's ~100 ms each); the order budget still paces them
    broker_concurrency: int = Field(4, ge=1, le=32)
    algo_id: str | None = None
    market_protection_pct: Percent = Decimal("2")
    intent_resend_s: float = Field(15, gt=0)
    reconcile_seconds: float = Field(60, gt=0)
    # Postgres ends an execution transaction idle this long (a hung replica), and with it the
    # halts lock it held, so a kill switch waits behind a hung replica at most this long; far
    # above the longest broker call made inside one (Kite's timeout is 7 s).
    stuck_transaction_s: float = Field(60, gt=0)


class MarketdataSettings(_Section):
    candle_grace_s: float = Field(2, ge=0)
    stale_feed_s: float = Field(30, gt=0)
    history_bars: int = Field(260, ge=0)
    ticks_maxlen: int = Field(200_000, gt=0)


class ApiSettings(_Section):
    rate_limit_per_minute: int = Field(600, gt=0)


class Settings(BaseSettings):
    """Every setting of one Ratchet deployment."""

    model_config = SettingsConfigDict(
        env_prefix="RATCHET_", env_nested_delimiter="__", extra="ignore", frozen=False
    )

    home: Path = Path(".ratchet")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    feed: FeedKind = FeedKind.SIM
    broker: BrokerKind = BrokerKind.PAPER
    redis_url: str | None = None
    database_url: str | None = None
    kite_root: str = "https://api.kite.trade"
    kite_ws_root: str = "wss://ws.kite.trade"
    kite_api_key: str = ""
    kite_api_secret: str = ""
    kite_symbols: str = ""  # "NSE:SBIN,NSE:INFY": what the kite feed follows (empty: every equity)
    kite_historical_per_s: float = Field(3, gt=0, le=3)  # Kite's historical rate limit
    sim_seed: int = 1
    sim_speed: float = Field(60, gt=0)
    sim_symbols: int = Field(50, gt=0, le=2000)
    sim_tick_interval_s: float = Field(1.0, gt=0)
    replay_data: Path | None = None  # CSV file or folder for RATCHET_FEED=replay (else ohlcv)
    replay_lockstep: bool = True  # each step waits until every consumer has caught up (§9)
    replay_speed: float = Field(60, gt=0)  # without lock-step: N x the bars' own pace
    tick_shards: int = Field(1, gt=0, le=64)
    dead_letter_after: int = Field(5, gt=0)
    log_level: str = "INFO"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535)  # Prometheus /metrics of a worker; 0 = off
    replica: str = "0"  # this process's replica id (control is a broadcast: a group per replica)

    strategy: StrategySettings = StrategySettings()
    risk: RiskSettings = RiskSettings()
    execution: ExecutionSettings = ExecutionSettings()
    marketdata: MarketdataSettings = MarketdataSettings()
    api: ApiSettings = ApiSettings()

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise RuntimeError(
                "RATCHET_REDIS_URL is not set (ratchet run sets it for its services)"
            )
        return self.redis_url

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "RATCHET_DATABASE_URL is not set (ratchet run sets it for its services)"
            )
        return self.database_url


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and explicit overrides, which win)."""
    return Settings(**overrides)  # type: ignore[arg-type]
