"""Benchmarks of the device backends: the Verilator model (``sim``) and the fpga backend on the
simulated PYNQ device. Rows follow :func:`offload.bench.row`; ratios are against baselines measured
in the same run.

* ``sim xxh64``: fixed-width keys/s through the Verilator engine (target >= 2 M keys/s on 1M keys);
* ``sim engine beats/cycle``: input words accepted per clock with output ready held high
  (target >= 0.95; from the drive loop's cycle count);
* ``fpga(sim device) / sim time``: the PYNQ driver + DMA model overhead over the bare model
  (target <= 2x). The simulated PYNQ device runs the LUT flavour of the engine (what is
  synthesised) while the ``sim`` backend runs the faster behavioural flavour by default, so
  this ratio is taken against a ``sim`` backend on the LUT flavour: the same model on both sides.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from offload import batch as B
from offload.ops import make_call

__all__ = ["rows"]


def _time(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def rows(quick: bool = False) -> list[dict[str, Any]]:
    from offload.bench import row
    from offload.runtime import Runtime

    n = 1 << 14 if quick else 1 << 20
    keys = B.as_records(np.random.default_rng(5).integers(0, 1 << 63, n, dtype=np.uint64))
    call = make_call("xxh64", seed=11)
    out: list[dict[str, Any]] = []
    rt = Runtime(backends=["sim", "fpga", "cpu"], fallback=False, fpga="sim")
    try:
        av = rt.availability("sim")
        if not av.ok:
            return [row("sim xxh64 keys/s", None, "M keys/s", note=f"sim unavailable: {av.reason}")]
        sim = rt.backend("sim")
        rt.run(call, keys.slice(0, 1024), backend="sim")  # build/load the model outside the timing
        rt.run(call, keys, backend="cpu")  # and the CPU kernels (loading them took 0.3 s)
        c0 = sim.cycles  # type: ignore[attr-defined]
        t_sim = _time(lambda: rt.run(call, keys, backend="sim"))
        cycles = sim.cycles - c0  # type: ignore[attr-defined]
        t_cpu = _time(lambda: rt.run(call, keys, backend="cpu"))
        out.append(
            row(
                f"sim xxh64 {n:,} uint64 keys",
                n / t_sim / 1e6,
                "M keys/s",
                baseline=n / t_cpu / 1e6,
                baseline_unit="M keys/s (cpu backend)",
                target=2.0,
                target_kind="value",
                note="baseline: cpu backend, same keys",
            )
        )
        out.append(
            row(
                "sim engine input beats/cycle",
                n / cycles,
                "beats/cycle",
                target=0.95,
                target_kind="value",
                note=f"{cycles:,} cycles for {n:,} words",
            )
        )
        fav = rt.availability("fpga")
        if fav.ok:
            from offload.host.sim_backend import SimBackend

            rt_lut = Runtime(backends=[SimBackend(flavour="lut")], fallback=False)
            try:
                rt_lut.run(call, keys.slice(0, 1024), backend="sim")
                t_lut = _time(lambda: rt_lut.run(call, keys, backend="sim"))
            finally:
                rt_lut.close()
            rt.run(call, keys.slice(0, 1024), backend="fpga")
            t_fpga = _time(lambda: rt.run(call, keys, backend="fpga"))
            out.append(
                row(
                    f"fpga (simulated PYNQ) / sim time, {n:,} keys",
                    t_fpga / t_lut,
                    "x",
                    target=2.0,
                    target_kind="max",
                    note=f"fpga {n / t_fpga / 1e6:.2f} M keys/s; both on the LUT-flavour "
                    f"model ({n / t_lut / 1e6:.2f} M keys/s on sim)",
                )
            )
        else:
            out.append(
                row("fpga (simulated PYNQ) / sim time", None, "x", note=f"fpga unavailable: {fav.reason}")
            )
    finally:
        rt.close()
    return out
