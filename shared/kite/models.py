"""Request bodies (pydantic, as Kite's form fields arrive) and the book's records.

Prices are int paise inside the simulator; converting a rupee string that is not a whole number of
paise, or not on the instrument's tick, is an ``InputException`` as Kite answers it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import KiteError, input_error

TAG_RE = re.compile(r"^[A-Za-z0-9]{1,20}$")


def to_paise(value: str | float | Decimal | None, what: str = "price") -> int:
    if value is None or value == "":
        return 0
    try:
        dec = Decimal(str(value)) * 100
    except InvalidOperation as exc:
        raise input_error(f"Invalid `{what}`.") from exc
    if dec != dec.to_integral_value() or dec < 0:
        raise input_error(f"Invalid `{what}`.")
    return int(dec)


def rupees(paise: int | float) -> float:
    return round(paise / 100, 4)


class _Form(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)


class PlaceOrderForm(_Form):
    exchange: str
    tradingsymbol: str
    transaction_type: Literal["BUY", "SELL"]
    quantity: int = Field(gt=0)
    product: Literal["CNC", "MIS", "NRML"]
    order_type: Literal["MARKET", "LIMIT", "SL", "SL-M"]
    price: str | None = None
    trigger_price: str | None = None
    validity: Literal["DAY", "IOC"] = "DAY"
    disclosed_quantity: int = Field(default=0, ge=0)
    tag: str | None = None
    market_protection: float | None = None
    algo_id: str | None = None

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None) -> str | None:
        if value is not None and not TAG_RE.match(value):
            raise ValueError("tag must be alphanumeric, at most 20 characters")
        return value


class ModifyOrderForm(_Form):
    quantity: int | None = Field(default=None, gt=0)
    price: str | None = None
    order_type: Literal["MARKET", "LIMIT", "SL", "SL-M"] | None = None
    trigger_price: str | None = None
    validity: Literal["DAY", "IOC"] | None = None
    disclosed_quantity: int | None = Field(default=None, ge=0)
    market_protection: float | None = None


class GttCondition(_Form):
    exchange: str
    tradingsymbol: str
    trigger_values: list[float] = Field(min_length=1, max_length=2)
    last_price: float
    instrument_token: int | None = None


class GttLeg(_Form):
    exchange: str
    tradingsymbol: str
    transaction_type: Literal["BUY", "SELL"]
    quantity: int = Field(gt=0)
    order_type: Literal["LIMIT"]
    product: Literal["CNC", "MIS", "NRML"]
    price: float = Field(gt=0)


class GttForm(_Form):
    type: Literal["single", "two-leg"]
    condition: GttCondition
    orders: list[GttLeg] = Field(min_length=1, max_length=2)


def parse_form(model: type[_Form], data: dict[str, Any]) -> Any:
    """Validate a form; the first problem becomes Kite's ``InputException``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "input"
        message = "Invalid `tag`." if name == "tag" else f"Invalid `{name}`: {err['msg']}."
        raise KiteError("InputException", message, 400) from exc


@dataclass(slots=True)
class Order:
    """One order in the book; ``history`` holds Kite's snapshot for every state it passed."""

    order_id: str
    day: str
    exchange: str
    tradingsymbol: str
    instrument_token: int
    transaction_type: str
    order_type: str
    product: str
    validity: str
    quantity: int
    price: int
    trigger_price: int
    disclosed_quantity: int
    market_protection: float
    tag: str | None
    order_ms: int
    placed_by: str
    variety: str = "regular"
    status: str = "PUT ORDER REQ RECEIVED"
    status_message: str | None = None
    status_message_raw: str | None = None
    exchange_order_id: str | None = None
    exchange_ms: int | None = None
    exchange_update_ms: int | None = None
    filled_quantity: int = 0
    filled_value: int = 0
    cancelled_quantity: int = 0
    modified: bool = False
    gtt_id: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending_quantity(self) -> int:
        if self.status in ("COMPLETE", "CANCELLED", "REJECTED"):
            return 0
        return self.quantity - self.filled_quantity

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Trade:
    trade_id: str
    order_id: str
    day: str
    exchange: str
    tradingsymbol: str
    instrument_token: int
    product: str
    transaction_type: str
    quantity: int
    price: int
    exchange_order_id: str
    order_ms: int
    fill_ms: int

    def to_kite(self, fmt: Any) -> dict[str, Any]:
        return {"trade_id": self.trade_id, "order_id": self.order_id,
                "exchange": self.exchange, "tradingsymbol": self.tradingsymbol,
                "instrument_token": self.instrument_token, "product": self.product,
                "average_price": rupees(self.price), "quantity": self.quantity,
                "exchange_order_id": self.exchange_order_id,
                "transaction_type": self.transaction_type,
                "fill_timestamp": fmt(self.fill_ms), "order_timestamp": fmt(self.order_ms),
                "exchange_timestamp": fmt(self.fill_ms)}
