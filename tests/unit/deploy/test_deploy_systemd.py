"""deploy/systemd: one unit per service whose ExecStart is ``service_command(NAME)`` run from the
venv at /opt/ratchet/.venv, a one-shot migration they all require, restart on failure, the
environment from /etc/ratchet/ratchet.env, hardening; ``systemd-analyze verify`` accepts them."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from deploy_support import RATCHET_SERVICES, ROOT

from ratchet.runner import service_command

UNITS = ROOT / "deploy" / "systemd"
VENV_BIN = "/opt/ratchet/.venv/bin"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[current][key.strip()].append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{section}.{key}: {values}"
    return values[0]


def words(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> set[str]:
    return {w for value in unit[section][key] for w in value.split()}


def test_there_is_a_unit_for_each_service_the_migration_and_a_target() -> None:
    expected = {f"ratchet-{n}.service" for n in (*RATCHET_SERVICES, "migrate")} | {"ratchet.target"}
    assert {p.name for p in UNITS.iterdir() if p.suffix in {".service", ".target"}} == expected


@pytest.mark.parametrize("name", RATCHET_SERVICES)
def test_exec_start_is_the_one_service_command(name: str) -> None:
    unit = parse_unit(UNITS / f"ratchet-{name}.service")
    argv = shlex.split(one(unit, "Service", "ExecStart"))
    assert argv[0] == f"{VENV_BIN}/{service_command(name)[0]}"
    assert [Path(argv[0]).name, *argv[1:]] == service_command(name)


@pytest.mark.parametrize("name", RATCHET_SERVICES)
def test_service_unit_restarts_requires_migration_and_reads_the_env_file(name: str) -> None:
    unit = parse_unit(UNITS / f"ratchet-{name}.service")
    service = unit["Service"]
    assert one(unit, "Service", "Type") == "simple"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "EnvironmentFile") == "/etc/ratchet/ratchet.env"
    assert one(unit, "Service", "User") == "ratchet"
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    assert "ratchet-migrate.service" in words(unit, "Unit", "Requires")
    assert "ratchet-migrate.service" in words(unit, "Unit", "After")
    assert one(unit, "Unit", "PartOf") == "ratchet.target"
    assert one(unit, "Install", "WantedBy") == "ratchet.target"
    assert "RATCHET_HOME=/var/lib/ratchet" in words(unit, "Service", "Environment")
    assert service["StateDirectory"] == ["ratchet"]


def test_strategy_starts_after_marketdata_and_execution() -> None:
    unit = parse_unit(UNITS / "ratchet-strategy.service")
    first = {"ratchet-marketdata.service", "ratchet-execution.service"}
    assert first <= words(unit, "Unit", "After")


def test_migration_is_a_one_shot_ratchet_migrate() -> None:
    unit = parse_unit(UNITS / "ratchet-migrate.service")
    assert one(unit, "Service", "Type") == "oneshot"
    assert one(unit, "Service", "RemainAfterExit") == "yes"
    assert shlex.split(one(unit, "Service", "ExecStart")) == [f"{VENV_BIN}/ratchet", "migrate"]
    assert one(unit, "Service", "EnvironmentFile") == "/etc/ratchet/ratchet.env"


def test_target_wants_everything() -> None:
    target = parse_unit(UNITS / "ratchet.target")
    wanted = words(target, "Unit", "Wants")
    assert wanted == {f"ratchet-{n}.service" for n in (*RATCHET_SERVICES, "migrate")}
    assert one(target, "Install", "WantedBy") == "multi-user.target"


HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes",
    "RestrictNamespaces": "yes", "LockPersonality": "yes", "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service", "UMask": "0077",
}


@pytest.mark.parametrize("name", [*RATCHET_SERVICES, "migrate"])
def test_units_are_hardened(name: str) -> None:
    unit = parse_unit(UNITS / f"ratchet-{name}.service")
    for key, value in HARDENING.items():
        assert one(unit, "Service", key) == value, key
    assert words(unit, "Service", "RestrictAddressFamilies") == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_env_example_names_the_servers() -> None:
    text = (UNITS / "ratchet.env.example").read_text()
    assert "RATCHET_REDIS_URL=redis://" in text
    assert "RATCHET_DATABASE_URL=postgresql+psycopg://" in text


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    """In a scratch root holding this machine's system units and a stand-in ratchet command."""
    analyze = shutil.which("systemd-analyze")
    system_units = Path("/usr/lib/systemd/system")
    if analyze is None or not (system_units / "sysinit.target").exists():
        pytest.skip("systemd-analyze and systemd's own units are not installed here")
    shutil.copytree(system_units, tmp_path / "usr/lib/systemd/system", symlinks=True)
    venv = tmp_path / VENV_BIN.lstrip("/")
    venv.mkdir(parents=True)
    (venv / "ratchet").write_text("#!/bin/sh\n")
    (venv / "ratchet").chmod(0o755)
    etc = tmp_path / "etc/systemd/system"
    etc.mkdir(parents=True)
    names = sorted(p.name for p in UNITS.iterdir() if p.suffix in {".service", ".target"})
    for name in names:
        shutil.copy(UNITS / name, etc / name)
    result = subprocess.run([analyze, "verify", f"--root={tmp_path}", "--man=no", *names],
                            cwd=etc, capture_output=True, text=True, timeout=60)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, output
