"""Property-based run of the whole OpenAPI document (schemathesis), in-process over ASGI, as an
admin and as a viewer: no 5xx, every status, content type and body as documented."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session

from services.api.app import create_app
from shared.auth import Role, create_api_key, hash_secret
from shared.config import load_settings
from shared.store.models import ApiKey, Base

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 20  # per operation and role: about half a minute in all (the cap is two)
KEYS: dict[str, str] = {}
APPS: list[FastAPI] = []


def answered(status_class: str) -> dict[str, float]:
    """Requests the fuzzed app answered with a status of ``status_class`` ("2"), by route."""
    counts: dict[str, float] = {}
    for metric in APPS[0].state.metrics.requests.collect():
        for sample in metric.samples:
            labels = sample.labels
            if sample.name.endswith("_total") and labels["status"].startswith(status_class):
                key = f"{labels['method']} {labels['route']}"
                counts[key] = counts.get(key, 0) + sample.value
    return counts


@pytest.fixture(scope="module")
def api_schema(redis_url: str, database_url: str, engine: Engine) -> Iterator[BaseSchema]:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    with Session(engine) as session, session.begin():
        for role in (Role.ADMIN, Role.VIEWER):
            secret = create_api_key(session, f"fuzz-{role.value}", role)
            # Far from the ids the fuzzer tries first (1, 2, 2**31-1), so DELETE /keys/{id}
            # does not revoke the key the run itself uses.
            session.execute(update(ApiKey).where(ApiKey.key_hash == hash_secret(secret))
                            .values(id=1_500_000_000 + len(KEYS)))
            KEYS[role.value] = secret
    settings_ = load_settings(redis_url=redis_url, database_url=database_url,
                              api={"rate_limit_per_minute": 1_000_000})
    app = create_app(settings_, engine=engine, redis=client)
    APPS.append(app)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    client.close()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz_every_operation(api_schema: BaseSchema, key: str) -> list[str]:
    """Run each operation's generated cases; return the labels of the operations run."""
    labels = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": key}, checks=CHECKS)

        try:
            run()
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc
        labels.append(operation.label)
    return labels


def test_api_as_admin(api_schema: BaseSchema) -> None:
    assert len(fuzz_every_operation(api_schema, KEYS["admin"])) >= 35
    # The run reached the handlers, not only the validation layer.
    ok = answered("2")
    assert len(ok) >= 25, ok


def test_api_as_viewer(api_schema: BaseSchema) -> None:
    assert len(fuzz_every_operation(api_schema, KEYS["viewer"])) >= 35
