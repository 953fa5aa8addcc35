"""Helpers shared by the test files (one copy, imported by name from ``tests.conftest``)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from offload.ops import OpCall, golden_result

# The tests' placement decisions must not depend on what this machine learnt before (or teach it).
os.environ.setdefault("OFFLOAD_COSTS", "none")


def golden(call: OpCall, batch: Any) -> list[Any]:
    """The golden model's result for every record of a normalised batch."""
    return [golden_result(call, batch.record(i)) for i in range(batch.n)]


def a_dtype_it_takes(entry: Any) -> Any:
    """A numbers operator's dtype for a test: float64, or int64 for an operator of integers
    (sigrid_hash's ids)."""
    import numpy as np

    check = next(p.check for p in entry.params if p.name == "dtype")
    try:
        return check(np.dtype(np.float64), {})
    except TypeError:
        return check(np.dtype(np.int64), {})


def require(backend: Any, name: str | None = None) -> None:
    """A backend (an instance, or a Runtime and a backend name) must be available: in CI its
    absence fails the test, elsewhere it skips with the backend's reason."""
    av = backend.availability() if name is None else backend.availability(name)
    if not av.ok:
        name = name or backend.name
        if os.environ.get("CI"):
            pytest.fail(f"the {name} backend must be available in CI: {av.reason}")
        pytest.skip(reason=f"{name} unavailable here: {av.reason}")


def ran_only_on(rt: Any, name: str) -> None:
    """The runtime's last call ran whole on ``name``, with no fallback."""
    st = rt.stats()
    assert st["fallbacks"] == []
    assert [s[0] for s in st["last_call"]["segments"]] == [name]


@pytest.fixture(scope="session")
def sim_available() -> None:
    """The Verilator model of the engine can be built here (see :func:`require`)."""
    from offload.host.sim_backend import SimBackend

    require(SimBackend())
