"""CpuBackend against the golden models: every operator, every batch form, serial and parallel paths.

The parallel kernels are forced on small batches with ``parallel_threshold=0``; every property is
checked on both backends.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offload import golden, ops
from offload.batch import (
    FixedKeys,
    Sequences,
    VarChunk,
    VarRecords,
    as_encoded,
    as_numbers,
    as_records,
    as_sequences,
)
from offload.host.cpu import CpuBackend, mod_magic
from offload.ops import OpCall, Operator, Param, golden_result, make_call, result_dtype

try:
    from tests.lengths import BOUNDARY_LENGTHS
except ImportError:  # pragma: no cover - the shared list is created by another module's owner
    BOUNDARY_LENGTHS = list(range(0, 34)) + [63, 64, 65, 127, 128, 129, 1000]

SER = CpuBackend(threads=1)
PAR = CpuBackend(threads=2, parallel_threshold=0)
BACKENDS = [SER, PAR]
MASK64 = (1 << 64) - 1
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    SER.warmup()
    PAR.warmup()


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

seeds64 = st.sampled_from([0, 1, 2**32 - 1, 2**63, MASK64]) | st.integers(0, MASK64)
seeds32 = st.sampled_from([0, 1, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1)
num_buckets = st.sampled_from([1, 2, 3, 7, 1000, 2**32, 2**32 + 1, 2**63 - 1, 2**63]) | st.integers(1, 2**63)


@st.composite
def hash_calls(draw: st.DrawFn) -> OpCall:
    op = draw(st.sampled_from(["xxh32", "xxh64", "hash_bucket", "fid"]))
    if op == "xxh32":
        return make_call(op, seed=draw(seeds32))
    if op == "xxh64":
        return make_call(op, seed=draw(seeds64))
    if op == "hash_bucket":
        return make_call(
            op,
            num_buckets=draw(num_buckets),
            seed=draw(seeds64),
            method=draw(st.sampled_from(["mod", "fastrange"])),
        )
    version = draw(st.sampled_from([1, 2]))
    slot_max = (1 << golden.FID_LAYOUT[version][0]) - 1
    slot = draw(st.sampled_from([0, 1, slot_max]) | st.integers(0, slot_max))
    return make_call(op, slot=slot, version=version, seed=draw(seeds64))


_INT_DTYPES = {
    np.int32: (-(2**31), 2**31 - 1),
    np.uint32: (0, 2**32 - 1),
    np.int64: (-(2**63), 2**63 - 1),
    np.uint64: (0, 2**64 - 1),
}


@st.composite
def fixed_arrays(draw: st.DrawFn) -> np.ndarray:
    dt = draw(st.sampled_from(list(_INT_DTYPES)))
    lo, hi = _INT_DTYPES[dt]
    vals = draw(st.lists(st.sampled_from([lo, hi, 0, 1]) | st.integers(lo, hi), max_size=70))
    arr = np.array(vals, dtype=dt)
    layout = draw(st.sampled_from(["contiguous", "strided", "2d-transposed"]))
    if layout == "strided":
        big = np.empty(2 * len(arr), dt)
        big[::2] = arr
        arr = big[::2]
    elif layout == "2d-transposed" and len(arr) % 2 == 0 and len(arr):
        arr = arr.reshape(2, -1).T  # Fortran-ordered view: non-contiguous
    return arr


record_bytes = st.sampled_from(BOUNDARY_LENGTHS).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@st.composite
def var_batches(draw: st.DrawFn) -> tuple[object, list[bytes]]:
    """(batch in some accepted form, the records as bytes)."""
    form = draw(
        st.sampled_from(
            [
                "bytes",
                "str",
                "pa.binary",
                "pa.large_binary",
                "pa.string",
                "pa.large_string",
                "pa.sliced",
                "pa.chunked",
                "pair",
            ]
        )
    )
    if form in ("str", "pa.string", "pa.large_string"):
        texts = draw(st.lists(st.text(max_size=40), max_size=30))
        recs = [t.encode("utf-8") for t in texts]
        if form == "str":
            return texts, recs
        return pa.array(texts, type=pa.string() if form == "pa.string" else pa.large_string()), recs
    recs = draw(st.lists(record_bytes, max_size=30))
    if form == "bytes":
        return recs, recs
    if form == "pair":
        offs = np.zeros(len(recs) + 1, np.int64)
        np.cumsum([len(r) for r in recs], out=offs[1:])
        return (offs, np.frombuffer(b"".join(recs), np.uint8).copy()), recs
    if form in ("pa.binary", "pa.large_binary"):
        return pa.array(recs, type=pa.binary() if form == "pa.binary" else pa.large_binary()), recs
    typ = draw(st.sampled_from([pa.binary(), pa.large_binary()]))
    full = pa.array([b"x" * 3] + recs + [b"tail"], type=typ)
    if form == "pa.sliced":  # offsets do not start at 0
        return full.slice(1, len(recs)), recs
    cut = draw(st.integers(0, len(recs)))  # chunked: chunks of sliced arrays, maybe empty ones
    chunks = [full.slice(1, cut), pa.array([], type=typ), full.slice(1 + cut, len(recs) - cut)]
    return pa.chunked_array(chunks, type=typ), recs


def _check(backend: CpuBackend, call: OpCall, batch: object, recs: list[bytes]) -> None:
    got = backend.run(call, batch)  # type: ignore[arg-type]
    assert got.dtype == result_dtype(call.op)
    assert got.shape == (len(recs),)
    for i, r in enumerate(recs):
        exp = golden_result(call, r)
        assert int(got[i]) == exp, (backend.threads, call.describe(), i, r, int(got[i]), exp)


# ---------------------------------------------------------------------------------------------
# Hash operators
# ---------------------------------------------------------------------------------------------


@HYP
@given(call=hash_calls(), arr=fixed_arrays())
def test_hash_fixed_keys(call: OpCall, arr: np.ndarray) -> None:
    batch = as_records(arr)
    assert isinstance(batch, FixedKeys)
    recs = [np.asarray(v, arr.dtype).tobytes() for v in arr.reshape(-1, order="C").tolist()]
    for be in BACKENDS:
        _check(be, call, batch, recs)


@HYP
@given(call=hash_calls(), vb=var_batches())
def test_hash_var_records(call: OpCall, vb: tuple[object, list[bytes]]) -> None:
    values, recs = vb
    batch = as_records(values)
    for be in BACKENDS:
        _check(be, call, batch, recs)


@pytest.mark.parametrize("be", BACKENDS, ids=["serial", "parallel"])
def test_hash_every_boundary_length_vs_xxhash(be: CpuBackend) -> None:
    rng = np.random.default_rng(11)
    recs = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in BOUNDARY_LENGTHS * 2]
    recs.append(b"\xff" * 300)
    batch = as_records(recs)
    for seed in (0, 1, 2**32 - 1, MASK64):
        h64 = be.run(make_call("xxh64", seed=seed), batch)
        h32 = be.run(make_call("xxh32", seed=seed & 0xFFFFFFFF), batch)
        for i, r in enumerate(recs):
            assert int(h64[i]) == xxhash.xxh64_intdigest(r, seed)
            assert int(h32[i]) == xxhash.xxh32_intdigest(r, seed & 0xFFFFFFFF)


# ---------------------------------------------------------------------------------------------
# The vectorised fixed-key loops, called as the backend calls them (``fixed(keys, *args, out)``)
# ---------------------------------------------------------------------------------------------
# XXH64 (and hash_bucket and fid of it) and SigridHash take 16 keys on the vector unit and 2 on
# the scalar unit an iteration, XXH32 and MurmurHash3 16 keys to a register: every length around
# those blocks, and each input form a kernel can be given.

KERNEL_LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 18, 19, 35, 36, 37, 1000]
KERNEL_CALLS = [
    make_call("xxh64", seed=2**63 + 5),
    make_call("hash_bucket", num_buckets=1000003, seed=3),
    make_call("hash_bucket", num_buckets=2**63 - 1, seed=3),
    make_call("hash_bucket", num_buckets=1000003, method="fastrange"),
    make_call("fid", slot=1023, version=1, seed=9),
    make_call("xxh32", seed=2**32 - 1),
    make_call("murmur3_32", seed=42),
    make_call("farmhash64"),
    make_call("cityhash64", seed=7),
    make_call("sigrid_hash", salt=-5, max_value=1000, dtype=np.int64),
]


def _kernel_call(call: OpCall, keys: np.ndarray, out: np.ndarray) -> None:
    """``call``'s fixed-key kernel on ``keys`` into ``out``, with the backend's arguments."""
    from offload.host.cpu import hash_params
    from offload.host.cpu.kernels_cityhash import cityhash64_fixed_ser, farmhash64_fixed_ser
    from offload.host.cpu.kernels_hash import xxh32_fixed_ser, xxh64_fixed_ser
    from offload.host.cpu.kernels_murmur3 import murmur3_fixed_ser, sigrid_ser

    if call.op == "xxh32":
        xxh32_fixed_ser(keys, np.uint64(call.seed), out)
    elif call.op == "murmur3_32":
        murmur3_fixed_ser(keys, np.uint64(call.seed), out)
    elif call.op == "farmhash64":
        farmhash64_fixed_ser(keys, out)
    elif call.op == "cityhash64":
        cityhash64_fixed_ser(keys, True, np.uint64(call.seed), out)
    elif call.op == "sigrid_hash":
        sigrid_ser(keys.view(np.int64), np.int64(call.salt), np.int64(call.max_value), out.view(np.int64))
    else:
        xxh64_fixed_ser(keys, np.uint64(call.seed or 0), *hash_params(call), out)


def _key_forms(keys: np.ndarray) -> dict[str, np.ndarray]:
    """``keys`` as each array a kernel may get: read-only (the backend's views), writable,
    strided, and at an address that is not a multiple of the item size."""
    ro = keys.copy()
    ro.flags.writeable = False
    strided = np.zeros(2 * len(keys), keys.dtype)
    strided[::2] = keys
    raw = np.zeros(keys.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(keys.dtype)
    unaligned[:] = keys
    return {"read-only": ro, "writable": keys.copy(), "strided": strided[::2], "unaligned": unaligned}


def _golden_of_keys(call: OpCall, keys: np.ndarray) -> list[int]:
    if call.op == "sigrid_hash":  # ids are numbers; the keys' bit patterns as int64
        return [golden_result(call, int(v)) for v in keys.view(np.int64)]
    return [golden_result(call, k.tobytes()) for k in keys]  # each key's little-endian bytes


@pytest.mark.parametrize("form", ["read-only", "writable", "strided", "unaligned", "strided output"])
@pytest.mark.parametrize("call", KERNEL_CALLS, ids=lambda c: c.describe())
def test_fixed_key_kernels_at_every_length_around_their_blocks(call: OpCall, form: str) -> None:
    rng = np.random.default_rng(19)
    widths = (np.uint64, np.uint32) if form == "read-only" and call.op != "sigrid_hash" else (np.uint64,)
    out_dtype = np.uint32 if call.op in ("xxh32", "murmur3_32") else np.uint64
    for dt in widths:
        for n in KERNEL_LENGTHS:
            keys = rng.integers(0, np.iinfo(dt).max, n, dt, endpoint=True)
            keys = _key_forms(keys)["read-only" if form == "strided output" else form]
            out = np.full(2 * n if form == "strided output" else n, 7, out_dtype)
            out = out[::2] if form == "strided output" else out
            _kernel_call(call, keys, out)
            got = out.view(np.int64) if call.op == "sigrid_hash" else out
            assert [int(v) for v in got] == _golden_of_keys(call, keys), (np.dtype(dt).name, n)


def _host_has_avx512() -> bool:
    import llvmlite.binding as ll

    return "+avx512f" in ll.get_host_cpu_features().flatten().split(",")


@pytest.mark.skipif(not _host_has_avx512(), reason="the zmm instructions need a CPU with AVX-512")
def test_the_fixed_key_loops_compile_to_zmm_rotates_and_32_bit_vector_lanes(tmp_path: Path) -> None:
    # numba shows no assembly of a cached kernel: a fresh process compiles them without the cache.
    # XXH64's rotate by 31 of ``k * P2`` stays a vprolq (LLVM had folded the shift into a second
    # vpmullq); XXH32 and MurmurHash3 multiply 32-bit lanes (vpmulld; their uint64 state had
    # kept them to 64-bit lanes). How many lanes a register takes is LLVM's tuning for the CPU:
    # 16 in a zmm register on AMD Zen 4; 8 in a ymm register on Intel Xeon (Sapphire and Emerald
    # Rapids, whose tuning prefers 256-bit vectors in vectorised loops).
    code = (
        "import numpy as np\n"
        "from offload.host.cpu.kernels_hash import xxh64_fixed_ser, xxh32_fixed_ser\n"
        "from offload.host.cpu.kernels_murmur3 import murmur3_fixed_ser\n"
        "k, z = np.arange(40, dtype=np.uint64), np.uint64(0)\n"
        "k.flags.writeable = False\n"
        "xxh64_fixed_ser(k, z, 0, z, z, z, np.empty(40, np.uint64))\n"
        "xxh32_fixed_ser(k, z, np.empty(40, np.uint32))\n"
        "murmur3_fixed_ser(k, z, np.empty(40, np.uint32))\n"
        "for f in (xxh64_fixed_ser, xxh32_fixed_ser, murmur3_fixed_ser):\n"
        "    a = next(iter(f.inspect_asm().values()))\n"
        "    print(a.count('vprolq\\t$31, %zmm'), a.count('vpmulld\\t%zmm') + a.count('vpmulld\\t%ymm'))\n"
    )
    counts = _run_python(code, tmp_path, NUMBA_DISABLE_CACHE="1", NUMBA_CACHE_DIR=str(tmp_path))
    (xxh64_rot31, _), (_, xxh32_lane_mul), (_, murmur3_lane_mul) = zip(counts[::2], counts[1::2])
    assert xxh64_rot31 >= 1 and xxh32_lane_mul >= 6 and murmur3_lane_mul >= 5


@pytest.mark.parametrize("be", BACKENDS, ids=["serial", "parallel"])
def test_multi_chunk_offsets(be: CpuBackend) -> None:
    """Several chunks, int32 and int64 offsets, none starting at 0, into one output."""
    data = np.frombuffer(bytes(range(256)) * 4, np.uint8)
    c1 = VarChunk(np.array([5, 9, 9, 40], np.int32), data)
    c2 = VarChunk(np.array([100, 101, 300, 1000], np.int64), data)
    c3 = VarChunk(np.array([7], np.int64), data)  # empty chunk
    batch = VarRecords((c1, c3, c2))
    recs = [batch.record(i) for i in range(batch.n)]
    for call in (
        make_call("xxh64", seed=3),
        make_call("xxh32", seed=3),
        make_call("hash_bucket", num_buckets=97),
        make_call("fid", slot=5, version=1),
    ):
        _check(be, call, batch, recs)
    # A runtime-style slice (the offsets view starts mid-chunk).
    sl = batch.slice(1, 5)
    _check(be, make_call("xxh64"), sl, [sl.record(i) for i in range(sl.n)])


def test_short_records_at_buffer_edges() -> None:
    """The branch-free short-record paths load the 8 bytes ending at a record (or d[0:8]) and
    dropped steps read d[0:8]: records at the very start and end of exact-size buffers, buffers
    under 8 bytes, odd and even record counts (the xxh64 loop hashes records in pairs)."""
    rng = np.random.default_rng(23)
    for size in list(range(0, 12)) + [31, 32, 33, 64, 65, 100]:
        data = rng.integers(0, 256, size, dtype=np.uint8)
        for _ in range(6):
            cuts = np.sort(rng.integers(0, size + 1, int(rng.integers(1, 9))))
            for odt in (np.int32, np.int64):
                batch = VarRecords((VarChunk(cuts.astype(odt), data),))
                recs = [batch.record(i) for i in range(batch.n)]
                for be in BACKENDS:
                    for seed in (0, 2**32 - 1):
                        h64 = be.run(make_call("xxh64", seed=seed), batch)
                        h32 = be.run(make_call("xxh32", seed=seed), batch)
                        for i, r in enumerate(recs):
                            assert int(h64[i]) == xxhash.xxh64_intdigest(r, seed), (size, cuts, i)
                            assert int(h32[i]) == xxhash.xxh32_intdigest(r, seed), (size, cuts, i)


def test_empty_batches() -> None:
    for be in BACKENDS:
        for values in (
            [],
            np.zeros(0, np.uint64),
            pa.array([], pa.string()),
            pa.chunked_array([], pa.binary()),
        ):
            for call in (
                make_call("xxh64"),
                make_call("xxh32"),
                make_call("hash_bucket", num_buckets=5),
                make_call("fid", slot=1),
            ):
                out = be.run(call, as_records(values))
                assert out.shape == (0,) and out.dtype == result_dtype(call.op)


def test_parallel_path_large_batch_matches_serial() -> None:
    """Above the default threshold, with an uneven split, both paths agree with xxhash."""
    rng = np.random.default_rng(5)
    keys = rng.integers(0, MASK64, 70001, dtype=np.uint64, endpoint=True)
    auto = CpuBackend()
    batch = as_records(keys)
    for call in (
        make_call("xxh64", seed=9),
        make_call("hash_bucket", num_buckets=2**63 - 25),
        make_call("hash_bucket", num_buckets=12345, method="fastrange"),
        make_call("xxh32", seed=9),
    ):
        a, b = auto.run(call, batch), SER.run(call, batch)
        assert np.array_equal(a, b)
    h = auto.run(make_call("xxh64", seed=9), batch)
    for i in rng.integers(0, len(keys), 200):
        assert int(h[i]) == xxhash.xxh64_intdigest(keys[i : i + 1].tobytes(), 9)


@settings(max_examples=300, deadline=None)
@given(
    d=st.integers(1, 2**63) | st.sampled_from([1, 2, 3, 2**32, 2**63 - 1, 2**63]),
    h=st.integers(0, MASK64) | st.sampled_from([0, 1, MASK64, 2**63, 2**63 - 1]),
)
def test_mod_magic(d: int, h: int) -> None:
    """The division-free ``h % d`` used by hash_bucket's "mod" (Python model of the kernel)."""
    m, sh = mod_magic(d)
    t1 = (m * h) >> 64
    q = (t1 + ((h - t1) >> (sh & 0xFF))) >> (sh >> 8)
    assert (h - q * d) & MASK64 == h % d


# ---------------------------------------------------------------------------------------------
# bucketize
# ---------------------------------------------------------------------------------------------

_SPECIAL_F = [np.nan, -0.0, 0.0, np.inf, -np.inf, 1.0, -1.0, 1e-30, -1e30, 3.5]


@st.composite
def bucketize_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, bool]:
    dt = draw(st.sampled_from([np.float32, np.float64, np.int32, np.int64]))
    right = draw(st.booleans())
    if np.dtype(dt).kind == "f":
        elem = st.sampled_from(_SPECIAL_F) | st.floats(width=32 if dt is np.float32 else 64, allow_nan=True)
        bel = st.sampled_from([-np.inf, np.inf, 0.0, -0.0, 1.0, -1.0]) | st.floats(
            width=32 if dt is np.float32 else 64, allow_nan=False
        )
    else:
        info = np.iinfo(dt)
        elem = (
            st.sampled_from([int(info.min), int(info.max), 0, 1, -1])
            | st.integers(int(info.min), int(info.max))
            | st.integers(-50, 50)
        )
        bel = elem
    x = np.array(draw(st.lists(elem, max_size=60)), dtype=dt)
    bnd = np.unique(np.array(draw(st.lists(bel, max_size=70)), dtype=dt))
    if bnd.dtype.kind == "f" and bnd.size:  # -0.0 and 0.0 are one boundary
        bnd = bnd[np.concatenate([[True], bnd[1:] != bnd[:-1]])]
    return x, bnd, right


@HYP
@given(case=bucketize_cases())
def test_bucketize(case: tuple[np.ndarray, np.ndarray, bool]) -> None:
    x, bnd, right = case
    call = make_call("bucketize", boundaries=bnd, dtype=x.dtype, right=right)
    exp = np.searchsorted(bnd, x, side="right" if right else "left").astype(np.int32)
    for be in BACKENDS:
        got = be.run(call, as_numbers(x))
        assert got.dtype == np.int32 and np.array_equal(got, exp)
    for i in range(0, len(x), 7):  # and the golden model itself, on a sample
        assert int(got[i]) == golden_result(call, x[i].item())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("right", [True, False])
def test_bucketize_specials(dtype: type, right: bool) -> None:
    bnd = np.array([-np.inf, -1.0, -0.0, 2.0, np.inf], dtype)
    x = np.array([np.nan, -np.inf, -2.0, -1.0, -0.0, 0.0, 1.0, 2.0, np.inf, -np.nan], dtype)
    call = make_call("bucketize", boundaries=bnd, dtype=x.dtype, right=right)
    exp = [golden.bucketize(v, bnd.tolist(), right) for v in x.tolist()]
    assert exp[0] == exp[-1] == 5
    for be in BACKENDS:
        assert be.run(call, as_numbers(x)).tolist() == exp
        assert be.run(call, as_numbers(x[::2])).tolist() == exp[::2]  # non-contiguous
    none = make_call("bucketize", boundaries=[], dtype=x.dtype, right=right)
    assert SER.run(none, as_numbers(x)).tolist() == [0] * len(x)


# ---------------------------------------------------------------------------------------------
# delta_varint
# ---------------------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
seq_elems = INT64 | st.sampled_from([-(2**63), 2**63 - 1, 0, -1, 1, 63, 64, -65]) | st.integers(-1000, 1000)


@st.composite
def sequence_batches(draw: st.DrawFn) -> tuple[object, list[list[int]]]:
    seqs = draw(st.lists(st.lists(seq_elems, max_size=25), max_size=12))
    form = draw(st.sampled_from(["lists", "arrays", "pair", "arrow", "arrow-sliced"]))
    if form == "lists":
        return seqs, seqs
    if form == "arrays":
        return [np.array(s, np.int64) for s in seqs], seqs
    if form == "pair":
        vo = np.zeros(len(seqs) + 1, np.int64)
        np.cumsum([len(s) for s in seqs], out=vo[1:])
        return (vo, np.array([v for s in seqs for v in s], np.int64)), seqs
    typ = draw(st.sampled_from([pa.list_(pa.int64()), pa.large_list(pa.int64())]))
    if form == "arrow":
        return pa.array(seqs, type=typ), seqs
    full = pa.array([[5, 6]] + seqs + [[7]], type=typ)
    return full.slice(1, len(seqs)), seqs


@HYP
@given(sb=sequence_batches())
def test_delta_varint_encode_decode(sb: tuple[object, list[list[int]]]) -> None:
    values, seqs = sb
    batch = as_sequences(values)
    exp = [golden.delta_varint_encode_seq(s) for s in seqs]
    for be in BACKENDS:
        offs, data = be.run(OpCall("delta_varint_encode"), batch)
        assert offs.dtype == np.int64 and data.dtype == np.uint8 and offs.shape == (len(seqs) + 1,)
        assert offs[0] == 0
        assert [data[offs[i] : offs[i + 1]].tobytes() for i in range(len(seqs))] == exp
        vo, vals = be.run(OpCall("delta_varint_decode"), as_encoded(offs, data))
        assert vo.dtype == np.int64 and vals.dtype == np.int64 and vo[0] == 0
        assert [vals[vo[i] : vo[i + 1]].tolist() for i in range(len(seqs))] == seqs


@pytest.mark.parametrize("be", BACKENDS, ids=["serial", "parallel"])
def test_delta_varint_long_sequences(be: CpuBackend) -> None:
    """Word-store fast path (3..8-byte varints) next to sequence ends, in both paths."""
    rng = np.random.default_rng(2)
    seqs = []
    for n in (0, 1, 2, 3, 9, 100, 257):
        for scale in (1 << 10, 1 << 20, 1 << 40, 1 << 55, 1 << 62):
            seqs.append(rng.integers(-scale, scale, n).astype(np.int64))
    batch = as_sequences(seqs)
    offs, data = be.run(OpCall("delta_varint_encode"), batch)
    for i, s in enumerate(seqs):
        assert data[offs[i] : offs[i + 1]].tobytes() == golden.delta_varint_encode_seq(s.tolist())
    vo, vals = be.run(OpCall("delta_varint_decode"), as_encoded(offs, data))
    assert np.array_equal(vals, np.concatenate(seqs))


def _golden_decode_error(offs: np.ndarray, data: bytes) -> str | None:
    for i in range(len(offs) - 1):
        try:
            golden.delta_varint_decode_seq(data[offs[i] : offs[i + 1]], i, int(offs[i]))
        except ValueError as e:
            return str(e)
    return None


BAD_SEQS = [
    b"\x80",
    b"\xff" * 9,
    b"\x80" * 10 + b"\x00",
    b"\xff" * 11,
    b"\xff" * 9 + b"\x02",
    b"\x80" * 9 + b"\x7f",
    b"\x01\x81",
    b"\x00" * 3 + b"\xff" * 9 + b"\x03",
]


@pytest.mark.parametrize("be", BACKENDS, ids=["serial", "parallel"])
@pytest.mark.parametrize("bad", BAD_SEQS)
@pytest.mark.parametrize("where", [0, 3, 6])
def test_delta_varint_decode_errors(be: CpuBackend, bad: bytes, where: int) -> None:
    good = [golden.delta_varint_encode_seq([1, -5, 2**40]), b"", b"\x02"]
    seqs = [good[i % 3] for i in range(7)]
    seqs[where] = bad
    offs = np.zeros(8, np.int64)
    np.cumsum([len(s) for s in seqs], out=offs[1:])
    data = b"".join(seqs)
    msg = _golden_decode_error(offs, data)
    assert msg is not None and f"sequence {where} " in msg
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        be.run(OpCall("delta_varint_decode"), as_encoded(offs, np.frombuffer(data, np.uint8)))


@HYP
@given(st.lists(st.binary(max_size=14), max_size=8))
def test_delta_varint_decode_arbitrary_bytes(seqs: list[bytes]) -> None:
    offs = np.zeros(len(seqs) + 1, np.int64)
    np.cumsum([len(s) for s in seqs], out=offs[1:])
    data = b"".join(seqs)
    msg = _golden_decode_error(offs, data)
    for be in BACKENDS:
        batch = as_encoded(offs, np.frombuffer(data, np.uint8))
        if msg is None:
            vo, vals = be.run(OpCall("delta_varint_decode"), batch)
            exp = [golden.delta_varint_decode_seq(s) for s in seqs]
            assert [vals[vo[i] : vo[i + 1]].tolist() for i in range(len(seqs))] == exp
        else:
            with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
                be.run(OpCall("delta_varint_decode"), batch)


def test_delta_varint_sliced_inputs() -> None:
    """Encoded batches sliced by the runtime (offsets not at 0; absolute error offsets)."""
    seqs = [[1, 2], [3], [], [2**62, -(2**62)]]
    offs, data = SER.run(OpCall("delta_varint_encode"), as_sequences(seqs))
    enc = as_encoded(offs, data).slice(1, 4)
    for be in BACKENDS:
        vo, vals = be.run(OpCall("delta_varint_decode"), enc)
        assert vo.tolist()[0] == 0 and [vals[vo[i] : vo[i + 1]].tolist() for i in range(3)] == seqs[1:]
    bad = VarRecords((VarChunk(np.array([2, 3, 4], np.int64), np.frombuffer(b"\x00\x00\x02\x80", np.uint8)),))
    for be in BACKENDS:
        with pytest.raises(
            ValueError,
            match=r"^malformed varint in sequence 1 at byte offset 3: "
            r"cut off at the end of the sequence$",
        ):
            be.run(OpCall("delta_varint_decode"), bad)
    sl = as_sequences(seqs).slice(1, 4)  # value_offsets not at 0
    offs2, data2 = PAR.run(OpCall("delta_varint_encode"), Sequences(sl.value_offsets, sl.values))
    assert offs2.tolist() == (offs[1:5] - offs[1]).tolist()


# ---------------------------------------------------------------------------------------------
# Backend interface, threads, benchmarks
# ---------------------------------------------------------------------------------------------


def test_backend_interface() -> None:
    be = CpuBackend()
    assert be.name == "cpu" and be.availability().ok
    assert be.capabilities().ops == frozenset(ops.OPERATORS)
    assert CpuBackend(threads=1).threads == 1
    with pytest.raises(ValueError):
        CpuBackend(threads=0)


SEEN: list[object] = []


def _record_lengths(backend: CpuBackend, call: OpCall, batch: VarRecords) -> np.ndarray:
    """A throwaway operator's CPU kernel; it notes the batches it is given."""
    SEEN.append(batch)
    return np.array([len(batch.record(i)) for i in range(batch.n)], np.uint64)


@pytest.fixture
def record_lengths():
    entry = ops.register(
        Operator(
            "t_lengths",
            "length of each record",
            "records",
            (),
            "uint64",
            lambda c, r: len(r),
            _record_lengths,
        )
    )
    SEEN.clear()
    yield entry
    ops.unregister("t_lengths")


def _form(batch: object) -> tuple[str, str]:
    if isinstance(batch, FixedKeys):
        return "fixed", batch.keys.dtype.name
    return "var", batch.chunks[0].offsets.dtype.name  # type: ignore[attr-defined]


def test_a_registered_operator_runs_and_is_warmed_on_every_batch_form(record_lengths) -> None:
    be = CpuBackend(threads=1)
    call = make_call("t_lengths")
    assert "t_lengths" in be.capabilities().ops
    assert be.supports(call, as_records([b"ab"])) is None
    assert be.run(call, as_records([b"", b"abc", b"x" * 40])).tolist() == [0, 3, 40]
    SEEN.clear()
    be.warmup()
    assert sorted(map(_form, SEEN)) == [
        ("fixed", "uint32"),
        ("fixed", "uint64"),
        ("var", "int32"),
        ("var", "int64"),
    ]


def _float_cut(value: object, earlier: dict) -> float:
    if np.dtype(earlier["dtype"]).kind != "f":
        raise ValueError("cut needs float values")
    return float(value)  # type: ignore[arg-type]


def test_warmup_names_an_operator_without_an_example_for_a_dtype() -> None:
    ops.register(
        Operator(
            "t_cut",
            "values above a cut",
            "numbers",
            (Param("dtype", lambda v, _: np.dtype(v), shown=False), Param("cut", _float_cut)),
            "int32",
            lambda c, r: int(r > c.cut),
            lambda be, c, b: (b.values > c.cut).astype(np.int32),
            examples=({"cut": 0.5},),
        )
    )
    try:
        with pytest.raises(
            ValueError,
            match=r"^t_cut: none of its examples is valid for int32 "
            r"values; the CPU warm-up runs every operator on "
            r"every batch form of its input kind$",
        ):
            CpuBackend(threads=1).warmup()
    finally:
        ops.unregister("t_cut")


# ---------------------------------------------------------------------------------------------
# numba's on-disk cache
# ---------------------------------------------------------------------------------------------


def _run_python(code: str, cwd: Path, **env: str) -> list[int]:
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return [int(v) for v in res.stdout.split()]


def test_a_second_process_loads_every_kernel_from_the_cache(tmp_path: Path) -> None:
    # this process has run every kernel signature (the _warm fixture), so all are in the cache
    # every kernel the operators run (the ``*_ser`` kernels of every kernels_* module)
    code = (
        "import importlib, pkgutil\n"
        "import offload.host.cpu as cpu\n"
        "cpu.CpuBackend(threads=2).warmup()\n"
        "ms = [importlib.import_module(f'offload.host.cpu.{m.name}') for m in "
        "pkgutil.iter_modules(cpu.__path__) if m.name.startswith('kernels_')]\n"
        "ks = [getattr(m, n) for m in ms for n in dir(m) "
        "if n.endswith('_ser') and hasattr(getattr(m, n), 'stats')]\n"
        "print(len(ks), sum(min(1, sum(k.stats.cache_hits.values())) for k in ks), "
        "sum(sum(k.stats.cache_misses.values()) for k in ks))"
    )
    kernels, hit, misses = _run_python(code, tmp_path)
    assert kernels >= 16 and (hit, misses) == (kernels, 0)


def test_an_edit_of_the_intrinsics_recompiles_the_kernels_that_inline_them(tmp_path: Path) -> None:
    # numba checks a cached kernel against its own file only; kernels_bucketize inlines
    # intrinsics.select_unpredictable. A copy of the package, so the edit stays in tmp_path.
    import offload.host.cpu

    pkg = tmp_path / "cpu_copy"
    shutil.copytree(Path(offload.host.cpu.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import numpy as np\n"
        "from cpu_copy.kernels_bucketize import bucketize_ser as k\n"
        "out = np.empty(3, np.int32)\n"
        "k(np.array([0.5, 1.5, 2.5]), np.array([1.0, 2.0]), True, out)\n"
        "print(*out, sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))"
    )
    cache = str(tmp_path / "numba-cache")
    assert _run_python(code, tmp_path, NUMBA_CACHE_DIR=cache) == [0, 1, 2, 0, 1]  # compiled
    assert _run_python(code, tmp_path, NUMBA_CACHE_DIR=cache) == [0, 1, 2, 1, 0]  # loaded
    with open(pkg / "intrinsics.py", "a") as f:
        f.write("\n# an edit\n")
    assert _run_python(code, tmp_path, NUMBA_CACHE_DIR=cache) == [0, 1, 2, 0, 1]  # compiled


def test_bench_quick_structure() -> None:
    from offload import bench

    res = bench.run_benchmarks(quick=True, only="cpu")  # the CPU group alone
    rows = res["rows"]
    assert rows and all(
        {"name", "value", "unit", "baseline", "ratio", "target", "passed"} <= set(r) for r in rows
    )
    names = [r["name"] for r in rows]
    # the rows open with one per operator of the registry, in its order, each measured (the
    # bench iterates the registry: a new operator gets its row without an edit of the bench)
    from offload.ops import REGISTRY

    op_rows = rows[: len(REGISTRY)]
    assert [r["name"].split(" ")[0] for r in op_rows] == list(REGISTRY)
    unmeasured = [(r["name"], r["note"]) for r in op_rows if not r["name"].endswith(", 1 thread")]
    assert unmeasured == [] and all(r["value"] > 0 for r in op_rows)
    table = bench.format_table(res)
    assert isinstance(table, str) and names[0] in table


def chunked_calls(monkeypatch, be: CpuBackend) -> list[str]:
    """Grows by one entry for each kernel run in chunks on the pool."""
    chunked: list[str] = []
    real = be._chunks
    monkeypatch.setattr(be, "_chunks", lambda fn, bounds: (chunked.append("chunks"), real(fn, bounds)))
    return chunked


def test_fixed_width_records_go_parallel_from_light_factor_times_the_threshold(monkeypatch):
    from offload.host.cpu.backend import LIGHT_FACTOR

    be = CpuBackend(threads=2, parallel_threshold=1000)
    chunked = chunked_calls(monkeypatch, be)
    from offload.runtime import Runtime

    rt = Runtime([be])
    keys = np.arange(LIGHT_FACTOR * 1000, dtype=np.uint64)
    rt.sigrid_hash(keys[:2000].astype(np.int64), salt=0, max_value=10)  # twice the threshold: one thread
    rt.sigrid_hash(keys[:-1].astype(np.int64), salt=0, max_value=10)
    assert chunked == [] and LIGHT_FACTOR > 2
    rt.hash_bucket(keys, num_buckets=10)
    assert chunked == ["chunks"]
    rt.xxh64(pa.array(["ab"] * 1000))  # variable records: from the threshold itself
    assert chunked == ["chunks", "chunks"]


@pytest.mark.parametrize("name", ["xxh64", "xxh32", "murmur3_32", "farmhash64", "cityhash64"])
def test_the_lightest_hashes_go_parallel_from_lightest_factor_times_the_threshold(monkeypatch, name):
    from offload.host.cpu.backend import LIGHT_FACTOR, LIGHTEST_FACTOR
    from offload.runtime import Runtime

    be = CpuBackend(threads=2, parallel_threshold=1000)
    chunked = chunked_calls(monkeypatch, be)
    rt, serial = Runtime([be]), Runtime([CpuBackend(threads=1)])
    keys = np.arange(LIGHTEST_FACTOR * 1000, dtype=np.uint64)
    getattr(rt, name)(keys[: LIGHT_FACTOR * 1000])  # the other operators' break: one thread
    getattr(rt, name)(keys[:-1])
    assert chunked == [] and LIGHTEST_FACTOR > LIGHT_FACTOR
    assert getattr(rt, name)(keys).tolist() == getattr(serial, name)(keys).tolist()
    assert chunked == ["chunks"]
    # a bucket after XXH64 costs more per key: it goes parallel at the lower break
    rt.hash_bucket(keys[: LIGHT_FACTOR * 1000], num_buckets=10)
    assert chunked == ["chunks", "chunks"]


@pytest.mark.parametrize("hash_name", ["farmhash64", "cityhash64", "murmur3_32"])
def test_a_bucket_over_another_hash_runs_both_passes_in_chunks_from_light_factor(monkeypatch, hash_name):
    from offload.host.cpu.backend import LIGHT_FACTOR
    from offload.runtime import Runtime

    be = CpuBackend(threads=2, parallel_threshold=1000)
    chunked = chunked_calls(monkeypatch, be)
    keys = np.arange(LIGHT_FACTOR * 1000, dtype=np.uint64)
    got = Runtime([be]).hash_bucket(keys, num_buckets=10, hash=hash_name)
    assert chunked == ["chunks", "chunks"]  # the hash, then the bucket
    serial = Runtime([CpuBackend(threads=1)]).hash_bucket(keys, num_buckets=10, hash=hash_name)
    assert got.tolist() == serial.tolist()
