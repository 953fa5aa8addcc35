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

:func:`kernel_rows` puts each hash kernel on fixed-width keys against C written the way a C
programmer would, compiled here with ``-O3 -march=native`` (gcc vectorises these loops): xxHash's
own ``XXH64``/``XXH32`` inlined from its header (``#define XXH_INLINE_ALL``, Debian's
``libxxhash-dev``), the bucket and id operators on top of it, and SigridHash's arithmetic; the
framework hashes against their reference C above. Both sides write into one preallocated
output, timed alternately, one thread. :func:`multiplier_ceiling_row` puts the XXH64 row in
perspective: the keys per second this core's multiply, rotate, shift and logic pipes allow at
most (their throughputs measured by microbenchmarks compiled here, x86-64 with AVX-512 only).
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
    "kernel_rows",
    "multiplier_ceiling",
    "multiplier_ceiling_row",
    "reference_baseline",
    "snprintf_loop",
    "string_rows",
    "keras_row",
    "xxhash_library",
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


def _build(source: str, flags: list[str], what: str) -> ctypes.CDLL | str:
    """``source`` compiled with ``flags`` into a shared library and loaded, or why it could not."""
    cc = _compiler()
    if cc is None:
        return f"no C compiler (cc, gcc or clang; or $CC) to build {what}"
    with tempfile.TemporaryDirectory(prefix="offload-bench-") as tmp:
        src, lib = Path(tmp) / "baseline.c", Path(tmp) / "baseline.so"
        src.write_text(source)
        done = subprocess.run(
            [cc, *flags, "-shared", "-fPIC", "-o", str(lib), str(src)], capture_output=True, text=True
        )
        if done.returncode != 0:
            return f"{cc} failed to build {what}: {done.stderr.strip()[:200]}"
        return ctypes.CDLL(str(lib))  # mapped: the file may go with the directory


def _declare(lib: ctypes.CDLL, signatures: dict[str, list[Any]]) -> None:
    for name, args in signatures.items():
        getattr(lib, name).argtypes = args


_I64, _PTR, _U64, _U32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32


@functools.cache
def c_library() -> ctypes.CDLL | str:
    """The compiled baseline loops (built once per process), or why there are none."""
    loaded = _build(_C_SOURCE, ["-O2"], "the C baseline loop")
    if isinstance(loaded, str):
        return loaded
    i64, ptr = _I64, _PTR
    _declare(
        loaded,
        {
            "h64_fixed": [ptr, ptr, i64, ptr],
            "h64_var": [ptr, ptr, ptr, i64, ptr],
            "m32_fixed": [ptr, ptr, i64, ptr],
            "m32_var": [ptr, ptr, ptr, i64, ptr],
            "format_lld": [ptr, i64, ptr],
        },
    )
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


# ---------------------------------------------------------------------------------------------
# The kernels on fixed-width keys against C compiled for this machine
# ---------------------------------------------------------------------------------------------

# xxHash's own C, inlined from its header, in the loops a C programmer writes; gcc -O3
# -march=native vectorises the hash loops (AVX-512 where the CPU has it). SigridHash as Velox
# computes it (folly's mixes, then the floor modulo by a multiply-high with a magic number).
_NATIVE_SOURCE = r"""
#define XXH_INLINE_ALL
#include <xxhash.h>
#include <stdint.h>

void xxh64_keys(const uint64_t *keys, int64_t n, uint64_t seed, uint64_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = XXH64(&keys[i], 8, seed);
}

void xxh32_keys(const uint64_t *keys, int64_t n, uint32_t seed, uint32_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = XXH32(&keys[i], 8, seed);
}

void xxh64_mod(const uint64_t *keys, int64_t n, uint64_t seed, uint64_t nb, uint64_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = XXH64(&keys[i], 8, seed) % nb;
}

void xxh64_fastrange(const uint64_t *keys, int64_t n, uint64_t seed, uint64_t nb, uint64_t *out) {
    for (int64_t i = 0; i < n; i++)
        out[i] = (uint64_t)(((unsigned __int128)XXH64(&keys[i], 8, seed) * nb) >> 64);
}

void xxh64_fid(const uint64_t *keys, int64_t n, uint64_t seed, uint64_t mask, uint64_t high,
               uint64_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = (XXH64(&keys[i], 8, seed) & mask) | high;
}

static inline uint64_t twang_mix64(uint64_t k) {
    k = (~k) + (k << 21);
    k ^= k >> 24;
    k = k + (k << 3) + (k << 8);
    k ^= k >> 14;
    k = k + (k << 2) + (k << 4);
    k ^= k >> 28;
    return k + (k << 31);
}

static inline uint64_t hash_128_to_64(uint64_t upper, uint64_t lower) {
    const uint64_t kmul = 0x9DDFEA08EB382D69ULL;
    uint64_t a = (lower ^ upper) * kmul;
    a ^= a >> 47;
    uint64_t b = (upper ^ a) * kmul;
    b ^= b >> 47;
    return b * kmul;
}

/* Velox's computeSigridHash: the multiplier and shift of computeMultiperAndShift(max_value, 63)
   (ceil(log2) taken on integers), then a sign-symmetric multiply-high, branch-free. */
void sigrid(const int64_t *v, int64_t n, int64_t salt, int64_t max_value, int64_t *out) {
    uint64_t d = (uint64_t)max_value;
    int ell = 0;
    while (ell < 63 && ((uint64_t)1 << ell) < d) ell++;
    unsigned __int128 one = 1, low = (one << (64 + ell)) / d;
    unsigned __int128 high = ((one << (64 + ell)) + (one << (64 + ell - 63))) / d;
    while (low / 2 < high / 2 && ell > 0) {
        low /= 2;
        high /= 2;
        ell--;
    }
    uint64_t mult = (uint64_t)high;
    for (int64_t i = 0; i < n; i++) {
        int64_t h = (int64_t)hash_128_to_64((uint64_t)salt, twang_mix64((uint64_t)v[i]));
        int64_t sign = h >> 63;
        int64_t q = sign ^ (int64_t)(((unsigned __int128)mult * (uint64_t)(sign ^ h)) >> (64 + ell));
        out[i] = max_value == 1 ? 0 : h - q * max_value;
    }
}
"""

#: Keys of the rows that measure the kernels' own speed: 2 MiB of keys and 2 MiB of output stay
#: in the L3 cache, so memory bandwidth does not hide the arithmetic (and a call is long enough
#: that the call overheads of numba's dispatcher and ctypes are below 1 %).
CACHED_KEYS = 1 << 18


@functools.cache
def xxhash_library() -> ctypes.CDLL | str:
    """The native baseline loops (xxHash's own C and SigridHash; built once per process with
    ``-O3 -march=native``), or why there are none."""
    what = "xxHash's C baseline"
    loaded = _build(_NATIVE_SOURCE, ["-O3", "-march=native"], what)
    if isinstance(loaded, str):
        if "xxhash.h" in loaded:
            return f"no xxhash.h for {what} (Debian/Ubuntu: apt-get install libxxhash-dev)"
        return loaded
    i64, ptr, u64 = _I64, _PTR, _U64
    _declare(
        loaded,
        {
            "xxh64_keys": [ptr, i64, u64, ptr],
            "xxh32_keys": [ptr, i64, _U32, ptr],
            "xxh64_mod": [ptr, i64, u64, u64, ptr],
            "xxh64_fastrange": [ptr, i64, u64, u64, ptr],
            "xxh64_fid": [ptr, i64, u64, u64, u64, ptr],
            "sigrid": [ptr, i64, i64, i64, ptr],
        },
    )
    return loaded


OutFn = Callable[[np.ndarray], Any]


def _xxh64_pair(call: Any, keys: np.ndarray) -> tuple[OutFn, OutFn | str, str]:
    """offload's XXH64 kernel (with hash_bucket's or fid's post-processing fused) and the same
    computation in C over ``keys``, each into the ``out`` it is given."""
    from offload.host.cpu import hash_params, readonly, xxh64_fixed_ser
    from offload.host.cpu.kernels_hash import MODE_FASTRANGE, MODE_FID, MODE_MOD

    ro, seed, params = readonly(keys), np.uint64(call.seed or 0), hash_params(call)
    ours: OutFn = lambda out: xxh64_fixed_ser(ro, seed, *params, out)
    lib = xxhash_library()
    if isinstance(lib, str):
        return ours, f"baseline missing: {lib}", ""
    k, n, s, (mode, a, b, _) = keys.ctypes.data, len(keys), int(seed), params
    c: OutFn
    if mode == MODE_MOD:
        c, what = (lambda out: lib.xxh64_mod(k, n, s, int(a), out.ctypes.data)), "XXH64(key) % n"
    elif mode == MODE_FASTRANGE:
        c, what = (lambda out: lib.xxh64_fastrange(k, n, s, int(a), out.ctypes.data)), "XXH64 * n >> 64"
    elif mode == MODE_FID:
        c, what = (lambda out: lib.xxh64_fid(k, n, s, int(a), int(b), out.ctypes.data)), "XXH64 & mask | slot"
    else:
        c, what = (lambda out: lib.xxh64_keys(k, n, s, out.ctypes.data)), "XXH64"
    return ours, c, f"xxHash's C {what}"


def _reference_pair(call: Any, keys: np.ndarray) -> tuple[OutFn, OutFn | str, str]:
    """offload's kernel of a framework hash and its reference C (:data:`REFERENCES`) in a loop."""
    from offload.host.cpu import readonly
    from offload.host.cpu.kernels_cityhash import cityhash64_fixed_ser, farmhash64_fixed_ser
    from offload.host.cpu.kernels_murmur3 import murmur3_fixed_ser

    ro, op = readonly(keys), call.op
    ours: OutFn
    if op == "murmur3_32":
        seed = np.uint64(call.seed)
        ours = lambda out: murmur3_fixed_ser(ro, seed, out)
    elif op == "farmhash64":
        ours = lambda out: farmhash64_fixed_ser(ro, out)
    else:
        seeded, seed = call.seed is not None, np.uint64(call.seed or 0)
        ours = lambda out: cityhash64_fixed_ser(ro, seeded, seed, out)
    ref, lib = REFERENCES[op], c_library()
    if isinstance(lib, str):
        return ours, f"baseline missing: {lib}", ""
    try:
        module = importlib.import_module(ref.module)
        fn_ptr = ctypes.cast(ctypes.CDLL(module.__file__)[ref.symbol], ctypes.c_void_p).value
    except (ImportError, AttributeError, OSError, TypeError):
        return ours, f"baseline missing: pip install {ref.package} (the reference C code)", ""
    loop, f, k, n = getattr(lib, f"{ref.abi}_fixed"), ctypes.c_void_p(fn_ptr), keys.ctypes.data, len(keys)
    package = ref.package.replace("==", " ")
    return ours, (lambda out: loop(f, k, n, out.ctypes.data)), f"reference C {ref.c_name}, {package}"


def _native_pair(call: Any, keys: np.ndarray) -> tuple[OutFn, OutFn | str, str]:
    """offload's kernel and the native C loop of xxh32 or sigrid_hash over ``keys``."""
    from offload.host.cpu import readonly
    from offload.host.cpu.kernels_hash import xxh32_fixed_ser
    from offload.host.cpu.kernels_murmur3 import sigrid_ser

    lib, k, n = xxhash_library(), keys.ctypes.data, len(keys)
    ours: OutFn
    if call.op == "xxh32":
        ro, seed = readonly(keys), np.uint64(call.seed)
        ours, what = (lambda out: xxh32_fixed_ser(ro, seed, out)), "xxHash's C XXH32"
        args: tuple[Any, ...] = ("xxh32_keys", k, n, int(seed))
    else:
        ro_v, salt, mx = readonly(keys.view(np.int64)), np.int64(call.salt), np.int64(call.max_value)
        ours, what = (lambda out: sigrid_ser(ro_v, salt, mx, out)), "SigridHash in C as Velox computes it"
        args = ("sigrid", k, n, int(salt), int(mx))
    if isinstance(lib, str):
        return ours, f"baseline missing: {lib}", what
    fn = getattr(lib, args[0])
    return ours, (lambda out: fn(*args[1:], out.ctypes.data)), what


def _kernel_pair(call: Any, keys: np.ndarray) -> tuple[OutFn, OutFn | str, str, Any]:
    """(offload's kernel, its C baseline or why there is none, what the baseline is, the
    output dtype) of ``call`` over ``keys`` (uint64)."""
    if call.op in ("xxh64", "hash_bucket", "fid"):
        return (*_xxh64_pair(call, keys), np.uint64)
    if call.op in REFERENCES:
        return (*_reference_pair(call, keys), np.uint32 if call.op == "murmur3_32" else np.uint64)
    return (*_native_pair(call, keys), np.uint32 if call.op == "xxh32" else np.int64)


def kernel_row(
    call: Any, keys: np.ndarray, repeats: int, target: float | None, where: str
) -> tuple[Row, dict[str, float]]:
    """One kernel against its C baseline over ``keys``, both into one preallocated output,
    timed alternately (:func:`paired_best`); and the times (s) of ``ours``, ``c`` and ``copy``
    (numpy copying the keys into that output: the same bytes read and written)."""
    ours, c, what, dtype = _kernel_pair(call, keys)
    n = len(keys)
    out, ref = np.zeros(n, dtype), np.zeros(n, dtype)
    ours(out)
    # the keys' first out.nbytes copied into out with ordinary stores (see bench.copy_bandwidth)
    src, dst = keys.view(np.uint8)[: out.nbytes].view(out.dtype), out
    copy = lambda: np.bitwise_or(src, out.dtype.type(0), out=dst)
    name = f"{call.describe()} kernel into out=, {n:,} uint64 keys ({where}), 1 thread"
    note = "the kernel into a preallocated output against C into the same output, timed alternately"
    if isinstance(c, str):
        t, t_copy = paired_best([lambda: ours(out), copy], repeats)
        missing = Baseline(None, "", c)
        return compared_row(name, n / t / 1e6, "M keys/s", missing, target, "ratio", note), {
            "ours": t,
            "copy": t_copy,
        }
    c(ref)
    t, t_c, t_copy = paired_best([lambda: ours(out), lambda: c(out), copy], repeats)
    ours(out)
    base = Baseline(
        n / t_c,
        f"M keys/s ({what}, C loop, gcc -O3 -march=native)"
        if what.startswith(("xxHash", "Sigrid"))
        else f"M keys/s ({what}, C loop)",
        f"{what}: {t_c / n * 1e9:.2f} ns/key",
        bool(np.array_equal(out, ref)),
    )
    row = compared_row(name, n / t / 1e6, "M keys/s", base, target, "ratio", note)
    return row, {"ours": t, "c": t_c, "copy": t_copy}


#: The kernel rows: each operator's call (the registry's first example unless given) and its
#: target against C. XXH64 is the one with a stated target (issue 19: 1.2x xxHash's C); the others
#: must not be slower than their C.
KERNEL_CALLS: tuple[tuple[str, dict[str, Any], float], ...] = (
    ("xxh64", {}, 1.2),
    ("xxh32", {}, 1.0),
    ("hash_bucket", {"num_buckets": 1000003}, 1.0),
    ("hash_bucket", {"num_buckets": 1000003, "method": "fastrange"}, 1.0),
    ("fid", {"slot": 42}, 1.0),
    ("murmur3_32", {}, 1.0),
    ("farmhash64", {}, 1.0),
    ("cityhash64", {}, 1.0),
    ("sigrid_hash", {"salt": 0, "max_value": 100, "dtype": np.int64}, 1.0),
)


def kernel_rows(inp: CpuInputs) -> list[Row]:
    """Each hash kernel on :data:`CACHED_KEYS` 8-byte keys (in cache: the kernel's speed)
    against its C, and the ceiling of the XXH64 one; then XXH64 on the run's large key set
    (``inp.keys``, beyond the caches) and the memory traffic it makes, against a copy of the same
    bytes: the limit of a streaming job."""
    from offload.ops import REGISTRY, make_call

    keys = np.ascontiguousarray(inp.keys[:CACHED_KEYS])
    reps = 20 if inp.quick else 200
    rows = [
        kernel_row(make_call(op, **params), keys, reps, target, "in cache")[0]
        for op, params, target in KERNEL_CALLS
        if op in REGISTRY
    ]
    c_rate = next((r["baseline"] for r in rows if r["name"].startswith("xxh64(")), None)
    return [*rows, multiplier_ceiling_row(c_rate), *_streaming_rows(inp)]


def _streaming_rows(inp: CpuInputs) -> list[Row]:
    from offload.ops import make_call

    n = inp.n_keys
    r, t = kernel_row(make_call("xxh64"), inp.keys, max(inp.reps, 5), None, "streamed from memory")
    moved = 16 * n  # 8 bytes read and 8 written per key
    fraction = {k: moved / v / (moved / t["copy"]) for k, v in t.items() if k != "copy"}
    c_part = f"; xxHash's C: {fraction['c']:.2f} of it" if "c" in fraction else ""
    bandwidth = row(
        f"xxh64 kernel into out=, {n:,} uint64 keys: memory traffic, 1 thread",
        moved / t["ours"] / 1e9,
        "GB/s read+written",
        baseline=moved / t["copy"] / 1e9,
        baseline_unit="GB/s (numpy copying the keys into the same output, read+written)",
        target=0.8,
        target_kind="ratio",
        note=f"the fraction of the machine's copy bandwidth (the ratio) that the kernel reaches{c_part}",
    )
    return [r, bandwidth, *_run_into_row(inp)]


def _run_into_row(inp: CpuInputs) -> list[Row]:
    """XXH64 of the large key set as a caller gets it: ``CpuBackend(threads=1).run_into`` (the
    ``out=`` of ``offload.xxh64``, less the runtime's few microseconds) against xxHash's C."""
    from offload.batch import as_records
    from offload.ops import make_call

    call, n = make_call("xxh64"), inp.n_keys
    name = f"xxh64 CpuBackend(threads=1).run_into (out=), {n:,} uint64 keys (streamed from memory)"
    _, c, what, _ = _kernel_pair(call, inp.keys)
    if not hasattr(inp.one, "run_into") or isinstance(c, str):
        return [row(name, None, "M keys/s", note=f"skipped: {c if isinstance(c, str) else 'no run_into'}")]
    batch, out = as_records(inp.keys), np.zeros(n, np.uint64)
    run = lambda: inp.one.run_into(call, batch, out)
    t, t_c = paired_best([run, lambda: c(out)], max(inp.reps, 5))
    return [
        row(
            name,
            n / t / 1e6,
            "M keys/s",
            baseline=n / t_c / 1e6,
            baseline_unit=f"M keys/s ({what}, C loop, gcc -O3 -march=native)",
            note="both into the same preallocated output, timed alternately",
        )
    ]


# ---------------------------------------------------------------------------------------------
# The multiplier ceiling: how fast this core's pipes could hash 8-byte keys with XXH64
# ---------------------------------------------------------------------------------------------

#: The instructions XXH64 of 8-byte keys needs, and those that could stand in for its 64-bit
#: multiplies (32x32->64 vpmuludq pieces, 52-bit IFMA pieces), in AT&T syntax: ``{r}`` is a
#: vector register (zmm or ymm), ``{g}`` a general one. zmm/ymm 30 and 31 and r15 are inputs.
_PIPE_OPS: dict[str, str] = {
    "vpmullq zmm": "vpmullq %%zmm31, %%zmm{r}, %%zmm{r}",
    "vpmullq ymm": "vpmullq %%ymm31, %%ymm{r}, %%ymm{r}",
    "vpmuludq zmm": "vpmuludq %%zmm31, %%zmm{r}, %%zmm{r}",
    "vpmuludq ymm": "vpmuludq %%ymm31, %%ymm{r}, %%ymm{r}",
    "vpmadd52luq zmm": "vpmadd52luq %%zmm31, %%zmm30, %%zmm{r}",
    "vpmadd52huq zmm": "vpmadd52huq %%zmm31, %%zmm30, %%zmm{r}",
    "vpmadd52luq ymm": "vpmadd52luq %%ymm31, %%ymm30, %%ymm{r}",
    "vprolq zmm": "vprolq $31, %%zmm{r}, %%zmm{r}",
    "vpsrlq zmm": "vpsrlq $33, %%zmm{r}, %%zmm{r}",
    "vpxorq zmm": "vpxorq %%zmm31, %%zmm{r}, %%zmm{r}",
    "imul r64": "imulq %%r15, %%{g}",
}
#: Pairs timed together: their ops per cycle exceed either alone only when they use other pipes.
_PIPE_MIXES: tuple[tuple[str, str], ...] = (
    ("vpmullq zmm", "vpmuludq zmm"),
    ("vpmullq zmm", "vpmadd52luq zmm"),
    ("vpmullq zmm", "vprolq zmm"),
    ("vpmullq zmm", "vpsrlq zmm"),
    ("vpmullq zmm", "vpxorq zmm"),
    ("vpmullq zmm", "imul r64"),
)
_GPRS = ("rax", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14")
_CHAINS = 12  # independent registers per instruction (24 vector registers for a mix)
_LOOP_ITERATIONS = 100_000


def _pipe_asm(kinds: tuple[str, ...]) -> str:
    """One loop iteration: :data:`_CHAINS` copies of each of ``kinds``, interleaved."""
    lines = []
    for c in range(_CHAINS):
        for k, kind in enumerate(kinds):
            lines.append(_PIPE_OPS[kind].format(r=c + _CHAINS * k, g=_GPRS[c]))
    return "\\n\\t".join(lines)


def _asm_loop(name: str, body: str, clobbers: str) -> str:
    return (
        f'void {name}(long n) {{ for (long i = 0; i < n; i++) __asm__ volatile("{body}" ::: {clobbers}); }}'
    )


def _pipe_source(cases: list[tuple[str, ...]]) -> str:
    """C functions ``clock_adds(n)`` (100 dependent adds an iteration) and ``pipe<i>(n)`` (the
    instructions of ``cases[i]``), each a loop of ``n`` iterations."""
    clobbers = ", ".join([*(f'"{g}"' for g in (*_GPRS, "cc")), *(f'"zmm{i}"' for i in range(32))])
    adds = _asm_loop("clock_adds", "\\n\\t".join(["addq %%rax, %%rax"] * 100), '"rax", "cc"')
    return (
        "\n".join([adds, *(_asm_loop(f"pipe{i}", _pipe_asm(k), clobbers) for i, k in enumerate(cases))])
        + "\n"
    )


def _pipe_support() -> str | None:
    """Why the microbenchmarks cannot run here, or None."""
    import platform

    import llvmlite.binding as ll

    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the microbenchmarks are x86-64 code (this is {platform.machine()})"
    have = set(ll.get_host_cpu_features().flatten().split(","))
    missing = [f for f in ("avx512f", "avx512dq", "avx512vl", "avx512ifma") if f"+{f}" not in have]
    return f"the CPU lacks {', '.join(missing)}" if missing else None


@functools.cache
def multiplier_ceiling() -> dict[str, Any] | str:
    """This core's clock (GHz: a chain of dependent 1-cycle adds) and the throughput, in
    instructions per cycle, of each of :data:`_PIPE_OPS` alone and of each pair of
    :data:`_PIPE_MIXES` together (best of 5 loops of 12 independent copies each); or why they
    could not be measured. About 0.3 s."""
    why = _pipe_support()
    if why is not None:
        return why
    cases: list[tuple[str, ...]] = [(k,) for k in _PIPE_OPS] + list(_PIPE_MIXES)
    lib = _build(_pipe_source(cases), ["-O2", "-march=native"], "the multiplier microbenchmarks")
    if isinstance(lib, str):
        return lib
    n = _LOOP_ITERATIONS

    def seconds(fn: Any) -> float:
        fn.argtypes = [ctypes.c_long]
        return best(lambda: fn(n), 5, warmup=1)

    hz = 100 * n / seconds(lib.clock_adds)
    per_cycle = {
        " + ".join(kinds): _CHAINS * len(kinds) / (seconds(getattr(lib, f"pipe{i}")) * hz / n)
        for i, kinds in enumerate(cases)
    }
    return {"clock_ghz": hz / 1e9, "per_cycle": per_cycle}


def xxh64_k8_ceiling(per_cycle: dict[str, float]) -> float:
    """Keys per cycle XXH64 of 8-byte keys could reach on pipes with these throughputs: 8 keys
    in a zmm register need 5 vpmullq and 2 vprolq (on the pipes they share, at their mix's
    rate) among 14 zmm ops (at vpxorq's rate: it runs on every pipe), and a key on the scalar
    unit alongside 5 imul."""
    mul_rotate = per_cycle["vpmullq zmm + vprolq zmm"]
    cycles_per_vector = max(7 / mul_rotate, 14 / per_cycle["vpxorq zmm"])
    return 8 / cycles_per_vector + per_cycle["imul r64"] / 5


def multiplier_ceiling_row(c_rate: float | None) -> Row:
    """The ceiling of XXH64 on 8-byte keys on one core, against xxHash's C (M keys/s, measured
    by the xxh64 kernel row in the same run), with the throughputs it comes from."""
    name = "multiplier ceiling: XXH64 of 8-byte keys, 1 core (vector and scalar pipes)"
    m = multiplier_ceiling()
    if isinstance(m, str):
        return row(name, None, "M keys/s", note=f"skipped: {m}")
    tp, ghz = m["per_cycle"], m["clock_ghz"]
    table = ", ".join(f"{k} {v:.2f}" for k, v in tp.items())
    return row(
        name,
        xxh64_k8_ceiling(tp) * ghz * 1e3,
        "M keys/s (the bound of this core's measured pipe throughputs)",
        baseline=c_rate,
        baseline_unit="M keys/s (xxHash's C, the xxh64 kernel row above)",
        note=f"clock {ghz:.2f} GHz (dependent adds); instructions per cycle, alone and in pairs: {table}",
    )
