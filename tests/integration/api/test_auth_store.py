"""shared.auth against real Postgres: keys (create, list, verify, expire, revoke) and users."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shared.auth import (
    PREFIX_LEN,
    Role,
    create_api_key,
    create_user,
    hash_secret,
    list_api_keys,
    revoke_api_key,
    verify_api_key,
    verify_password,
)


def test_api_key_lifecycle(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        secret = create_api_key(session, "ops", Role.TRADER)
        other = create_api_key(session, "old", "viewer", datetime.now(UTC) - timedelta(days=1))
    assert len(secret) >= 43 and secret != other  # 32 random bytes, URL-safe base64
    with sessions() as session:
        keys = list_api_keys(session)
        assert [k.name for k in keys] == ["ops", "old"]
        ops = keys[0]
        assert ops.key_hash == hash_secret(secret) and secret not in ops.key_hash
        assert ops.prefix == secret[:PREFIX_LEN] and ops.role == "trader"
        assert verify_api_key(session, secret).id == ops.id
        assert verify_api_key(session, other) is None  # expired
        assert verify_api_key(session, "") is None
        assert verify_api_key(session, secret[:-1]) is None
    with sessions.begin() as session:
        revoked = revoke_api_key(session, ops.id)
        assert revoked is not None and revoked.revoked_at is not None
        assert revoke_api_key(session, 9999) is None
    with sessions() as session:
        assert verify_api_key(session, secret) is None
        assert list_api_keys(session, include_revoked=False) == [
            k for k in list_api_keys(session) if k.name == "old"
        ]


def test_bad_role_and_naive_expiry_are_refused(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        with pytest.raises(ValueError):
            create_api_key(session, "x", "superuser")
        with pytest.raises(ValueError):
            create_api_key(session, "x", Role.ADMIN, datetime(2030, 1, 1))


def test_users(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        user = create_user(session, "asha", "correct horse", Role.ADMIN)
        assert user.password_hash.startswith("$argon2id$")
    with sessions() as session:
        assert verify_password(session, "asha", "correct horse").role == "admin"
        assert verify_password(session, "asha", "wrong horse") is None
        assert verify_password(session, "nobody", "correct horse") is None
        with pytest.raises(ValueError):
            create_user(session, "bob", "short", Role.VIEWER)
