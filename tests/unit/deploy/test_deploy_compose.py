"""docker-compose.yml: valid against the Compose Specification, and the system it describes is
the one Ratchet runs (same commands as ``ratchet.runner.service_command``, health checks on the
same signals ``ratchet run`` waits for, start order through healthy dependencies)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import types
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from deploy_support import HERE, RATCHET_SERVICES, ROOT, WORKERS, find_tool

from ratchet.runner import service_command

ALL_SERVICES = {"redis", "postgres", "migrate", *RATCHET_SERVICES}
OPS_SERVICES = {"proxy", "prometheus", "grafana"}  # profile "ops"
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((HERE / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_catches_a_broken_file(compose: dict[str, Any]) -> None:
    """The schema is strict enough to be worth having: unknown keys and wrong types fail."""
    validator = jsonschema.Draft7Validator(json.loads((HERE / "compose-spec.json").read_text()))
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["restart_policy"] = "always"
    broken["services"]["redis"]["healthcheck"]["retries"] = [10]
    assert len(list(validator.iter_errors(broken))) == 2


def test_it_names_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {n for n, s in services.items() if not s.get("profiles")} == ALL_SERVICES
    assert {n for n, s in services.items() if s.get("profiles")} == OPS_SERVICES
    for name in OPS_SERVICES:
        assert services[name]["profiles"] == ["ops"]


@pytest.mark.parametrize("name", RATCHET_SERVICES)
def test_service_command_is_the_one_definition(compose: dict[str, Any], name: str) -> None:
    assert compose["services"][name]["command"] == service_command(name)


def test_migrate_is_a_one_shot_ratchet_migrate(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["ratchet", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}


@pytest.mark.parametrize("name", RATCHET_SERVICES)
def test_ratchet_service_has_healthcheck_dependencies_and_restart(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    check = service["healthcheck"]
    assert not check.get("disable", False)
    assert check["test"][0] == "CMD" and check["test"][1] == "python"
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in check, key
    assert service["restart"] in {"unless-stopped", "always", "on-failure"}
    depends = service["depends_on"]
    assert isinstance(depends, dict), "long form, with conditions"
    assert depends["redis"] == {"condition": "service_healthy"}
    assert depends["postgres"] == {"condition": "service_healthy"}
    assert depends["migrate"] == {"condition": "service_completed_successfully"}
    for dep in depends.values():
        assert dep["condition"] in {"service_healthy", "service_completed_successfully"}


def test_strategy_starts_after_marketdata_and_execution(compose: dict[str, Any]) -> None:
    depends = compose["services"]["strategy"]["depends_on"]
    assert depends["marketdata"] == {"condition": "service_healthy"}
    assert depends["execution"] == {"condition": "service_healthy"}


def test_every_dependency_exists_and_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dep, rule in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if rule["condition"] == "service_healthy":
                assert "test" in services[dep].get("healthcheck", {}), f"{dep} has no healthcheck"


def test_servers_persist_and_have_healthchecks(compose: dict[str, Any]) -> None:
    redis_ = compose["services"]["redis"]
    assert redis_["image"].startswith("redis:7")
    command = redis_["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis_["volumes"])
    assert "redis-cli ping" in " ".join(redis_["healthcheck"]["test"])
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    named = {v.split(":")[0] for s in (redis_, postgres) for v in s["volumes"]}
    assert named <= set(compose["volumes"])
    for server in (redis_, postgres):
        assert server["restart"] == "unless-stopped"


def test_ratchet_services_share_one_image_and_its_settings(compose: dict[str, Any]) -> None:
    ratchet = [compose["services"][n] for n in (*RATCHET_SERVICES, "migrate")]
    assert len({s["image"] for s in ratchet}) == 1
    for service in ratchet:
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        assert service["env_file"] == [{"path": ".env", "required": True}]
        env = service["environment"]
        assert env["RATCHET_REDIS_URL"] == "redis://redis:6379/0"
        assert env["RATCHET_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["RATCHET_DATABASE_URL"].endswith("@postgres:5432/${POSTGRES_DB:-ratchet}")
        assert env["RATCHET_API_HOST"] == "0.0.0.0"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]


def test_only_the_api_publishes_a_port_on_loopback(compose: dict[str, Any]) -> None:
    services = compose["services"]
    published = {n for n, s in services.items() if s.get("ports") and not s.get("profiles")}
    assert published == {"api"}
    assert env_example()["RATCHET_API_PUBLISH"].startswith("127.0.0.1:")


def test_every_variable_the_compose_file_uses_is_in_env_example() -> None:
    used = set(VAR.findall((ROOT / "docker-compose.yml").read_text()))
    assert used, "the compose file reads its settings from .env"
    missing = used - set(env_example())
    assert not missing, f"add to .env.example: {sorted(missing)}"


class _FakeRedis:
    keys: set[str] = set()
    asked: list[str] = []

    @classmethod
    def from_url(cls, url: str, **_: object) -> _FakeRedis:
        assert url == "redis://redis:6379/0"
        return cls()

    def exists(self, key: str) -> int:
        self.asked.append(key)
        return int(key in self.keys)


def _run_one_liner(code: str) -> int:
    try:
        exec(compile(code, "<healthcheck>", "exec"), {})  # noqa: S102 - the compose one-liner
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


@pytest.mark.parametrize("name", WORKERS)
def test_worker_healthcheck_is_the_ready_key_of_that_service(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    test = compose["services"][name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    monkeypatch.setitem(sys.modules, "redis", types.SimpleNamespace(Redis=_FakeRedis))
    monkeypatch.setenv("RATCHET_REDIS_URL", "redis://redis:6379/0")
    monkeypatch.delenv("RATCHET_REPLICA", raising=False)
    _FakeRedis.asked = []
    _FakeRedis.keys = set()
    assert _run_one_liner(test[3]) == 1
    _FakeRedis.keys = {f"ratchet.ready.{name}.0"}
    assert _run_one_liner(test[3]) == 0
    assert _FakeRedis.asked == [f"ratchet.ready.{name}.0"] * 2
    monkeypatch.setenv("RATCHET_REPLICA", "2")
    assert _run_one_liner(test[3]) == 1  # replica 2 has its own key


def test_api_healthcheck_asks_healthz(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    test = compose["services"]["api"]["healthcheck"]["test"]
    asked: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> Any:
        asked.append(url)
        return types.SimpleNamespace(status=200)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    assert _run_one_liner(test[3]) == 0
    assert asked == ["http://127.0.0.1:8000/healthz"]

    def refused(url: str, timeout: float) -> Any:
        raise ConnectionRefusedError(url)

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    with pytest.raises(ConnectionRefusedError):  # a traceback: python exits 1, unhealthy
        _run_one_liner(test[3])


def _compose_cli() -> list[str] | None:
    standalone = find_tool("docker-compose")
    if standalone:
        version = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True)
        if version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2"):
            return [standalone]
    docker = shutil.which("docker")
    if docker:
        plugin = subprocess.run([docker, "compose", "version"], capture_output=True)
        if plugin.returncode == 0:
            return [docker, "compose"]
    return None


def test_docker_compose_config_accepts_it(tmp_path: Path) -> None:
    """The real Compose v2, where one is installed (it needs no engine for `config`)."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Compose v2 CLI here (docker compose plugin or docker-compose v2)")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = subprocess.run([*cli, "--profile", "ops", "config", "--quiet"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
