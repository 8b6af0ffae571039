"""Input and output schemas of the mutating endpoints (frozen, ``extra="forbid"``: a body with
a field we do not know is refused, so nothing can be mass-assigned)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.auth import Role


class In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Reason = Field(min_length=1, max_length=500)


# --- strategy, halts, flatten, exits ----------------------------------------------------------


class StrategyStatus(Out):
    state: Literal["running", "stopped"] = Field(
        description="as last commanded through the api (running until a stop is sent)"
    )
    changed_at: datetime | None
    changed_by: str | None
    halted: bool = Field(description="an active halt blocks new risk")


class HaltIn(In):
    reason: str = Reason
    cancel_entries: bool = Field(True, description="also cancel open entry orders")


class HaltOut(Out):
    id: int
    kind: str
    reason: str
    by: str
    active: bool
    created_at: datetime
    cleared_at: datetime | None
    cleared_by: str | None


class ResumeOut(Out):
    cleared: list[HaltOut]


class FlattenIn(In):
    confirm: Literal[True] = Field(description="must be true: exits every open leg")


class Accepted(Out):
    status: Literal["accepted"] = "accepted"
    message_id: str = Field(description="id of the control message sent")


class ExitOut(Out):
    status: Literal["accepted"] = "accepted"
    message_id: str
    trade_id: str
    ladder_id: str
    leg: int


# --- keys and users ---------------------------------------------------------------------------


class KeyIn(In):
    name: str = Field(min_length=1, max_length=80)
    role: Role
    expires_at: AwareDatetime | None = None


class KeyOut(Out):
    id: int
    name: str
    prefix: str = Field(description="first characters of the secret, to tell keys apart")
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    secret: str = Field(description="shown once: store it now")


class UserIn(In):
    username: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=8, max_length=200)
    role: Role


class UserOut(Out):
    id: int
    username: str
    role: Role
    created_at: datetime
    disabled: bool


# --- login ------------------------------------------------------------------------------------


class LoginIn(In):
    username: str = Field(min_length=1, max_length=80)
    password: str = Field(min_length=1, max_length=200)


class SessionOut(Out):
    username: str
    role: Role
    csrf_token: str = Field(description="send it back in X-CSRF-Token on every change")
    expires_at: datetime


class Me(Out):
    kind: Literal["key", "user"]
    name: str
    role: Role
    via_cookie: bool
    csrf_token: str | None = Field(
        None, description="a cookie session's CSRF token (so a reloaded page can send changes)"
    )


# --- audit and settings -----------------------------------------------------------------------


class AuditOut(Out):
    id: int
    ts: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class SettingsChange(Out):
    id: int
    section: str
    values: dict[str, Any]
    changed_by: str
    changed_at: datetime
