"""Every RATCHET_* variable the deployment files set is a real setting of shared/config.py (a typo
would be silently ignored: Settings has extra="ignore"), and the settings load from each of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import ROOT

from shared.config import Settings, load_settings

# Read by docker compose itself, never by Ratchet (they reach the containers through env_file,
# where Settings ignores them).
COMPOSE_ONLY = {"RATCHET_IMAGE", "RATCHET_API_PUBLISH", "RATCHET_DOMAIN"}


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def is_setting(name: str) -> bool:
    assert name.startswith("RATCHET_")
    field, _, nested = name.removeprefix("RATCHET_").lower().partition("__")
    info = Settings.model_fields.get(field)
    if info is None:
        return False
    if not nested:
        return True
    section = info.annotation
    return nested in getattr(section, "model_fields", {})


def ratchet_vars(values: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in values.items() if k.startswith("RATCHET_") and k not in COMPOSE_ONLY}


def compose_environment() -> dict[str, str]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = ratchet_vars(env_file(ROOT / ".env.example"))
    fixed = compose["services"]["api"]["environment"]
    env.update({k: str(v) for k, v in fixed.items()})
    env["RATCHET_DATABASE_URL"] = "postgresql+psycopg://ratchet:pw@postgres:5432/ratchet"
    return env


def k8s_config() -> dict[str, str]:
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/base/kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    values = dict(literal.split("=", 1) for literal in generator["literals"])
    for overlay in ("paper", "live"):
        path = ROOT / f"deploy/k8s/overlays/{overlay}/kustomization.yaml"
        for gen in yaml.safe_load(path.read_text())["configMapGenerator"]:
            values.update(literal.split("=", 1) for literal in gen["literals"])
    for example in (ROOT / "deploy/k8s/overlays").glob("*/secrets/*.env.example"):
        values.update(env_file(example))
    return ratchet_vars(values)


SOURCES = {
    "compose": compose_environment,
    "systemd": lambda: env_file(ROOT / "deploy/systemd/ratchet.env.example"),
    "k8s": k8s_config,
}


@pytest.mark.parametrize("source", SOURCES)
def test_every_variable_is_a_setting(source: str) -> None:
    names = set(SOURCES[source]())
    assert names
    unknown = {n for n in names if not is_setting(n)}
    assert not unknown, f"{source} sets variables Ratchet does not read: {sorted(unknown)}"


@pytest.mark.parametrize("source", SOURCES)
def test_settings_load_from_it(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("RATCHET_")]:
        monkeypatch.delenv(key)
    values = SOURCES[source]()
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.redis_url and settings.redis_url.startswith("redis://")
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")


def test_a_typo_is_caught() -> None:
    assert is_setting("RATCHET_STRATEGY__CAPITAL_PER_POSITION")
    assert not is_setting("RATCHET_STRATEGY__CAPITAL_PER_POSITON")
    assert not is_setting("RATCHET_BROKR")
