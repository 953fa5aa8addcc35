"""A modelled device: exact results at a rate you set, for placement studies without a board.

:class:`ModelledDevice` stands for a device of a given speed (a PYNQ-Z2 at its modelled rate, an
Alveo card, a DPU): it computes with the CPU kernels (exact, one thread, so it takes one core for
a fraction of its time) and hands the result back no sooner than ``latency + records / rate``
(``+ bytes / byte_rate`` for variable-length batches), sleeping for the rest (the host CPU is free
meanwhile, as it is while a real device works). Placement (``Runtime(placement=...)``), the cost
model and notebook 03 use it to show decisions that depend on a device's rate.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from offload.backend import Availability, Backend, Batch, Capabilities, Result
from offload.ops import REGISTRY, OpCall

from .cpu import CpuBackend

__all__ = ["ModelledDevice"]


def _positive(name: str, v: Any, *, zero: bool = False) -> float:
    ok = (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and (v >= 0 if zero else v > 0)
    )
    if not ok:
        kind = "a finite number >= 0" if zero else "a finite number > 0"
        raise ValueError(f"{name} must be {kind}, got {v!r}")
    return float(v)


class ModelledDevice(Backend):
    """A backend of ``rate`` records/s after ``latency`` seconds per call (exact results).

    ``byte_rate``: bytes/s of variable-length records besides the per-record rate (default: no
    per-byte cost). ``name``: what the runtime and its stats call it (default ``"modelled"``);
    give it to a Runtime as an instance: ``Runtime([ModelledDevice(2e8), "cpu"])``.
    """

    def __init__(
        self, rate: float, latency: float = 0.0, *, byte_rate: float | None = None, name: str = "modelled"
    ) -> None:
        self.rate = _positive("rate", rate)
        self.latency = _positive("latency", latency, zero=True)
        self.byte_rate = None if byte_rate is None else _positive("byte_rate", byte_rate)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.name = name  # type: ignore[misc]
        self._cpu = CpuBackend(threads=1)
        self.calls = 0

    def availability(self) -> Availability:
        return Availability(
            True, f"modelled device: {self.rate:.3g} records/s, {self.latency * 1e6:.0f} us a call"
        )

    def capabilities(self) -> Capabilities:
        return Capabilities(ops=frozenset(REGISTRY))

    def seconds(self, batch: Batch) -> float:
        """The time this device takes for ``batch``: its model."""
        t = self.latency + batch.n / self.rate
        if self.byte_rate is not None:
            t += batch.nbytes / self.byte_rate
        return t

    def run(self, call: OpCall, batch: Batch) -> Result:
        t0 = time.perf_counter()
        res = self._cpu.run(call, batch)
        self._hold(t0, batch)
        return res

    def run_into(self, call: OpCall, batch: Batch, out: np.ndarray) -> None:
        t0 = time.perf_counter()
        self._cpu.run_into(call, batch, out)
        self._hold(t0, batch)

    def _hold(self, t0: float, batch: Batch) -> None:
        self.calls += 1
        rest = t0 + self.seconds(batch) - time.perf_counter()
        if rest > 0:
            time.sleep(rest)  # releases the GIL and the core: the host is free meanwhile
