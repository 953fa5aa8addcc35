"""Benchmarks: throughput of the CPU kernels as ratios against baselines measured in the same run.

``run_benchmarks(quick=False, only=None)`` returns ``{"rows": [...], "quick": bool, "groups":
[...], "machine": {...}}``; each row is a dict ``name, value, unit, baseline, baseline_unit, ratio,
target, target_kind, passed, note``. ``target_kind`` says what ``target`` applies to: ``"ratio"``
(``ratio >= target``), ``"value"`` (``value >= target``) or ``"max"`` (``value <= target``).
``passed`` is ``None`` when the target was not checked: a skipped row, or a ratio whose baseline
could not be measured (python-xxhash is not a dependency of offload: without it those rows say
"baseline missing"). Nothing here asserts on timings: :func:`check` counts the rows that pass and
fail, and ``offload bench --check`` exits 1 when one fails.

Timings are the best of several repeats (the minimum time), which filters out other processes
sharing the machine; the python-xxhash baselines are timed on a subset and scaled per key.

The groups (:data:`GROUPS`): ``cpu`` (this module), ``devices`` (the Verilator model and the fpga
backend on the simulated PYNQ device) and ``smartnic`` (the service over loopback); others are
added with :func:`register`: ``fn(quick) -> list[row]`` (use :func:`row`).
"""

from __future__ import annotations

import importlib
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offload import extras

__all__ = ["GROUPS", "run_benchmarks", "select", "check", "format_table", "register", "row"]

Row = dict[str, Any]
RowsFn = Callable[[bool], list[Row]]
#: Benchmark groups in run order: name -> ``fn(quick)`` or ``"module:function"`` (imported when
#: the group runs, so a group whose extra is missing costs nothing until it is asked for).
GROUPS: dict[str, RowsFn | str] = {
    "cpu": "offload.bench:_cpu_rows",
    "devices": "offload.host.bench_devices:rows",
    "smartnic": "offload.host.smartnic.bench:rows",
}
#: The note of a row whose python-xxhash baseline could not be measured.
NO_XXHASH = "baseline missing: pip install xxhash (the python-xxhash loop it is compared with)"


def register(name: str, fn: RowsFn) -> None:
    """Add a benchmark group: ``fn(quick)`` returns rows (see :func:`row`)."""
    GROUPS[name] = fn


def select(only: str | Sequence[str] | None) -> list[str]:
    """The group names of ``only`` (comma-separated or a sequence), in :data:`GROUPS` order; all of
    them for ``None``. An unknown or empty name is a ``ValueError`` listing the valid ones."""
    if only is None:
        return list(GROUPS)
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only)]
    for name in names:
        if name not in GROUPS:
            raise ValueError(
                f"unknown benchmark group {name!r}: expected a comma-separated list of {', '.join(GROUPS)}"
            )
    return [g for g in GROUPS if g in names]


def row(
    name: str,
    value: float | None,
    unit: str,
    *,
    baseline: float | None = None,
    baseline_unit: str = "",
    target: float | None = None,
    target_kind: str = "value",
    note: str = "",
    ratio: float | None = None,
) -> Row:
    """One result row; ``ratio`` defaults to value / baseline and ``passed`` follows the target."""
    if ratio is None and value is not None and baseline:
        ratio = value / baseline
    passed: bool | None
    if value is None or target is None:
        passed = None
    elif target_kind == "ratio":
        passed = None if ratio is None else ratio >= target  # no baseline: not checked
    elif target_kind == "max":
        passed = value <= target
    else:
        passed = value >= target
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_unit": baseline_unit,
        "ratio": ratio,
        "target": target,
        "target_kind": target_kind,
        "passed": passed,
        "note": note,
    }


def _best(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """The minimum wall time of ``repeats`` calls (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _per_call(fn: Callable[[], Any], calls: int, repeats: int) -> float:
    """Best (over ``repeats``) mean time of one call, from loops of ``calls`` calls."""
    for _ in range(min(calls, 50)):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t) / calls)
    return best


def _strings(n: int, rng: np.random.Generator) -> Any:
    """A pyarrow binary array of ``n`` random records, lengths uniform in [0, 32] (mean 16)."""
    import pyarrow as pa

    lengths = rng.integers(0, 33, n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = rng.integers(0, 256, int(offsets[-1]), dtype=np.uint8)
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes())]
    )


def _py_xxh64() -> Callable[[bytes, int], int] | None:
    """python-xxhash's ``xxh64_intdigest``, the baseline of the hash rows; ``None`` without it."""
    try:
        import xxhash
    except ImportError:
        return None
    return xxhash.xxh64_intdigest


def _mega(rate: float | None) -> float | None:
    return None if rate is None else rate / 1e6


def _loop_rate(fn: Callable[[], Any] | None, n: int, repeats: int) -> float | None:
    """Items/s of a python loop over ``n`` items (``None`` when its library is missing)."""
    return None if fn is None else n / _best(fn, repeats)


def offload_xxh64_list(values: list[str]) -> Any:
    import offload

    return offload.xxh64(values, seed=7, backend="cpu")


def _cpu_rows(quick: bool) -> list[Row]:
    from offload.batch import as_numbers, as_records, as_sequences
    from offload.host.cpu import CpuBackend
    from offload.ops import OpCall, make_call

    rng = np.random.default_rng(12345)
    # Best of N: more repeats in the full run, since the first calls into a fresh 80 MB output may
    # hit transparent-huge-page compaction (measured: 1.35x instead of 1.85x for 2 threads).
    reps = 2 if quick else 9
    n_keys = 200_000 if quick else 10_000_000
    n_py = 20_000 if quick else 1_000_000
    n_str = 20_000 if quick else 1_000_000
    n_vals = 200_000 if quick else 4_000_000
    one = CpuBackend(threads=1)
    two = CpuBackend(threads=2)
    one.warmup()
    two.warmup()
    rows: list[Row] = []

    # -- xxh64 over uint64 keys: one thread vs the python-xxhash loop, two threads vs one ------
    keys = rng.integers(0, 2**64 - 1, n_keys, dtype=np.uint64, endpoint=True)
    fk = as_records(keys)
    c64 = make_call("xxh64", seed=7)
    # Several untimed calls first, for both thread counts alike: the first fresh 80 MB outputs
    # may wait on transparent-huge-page compaction.
    t1 = _best(lambda: one.run(c64, fk), reps, warmup=1 if quick else 4)
    key_bytes = [keys[i : i + 1].tobytes() for i in range(n_py)]
    h = _py_xxh64()
    py_loop = None if h is None else (lambda: [h(b, 7) for b in key_bytes])
    py_rate = _loop_rate(py_loop, n_py, 1 if quick else 2)
    rate1 = n_keys / t1
    rows.append(
        row(
            f"xxh64 {n_keys:,} uint64 keys, 1 thread",
            rate1 / 1e6,
            "M keys/s",
            baseline=_mega(py_rate),
            baseline_unit="M keys/s (python-xxhash loop)",
            target=25,
            target_kind="ratio",
            note=NO_XXHASH
            if h is None
            else f"CpuBackend.run (allocates the output); the python loop is timed on "
            f"{n_py:,} pre-made 8-byte bytes objects (no per-key conversion)",
        )
    )
    from offload.host.cpu import readonly as _ro
    from offload.host.cpu import xxh64_fixed_ser

    out = np.empty(n_keys, np.uint64)
    ro = _ro(keys)
    s7, z = np.uint64(7), np.uint64(0)
    tk = _best(lambda: xxh64_fixed_ser(ro, s7, 0, z, z, z, out), reps)
    rows.append(
        row(
            "xxh64 uint64 keys, 1 thread, kernel into a preallocated output",
            n_keys / tk / 1e6,
            "M keys/s",
            target=325,
            note="like-for-like with a tight C loop (~450 M keys/s on this machine)",
        )
    )
    if two.threads >= 2:
        t2 = _best(lambda: two.run(c64, fk), reps, warmup=1 if quick else 4)
        rows.append(
            row(
                f"xxh64 {n_keys:,} uint64 keys, 2 threads vs 1",
                n_keys / t2 / 1e6,
                "M keys/s",
                baseline=rate1 / 1e6,
                baseline_unit="M keys/s (1 thread)",
                target=1.6,
                target_kind="ratio",
            )
        )
    else:
        rows.append(
            row(
                "xxh64 uint64 keys, 2 threads vs 1",
                None,
                "M keys/s",
                note=f"skipped: numba has {two.threads} thread(s) on this machine",
            )
        )

    # -- xxh64 over pyarrow strings (mean length 16) ---------------------------------------------
    arr = _strings(n_str, rng)
    vr = as_records(arr)
    ts = _best(lambda: one.run(c64, vr), reps)
    pylist = arr.to_pylist()[:n_py]
    py_str = None if h is None else (lambda: [h(b, 7) for b in pylist])
    str_rate = _mega(_loop_rate(py_str, len(pylist), 1 if quick else 2))
    rows.append(
        row(
            f"xxh64 {n_str:,} pyarrow strings (mean 16 B), 1 thread",
            n_str / ts / 1e6,
            "M strings/s",
            baseline=str_rate,
            baseline_unit="M strings/s (python-xxhash loop)",
            note=NO_XXHASH if h is None else "single-thread kernel speed; the target row is the next one",
        )
    )
    default = CpuBackend()  # what offload.xxh64(strings) uses: every core for large batches
    td = _best(lambda: default.run(c64, vr), reps)
    rows.append(
        row(
            f"xxh64 {n_str:,} pyarrow strings (mean 16 B), default threads ({default.threads})",
            n_str / td / 1e6,
            "M strings/s",
            baseline=str_rate,
            baseline_unit="M strings/s (python-xxhash loop)",
            target=8,
            target_kind="ratio",
            note=NO_XXHASH
            if h is None
            else "CpuBackend() as the runtime builds it; the python loop is one thread",
        )
    )

    # -- a Python list[str], as a user hands it: normalise + hash vs the python-xxhash loop -------
    words = [f"user_{i * 2654435761 % 10**12}|ios|{i % 97}" for i in range(n_py)]
    tl = _best(lambda: offload_xxh64_list(words), reps)
    py_words = None if h is None else (lambda: [h(w.encode(), 7) for w in words])
    rows.append(
        row(
            f"xxh64 of a Python list of {n_py:,} str (mean 23 B), normalise + hash",
            n_py / tl / 1e6,
            "M strings/s",
            baseline=_mega(_loop_rate(py_words, n_py, 1 if quick else 2)),
            baseline_unit="M strings/s (python-xxhash loop, encode + hash)",
            target=1.5,
            target_kind="ratio",
            note=NO_XXHASH
            if h is None
            else "offload.xxh64(list, backend='cpu'): one pass to Arrow buffers, then the kernels",
        )
    )

    # -- every other operator, single-threaded, 8-byte inputs -------------------------------------
    py_mod = None if h is None else (lambda: [h(b, 7) % 1000003 for b in key_bytes[: n_py // 4]])
    mod_rate = _loop_rate(py_mod, n_py // 4, 1)
    for name, call, base, note in (
        ("xxh32 uint64 keys", make_call("xxh32", seed=7), None, ""),
        (
            "hash_bucket mod uint64 keys",
            make_call("hash_bucket", num_buckets=1000003, seed=7),
            mod_rate,
            NO_XXHASH if h is None else "",
        ),
        (
            "hash_bucket fastrange uint64 keys",
            make_call("hash_bucket", num_buckets=1000003, seed=7, method="fastrange"),
            None,
            "",
        ),
        ("fid v2 uint64 keys", make_call("fid", slot=17, seed=7), None, ""),
    ):
        t = _best(lambda: one.run(call, fk), reps)  # timed within this iteration
        rows.append(
            row(
                f"{name}, 1 thread",
                n_keys / t / 1e6,
                "M values/s",
                baseline=_mega(base),
                baseline_unit="" if base is None else "M values/s (python loop)",
                target=100,
                note=note,
            )
        )

    x = rng.standard_normal(n_vals)
    bnd = np.sort(rng.standard_normal(64))
    cb = make_call("bucketize", boundaries=bnd, dtype=x.dtype)
    xs = as_numbers(x)
    tb = _best(lambda: one.run(cb, xs), reps)
    tnp = _best(lambda: np.searchsorted(bnd, x, side="right"), reps)
    rows.append(
        row(
            "bucketize float64, 64 boundaries, 1 thread",
            n_vals / tb / 1e6,
            "M values/s",
            baseline=n_vals / tnp / 1e6,
            baseline_unit="M values/s (numpy.searchsorted)",
            target=100,
        )
    )

    seq_len = 100
    n_seq = n_vals // seq_len
    vals = np.cumsum(rng.integers(-(1 << 19), 1 << 19, n_seq * seq_len)).astype(np.int64)
    seqs = as_sequences((np.arange(0, n_seq * seq_len + 1, seq_len, dtype=np.int64), vals))
    enc = OpCall("delta_varint_encode")
    te = _best(lambda: one.run(enc, seqs), reps)
    offs, data = one.run(enc, seqs)
    from offload import golden

    sub = [vals[i * seq_len : (i + 1) * seq_len].tolist() for i in range(min(n_seq, 100))]
    tg = _best(lambda: [golden.delta_varint_encode_seq(s) for s in sub], 1) / (len(sub) * seq_len)
    rows.append(
        row(
            "delta_varint_encode, sequences of 100, 1 thread",
            n_vals / te / 1e6,
            "M values/s",
            baseline=1 / tg / 1e6,
            baseline_unit="M values/s (golden Python)",
            target=100,
            note=f"random deltas in +-2**19 ({len(data) / len(vals):.2f} bytes/value)",
        )
    )
    from offload.batch import as_encoded

    eb = as_encoded(offs, data)
    dec = OpCall("delta_varint_decode")
    td = _best(lambda: one.run(dec, eb), reps)
    rows.append(
        row(
            "delta_varint_decode, sequences of 100, 1 thread",
            n_vals / td / 1e6,
            "M values/s",
            note="no target set",
        )
    )
    for name, fn, n in (
        ("bucketize", lambda: two.run(cb, xs), n_vals),
        ("delta_varint_encode", lambda: two.run(enc, seqs), n_vals),
        ("xxh64 pyarrow strings", lambda: two.run(c64, vr), n_str),
    ):
        if two.threads >= 2:
            rows.append(row(f"{name}, 2 threads", n / _best(fn, reps) / 1e6, "M values/s"))

    # -- the runtime's per-call overhead on 1k-key batches ----------------------------------------
    rows.extend(_overhead_rows(quick))
    return rows


def _overhead_rows(quick: bool) -> list[Row]:
    import offload

    keys = np.arange(1000, dtype=np.uint64)
    calls, reps = (200, 3) if quick else (2000, 7)
    t_k, t_be = _kernel_and_backend_call(keys, calls, reps)
    rows = [
        row(
            "CpuBackend.run per-call overhead, 1k uint64 keys",
            (t_be - t_k) * 1e6,
            "us",
            baseline=t_k * 1e6,
            baseline_unit="us (kernel called directly)",
            target=5,
            target_kind="max",
            note="the backend's share of the runtime's 20 us budget",
        )
    ]
    name = "runtime per-call overhead, 1k uint64 keys (offload.xxh64 backend='cpu')"
    try:
        t_api = _per_call(lambda: offload.xxh64(keys, backend="cpu"), calls, reps)
    except Exception as e:  # noqa: BLE001 - report, never fail the whole run
        return rows + [
            row(
                name,
                None,
                "us",
                target=20,
                target_kind="max",
                note=f"skipped: offload.xxh64 raised {type(e).__name__}: {e}",
            )
        ]
    return rows + [
        row(
            name,
            (t_api - t_k) * 1e6,
            "us",
            baseline=t_k * 1e6,
            baseline_unit="us (kernel called directly)",
            target=20,
            target_kind="max",
            note=f"offload.xxh64 call: {t_api * 1e6:.1f} us, of which CpuBackend.run: {t_be * 1e6:.1f} us",
            ratio=t_api / t_k,
        )
    ]


def _kernel_and_backend_call(keys: np.ndarray, calls: int, reps: int) -> tuple[float, float]:
    """Per-call time of the xxh64 kernel alone and of ``CpuBackend.run`` on the same keys."""
    from offload.batch import as_records
    from offload.host.cpu import CpuBackend, xxh64_fixed_ser
    from offload.host.cpu import readonly as _ro
    from offload.ops import make_call

    out = np.empty(len(keys), np.uint64)
    ro = _ro(keys)
    seed, zero = np.uint64(0), np.uint64(0)
    t_k = _per_call(lambda: xxh64_fixed_ser(ro, seed, 0, zero, zero, zero, out), calls, reps)
    be, call, fk = CpuBackend(), make_call("xxh64"), as_records(keys)
    t_be = _per_call(lambda: be.run(call, fk), calls, reps)
    return t_k, t_be


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return None


def _group_rows(name: str, quick: bool) -> list[Row]:
    """One group's rows; its failure is one row, never an exception: a missing extra is a row
    that was not run (``passed`` None, the note names the extra), anything else a failed row."""
    fn = GROUPS[name]
    try:
        if isinstance(fn, str):
            module, attr = fn.split(":")
            fn = getattr(importlib.import_module(module), attr)
        # Groups may return partial rows: fill in row()'s fields.
        return [{**row("", None, ""), **r} for r in fn(quick)]
    except ImportError as e:
        why = extras.explain(f"offload bench --only {name}", e)
        if why is None:
            return [{**row(f"{name}: failed", None, "", note=f"{type(e).__name__}: {e}"), "passed": False}]
        return [row(f"{name}: not run", None, "", note=why)]
    except Exception as e:  # noqa: BLE001 - one group's failure is one row
        return [{**row(f"{name}: failed", None, "", note=f"{type(e).__name__}: {e}"), "passed": False}]


def _cpuinfo() -> dict[str, Any]:
    """CPU model and physical core count from /proc/cpuinfo (Linux; ``None`` elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or None, "physical_cores": None}
    model, cores, phys = None, set(), "0"
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "Model", "Hardware") and model is None:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    return {"cpu_model": model or platform.processor() or None, "physical_cores": len(cores) or None}


def _machine(load_before: float | None) -> dict[str, Any]:
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    import numba

    return {
        **_cpuinfo(),
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "load_before": load_before,
        "load_after": _load(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
    }


def run_benchmarks(quick: bool = False, only: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Run the groups named by ``only`` (all by default, see :func:`select`); never raises for a
    failing group.

    ``machine["load_before"]``/``["load_after"]`` (1-minute load average) tell whether other
    processes shared the CPUs: with a load above the CPU count, multi-thread rows mean little.
    """
    groups = select(only)
    load_before = _load()
    rows = [r for name in groups for r in _group_rows(name, quick)]
    return {"rows": rows, "quick": quick, "groups": groups, "machine": _machine(load_before)}


def check(results: dict[str, Any]) -> tuple[int, str]:
    """The number of rows that missed their target and a one-line summary. A row with a target
    (or a skipped row) whose ``passed`` is ``None`` was not checked: it neither passes nor fails."""
    rows = results["rows"]
    passed = sum(r["passed"] is True for r in rows)
    failed = sum(r["passed"] is False for r in rows)
    unchecked = sum(r["passed"] is None and (r["target"] is not None or r["value"] is None) for r in rows)
    return failed, f"check: {passed} passed, {failed} failed, {unchecked} not checked"


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of ``run_benchmarks``'s rows."""
    head = ["benchmark", "value", "unit", "baseline", "ratio", "target", "result"]
    lines = []
    for r in results["rows"]:
        tgt = r["target"]
        kind = r.get("target_kind", "value")
        tgt_s = (
            "-"
            if tgt is None
            else (
                f">= {tgt:g}x"
                if kind == "ratio"
                else f"<= {tgt:g} {r['unit']}"
                if kind == "max"
                else f">= {tgt:g} {r['unit']}"
            )
        )
        res = {
            True: "pass",
            False: "FAIL",
            None: "skip" if r["value"] is None else "-" if tgt is None else "not checked",
        }[r["passed"]]
        base = "-" if r["baseline"] is None else f"{_fmt(r['baseline'], 2)} {r['baseline_unit']}"
        lines.append(
            [
                r["name"],
                _fmt(r["value"]),
                r["unit"],
                base,
                "-" if r["ratio"] is None else f"{r['ratio']:.1f}x",
                tgt_s,
                res,
            ]
        )
    widths = [
        max(len(head[i]), *(len(ln[i]) for ln in lines)) if lines else len(head[i]) for i in range(len(head))
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(ln, widths)) for ln in lines]
    notes = [f"- {r['name']}: {r['note']}" for r in results["rows"] if r.get("note")]
    if notes:
        out += ["", "notes:"] + notes
    m = results.get("machine", {})
    if m:
        out += [
            "",
            f"machine: {m.get('cpu_model') or 'unknown CPU'}, {m.get('cpus')} CPUs, "
            f"load average {m.get('load_before')} before / {m.get('load_after')} after the "
            "run (a load above the CPU count means other processes shared the CPUs)",
        ]
    return "\n".join(out)
