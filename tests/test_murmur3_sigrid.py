"""MurmurHash3_x86_32, Spark SQL's ``hash``/``xxhash64`` chaining and TorchArrow's SigridHash.

The golden models against the real libraries (the reference vectors of ``tests/reference``: mmh3,
pyspark, TorchArrow's unit tests; and the published vectors of Spark's own unit tests), then the
CPU kernels against the golden models on every record length and layout.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from offload import golden
from offload.golden_murmur3 import murmur3_32, spark_hash_row, spark_xxhash64_row
from offload.golden_sigrid import INT64_MAX, INT64_MIN, sigrid_hash, sigrid_hash_raw
from offload.host.cpu.kernels_chain import (
    murmur3_chain_fixed,
    murmur3_chain_var,
    xxh64_chain_fixed,
    xxh64_chain_var,
)
from offload.host.cpu.kernels_murmur3 import murmur3_fixed_ser, murmur3_var_ser, sigrid_ser
from tests.reference.load import Group, load

MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1
TAILS = ("standard", "spark")
SEEDS32 = (0, 42, MASK32)
LENGTHS = list(range(0, 301)) + [511, 1000, 4097]
# the reference files' column type names -> the golden models'
SPARK_TYPE = {"int32": "int", "int64": "long", "string": "string"}


def _signed32(v: int) -> int:
    return v - (1 << 32) if v >> 31 else v


# ---------------------------------------------------------------------------------------------
# Golden models against the real libraries
# ---------------------------------------------------------------------------------------------


def _group_id(g: Group) -> str:
    return g.name


@pytest.mark.parametrize("group", load("murmur3"), ids=_group_id)
def test_murmur3_golden_equals_mmh3(group: Group) -> None:
    seed = group.params["seed"]
    assert isinstance(seed, int)
    for data, expected in group.cases:
        assert murmur3_32(data, seed) == expected, (len(data), seed)


@pytest.mark.parametrize("group", load("murmur3"), ids=_group_id)
def test_murmur3_kernel_equals_mmh3(group: Group) -> None:
    seed = group.params["seed"]
    assert isinstance(seed, int)
    datas = [d for d, _ in group.cases]
    offsets, data = _pack(datas, np.int64, 0)
    out = np.empty(len(datas), np.uint32)
    murmur3_var_ser(offsets, data, np.uint64(seed), False, out)
    assert out.tolist() == [expected for _, expected in group.cases]


def _spark_row(group: Group, row: tuple) -> int:
    types = [SPARK_TYPE[t] for t in group.input_type.split(",")]
    if group.function.startswith("pyspark.sql.functions.xxhash64("):
        return spark_xxhash64_row(row, types, golden.xxh64)
    assert group.function.startswith("pyspark.sql.functions.hash(")
    return spark_hash_row(row, types)


@pytest.mark.parametrize("group", load("spark"), ids=_group_id)
def test_spark_row_golden_equals_pyspark(group: Group) -> None:
    for row, expected in group.cases:
        assert _spark_row(group, row) == expected, row


@pytest.mark.parametrize("group", load("spark"), ids=_group_id)
def test_spark_chain_kernels_equal_pyspark(group: Group) -> None:
    types = [SPARK_TYPE[t] for t in group.input_type.split(",")]
    rows = [row for row, _ in group.cases]
    xx = group.function.startswith("pyspark.sql.functions.xxhash64(")
    got = _chain_kernels(rows, types, xx, np.bool_)
    assert got == [expected for _, expected in group.cases]


@pytest.mark.parametrize("group", load("sigrid"), ids=_group_id)
def test_sigrid_golden_and_kernel_equal_torcharrow(group: Group) -> None:
    salt, max_value = group.params["salt"], group.params["max_value"]
    assert isinstance(salt, int) and isinstance(max_value, int)
    values = [v for v, _ in group.cases]
    expected = [e for _, e in group.cases]
    assert [sigrid_hash(v, salt, max_value) for v in values] == expected
    out = np.empty(len(values), np.int64)
    sigrid_ser(np.array(values, np.int64), np.int64(salt), np.int64(max_value), out)
    assert out.tolist() == expected


# Spark's Murmur3_x86_32Suite (testKnownIntegerInputs, testKnownLongInputs), seed 0.
SPARK_SUITE_INTS = [
    (0, 593689054),
    (-42, -189366624),
    (42, -1134849565),
    (-(2**31), -1718298732),
    (2**31 - 1, -1653689534),
]
SPARK_SUITE_LONGS = [
    (0, 1669671676),
    (-42, -846261623),
    (42, 1871679806),
    (-(2**63), 1366273829),
    (2**63 - 1, -2106506049),
]


@pytest.mark.parametrize(("value", "expected"), SPARK_SUITE_INTS)
def test_spark_hash_int_equals_spark_unit_tests(value: int, expected: int) -> None:
    assert spark_hash_row([value], ["int"], seed=0) == expected


@pytest.mark.parametrize(("value", "expected"), SPARK_SUITE_LONGS)
def test_spark_hash_long_equals_spark_unit_tests(value: int, expected: int) -> None:
    assert spark_hash_row([value], ["long"], seed=0) == expected


def test_tails_agree_on_whole_words_and_differ_on_a_tail() -> None:
    data = bytes(range(0x7E, 0x7E + 13))  # bytes on both sides of 0x80
    for n in range(0, 13, 4):
        assert murmur3_32(data[:n], 42, "spark") == murmur3_32(data[:n], 42)
    assert murmur3_32(b"\x80", 42, "spark") != murmur3_32(b"\x80", 42)


# ---------------------------------------------------------------------------------------------
# Golden models: errors and edges
# ---------------------------------------------------------------------------------------------


def test_golden_murmur3_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"unknown murmur3_32 tail 'java': expected 'standard' or 'spark'"):
        murmur3_32(b"x", 0, "java")
    with pytest.raises(ValueError, match=r"murmur3_32 seed must be in \[0, 2\*\*32\): got -1"):
        murmur3_32(b"x", -1)
    with pytest.raises(ValueError, match=r"murmur3_32 seed must be in \[0, 2\*\*32\): got 4294967296"):
        murmur3_32(b"x", 1 << 32)


def test_golden_spark_rows_refuse_bad_rows() -> None:
    with pytest.raises(ValueError, match="a Spark row needs one type per value: 2 values, 1 types"):
        spark_hash_row([1, 2], ["int"])
    with pytest.raises(ValueError, match="unknown Spark column type 'short'"):
        spark_hash_row([1], ["short"])
    with pytest.raises(ValueError, match="Spark int column value must be an int32: got 2147483648"):
        spark_hash_row([1 << 31], ["int"])
    with pytest.raises(ValueError, match="Spark long column value must be an int64: got 'x'"):
        spark_xxhash64_row(["x"], ["long"], golden.xxh64)
    with pytest.raises(ValueError, match="Spark string column value must be str or bytes: got 5"):
        spark_hash_row([5], ["string"])


def test_spark_row_null_leaves_the_seed_and_string_is_its_utf8() -> None:
    assert spark_hash_row([None, None], ["int", "string"]) == 42
    assert spark_xxhash64_row([None], ["long"], golden.xxh64) == 42
    assert spark_hash_row(["é"], ["string"]) == spark_hash_row([b"\xc3\xa9"], ["string"])
    assert spark_hash_row([None, "a", None], ["long", "string", "int"]) == spark_hash_row(["a"], ["string"])


def test_golden_sigrid_refuses_bad_arguments() -> None:
    for bad in (0, -1, INT64_MIN):
        with pytest.raises(ValueError, match=f"sigrid_hash max_value must be larger than 0: got {bad}"):
            sigrid_hash(1, 0, bad)
    with pytest.raises(ValueError, match=r"sigrid_hash max_value must be an int64: got 9223372036854775808"):
        sigrid_hash(1, 0, 1 << 63)
    with pytest.raises(ValueError, match="sigrid_hash value must be an int64: got -9223372036854775809"):
        sigrid_hash(INT64_MIN - 1, 0, 10)
    with pytest.raises(ValueError, match="sigrid_hash salt must be an int64: got 9223372036854775808"):
        sigrid_hash(1, INT64_MAX + 1, 10)


def _velox_floor_mod(h: int, d: int) -> int:
    """TorchArrow's Velox UDF, step by step: ``computeMultiperAndShift(d, 63)`` (with C++'s
    ``ceil(std::log2(double(d)))``), then ``q = sign ^ ((multiplier * (sign ^ h)) >> (64 + shift))``
    and ``h - q * d`` in int64."""
    ell = math.ceil(math.log2(float(d)))
    low = (1 << (64 + ell)) // d
    high = ((1 << (64 + ell)) + (1 << (64 + ell - 63))) // d
    while low // 2 < high // 2 and ell > 0:
        low, high, ell = low // 2, high // 2, ell - 1
    assert high < 1 << 64  # the C++ casts it to uint64_t
    sign = -1 if h < 0 else 0
    q = sign ^ ((high * ((sign ^ h) & MASK64)) >> (64 + ell))
    return h - q * d


SIGRID_MAX_VALUES = sorted(
    {2, 3, 7, 100, 1000003, 2**31 - 1, 2**32 + 1, 2**62 + 1, INT64_MAX}
    | {2**k + j for k in range(1, 63) for j in (-1, 0, 1)} - {1}
)


@pytest.mark.parametrize("d", SIGRID_MAX_VALUES)
def test_velox_multiply_shift_is_the_floor_modulo(d: int) -> None:
    rng = random.Random(d)
    q_max = INT64_MAX // d
    hs = [INT64_MIN, INT64_MAX, -1, 0, 1] + [rng.randrange(INT64_MIN, INT64_MAX) for _ in range(20)]
    hs += [k * d + r for k in (q_max, q_max - 1, 1, -1, -q_max) for r in (-1, 0, d - 1)]
    for h in (h for h in hs if INT64_MIN <= h <= INT64_MAX):
        assert _velox_floor_mod(h, d) == h % d, h


def test_sigrid_edges() -> None:
    assert sigrid_hash(123, 456, 1) == 0
    assert sigrid_hash(5, 7, INT64_MAX) == sigrid_hash_raw(5, 7) % INT64_MAX
    assert all(0 <= sigrid_hash(v, -3, 2) < 2 for v in (INT64_MIN, -1, 0, INT64_MAX))


# ---------------------------------------------------------------------------------------------
# Kernels against the golden models
# ---------------------------------------------------------------------------------------------


def _records(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in LENGTHS]


def _pack(records: list[bytes], dtype: type, lead: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrow-style offsets (``dtype``, first offset ``lead``) and read-only data; ``lead`` bytes
    of 0xAA before the first record and 3 after the last one must not be hashed."""
    lens = np.array([len(r) for r in records], np.int64)
    offsets = np.zeros(len(records) + 1, np.int64)
    offsets[1:] = np.cumsum(lens)
    offsets += lead
    data = np.frombuffer(b"\xaa" * lead + b"".join(records) + b"\xaa" * 3, np.uint8)
    return offsets.astype(dtype), data


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("offset_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("seed", SEEDS32)
def test_murmur3_var_kernel_equals_golden(tail: str, offset_dtype: type, seed: int) -> None:
    records = _records(seed)
    offsets, data = _pack(records, offset_dtype, 5)
    out = np.empty(len(records), np.uint32)
    murmur3_var_ser(offsets, data, np.uint64(seed), tail == "spark", out)
    for i, rec in enumerate(records):
        assert out[i] == murmur3_32(rec, seed, tail), (len(rec), seed, tail)


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("total", [0, 1, 2, 3, 4, 5])
def test_murmur3_var_kernel_on_data_shorter_than_a_word(tail: str, total: int) -> None:
    # every split of a tiny buffer into records: the tail load must stay inside the data
    data = np.frombuffer(bytes([0x81, 0x7F, 0xFF, 0x00, 0x80])[:total], np.uint8)
    for cut in range(total + 1):
        offsets = np.array([0, cut, total], np.int64)
        out = np.empty(2, np.uint32)
        murmur3_var_ser(offsets, data, np.uint64(MASK32), tail == "spark", out)
        recs = [bytes(data[:cut]), bytes(data[cut:])]
        assert out.tolist() == [murmur3_32(r, MASK32, tail) for r in recs]


def test_murmur3_var_kernel_on_no_records() -> None:
    out = np.empty(0, np.uint32)
    murmur3_var_ser(np.array([7], np.int64), np.zeros(9, np.uint8), np.uint64(0), True, out)
    murmur3_var_ser(np.array([0], np.int32), np.zeros(0, np.uint8), np.uint64(0), False, out)


KEY_EDGES = [0, 1, 0x80, 0xFFFFFFFF, 1 << 32, 1 << 63, MASK64, 0x0123456789ABCDEF]


@pytest.mark.parametrize("seed", SEEDS32)
def test_murmur3_fixed_kernel_equals_golden(seed: int) -> None:
    rng = random.Random(seed)
    k64 = KEY_EDGES + [rng.getrandbits(64) for _ in range(200)]
    k32 = [k & MASK32 for k in k64]
    keys8 = np.array(k64, np.uint64)
    keys4 = np.array(k32, np.uint32)
    keys8.setflags(write=False)
    keys4.setflags(write=False)
    out = np.empty(len(k64), np.uint32)
    murmur3_fixed_ser(keys8, np.uint64(seed), out)
    assert out.tolist() == [murmur3_32(k.to_bytes(8, "little"), seed) for k in k64]
    murmur3_fixed_ser(keys4, np.uint64(seed), out)
    assert out.tolist() == [murmur3_32(k.to_bytes(4, "little"), seed) for k in k32]


SIGRID_VALUES = [
    INT64_MIN,
    INT64_MIN + 1,
    -(2**32),
    -100,
    -2,
    -1,
    0,
    1,
    2,
    99,
    2**32,
    INT64_MAX - 1,
    INT64_MAX,
]
SIGRID_SALTS = [0, 1, -1, INT64_MIN, INT64_MAX, 0x5EED]


@pytest.mark.parametrize("max_value", [1, 2, 3, 100, 2**31 - 1, 2**32 + 1, 2**62, 2**62 + 1, INT64_MAX])
def test_sigrid_kernel_equals_golden(max_value: int) -> None:
    rng = random.Random(max_value)
    values = SIGRID_VALUES + [rng.randrange(INT64_MIN, INT64_MAX) for _ in range(100)]
    arr = np.array(values, np.int64)
    arr.setflags(write=False)
    out = np.empty(len(values), np.int64)
    for salt in SIGRID_SALTS:
        sigrid_ser(arr, np.int64(salt), np.int64(max_value), out)
        assert out.tolist() == [sigrid_hash(v, salt, max_value) for v in values], salt


# ---------------------------------------------------------------------------------------------
# Chain kernels against the golden row models
# ---------------------------------------------------------------------------------------------


def _chain_kernels(rows: list[tuple], types: list[str], xx: bool, valid_dtype: type) -> list[int]:
    """Spark ``hash`` (``xx`` False) or ``xxhash64`` of ``rows`` by the chain kernels, one call
    per column on the running seeds (42), as signed ints."""
    n = len(rows)
    seeds = np.full(n, 42, np.uint64 if xx else np.uint32)
    for c, type_ in enumerate(types):
        col = [row[c] for row in rows]
        valid = np.array([v is not None for v in col], valid_dtype)
        if type_ == "string":
            recs = [b"" if v is None else v.encode("utf-8") for v in col]
            offsets, data = _pack(recs, np.int32, 2)
            (xxh64_chain_var if xx else murmur3_chain_var)(offsets, data, valid, seeds)
        else:
            dtype = np.int32 if type_ == "int" else np.int64
            keys = np.array([0 if v is None else v for v in col], dtype)
            (xxh64_chain_fixed if xx else murmur3_chain_fixed)(keys, valid, seeds)
    return seeds.view(np.int64 if xx else np.int32).tolist()


def _random_rows(rng: random.Random, types: list[str], n: int) -> list[tuple]:
    def value(type_: str) -> int | str | None:
        if rng.random() < 0.25:
            return None
        if type_ == "int":
            return rng.choice([rng.randrange(-(2**31), 2**31), -1, 0, -(2**31), 2**31 - 1])
        if type_ == "long":
            return rng.choice([rng.randrange(-(2**63), 2**63), -1, 0, -(2**63), 2**63 - 1])
        return "".join(rng.choice("aé中😀\x00~") for _ in range(rng.randrange(0, 40)))

    return [tuple(value(t) for t in types) for _ in range(n)]


CHAIN_SCHEMAS = [
    ["int"],
    ["long"],
    ["string"],
    ["int", "long", "string"],
    ["string", "int", "string", "long"],
]


@pytest.mark.parametrize("valid_dtype", [np.bool_, np.uint8])
@pytest.mark.parametrize("schema", CHAIN_SCHEMAS, ids=",".join)
def test_chain_kernels_equal_golden_rows(schema: list[str], valid_dtype: type) -> None:
    rows = _random_rows(random.Random(len(schema)), schema, 300)
    assert _chain_kernels(rows, schema, False, valid_dtype) == [spark_hash_row(r, schema) for r in rows]
    expected_xx = [spark_xxhash64_row(r, schema, golden.xxh64) for r in rows]
    assert _chain_kernels(rows, schema, True, valid_dtype) == expected_xx


def test_murmur3_chain_var_uses_the_row_seed_and_int64_offsets() -> None:
    recs = [b"", b"\x80", b"abc", b"hello world!!"]
    offsets, data = _pack(recs, np.int64, 0)
    seeds = np.array([0, 42, MASK32, 7], np.uint32)
    valid = np.array([1, 1, 0, 1], np.uint8)
    murmur3_chain_var(offsets, data, valid, seeds)
    expected = [
        murmur3_32(b"", 0, "spark"),
        murmur3_32(b"\x80", 42, "spark"),
        MASK32,
        murmur3_32(recs[3], 7, "spark"),
    ]
    assert seeds.tolist() == expected
    assert _signed32(int(seeds[1])) == spark_hash_row([b"\x80"], ["string"])
