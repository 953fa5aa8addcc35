"""Errors are API: every bad input of the contract's "Values" (docs/operators.md) and every bad
parameter, exact messages."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

import offload
from tests.conftest import a_dtype_it_takes

K = np.arange(4, dtype=np.uint64)
NULL_HINT = 'fill or drop nulls first, or pass nulls="null" (null results) or nulls=<a replacement value>'


def _m(s: str) -> str:
    return "^" + re.escape(s) + "$"


BAD_BATCHES = [
    # (id, call, exception, exact message)
    (
        "float64 array",
        lambda: offload.xxh64(np.zeros(3)),
        TypeError,
        "unsupported array dtype float64: expected int32, uint32, int64 or uint64 keys (8/16-bit ints, "
        "floats and bools are not hashed; cast explicitly)",
    ),
    (
        "bool array",
        lambda: offload.xxh64(np.zeros(3, bool)),
        TypeError,
        "unsupported array dtype bool: expected int32, uint32, int64 or uint64 keys (8/16-bit ints, "
        "floats and bools are not hashed; cast explicitly)",
    ),
    (
        "int8 array",
        lambda: offload.xxh32(np.zeros(3, np.int8)),
        TypeError,
        "unsupported array dtype int8: expected int32, uint32, int64 or uint64 keys (8/16-bit ints, "
        "floats and bools are not hashed; cast explicitly)",
    ),
    (
        "uint16 array",
        lambda: offload.xxh32(np.zeros(3, np.uint16)),
        TypeError,
        "unsupported array dtype uint16: expected int32, uint32, int64 or uint64 keys (8/16-bit ints, "
        "floats and bools are not hashed; cast explicitly)",
    ),
    (
        "python int",
        lambda: offload.xxh64(5),
        TypeError,
        "unsupported batch type int: expected a numpy int32/uint32/int64/uint64 array, a sequence of "
        "bytes/bytearray/memoryview/str, a pyarrow integer, binary, string or dictionary array (or chunked "
        "array), or a pair "
        "(offsets int64, data uint8)",
    ),
    (
        "None",
        lambda: offload.xxh64(None),
        TypeError,
        "unsupported batch type NoneType: expected a numpy int32/uint32/int64/uint64 array, a sequence "
        "of bytes/bytearray/memoryview/str, a pyarrow integer, binary, string or dictionary array (or "
        "chunked array), or a pair "
        "(offsets int64, data uint8)",
    ),
    (
        "single str",
        lambda: offload.xxh64("abc"),
        TypeError,
        "a single str is not a batch: pass a sequence of records, e.g. [value]",
    ),
    (
        "single bytes",
        lambda: offload.xxh64(b"abc"),
        TypeError,
        "a single bytes is not a batch: pass a sequence of records, e.g. [value]",
    ),
    (
        "list of ints",
        lambda: offload.xxh64([1, 2]),
        TypeError,
        "element 0 has unsupported type int: expected bytes, bytearray, memoryview or str",
    ),
    (
        "None element",
        lambda: offload.xxh64([b"a", b"b", None]),
        ValueError,
        "null at index 2: " + NULL_HINT,
    ),
    (
        "float element",
        lambda: offload.xxh64(["a", 1.5]),
        TypeError,
        "element 1 has unsupported type float: expected bytes, bytearray, memoryview or str",
    ),
    (
        "mixed str/bytes",
        lambda: offload.xxh64(["a", "b", b"c"]),
        TypeError,
        "mixed element types: element 0 is str but element 2 is bytes",
    ),
    (
        "lone surrogate",
        lambda: offload.xxh64(["ok", "\ud800"]),
        ValueError,
        "element 1 is not encodable as UTF-8: surrogates not allowed",
    ),
    (
        "nested list element",
        lambda: offload.xxh64([b"a", [300]]),
        TypeError,
        "element 1 has unsupported type list: expected bytes, bytearray, memoryview or str",
    ),
    (
        "negative int element",
        lambda: offload.xxh64([b"a", -1]),
        TypeError,
        "element 1 has unsupported type int: expected bytes, bytearray, memoryview or str",
    ),
    (
        "huge int element",
        lambda: offload.xxh64([b"a", 2**40]),
        TypeError,
        "element 1 has unsupported type int: expected bytes, bytearray, memoryview or str",
    ),
    (
        "overflowing int element",
        lambda: offload.xxh64([b"a", 2**70]),
        TypeError,
        "element 1 has unsupported type int: expected bytes, bytearray, memoryview or str",
    ),
    (
        "int element after str",
        lambda: offload.xxh64(["a", 2**70]),
        TypeError,
        "element 1 has unsupported type int: expected bytes, bytearray, memoryview or str",
    ),
    (
        "non-ASCII then bad",
        lambda: offload.xxh64(["é", "é", 1.5]),
        TypeError,
        "element 2 has unsupported type float: expected bytes, bytearray, memoryview or str",
    ),
    (
        "masked key",
        lambda: offload.xxh64(np.ma.array(K, mask=[0, 0, 0, 1])),
        ValueError,
        "masked value at index 3: masked values cannot be processed (fill or drop them first)",
    ),
    (
        "masked 2-D key",
        lambda: offload.xxh32(np.ma.array(K.reshape(2, 2), mask=[[0, 0], [1, 0]])),
        ValueError,
        "masked value at index (1, 0): masked values cannot be processed (fill or drop them first)",
    ),
    (
        "masked bucketize x",
        lambda: offload.bucketize(np.ma.array([1.0, 2.0], mask=[1, 0]), [0.0]),
        ValueError,
        "masked value at index 0: masked values cannot be processed (fill or drop them first)",
    ),
    (
        "masked sequence",
        lambda: offload.delta_varint_encode([[3], np.ma.array([1, 2], mask=[0, 1])]),
        ValueError,
        "masked value in sequence 1 at index 1: masked values cannot be processed (fill or drop them first)",
    ),
    (
        "masked offsets",
        lambda: offload.delta_varint_decode(np.ma.array([0, 1], mask=[0, 1]), np.zeros(1, np.uint8)),
        ValueError,
        "masked offset at index 1: masked values cannot be processed (fill or drop them first)",
    ),
    (
        "big-endian uint16",
        lambda: offload.xxh32(np.zeros(3, ">u2")),
        TypeError,
        "unsupported array dtype >u2: expected int32, uint32, int64 or uint64 keys (8/16-bit ints, "
        "floats and bools are not hashed; cast explicitly)",
    ),
    (
        "arrow null",
        lambda: offload.xxh64(pa.array(["a", None, "c"])),
        ValueError,
        "null at index 1: " + NULL_HINT,
    ),
    (
        "chunked arrow null",
        lambda: offload.xxh64(pa.chunked_array([["a", "b"], ["c", None]])),
        ValueError,
        "null at index 3: " + NULL_HINT,
    ),
    (
        "arrow double",
        lambda: offload.xxh64(pa.array([1.0, 2.0])),
        TypeError,
        "unsupported pyarrow type double: expected int32, uint32, int64, uint64, binary, string, "
        "large_binary, large_string, binary_view, string_view, or a dictionary of one of them",
    ),
    (
        "offsets not int64",
        lambda: offload.xxh64((np.array([0, 1], np.int32), np.zeros(1, np.uint8))),
        TypeError,
        "(offsets, data): offsets must be a numpy int64 array, got 1-D numpy array of dtype int32",
    ),
    (
        "data not uint8",
        lambda: offload.xxh64((np.array([0, 1]), np.zeros(1, np.int8))),
        TypeError,
        "(offsets, data): data must be a 1-D numpy uint8 array, got 1-D numpy array of dtype int8",
    ),
    (
        "offsets[0] != 0",
        lambda: offload.xxh64((np.array([1, 2]), np.zeros(2, np.uint8))),
        ValueError,
        "offsets[0] must be 0, got 1",
    ),
    (
        "offsets end",
        lambda: offload.xxh64((np.array([0, 1]), np.zeros(2, np.uint8))),
        ValueError,
        "offsets[-1] must equal len(data) = 2, got 1",
    ),
    (
        "decreasing offsets",
        lambda: offload.xxh64((np.array([0, 3, 2, 4]), np.zeros(4, np.uint8))),
        ValueError,
        "offsets must be non-decreasing: offsets[2] = 2 < offsets[1] = 3",
    ),
]

BAD_PARAMS = [
    ("negative seed", lambda: offload.xxh64(K, seed=-1), ValueError, "seed must be in [0, 2**64), got -1"),
    (
        "seed too big 64",
        lambda: offload.xxh64(K, seed=1 << 64),
        ValueError,
        "seed must be in [0, 2**64), got 18446744073709551616",
    ),
    (
        "seed too big 32",
        lambda: offload.xxh32(K, seed=1 << 32),
        ValueError,
        "seed must be in [0, 2**32), got 4294967296",
    ),
    ("float seed", lambda: offload.xxh64(K, seed=1.0), TypeError, "seed must be an int, got float"),
    ("bool seed", lambda: offload.xxh64(K, seed=True), TypeError, "seed must be an int, got bool"),
    (
        "num_buckets 0",
        lambda: offload.hash_bucket(K, 0),
        ValueError,
        "num_buckets must be in [1, 2**63], got 0",
    ),
    (
        "num_buckets > 2**63",
        lambda: offload.hash_bucket(K, (1 << 63) + 1),
        ValueError,
        "num_buckets must be in [1, 2**63], got 9223372036854775809",
    ),
    (
        "unknown method",
        lambda: offload.hash_bucket(K, 10, method="div"),
        ValueError,
        "unknown hash_bucket method 'div': expected 'mod' or 'fastrange'",
    ),
    (
        "slot v2 too big",
        lambda: offload.fid(K, slot=32768),
        ValueError,
        "slot must be in [0, 32768) for fid version 2, got 32768",
    ),
    (
        "slot v1 too big",
        lambda: offload.fid(K, slot=1024, version=1),
        ValueError,
        "slot must be in [0, 1024) for fid version 1, got 1024",
    ),
    (
        "negative slot",
        lambda: offload.fid(K, slot=-1),
        ValueError,
        "slot must be in [0, 32768) for fid version 2, got -1",
    ),
    (
        "unknown version",
        lambda: offload.fid(K, slot=1, version=3),
        ValueError,
        "unknown fid version 3: expected 1 or 2",
    ),
    (
        "float version",
        lambda: offload.fid(K, slot=1, version=2.0),
        TypeError,
        "version must be an int, got float",
    ),
    (
        "numpy float version",
        lambda: offload.fid(K, slot=1, version=np.float64(1)),
        TypeError,
        "version must be an int, got float64",
    ),
    (
        "bool version",
        lambda: offload.fid(K, slot=1, version=True),
        TypeError,
        "version must be an int, got bool",
    ),
    ("float slot", lambda: offload.fid(K, slot=1.0), TypeError, "slot must be an int, got float"),
    (
        "float num_buckets",
        lambda: offload.hash_bucket(K, 10.0),
        TypeError,
        "num_buckets must be an int, got float",
    ),
    (
        "numpy float seed",
        lambda: offload.xxh32(K, seed=np.float32(1)),
        TypeError,
        "seed must be an int, got float32",
    ),
    (
        "method not a str",
        lambda: offload.hash_bucket(K, 10, method=1),
        TypeError,
        "method must be a str, got int",
    ),
    (
        "unsorted boundaries",
        lambda: offload.bucketize(np.zeros(2), [1.0, 3.0, 2.0]),
        ValueError,
        "boundaries must be strictly increasing: boundaries[2] = 2.0 <= boundaries[1] = 3.0",
    ),
    (
        "repeated boundaries",
        lambda: offload.bucketize(np.zeros(2), [1.0, 1.0]),
        ValueError,
        "boundaries must be strictly increasing: boundaries[1] = 1.0 <= boundaries[0] = 1.0",
    ),
    (
        "masked boundary",
        lambda: offload.bucketize(np.zeros(2), np.ma.array([0.0, 1.0], mask=[0, 1])),
        ValueError,
        "boundaries must not be masked (boundaries[1])",
    ),
    (
        "NaN boundary",
        lambda: offload.bucketize(np.zeros(2), [0.0, np.nan]),
        ValueError,
        "boundaries must not contain NaN (boundaries[1])",
    ),
    (
        "boundary not float32",
        lambda: offload.bucketize(np.zeros(2, np.float32), [0.1]),
        ValueError,
        "boundaries[0] = 0.1 is not exactly representable in float32",
    ),
    (
        "fractional int boundary",
        lambda: offload.bucketize(np.zeros(2, np.int64), [0.5]),
        ValueError,
        "boundaries[0] = 0.5 is not exactly representable in int64",
    ),
    (
        "int32 overflow boundary",
        lambda: offload.bucketize(np.zeros(2, np.int32), [1 << 31]),
        ValueError,
        "boundaries[0] = 2147483648 is not exactly representable in int32",
    ),
    (
        "2-D boundaries",
        lambda: offload.bucketize(np.zeros(2), [[1.0]]),
        ValueError,
        "boundaries must be 1-D, got shape (1, 1)",
    ),
    (
        "string boundaries",
        lambda: offload.bucketize(np.zeros(2), ["a"]),
        TypeError,
        "boundaries must be numbers, got dtype <U1",
    ),
    (
        "bucketize x list",
        lambda: offload.bucketize([1.0], [0.0]),
        TypeError,
        "bucketize: x must be a numpy float32, float64, int32 or int64 array, got list",
    ),
    (
        "bucketize x uint8",
        lambda: offload.bucketize(np.zeros(2, np.uint8), [0]),
        TypeError,
        "bucketize: unsupported x dtype uint8: expected float32, float64, int32 or int64",
    ),
    (
        "bad right",
        lambda: offload.bucketize(np.zeros(2), [0.0], right="yes"),
        TypeError,
        "right must be a bool, got str",
    ),
    (
        "unknown backend",
        lambda: offload.xxh64(K, backend="gpu"),
        ValueError,
        "unknown backend 'gpu': expected 'auto' or one of cpu, sim, fpga, smartnic",
    ),
    (
        "unknown verify",
        lambda: offload.xxh64(K, verify="most"),
        ValueError,
        "unknown verify mode 'most': expected 'off', 'sample' or 'full'",
    ),
    (
        "sequence of floats",
        lambda: offload.delta_varint_encode([np.zeros(2)]),
        TypeError,
        "sequence 0 must be a 1-D signed integer array, got 1-D numpy array of dtype float64",
    ),
    (
        "sequence out of int64",
        lambda: offload.delta_varint_encode([[1], [1 << 63]]),
        ValueError,
        "sequence 1 element 0 = 9223372036854775808 is outside int64",
    ),
    (
        "sequence bad element",
        lambda: offload.delta_varint_encode([[1, "2"]]),
        TypeError,
        "sequence 0 element 1 has type str: expected int",
    ),
    (
        "sequences not a list",
        lambda: offload.delta_varint_encode(np.zeros(3, np.int64)),
        TypeError,
        "delta_varint_encode: sequences must be a list of 1-D int64 arrays, a pyarrow list<int64> array "
        "or (value_offsets, values), got 1-D numpy array of dtype int64",
    ),
    (
        "arrow list<int32>",
        lambda: offload.delta_varint_encode(pa.array([[1]], pa.list_(pa.int32()))),
        TypeError,
        "delta_varint_encode: unsupported pyarrow type list<item: int32>: expected "
        "list<int64> or large_list<int64>",
    ),
    (
        "value_offsets bad",
        lambda: offload.delta_varint_encode((np.array([0, 5]), np.zeros(2, np.int64))),
        ValueError,
        "value_offsets[-1] must equal len(values) = 2, got 5",
    ),
    (
        "varint cut off",
        lambda: offload.delta_varint_decode(np.array([0, 1, 3]), np.array([2, 0x80, 0x80], np.uint8)),
        ValueError,
        "malformed varint in sequence 1 at byte offset 1: cut off at the end of the sequence",
    ),
    (
        "varint 10th byte",
        lambda: offload.delta_varint_decode(np.array([0, 10]), np.array([0xFF] * 9 + [0x02], np.uint8)),
        ValueError,
        "malformed varint in sequence 0 at byte offset 0: 10th byte is 0x02, above 0x01 (value "
        "exceeds 64 bits)",
    ),
    (
        "varint too long",
        lambda: offload.delta_varint_decode(
            np.array([0, 2, 13]), np.array([0, 0] + [0x80] * 10 + [0], np.uint8)
        ),
        ValueError,
        "malformed varint in sequence 1 at byte offset 2: longer than 10 bytes",
    ),
]


@pytest.mark.parametrize("case", BAD_BATCHES + BAD_PARAMS, ids=[c[0] for c in BAD_BATCHES + BAD_PARAMS])
def test_bad_input_raises_exact_message(case):
    _, fn, exc, msg = case
    with pytest.raises(exc, match=_m(msg)):
        fn()


def _scalar_params():
    from offload.ops import REGISTRY

    for entry in REGISTRY.values():
        for p in entry.params:
            if p.shown and p.name != "boundaries":
                yield entry, p


@pytest.mark.parametrize(
    "entry,param", list(_scalar_params()), ids=[f"{e.name}.{p.name}" for e, p in _scalar_params()]
)
def test_every_scalar_parameter_refuses_a_float(entry, param):
    """Each registered operator's scalar parameters take their own type only (a float is never
    silently an int, a str or a bool)."""
    from offload.ops import make_call

    base = dict(
        entry.examples[0], **({"dtype": a_dtype_it_takes(entry)} if entry.inputs == "numbers" else {})
    )
    base[param.name] = 1.5
    with pytest.raises(TypeError, match=rf"^{param.name} must be (an int|a str|a bool), got float$"):
        make_call(entry.name, **base)


def test_named_unavailable_backend_says_why(monkeypatch):
    monkeypatch.delenv("OFFLOAD_SMARTNIC", raising=False)
    rt = offload.Runtime(backends=["smartnic", "cpu"])
    with pytest.raises(offload.BackendUnavailable, match=r"^backend 'smartnic' is unavailable: .+"):
        rt.xxh64(K, backend="smartnic")


def test_runtime_constructor_errors():
    with pytest.raises(
        ValueError, match=_m("unknown backend 'tpu': expected one of cpu, sim, fpga, smartnic")
    ):
        offload.Runtime(backends=["tpu"])
    with pytest.raises(ValueError, match=_m("backend 'cpu' is listed twice")):
        offload.Runtime(backends=["cpu", "cpu"])
    with pytest.raises(ValueError, match=_m("a Runtime needs at least one backend")):
        offload.Runtime(backends=[])
    with pytest.raises(ValueError, match=_m("sample_size must be a positive int, got 0")):
        offload.Runtime(sample_size=0)


BIG_ENDIAN = [(">u8", np.uint64), (">i8", np.int64), (">u4", np.uint32), (">i4", np.int32)]


@pytest.mark.parametrize("dtype,native", BIG_ENDIAN, ids=[d for d, _ in BIG_ENDIAN])
def test_non_native_byte_order_hashes_the_values(dtype, native):
    x = np.array([0, 1, 2**31 - 1, 7, 12345], dtype=native).reshape(5, 1)
    assert offload.xxh64(x.astype(dtype), seed=3).tolist() == offload.xxh64(x, seed=3).tolist()
    assert offload.xxh32(x.astype(dtype)).tolist() == offload.xxh32(x).tolist()
    assert offload.fid(x.astype(dtype), slot=4).tolist() == offload.fid(x, slot=4).tolist()


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i4", ">i8"])
def test_non_native_byte_order_bucketizes_the_values(dtype):
    x = np.array([-1, 0, 0.5, 2, np.nan if dtype[1] == "f" else 3]).astype(dtype)
    native = x.astype(x.dtype.newbyteorder("="))
    assert offload.bucketize(x, [0, 2]).tolist() == offload.bucketize(native, [0, 2]).tolist()


def test_non_native_offsets_and_sequences_are_read_as_values():
    seqs = [np.array([5, 3, 9], ">i8"), np.array([], ">i8")]
    off, data = offload.delta_varint_encode(seqs)
    ref_off, ref_data = offload.delta_varint_encode([s.astype(np.int64) for s in seqs])
    assert (off.tolist(), data.tolist()) == (ref_off.tolist(), ref_data.tolist())
    vo, vals = offload.delta_varint_decode(off.astype(">i8"), data)
    assert (vo.tolist(), vals.tolist()) == ([0, 3, 3], [5, 3, 9])


def test_an_unmasked_masked_array_is_hashed_as_its_data():
    assert offload.xxh64(np.ma.array(K, mask=False)).tolist() == offload.xxh64(K).tolist()
