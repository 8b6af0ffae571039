"""Fixtures for the deployment files' tests: pure reads of files in the repository, no servers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from deploy_support import ROOT


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def healthcheck_module() -> ModuleType:
    """deploy/healthcheck.py, loaded from its path (it is copied into the image, not a package)."""
    path = ROOT / "deploy" / "healthcheck.py"
    spec = importlib.util.spec_from_file_location("ratchet_healthcheck", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
