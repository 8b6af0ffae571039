"""API keys and users: creation, verification, revocation (DESIGN.md §7).

API keys are random 256-bit secrets (``secrets.token_urlsafe(32)``). Only their SHA-256 (hex) is
stored, with the first characters of the secret as a ``prefix`` so a person can tell keys apart in
a listing. SHA-256 is fast enough to check on every request; the secret has 256 bits of entropy,
so a slow hash adds nothing. Passwords of people are hashed with argon2id (``argon2-cffi``).

Roles are ordered: viewer < trader < admin. These functions are used by the api, by the
``ratchet keys``/``ratchet users`` commands and by ``ratchet run``'s bootstrap admin key; they take
an open :class:`~sqlalchemy.orm.Session` and leave committing to the caller, except where noted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.store.models import ApiKey, User

PREFIX_LEN = 8


class Role(StrEnum):
    VIEWER = "viewer"
    TRADER = "trader"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """True when this role may do what ``needed`` may (roles are cumulative)."""
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.TRADER: 1, Role.ADMIN: 2}


def hash_secret(secret: str) -> str:
    """The stored form of an API key secret: SHA-256, 64 hex characters."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


# --- API keys ----------------------------------------------------------------------------------


def create_api_key(
    session: Session, name: str, role: Role | str, expires_at: datetime | None = None
) -> str:
    """Create a key and return its secret: the only time the secret is ever seen.

    The row is added and flushed (so ``list_api_keys`` in the same session sees it); the caller
    commits. ``expires_at`` must be timezone-aware when given.
    """
    role = Role(role)
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("expires_at must be timezone-aware")
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            name=name,
            key_hash=hash_secret(secret),
            prefix=secret[:PREFIX_LEN],
            role=role.value,
            expires_at=expires_at,
        )
    )
    session.flush()
    return secret


def list_api_keys(session: Session, *, include_revoked: bool = True) -> list[ApiKey]:
    """Every key, oldest first (hashes included in the rows: never show them to a person)."""
    query = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_api_key(session: Session, key_id: int) -> ApiKey | None:
    """Revoke a key by id (idempotent: a revoked key keeps its first revocation time).

    Returns the row, or None when no key has that id. The caller commits.
    """
    key = session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = _now()
        session.flush()
    return key


def key_is_usable(key: ApiKey, now: datetime | None = None) -> bool:
    """Not revoked and not expired at ``now``."""
    now = now or _now()
    if key.revoked_at is not None:
        return False
    return key.expires_at is None or key.expires_at > now


def verify_api_key(session: Session, secret: str) -> ApiKey | None:
    """The key row for a presented secret, or None when unknown, revoked or expired."""
    if not secret or len(secret) > 200:
        return None
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_secret(secret))).first()
    if key is None or not key_is_usable(key):
        return None
    return key


# --- users -------------------------------------------------------------------------------------


def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def create_user(session: Session, username: str, password: str, role: Role | str) -> User:
    """Add a user with an argon2id password hash; flushed, the caller commits.

    Raises ValueError on an empty username or a password shorter than 8 characters.
    """
    role = Role(role)
    if not username or len(username) > 80:
        raise ValueError("username must be 1 to 80 characters")
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    user = User(username=username, password_hash=hash_password(password), role=role.value)
    session.add(user)
    session.flush()
    return user


def verify_password(session: Session, username: str, password: str) -> User | None:
    """The user when the username exists, is enabled and the password matches; else None.

    An unknown username still costs one argon2 verification, so timing does not tell whether a
    username exists. A hash made with older parameters is upgraded in place (caller commits).
    """
    user = session.scalars(select(User).where(User.username == username)).first()
    hasher = _hasher()
    if user is None:
        _burn(hasher, password)
        return None
    try:
        hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if user.disabled:
        return None
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    return user


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, made on first use: the cost paid for unknown usernames."""
    return _hasher().hash(secrets.token_urlsafe(16))


def _burn(hasher: PasswordHasher, password: str) -> None:
    with contextlib.suppress(VerificationError, InvalidHashError):
        hasher.verify(_dummy_hash(), password)


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
