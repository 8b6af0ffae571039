"""One simulator process per test module (state of one module never leaks into another)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kite_sim_helpers import SimProcess
from kiteconnect import KiteConnect


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    proc = SimProcess(tmp_path_factory.mktemp("kite-sim") / "state")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def kite(sim: SimProcess) -> KiteConnect:
    return sim.kite()
