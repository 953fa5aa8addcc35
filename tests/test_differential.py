"""Differential regression: every operator, every value form, every backend, against golden.

Each case is a random batch of at least 100k records; the golden model's result for every record
is computed once (plain Python) and each backend's whole result is compared with it. Backends are
compared with the golden model, never with each other.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np
import pyarrow as pa
import pytest

import offload
from offload import batch as B
from offload import golden as golden_model
from offload.ops import golden_result, make_call, operator
from tests.conftest import require
from tests.lengths import BOUNDARY_LENGTHS

N = int(os.environ.get("OFFLOAD_DIFF_RECORDS", "100000"))
BACKENDS = ["cpu", "sim", "fpga"]


def _strings(rng: np.random.Generator, n: int) -> list[bytes]:
    lens = rng.integers(0, 33, n)
    lens[: len(BOUNDARY_LENGTHS)] = BOUNDARY_LENGTHS[:n]
    blob = rng.bytes(int(lens.sum()))
    offs = np.concatenate([[0], np.cumsum(lens)])
    return [blob[offs[i] : offs[i + 1]] for i in range(n)]


@cache
def case(name: str):
    """(call, batch) for one named case; deterministic."""
    rng = np.random.default_rng(abs(hash(name)) % (1 << 32))
    u64 = rng.integers(0, 1 << 64, N, dtype=np.uint64)
    u64[:4] = [0, 1, (1 << 64) - 1, 1 << 63]
    strs = _strings(rng, N)
    if name == "xxh64/u64":
        return make_call("xxh64", seed=int(rng.integers(0, 1 << 63)) * 2 + 1), B.as_records(u64)
    if name == "xxh64/arrow-large-binary-sliced":
        arr = pa.array(strs + [b"x"], pa.large_binary()).slice(1)
        return make_call("xxh64", seed=(1 << 64) - 1), B.as_records(arr)
    if name == "xxh32/int32":
        return make_call("xxh32", seed=int(rng.integers(0, 1 << 32))), B.as_records(
            rng.integers(-(1 << 31), 1 << 31, N, dtype=np.int64).astype(np.int32)
        )
    if name == "xxh64/int64-strided-2d":
        wide = rng.integers(-(1 << 63), (1 << 63) - 1, (N // 50, 100), dtype=np.int64)
        return make_call("xxh64", seed=7), B.as_records(wide[:, ::2].T)  # non-contiguous, 2-D
    if name == "fid/v1/list-of-str":
        return make_call("fid", slot=3, version=1, seed=1), B.as_records(
            [s.decode("latin-1") + "é" for s in strs]
        )
    if name == "xxh32/bytes":
        return make_call("xxh32", seed=0), B.as_records(strs)
    if name == "hash_bucket/mod/strings-chunked":
        half = N // 2
        arr = pa.chunked_array(
            [
                pa.array([s.hex() for s in strs[:half]], pa.string()),
                pa.array([s.hex() for s in strs[half:]], pa.string()),
            ]
        )
        return make_call("hash_bucket", num_buckets=int(rng.integers(1, 1 << 63)), seed=3), B.as_records(arr)
    if name == "hash_bucket/mod/u64-small":
        return make_call("hash_bucket", num_buckets=7, seed=11), B.as_records(u64)
    if name == "hash_bucket/mod/2**63":
        return make_call("hash_bucket", num_buckets=1 << 63), B.as_records(u64.view(np.int64))
    if name == "hash_bucket/fastrange":
        return make_call("hash_bucket", num_buckets=1_000_003, method="fastrange", seed=5), B.as_records(strs)
    if name == "fid/v1/uint32":
        return make_call("fid", slot=1023, version=1, seed=2), B.as_records(
            rng.integers(0, 1 << 32, N, dtype=np.uint64).astype(np.uint32)
        )
    if name == "fid/v2/pair":
        recs = B.as_records(strs)
        off, data = recs.contiguous()
        return make_call("fid", slot=32767, version=2), B.as_records((off, data))
    if name.startswith("bucketize/"):
        dt = np.dtype(name.split("/")[1])
        right = not name.endswith("left")
        if dt.kind == "f":
            x = rng.normal(0, 100, N).astype(dt)
            x[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 1.0]
            bnd = np.unique(rng.normal(0, 100, 63).astype(dt))
            bnd = np.concatenate([[-np.inf], bnd, [0.0]]).astype(dt)
            bnd = np.unique(bnd)
        else:
            info = np.iinfo(dt)
            x = rng.integers(info.min, info.max, N, dtype=dt, endpoint=True)
            x[:2] = [info.min, info.max]
            bnd = np.unique(rng.integers(info.min, info.max, 64, dtype=dt, endpoint=True))
            x[2 : 2 + len(bnd)] = bnd
        return make_call("bucketize", boundaries=bnd, dtype=dt, right=right), B.as_numbers(x)
    if name == "farmhash64/strings":
        return make_call("farmhash64"), B.as_records(strs)
    if name == "cityhash64/u64":
        return make_call("cityhash64"), B.as_records(u64)
    if name == "cityhash64/seeded-strings-chunked":
        half = N // 2
        arr = pa.chunked_array([pa.array(strs[:half], pa.binary()), pa.array(strs[half:], pa.binary())])
        return make_call("cityhash64", seed=(1 << 64) - 1), B.as_records(arr)
    if name == "murmur3_32/spark-strings":
        return make_call("murmur3_32", seed=42, tail="spark"), B.as_records(strs)
    if name == "murmur3_32/int32":
        x = rng.integers(-(1 << 31), 1 << 31, N, dtype=np.int64).astype(np.int32)
        return make_call("murmur3_32", seed=int(rng.integers(0, 1 << 32))), B.as_records(x)
    if name == "sigrid_hash/int64":
        salt = int(rng.integers(-(1 << 63), 1 << 63))
        call = make_call("sigrid_hash", salt=salt, max_value=1000, dtype=np.int64)
        return call, B.as_numbers(u64.view(np.int64))
    if name == "decimal_hash_bucket/int64":
        call = make_call("decimal_hash_bucket", num_buckets=1_000_003, dtype=np.int64)
        return call, B.as_numbers(u64.view(np.int64))
    if name == "decimal_hash_bucket/int32":
        x = rng.integers(-(1 << 31), 1 << 31, N, dtype=np.int64).astype(np.int32)
        return make_call("decimal_hash_bucket", num_buckets=97, dtype=np.int32), B.as_numbers(x)
    if name == "hash_bucket/farmhash64/mod-strings":
        return make_call("hash_bucket", num_buckets=1_000_003, hash="farmhash64"), B.as_records(strs)
    if name == "fid/cityhash64/v2-u64":
        return make_call("fid", slot=77, hash="cityhash64"), B.as_records(u64)
    if name == "hash_bucket/murmur3_32/mod-int64":
        return make_call("hash_bucket", num_buckets=1 << 20, seed=42, hash="murmur3_32"), B.as_records(
            u64.view(np.int64)
        )
    if name == "delta_varint_encode":
        lens = rng.integers(0, 9, N)
        vals = rng.integers(-(1 << 63), (1 << 63) - 1, int(lens.sum()), dtype=np.int64)
        vals[::3] = np.cumsum(rng.integers(0, 100, vals[::3].shape[0]))
        vo = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        return make_call("delta_varint_encode"), B.as_sequences((vo, vals))
    if name == "delta_varint_decode":
        lens = rng.integers(0, 9, N)
        vals = rng.integers(-(1 << 63), (1 << 63) - 1, int(lens.sum()), dtype=np.int64)
        seqs = np.split(vals, np.cumsum(lens)[:-1])
        parts = [golden_model.delta_varint_encode_seq(x.tolist()) for x in seqs]
        offs = np.concatenate([[0], np.cumsum([len(x) for x in parts])]).astype(np.int64)
        return make_call("delta_varint_decode"), B.as_encoded(offs, b"".join(parts))
    raise KeyError(name)


CASES = [
    "xxh64/u64",
    "xxh64/arrow-large-binary-sliced",
    "xxh64/int64-strided-2d",
    "xxh32/int32",
    "xxh32/bytes",
    "fid/v1/list-of-str",
    "hash_bucket/mod/strings-chunked",
    "hash_bucket/mod/u64-small",
    "hash_bucket/mod/2**63",
    "hash_bucket/fastrange",
    "fid/v1/uint32",
    "fid/v2/pair",
    "bucketize/float32",
    "bucketize/float64/left",
    "bucketize/int32",
    "bucketize/int64/left",
    "delta_varint_encode",
    "delta_varint_decode",
    "farmhash64/strings",
    "cityhash64/u64",
    "cityhash64/seeded-strings-chunked",
    "murmur3_32/spark-strings",
    "murmur3_32/int32",
    "sigrid_hash/int64",
    "decimal_hash_bucket/int64",
    "decimal_hash_bucket/int32",
    "hash_bucket/farmhash64/mod-strings",
    "fid/cityhash64/v2-u64",
    "hash_bucket/murmur3_32/mod-int64",
]


def _runs_on(backend: str, name: str) -> bool:
    """Devices run the operators with an engine op code, if their build has it: the sim
    backend's full build every one, the simulated PYNQ-Z2 (fpga) all but the FarmHash ones
    (farmhash64, cityhash64, decimal_hash_bucket, and hash_bucket/fid over them: a case of
    another hash names it); the host backends run every one."""
    op, *rest = name.split("/")
    farm = op in ("farmhash64", "cityhash64", "decimal_hash_bucket") or bool(
        {"farmhash64", "cityhash64"} & set(rest)
    )
    return backend == "cpu" or (operator(op).wire is not None and not (backend == "fpga" and farm))


PAIRS = [(b, n) for n in CASES for b in BACKENDS if _runs_on(b, n)]


@cache
def golden(name: str) -> list:
    call, batch = case(name)
    return [golden_result(call, batch.record(i)) for i in range(batch.n)]


def as_list(op: str, res) -> list:
    if isinstance(res, tuple):
        o, d = res
        seg = [d[o[i] : o[i + 1]] for i in range(len(o) - 1)]
        return [x.tobytes() if operator(op).result == "encoded" else x.tolist() for x in seg]
    return res.tolist()


@cache
def runtime(name: str) -> offload.Runtime:
    rt = offload.Runtime(backends=[name], fallback=False, fpga="sim")
    require(rt, name)
    return rt


def difference(backend: str, name: str, got: list, want: list) -> str | None:
    """None when ``got == want``, else the message naming the first differing record."""
    if got == want:
        return None
    bad = (
        next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
        if len(got) == len(want)
        else min(len(got), len(want))
    )
    return (
        f"{backend} differs from golden for {name} at record {bad}: "
        f"{got[bad] if bad < len(got) else None!r} != {want[bad] if bad < len(want) else None!r}"
    )


@pytest.mark.xdist_group("differential")
@pytest.mark.parametrize("backend,name", PAIRS, ids=[f"{n}-{b}" for b, n in PAIRS])
def test_backend_equals_golden(backend, name):
    rt = runtime(backend)
    call, batch = case(name)
    assert batch.n >= min(N, 25_000)
    res = rt.run(call, batch, backend=backend)
    why = difference(backend, name, as_list(call.op, res), golden(name))
    if why is not None:
        pytest.fail(why)
    assert rt.stats()["last_call"]["segments"] == [(backend, 0, batch.n)]


def test_the_comparison_can_fail():
    """A corrupted golden value, or a result one record short, fails the check with the first
    differing record named (the bench is not vacuous)."""
    call, batch = case("xxh64/u64")
    got = as_list(call.op, offload.Runtime(backends=["cpu"]).run(call, batch))
    want = list(golden("xxh64/u64"))
    assert difference("cpu", "xxh64/u64", got, want) is None
    k = 12345 % len(want)
    bad = want[:k] + [want[k] ^ (1 << 17)] + want[k + 1 :]
    assert difference("cpu", "xxh64/u64", got, bad) == (
        f"cpu differs from golden for xxh64/u64 at record {k}: {got[k]!r} != {bad[k]!r}"
    )
    assert difference("cpu", "xxh64/u64", got[:-1], want) == (
        f"cpu differs from golden for xxh64/u64 at record {len(want) - 1}: None != {want[-1]!r}"
    )
