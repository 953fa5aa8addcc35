"""offload.compat: every drop-in equals its framework's function on the real libraries' vectors.

The vectors of tests/reference (tensorflow.json: ``tf.strings.to_hash_bucket_fast``, Keras
``Hashing`` and ``categorical_column_with_hash_bucket``; spark.json: ``F.hash`` / ``F.xxhash64``
with nulls and several columns; sigrid.json: TorchArrow's unit tests) are checked case for case on
the CPU backend, through an in-process SmartNIC service and on the engine (the sim backend's
full build; Spark's and TorchArrow's also on the simulated PYNQ-Z2's default build); then what
runs where on the engine builds, the error messages, shapes, input forms, ``verify=``, the
decimal-text kernel, and the code examples of docs/compatibility.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import offload
import offload.compat
from offload import BackendUnavailable, BitExactError
from offload.compat import keras, spark, tf, torcharrow
from offload.engine_map import DEFAULT_RECORD_MAX
from offload.host.cpu import kernels_text
from offload.host.cpu.kernels_text import format_decimal
from offload.host.smartnic.testing import InProcessService
from tests.conftest import ran_only_on
from tests.reference.load import Group, load

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]
TF = load("tensorflow")
SPARK = load("spark")
SIGRID = load("sigrid")
ARROW = {"int32": pa.int32(), "int64": pa.int64(), "string": pa.string()}


# ---------------------------------------------------------------------------------------------
# The reference vectors: each group is one call of a drop-in on all its inputs
# ---------------------------------------------------------------------------------------------


def compute(group: Group, **run: Any) -> np.ndarray:
    """The drop-in's result for every input of a reference group (``run``: backend, runtime...)."""
    inputs = [x for x, _ in group.cases]
    p = group.params
    if group.function.startswith("tf.strings.to_hash_bucket_fast"):
        return tf.to_hash_bucket_fast(inputs, p["num_buckets"], **run)
    if group.function.startswith("keras.layers.Hashing"):
        return keras.hashing(_keras_values(group, inputs), p["num_bins"], p["mask_value"], **run)
    if group.function.startswith("tf.feature_column.categorical_column_with_hash_bucket"):
        # a string column hashes like to_hash_bucket_fast, an integer one like Keras (decimal text)
        if group.input_type == "bytes":
            return tf.to_hash_bucket_fast(pa.array(inputs, pa.binary()), p["num_buckets"], **run)
        return keras.hashing(np.array(inputs, np.int64), p["num_buckets"], **run)
    if group.function.startswith("pyspark.sql.functions."):
        types = group.input_type.split(",")
        columns = [pa.array([row[j] for row in inputs], ARROW[t]) for j, t in enumerate(types)]
        fn = spark.hash if group.function.startswith("pyspark.sql.functions.hash(") else spark.xxhash64
        return fn(*columns, **run)
    if group.function.startswith("torcharrow.functional.sigrid_hash"):
        return torcharrow.sigrid_hash(np.array(inputs, np.int64), p["salt"], p["max_value"], **run)
    raise AssertionError(f"no drop-in for {group.function}")


def _keras_values(group: Group, inputs: list[Any]) -> Any:
    if group.input_type == "bytes":
        return pa.array(inputs, pa.binary())
    return np.array(inputs, np.dtype(group.input_type))


def check_group(group: Group, **run: Any) -> None:
    """Every case of the group: the drop-in's value equals the library's, element for element."""
    got = compute(group, **run)
    expected = [e for _, e in group.cases]
    assert got.shape == (len(expected),)
    wrong = [(i, group.cases[i][0], e, int(g)) for i, (e, g) in enumerate(zip(expected, got)) if e != g]
    assert wrong == [], f"{group.name}: (index, input, library, offload): {wrong[:5]}"


def _dtype_of(group: Group) -> np.dtype:
    return (
        np.dtype(np.int32) if group.function.startswith("pyspark.sql.functions.hash(") else np.dtype(np.int64)
    )


ALL = TF + SPARK + SIGRID


@pytest.mark.parametrize("group", ALL, ids=[g.name for g in ALL])
def test_the_drop_in_equals_the_library_on_every_reference_case(group: Group) -> None:
    check_group(group, backend="cpu", verify="full")
    assert compute(group, backend="cpu").dtype == _dtype_of(group)


def test_every_reference_set_of_the_frameworks_is_checked() -> None:
    assert {g.function.split("(")[0] for g in ALL} == {
        "tf.strings.to_hash_bucket_fast",
        "keras.layers.Hashing",
        "tf.feature_column.categorical_column_with_hash_bucket",
        "pyspark.sql.functions.hash",
        "pyspark.sql.functions.xxhash64",
        "torcharrow.functional.sigrid_hash",
    }
    assert sum(len(g.cases) for g in ALL) > 20000


def test_a_corrupted_reference_value_fails() -> None:
    """The check is not vacuous: one wrong expected value (in a middle row, on a null row of a
    multi-column Spark group, and in a Keras group) fails it."""
    for name in ("keras.Hashing/int32/num_bins=1000/mask_value=42", "hash/int32,int64,string"):
        group = next(g for g in ALL if g.name == name)
        check_group(group, backend="cpu")
        for i in (len(group.cases) // 2, len(group.cases) - 1):
            cases = list(group.cases)
            cases[i] = (cases[i][0], cases[i][1] + 1)
            with pytest.raises(
                AssertionError, match=re.escape(f"{name}: (index, input, library, offload): [({i}, ")
            ):
                check_group(group._replace(cases=cases), backend="cpu")


@pytest.fixture(scope="module")
def nic_runtime():
    with InProcessService(warmup=False) as svc:
        rt = offload.Runtime(backends=["smartnic", "cpu"], smartnic=svc.address)
        yield rt
        rt.close()


@pytest.mark.parametrize("group", ALL, ids=[g.name for g in ALL])
def test_the_drop_in_equals_the_library_through_the_smartnic_service(group: Group, nic_runtime) -> None:
    """The part that routes (the first column, the hash itself) runs on the SmartNIC backend."""
    nic_runtime.reset_stats()
    check_group(group, backend="smartnic", runtime=nic_runtime)
    ran_only_on(nic_runtime, "smartnic")


# ---------------------------------------------------------------------------------------------
# On the engine: the sim backend's full build has every framework hash; the simulated PYNQ-Z2
# (the default build) has Murmur3 and SigridHash, not FarmHash
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_runtime(sim_available):
    rt = offload.Runtime(backends=["sim", "cpu"])
    yield rt
    rt.close()


def _fits_the_engine(group: Group) -> bool:
    """Every input of the group is within the engine's RECORD_MAX (FarmHash's record limit)."""
    return all(
        not isinstance(x, (str, bytes))
        or len(x if isinstance(x, bytes) else x.encode()) <= DEFAULT_RECORD_MAX
        for x, _ in group.cases
    )


@pytest.mark.parametrize("group", ALL, ids=[g.name for g in ALL])
def test_the_drop_in_equals_the_library_on_the_sim_engine(group: Group, sim_runtime) -> None:
    """Every reference case with the runtime's first backend the engine's full build: the hash
    runs there (a group with a record beyond RECORD_MAX goes to the CPU, with the reason)."""
    sim_runtime.reset_stats()
    check_group(group, runtime=sim_runtime)
    segments = [s[0] for s in sim_runtime.stats()["last_call"]["segments"]]
    if _fits_the_engine(group):
        assert segments == ["sim"] and sim_runtime.stats()["fallbacks"] == []
    else:
        (fb,) = sim_runtime.stats()["fallbacks"][-1:]
        assert segments == ["cpu"] and fb["cause"] == "unsupported" and "takes at most" in fb["message"]


@pytest.fixture(scope="module")
def fpga_runtime(sim_available):
    rt = offload.Runtime(backends=["fpga", "cpu"], fpga="sim")
    yield rt
    rt.close()


#: the reference groups the PYNQ-Z2 build runs (Murmur3, XXH64 and SigridHash: no FarmHash)
ON_PYNQ = SPARK + SIGRID


@pytest.mark.parametrize("group", ON_PYNQ, ids=[g.name for g in ON_PYNQ])
def test_the_drop_in_equals_the_library_on_the_fpga_engine(group: Group, fpga_runtime) -> None:
    """Every Spark and TorchArrow reference case on the simulated PYNQ-Z2 (the default build,
    driven by the PYNQ driver): the hash runs there, nothing falls back."""
    fpga_runtime.reset_stats()
    check_group(group, runtime=fpga_runtime)
    assert [s[0] for s in fpga_runtime.stats()["last_call"]["segments"]] == ["fpga"]
    assert fpga_runtime.stats()["fallbacks"] == []


STRINGS = ["a", "hello", "US|ios", "日本語"]
DROP_INS = [
    ("tf", lambda **kw: tf.to_hash_bucket_fast(STRINGS, 1000, **kw), "hash_bucket"),
    ("keras", lambda **kw: keras.hashing(np.arange(5), 10, mask_value=3, **kw), "decimal_hash_bucket"),
    ("spark.hash", lambda **kw: spark.hash(np.arange(4, dtype=np.int32), STRINGS, **kw), "murmur3_32"),
    ("torcharrow", lambda **kw: torcharrow.sigrid_hash(np.arange(5), 0, 100, **kw), "sigrid_hash"),
]
#: the engine's backends: the Verilator model (full build), and the PYNQ driver on the simulated
#: board (the PYNQ-Z2 build: no FarmHash, so TF and Keras hashing route to the CPU)
ENGINES = {"sim": {}, "fpga": {"fpga": "sim"}}
FARM_OPS = ("hash_bucket", "decimal_hash_bucket")  # (hash_bucket with hash="farmhash64")
ON_ENGINE = [(e, *d) for e in ENGINES for d in DROP_INS if not (e == "fpga" and d[2] in FARM_OPS)]
ROUTED = [(e, *d) for e in ENGINES for d in DROP_INS if (e, *d) not in ON_ENGINE]
UNSUPPORTED = (
    "the engine is built without op 19 "
    "(hash_bucket(num_buckets={n}, seed=None, method='mod', hash='farmhash64'))"
)


@pytest.mark.parametrize(("engine", "name", "fn", "op"), ON_ENGINE, ids=[f"{r[0]}-{r[1]}" for r in ON_ENGINE])
def test_the_drop_in_runs_on_the_engine_when_named(engine, name, fn, op, sim_available) -> None:
    """``backend="sim"``/``"fpga"``: the hash runs on the engine (Spark's later columns chain on
    the CPU kernels, as documented)."""
    rt = offload.Runtime(backends=[engine, "cpu"], **ENGINES[engine])
    assert np.array_equal(fn(backend=engine, runtime=rt, verify="full"), fn(backend="cpu"))
    assert [s[0] for s in rt.stats()["last_call"]["segments"]] == [engine]
    assert rt.stats()["fallbacks"] == [] and rt.stats()["last_call"]["op"] == op


def _unsupported(engine: str, name: str) -> str:
    if name == "keras":  # integers: the decimal FarmHash operator, not in the PYNQ-Z2 build
        op = "decimal_hash_bucket"
        return f"backend '{engine}' cannot run {op}: {engine} does not implement {op}"
    return f"backend '{engine}' cannot run hash_bucket: {UNSUPPORTED.format(n=1000)}"


@pytest.mark.parametrize(("engine", "name", "fn", "op"), ROUTED, ids=[f"{r[0]}-{r[1]}" for r in ROUTED])
def test_auto_routes_past_the_engine_and_records_why(engine, name, fn, op, sim_available) -> None:
    rt = offload.Runtime(backends=[engine, "cpu"], **ENGINES[engine])
    assert np.array_equal(fn(runtime=rt), fn(backend="cpu"))
    ran_on = [s[0] for s in rt.stats()["last_call"]["segments"]]
    assert ran_on == ["cpu"]
    records = [f for f in rt.stats()["fallbacks"] if f["from"] == engine]
    assert records and records[-1]["op"] == op and records[-1]["to"] == "cpu"
    assert records[-1]["cause"] == "unsupported"
    assert records[-1]["message"] == _unsupported(engine, name)


@pytest.mark.parametrize(("engine", "name", "fn", "op"), ROUTED, ids=[f"{r[0]}-{r[1]}" for r in ROUTED])
def test_naming_the_engine_raises_naming_the_operator(engine, name, fn, op, sim_available) -> None:
    rt = offload.Runtime(backends=[engine, "cpu"], **ENGINES[engine])
    with pytest.raises(BackendUnavailable, match=f"^{re.escape(_unsupported(engine, name))}$"):
        fn(backend=engine, runtime=rt)


def test_spark_xxhash64s_first_column_runs_on_the_sim_engine_and_the_rest_on_the_cpu(sim_available) -> None:
    """XXH64 has engine cores: backend="sim" runs the first column there (seed 42); the chained
    columns run on the CPU kernels, as documented."""
    rt = offload.Runtime(backends=["sim", "cpu"])
    ids = np.array([0, 1, -1, 42, 2**40], np.int64)
    names = pa.array(["a", None, "hello", "", "日本語"])
    got = spark.xxhash64(ids, names, backend="sim", runtime=rt, verify="full")
    assert np.array_equal(got, spark.xxhash64(ids, names, backend="cpu"))
    assert rt.stats()["last_call"]["segments"] == [("sim", 0, 5)]
    assert spark.xxhash64(ids[:4], backend="sim", runtime=rt).tolist() == [
        -5252525462095825812,
        -7001672635703045582,
        3858142552250413010,
        -6876166290308861218,
    ]


# ---------------------------------------------------------------------------------------------
# Errors are API
# ---------------------------------------------------------------------------------------------

ERRORS = [
    (
        lambda: tf.to_hash_bucket_fast(np.arange(3), 10),
        TypeError,
        "to_hash_bucket_fast takes strings, got a numpy int64 array (TensorFlow refuses other dtypes: "
        "offload.compat.keras.hashing hashes integers as Keras does)",
    ),
    (
        lambda: tf.to_hash_bucket_fast([1, 2], 10),
        TypeError,
        "to_hash_bucket_fast takes strings, got a list of int",
    ),
    (
        lambda: tf.to_hash_bucket_fast(pa.array([1.5]), 10),
        TypeError,
        "to_hash_bucket_fast takes strings, got a pyarrow double array",
    ),
    (
        lambda: tf.to_hash_bucket_fast(["a"], 0),
        ValueError,
        "to_hash_bucket_fast: num_buckets must be in [1, 2**63), got 0",
    ),
    (
        lambda: tf.to_hash_bucket_fast(["a"], 2**63),
        ValueError,
        "to_hash_bucket_fast: num_buckets must be in [1, 2**63), got 9223372036854775808",
    ),
    (
        lambda: tf.to_hash_bucket_fast(["a"], 10.0),
        TypeError,
        "to_hash_bucket_fast: num_buckets must be an int, got float",
    ),
    (
        lambda: tf.to_hash_bucket_fast(pa.array(["a", None]), 10),
        ValueError,
        "to_hash_bucket_fast: null at index 1: fill or drop nulls first",
    ),
    (
        lambda: tf.to_hash_bucket_fast(np.ma.masked_array(["a", "b"], [False, True]), 10),
        ValueError,
        "to_hash_bucket_fast: null at index 1: fill or drop nulls first",
    ),
    (
        lambda: keras.hashing(np.ma.masked_array(["a", "b", "c"], [False, False, True]), 10),
        ValueError,
        "hashing: null at index 2: fill or drop nulls first",
    ),
    (
        lambda: keras.hashing(np.ma.masked_array([1, 2], [True, False]), 10),
        ValueError,
        "hashing: null at index 0: fill or drop nulls first",
    ),
    (
        lambda: keras.hashing(np.arange(3, dtype=np.uint32), 10),
        TypeError,
        "hashing: unsupported numpy uint32 array: expected strings, int32 or int64 "
        "(Keras truncates floats to int64 before hashing: cast explicitly)",
    ),
    (lambda: keras.hashing(np.array([1.5]), 10), TypeError, "hashing: unsupported numpy float64 array"),
    (
        lambda: keras.hashing(pa.array([1], pa.uint64()), 10),
        TypeError,
        "hashing: unsupported pyarrow uint64 array",
    ),
    (lambda: keras.hashing(np.arange(3), 0), ValueError, "hashing: num_bins must be in [1, 2**63), got 0"),
    (lambda: keras.hashing(np.arange(3), None), TypeError, "hashing: num_bins must be an int, got NoneType"),
    (
        lambda: keras.hashing(np.arange(3), 10, mask_value="0"),
        TypeError,
        "hashing: mask_value must be an int for int64 values, got str",
    ),
    (
        lambda: keras.hashing(["a"], 10, mask_value=0),
        TypeError,
        "hashing: mask_value must be a str or bytes for string values, got int",
    ),
    (
        lambda: keras.hashing(np.arange(3, dtype=np.int32), 10, mask_value=2**31),
        ValueError,
        "hashing: mask_value 2147483648 is outside the values' dtype int32",
    ),
    (
        lambda: keras.hashing(pa.array([1, None]), 10),
        ValueError,
        "hashing: null at index 1: fill or drop nulls first",
    ),
    (
        lambda: keras.hashing([1, 2**64], 10),
        ValueError,
        "hashing: element 1 = 18446744073709551616 is outside int64",
    ),
    (
        lambda: spark.hash(),
        TypeError,
        "spark.hash() needs at least one column (Spark refuses hash() without arguments)",
    ),
    (
        lambda: spark.xxhash64(),
        TypeError,
        "spark.xxhash64() needs at least one column (Spark refuses xxhash64() without arguments)",
    ),
    (
        lambda: spark.hash(np.arange(3), np.arange(4)),
        ValueError,
        "spark.hash: columns differ in length: column 0 has 3 rows, column 1 has 4",
    ),
    (
        lambda: spark.hash(np.arange(3), np.ones(3)),
        TypeError,
        "spark.hash: column 1 is a numpy float64 array: expected int32 (IntegerType), int64 (LongType) or "
        "strings (StringType)",
    ),
    (lambda: spark.hash(np.ones(3, bool)), TypeError, "spark.hash: column 0 is a numpy bool array"),
    (
        lambda: spark.xxhash64(np.arange(3, dtype=np.uint64)),
        TypeError,
        "spark.xxhash64: column 0 is a numpy uint64 array",
    ),
    (lambda: spark.hash(pa.array([1.0])), TypeError, "spark.hash: column 0 is a pyarrow double array"),
    (
        lambda: spark.hash([1, 2]),
        TypeError,
        "spark.hash: column 0 is a list of int: Spark hashes IntegerType and LongType differently, pass a "
        "numpy int32 or int64 array",
    ),
    (
        lambda: spark.hash(np.zeros((2, 2), np.int32)),
        ValueError,
        "spark.hash: column 0 must be 1-D, got shape (2, 2)",
    ),
    (
        lambda: spark.hash(np.array([1, "a"], dtype=object)),
        TypeError,
        "spark.hash: column 0 is a numpy object array of non-strings: expected int32 (IntegerType), "
        "int64 (LongType) or strings (StringType)",
    ),
    (
        lambda: torcharrow.sigrid_hash(np.arange(3, dtype=np.int32), 0, 100),
        TypeError,
        "sigrid_hash takes int64 ids (TorchArrow's sigrid_hash is defined on int64), got a numpy int32 array",
    ),
    (
        lambda: torcharrow.sigrid_hash(np.arange(3), 0, 0),
        ValueError,
        "sigrid_hash: max_value must be larger than 0, got 0",
    ),
    (
        lambda: torcharrow.sigrid_hash(pa.array([1, None]), 0, 100),
        ValueError,
        "sigrid_hash: null at index 1: fill or drop nulls first (TorchArrow keeps them)",
    ),
    (
        lambda: tf.to_hash_bucket_fast(["a"], 10, runtime="cpu"),
        TypeError,
        "to_hash_bucket_fast: runtime must be an offload.Runtime or None, got str",
    ),
    (
        lambda: spark.hash(np.arange(3), verify="some"),
        ValueError,
        "unknown verify mode 'some': expected 'off', 'sample' or 'full'",
    ),
]


@pytest.mark.parametrize(("call", "exc", "message"), ERRORS, ids=[m[:50] for _, _, m in ERRORS])
def test_bad_input_raises_the_exact_error(call, exc, message) -> None:
    with pytest.raises(exc, match=f"^{re.escape(message)}"):
        call()


# ---------------------------------------------------------------------------------------------
# Semantics beyond the vectors: Keras edge cases, Spark nulls and input forms, shapes
# ---------------------------------------------------------------------------------------------


def test_keras_hashes_integers_as_their_decimal_text() -> None:
    ints = np.array([0, 7, -7, 42, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)], np.int64)
    text = [str(int(v)) for v in ints]
    assert np.array_equal(keras.hashing(ints, 1000), tf.to_hash_bucket_fast(text, 1000))
    assert np.array_equal(keras.hashing(ints[:6].astype(np.int32), 1000), keras.hashing(ints[:6], 1000))
    assert np.array_equal(keras.hashing(ints.tolist(), 1000), keras.hashing(ints, 1000))


def test_keras_mask_takes_bin_zero_and_the_rest_shift_by_one() -> None:
    values = np.array(["", "a", "b", "", "hello"])
    plain = keras.hashing(values, 9)
    masked = keras.hashing(values, 10, mask_value="")
    assert masked.tolist() == [0, plain[1] + 1, plain[2] + 1, 0, plain[4] + 1]
    assert np.array_equal(keras.hashing(values, 10, mask_value=b""), masked)


def test_keras_with_one_bin_applies_no_mask() -> None:
    """``Hashing(num_bins=1, mask_value=m)`` reserves nothing (Keras masks only when num_bins > 1):
    every value, the mask included, is in bin 0."""
    assert keras.hashing(np.array([3, 4, 5]), 1, mask_value=3).tolist() == [0, 0, 0]
    assert keras.hashing(["", "a"], 1, mask_value="").tolist() == [0, 0]


def test_keras_with_two_bins_and_a_mask_puts_every_other_value_in_bin_one() -> None:
    assert keras.hashing(np.arange(-3, 4), 2, mask_value=0).tolist() == [1, 1, 1, 0, 1, 1, 1]


def test_keras_doc_examples() -> None:
    """The examples of the Keras Hashing layer's docstring."""
    inp = np.array([["A"], ["B"], ["C"], ["D"], ["E"]])
    assert keras.hashing(inp, 3).tolist() == [[1], [0], [1], [1], [2]]
    inp = np.array([["A"], ["B"], [""], ["C"], ["D"]])
    assert keras.hashing(inp, 3, mask_value="").tolist() == [[1], [1], [0], [2], [2]]


@pytest.mark.parametrize(
    "form",
    [
        lambda s: s,
        lambda s: np.array(s),
        lambda s: np.array([x.encode() for x in s]),
        lambda s: np.array(s, dtype=object),
        lambda s: pa.array(s),
        lambda s: pa.array(s, pa.large_string()),
        lambda s: pa.array([x.encode() for x in s], pa.binary()),
        lambda s: pa.chunked_array([s[:2], s[2:]]),
        lambda s: pa.array(s).dictionary_encode(),
    ],
    ids=[
        "list",
        "numpy str",
        "numpy bytes",
        "numpy object",
        "arrow",
        "large_string",
        "binary",
        "chunked",
        "dict",
    ],
)
def test_every_string_form_hashes_its_utf8_bytes(form) -> None:
    strings = ["a", "hello", "", "日本語", "emoji 😀"]
    expected = tf.to_hash_bucket_fast([s.encode() for s in strings], 1000)
    assert np.array_equal(tf.to_hash_bucket_fast(form(strings), 1000), expected)
    masked = keras.hashing(strings, 1001, mask_value="a")
    assert np.array_equal(keras.hashing(form(strings), 1001, mask_value="a"), masked)
    assert np.array_equal(spark.hash(form(strings)), spark.hash(pa.array(strings)))


def test_shapes_follow_numpy_inputs() -> None:
    grid = np.array([["a", "b", "c"], ["d", "e", "f"]])
    assert tf.to_hash_bucket_fast(grid, 10).shape == (2, 3)
    assert (
        tf.to_hash_bucket_fast(grid, 10).ravel().tolist() == tf.to_hash_bucket_fast(grid.ravel(), 10).tolist()
    )
    assert tf.to_hash_bucket_fast("hello", 1000).shape == ()
    assert int(tf.to_hash_bucket_fast(b"hello", 1000)) == 296
    ids = np.arange(12).reshape(3, 4)
    assert keras.hashing(ids, 10, mask_value=5).shape == (3, 4)
    assert torcharrow.sigrid_hash(ids, 0, 100).shape == (3, 4)
    assert torcharrow.sigrid_hash(ids, 0, 100).ravel().tolist()[:4] == [6, 60, 54, 54]
    for out in (tf.to_hash_bucket_fast([], 10), keras.hashing(np.zeros(0, np.int64), 10), spark.hash([])):
        assert out.shape == (0,)
    assert spark.hash([]).dtype == np.int32 and spark.xxhash64(np.zeros(0, np.int64)).dtype == np.int64


def test_spark_nulls_leave_the_running_value_unchanged() -> None:
    ints = pa.array([1, None, 7, None], pa.int32())
    strs = pa.array(["x", "abc", None, None])
    got = spark.hash(ints, strs)
    assert got[3] == 42  # an all-null row
    assert got[1] == spark.hash(pa.array(["abc"]))[0]  # the null first column is skipped
    assert got[2] == spark.hash(pa.array([7], pa.int32()))[0]  # and so is a null last one
    assert spark.xxhash64(pa.array([None], pa.int64())).tolist() == [42]
    assert spark.hash(pa.array([None, None]), strs[:2]).tolist() == spark.hash(strs[:2]).tolist()  # NullType
    assert spark.xxhash64(np.array([None, None], dtype=object)).tolist() == [42, 42]


def test_spark_null_forms_agree() -> None:
    """pyarrow nulls (chunked, sliced), None in sequences and object arrays, and masked numpy
    elements are the same nulls."""
    ints = np.array([5, 0, -3, 2**31 - 1, 9], np.int32)
    null = np.array([False, True, False, False, True])
    strs = ["a", None, "日本", None, ""]
    expected = spark.hash(pa.array(np.where(null, None, ints).tolist(), pa.int32()), pa.array(strs))
    chunked = pa.chunked_array([pa.array([5, None, -3], pa.int32()), pa.array([2**31 - 1, None], pa.int32())])
    sliced = pa.array([0, 5, None, -3, 2**31 - 1, None, 0], pa.int32()).slice(1, 5)
    for i in (chunked, sliced, np.ma.masked_array(ints, null)):
        for s in (
            strs,
            np.array(strs, dtype=object),
            pa.chunked_array([strs[:1], strs[1:]]),
            pa.array(strs).slice(0),
        ):
            assert np.array_equal(spark.hash(i, s), expected)
    assert expected.tolist()[1] == 42


def test_spark_int32_and_int64_columns_hash_differently() -> None:
    """IntegerType hashes 4 bytes, LongType 8: the same number is two different hashes."""
    assert spark.hash(np.array([0], np.int32)).tolist() == [933211791]
    assert spark.hash(np.array([0], np.int64)).tolist() == [-1670924195]
    assert spark.hash(pa.array([0], pa.int64())).tolist() == [-1670924195]


def test_big_endian_arrays_hash_their_values() -> None:
    col = np.array([1, -1, 42], ">i4")
    assert np.array_equal(spark.hash(col), spark.hash(col.astype(np.int32)))
    assert np.array_equal(
        keras.hashing(col, 100, mask_value=42), keras.hashing(col.astype(np.int32), 100, 42)
    )
    ids = np.array([1, -1, 2**40], ">i8")
    assert np.array_equal(
        torcharrow.sigrid_hash(ids, 5, 1000), torcharrow.sigrid_hash(ids.astype(np.int64), 5, 1000)
    )


def test_spark_verify_checks_the_chained_columns(monkeypatch) -> None:
    """verify= reaches the CPU chain: a wrong chained value is caught against the golden model."""
    ints, strs = np.arange(40, dtype=np.int32), [str(i) for i in range(40)]
    assert np.array_equal(spark.hash(ints, strs, verify="full"), spark.hash(ints, strs))
    real = spark._chain

    def broken(kind: str, col: Any, seeds: np.ndarray) -> None:
        real(kind, col, seeds)
        seeds[17] ^= 1

    monkeypatch.setattr(spark, "_chain", broken)
    for mode in ("full", "sample"):
        rt = offload.Runtime(backends=["cpu"], sample_size=40)
        with pytest.raises(
            BitExactError, match=r"^spark\.hash differs from the golden row model at row 17: "
        ):
            spark.hash(ints, strs, verify=mode, runtime=rt)
    spark.hash(ints, strs, verify="off")  # off checks nothing


@pytest.mark.parametrize("verify", ["off", "sample", "full"])
def test_verify_modes_are_accepted_by_every_drop_in(verify) -> None:
    ids = np.arange(100, dtype=np.int64)
    words = [f"w{i}" for i in range(100)]
    assert np.array_equal(tf.to_hash_bucket_fast(words, 97, verify=verify), tf.to_hash_bucket_fast(words, 97))
    assert np.array_equal(keras.hashing(ids, 97, 5, verify=verify), keras.hashing(ids, 97, 5))
    assert np.array_equal(spark.hash(ids, words, verify=verify), spark.hash(ids, words))
    assert np.array_equal(spark.xxhash64(words, ids, verify=verify), spark.xxhash64(words, ids))
    assert np.array_equal(
        torcharrow.sigrid_hash(ids, 3, 97, verify=verify), torcharrow.sigrid_hash(ids, 3, 97)
    )


def test_compat_submodules_load_on_attribute_access() -> None:
    assert offload.compat.tf is tf and offload.compat.spark is spark
    with pytest.raises(AttributeError, match="^module 'offload.compat' has no attribute 'torch'$"):
        _ = offload.compat.torch


# ---------------------------------------------------------------------------------------------
# The decimal-text kernel
# ---------------------------------------------------------------------------------------------


def _edges(dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    tens = [10**k for k in range(19) if 10**k <= info.max]
    vals = [0, 1, -1, info.min, info.max, info.min + 1, info.max - 1]
    vals += tens + [t - 1 for t in tens] + [-t for t in tens] + [1 - t for t in tens]
    return np.array(vals, dtype)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_format_decimal_is_str_of_every_value(dtype) -> None:
    rng = np.random.default_rng(16)
    info = np.iinfo(dtype)
    values = np.concatenate([_edges(dtype), rng.integers(info.min, info.max, 5000, dtype, endpoint=True)])
    offsets, data = format_decimal(values)
    text = data.tobytes().decode("ascii")
    assert [text[offsets[i] : offsets[i + 1]] for i in range(values.shape[0])] == [
        str(int(v)) for v in values
    ]
    assert offsets[0] == 0 and offsets[-1] == data.shape[0] and offsets.dtype == np.int64


def test_format_decimal_in_chunks_on_threads_equals_one_pass(monkeypatch) -> None:
    values = np.random.default_rng(5).integers(-(2**63), 2**63 - 1, 10000, np.int64)
    whole = format_decimal(values, threads=1)
    monkeypatch.setattr(kernels_text, "PARALLEL_MIN", 0)
    split = format_decimal(values, threads=2)
    assert np.array_equal(whole[0], split[0]) and np.array_equal(whole[1], split[1])


def test_format_decimal_refuses_other_dtypes() -> None:
    with pytest.raises(TypeError, match="^format_decimal takes a numpy int32 or int64 array, got uint64$"):
        format_decimal(np.zeros(2, np.uint64))


# ---------------------------------------------------------------------------------------------
# docs/compatibility.md: its code blocks run as written
# ---------------------------------------------------------------------------------------------

COMPAT_MD = ROOT / "docs" / "compatibility.md"


def doc_blocks() -> list[tuple[int, str]]:
    text = COMPAT_MD.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start(1)) + 1, m[1])
        for m in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M)
    ]


def test_the_page_has_examples_for_every_framework() -> None:
    code = "\n".join(b for _, b in doc_blocks())
    for call in (
        "tf.to_hash_bucket_fast(",
        "keras.hashing(",
        "spark.hash(",
        "spark.xxhash64(",
        "torcharrow.sigrid_hash(",
    ):
        assert call in code, call


@pytest.mark.parametrize(("line", "block"), doc_blocks(), ids=[f"L{n}" for n, _ in doc_blocks()])
def test_the_documented_example_runs_as_written(line, block) -> None:
    exec(compile(block, f"docs/compatibility.md:{line}", "exec"), {})


def test_a_wrong_documented_example_fails() -> None:
    line, block = next((n, b) for n, b in doc_blocks() if "== [" in b)
    wrong = block.replace("== [", "== [1 + ", 1)
    with pytest.raises((AssertionError, TypeError)):
        exec(compile(wrong, f"docs/compatibility.md:{line}", "exec"), {})
