"""Benchmarks of placement and of the cost model (``offload bench --only placement``).

Every row is a ratio against a baseline measured in the same run (the two sides interleaved,
:func:`offload.bench.paired_best`). Devices of a set speed are
:class:`~offload.host.modelled.ModelledDevice` instances (exact results, no sooner than
``latency + records / rate``; the host is free while they wait), their rates set from the CPU's
rate measured in this run, so the rows mean the same on a fast and a slow machine.

* ``fastest, 100-key batches``: calls/s of ``Runtime(placement="fastest")`` with a device in the
  chain against the same calls naming the CPU (``backend="cpu"``): the decision's overhead
  (target ratio >= 0.9: within 10 %);
* ``fastest, 1M keys``: its rate against the fastest backend measured alone (target >= 0.9; a
  wrong pick counts as 0), in a chain that lists a slower device first;
* ``balanced, two comparable devices``: balanced's rate against the fastest single backend's
  (target ratio >= 1.2: faster);
* ``balanced, a device 20x slower than the cpu``: (target ratio >= 0.95: never more than 5 %
  slower than the fastest single backend);
* ``cost model error, 1k-10M records``: after ``offload calibrate``'s runs for xxh64 (powers of
  two), the largest relative error of the CPU's predicted time for sizes it never ran (1k, 3k,
  10k, ... 10M), each predicted after the calibrated sizes beside it ran again, against the
  lower quartile of eight runs each (target <= 0.25);
* ``cpu threads, 2 vs 1``: xxh64 of 10M strings on two threads against one, into ``out=``
  (target >= 1.8 on a 2-core machine: within 10 % of linear).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["rows"]

REPEATS = 5
#: Rounds of the paired runs of a placed call against the fastest backend alone: a 1M-key call
#: takes about 0.3 ms, and the best of 10 differed by up to 15 % between the two sides of the
#: same work (of 100: 2 %).
PAIRED_ROUNDS = 300


def _keys(n: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 1 << 63, n, dtype=np.uint64)


def rows(quick: bool = False) -> list[dict[str, Any]]:
    big = 1 << 15 if quick else 1 << 20
    out = [_fastest_small(300 if quick else 20_000)]
    out += _fastest_big(big, sim=not quick)
    out += _balanced(big)
    out.append(_model_error(quick))
    out.append(_threads(1 << 16 if quick else 10_000_000))
    return out


def _on(rt: Any, keys: np.ndarray, name: str) -> Callable[[], Any]:
    """xxh64 of ``keys`` on the backend ``name`` (a factory's or a given instance's)."""
    return lambda: rt.xxh64(keys, backend=name)


def _teach(rt: Any, keys: np.ndarray, names: list[str], sizes: tuple[int, ...]) -> None:
    """Two calls of each size on each backend: what a pipeline's first batches teach the model."""
    for m in sizes:
        for name in names * 2:
            _on(rt, keys[:m], name)()


def _against_fastest(rt: Any, keys: np.ndarray, names: list[str]) -> tuple[dict[str, float], float]:
    """Each backend alone (best of :data:`REPEATS`), then the fastest of them and the placed call
    interleaved (:func:`offload.bench.paired_best`): the two sides of the ratio see the same
    moments of the machine. The others are timed apart: a call right after a device's
    milliseconds of waiting finds this machine cold (a 1M-key CPU call took 1.1-4 ms there
    against 0.3 ms back to back, the simulator's second of cold caches cost either side 0.5x).
    Returns each backend's time alone (the fastest's from the paired rounds) and the placed
    call's."""
    from offload.bench import best, paired_best

    alone = {name: best(_on(rt, keys, name), REPEATS) for name in names}
    winner = min(alone, key=alone.__getitem__)
    # warmed up past the idle machine the slower backends' waiting left (a few ms)
    alone[winner], placed = paired_best(
        [_on(rt, keys, winner), lambda: rt.xxh64(keys)], PAIRED_ROUNDS, warmup=PAIRED_ROUNDS // 5
    )
    return alone, placed


def _cpu_rate(keys: np.ndarray) -> float:
    from offload.bench import best
    from offload.costmodel import CostModel
    from offload.runtime import Runtime

    with Runtime(["cpu"], cost_model=CostModel()) as rt:
        return keys.shape[0] / best(lambda: rt.xxh64(keys), REPEATS)


def _fastest_small(calls: int) -> dict[str, Any]:
    from offload.bench import paired_best, row
    from offload.costmodel import CostModel
    from offload.host.modelled import ModelledDevice
    from offload.runtime import Runtime

    keys = _keys(100)

    def loop(fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(calls):
                fn()

        return run

    with (
        Runtime(
            [ModelledDevice(1e9, latency=1e-3), "cpu"], placement="fastest", cost_model=CostModel()
        ) as placed,
        Runtime(["cpu"], cost_model=CostModel()) as direct,
    ):
        t_placed, t_direct = paired_best(
            [loop(lambda: placed.xxh64(keys)), loop(lambda: direct.xxh64(keys, backend="cpu"))], REPEATS
        )
        ran = {s[0] for d in placed.stats()["decisions"] for s in d["segments"]}
    return row(
        "placement fastest, 100-key batches",
        calls / t_placed,
        "calls/s",
        baseline=calls / t_direct,
        baseline_unit="calls/s naming the cpu",
        target=0.9,
        target_kind="ratio",
        note=f"ran on {', '.join(sorted(ran))}; a 1 ms-latency device in the chain",
    )


def _fastest_big(n: int, sim: bool = True) -> list[dict[str, Any]]:
    """The chain ``[device, sim, cpu]`` (sim when available, not in quick runs) with a device at
    half the CPU's rate (``"offload"`` placement would take it): ``"fastest"`` must pick the
    backend measured fastest alone, once a few calls of each size taught it (as a pipeline's
    first batches would)."""
    from offload.bench import row
    from offload.costmodel import CostModel
    from offload.host.modelled import ModelledDevice
    from offload.runtime import Runtime

    keys = _keys(n)
    device = ModelledDevice(0.5 * _cpu_rate(keys), latency=1e-3, name="device")
    with Runtime([device, "sim", "cpu"], placement="fastest", cost_model=CostModel()) as rt:
        names = (["sim"] if sim and rt.availability("sim").ok else []) + ["device", "cpu"]
        _teach(rt, keys, names, (1000, 10_000, 100_000, n))
        alone, t = _against_fastest(rt, keys, names)
        rt.xxh64(keys)  # the decision read from a placed call (paired rounds may end on another)
        picked = rt.last_call()["segments"][0][0]
    winner = min(alone, key=alone.__getitem__)
    return [
        row(
            f"placement fastest, {n:,} keys",
            n / t if picked == winner else 0.0,
            "keys/s",
            baseline=n / alone[winner],
            baseline_unit=f"keys/s on {winner} alone",
            target=0.9,
            target_kind="ratio",
            note=f"picked {picked}; measured alone: "
            + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in alone.items())
            + ("" if picked == winner else " (a wrong pick counts as 0)"),
        )
    ]


def _balanced(n: int) -> list[dict[str, Any]]:
    """Two devices of the same rate (each a third of the CPU's, so that their own exact
    computation leaves the host mostly idle), then a device 20x slower than the CPU."""
    from offload.bench import row
    from offload.costmodel import CostModel
    from offload.host.modelled import ModelledDevice
    from offload.runtime import Runtime

    keys = _keys(n)
    rate = _cpu_rate(keys)
    cases: tuple[tuple[str, list[Any], float], ...] = (
        (
            "two comparable devices",
            [ModelledDevice(rate / 3, 2e-4, name="a"), ModelledDevice(rate / 3, 2e-4, name="b")],
            1.2,
        ),
        ("a device 20x slower than the cpu", [ModelledDevice(rate / 20, 2e-4, name="a"), "cpu"], 0.95),
    )
    out = []
    for label, chain, target in cases:
        with Runtime(chain, placement="balanced", cost_model=CostModel()) as rt:
            names = [b if isinstance(b, str) else b.name for b in chain]
            _teach(rt, keys, names, (10_000, 100_000, n))
            alone, t = _against_fastest(rt, keys, names)
            rt.xxh64(keys)  # the split read from a placed call (paired rounds may end on another)
            split = ", ".join(f"{b} {hi - lo:,}" for b, lo, hi in rt.last_call()["segments"])
        single = min(alone.values())
        out.append(
            row(
                f"placement balanced, {label}",
                n / t,
                "keys/s",
                baseline=n / single,
                baseline_unit="keys/s, fastest single backend",
                target=target,
                target_kind="ratio",
                note=f"split: {split}",
            )
        )
    return out


#: Where the model's predictions are checked: between its calibrated sizes (powers of two).
CHECK_SIZES = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000)
#: Runs of each checked size (in a row, as a pipeline's batches come).
CHECK_RUNS = 8


def _model_error(quick: bool) -> dict[str, Any]:
    """Calibrate the CPU for xxh64 as ``offload calibrate`` does; then, for each batch size it
    never ran, run the calibrated sizes beside it as a pipeline's own calls would (the runtime
    learns from them), predict the size, and run it: the largest relative error against each
    size's lower quartile (the statistic the model estimates: a run is only slowed down by other
    work, never sped up). Why the neighbours run again: this VM's speed at one size drifts by
    up to 70 % within seconds (the calibrated sizes run again differ by that much from their
    calibration), which no model fitted seconds earlier can know; the row measures the model,
    and the note reports the drift and the predictions made straight after calibration."""
    from offload.bench import row
    from offload.calibrate import calibrate
    from offload.costmodel import CostModel
    from offload.runtime import Runtime

    key = "xxh64/fixed"
    sizes = [n for n in CHECK_SIZES if not quick or n <= 100_000]
    # the checked sizes run on a second runtime with a model of its own: the model under test
    # learns from calibration and the neighbours' runs only, never from a checked size's runs
    with Runtime(["cpu"], cost_model=CostModel()) as rt, Runtime(["cpu"], cost_model=CostModel()) as probe:
        calibrate(rt, ops=["xxh64"], budget_s=2.0, save=False)
        calibrated = _typical_runs(rt.costs.observations("cpu", key))
        at_calibration = {n: rt.costs.predict("cpu", key, n, 8 * n) for n in sizes}
        errors, after, again = {}, {}, {}
        for n in sizes:
            again.update(_typical_times(rt, _neighbours(n, sorted(calibrated))))
            rt.costs.refit()
            predicted = rt.costs.predict("cpu", key, n, 8 * n)
            measured = _typical_times(probe, [n])[n]
            errors[n] = abs(predicted - measured) / measured
            after[n] = abs(at_calibration[n] - measured) / measured
    drift = {n: abs(calibrated[n] - t) / t for n, t in again.items()}
    where = max(errors, key=errors.__getitem__)
    worst = max(drift, key=drift.__getitem__)
    return row(
        f"cost model error, {sizes[0]:,}-{sizes[-1]:,} records",
        errors[where],
        "relative",
        target=0.25,
        target_kind="max",
        note=f"largest at {where:,} records (cpu xxh64, sizes between the calibrated ones, each "
        f"predicted after its calibrated neighbours ran again, against the lower quartile of "
        f"{CHECK_RUNS} runs); "
        + ", ".join(f"{n:,}: {e:.2f}" for n, e in errors.items())
        + f"; predicted straight after calibration instead: up to {max(after.values()):.2f}; "
        f"the neighbours' runs differ from their calibration by up to {drift[worst]:.2f} "
        f"(at {worst:,}): this machine's drift",
    )


def _neighbours(n: int, calibrated: list[int]) -> list[int]:
    """The calibrated sizes on either side of ``n`` (one at the ends)."""
    below = [c for c in calibrated if c <= n][-1:]
    above = [c for c in calibrated if c >= n][:1]
    return sorted(set(below + above))


def _typical_times(rt: Any, sizes: list[int]) -> dict[int, float]:
    """Each size's lower quartile of :data:`CHECK_RUNS` runs in a row, as the runtime timed them
    (the backend's run, without the call's argument checks around it: what the model predicts)."""
    keys = _keys(max(sizes))
    out = {}
    for n in sizes:
        for _ in range(CHECK_RUNS):
            rt.xxh64(keys[:n])
        # this size's last runs (the model keeps a few of each size, in the order they came)
        runs = sorted([o[2] for o in rt.costs.observations("cpu", "xxh64/fixed") if o[0] == n][-CHECK_RUNS:])
        out[n] = runs[len(runs) // 4]
    return out


def _typical_runs(obs: list[tuple[float, float, float]]) -> dict[int, float]:
    """The lower quartile of each batch size's observed runs."""
    by: dict[int, list[float]] = {}
    for records, _, seconds in obs:
        by.setdefault(int(records), []).append(seconds)
    return {n: sorted(v)[len(v) // 4] for n, v in by.items()}


def _threads(n: int) -> dict[str, Any]:
    """Strings of 4..28 bytes (compute-bound: fixed-width keys are limited by memory bandwidth on
    two threads, not by the threading)."""
    from offload.batch import as_records
    from offload.bench import paired_best, row
    from offload.calibrate import Workload
    from offload.host.cpu import CpuBackend
    from offload.ops import make_call

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    batch = as_records(Workload("xxh64", "var", {}).values(n, np.random.default_rng(3)))
    call = make_call("xxh64", seed=3)
    one, two = CpuBackend(threads=1), CpuBackend(threads=2)
    out = np.empty(n, np.uint64)
    t1, t2 = paired_best(
        [lambda: one.run_into(call, batch, out), lambda: two.run_into(call, batch, out)], REPEATS
    )
    return row(
        "cpu threads, 2 vs 1 (xxh64 of strings into out=)",
        n / t2,
        "records/s",
        baseline=n / t1,
        baseline_unit="records/s on one thread",
        target=1.8 if cores >= 2 else None,
        target_kind="ratio",
        note=f"{n:,} strings of 4..28 bytes, {cores} CPUs" + ("" if cores >= 2 else ": one CPU, not checked"),
    )
