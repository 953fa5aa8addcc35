"""Bench baselines of the framework hashes: the reference C implementations, and ``snprintf``.

The reference implementations are the ones PyPI binds: ``cityhash`` 0.4.10 (its modules
``cityhash``, CityHash64 v1.1, and ``farmhash``, FarmHash Fingerprint64) and ``mmh3`` 5.3.1
(MurmurHash3_x86_32). A Python loop over the bindings measures the interpreter more than the
hash (about 30 ns per call against a few ns of hashing), so each baseline is the C function
itself: every extension module exports the function it wraps, and a small C loop of ours, compiled
with the system C compiler into a temporary directory at bench time, calls it once per key through
a pointer, as a C program linked with the library would. The loop's results are compared with
offload's over the whole input: a baseline that computes something else is not a baseline.

The Python bindings' per-call figures are reported next to it: raw, and minus the per-call time
of a trivial C builtin called in the same loop shape (``hash(b)`` of the same bytes object: a
one-argument builtin that returns the object's cached hash as a fresh 64-bit int). That
difference estimates the C cost through the binding (it still counts the binding's buffer
handling); it is the baseline when no C compiler is found.

Keras ``Hashing`` of integers hashes their decimal text: :func:`snprintf_loop` is
``snprintf("%lld")`` alone over the same int64 array, from the same C file.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from offload.bench import Baseline, CpuInputs, Row, best, compared_row, paired_best, row

__all__ = [
    "Reference",
    "REFERENCES",
    "c_library",
    "reference_baseline",
    "snprintf_loop",
    "string_rows",
    "keras_row",
]


@dataclass(frozen=True)
class Reference:
    """One operator's reference implementation: the PyPI package (a pip requirement), the module
    that binds it, the binding's Python function, the C function's name, the exported C/C++
    symbol the binding wraps and that symbol's calling convention (``"h64"``:
    ``uint64_t f(const char *, size_t)``; ``"m32"``: ``void f(const void *, Py_ssize_t,
    uint32_t seed, void *out)``)."""

    op: str
    package: str
    module: str
    function: str
    c_name: str
    symbol: str
    abi: str


#: The reference of each new hash operator (the unseeded forms: the registry's first examples).
REFERENCES: dict[str, Reference] = {
    "farmhash64": Reference(
        "farmhash64",
        "cityhash==0.4.10",
        "farmhash",
        "Fingerprint64",
        "util::Fingerprint64",
        "_ZN4util13Fingerprint64EPKcm",
        "h64",
    ),
    "cityhash64": Reference(
        "cityhash64", "cityhash==0.4.10", "cityhash", "CityHash64", "CityHash64", "_Z10CityHash64PKcm", "h64"
    ),
    "murmur3_32": Reference(
        "murmur3_32",
        "mmh3==5.3.1",
        "mmh3",
        "mmh3_32_uintdigest",
        "murmurhash3_x86_32",
        "murmurhash3_x86_32",
        "m32",
    ),
}

# One C file: a loop per calling convention and key form, and the formatting baseline. The
# hash is called through a pointer into the package's own library (never inlined into the loop).
_C_SOURCE = r"""
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef uint64_t (*h64_fn)(const char *, size_t);
typedef void (*m32_fn)(const void *, ptrdiff_t, uint32_t, void *);

void h64_fixed(h64_fn f, const uint64_t *keys, int64_t n, uint64_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = f((const char *)(keys + i), 8);
}

void h64_var(h64_fn f, const int32_t *offs, const uint8_t *data, int64_t n, uint64_t *out) {
    for (int64_t i = 0; i < n; i++)
        out[i] = f((const char *)data + offs[i], (size_t)(offs[i + 1] - offs[i]));
}

void m32_fixed(m32_fn f, const uint64_t *keys, int64_t n, uint32_t *out) {
    for (int64_t i = 0; i < n; i++) f(keys + i, 8, 0, out + i);
}

void m32_var(m32_fn f, const int32_t *offs, const uint8_t *data, int64_t n, uint32_t *out) {
    for (int64_t i = 0; i < n; i++) f(data + offs[i], (ptrdiff_t)(offs[i + 1] - offs[i]), 0, out + i);
}

/* The decimal text of every value, back to back (buf holds 20 bytes per value and one). */
int64_t format_lld(const int64_t *v, int64_t n, char *buf) {
    char *p = buf;
    for (int64_t i = 0; i < n; i++) p += snprintf(p, 21, "%lld", (long long)v[i]);
    return (int64_t)(p - buf);
}
"""


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


@functools.cache
def c_library() -> ctypes.CDLL | str:
    """The compiled baseline loops (built once per process), or why there are none."""
    cc = _compiler()
    if cc is None:
        return "no C compiler (cc, gcc or clang; or $CC) to build the C baseline loop"
    with tempfile.TemporaryDirectory(prefix="offload-bench-") as tmp:
        src, lib = Path(tmp) / "baseline.c", Path(tmp) / "baseline.so"
        src.write_text(_C_SOURCE)
        done = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], capture_output=True, text=True
        )
        if done.returncode != 0:
            return f"{cc} failed to build the C baseline loop: {done.stderr.strip()[:200]}"
        loaded = ctypes.CDLL(str(lib))  # mapped: the file may go with the directory
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    for name, args in (
        ("h64_fixed", [ptr, ptr, i64, ptr]),
        ("h64_var", [ptr, ptr, ptr, i64, ptr]),
        ("m32_fixed", [ptr, ptr, i64, ptr]),
        ("m32_var", [ptr, ptr, ptr, i64, ptr]),
        ("format_lld", [ptr, i64, ptr]),
    ):
        getattr(loaded, name).argtypes = args
    loaded.format_lld.restype = i64
    return loaded


def _binding_per_call(
    fn: Callable[[bytes], Any], items: Sequence[bytes], repeats: int
) -> tuple[float, float]:
    """Per-call seconds of ``fn`` and of ``hash`` over the same bytes objects, in the same loop
    shape, each the best of ``repeats`` (at least 7) interleaved runs."""
    for b in items:  # bytes objects cache their hash: the trivial call is a lookup and a box
        hash(b)
    best_fn = best_triv = float("inf")
    for _ in range(max(repeats, 7)):  # a difference of two timings: filter the noise harder
        t = time.perf_counter()
        [fn(b) for b in items]
        best_fn = min(best_fn, time.perf_counter() - t)
        t = time.perf_counter()
        [hash(b) for b in items]
        best_triv = min(best_triv, time.perf_counter() - t)
    return best_fn / len(items), best_triv / len(items)


def _c_loop(
    lib: ctypes.CDLL, ref: Reference, fn_ptr: int, keys: np.ndarray | None, strings: Any, n: int
) -> tuple[Callable[[], Any], np.ndarray]:
    """A call of the C loop over ``keys`` (uint64) or ``strings`` (pyarrow binary), and its output."""
    out = np.empty(n, np.uint64 if ref.abi == "h64" else np.uint32)
    f, o = ctypes.c_void_p(fn_ptr), out.ctypes.data
    if keys is not None:
        loop, k = getattr(lib, f"{ref.abi}_fixed"), keys.ctypes.data
        return (lambda: loop(f, k, n, o)), out
    offs = np.frombuffer(strings.buffers()[1], np.int32, n + 1, strings.offset * 4)
    data = np.frombuffer(strings.buffers()[2], np.uint8)
    loop, p_off, p_data = getattr(lib, f"{ref.abi}_var"), offs.ctypes.data, data.ctypes.data
    return (lambda: loop(f, p_off, p_data, n, o)), out


def reference_baseline(
    op: str,
    ours: np.ndarray,
    py_items: Sequence[bytes],
    repeats: int,
    *,
    keys: np.ndarray | None = None,
    strings: Any = None,
    items: str = "keys",
    ours_fn: Callable[[], Any] | None = None,
) -> Baseline:
    """The reference C implementation of ``op`` over ``keys`` (uint64, hashed as 8 bytes) or
    ``strings`` (a pyarrow binary array with int32 offsets), whose results ``ours`` are offload's;
    ``py_items`` (bytes objects of the same kind) time the Python binding; ``items`` names them
    in the unit. ``ours_fn``, offload's call, is timed alternately with the C loop."""
    ref = REFERENCES[op]
    try:
        module = importlib.import_module(ref.module)
    except ImportError:
        return Baseline(None, "", f"baseline missing: pip install {ref.package} (the reference C code)")
    per_call, trivial = _binding_per_call(getattr(module, ref.function), py_items, repeats)
    binding = (
        f"the Python binding {ref.module}.{ref.function}: {per_call * 1e9:.1f} ns/call raw, "
        f"{(per_call - trivial) * 1e9:.1f} ns/call minus hash(b) ({trivial * 1e9:.1f} ns) called the same way"
    )
    lib = c_library()
    if isinstance(lib, str):
        c_cost = per_call - trivial
        if c_cost <= 0:
            return Baseline(None, "", f"baseline not measurable: {lib}; {binding}")
        return Baseline(
            1 / c_cost,
            f"M {items}/s (estimate: {ref.module}.{ref.function} per call minus hash(b))",
            f"{lib}; {binding}",
        )
    package = ref.package.replace("==", " ")
    try:
        fn_ptr = ctypes.cast(ctypes.CDLL(module.__file__)[ref.symbol], ctypes.c_void_p).value
    except (AttributeError, OSError, TypeError):  # another build of the package
        fn_ptr = None
    if fn_ptr is None:
        return Baseline(
            None, "", f"baseline missing: {ref.module} ({package}) exports no {ref.symbol}; {binding}"
        )
    loop, out = _c_loop(lib, ref, fn_ptr, keys, strings, len(ours))
    t, *t_ours = paired_best([loop] + ([] if ours_fn is None else [ours_fn]), repeats)
    return Baseline(
        len(ours) / t,
        f"M {items}/s (reference C {ref.c_name}, {package}, C loop)",
        f"reference C: {package}'s exported {ref.symbol} called once per key from a compiled C "
        f"loop into a preallocated output ({t / len(ours) * 1e9:.2f} ns/key; offload's row allocates "
        f"its output; the two timed alternately); {binding}",
        bool(np.array_equal(out, ours)),
        len(ours) / t_ours[0] if t_ours else None,
    )


def snprintf_loop(values: np.ndarray) -> tuple[Callable[[], int], int] | str:
    """A call of ``snprintf(buf, 21, "%lld", v)`` over the int64 ``values`` into one buffer (one
    thread), and the characters it writes; or why there is none (no C compiler)."""
    lib = c_library()
    if isinstance(lib, str):
        return f"baseline missing: {lib}"
    v = np.ascontiguousarray(values, np.int64)
    buf = ctypes.create_string_buffer(20 * len(v) + 1)
    p, n = v.ctypes.data, len(v)
    fn = lambda: int(lib.format_lld(p, n, buf))
    return fn, fn()


def string_rows(inp: CpuInputs) -> list[Row]:
    """Each referenced hash over pyarrow strings (mean 16 B), one thread, against its reference C."""
    from offload.batch import as_records
    from offload.ops import REGISTRY, make_call

    batch, n, rows = as_records(inp.strings), inp.n_str, []
    for op in REFERENCES:
        if op not in REGISTRY:
            continue
        call = inp.calls.get(op) or make_call(op)
        run = lambda: inp.one.run(call, batch)
        t = best(run, max(inp.reps, 5))
        ours = run()
        assert isinstance(ours, np.ndarray)  # a hash: one value per record
        base = reference_baseline(
            op, ours, inp.string_bytes, max(inp.reps, 5), strings=inp.strings, items="strings", ours_fn=run
        )
        rows.append(
            compared_row(
                f"{op} {n:,} pyarrow strings (mean 16 B), 1 thread",
                (n / t if base.ours is None else base.ours) / 1e6,
                "M strings/s",
                base,
                1.0,
                "ratio",
                f"{call.describe()}, CpuBackend(threads=1).run",
            )
        )
    return rows


def keras_row(inp: CpuInputs) -> list[Row]:
    """Keras ``Hashing`` of int64 (decimal text, then Fingerprint64 and a modulo) against
    ``snprintf`` alone over the same array: the drop-in as a user calls it, and its two steps
    on one thread (the like-for-like figure: snprintf runs on one thread); all timed alternately."""
    from offload.batch import as_records
    from offload.host.cpu.kernels_text import format_decimal
    from offload.ops import make_call

    n = 200_000 if inp.quick else 1_000_000
    v = inp.numbers(np.dtype(np.int64))[:n]  # uniform over int64: 19.4 chars/value on average
    name = f"keras hashing of {n:,} int64, num_bins=1000 (decimal text included)"
    try:
        from offload.compat.keras import hashing
    except ImportError as e:
        return [row(name, None, "M values/s", note=f"skipped: offload.compat.keras is missing ({e})")]
    call = make_call("hash_bucket", num_buckets=1000, hash="farmhash64")
    user = lambda: hashing(v, 1000, backend="cpu")
    one = lambda: inp.one.run(call, as_records(format_decimal(v, threads=1)))
    c = snprintf_loop(v)
    times = paired_best([user, one] + ([] if isinstance(c, str) else [c[0]]), max(inp.reps, 3))
    if isinstance(c, str):
        base = Baseline(None, "", c)
    else:
        note = f'snprintf("%lld") alone: {times[2] / n * 1e9:.1f} ns/value, {c[1] / n:.1f} chars/value'
        base = Baseline(n / times[2], "M values/s (C snprintf %lld alone, 1 thread)", note)
    same = base._replace(agrees=bool(np.array_equal(one(), user())))
    return [
        compared_row(
            name,
            n / times[0] / 1e6,
            "M values/s",
            base,
            1.0,
            "ratio",
            "offload.compat.keras.hashing(values, 1000, backend='cpu') as a user calls it (default threads)",
        ),
        compared_row(
            f"keras hashing of {n:,} int64, its two steps on 1 thread",
            n / times[1] / 1e6,
            "M values/s",
            same,
            1.0,
            "ratio",
            "format_decimal(threads=1), then hash_bucket(hash='farmhash64') on CpuBackend(threads=1): "
            "the drop-in's kernels, compared with its result",
        ),
    ]
