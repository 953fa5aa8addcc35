"""``offload calibrate``: teach this machine's cost model every backend's speed in a few seconds.

For each available backend and each workload (every registered operator with its first example's
parameters, on each batch kind it takes: 8-byte keys and strings for the hashes, numbers, sequences,
encoded sequences), the calibration runs batches of doubling size (1,024 to 8M records: an octave
apart, because a backend's cost per record changes within a decade, e.g. the CPU going parallel at
262,144 keys) until the workload's time budget is spent or the next size would overrun it;
the runtime records every timed run in the cost model (:mod:`offload.costmodel`), which is then
saved for this machine. A backend's first run of a
workload warms it up and teaches nothing (compilation, device start-up).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from offload.ops import REGISTRY, Operator

__all__ = ["SIZES", "Workload", "calibrate", "workloads"]

#: Batch sizes a calibration runs, smallest first.
SIZES = tuple(1 << k for k in range(10, 24))
#: Batches shorter than this run :data:`SHORT_RUNS` times (at least): their first runs after a
#: change of size are slower (caches, a result block of a new size), and they cost nothing.
SHORT_S = 5e-3
SHORT_RUNS = 8


@dataclass(frozen=True)
class Workload:
    """One operator on one batch kind: what the cost model learns a cost for."""

    op: str
    kind: str
    params: dict[str, Any]

    def values(self, n: int, rng: np.random.Generator) -> Any:
        return _values(self, n, rng)


def workloads(ops: Sequence[str] | None = None) -> list[Workload]:
    """Every registered operator (or those named) on each batch kind it takes."""
    unknown = [op for op in ops or () if op not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown operator {unknown[0]!r}: expected one of {', '.join(REGISTRY)}")
    out = []
    for name, entry in REGISTRY.items():
        if ops and name not in ops:
            continue
        params = dict(entry.examples[0])
        kinds = {"records": ("fixed", "var"), "numbers": ("numbers",)}.get(entry.inputs, (entry.inputs,))
        out += [Workload(name, kind, params) for kind in kinds]
    return out


def _number_dtype(entry: Operator) -> Any:
    check = next(p.check for p in entry.params if p.name == "dtype")
    try:
        return check(np.dtype(np.float64), {})
    except TypeError:
        return np.dtype(np.int64)


def _values(w: Workload, n: int, rng: np.random.Generator) -> Any:
    import pyarrow as pa

    if w.kind == "fixed":
        return rng.integers(0, 2**63, n, dtype=np.uint64)
    if w.kind == "var":  # categorical strings, 4..28 bytes (mean 16)
        lengths = rng.integers(4, 29, n)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets, rng.integers(0, 256, int(offsets[-1]), dtype=np.uint8)
    if w.kind == "numbers":
        dt = _number_dtype(REGISTRY[w.op])
        if dt.kind == "f":
            return rng.normal(0.0, 1e3, n).astype(dt)
        return rng.integers(-(10**12), 10**12, n).astype(dt)
    per = 20  # behaviour sequences of 20 timestamps, a second apart on average
    ts = np.cumsum(rng.integers(0, 2000, n * per)).astype(np.int64)
    seqs = pa.ListArray.from_arrays(pa.array(np.arange(0, n * per + 1, per)), pa.array(ts))
    if w.kind == "sequences":
        return seqs
    from offload import delta_varint_encode

    return delta_varint_encode(seqs, backend="cpu")


def calibrate(
    runtime: Any = None,
    *,
    backends: Sequence[str] | None = None,
    ops: Sequence[str] | None = None,
    sizes: Sequence[int] = SIZES,
    budget_s: float = 1.0,
    repeats: int = 3,
    save: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Time every available backend of ``runtime``'s chain (default: a Runtime of every backend) on
    every workload; ``budget_s``: seconds per backend and workload after which larger sizes are
    skipped; ``repeats``: timed runs per size (:data:`SHORT_RUNS` for batches under
    :data:`SHORT_S`). Returns ``{"backends": {name: reason}, "skipped": {...}, "seconds": s, "model": ...}``
    and saves the model for this machine (``save``)."""
    from offload.runtime import BACKEND_FACTORIES, Runtime

    rt = runtime if runtime is not None else Runtime(list(BACKEND_FACTORIES), fallback=False)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    ran: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name, ok, reason in rt.backends():
        if name not in rt.order or backends and name not in backends:
            continue
        if not ok:
            skipped[name] = reason
            continue
        ran[name] = reason
        for w in workloads(ops):
            _time_workload(rt, name, w, sizes, budget_s, repeats, rng)
    path = rt.costs.save() if save else None
    return {
        "backends": ran,
        "skipped": skipped,
        "seconds": time.perf_counter() - t0,
        "saved": str(path) if path else None,
        "model": rt.costs.summary(),
    }


def _time_workload(
    rt: Any,
    name: str,
    w: Workload,
    sizes: Sequence[int],
    budget_s: float,
    repeats: int,
    rng: np.random.Generator,
) -> None:
    """Growing batches of one workload on one backend until the budget (the inputs' making
    included) is spent or the next size would overrun it; a backend that cannot run the workload
    (an engine build without the operator) is left out of it."""
    from offload.backend import BackendError, BackendUnavailable

    start = time.perf_counter()
    warm, last = False, 0.0
    ordered = sorted(sizes)
    for i, n in enumerate(ordered):
        values = w.values(n, rng)
        runs = repeats if last > SHORT_S else max(repeats, SHORT_RUNS)
        for _ in range(runs + (0 if warm else 1)):
            t = time.perf_counter()
            try:
                rt.call(w.op, values, backend=name, **w.params)
            except (BackendUnavailable, BackendError):
                return
            warm, last = True, time.perf_counter() - t
        grow = ordered[i + 1] / n if i + 1 < len(ordered) else 1.0
        if time.perf_counter() - start + grow * last * (runs + 1) >= budget_s:
            return
