"""Benchmarks: throughput of the CPU kernels as ratios against baselines measured in the same run.

``run_benchmarks(quick=False, only=None)`` returns ``{"rows": [...], "quick": bool, "groups":
[...], "machine": {...}}``; each row is a dict ``name, value, unit, baseline, baseline_unit, ratio,
target, target_kind, passed, note``. ``target_kind`` says what ``target`` applies to: ``"ratio"``
(``ratio >= target``), ``"value"`` (``value >= target``) or ``"max"`` (``value <= target``).
``passed`` is ``None`` when the target was not checked: a skipped row, or a ratio whose baseline
could not be measured (python-xxhash, cityhash and mmh3 are not dependencies of offload, nor is a
C compiler: without one, the rows it serves say "baseline missing"). Nothing here asserts on
timings: :func:`check` counts the rows that pass and fail, and ``offload bench --check`` exits 1
when one fails.

The ``cpu`` group opens with one single-thread row per operator of the registry, in its order
(:func:`op_row`): the operator's input kind decides the input (8-byte keys, numbers, int64
sequences, or those sequences encoded) and its first example valid for it the parameters, so a
newly registered operator gets a row with no edit here. :data:`OP_BENCHES` gives some operators a
baseline measured in the same run and a target; the framework hashes are compared with their
reference C implementations (:mod:`offload.bench_hashes`). Rows beyond one per operator follow:
xxh64 on strings and lists and on two threads, the framework hashes on strings, Keras hashing of
integers, the runtime's per-call overhead.

Timings are the best of several repeats (the minimum time), which filters out other processes
sharing the machine; the python-xxhash baselines are timed on a subset and scaled per key.

The groups (:data:`GROUPS`): ``cpu`` (this module), ``devices`` (the Verilator model and the fpga
backend on the simulated PYNQ device), ``smartnic`` (the service over loopback), ``features``
(feature specs over Arrow tables) and ``ray`` (the specs on a local Ray cluster); others are
added with :func:`register`: ``fn(quick) -> list[row]`` (use :func:`row`).
"""

from __future__ import annotations

import importlib
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from offload import extras

if TYPE_CHECKING:  # the registry is imported when the CPU group runs
    from offload.ops import Operator

__all__ = [
    "GROUPS",
    "run_benchmarks",
    "select",
    "check",
    "format_table",
    "register",
    "row",
    "best",
    "Baseline",
    "CpuInputs",
    "OpBench",
    "OP_BENCHES",
    "op_row",
    "paired_best",
    "compared_row",
    "copy_bandwidth",
]

Row = dict[str, Any]
RowsFn = Callable[[bool], list[Row]]
#: Benchmark groups in run order: name -> ``fn(quick)`` or ``"module:function"`` (imported when
#: the group runs, so a group whose extra is missing costs nothing until it is asked for).
GROUPS: dict[str, RowsFn | str] = {
    "cpu": "offload.bench:_cpu_rows",
    "devices": "offload.host.bench_devices:rows",
    "placement": "offload.bench_placement:rows",
    "smartnic": "offload.host.smartnic.bench:rows",
    "features": "offload.features:bench_rows",
    "ray": "offload.ray_data:bench_rows",
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


def best(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """The minimum wall time of ``repeats`` calls (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def paired_best(fns: Sequence[Callable[[], Any]], repeats: int, warmup: int = 1) -> list[float]:
    """:func:`best` of each of ``fns``, their runs interleaved: on a shared machine both sides
    of a ratio then see the same load (a ratio near 1 must not depend on when each side ran).
    Every other round runs them in reverse order, so that none always follows the same one (a
    call right after a similar one finds warm caches and a woken worker thread)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [float("inf")] * len(fns)
    for r in range(repeats):
        order = list(enumerate(fns))
        for i, fn in order if r % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            fn()
            times[i] = min(times[i], time.perf_counter() - t)
    return times


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
    return None if fn is None else n / best(fn, repeats)


def offload_xxh64_list(values: list[str]) -> Any:
    import offload

    return offload.xxh64(values, seed=7, backend="cpu")


class Baseline(NamedTuple):
    """A baseline measured in the same run: its rate in items/s (``None``: not measured; the note
    says why), unit, what it is (the row's note), whether its results equal offload's (``None``:
    not compared; ``False`` fails the row: it is not like for like), and offload's rate when the
    baseline timed it again, alternately with itself (:func:`paired_best`; the row's value then)."""

    rate: float | None
    unit: str
    note: str = ""
    agrees: bool | None = None
    ours: float | None = None


def compared_row(
    name: str, value: float, unit: str, base: Baseline | None, target: float | None, kind: str, note: str
) -> Row:
    """A row against ``base`` (or none); failed whatever its ratio when the baseline computes
    something else than offload."""
    differs = base is not None and base.agrees is False
    notes = [note, "" if base is None else base.note]
    notes += ["FAILED: the baseline's results differ from offload's (not like for like)"] if differs else []
    r = row(
        name,
        value,
        unit,
        baseline=None if base is None else _mega(base.rate),
        baseline_unit="" if base is None or base.rate is None else base.unit,
        target=target,
        target_kind=kind,
        note="; ".join(n for n in notes if n),
    )
    return {**r, "passed": False} if differs else r


class CpuInputs:
    """The backends and inputs of one CPU bench run, each input built on first use (every input
    has its own random stream, so a row's input does not depend on which rows ran before)."""

    def __init__(self, quick: bool) -> None:
        from offload.host.cpu import CpuBackend

        self.quick = quick
        # Best of N: more repeats in the full run, since the first calls into a fresh 80 MB output
        # may hit transparent-huge-page compaction (measured: 1.35x instead of 1.85x for 2 threads).
        self.reps = 2 if quick else 9
        self.warmup = 1 if quick else 4
        self.n_keys = 200_000 if quick else 10_000_000
        self.n_py = 20_000 if quick else 1_000_000
        self.n_str = 20_000 if quick else 1_000_000
        self.n_vals = 200_000 if quick else 4_000_000
        self.n_seqs = 10_000 if quick else 1_000_000  # the codec's input (issue 19): timestamps
        self.one = CpuBackend(threads=1)
        self.two = CpuBackend(threads=2)
        self.one.warmup()
        self.two.warmup()
        self.xxh64 = _py_xxh64()
        self.calls: dict[str, Any] = {}  # the call each operator's row timed
        self.batches: dict[str, Any] = {}  # and its batch
        self.rates: dict[str, float] = {}  # and its rate (items/s)
        self.items: dict[str, int] = {}  # and its item count (values, not sequences)
        self._numbers: dict[np.dtype, np.ndarray] = {}

    def rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([12345, stream])

    @cached_property
    def keys(self) -> np.ndarray:
        return self.rng(1).integers(0, 2**64 - 1, self.n_keys, dtype=np.uint64, endpoint=True)

    @cached_property
    def key_bytes(self) -> list[bytes]:
        """The first ``n_py`` keys as 8-byte bytes objects (the python loops' input)."""
        return [self.keys[i : i + 1].tobytes() for i in range(self.n_py)]

    @cached_property
    def strings(self) -> Any:
        return _strings(self.n_str, self.rng(2))

    @cached_property
    def string_bytes(self) -> list[bytes]:
        return self.strings[: self.n_py].to_pylist()

    def numbers(self, dtype: np.dtype) -> np.ndarray:
        """``n_vals`` values of ``dtype``: standard normal floats, or integers over the full range."""
        if dtype not in self._numbers:
            rng = self.rng(3)
            if dtype.kind == "f":
                self._numbers[dtype] = rng.standard_normal(self.n_vals).astype(dtype)
            else:
                info = np.iinfo(dtype)
                self._numbers[dtype] = rng.integers(info.min, info.max, self.n_vals, dtype, endpoint=True)
        return self._numbers[dtype]

    @cached_property
    def boundaries(self) -> np.ndarray:
        return np.sort(self.rng(4).standard_normal(64))

    @cached_property
    def sequence_offsets(self) -> np.ndarray:
        """``n_seqs`` sequences of 0..39 values (mean 19.5), as the demo's behaviour sequences."""
        offsets = np.zeros(self.n_seqs + 1, np.int64)
        np.cumsum(self.rng(5).integers(0, 40, self.n_seqs), out=offsets[1:])
        return offsets

    @cached_property
    def sequence_values(self) -> np.ndarray:
        """Timestamps: 1.7e9 plus steps of 1..599 s (2.05 bytes a value encoded)."""
        steps = self.rng(6).integers(1, 600, int(self.sequence_offsets[-1]), dtype=np.int64)
        return 1_700_000_000 + np.cumsum(steps)

    @cached_property
    def sequences(self) -> Any:
        from offload.batch import as_sequences

        return as_sequences((self.sequence_offsets, self.sequence_values))

    @cached_property
    def encoded(self) -> Any:
        """The sequences delta-varint encoded (the LEB128 records of the ``encoded`` input kind)."""
        from offload.batch import as_encoded
        from offload.ops import OpCall

        return as_encoded(*self.one.run(OpCall("delta_varint_encode"), self.sequences))


@dataclass(frozen=True)
class OpBench:
    """How one operator's CPU row is judged: ``baseline(inputs, call, batch, result)`` measures a
    baseline in the same run (``result`` is offload's, to compare with), ``target`` and
    ``target_kind`` as in :func:`row`, ``params(inputs)`` replaces the operator's examples."""

    baseline: Callable[[CpuInputs, Any, Any, Any], Baseline] | None = None
    target: float | None = None
    target_kind: str = "value"
    params: Callable[[CpuInputs], dict[str, Any]] | None = None


def _xxhash_loop(inp: CpuInputs, call: Any, batch: Any, result: Any) -> Baseline:
    h, kb, seed = inp.xxh64, inp.key_bytes, call.seed
    if h is None:
        return Baseline(None, "", NO_XXHASH)
    return Baseline(
        _loop_rate(lambda: [h(b, seed) for b in kb], len(kb), 1 if inp.quick else 2),
        "M keys/s (python-xxhash loop)",
        f"CpuBackend.run (allocates the output); the python loop is timed on {len(kb):,} pre-made "
        "8-byte bytes objects (no per-key conversion)",
    )


def _bucket_loop(inp: CpuInputs, call: Any, batch: Any, result: Any) -> Baseline:
    h, kb, seed, nb = inp.xxh64, inp.key_bytes[: inp.n_py // 4], call.seed, call.num_buckets
    if h is None or call.hash != "xxh64" or call.method != "mod":
        return Baseline(None, "", NO_XXHASH if h is None else "no baseline for this call")
    return Baseline(_loop_rate(lambda: [h(b, seed) % nb for b in kb], len(kb), 1), "M keys/s (python loop)")


def _searchsorted(inp: CpuInputs, call: Any, batch: Any, result: Any) -> Baseline:
    x, bnd = inp.numbers(call.dtype), call.boundaries
    side: Literal["left", "right"] = "right" if call.right else "left"
    t = best(lambda: np.searchsorted(bnd, x, side=side), inp.reps)
    return Baseline(len(x) / t, "M values/s (numpy.searchsorted)")


def _golden_encode(inp: CpuInputs, call: Any, batch: Any, result: Any) -> Baseline:
    from offload import golden

    vals, vo = inp.sequence_values, inp.sequence_offsets
    sub = [vals[vo[i] : vo[i + 1]].tolist() for i in range(min(len(vo) - 1, 500))]
    t = best(lambda: [golden.delta_varint_encode_seq(s) for s in sub], 1) / int(vo[len(sub)])
    return Baseline(
        1 / t,
        "M values/s (golden Python)",
        f"timestamps, steps of 1..599 ({len(result[1]) / len(vals):.2f} bytes/value)",
    )


def _c_reference(inp: CpuInputs, call: Any, batch: Any, result: Any) -> Baseline:
    from offload import bench_hashes

    reps = max(inp.reps, 5)  # cheap: these ratios are near 1, so filter the noise harder
    return bench_hashes.reference_baseline(
        call.op, result, inp.key_bytes, reps, keys=inp.keys, ours_fn=lambda: inp.one.run(call, batch)
    )


#: The operators whose CPU row has a baseline or a target; every other registered operator gets
#: a row too (its throughput on its first valid example), with neither.
OP_BENCHES: dict[str, OpBench] = {
    "xxh32": OpBench(target=100),
    "xxh64": OpBench(_xxhash_loop, 25, "ratio"),
    "hash_bucket": OpBench(_bucket_loop, 100),
    "fid": OpBench(target=100),
    "bucketize": OpBench(_searchsorted, 100, params=lambda inp: {"boundaries": inp.boundaries}),
    "delta_varint_encode": OpBench(_golden_encode, 400),
    "delta_varint_decode": OpBench(target=400),
    "farmhash64": OpBench(_c_reference, 1.0, "ratio"),
    "cityhash64": OpBench(_c_reference, 1.0, "ratio"),
    "murmur3_32": OpBench(_c_reference, 1.0, "ratio"),
}


def _first_valid_call(op: Operator, candidates: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> Any:
    from offload.ops import make_call

    for params in candidates:
        try:
            return make_call(op.name, **params, **extra)
        except (TypeError, ValueError):
            continue
    return None


def _op_input(inp: CpuInputs, op: Operator, spec: OpBench) -> tuple[Any, Any, int, str]:
    """The call, batch, item count and description of ``op``'s row: its input kind decides the
    input (numbers: float64, else int64, whichever its examples accept)."""
    from offload.batch import as_numbers, as_records

    candidates = [spec.params(inp)] if spec.params is not None else list(op.examples)
    if op.inputs == "numbers":
        typed = any(p.name == "dtype" for p in op.params)
        for dtype in (np.dtype(np.float64), np.dtype(np.int64)):
            call = _first_valid_call(op, candidates, {"dtype": dtype} if typed else {})
            if call is not None:
                x = inp.numbers(dtype)
                return call, as_numbers(x, op.name), len(x), f"{dtype} values"
        raise ValueError("none of its examples is valid for float64 or int64 values")
    call = _first_valid_call(op, candidates, {})
    if call is None:
        raise ValueError("none of its examples is valid")
    if op.inputs == "records":
        return call, as_records(inp.keys), inp.n_keys, "uint64 keys"
    n, k = len(inp.sequence_values), f"{inp.n_seqs:,} sequences of 0..39"
    if op.inputs == "sequences":
        return call, inp.sequences, n, f"int64 timestamps in {k}"
    return call, inp.encoded, n, f"int64 timestamps of {k}, encoded"


def op_row(inp: CpuInputs, op: Operator) -> Row:
    """One registry operator's single-thread throughput row (see :data:`OP_BENCHES`)."""
    spec = OP_BENCHES.get(op.name, OpBench())
    try:
        call, batch, n, what = _op_input(inp, op, spec)
        t = best(lambda: inp.one.run(call, batch), inp.reps, warmup=inp.warmup)
        result = inp.one.run(call, batch)
        base = None if spec.baseline is None else spec.baseline(inp, call, batch, result)
    except Exception as e:  # noqa: BLE001 - one operator's failure is its row
        return {**row(f"{op.name}: failed", None, "", note=f"{type(e).__name__}: {e}"), "passed": False}
    rate = n / t if base is None or base.ours is None else base.ours
    inp.calls[op.name], inp.batches[op.name], inp.rates[op.name], inp.items[op.name] = call, batch, rate, n
    unit = "M keys/s" if op.inputs == "records" else "M values/s"
    name = f"{op.name} {n:,} {what}, 1 thread"
    return compared_row(name, rate / 1e6, unit, base, spec.target, spec.target_kind, call.describe())


def _cpu_rows(quick: bool) -> list[Row]:
    from offload.ops import REGISTRY

    inp = CpuInputs(quick)
    rows = [op_row(inp, op) for op in list(REGISTRY.values())]  # one row per operator
    rows += _xxh64_rows(inp)
    from offload import bench_hashes

    rows += bench_hashes.kernel_rows(inp)  # each hash kernel against C compiled for this machine
    rows += bench_hashes.string_rows(inp)
    rows += bench_hashes.keras_row(inp)
    rows += _two_thread_rows(inp)
    rows.extend(_overhead_rows(quick))  # the runtime's per-call overhead on 1k-key batches
    return rows


def _xxh64_rows(inp: CpuInputs) -> list[Row]:
    """xxh64 beyond its operator row: two threads, strings, a Python list (the kernel alone
    against xxHash's C: :func:`offload.bench_hashes.kernel_rows`)."""
    from offload.host.cpu.backend import LIGHTEST_FACTOR
    from offload.ops import make_call

    rows: list[Row] = []
    c64, fk = inp.calls.get("xxh64", make_call("xxh64")), inp.batches.get("xxh64")
    name = f"xxh64 {inp.n_keys:,} uint64 keys, 2 threads: memory traffic against 2 threads copying"
    if inp.two.threads < 2:
        rows.append(row(name, None, "GB/s", note=f"skipped: {inp.two.threads} thread(s) on this machine"))
    elif inp.n_keys < (parallel_from := inp.two.parallel_threshold * LIGHTEST_FACTOR):
        why = f"the lightest hashes go parallel from {parallel_from:,}"
        note = f"skipped: one thread runs this many keys ({why})"
        rows.append(row(name, None, "GB/s", note=note))
    elif fk is not None:
        rows.append(_two_threads_row(inp, name, c64, fk))
    return rows + _xxh64_string_rows(inp, c64)


def _two_threads_row(inp: CpuInputs, name: str, call: Any, batch: Any) -> Row:
    """XXH64 of the large key set on two threads, as memory traffic against two threads copying
    the same bytes. One thread already streams at the copy bandwidth (the ``memory traffic``
    row), so what two threads can add is what the memory gives a second core: on this project's
    VM that varied from 1.13x to 1.71x between runs minutes apart, and the kernel's own 2-vs-1
    followed it (1.15x, 1.74x). The strings row is the compute-bound case (target 1.8x)."""
    from offload.host.cpu.pool import shared_pool

    n, workers = inp.n_keys, inp.two.threads - 1
    src, out, zero = np.ascontiguousarray(inp.keys), np.zeros(inp.n_keys, np.uint64), np.uint64(0)
    bounds = [k * n // (4 * inp.two.threads) for k in range(4 * inp.two.threads + 1)]

    def copy2() -> None:  # numpy's ufuncs release the GIL: one chunk at a time on each thread
        shared_pool(workers).run(lambda lo, hi: np.bitwise_or(src[lo:hi], zero, out=out[lo:hi]), bounds)

    t1, t2, c1, c2 = paired_best(
        [
            lambda: inp.one.run_into(call, batch, out),
            lambda: inp.two.run_into(call, batch, out),
            lambda: np.bitwise_or(src, zero, out=out),
            copy2,
        ],
        inp.reps,
    )
    moved = 16 * n  # 8 bytes read and 8 written per key
    return row(
        name,
        moved / t2 / 1e9,
        "GB/s read+written",
        baseline=moved / c2 / 1e9,
        baseline_unit="GB/s (2 threads copying the keys into the same output)",
        target=0.9,
        target_kind="ratio",
        note=f"2 threads vs 1: {t1 / t2:.2f}x; the memory's own 2 vs 1 (the copies): {c1 / c2:.2f}x "
        f"(within 10 % of linear, as far as the memory goes)",
    )


def _xxh64_string_rows(inp: CpuInputs, c64: Any) -> list[Row]:
    from offload.batch import as_records
    from offload.host.cpu import CpuBackend

    h, n, seed = inp.xxh64, inp.n_str, c64.seed
    vr = as_records(inp.strings)
    ts = best(lambda: inp.one.run(c64, vr), inp.reps)
    py_str = None if h is None else (lambda: [h(b, seed) for b in inp.string_bytes])
    str_rate = _mega(_loop_rate(py_str, len(inp.string_bytes), 1 if inp.quick else 2))
    default = CpuBackend()  # what offload.xxh64(strings) uses: every core for large batches
    td = best(lambda: default.run(c64, vr), inp.reps)
    inp.batches["xxh64 strings"], inp.items["xxh64 strings"] = vr, n
    words = [f"user_{i * 2654435761 % 10**12}|ios|{i % 97}" for i in range(inp.n_py)]
    tl = best(lambda: offload_xxh64_list(words), inp.reps)
    py_words = None if h is None else (lambda: [h(w.encode(), 7) for w in words])
    base_unit = "M strings/s (python-xxhash loop)"
    return [
        row(
            f"xxh64 {n:,} pyarrow strings (mean 16 B), 1 thread",
            n / ts / 1e6,
            "M strings/s",
            baseline=str_rate,
            baseline_unit=base_unit,
            note=NO_XXHASH if h is None else "single-thread kernel speed; the target row is the next one",
        ),
        row(
            f"xxh64 {n:,} pyarrow strings (mean 16 B), default threads ({default.threads})",
            n / td / 1e6,
            "M strings/s",
            baseline=str_rate,
            baseline_unit=base_unit,
            target=8,
            target_kind="ratio",
            note=NO_XXHASH
            if h is None
            else "CpuBackend() as the runtime builds it; the python loop is one thread",
        ),
        row(
            f"xxh64 of a Python list of {inp.n_py:,} str (mean 23 B), normalise + hash",
            inp.n_py / tl / 1e6,
            "M strings/s",
            baseline=_mega(_loop_rate(py_words, inp.n_py, 1 if inp.quick else 2)),
            baseline_unit="M strings/s (python-xxhash loop, encode + hash)",
            target=1.5,
            target_kind="ratio",
            note=NO_XXHASH
            if h is None
            else "offload.xxh64(list, backend='cpu'): one pass to Arrow buffers, then the kernels",
        ),
    ]


def _two_thread_rows(inp: CpuInputs) -> list[Row]:
    """bucketize, delta_varint_encode and xxh64 of strings on two threads (no target: with two
    CPUs shared with other jobs they mean little)."""
    if inp.two.threads < 2:
        return []
    rows = []
    for name, op, key in (
        ("bucketize", "bucketize", "bucketize"),
        ("delta_varint_encode", "delta_varint_encode", "delta_varint_encode"),
        ("xxh64 pyarrow strings", "xxh64", "xxh64 strings"),
    ):
        call, batch, n = inp.calls.get(op), inp.batches.get(key), inp.items.get(key)
        if call is not None and batch is not None and n is not None:
            t = best(lambda: inp.two.run(call, batch), inp.reps)
            rows.append(row(f"{name}, 2 threads", n / t / 1e6, "M values/s"))
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
    """CPU model, physical core count and AVX-512 flags from /proc/cpuinfo (Linux; ``None``
    elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or None, "physical_cores": None, "avx512": None}
    model, cores, phys, flags = None, set(), "0", None
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "Model", "Hardware") and model is None:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
        elif key == "flags" and flags is None:
            flags = value.split()
    return {
        "cpu_model": model or platform.processor() or None,
        "physical_cores": len(cores) or None,
        "avx512": None if flags is None else sorted(f for f in flags if f.startswith("avx512")),
    }


#: Bytes copied to measure the machine's memory bandwidth: well beyond the last-level cache.
COPY_BYTES = 1 << 27


def copy_bandwidth(nbytes: int | None = None, repeats: int = 5) -> dict[str, float]:
    """Memory (copy) bandwidth in bytes/s: the bytes read and written per second by numpy
    copying ``nbytes`` between two arrays, the best of ``repeats``; the limit of a streaming
    kernel, which reads its input once and writes its output once. Two copies, since which one
    is faster depends on the machine: ``copyto`` (glibc's ``memmove``, non-temporal stores at
    this size) and ``ufunc`` (``bitwise_or(src, 0, out=dst)``: ordinary stores, as a kernel's);
    ``best`` is the faster. ``nbytes`` defaults to :data:`COPY_BYTES`."""
    src = np.ones((COPY_BYTES if nbytes is None else nbytes) // 8, np.uint64)
    dst = np.zeros_like(src)
    zero = np.uint64(0)
    t_copy, t_ufunc = paired_best(
        [lambda: np.copyto(dst, src), lambda: np.bitwise_or(src, zero, out=dst)], repeats
    )
    rates = {"copyto": 2 * src.nbytes / t_copy, "ufunc": 2 * src.nbytes / t_ufunc}
    return {**rates, "best": max(rates.values())}


def _machine(load_before: float | None) -> dict[str, Any]:
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    import llvmlite.binding as ll
    import numba

    return {
        **_cpuinfo(),
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "llvm_cpu": ll.get_host_cpu_name(),
        **{f"copy_bandwidth_{k}_gbs": round(v / 1e9, 2) for k, v in copy_bandwidth().items()},
        "copy_bandwidth_how": f"numpy copies of {COPY_BYTES >> 20} MiB: bytes read + written per s",
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
            f"machine: {m.get('cpu_model') or 'unknown CPU'}, {m.get('cpus')} CPUs "
            f"({m.get('physical_cores')} cores), AVX-512: {', '.join(m.get('avx512') or []) or 'none'}, "
            f"copy bandwidth {m.get('copy_bandwidth_best_gbs')} GB/s (read + written), "
            f"load average {m.get('load_before')} before / {m.get('load_after')} after the "
            "run (a load above the CPU count means other processes shared the CPUs)",
        ]
    return "\n".join(out)
