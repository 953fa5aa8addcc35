"""Benchmarks of the device backends: the Verilator model (``sim``) and the fpga backend on the
simulated PYNQ device. Rows follow :func:`offload.bench.row`; ratios are against baselines measured
in the same run (the two sides of a ratio interleaved, :func:`offload.bench.paired_best`).

* ``sim xxh64``: fixed-width keys/s through the Verilator engine (target >= 2 M keys/s on 1M keys);
* ``sim engine beats/cycle``: input words accepted per clock with output ready held high
  (target >= 0.95; from the drive loop's cycle count);
* ``fpga (simulated PYNQ) vs sim backend``: keys/s of the whole PYNQ path (driver, ``pynq``
  MMIO, AXI DMA model, buffers) against the ``sim`` backend's, warm (target ratio >= 0.5:
  within 2x). The simulated PYNQ-Z2 runs the behavioural flavour of the PYNQ-Z2 build, the
  ``sim`` backend the behavioural flavour of the full build (more hash cores to simulate);
* ``... on the same model``: the same ratio against a ``sim`` backend on the simulated
  device's own model, so what is left is the host side alone (target ratio >= 0.5).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from offload import batch as B
from offload.ops import OpCall, make_call

__all__ = ["rows"]

REPEATS = 3


def rows(quick: bool = False) -> list[dict[str, Any]]:
    from offload.bench import row
    from offload.runtime import Runtime

    n = 1 << 14 if quick else 1 << 20
    keys = B.as_records(np.random.default_rng(5).integers(0, 1 << 63, n, dtype=np.uint64))
    call = make_call("xxh64", seed=11)
    rt = Runtime(backends=["sim", "fpga", "cpu"], fallback=False, fpga="sim")
    try:
        av = rt.availability("sim")
        if not av.ok:
            return [row("sim xxh64 keys/s", None, "M keys/s", note=f"sim unavailable: {av.reason}")]
        fav = rt.availability("fpga")
        if not fav.ok:
            t_sim = _sim_time(rt, call, keys)
            why = f"fpga unavailable: {fav.reason}"
            return _sim_rows(rt, call, keys, t_sim) + [
                row("fpga (simulated PYNQ) vs sim backend", None, "M keys/s", note=why)
            ]
        t_sim, t_fpga = _paired(call, keys, (rt, "sim"), (rt, "fpga"))
        return (
            _sim_rows(rt, call, keys, t_sim)
            + [_fpga_row(f"fpga (simulated PYNQ) vs sim backend, {n:,} keys warm", n, t_fpga, t_sim)]
            + [_same_model_row(rt, call, keys)]
        )
    finally:
        rt.close()


def _sim_time(rt: Any, call: OpCall, keys: Any) -> float:
    from offload.bench import best

    return best(lambda: rt.run(call, keys, backend="sim"), REPEATS)


def _paired(call: OpCall, keys: Any, *sides: tuple[Any, str]) -> list[float]:
    """Warm times of each (runtime, backend name) on the whole batch, interleaved (first calls
    build and load the models and allocate the DMA buffers, outside the timing)."""
    from offload.bench import paired_best

    runs = [lambda rt=rt, name=name: rt.run(call, keys, backend=name) for rt, name in sides]
    return paired_best(runs, REPEATS)


def _sim_rows(rt: Any, call: OpCall, keys: Any, t_sim: float) -> list[dict[str, Any]]:
    from offload.bench import best, row

    n = keys.n
    sim = rt.backend("sim")
    c0 = sim.cycles
    rt.run(call, keys, backend="sim")
    cycles = sim.cycles - c0
    t_cpu = best(lambda: rt.run(call, keys, backend="cpu"), REPEATS)
    return [
        row(
            f"sim xxh64 {n:,} uint64 keys",
            n / t_sim / 1e6,
            "M keys/s",
            baseline=n / t_cpu / 1e6,
            baseline_unit="M keys/s (cpu backend)",
            target=2.0,
            target_kind="value",
            note="baseline: cpu backend, same keys",
        ),
        row(
            "sim engine input beats/cycle",
            n / cycles,
            "beats/cycle",
            target=0.95,
            target_kind="value",
            note=f"{cycles:,} cycles for {n:,} words",
        ),
    ]


def _fpga_row(name: str, n: int, t_fpga: float, t_sim: float, note: str = "") -> dict[str, Any]:
    from offload.bench import row

    return row(
        name,
        n / t_fpga / 1e6,
        "M keys/s",
        baseline=n / t_sim / 1e6,
        baseline_unit="M keys/s (sim backend)",
        target=0.5,
        target_kind="ratio",
        note=note or "xxh64; fpga: PYNQ-Z2 build, sim: full build (both behavioural flavour)",
    )


def _same_model_row(rt: Any, call: OpCall, keys: Any) -> dict[str, Any]:
    """fpga against a ``sim`` backend on the simulated device's own model."""
    from offload.host.sim_backend import SimBackend
    from offload.runtime import Runtime

    flavour = rt.backend("fpga").flavour
    same = Runtime(backends=[SimBackend(flavour=flavour)], fallback=False)
    try:
        t_sim, t_fpga = _paired(call, keys, (same, "sim"), (rt, "fpga"))
    finally:
        same.close()
    return _fpga_row(
        f"fpga (simulated PYNQ) vs sim backend on the same model, {keys.n:,} keys warm",
        keys.n,
        t_fpga,
        t_sim,
        note=f"xxh64; both the {flavour} flavour of the PYNQ-Z2 build: the host side alone",
    )
