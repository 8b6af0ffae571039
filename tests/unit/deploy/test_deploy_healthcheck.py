"""deploy/healthcheck.py, the image's HEALTHCHECK: it finds the service it guards and asks the
same signal ``ratchet run`` waits for (api /healthz; a worker's Redis ready key)."""

from __future__ import annotations

import types
import urllib.request
from types import ModuleType
from typing import Any

import pytest

from ratchet.runner import service_command


@pytest.mark.parametrize("name", ["marketdata", "strategy", "execution", "api"])
def test_it_recognises_each_service_command(healthcheck_module: ModuleType, name: str) -> None:
    find = healthcheck_module.service_from_cmdline
    assert find(service_command(name)) == name
    # As the kernel shows PID 1 of the image: the venv's python running the ratchet script.
    venv = "/opt/ratchet/.venv/bin"
    assert find([f"{venv}/python", f"{venv}/ratchet", *service_command(name)[1:]]) == name


@pytest.mark.parametrize(
    "argv",
    [["ratchet", "migrate"], ["python", "/opt/ratchet/healthcheck.py"], ["sh", "-c", "service x"],
     ["ratchet", "service"], []],
)
def test_other_commands_are_not_services(healthcheck_module: ModuleType, argv: list[str]) -> None:
    assert healthcheck_module.service_from_cmdline(argv) is None


class FakeRedis:
    present: set[str] = set()
    down = False

    def __init__(self) -> None:
        self.closed = False

    @classmethod
    def from_url(cls, url: str, **_: Any) -> FakeRedis:
        return cls()

    def exists(self, key: str) -> int:
        if self.down:
            raise ConnectionError("redis is away")
        return int(key in self.present)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> type[FakeRedis]:
    module = types.SimpleNamespace(Redis=FakeRedis, RedisError=ConnectionError)
    monkeypatch.setitem(__import__("sys").modules, "redis", module)
    monkeypatch.setenv("RATCHET_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.delenv("RATCHET_REPLICA", raising=False)
    FakeRedis.present = set()
    FakeRedis.down = False
    return FakeRedis


@pytest.mark.parametrize("name", ["marketdata", "strategy", "execution"])
def test_worker_is_healthy_while_its_ready_key_lives(
    healthcheck_module: ModuleType, fake_redis: type[FakeRedis], name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert healthcheck_module.main(["healthcheck.py", name]) == 1
    fake_redis.present = {f"ratchet.ready.{name}.0"}
    assert healthcheck_module.main(["healthcheck.py", name]) == 0
    monkeypatch.setenv("RATCHET_REPLICA", "1")
    assert healthcheck_module.main(["healthcheck.py", name]) == 1


def test_api_is_healthy_when_healthz_answers(
    healthcheck_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    class Response:
        status = 200

        def __enter__(self) -> Response:
            return self

        def __exit__(self, *_: object) -> None:
            return None

    def answer(url: str, timeout: float) -> Response:
        asked.append(url)
        return Response()

    monkeypatch.setenv("RATCHET_API_PORT", "8123")
    monkeypatch.setattr(urllib.request, "urlopen", answer)
    assert healthcheck_module.main(["healthcheck.py", "api"]) == 0
    assert asked == ["http://127.0.0.1:8123/healthz"]

    def refuse(url: str, timeout: float) -> Response:
        raise ConnectionRefusedError(url)

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert healthcheck_module.main(["healthcheck.py", "api"]) == 1


def test_a_migration_container_counts_as_healthy(
    healthcheck_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(healthcheck_module, "running_service", lambda: None)
    assert healthcheck_module.main(["healthcheck.py"]) == 0


def test_without_an_argument_it_guards_the_service_it_finds(
    healthcheck_module: ModuleType, fake_redis: type[FakeRedis], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(healthcheck_module, "running_service", lambda: "execution")
    assert healthcheck_module.main(["healthcheck.py"]) == 1
    fake_redis.present = {"ratchet.ready.execution.0"}
    assert healthcheck_module.main(["healthcheck.py"]) == 0


def test_liveness_does_not_blame_a_worker_for_redis_being_away(
    healthcheck_module: ModuleType, fake_redis: type[FakeRedis]
) -> None:
    live = ["healthcheck.py", "strategy", "--liveness"]
    assert healthcheck_module.main(live) == 1  # Redis answers, the key is gone: restart it
    fake_redis.present = {"ratchet.ready.strategy.0"}
    assert healthcheck_module.main(live) == 0
    fake_redis.down = True
    assert healthcheck_module.main(live) == 0  # nothing to judge by: leave it running
    assert healthcheck_module.main(["healthcheck.py", "strategy"]) == 1  # but not ready
