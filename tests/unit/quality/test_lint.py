"""The code passes the project's own linters: `make lint` is part of every test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [
    ["ruff", "check", "--no-cache", "."],
    ["mypy", "--cache-dir", "/dev/null", "shared", "services", "ratchet", "backtest", "bench"],
], ids=["ruff", "mypy"])
def test_the_linters_find_nothing(command: list[str]) -> None:
    run = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
