"""The Kite access token: encrypted at rest, its daily expiry known, its loss a halt.

``ratchet kite login`` exchanges a request token for an access token and stores it here, encrypted
with Fernet under a key from the environment (``RATCHET_KITE_TOKEN_KEY``; ``ratchet kite keygen``
makes one). marketdata and execution read it from Postgres. The token is never logged, printed or
put in an exception message.

Kite's access tokens expire every day at 06:00 IST. :class:`TokenWatch` follows the stored token in
each service: it hands a new one to the service (after a fresh login), warns ahead of the expiry,
and when the token is missing, expired or refused by Kite it halts new entries (a ``HaltRecord`` of
kind ``token_expired``) with one clear message saying what to do, and clears its halt when a
working token is stored again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from shared.store.models import AlertRecord, BrokerToken, HaltRecord

log = logging.getLogger("ratchet.kite.token")

KEY_ENV = "RATCHET_KITE_TOKEN_KEY"
IST = timezone(timedelta(hours=5, minutes=30))
EXPIRY_HOUR_IST = 6
HALT_KIND = "token_expired"
LOGIN_HINT = "run `ratchet kite login` to log in again"


class TokenKeyMissing(RuntimeError):
    """No usable encryption key in the environment."""


def new_key() -> str:
    return Fernet.generate_key().decode()


def key_from_env(environ: dict[str, str] | None = None) -> str:
    key = (environ if environ is not None else os.environ).get(KEY_ENV, "").strip()
    if not key:
        raise TokenKeyMissing(
            f"{KEY_ENV} is not set: the Kite access token is stored encrypted with this key. "
            "Create one with `ratchet kite keygen` and give the same value to every Ratchet "
            "process.")
    try:
        Fernet(key.encode())
    except ValueError as exc:
        raise TokenKeyMissing(f"{KEY_ENV} is not a valid key (32 url-safe base64 bytes; "
                              "`ratchet kite keygen` makes one)") from exc
    return key


def kite_expiry(login_at: datetime) -> datetime:
    """Kite's rule: a token works until the next 06:00 IST after the login."""
    local = login_at.astimezone(IST)
    expiry = local.replace(hour=EXPIRY_HOUR_IST, minute=0, second=0, microsecond=0)
    if expiry <= local:
        expiry += timedelta(days=1)
    return expiry.astimezone(UTC)


def fmt_ist(at: datetime) -> str:
    return at.astimezone(IST).strftime("%Y-%m-%d %H:%M IST")


@dataclass(frozen=True)
class StoredToken:
    api_key: str
    access_token: str
    user_id: str | None
    login_at: datetime
    expires_at: datetime

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return (f"StoredToken(api_key={self.api_key!r}, user_id={self.user_id!r}, "
                f"expires_at={self.expires_at.isoformat()})")


class TokenStore:
    """Encrypted access tokens in ``broker_tokens``."""

    def __init__(self, sessions: sessionmaker[Session], key: str, broker: str = "kite") -> None:
        self.sessions = sessions
        self._fernet = Fernet(key.encode())
        self.broker = broker

    def save(self, api_key: str, access_token: str, user_id: str | None,
             login_at: datetime | None = None, expires_at: datetime | None = None) -> StoredToken:
        login = login_at or datetime.now(UTC)
        expiry = expires_at or kite_expiry(login)
        sealed = self._fernet.encrypt(access_token.encode()).decode()
        values = {"broker": self.broker, "api_key": api_key, "user_id": user_id,
                  "token_encrypted": sealed, "login_at": login, "expires_at": expiry}
        stmt = insert(BrokerToken).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["broker", "api_key"],
            set_={k: stmt.excluded[k] for k in ("user_id", "token_encrypted", "login_at",
                                                "expires_at")} | {"updated_at": datetime.now(UTC)},
        )
        with self.sessions.begin() as session:
            session.execute(stmt)
        return StoredToken(api_key, access_token, user_id, login, expiry)

    def load(self, api_key: str) -> StoredToken | None:
        with self.sessions() as session:
            row = session.get(BrokerToken, (self.broker, api_key))
        if row is None:
            return None
        try:
            token = self._fernet.decrypt(row.token_encrypted.encode()).decode()
        except InvalidToken:
            log.error("the stored Kite token cannot be decrypted with this RATCHET_KITE_TOKEN_KEY "
                      "(a different key?); " + LOGIN_HINT)
            return None
        return StoredToken(api_key, token, row.user_id, row.login_at, row.expires_at)

    def delete(self, api_key: str) -> bool:
        with self.sessions.begin() as session:
            row = session.get(BrokerToken, (self.broker, api_key))
            if row is None:
                return False
            session.delete(row)
        return True


class TokenWatch:
    """Follows the stored token for one service; see the module's docstring."""

    def __init__(
        self,
        store: TokenStore,
        api_key: str,
        service: str,
        on_token: Callable[[str], None],
        *,
        warn_before: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.api_key = api_key
        self.service = service
        self.on_token = on_token
        self.warn_before = warn_before
        self.clock = clock
        self.token: str | None = None
        self.expires_at: datetime | None = None
        self.problem: str | None = None
        self._refused: str | None = None  # the token Kite refused, until another is stored
        self._warned_for: datetime | None = None
        self._cleared_once = False  # a halt of ours may be left from before a restart
        self.switch = HaltSwitch(store.sessions, HALT_KIND, service)

    @property
    def usable(self) -> bool:
        return self.token is not None and self.problem is None

    def check(self) -> None:
        """Read the store; hand over a new token, warn, halt or clear as the facts say."""
        stored = self.store.load(self.api_key)
        now = self.clock()
        if stored is None:
            self._halt("no Kite access token is stored")
            return
        if stored.access_token != self.token:
            self.token = stored.access_token
            self.expires_at = stored.expires_at
            self._warned_for = None
            self.on_token(stored.access_token)
            log.info("Kite access token loaded", extra={"user_id": stored.user_id,
                                                          "expires": fmt_ist(stored.expires_at)})
        if stored.expires_at <= now:
            self._halt(f"the Kite access token expired at {fmt_ist(stored.expires_at)}")
            return
        if self._refused is not None and self._refused == stored.access_token:
            return  # still the refused token: stay halted
        self._refused = None
        self._clear()
        if stored.expires_at - now <= self.warn_before and self._warned_for != stored.expires_at:
            self._warned_for = stored.expires_at
            message = (f"the Kite access token expires at {fmt_ist(stored.expires_at)}; "
                       f"{LOGIN_HINT} before then or new entries will halt")
            log.warning(message)
            self._alert("warning", "token_expiring", message)

    def refused(self, detail: str = "") -> None:
        """Kite answered TokenException: the token is expired or revoked."""
        self._refused = self.token
        self._halt("Kite refused the access token (expired or revoked)")

    def _halt(self, why: str) -> None:
        message = f"{why}: new entries are halted; {LOGIN_HINT}"
        first = self.problem != message
        self.problem = message
        if self.switch.on(message) or first:
            log.error(message)

    def _clear(self) -> None:
        if self.problem is None and self._cleared_once:
            return
        self.problem = None
        self._cleared_once = True
        if self.switch.off():
            log.info("Kite access token works again: token halt cleared")

    def _alert(self, level: str, code: str, message: str) -> None:
        self.switch.alert(level, code, message)


class HaltSwitch:
    """One service's halt of one kind: on (a ``HaltRecord`` and an alert, once) and off (only its
    own). Execution refuses risk-adding orders while any halt is active."""

    def __init__(self, sessions: sessionmaker[Session], kind: str, by: str) -> None:
        self.sessions = sessions
        self.kind = kind
        self.by = by

    def active(self) -> bool:
        with self.sessions() as session:
            return session.scalars(select(HaltRecord.id).where(
                HaltRecord.active.is_(True), HaltRecord.kind == self.kind,
                HaltRecord.by == self.by)).first() is not None

    def on(self, reason: str) -> bool:
        """Halt (with a critical alert) unless already halted; True when this call halted."""
        with self.sessions.begin() as session:
            active = session.scalars(select(HaltRecord.id).where(
                HaltRecord.active.is_(True), HaltRecord.kind == self.kind,
                HaltRecord.by == self.by)).first()
            if active is not None:
                return False
            session.add(HaltRecord(kind=self.kind, reason=reason, by=self.by, active=True))
            session.add(AlertRecord(level="critical", code=self.kind, message=reason,
                                    source=self.by))
        return True

    def off(self) -> bool:
        """Clear this service's halt of this kind; True when one was active."""
        with self.sessions.begin() as session:
            cleared = session.scalars(
                update(HaltRecord)
                .where(HaltRecord.active.is_(True), HaltRecord.kind == self.kind,
                       HaltRecord.by == self.by)
                .values(active=False, cleared_at=datetime.now(UTC), cleared_by=self.by)
                .returning(HaltRecord.id)
            ).all()
        return bool(cleared)

    def alert(self, level: str, code: str, message: str) -> None:
        with self.sessions.begin() as session:
            session.add(AlertRecord(level=level, code=code, message=message, source=self.by))
