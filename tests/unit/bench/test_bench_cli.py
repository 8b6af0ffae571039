"""`python -m bench`: its help, its refusal of unknown names, and every listed benchmark loads."""

from __future__ import annotations

import importlib

import pytest

from bench.__main__ import MODULES, main


def test_help_lists_every_benchmark(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODULES)


def test_an_unknown_name_is_an_error_before_anything_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["ingest", "nope"])
    assert done.value.code == 2
    captured = capsys.readouterr()
    assert "no benchmark named nope" in captured.err and "[bench] ingest" not in captured.err


@pytest.mark.parametrize("name", MODULES)
def test_every_listed_benchmark_has_a_run(name: str) -> None:
    assert callable(importlib.import_module(f"bench.{name}").run)
